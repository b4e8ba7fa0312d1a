"""`bossa alerts` commands: the trial set changed at run time (M5), subscribers, and the
same refusal text as the API for a bad value."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from bossa.alerts.cli import alerts_app
from bossa.errors import UserError


def cli(db_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(alerts_app, list(args), env={"BOSSA_DATABASE_URL": db_url})
    text = result.stdout + result.stderr
    if isinstance(result.exception, UserError):
        return 2, text + f"error: {result.exception}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, text


def test_trial_set_and_subscribers(db_url: str) -> None:
    code, out = cli(db_url, "trial", "add-range", "86137")
    assert code == 0, out
    code, out = cli(db_url, "trial", "quota", "25")
    assert code == 0, out
    shown = json.loads(cli(db_url, "trial", "show")[1])
    assert shown["ranges"] == ["86137"]
    assert shown["quota"] == 25
    assert shown["members"] == 0

    assert cli(db_url, "trial", "add-range", "0")[0] == 2
    assert cli(db_url, "trial", "remove-range", "86138")[0] == 2  # not in the set
    assert cli(db_url, "trial", "quota", "-1")[0] == 2
    assert json.loads(cli(db_url, "trial", "remove-range", "86137")[1])["ranges"] == []

    code, out = cli(db_url, "subscribers", "add", "+82 10 1234 5678", "--lang", "ko")
    assert code == 0, out
    assert json.loads(out)["msisdn"] == "821012345678"
    code, out = cli(db_url, "subscribers", "add", "12345")
    assert code == 2
    assert "msisdn" in out
    history = json.loads(cli(db_url, "calls", "821012345678")[1])
    assert history == {"callee": "821012345678", "calls": [], "notices": []}
    assert cli(db_url, "subscribers", "remove", "821012345678")[0] == 0
    assert cli(db_url, "subscribers", "remove", "821012345678")[0] == 2
