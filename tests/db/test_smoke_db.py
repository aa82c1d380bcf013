from decimal import Decimal

from tests.support.pg import Sql


def test_charge_settles_and_ledger_matches_balance(db: Sql) -> None:
    uid = db.make_user(balance=10)
    hold = db.rpc("begin_charge", user_id=uid, request_id="r1", operation="chat", model="offline-dev",
                  prompt_chars=100, max_output_tokens=100)
    assert hold["replay"] is False
    res = db.rpc("settle_chat_turn", hold_id=hold["hold_id"], user_message="hi",
                 assistant_message="hello", input_tokens=10, output_tokens=20)
    assert Decimal(str(res["cost_usd"])) == Decimal("0.00005")
    acct = db.one("select balance_usd, held_usd from public.billing_accounts where user_id = %s", (uid,))
    ledger = db.one("select sum(amount_usd) from public.credit_ledger where user_id = %s", (uid,))
    assert acct["balance_usd"] == ledger
    assert acct["held_usd"] == 0
