-- Demo data for local development: plans, model prices and one demo user. Nothing the schema needs.

insert into public.plans (id, name, monthly_quota_usd, requests_per_minute, signup_grant_usd) values
  ('pro', 'Pro', 100, 120, 0),
  ('team', 'Team', 1000, 600, 0)
on conflict (id) do update set name = excluded.name, monthly_quota_usd = excluded.monthly_quota_usd,
  requests_per_minute = excluded.requests_per_minute, signup_grant_usd = excluded.signup_grant_usd;

insert into public.model_prices (model, provider, input_usd_per_mtok, output_usd_per_mtok, max_output_tokens, is_default) values
  ('offline-dev', 'offline', 1.000000, 2.000000, 4096, true),
  ('gpt-4o-mini', 'openai', 0.150000, 0.600000, 16384, false),
  ('gpt-4o', 'openai', 2.500000, 10.000000, 16384, false),
  ('claude-sonnet-4-5', 'anthropic', 3.000000, 15.000000, 8192, false),
  ('claude-haiku-4-5', 'anthropic', 1.000000, 5.000000, 8192, false)
on conflict (model) do update set provider = excluded.provider, input_usd_per_mtok = excluded.input_usd_per_mtok,
  output_usd_per_mtok = excluded.output_usd_per_mtok, max_output_tokens = excluded.max_output_tokens,
  is_default = excluded.is_default;

-- The demo user (profile and billing account come from the triggers), on the pro plan with $25 of credit.
insert into auth.users (id, email, raw_user_meta_data)
values ('00000000-0000-4000-8000-00000000d3e0', 'demo@example.com', '{"display_name": "Demo User"}')
on conflict (id) do nothing;
update public.profiles set plan_id = 'pro' where id = '00000000-0000-4000-8000-00000000d3e0';
select public.top_up('00000000-0000-4000-8000-00000000d3e0', 25, 'seed-demo-credit', 'grant', 'demo credit');
