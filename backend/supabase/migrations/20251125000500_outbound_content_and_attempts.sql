-- Outbound messages keep their text and count send attempts, so a re-processed event can tell
-- "never sent" from "a send may have left" (then it checks Kapso's history instead of sending
-- blindly again).

alter table public.whatsapp_outbound_messages add column if not exists content text;
alter table public.whatsapp_outbound_messages
  add column if not exists send_attempts integer not null default 0;
alter table public.whatsapp_outbound_messages add column if not exists last_attempt_at timestamptz;

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
    error_message, idempotency_key, request_fingerprint, content
  )
  values (
    r.wamid, r.conversation_id, r.kapso_conversation_id, r.company_id, r.user_id, r.to_phone,
    r.business_phone_number_id, r.message_type, r.purpose, r.inbox_event_id,
    coalesce(r.status, 'pending'), r.error_code, r.error_message, r.idempotency_key,
    r.request_fingerprint, r.content
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

-- Count a send attempt before calling Kapso: after a crash the row shows a send may have left.
create or replace function public.whatsapp_outbound_mark_attempt(p_id uuid)
returns setof public.whatsapp_outbound_messages
language sql
as $$
  update public.whatsapp_outbound_messages
     set send_attempts = send_attempts + 1,
         last_attempt_at = now()
   where id = p_id
  returning *;
$$;

revoke all on function public.whatsapp_outbound_record(jsonb) from public, anon, authenticated;
grant execute on function public.whatsapp_outbound_record(jsonb) to service_role;
revoke all on function public.whatsapp_outbound_mark_attempt(uuid) from public, anon, authenticated;
grant execute on function public.whatsapp_outbound_mark_attempt(uuid) to service_role;
