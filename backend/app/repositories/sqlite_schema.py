"""The embedded store's schema: the Supabase migrations' tables, translated to SQLite.

Each entry of MIGRATIONS is applied once, in order, tracked by `PRAGMA user_version`.
Append new entries; never edit an applied one. Ids are UUID text, timestamps ISO 8601 UTC
text with microseconds (so text order is time order), JSON columns are text.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        create table profiles (
          id text primary key,
          phone text,
          -- Written by the repository with normalize_phone (Postgres uses a generated column).
          phone_e164 text,
          full_name text,
          email text,
          phone_verified integer not null default 0,
          created_at text not null,
          updated_at text not null
        )
        """,
        "create index profiles_phone_e164_idx on profiles (phone_e164)",
        """
        create table companies (
          id text primary key,
          rut text,
          business_name text,
          trade_name text,
          created_at text not null,
          updated_at text not null
        )
        """,
        """
        create table sessions (
          id text primary key,
          user_id text not null references profiles (id) on delete cascade,
          company_id text not null references companies (id) on delete cascade,
          is_active integer not null default 1,
          last_accessed_at text,
          created_at text not null
        )
        """,
        "create index sessions_user_idx on sessions (user_id, is_active, last_accessed_at)",
        """
        create table conversations (
          id text primary key,
          user_id text not null,
          title text not null default 'Nueva conversación',
          status text not null default 'active'
            check (status in ('active', 'archived', 'completed')),
          metadata text not null default '{}',
          created_at text not null,
          updated_at text not null
        )
        """,
        # One conversation per Kapso conversation id, as the Postgres expression index.
        """
        create unique index conversations_whatsapp_kapso_id_key
          on conversations (json_extract(metadata, '$.kapso_conversation_id'))
          where json_extract(metadata, '$.channel') = 'whatsapp'
        """,
        """
        create index conversations_whatsapp_phone_idx
          on conversations (
            json_extract(metadata, '$.phone_number'),
            json_extract(metadata, '$.business_phone_number_id'),
            updated_at
          )
          where json_extract(metadata, '$.channel') = 'whatsapp'
        """,
        """
        create index conversations_whatsapp_company_idx
          on conversations (json_extract(metadata, '$.company_id'), updated_at)
          where json_extract(metadata, '$.channel') = 'whatsapp'
        """,
        """
        create table messages (
          id text primary key,
          conversation_id text not null references conversations (id) on delete cascade,
          user_id text,
          role text not null check (role in ('user', 'assistant', 'system')),
          content text not null,
          metadata text not null default '{}',
          created_at text not null
        )
        """,
        """
        create unique index messages_whatsapp_wamid_key
          on messages (json_extract(metadata, '$.whatsapp_message_id'))
          where json_extract(metadata, '$.channel') = 'whatsapp'
        """,
        "create index messages_conversation_created_idx on messages (conversation_id, created_at)",
        """
        create table whatsapp_inbox_events (
          seq integer primary key autoincrement,
          id text not null unique,
          idempotency_key text not null unique,
          event text not null,
          wamid text,
          conversation_key text,
          payload text not null,
          state text not null default 'pending'
            check (state in ('pending', 'processing', 'done', 'dead')),
          attempts integer not null default 0,
          next_attempt_at text not null,
          lease_owner text,
          lease_expires_at text,
          last_error text,
          received_at text not null,
          updated_at text not null,
          completed_at text
        )
        """,
        """
        create unique index whatsapp_inbox_events_wamid_event_key
          on whatsapp_inbox_events (wamid, event) where wamid is not null
        """,
        """
        create index whatsapp_inbox_events_due_idx
          on whatsapp_inbox_events (state, next_attempt_at)
        """,
        """
        create index whatsapp_inbox_events_conversation_idx
          on whatsapp_inbox_events (conversation_key, seq)
          where state in ('pending', 'processing')
        """,
        """
        create index whatsapp_inbox_events_state_idx
          on whatsapp_inbox_events (state, received_at)
        """,
        """
        create table whatsapp_outbound_messages (
          id text primary key,
          wamid text unique,
          conversation_id text references conversations (id) on delete set null,
          kapso_conversation_id text,
          company_id text references companies (id) on delete set null,
          user_id text,
          to_phone text not null,
          business_phone_number_id text,
          message_type text not null,
          purpose text not null,
          inbox_event_id text references whatsapp_inbox_events (id) on delete set null,
          status text not null default 'pending'
            check (status in ('pending', 'unknown', 'sent', 'delivered', 'read', 'failed')),
          error_code text,
          error_message text,
          idempotency_key text,
          request_fingerprint text,
          created_at text not null,
          updated_at text not null
        )
        """,
        """
        create unique index whatsapp_outbound_messages_idempotency_key
          on whatsapp_outbound_messages (coalesce(user_id, ''), idempotency_key)
          where idempotency_key is not null
        """,
        """
        create index whatsapp_outbound_messages_to_phone_idx
          on whatsapp_outbound_messages (to_phone, purpose, created_at)
        """,
        """
        create index whatsapp_outbound_messages_conversation_idx
          on whatsapp_outbound_messages (conversation_id, created_at)
        """,
        # Forward-only status, as the Postgres trigger: the backstop for any other writer.
        """
        create trigger whatsapp_outbound_guard_status
        before update of status on whatsapp_outbound_messages
        for each row when old.status <> new.status and (
          old.status = 'failed'
          or (new.status = 'failed' and old.status not in ('pending', 'unknown', 'sent'))
          or (new.status <> 'failed' and
              (case new.status when 'pending' then 0 when 'unknown' then 1 when 'sent' then 2
                 when 'delivered' then 3 when 'read' then 4 end)
              <= (case old.status when 'pending' then 0 when 'unknown' then 1 when 'sent' then 2
                 when 'delivered' then 3 when 'read' then 4 end))
        )
        begin
          select raise(abort, 'outbound message status cannot go backwards');
        end
        """,
    ),
    (
        "alter table whatsapp_outbound_messages add column content text",
        """alter table whatsapp_outbound_messages
             add column send_attempts integer not null default 0""",
        "alter table whatsapp_outbound_messages add column last_attempt_at text",
        """create index whatsapp_outbound_messages_inbox_event_idx
             on whatsapp_outbound_messages (inbox_event_id)""",
    ),
    (
        # Events in flight, per conversation: a claim skips a conversation that has one.
        """create index whatsapp_inbox_events_in_flight_idx
             on whatsapp_inbox_events (conversation_key) where state = 'processing'""",
    ),
)
