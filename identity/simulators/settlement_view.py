"""How the billing counter's screen shows a (pre-)settlement answered by the insurance service
(``POST /insurance/settlements[/preview]``): who pays what, in yuan, and why each line was
judged as it was. Only what the answer holds; nothing is computed here."""

from __future__ import annotations

from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

SETTLEMENTS = "/insurance/settlements"
_PAYERS = (
    ("pooled_fen", "basic medical insurance (pooled fund)"),
    ("critical_fen", "critical-illness insurance"),
    ("assistance_fen", "medical assistance"),
    ("personal_account_fen", "personal account"),
    ("cash_fen", "cash at the counter"),
)


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


def show_settlement(console: Console, response: httpx.Response) -> None:
    """Print one answer of the settlement routes: the split, or the refusal and its reason."""
    path = response.request.url.path
    step = "pre-settlement" if path.endswith("/preview") else "settlement"
    body: dict[str, Any] = response.json() if response.content else {}
    if response.status_code not in (200, 201):
        reason = f" [{body['code']}]" if body.get("code") else ""
        console.print(
            f"[red]{step} refused ({response.status_code}){reason}:[/red] {body.get('detail')}"
        )
        return
    split = body["split"]
    title = f"{step} of bill {body['bill_id']}: total {yuan(split['total_fen'])}"
    if body.get("claim_id"):
        title += f" (claim {body['claim_id']}, {body['status']})"
    table = Table(title=title, title_justify="left")
    table.add_column("paid by")
    table.add_column("amount", justify="right")
    for key, label in _PAYERS:
        table.add_row(label, yuan(split[key]))
    console.print(table)
    console.print(
        f"  in scope {yuan(body['in_scope_fen'])}, deductible {yuan(body['deductible_fen'])}, "
        f"outside the catalogue or Class C {yuan(body['excluded_fen'])}, over price caps "
        f"{yuan(body['over_cap_fen'])}, Class B first self-pay {yuan(body['first_self_pay_fen'])}"
        f" (rules: {body['scheme']} v{body['rule_version']}, "
        f"hospital level {body['hospital_level']})"
    )
    for line in body["lines"]:
        reasons = ", ".join(line["reasons"])
        amount = yuan(line["amount_fen"])
        console.print(f"  line {line['sequence']} {line['code']} {amount}: {reasons}")
