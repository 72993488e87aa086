-- One round trip per step of the inbound flow: each function below runs the existing functions
-- of one step in one transaction, so an inbound text from a known user costs four requests
-- (record, claim, store-and-record-reply, record-sent) instead of nine. The existing functions
-- stay, unchanged, for the other callers and for instances still running the previous release.

-- Claim as whatsapp_inbox_claim does, each event with the stored WhatsApp conversation whose
-- Kapso id is its conversation key (null when there is none): the worker needs no lookup.
-- A JSON array, oldest event first.
create or replace function public.whatsapp_inbox_claim_with_conversation(
  p_owner text,
  p_limit integer default 10,
  p_lease_seconds double precision default 60,
  p_max_attempts integer default 5
)
returns jsonb
language sql
as $$
  select coalesce(
    jsonb_agg(
      to_jsonb(e) || jsonb_build_object('conversation', (
        select to_jsonb(c)
          from public.conversations c
         where e.conversation_key is not null
           and c.metadata ->> 'channel' = 'whatsapp'
           and c.metadata ->> 'kapso_conversation_id' = e.conversation_key
         limit 1))
      order by e.seq),
    '[]'::jsonb)
  from public.whatsapp_inbox_claim(p_owner, p_limit, p_lease_seconds, p_max_attempts) e;
$$;

-- Store an inbound message (whatsapp_append_message) and record the replies to send
-- (whatsapp_outbound_record, in order). With p_count_first_attempt, a first reply created here
-- has its send attempt counted (whatsapp_outbound_mark_attempt): the caller sends it next.
create or replace function public.whatsapp_record_inbound_with_replies(
  p_conversation_id uuid,
  p_role text,
  p_content text,
  p_metadata jsonb,
  p_user_id uuid,
  p_replies jsonb,
  p_count_first_attempt boolean default false
)
returns jsonb
language plpgsql
as $$
declare
  v_message jsonb;
  v_reply jsonb;
  v_record jsonb;
  v_records jsonb := '[]'::jsonb;
  v_first boolean := true;
begin
  v_message := public.whatsapp_append_message(
    p_conversation_id, p_role, p_content, p_metadata, p_user_id);
  for v_reply in
    select value from jsonb_array_elements(coalesce(p_replies, '[]'::jsonb)) with ordinality
     order by ordinality
  loop
    v_record := public.whatsapp_outbound_record(v_reply);
    if v_first and p_count_first_attempt and (v_record ->> 'created')::boolean then
      select jsonb_build_object('message', to_jsonb(m), 'created', true) into v_record
        from public.whatsapp_outbound_mark_attempt((v_record -> 'message' ->> 'id')::uuid) m;
    end if;
    v_first := false;
    v_records := v_records || jsonb_build_array(v_record);
  end loop;
  return jsonb_build_object('message', v_message, 'replies', v_records);
end
$$;

-- Kapso accepted a message: advance it to sent with its wamid (whatsapp_outbound_advance), store
-- p_message in its conversation when the message is accepted (whatsapp_append_message; p_message
-- has conversation_id, role, content, metadata, user_id), and complete the inbox event p_event_id
-- held by p_owner (whatsapp_inbox_complete). Each part is skipped when its argument is null.
create or replace function public.whatsapp_record_sent(
  p_outbound_id uuid,
  p_wamid text,
  p_message jsonb default null,
  p_event_id uuid default null,
  p_owner text default null
)
returns jsonb
language plpgsql
as $$
declare
  v_change jsonb;
  v_stored jsonb;
  v_completed jsonb;
begin
  v_change := public.whatsapp_outbound_advance(p_outbound_id, null, 'sent', p_wamid);
  if p_message is not null
     and v_change is not null
     and v_change -> 'message' ->> 'status' in ('sent', 'delivered', 'read') then
    v_stored := public.whatsapp_append_message(
      (p_message ->> 'conversation_id')::uuid,
      p_message ->> 'role',
      p_message ->> 'content',
      coalesce(p_message -> 'metadata', '{}'::jsonb),
      nullif(p_message ->> 'user_id', '')::uuid);
  end if;
  if p_event_id is not null then
    select to_jsonb(e) into v_completed
      from public.whatsapp_inbox_complete(p_event_id, p_owner) e;
  end if;
  return jsonb_build_object('change', v_change, 'message', v_stored, 'completed', v_completed);
end
$$;

revoke all on function public.whatsapp_inbox_claim_with_conversation(
  text, integer, double precision, integer) from public, anon, authenticated;
grant execute on function public.whatsapp_inbox_claim_with_conversation(
  text, integer, double precision, integer) to service_role;
revoke all on function public.whatsapp_record_inbound_with_replies(
  uuid, text, text, jsonb, uuid, jsonb, boolean) from public, anon, authenticated;
grant execute on function public.whatsapp_record_inbound_with_replies(
  uuid, text, text, jsonb, uuid, jsonb, boolean) to service_role;
revoke all on function public.whatsapp_record_sent(uuid, text, jsonb, uuid, text)
  from public, anon, authenticated;
grant execute on function public.whatsapp_record_sent(uuid, text, jsonb, uuid, text)
  to service_role;
