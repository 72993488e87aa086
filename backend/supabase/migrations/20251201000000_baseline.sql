-- The whole schema of Fizko's WhatsApp integration, squashed into one baseline (nothing was
-- deployed before it). It runs unchanged on hosted Supabase (`supabase db push`) and on a plain
-- PostgreSQL once backend/supabase/local/bootstrap.sql has created what Supabase provides
-- (roles, the auth schema); the service's own migration runner applies both locally.
--
-- The service talks to PostgreSQL directly (asyncpg) as the tables' owner; its queries live in
-- backend/app/repositories/. The functions here are the few that earn a place in the database:
-- the phone normaliser behind a generated column, the outbound status rule behind a trigger,
-- the inbox queue kept by triggers whoever writes, the claim (one round trip under row locks),
-- and the RLS helper. PostgREST and RLS remain for Fizko's web app reading with a user's JWT.

-- === Fizko's shared tables =======================================================================
-- Hosted Fizko already has them: every statement is "if not exists", so this only adds what is
-- missing (the normalised phone column and the indexes this service's lookups need). No foreign
-- key from profiles to auth.users here: hosted Fizko has that link; local stacks have no Auth.

-- Phone numbers in E.164, the same result as backend/app/core/phone.py:normalize_phone for the
-- forms people and WhatsApp use in Chile: digits only, a leading international "00" dropped, a
-- 9-digit national number gets Chile's 56, then "+". NULL when it cannot be a phone number.
-- IMMUTABLE so it can feed a stored generated column and an index.
create or replace function public.normalize_phone_e164(raw text)
returns text
language sql
immutable
parallel safe
as $$
  select case
    when d is null or length(d) < 8 or length(d) > 15 then null
    else '+' || d
  end
  from (
    select case
      when length(x) = 9 then '56' || x
      else x
    end as d
    from (
      select regexp_replace(regexp_replace(coalesce(raw, ''), '\D', '', 'g'), '^00', '') as x
    ) digits
  ) national
$$;

comment on function public.normalize_phone_e164(text) is
  'E.164 form of a user-typed phone number (Chile by default); mirrors normalize_phone in Python.';

create table if not exists public.profiles (
  id uuid primary key default gen_random_uuid(),
  phone text,
  full_name text,
  email text,
  phone_verified boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

-- Matched on the normalised form, never on the user-typed text ("+56 9 1234 5678" = "56912345678").
-- A generated column keeps itself right whoever writes `phone` (the web app included).
alter table public.profiles
  add column if not exists phone_e164 text
  generated always as (public.normalize_phone_e164(phone)) stored;

create index if not exists profiles_phone_e164_idx on public.profiles (phone_e164);

create table if not exists public.companies (
  id uuid primary key default gen_random_uuid(),
  rut text,
  business_name text,
  trade_name text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table if not exists public.sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.profiles (id) on delete cascade,
  company_id uuid not null references public.companies (id) on delete cascade,
  is_active boolean not null default true,
  last_accessed_at timestamptz,
  created_at timestamptz not null default now()
);

-- Active company = newest active session by last_accessed_at; NULLs sort last on purpose
-- (Postgres puts NULLs first in DESC order by default, which picked never-used sessions).
create index if not exists sessions_user_active_idx
  on public.sessions (user_id, last_accessed_at desc nulls last, created_at desc)
  where is_active;
-- Membership checks: "does this user belong to this company", and RLS.
create index if not exists sessions_user_company_idx on public.sessions (user_id, company_id);
create index if not exists sessions_company_idx on public.sessions (company_id);

create table if not exists public.conversations (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  title text not null default 'Nueva conversación',
  status text not null default 'active' check (status in ('active', 'archived', 'completed')),
  metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

-- One conversation per Kapso conversation id. An expression index on the metadata rather than a
-- new column: `conversations` belongs to the web chat (ChatKit) too, which already marks WhatsApp
-- rows by metadata; this keeps its shape untouched while making duplicates impossible (concurrent
-- creates meet `on conflict do nothing` on this index).
create unique index if not exists conversations_whatsapp_kapso_id_key
  on public.conversations ((metadata ->> 'kapso_conversation_id'))
  where metadata ->> 'channel' = 'whatsapp';

-- "Latest WhatsApp conversation of this number (on this business number)".
create index if not exists conversations_whatsapp_phone_idx
  on public.conversations (
    (metadata ->> 'phone_number'),
    (metadata ->> 'business_phone_number_id'),
    updated_at desc
  )
  where metadata ->> 'channel' = 'whatsapp';

-- A company's WhatsApp conversations, newest first (the web inbox), and RLS by company.
create index if not exists conversations_whatsapp_company_idx
  on public.conversations ((metadata ->> 'company_id'), updated_at desc, id)
  where metadata ->> 'channel' = 'whatsapp';

create index if not exists conversations_user_idx on public.conversations (user_id, updated_at desc);

create table if not exists public.messages (
  id uuid primary key default gen_random_uuid(),
  conversation_id uuid not null references public.conversations (id) on delete cascade,
  user_id uuid,
  role text not null check (role in ('user', 'assistant', 'system')),
  content text not null,
  metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);

-- A WhatsApp message (wamid) is stored once: retried webhooks and the echo of our own sends
-- (`whatsapp.message.sent`) meet this index instead of creating a second row.
create unique index if not exists messages_whatsapp_wamid_key
  on public.messages ((metadata ->> 'whatsapp_message_id'))
  where metadata ->> 'channel' = 'whatsapp';

create index if not exists messages_conversation_created_idx
  on public.messages (conversation_id, created_at, id);

-- === The webhook inbox ===========================================================================

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
  -- The queue an event waits in: its conversation, or a queue of its own.
  queue_key text generated always as (coalesce(conversation_key, 'event:' || id::text)) stored,
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
-- A queue's unfinished events in arrival order: its head is the first row.
create index if not exists whatsapp_inbox_events_unfinished_idx
  on public.whatsapp_inbox_events (queue_key, seq)
  where state in ('pending', 'processing');
-- "Is an event of this queue in flight?"
create index if not exists whatsapp_inbox_events_in_flight_idx
  on public.whatsapp_inbox_events (queue_key, lease_expires_at)
  where state = 'processing';
-- Admin listing by state, newest first.
create index if not exists whatsapp_inbox_events_state_idx
  on public.whatsapp_inbox_events (state, received_at desc, seq desc);

-- One row per queue (conversation) with unfinished events, and when it next needs a look: the
-- claim reads the queues that are due, oldest first, instead of scanning every waiting event —
-- its cost follows the number of events it hands out, not the backlog. Kept by the triggers
-- below whoever writes the events; the precise value is set under the row lock when an event
-- settles or is claimed.
create table if not exists public.whatsapp_inbox_queues (
  queue_key text primary key,
  due_at timestamptz not null
);

create index if not exists whatsapp_inbox_queues_due_idx on public.whatsapp_inbox_queues (due_at);

-- The precise next look at one queue: its head's due time (pending: next attempt; in flight:
-- lease end), never before an in-flight lease of the queue runs out; no row when it is empty.
-- The caller holds the queue row's lock, or the row does not exist yet.
create or replace function public.whatsapp_inbox_queue_refresh(p_queue_key text)
returns void
language plpgsql
set search_path = ''
as $$
declare
  v_due timestamptz;
  v_busy timestamptz;
begin
  select case when e.state = 'pending' then e.next_attempt_at else e.lease_expires_at end
    into v_due
    from public.whatsapp_inbox_events e
   where e.queue_key = p_queue_key and e.state in ('pending', 'processing')
   order by e.seq
   limit 1;
  if v_due is null then
    delete from public.whatsapp_inbox_queues where queue_key = p_queue_key;
    return;
  end if;
  select max(e.lease_expires_at) into v_busy
    from public.whatsapp_inbox_events e
   where e.queue_key = p_queue_key and e.state = 'processing';
  insert into public.whatsapp_inbox_queues as q (queue_key, due_at)
  values (p_queue_key, greatest(v_due, v_busy))
  on conflict (queue_key) do update set due_at = excluded.due_at;
end
$$;

-- New events: a queue with no row gets one, due by its first attempt, and workers listening on
-- `whatsapp_inbox` wake at once (NOTIFY is delivered at commit, once per transaction). An
-- existing row is left as it is: its head is earlier (in flight, or waiting for a retry) and
-- settling it sets the next look. The row is still locked (`where false` locks, writes
-- nothing): an insert meeting a row that a settling event is deleting waits, then creates it.
-- Keys in order, so concurrent batches lock queue rows in the same order.
create or replace function public.whatsapp_inbox_after_insert()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  insert into public.whatsapp_inbox_queues as q (queue_key, due_at)
  select n.queue_key, min(n.next_attempt_at)
    from new_events n
   where n.state = 'pending'
   group by n.queue_key
   order by n.queue_key
  on conflict (queue_key) do update set due_at = q.due_at where false;
  perform pg_notify('whatsapp_inbox', '');
  return null;
end
$$;

drop trigger if exists whatsapp_inbox_after_insert on public.whatsapp_inbox_events;
create trigger whatsapp_inbox_after_insert
  after insert on public.whatsapp_inbox_events
  referencing new table as new_events
  for each statement execute function public.whatsapp_inbox_after_insert();

-- Events settled (done, dead), retried later, or replayed: their queues' next look changes.
-- Claims set their queue themselves (the new state is processing) and are skipped here. Per
-- statement, with the queue rows locked in key order, as inserts lock them: a worker marking
-- several events done and a batch of inserts never wait on each other in a cycle.
create or replace function public.whatsapp_inbox_after_update()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_key text;
begin
  for v_key in
    select distinct n.queue_key
      from new_events n join old_events o on o.id = n.id
     where n.state <> 'processing'
       and (o.state is distinct from n.state or o.next_attempt_at is distinct from n.next_attempt_at)
     order by n.queue_key
  loop
    perform 1 from public.whatsapp_inbox_queues where queue_key = v_key for update;
    perform public.whatsapp_inbox_queue_refresh(v_key);
  end loop;
  if exists (select 1 from new_events n join old_events o on o.id = n.id
              where o.state = 'dead' and n.state = 'pending') then
    perform pg_notify('whatsapp_inbox', '');
  end if;
  return null;
end
$$;

drop trigger if exists whatsapp_inbox_after_update on public.whatsapp_inbox_events;
create trigger whatsapp_inbox_after_update
  after update on public.whatsapp_inbox_events
  referencing old table as old_events new table as new_events
  for each statement execute function public.whatsapp_inbox_after_update();

-- Lease up to p_limit due events to p_owner, counting an attempt each: the head (oldest
-- unfinished event) of each due queue, oldest queue first, never while another event of the
-- queue is in flight. A lease that ran out on the last allowed attempt makes its event dead (it
-- keeps killing its worker) and the queue moves on. A function because it is one round trip of
-- several steps under row locks; SKIP LOCKED lets concurrent claimers take disjoint queues.
create or replace function public.whatsapp_inbox_claim(
  p_owner text,
  p_limit integer,
  p_lease_seconds double precision,
  p_max_attempts integer
)
returns setof public.whatsapp_inbox_events
language plpgsql
set search_path = ''
as $$
declare
  v_queue record;
  v_head public.whatsapp_inbox_events;
  v_claimed public.whatsapp_inbox_events;
  v_busy timestamptz;
  v_count integer := 0;
  v_now timestamptz := clock_timestamp();
begin
  if p_limit <= 0 then
    return;
  end if;
  for v_queue in
    select q.queue_key
      from public.whatsapp_inbox_queues q
     where q.due_at <= v_now
     order by q.due_at
     -- Beyond p_limit: queues whose head is in flight may be due early (a new event moved
     -- them); each is looked at, corrected and skipped. The loop stops at p_limit claimed,
     -- and rows are locked only as they are read.
     limit p_limit + 200
       for update skip locked
  loop
    exit when v_count >= p_limit;
    loop
      select e.* into v_head
        from public.whatsapp_inbox_events e
       where e.queue_key = v_queue.queue_key and e.state in ('pending', 'processing')
       order by e.seq
       limit 1;
      exit when v_head.id is null
             or v_head.state = 'pending'
             or v_head.lease_expires_at > v_now
             or v_head.attempts < p_max_attempts;
      -- The head's lease ran out on its last attempt: dead, and look at the next head.
      update public.whatsapp_inbox_events
         set state = 'dead', lease_owner = null, lease_expires_at = null,
             last_error = coalesce(last_error || E'\n', '') || 'lease expired on the last attempt',
             updated_at = v_now
       where id = v_head.id;
      v_head := null;
    end loop;
    if v_head.id is null then
      delete from public.whatsapp_inbox_queues where queue_key = v_queue.queue_key;
      continue;
    end if;
    select max(e.lease_expires_at) into v_busy
      from public.whatsapp_inbox_events e
     where e.queue_key = v_queue.queue_key and e.state = 'processing'
       and e.lease_expires_at > v_now;
    if v_busy is not null
       or (v_head.state = 'pending' and v_head.next_attempt_at > v_now) then
      -- Not claimable yet: look again when it can be.
      update public.whatsapp_inbox_queues
         set due_at = greatest(v_busy, case when v_head.state = 'pending'
                                            then v_head.next_attempt_at end)
       where queue_key = v_queue.queue_key;
      continue;
    end if;
    update public.whatsapp_inbox_events
       set state = 'processing', attempts = attempts + 1, lease_owner = p_owner,
           lease_expires_at = v_now + make_interval(secs => p_lease_seconds),
           updated_at = v_now
     where id = v_head.id
    returning * into v_claimed;
    update public.whatsapp_inbox_queues
       set due_at = v_claimed.lease_expires_at
     where queue_key = v_queue.queue_key;
    v_count := v_count + 1;
    return next v_claimed;
  end loop;
end
$$;

-- === Outbound messages ===========================================================================

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
  -- The text sent (or its caption/summary), to recognise it in Kapso's history.
  content text,
  -- Attempts to call Kapso: > 0 means a send may have left, even while the status is pending
  -- (a re-processed event then checks Kapso's history instead of sending blindly again).
  send_attempts integer not null default 0,
  last_attempt_at timestamptz,
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
-- reachable only before delivery. Webhooks arrive out of order ("read" before "delivered"):
-- the service's update skips stale ones with this rule, and the trigger below is the backstop
-- for any other writer. Mirrored by outbound_status_allowed() in backend/app/repositories/models.py
-- for the services' own decisions.
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

-- === Row-level security ==========================================================================
-- On every table this service touches. The service connects as the tables' owner (or uses the
-- service_role key), which bypasses RLS. Signed-in users (role authenticated) may read only rows
-- of the companies they belong to (an active row in `sessions`); anon reads nothing (no policy
-- names anon). Policies are additive (OR): on hosted Fizko they widen nothing beyond the user's
-- own companies. `create policy` has no "if not exists", hence drop-then-create.

-- The companies of the calling user. SECURITY DEFINER so policies on other tables can ask
-- without recursing through the RLS of `sessions`; it reads only the caller's own rows.
create or replace function public.whatsapp_current_user_company_ids()
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select s.company_id
    from public.sessions s
   where s.user_id = auth.uid() and s.is_active
$$;

alter table public.profiles enable row level security;
alter table public.companies enable row level security;
alter table public.sessions enable row level security;
alter table public.conversations enable row level security;
alter table public.messages enable row level security;
alter table public.whatsapp_inbox_events enable row level security;
alter table public.whatsapp_inbox_queues enable row level security;
alter table public.whatsapp_outbound_messages enable row level security;

drop policy if exists whatsapp_profiles_read_own on public.profiles;
create policy whatsapp_profiles_read_own on public.profiles
  for select to authenticated
  using (id = auth.uid());

drop policy if exists whatsapp_companies_read_member on public.companies;
create policy whatsapp_companies_read_member on public.companies
  for select to authenticated
  using (id in (select public.whatsapp_current_user_company_ids()));

drop policy if exists whatsapp_sessions_read_own on public.sessions;
create policy whatsapp_sessions_read_own on public.sessions
  for select to authenticated
  using (user_id = auth.uid());

-- WhatsApp conversations belong to the company cached in their metadata.
drop policy if exists whatsapp_conversations_read_company on public.conversations;
create policy whatsapp_conversations_read_company on public.conversations
  for select to authenticated
  using (
    metadata ->> 'channel' = 'whatsapp'
    and metadata ->> 'company_id' in (
      select c::text from public.whatsapp_current_user_company_ids() c
    )
  );

drop policy if exists whatsapp_messages_read_company on public.messages;
create policy whatsapp_messages_read_company on public.messages
  for select to authenticated
  using (
    exists (
      select 1
        from public.conversations conv
       where conv.id = messages.conversation_id
         and conv.metadata ->> 'channel' = 'whatsapp'
         and conv.metadata ->> 'company_id' in (
           select c::text from public.whatsapp_current_user_company_ids() c
         )
    )
  );

drop policy if exists whatsapp_outbound_read_company on public.whatsapp_outbound_messages;
create policy whatsapp_outbound_read_company on public.whatsapp_outbound_messages
  for select to authenticated
  using (company_id in (select public.whatsapp_current_user_company_ids()));

-- === Grants ======================================================================================
-- The inbox holds raw webhook payloads (phone numbers, message text): service only, no policy,
-- and no table privileges for users either.
revoke all on public.whatsapp_inbox_events from anon, authenticated;
grant all on public.whatsapp_inbox_events to service_role;
revoke all on public.whatsapp_inbox_queues from anon, authenticated;
grant all on public.whatsapp_inbox_queues to service_role;
grant select on public.whatsapp_outbound_messages to authenticated;
revoke insert, update, delete, truncate on public.whatsapp_outbound_messages from anon, authenticated;
grant all on public.whatsapp_outbound_messages to service_role;

-- Functions: the RLS helper for signed-in users; the inbox's and the outbound trigger's
-- functions for the service only (never callable through the data API by users).
revoke all on function public.whatsapp_current_user_company_ids() from public, anon;
grant execute on function public.whatsapp_current_user_company_ids() to authenticated, service_role;
do $$
declare
  f text;
begin
  foreach f in array array[
    'public.whatsapp_inbox_queue_refresh(text)',
    'public.whatsapp_inbox_after_insert()',
    'public.whatsapp_inbox_after_update()',
    'public.whatsapp_inbox_claim(text, integer, double precision, integer)',
    'public.whatsapp_outbound_guard_status()'
  ]
  loop
    execute format('revoke all on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
