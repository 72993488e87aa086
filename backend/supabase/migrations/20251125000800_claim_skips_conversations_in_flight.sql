-- A claim also skips a conversation that has an event in flight (processing, lease alive),
-- not only one with an older unfinished event. The difference shows when an older event becomes
-- unfinished after a newer one was claimed: a dead event replayed while the conversation's next
-- event runs, or two API processes whose inserts commit out of numbering order. Before, such an
-- older event was handed out beside the running one; now it waits for it. Same signature and
-- result as before.

create index if not exists whatsapp_inbox_events_in_flight_idx
  on public.whatsapp_inbox_events (conversation_key)
  where state = 'processing';

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
       and (e.conversation_key is null or (
             not exists (
               select 1
                 from public.whatsapp_inbox_events older
                where older.conversation_key = e.conversation_key
                  and older.seq < e.seq
                  and older.state in ('pending', 'processing'))
             and not exists (
               select 1
                 from public.whatsapp_inbox_events busy
                where busy.conversation_key = e.conversation_key
                  and busy.state = 'processing'
                  and busy.lease_expires_at > now()
                  and busy.id <> e.id)))
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

revoke all on function public.whatsapp_inbox_claim(text, integer, double precision, integer)
  from public, anon, authenticated;
grant execute on function public.whatsapp_inbox_claim(text, integer, double precision, integer)
  to service_role;
