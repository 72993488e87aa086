-- Functions the service calls through PostgREST `rpc`: each is one transaction, for work that
-- must be atomic or must be claimed safely by many processes. All run as the caller
-- (security invoker); only service_role may execute them (see the grants at the end).

-- Record webhook events; duplicates (same idempotency key, or same wamid + event) are skipped
-- by the unique constraints, never by check-then-insert. Returns one row per input, in order:
-- the stored event id and whether this call created it.
create or replace function public.whatsapp_inbox_record(p_events jsonb)
returns table (event_id uuid, idempotency_key text, is_new boolean)
language plpgsql
as $$
#variable_conflict use_column
declare
  v_item jsonb;
  v_id uuid;
begin
  for v_item in select value from jsonb_array_elements(p_events) with ordinality order by ordinality
  loop
    v_id := null;
    insert into public.whatsapp_inbox_events as e
      (idempotency_key, event, wamid, conversation_key, payload)
    values (
      v_item ->> 'idempotency_key',
      v_item ->> 'event',
      nullif(v_item ->> 'wamid', ''),
      nullif(v_item ->> 'conversation_key', ''),
      coalesce(v_item -> 'payload', '{}'::jsonb)
    )
    on conflict do nothing
    returning e.id into v_id;

    if v_id is not null then
      is_new := true;
    else
      -- The conflicting row is committed by now (the insert waited for it).
      select e.id into v_id
        from public.whatsapp_inbox_events e
       where e.idempotency_key = v_item ->> 'idempotency_key'
          or (e.wamid = nullif(v_item ->> 'wamid', '') and e.event = v_item ->> 'event')
       order by e.seq
       limit 1;
      is_new := false;
    end if;
    event_id := v_id;
    idempotency_key := v_item ->> 'idempotency_key';
    return next;
  end loop;
end
$$;

-- Claim up to p_limit due events for p_owner with a lease. An event is due when it is pending
-- and its next attempt time has come, or when it is processing but its lease ran out (its
-- worker died). Per-conversation order: only the oldest unfinished event of a conversation can
-- be claimed, so a conversation never has two events in flight and never skips ahead of a
-- retrying one. SKIP LOCKED lets concurrent claimers take disjoint events without waiting.
create or replace function public.whatsapp_inbox_claim(
  p_owner text,
  p_limit integer default 10,
  p_lease_seconds double precision default 60,
  p_max_attempts integer default 5
)
returns setof public.whatsapp_inbox_events
language plpgsql
as $$
begin
  -- A lease that ran out on the last allowed attempt: the event keeps killing its worker, so it
  -- goes dead (visible and re-playable) instead of being handed out forever.
  update public.whatsapp_inbox_events e
     set state = 'dead',
         lease_owner = null,
         lease_expires_at = null,
         last_error = coalesce(e.last_error || E'\n', '') || 'lease expired on the last attempt',
         updated_at = now()
   where e.id in (
     select x.id
       from public.whatsapp_inbox_events x
      where x.state = 'processing'
        and x.lease_expires_at <= now()
        and x.attempts >= p_max_attempts
      for update skip locked
   );

  return query
  with candidate as (
    select e.id
      from public.whatsapp_inbox_events e
     where ((e.state = 'pending' and e.next_attempt_at <= now())
         or (e.state = 'processing' and e.lease_expires_at <= now()))
       and (e.conversation_key is null or not exists (
             select 1
               from public.whatsapp_inbox_events older
              where older.conversation_key = e.conversation_key
                and older.seq < e.seq
                and older.state in ('pending', 'processing')))
     order by e.seq
     limit greatest(p_limit, 0)
     for update skip locked
  )
  update public.whatsapp_inbox_events e
     set state = 'processing',
         attempts = e.attempts + 1,
         lease_owner = p_owner,
         lease_expires_at = now() + make_interval(secs => p_lease_seconds),
         updated_at = now()
    from candidate
   where e.id = candidate.id
  returning e.*;
end
$$;

-- Keep a lease alive while a long step (the assistant) runs. Empty result: the lease was lost.
create or replace function public.whatsapp_inbox_extend_lease(
  p_event_id uuid,
  p_owner text,
  p_lease_seconds double precision
)
returns setof public.whatsapp_inbox_events
language sql
as $$
  update public.whatsapp_inbox_events
     set lease_expires_at = now() + make_interval(secs => p_lease_seconds),
         updated_at = now()
   where id = p_event_id and state = 'processing' and lease_owner = p_owner
  returning *;
$$;

-- Mark done. Only the lease holder may; an empty result means another worker took it over.
create or replace function public.whatsapp_inbox_complete(p_event_id uuid, p_owner text)
returns setof public.whatsapp_inbox_events
language sql
as $$
  update public.whatsapp_inbox_events
     set state = 'done',
         lease_owner = null,
         lease_expires_at = null,
         completed_at = now(),
         updated_at = now()
   where id = p_event_id and state = 'processing' and lease_owner = p_owner
  returning *;
$$;

-- Record a failure: back to pending after the caller's backoff (exponential with jitter is
-- computed by the caller), or dead after p_max_attempts attempts or when p_permanent.
create or replace function public.whatsapp_inbox_fail(
  p_event_id uuid,
  p_owner text,
  p_error text,
  p_retry_delay_seconds double precision,
  p_max_attempts integer,
  p_permanent boolean default false
)
returns setof public.whatsapp_inbox_events
language sql
as $$
  update public.whatsapp_inbox_events
     set state = case when p_permanent or attempts >= p_max_attempts then 'dead' else 'pending' end,
         next_attempt_at = case
           when p_permanent or attempts >= p_max_attempts then next_attempt_at
           else now() + make_interval(secs => greatest(p_retry_delay_seconds, 0))
         end,
         lease_owner = null,
         lease_expires_at = null,
         last_error = left(p_error, 4000),
         updated_at = now()
   where id = p_event_id and state = 'processing' and lease_owner = p_owner
  returning *;
$$;

-- Replay a dead event: pending again, due now, attempts reset; its last error is kept.
create or replace function public.whatsapp_inbox_requeue(p_event_id uuid)
returns setof public.whatsapp_inbox_events
language sql
as $$
  update public.whatsapp_inbox_events
     set state = 'pending',
         attempts = 0,
         next_attempt_at = now(),
         completed_at = null,
         updated_at = now()
   where id = p_event_id and state = 'dead'
  returning *;
$$;

-- Find or create the conversation of a Kapso conversation id. Concurrent calls meet the unique
-- index and all return the one row. The caller's metadata is used only on creation.
create or replace function public.whatsapp_get_or_create_conversation(
  p_kapso_conversation_id text,
  p_user_id uuid,
  p_metadata jsonb,
  p_title text default null
)
returns jsonb
language plpgsql
as $$
declare
  v public.conversations;
begin
  insert into public.conversations as c (user_id, title, metadata)
  values (
    p_user_id,
    coalesce(p_title, 'Nueva conversación'),
    coalesce(p_metadata, '{}'::jsonb)
      || jsonb_build_object('channel', 'whatsapp', 'kapso_conversation_id', p_kapso_conversation_id)
  )
  on conflict ((metadata ->> 'kapso_conversation_id')) where metadata ->> 'channel' = 'whatsapp'
  do nothing
  returning c.* into v;

  if v.id is not null then
    return jsonb_build_object('conversation', to_jsonb(v), 'created', true);
  end if;

  select c.* into v
    from public.conversations c
   where c.metadata ->> 'channel' = 'whatsapp'
     and c.metadata ->> 'kapso_conversation_id' = p_kapso_conversation_id;
  return jsonb_build_object('conversation', to_jsonb(v), 'created', false);
end
$$;

-- Merge keys into a conversation's metadata (the user/company cache and its resolved_at) and
-- optionally change its status, in one statement so concurrent patches do not lose keys.
create or replace function public.whatsapp_patch_conversation(
  p_conversation_id uuid,
  p_metadata jsonb,
  p_status text default null
)
returns setof public.conversations
language sql
as $$
  update public.conversations
     set metadata = metadata || coalesce(p_metadata, '{}'::jsonb),
         status = coalesce(p_status, status),
         updated_at = now()
   where id = p_conversation_id
  returning *;
$$;

-- Append a message; a WhatsApp message whose wamid is already stored is not stored again (the
-- existing row is returned with created = false). A new message bumps the conversation's
-- updated_at, which orders "latest conversation" lookups and the inbox listing.
create or replace function public.whatsapp_append_message(
  p_conversation_id uuid,
  p_role text,
  p_content text,
  p_metadata jsonb,
  p_user_id uuid default null
)
returns jsonb
language plpgsql
as $$
declare
  v public.messages;
begin
  insert into public.messages as m (conversation_id, user_id, role, content, metadata)
  values (p_conversation_id, p_user_id, p_role, p_content, coalesce(p_metadata, '{}'::jsonb))
  on conflict ((metadata ->> 'whatsapp_message_id')) where metadata ->> 'channel' = 'whatsapp'
  do nothing
  returning m.* into v;

  if v.id is not null then
    update public.conversations set updated_at = now() where id = p_conversation_id;
    return jsonb_build_object('message', to_jsonb(v), 'created', true);
  end if;

  select m.* into v
    from public.messages m
   where m.metadata ->> 'channel' = 'whatsapp'
     and m.metadata ->> 'whatsapp_message_id' = p_metadata ->> 'whatsapp_message_id';
  return jsonb_build_object('message', to_jsonb(v), 'created', false);
end
$$;

-- Record an outbound message before sending it. The same idempotency key (per user) or wamid
-- returns the row already there (created = false): the caller then knows not to send again.
create or replace function public.whatsapp_outbound_record(p_message jsonb)
returns jsonb
language plpgsql
as $$
declare
  r public.whatsapp_outbound_messages;
  v public.whatsapp_outbound_messages;
begin
  r := jsonb_populate_record(null::public.whatsapp_outbound_messages, p_message);

  insert into public.whatsapp_outbound_messages as o (
    wamid, conversation_id, kapso_conversation_id, company_id, user_id, to_phone,
    business_phone_number_id, message_type, purpose, inbox_event_id, status, error_code,
    error_message, idempotency_key, request_fingerprint
  )
  values (
    r.wamid, r.conversation_id, r.kapso_conversation_id, r.company_id, r.user_id, r.to_phone,
    r.business_phone_number_id, r.message_type, r.purpose, r.inbox_event_id,
    coalesce(r.status, 'pending'), r.error_code, r.error_message, r.idempotency_key,
    r.request_fingerprint
  )
  on conflict do nothing
  returning o.* into v;

  if v.id is not null then
    return jsonb_build_object('message', to_jsonb(v), 'created', true);
  end if;

  select o.* into v
    from public.whatsapp_outbound_messages o
   where (r.idempotency_key is not null
          and o.idempotency_key = r.idempotency_key
          and coalesce(o.user_id, '00000000-0000-0000-0000-000000000000'::uuid)
            = coalesce(r.user_id, '00000000-0000-0000-0000-000000000000'::uuid))
      or (r.wamid is not null and o.wamid = r.wamid)
   limit 1;
  return jsonb_build_object('message', to_jsonb(v), 'created', false);
end
$$;

-- Move an outbound message's status forward (by our id, or by wamid for status webhooks),
-- optionally setting its wamid once Kapso accepted it. Stale or backward updates change
-- nothing (changed = false); NULL when no such message exists.
create or replace function public.whatsapp_outbound_advance(
  p_id uuid,
  p_wamid text,
  p_status text,
  p_set_wamid text default null,
  p_error_code text default null,
  p_error_message text default null
)
returns jsonb
language plpgsql
as $$
declare
  v public.whatsapp_outbound_messages;
  v_changed boolean := false;
begin
  if p_id is not null then
    select * into v from public.whatsapp_outbound_messages where id = p_id for update;
  else
    select * into v from public.whatsapp_outbound_messages where wamid = p_wamid for update;
  end if;
  if v.id is null then
    return null;
  end if;

  if v.status <> p_status and public.whatsapp_outbound_status_allowed(v.status, p_status) then
    update public.whatsapp_outbound_messages
       set status = p_status,
           wamid = coalesce(wamid, p_set_wamid),
           error_code = coalesce(p_error_code, error_code),
           error_message = coalesce(p_error_message, error_message)
     where id = v.id
    returning * into v;
    v_changed := true;
  elsif p_set_wamid is not null and v.wamid is null then
    update public.whatsapp_outbound_messages set wamid = p_set_wamid where id = v.id
    returning * into v;
    v_changed := true;
  end if;
  return jsonb_build_object('message', to_jsonb(v), 'changed', v_changed);
end
$$;

-- Only the service (service_role) runs these; users and anonymous callers never do.
do $$
declare
  f text;
begin
  foreach f in array array[
    'public.whatsapp_inbox_record(jsonb)',
    'public.whatsapp_inbox_claim(text, integer, double precision, integer)',
    'public.whatsapp_inbox_extend_lease(uuid, text, double precision)',
    'public.whatsapp_inbox_complete(uuid, text)',
    'public.whatsapp_inbox_fail(uuid, text, text, double precision, integer, boolean)',
    'public.whatsapp_inbox_requeue(uuid)',
    'public.whatsapp_get_or_create_conversation(text, uuid, jsonb, text)',
    'public.whatsapp_patch_conversation(uuid, jsonb, text)',
    'public.whatsapp_append_message(uuid, text, text, jsonb, uuid)',
    'public.whatsapp_outbound_record(jsonb)',
    'public.whatsapp_outbound_advance(uuid, text, text, text, text, text)',
    'public.whatsapp_outbound_guard_status()'
  ]
  loop
    execute format('revoke all on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
