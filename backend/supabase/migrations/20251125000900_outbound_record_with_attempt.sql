-- Record an outbound message (whatsapp_outbound_record) and, when this call created it, count
-- its first send attempt (whatsapp_outbound_mark_attempt) in the same transaction: the send API
-- records and then sends at once, so this saves it a round trip per message.
create or replace function public.whatsapp_outbound_record_attempted(p_message jsonb)
returns jsonb
language plpgsql
as $$
declare
  v_record jsonb;
begin
  v_record := public.whatsapp_outbound_record(p_message);
  if (v_record ->> 'created')::boolean then
    select jsonb_build_object('message', to_jsonb(m), 'created', true) into v_record
      from public.whatsapp_outbound_mark_attempt((v_record -> 'message' ->> 'id')::uuid) m;
  end if;
  return v_record;
end
$$;

revoke all on function public.whatsapp_outbound_record_attempted(jsonb)
  from public, anon, authenticated;
grant execute on function public.whatsapp_outbound_record_attempted(jsonb) to service_role;
