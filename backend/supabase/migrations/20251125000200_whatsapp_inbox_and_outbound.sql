-- This service's own tables: the durable webhook inbox and the outbound messages it sent.

-- Every accepted webhook event, recorded before Kapso gets its 200, then processed by workers.
create table if not exists public.whatsapp_inbox_events (
  id uuid primary key default gen_random_uuid(),
  -- Arrival order (a batch shares one received_at); claims follow it within a conversation.
  seq bigint generated always as identity,
  -- Kapso's X-Idempotency-Key (plus the position inside a batch): a retried delivery is one row.
  idempotency_key text not null,
  event text not null,
  -- The WhatsApp message id: the same message re-sent under a new key is still one row per event.
  wamid text,
  -- Events with the same key are processed one at a time in arrival order (the Kapso
  -- conversation id, or the phone when there is none). NULL: no ordering constraint.
  conversation_key text,
  payload jsonb not null,
  state text not null default 'pending'
    check (state in ('pending', 'processing', 'done', 'dead')),
  attempts integer not null default 0 check (attempts >= 0),
  next_attempt_at timestamptz not null default now(),
  lease_owner text,
  lease_expires_at timestamptz,
  last_error text,
  received_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  completed_at timestamptz,
  constraint whatsapp_inbox_events_idempotency_key_key unique (idempotency_key),
  constraint whatsapp_inbox_events_lease_check
    check (state <> 'processing' or (lease_owner is not null and lease_expires_at is not null))
);

create unique index if not exists whatsapp_inbox_events_wamid_event_key
  on public.whatsapp_inbox_events (wamid, event)
  where wamid is not null;

-- Claim scans: due pending events, and processing events whose lease ran out.
create index if not exists whatsapp_inbox_events_due_idx
  on public.whatsapp_inbox_events (next_attempt_at, seq)
  where state = 'pending';
create index if not exists whatsapp_inbox_events_lease_idx
  on public.whatsapp_inbox_events (lease_expires_at)
  where state = 'processing';
-- "Is there an older unfinished event in this conversation?" (per-conversation order).
create index if not exists whatsapp_inbox_events_conversation_idx
  on public.whatsapp_inbox_events (conversation_key, seq)
  where state in ('pending', 'processing');
-- Admin listing by state, newest first.
create index if not exists whatsapp_inbox_events_state_idx
  on public.whatsapp_inbox_events (state, received_at desc, seq desc);

-- Every message this service sent (or tried to send) through Kapso.
create table if not exists public.whatsapp_outbound_messages (
  id uuid primary key default gen_random_uuid(),
  -- Set once Kapso accepted the send; status webhooks find the row by it.
  wamid text,
  conversation_id uuid references public.conversations (id) on delete set null,
  kapso_conversation_id text,
  company_id uuid references public.companies (id) on delete set null,
  -- Who asked for the send (the web app user); NULL for the service itself (replies, notices).
  user_id uuid,
  to_phone text not null,
  business_phone_number_id text,
  -- text | media | interactive | template | ...: what was sent.
  message_type text not null,
  -- Why: reply | registration | no_company | api | notification ...: lets the inbound flow ask
  -- "when did we last send this number a registration notice".
  purpose text not null,
  -- The inbound event this message answers (exactly one reply per event).
  inbox_event_id uuid references public.whatsapp_inbox_events (id) on delete set null,
  status text not null default 'pending'
    check (status in ('pending', 'unknown', 'sent', 'delivered', 'read', 'failed')),
  error_code text,
  error_message text,
  -- The send API's Idempotency-Key (per user), or the worker's "event:part" key: the same key
  -- is one row, so a retried request or a re-processed event never sends twice.
  idempotency_key text,
  -- Hash of the request that first used the key: the same key with another body is refused.
  request_fingerprint text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint whatsapp_outbound_messages_wamid_key unique (wamid)
);

-- One row per (caller, key); the service itself (user_id NULL) is one caller.
create unique index if not exists whatsapp_outbound_messages_idempotency_key
  on public.whatsapp_outbound_messages (
    coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid),
    idempotency_key
  )
  where idempotency_key is not null;

create index if not exists whatsapp_outbound_messages_to_phone_idx
  on public.whatsapp_outbound_messages (to_phone, purpose, created_at desc);
create index if not exists whatsapp_outbound_messages_conversation_idx
  on public.whatsapp_outbound_messages (conversation_id, created_at desc);
create index if not exists whatsapp_outbound_messages_company_idx
  on public.whatsapp_outbound_messages (company_id, created_at desc);
create index if not exists whatsapp_outbound_messages_inbox_event_idx
  on public.whatsapp_outbound_messages (inbox_event_id);

-- Status only moves forward: pending -> unknown/sent -> delivered -> read; failed is final and
-- reachable only before delivery. Webhooks arrive out of order ("read" before "delivered"), so
-- the advance function skips stale updates; this trigger is the backstop for any other writer.
create or replace function public.whatsapp_outbound_status_rank(status text)
returns integer
language sql
immutable
parallel safe
as $$
  select case status
    when 'pending' then 0
    when 'unknown' then 1
    when 'sent' then 2
    when 'delivered' then 3
    when 'read' then 4
    when 'failed' then 5
  end
$$;

create or replace function public.whatsapp_outbound_status_allowed(old_status text, new_status text)
returns boolean
language sql
immutable
parallel safe
as $$
  select case
    when old_status = new_status then true
    when old_status = 'failed' then false
    when new_status = 'failed' then old_status in ('pending', 'unknown', 'sent')
    else public.whatsapp_outbound_status_rank(new_status)
       > public.whatsapp_outbound_status_rank(old_status)
  end
$$;

create or replace function public.whatsapp_outbound_guard_status()
returns trigger
language plpgsql
as $$
begin
  if not public.whatsapp_outbound_status_allowed(old.status, new.status) then
    raise exception 'outbound message status cannot go from % to %', old.status, new.status
      using errcode = 'check_violation';
  end if;
  new.updated_at := now();
  return new;
end
$$;

drop trigger if exists whatsapp_outbound_guard_status on public.whatsapp_outbound_messages;
create trigger whatsapp_outbound_guard_status
  before update on public.whatsapp_outbound_messages
  for each row execute function public.whatsapp_outbound_guard_status();
