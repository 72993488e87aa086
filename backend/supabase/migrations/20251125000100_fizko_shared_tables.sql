-- The Fizko tables this service shares with the web app, with the columns it reads.
-- Hosted Fizko already has them: every statement is "if not exists", so this migration only adds
-- what is missing (the normalised phone column and the indexes this service's lookups need).
-- No foreign key from profiles to auth.users here: hosted Fizko already has that link, and local
-- stacks have no Auth server, so tests and tools create users by inserting profiles.

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
