"""Rules are data (issue #6 item 2): a new version published with ``onecard social-security
rules add`` takes over from its date, with no code change, while bills of earlier dates keep
the rules of their date; designated institutions are registered with ``provider add``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from services.kit.tokens import KeySet, StaticKeySource
from social_security.app import create_app
from social_security.claims.rules import default_rule_set
from social_security.cli import app as cli_app
from social_security.models import EnrolmentRow
from social_security.schemes import Scheme
from social_security.settings import SocialSecuritySettings
from tests.harness import serve_asgi
from tests.social_security.conftest import HOSPITAL, ISSUER, SS_KEY, counter_auth

LI = "cz_li"


def _same_database_for_the_cli(settings: SocialSecuritySettings, env: pytest.MonkeyPatch) -> None:
    env.setenv("ONECARD_ENVIRONMENT", "test")
    env.setenv("ONECARD_VAR_DIR", str(settings.var_dir))
    env.delenv("ONECARD_DATABASE_URL_SOCIAL_SECURITY", raising=False)
    if settings.database_url and settings.database_schema:
        env.setenv("ONECARD_DATABASE_URL", settings.database_url)
        env.setenv("ONECARD_DATABASE_SCHEMA", settings.database_schema)
    else:
        env.delenv("ONECARD_DATABASE_URL", raising=False)


def _text(result: Any) -> str:
    """The command's output with the console's line wrapping undone."""
    return " ".join(str(result.output).split())


async def _cli(*args: str) -> Any:
    # The commands run their own event loop (asyncio.run): off this test's loop.
    return await asyncio.to_thread(CliRunner().invoke, cli_app, list(args))


async def test_a_new_rules_version_applies_from_its_date_without_code(
    make_settings: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(SocialSecuritySettings, public_url=ISSUER)
    _same_database_for_the_cli(settings, monkeypatch)
    app = create_app(settings)
    app.state.token_keys = StaticKeySource(KeySet({"ks": SS_KEY.public_key()}))
    richer = default_rule_set(Scheme.RESIDENT_MEDICAL).model_copy(
        update={"version": 2, "effective_from": date(2026, 7, 1)}
    )
    richer = richer.model_copy(
        update={
            "inpatient": tuple(r.model_copy(update={"ratio_bp": 9_000}) for r in richer.inpatient)
        }
    )
    document = tmp_path / "resident-2026-v2.json"
    document.write_text(richer.to_json())

    async with serve_asgi(app) as http:  # start-up installs the shipped rules (version 1)
        added = await _cli("provider", "add", "--facility", HOSPITAL, "--level", "3")
        assert added.exit_code == 0, added.output
        published = await _cli("rules", "add", str(document), "--author", "bureau")
        assert published.exit_code == 0, published.output
        again = await _cli("rules", "add", str(document), "--author", "bureau")
        assert again.exit_code == 1
        assert "must be version 3" in _text(again)
        before = await _cli("rules", "show", "resident_medical", "--on", "2026-06-30")
        assert "version 1" in _text(before)

        async with app.state.runtime.db.unit_of_work() as session:
            session.add(
                EnrolmentRow(
                    citizen=LI,
                    scheme="resident_medical",
                    start_date=date(2026, 1, 1),
                    status="active",
                )
            )

        def bill(bill_id: str, on: date) -> dict[str, Any]:
            line = {"sequence": 1, "code": "FA01", "quantity": 100, "unit_price_fen": 6_000}
            return {
                "bill_id": bill_id,
                "visit_type": "inpatient",
                "service_date": on.isoformat(),
                "lines": [line],
            }

        june = await http.post(
            "/insurance/settlements/preview",
            json=bill("J", date(2026, 6, 30)),
            headers=counter_auth(LI),
        )
        july = await http.post(
            "/insurance/settlements/preview",
            json=bill("K", date(2026, 7, 2)),
            headers=counter_auth(LI),
        )
    assert june.status_code == july.status_code == 200, (june.text, july.text)
    assert (june.json()["rule_version"], july.json()["rule_version"]) == (1, 2)
    in_scope = 600_000 - 120_000  # 100 bed days, less the level-3 deductible
    assert june.json()["split"]["pooled_fen"] == in_scope * 6_500 // 10_000
    assert july.json()["split"]["pooled_fen"] == in_scope * 9_000 // 10_000


async def test_a_document_that_is_not_rules_is_refused(
    make_settings: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _same_database_for_the_cli(make_settings(SocialSecuritySettings), monkeypatch)
    document = tmp_path / "bad.json"
    document.write_text('{"scheme": "resident_medical", "annual_pooled_cap_fen": -1}')
    refused = await _cli("rules", "add", str(document), "--author", "bureau")
    assert refused.exit_code == 2
    assert "not a valid rules document" in _text(refused)
