"""The money invariants, checked from outside after a test: for every user at once (`check_books`, the
database tests) or for one user whose requests raced through the functions (`books_balance`)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.pg import Sql


def check_books(db: Sql) -> None:
    """The money invariants, for every user: the ledger sums to the balance, held equals the open holds,
    nothing is negative, and every settled hold is charged exactly once (ledger and usage row)."""
    broken = db.q(
        "select a.user_id, a.balance_usd, a.held_usd, coalesce(l.total, 0) as ledger, coalesce(h.open, 0) as open"
        " from public.billing_accounts a"
        " left join (select user_id, sum(amount_usd) as total from public.credit_ledger group by 1) l using (user_id)"
        " left join (select user_id, sum(amount_usd) as open from public.holds where status = 'open' group by 1) h"
        "   using (user_id)"
        " where a.balance_usd <> coalesce(l.total, 0) or a.held_usd <> coalesce(h.open, 0)"
        "   or a.balance_usd < 0 or a.held_usd < 0 or a.held_usd > a.balance_usd"
    )
    assert broken == [], broken
    # Every entry's balance_after is the running sum of the user's ledger: no update was lost or reordered.
    drift = db.q("select id, user_id from (select id, user_id, balance_after,"
                 " sum(amount_usd) over (partition by user_id order by id) as running from public.credit_ledger) l"
                 " where balance_after <> running")
    assert drift == [], drift
    bad_holds = db.q(
        "select h.id, h.status, h.charged_usd,"
        " (select count(*) from public.credit_ledger l where l.hold_id = h.id) as charges,"
        " (select coalesce(sum(-l.amount_usd), 0) from public.credit_ledger l where l.hold_id = h.id) as charged,"
        " (select count(*) from public.usage_logs u where u.hold_id = h.id and u.status = 'succeeded') as ok_rows,"
        " (select count(*) from public.usage_logs u where u.hold_id = h.id and u.status = 'failed') as failed_rows"
        " from public.holds h"
    )
    for h in bad_holds:
        if h["status"] == "settled" or (h["status"] == "expired" and h["charged_usd"] is not None):
            # settled, or expired after delivering output (charged for what was delivered)
            assert (h["charges"], h["ok_rows"], h["failed_rows"], h["charged"]) == (1, 1, 0, h["charged_usd"]), h
        else:
            assert (h["charges"], h["ok_rows"], h["charged"]) == (0, 0, 0), h
            # A released hold has its failed usage row (unless the caller said not to record one).
            assert h["failed_rows"] <= (1 if h["status"] == "released" else 0), h


def books_balance(db: Sql, uid: uuid.UUID) -> dict[str, Any]:
    acct = db.one("select balance_usd, held_usd, month_spend_usd from public.billing_accounts where user_id = %s",
                  (uid,))
    ledger = db.one("select coalesce(sum(amount_usd), 0) from public.credit_ledger where user_id = %s", (uid,))
    usage = db.one("select coalesce(sum(cost_usd), 0) from public.usage_logs where user_id = %s", (uid,))
    charges = db.one("select coalesce(-sum(amount_usd), 0) from public.credit_ledger where user_id = %s "
                     "and kind = 'charge'", (uid,))
    assert acct["balance_usd"] >= 0
    assert acct["balance_usd"] == ledger
    assert usage == charges
    assert acct["held_usd"] == 0
    return dict(acct)
