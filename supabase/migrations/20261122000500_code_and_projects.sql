-- Projects the browser writes directly (projects, files with soft delete, thoughts) and compile records
-- (code_gen_requests, written only by settle_compile together with the charge).

create table public.projects (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references public.profiles (id) on delete cascade,
  name text not null check (length(name) between 1 and 200),
  description text check (length(description) <= 4000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz
);
comment on table public.projects is 'A user''s code project; files and thoughts hang off it. Soft-deleted with deleted_at.';
create index projects_user_id_idx on public.projects (user_id, created_at desc) where deleted_at is null;
create index projects_user_id_fk_idx on public.projects (user_id);
create trigger projects_touch before update on public.projects
  for each row execute function private.touch_updated_at();
alter table public.projects enable row level security;
create policy "owner reads own projects" on public.projects for select to authenticated
  using ((select auth.uid()) = user_id);
create policy "owner creates own projects" on public.projects for insert to authenticated
  with check ((select auth.uid()) = user_id);
create policy "owner updates own projects" on public.projects for update to authenticated
  using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);
revoke delete, truncate on public.projects from anon, authenticated;

-- Ownership of a project, for policies on its children. Definer so it does not recurse into RLS.
create or replace function private.owns_project(p_project_id uuid) returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (select 1 from public.projects p
                 where p.id = p_project_id and p.user_id = (select auth.uid()) and p.deleted_at is null)
$$;
revoke all on function private.owns_project(uuid) from public;
grant execute on function private.owns_project(uuid) to authenticated;

create table public.project_files (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references public.projects (id) on delete cascade,
  user_id uuid not null default auth.uid() references public.profiles (id) on delete cascade,
  path text not null check (length(path) between 1 and 1024 and path !~ '(^/|\.\./|^\.\.$)'),
  content text not null default '' check (length(content) <= 1000000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz
);
comment on table public.project_files is 'Files of a project; one live row per path (deleted_at is null).';
create unique index project_files_live_path_idx on public.project_files (project_id, path) where deleted_at is null;
create index project_files_project_id_idx on public.project_files (project_id);
create index project_files_user_id_idx on public.project_files (user_id);
create trigger project_files_touch before update on public.project_files
  for each row execute function private.touch_updated_at();
alter table public.project_files enable row level security;
create policy "owner reads own files" on public.project_files for select to authenticated
  using ((select auth.uid()) = user_id);
create policy "owner creates files in own projects" on public.project_files for insert to authenticated
  with check ((select auth.uid()) = user_id and (select private.owns_project(project_id)));
create policy "owner updates own files" on public.project_files for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id and (select private.owns_project(project_id)));
revoke delete, truncate on public.project_files from anon, authenticated;

create table public.project_thoughts (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references public.projects (id) on delete cascade,
  user_id uuid not null default auth.uid() references public.profiles (id) on delete cascade,
  content text not null check (length(content) between 1 and 20000),
  created_at timestamptz not null default now()
);
comment on table public.project_thoughts is 'Notes the assistant or the user keeps about a project.';
create index project_thoughts_project_id_idx on public.project_thoughts (project_id, created_at desc);
create index project_thoughts_user_id_idx on public.project_thoughts (user_id);
alter table public.project_thoughts enable row level security;
create policy "owner reads own thoughts" on public.project_thoughts for select to authenticated
  using ((select auth.uid()) = user_id);
create policy "owner creates thoughts in own projects" on public.project_thoughts for insert to authenticated
  with check ((select auth.uid()) = user_id and (select private.owns_project(project_id)));
revoke update, delete, truncate on public.project_thoughts from anon, authenticated;

create table public.code_gen_requests (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.profiles (id) on delete cascade,
  project_id uuid references public.projects (id) on delete set null,
  hold_id uuid references public.holds (id) on delete set null,
  request_id text not null check (length(request_id) between 1 and 200),
  task text not null check (length(task) between 1 and 20000),
  language text not null check (language in ('python', 'sql')),
  code text not null,
  valid boolean not null,
  diagnostics jsonb not null default '[]'::jsonb check (jsonb_typeof(diagnostics) = 'array'),
  repaired boolean not null default false,
  model text not null,
  input_tokens integer not null check (input_tokens >= 0),
  output_tokens integer not null check (output_tokens >= 0),
  cost_usd numeric(14,6) not null check (cost_usd >= 0),
  created_at timestamptz not null default now(),
  constraint code_gen_requests_one_per_request unique (user_id, request_id)
);
comment on table public.code_gen_requests is 'Compile calls: the task, the code, whether it parses, and what it cost.';
create index code_gen_requests_user_created_idx on public.code_gen_requests (user_id, created_at desc);
create index code_gen_requests_project_id_idx on public.code_gen_requests (project_id);
create index code_gen_requests_hold_id_idx on public.code_gen_requests (hold_id);
alter table public.code_gen_requests enable row level security;
create policy "owner reads own compile requests" on public.code_gen_requests for select to authenticated
  using ((select auth.uid()) = user_id);
revoke insert, update, delete, truncate, references, trigger on public.code_gen_requests from anon, authenticated;

-- A project of the user's, or PT404. Used before a compile is billed.
create or replace function public.check_project(p_project_id uuid, p_user_id uuid default null) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  v_user uuid := private.effective_user(p_user_id);
  v_row public.projects;
begin
  select * into v_row from public.projects p
  where p.id = p_project_id and p.user_id = v_user and p.deleted_at is null;
  if not found then
    raise exception using errcode = 'PT404', message = 'project_not_found';
  end if;
  return jsonb_build_object('id', v_row.id, 'name', v_row.name);
end
$$;

create or replace function public.settle_compile(
  p_hold_id uuid,
  p_task text,
  p_language text,
  p_code text,
  p_valid boolean,
  p_diagnostics jsonb,
  p_input_tokens integer,
  p_output_tokens integer,
  p_latency_ms integer default null,
  p_project_id uuid default null,
  p_repaired boolean default false
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_hold public.holds := private.lock_hold(p_hold_id);
  v_cost numeric(14,6);
  v_id uuid;
  v_result jsonb;
begin
  if v_hold.status = 'settled' then
    return v_hold.result || jsonb_build_object('replay', true);
  end if;
  perform private.require_open_hold(v_hold, 'compile');
  if p_project_id is not null and not exists (
    select 1 from public.projects p where p.id = p_project_id and p.user_id = v_hold.user_id and p.deleted_at is null
  ) then
    raise exception using errcode = 'PT404', message = 'project_not_found';
  end if;
  v_cost := private.hold_cost(v_hold, p_input_tokens, p_output_tokens);
  insert into public.code_gen_requests (user_id, project_id, hold_id, request_id, task, language, code, valid,
    diagnostics, repaired, model, input_tokens, output_tokens, cost_usd)
  values (v_hold.user_id, p_project_id, v_hold.id, v_hold.request_id, p_task, p_language, p_code, p_valid,
    coalesce(p_diagnostics, '[]'::jsonb), p_repaired, v_hold.model, p_input_tokens, p_output_tokens, v_cost)
  returning id into v_id;
  v_result := private.charge_hold(v_hold, v_cost, 'compile', p_input_tokens, p_output_tokens, p_latency_ms,
    jsonb_build_object('id', v_id, 'language', p_language, 'code', p_code, 'valid', p_valid,
                       'diagnostics', coalesce(p_diagnostics, '[]'::jsonb), 'repaired', p_repaired,
                       'project_id', p_project_id));
  return v_result || jsonb_build_object('replay', false);
end
$$;

-- Save many files of one project in one statement: insert new paths, overwrite live ones.
create or replace function public.save_project_files(p_project_id uuid, p_files jsonb, p_user_id uuid default null)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_user uuid := private.effective_user(p_user_id);
  v_out jsonb;
begin
  perform 1 from public.projects p where p.id = p_project_id and p.user_id = v_user and p.deleted_at is null;
  if not found then
    raise exception using errcode = 'PT404', message = 'project_not_found';
  end if;
  if p_files is null or jsonb_typeof(p_files) <> 'array' or jsonb_array_length(p_files) not between 1 and 500 then
    raise exception using errcode = 'PT422', message = 'invalid_files', detail = 'files: an array of 1 to 500 {path, content}';
  end if;
  -- One upsert cannot touch the same row twice (SQLSTATE 21000): a path repeated in one call is bad input.
  if (select count(x.path) <> count(distinct x.path) from jsonb_to_recordset(p_files) as x(path text)) then
    raise exception using errcode = 'PT422', message = 'invalid_files', detail = 'files: each path at most once';
  end if;
  with saved as (
    insert into public.project_files as f (project_id, user_id, path, content)
    select p_project_id, v_user, x.path, coalesce(x.content, '')
    from jsonb_to_recordset(p_files) as x(path text, content text)
    on conflict (project_id, path) where deleted_at is null
    do update set content = excluded.content
    returning f.id, f.path, f.updated_at
  )
  select coalesce(jsonb_agg(jsonb_build_object('id', s.id, 'path', s.path, 'updated_at', s.updated_at)
                            order by s.path), '[]'::jsonb)
  into v_out from saved s;
  return v_out;
end
$$;

create or replace function public.delete_project_file(p_file_id uuid, p_user_id uuid default null) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_user uuid := private.effective_user(p_user_id);
  v_at timestamptz;
begin
  update public.project_files set deleted_at = now()
  where id = p_file_id and user_id = v_user and deleted_at is null
  returning deleted_at into v_at;
  if not found then
    raise exception using errcode = 'PT404', message = 'file_not_found';
  end if;
  return jsonb_build_object('id', p_file_id, 'deleted_at', v_at);
end
$$;

revoke all on function public.check_project(uuid, uuid) from public, anon, authenticated;
revoke all on function public.settle_compile(uuid, text, text, text, boolean, jsonb, integer, integer, integer, uuid, boolean)
  from public, anon, authenticated;
revoke all on function public.save_project_files(uuid, jsonb, uuid) from public, anon, authenticated;
revoke all on function public.delete_project_file(uuid, uuid) from public, anon, authenticated;
grant execute on function public.check_project(uuid, uuid) to authenticated, service_role;
grant execute on function public.settle_compile(uuid, text, text, text, boolean, jsonb, integer, integer, integer, uuid, boolean)
  to service_role;
grant execute on function public.save_project_files(uuid, jsonb, uuid) to authenticated, service_role;
grant execute on function public.delete_project_file(uuid, uuid) to authenticated, service_role;
