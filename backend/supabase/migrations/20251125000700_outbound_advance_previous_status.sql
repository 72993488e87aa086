-- whatsapp_outbound_advance also says which status the message had before the call, so the
-- worker can tell a status webhook that settles a send (the API's copy may be missing) from one
-- that only reports progress (nothing else to do). Same signature and return type as before.
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
  v_previous text;
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
  v_previous := v.status;

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
  return jsonb_build_object(
    'message', to_jsonb(v), 'changed', v_changed, 'previous_status', v_previous);
end
$$;

revoke all on function public.whatsapp_outbound_advance(uuid, text, text, text, text, text)
  from public, anon, authenticated;
grant execute on function public.whatsapp_outbound_advance(uuid, text, text, text, text, text)
  to service_role;
