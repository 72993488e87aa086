-- Row-level security on every table this service touches. The service itself uses the
-- service_role key, which bypasses RLS. Signed-in users (role authenticated) may read only
-- rows of the companies they belong to (an active row in `sessions`); anon reads nothing (no
-- policy names anon). Policies are additive (OR): on hosted Fizko they widen nothing beyond
-- the user's own companies. `create policy` has no "if not exists", hence drop-then-create.

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

revoke all on function public.whatsapp_current_user_company_ids() from public, anon;
grant execute on function public.whatsapp_current_user_company_ids() to authenticated, service_role;

alter table public.profiles enable row level security;
alter table public.companies enable row level security;
alter table public.sessions enable row level security;
alter table public.conversations enable row level security;
alter table public.messages enable row level security;
alter table public.whatsapp_inbox_events enable row level security;
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

-- The inbox holds raw webhook payloads (phone numbers, message text): service only, no policy,
-- and no table privileges for users either.
revoke all on public.whatsapp_inbox_events from anon, authenticated;
grant all on public.whatsapp_inbox_events to service_role;
grant select on public.whatsapp_outbound_messages to authenticated;
revoke insert, update, delete, truncate on public.whatsapp_outbound_messages from anon, authenticated;
grant all on public.whatsapp_outbound_messages to service_role;
