"""`bossa partners ...`: partners, templates, legacy systems, billing policies, runs, and
the billing processor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bossa.access import cli_principal
from bossa.clitools import JsonOpt, date_arg, json_arg, with_runtime
from bossa.errors import InvalidInput
from bossa.partners import service
from bossa.partners.lanes import BillingProcessor, RunDaemon
from bossa.partners.models import (
    Limits,
    PartnerRequest,
    PolicyRequest,
    RunMode,
    SystemKind,
    SystemRequest,
    TemplateRequest,
)
from bossa.runtime import Runtime
from bossa.terminal import out, print_json, table

__all__ = ["partners_app"]

partners_app = typer.Typer(
    help="The partner platform: templates partners run, billed in MDR files.",
    no_args_is_help=True,
)
template_app = typer.Typer(help="Biz templates (YAML or JSON), versioned.", no_args_is_help=True)
billing_app = typer.Typer(help="The billing processor and its MDR files.", no_args_is_help=True)
partners_app.add_typer(template_app, name="template")
partners_app.add_typer(billing_app, name="billing")


def _actor() -> str:
    return cli_principal().actor


def _settings(rt: Runtime) -> service.PartnersSettings:
    return rt.settings(service.PartnersSettings)


@partners_app.command("set")
def set_partner(
    name: Annotated[str, typer.Argument(help="The partner; its tokens carry this name.")],
    display_name: Annotated[str, typer.Option(help="Its name for people.")],
    rate_per_s: Annotated[int, typer.Option(help="Runs per second (1-100000).")] = 100,
    daily_quota: Annotated[int, typer.Option(help="Runs per UTC day.")] = 1_000_000,
    as_json: JsonOpt = False,
) -> None:
    """Create a partner or change its limits."""
    request = PartnerRequest(
        name=name, display_name=display_name, rate_per_s=rate_per_s, daily_quota=daily_quota
    )
    actor = _actor()
    info = with_runtime(lambda rt: service.set_partner(rt.pool, request, actor=actor))
    if as_json:
        print_json(info.model_dump(mode="json"))
        return
    out.print(f"partner {info.name}: {info.rate_per_s}/s, {info.daily_quota} runs a day")


@partners_app.command("list")
def list_partners(as_json: JsonOpt = False) -> None:
    """Every partner."""
    rows = [
        p.model_dump(mode="json") for p in with_runtime(lambda rt: service.list_partners(rt.pool))
    ]
    if as_json:
        print_json(rows)
        return
    table(rows, ["name", "display_name", "rate_per_s", "daily_quota", "created_at"])


@template_app.command("register")
def register(
    file: Annotated[
        Path, typer.Argument(help="The template, YAML or JSON.", exists=True, dir_okay=False)
    ],
    name: Annotated[str, typer.Option(help="The template's name (unique).")],
    partner: Annotated[str, typer.Option(help="The partner that runs it.")],
    rate_per_s: Annotated[int, typer.Option(help="Runs per second (1-100000).")] = 100,
    daily_quota: Annotated[int, typer.Option(help="Runs per UTC day.")] = 1_000_000,
    as_json: JsonOpt = False,
) -> None:
    """Check a template and store it as its next version."""
    text = file.read_text()
    request = TemplateRequest(
        name=name,
        partner=partner,
        definition=text,
        limits=Limits(rate_per_s=rate_per_s, daily_quota=daily_quota),
    )
    actor = _actor()
    info = with_runtime(lambda rt: service.register_template(rt.pool, request, actor=actor))
    if as_json:
        print_json(info.model_dump(mode="json"))
        return
    out.print(f"template {info.name} version {info.version} for {info.partner}")


@template_app.command("list")
def list_templates(
    partner: Annotated[str | None, typer.Option(help="One partner's only.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Templates at their latest version."""
    principal = cli_principal()
    found = with_runtime(
        lambda rt: service.list_templates(rt.pool, principal=principal, partner=partner)
    )
    rows = [t.model_dump(mode="json") for t in found]
    if as_json:
        print_json(rows)
        return
    table(rows, ["name", "partner", "version", "rate_per_s", "daily_quota", "created_at"])


@template_app.command("show")
def show(
    name: str,
    version: Annotated[int | None, typer.Option(help="A version (default: the latest).")] = None,
) -> None:
    """A template's definition."""
    principal = cli_principal()
    info = with_runtime(
        lambda rt: service.get_template(rt.pool, name, principal=principal, version=version)
    )
    print_json(info.model_dump(mode="json"))


@template_app.command("run")
def run(
    name: str,
    input_json: Annotated[str, typer.Option("--input", help="The inputs, a JSON object.")] = "{}",
) -> None:
    """Run a template now, as the operator (billed to its partner)."""
    data = json_arg(input_json, "input")
    principal = cli_principal()

    async def go(rt: Runtime) -> object:
        plat = service.platform(rt.pool, rt.journal, _settings(rt))
        try:
            return await service.run_template(
                plat, name, data, principal=principal, mode=RunMode.SYNC
            )
        finally:
            await plat.close()

    result = with_runtime(go)
    print_json(result.model_dump(mode="json"))  # type: ignore[attr-defined]


@partners_app.command("system")
def set_system(
    role: Annotated[str, typer.Argument(help="The role objects call: sms, location.")],
    kind: Annotated[SystemKind, typer.Option(help="rest, soap or sql.")],
    url: Annotated[str, typer.Option(help="Where it answers.")],
    timeout_ms: Annotated[int, typer.Option(help="Per call, 10-60000.")] = 2000,
    statement: Annotated[
        list[str] | None, typer.Option(help="SQL systems: operation=statement (repeat).")
    ] = None,
) -> None:
    """Register or change a legacy system."""
    statements: dict[str, str] = {}
    for item in statement or []:
        op, sep, text = item.partition("=")
        if not sep or not op:
            raise InvalidInput("operation=statement", field="statement")
        statements[op] = text
    request = SystemRequest(
        role=role, kind=kind, url=url, timeout_ms=timeout_ms, statements=statements
    )
    actor = _actor()
    with_runtime(lambda rt: service.set_system(rt.pool, request, actor=actor))
    out.print(f"legacy system {role}: {kind.value}")


@partners_app.command("policy")
def add_policy(
    partner: str,
    valid_from: Annotated[str, typer.Option(help="First day in force, YYYY-MM-DD.")],
    currency: Annotated[str, typer.Option(help="ISO 4217.")],
    template: Annotated[str, typer.Option(help="One template, or * for all.")] = "*",
    per_use_fee: Annotated[int, typer.Option(help="Minor units per run.")] = 0,
    per_unit_fee: Annotated[int, typer.Option(help="Minor units per unit.")] = 0,
    revenue_share_bp: Annotated[int, typer.Option(help="Operator's share, basis points.")] = 0,
) -> None:
    """Add a billing policy version."""
    request = PolicyRequest(
        partner=partner,
        template=template,
        valid_from=date_arg(valid_from, "valid_from"),
        currency=currency,
        per_use_fee=per_use_fee,
        per_unit_fee=per_unit_fee,
        revenue_share_bp=revenue_share_bp,
    )
    actor = _actor()
    policy = with_runtime(lambda rt: service.add_policy(rt.pool, request, actor=actor))
    out.print(f"policy {policy.id} for {partner}/{template} from {valid_from}")


@partners_app.command("work")
def work(once: Annotated[bool, typer.Option(help="Stop when the lane is idle.")] = False) -> None:
    """Execute asynchronous runs."""

    async def go(rt: Runtime) -> None:
        plat = service.platform(rt.pool, rt.journal, _settings(rt))
        try:
            await RunDaemon(plat).run(once=once)
        finally:
            await plat.close()

    with_runtime(go)


@billing_app.command("run")
def billing_run(
    once: Annotated[bool, typer.Option(help="One round, then stop.")] = False,
    interval_s: Annotated[
        float, typer.Option(help="Seconds between rounds (1-3600).", min=1, max=3600)
    ] = 10.0,
) -> None:
    """The billing processor: collect logs, write MDR and error files, send them."""

    async def go(rt: Runtime) -> None:
        processor = BillingProcessor(rt.journal, _settings(rt))
        await processor.run(once=once, interval_s=interval_s, install_signal_handlers=not once)

    with_runtime(go)


@billing_app.command("files")
def files(as_json: JsonOpt = False) -> None:
    """MDR files, newest first, with their transfer state."""
    rows = with_runtime(lambda rt: service.list_files(rt.pool))
    if as_json:
        print_json([{k: str(v) if v is not None else None for k, v in r.items()} for r in rows])
        return
    table(
        [dict(r) for r in rows],
        ["seq", "name", "records", "fee", "share", "state", "attempts", "last_error"],
    )


@billing_app.command("correct")
def correct(run_id: int) -> None:
    """Reverse a billed run: a correction record in a later file."""
    actor = _actor()
    record = with_runtime(lambda rt: service.correct(rt.pool, run_id, actor=actor))
    out.print(f"correction record {record} for run {run_id}")
