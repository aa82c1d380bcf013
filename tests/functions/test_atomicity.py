"""A turn is all or nothing: when the settle fails, no message, no usage row, no charge; hold released."""

from __future__ import annotations

from typing import Any

from tests.support.pg import Sql


def test_failed_settle_leaves_nothing_behind_and_releases_the_hold(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    # Make the assistant message insert fail inside settle_chat_turn (after the user message was written).
    db.q("""
        create function public.test_fail_assistant() returns trigger language plpgsql as $$
        begin
          if new.role = 'assistant' then raise exception using errcode = 'XX000', message = 'disk on fire'; end if;
          return new;
        end $$;
        create trigger test_fail_assistant before insert on public.chat_messages
          for each row execute function public.test_fail_assistant();
    """)
    before = db.one("select balance_usd from public.billing_accounts where user_id = %s", (uid,))
    r = api.post("chat", {"message": "this turn must vanish"}, user=uid)
    assert r.status_code == 500
    assert r.json["error"]["code"] == "database_error" and "disk on fire" not in r.data.decode()
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (uid,)) == 0
    assert db.one("select count(*) from public.chat_sessions where user_id = %s", (uid,)) == 0
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (uid,)) == 0
    assert db.one("select count(*) from public.credit_ledger where user_id = %s and kind = 'charge'", (uid,)) == 0
    acct = db.one("select balance_usd, held_usd from public.billing_accounts where user_id = %s", (uid,))
    assert acct["balance_usd"] == before and acct["held_usd"] == 0
    assert db.one("select status from public.holds where user_id = %s", (uid,)) == "released"
