"""The partner platform's data and pure rules (no I/O).

- Biz objects (O1): typed unit functions, each declaring its inputs and outputs.
- Biz templates (O1): ordered flows of objects with conditions, written as YAML or JSON,
  checked here on registration (unknown object, type mismatch, unreachable step, a value
  read before it can exist), every error naming the step.
- Billing logs (O5): the typed journal payload a run writes with its result, the billing
  policy that rates it, and the MDR file format the legacy billing system receives.
- Rate limits and the legacy breaker: small state machines that take the time as an
  argument, so they are tested without sleeping.

Why our own template language instead of a workflow engine: a template is data a partner
submits, so it must never execute anything; the language has five kinds of value
reference and forward-only jumps, which makes every run terminate and lets the checker
prove, before a template is stored, that every value a step reads exists on every path.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bossa.errors import InvalidInput

__all__ = [
    "BILLING_KIND",
    "END",
    "MAX_AMOUNT",
    "MAX_STEPS",
    "MAX_STRING",
    "NAME_PATTERN",
    "OBJECTS",
    "PARTNER_CHARGE_KIND",
    "RUN_KIND",
    "BillingLog",
    "BillingPolicy",
    "Breaker",
    "CheckedTemplate",
    "FileRecord",
    "Limits",
    "MdrFile",
    "MdrHeader",
    "ObjectSpec",
    "PartnerInfo",
    "PartnerRequest",
    "PolicyRequest",
    "RunAccepted",
    "RunMode",
    "RunResult",
    "RunState",
    "SystemKind",
    "SystemRequest",
    "TemplateInfo",
    "TemplateRequest",
    "TokenBucket",
    "Type",
    "assemble_mdr",
    "check_input",
    "check_object_input",
    "check_template",
    "mdr_name",
    "parse_definition",
    "pick_policy",
    "rate",
    "render_mdr",
    "verify_log",
]

#: Partner, template and step names: letters, digits and a few separators, never `|`.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
_TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
_STEP_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: A template's steps; a run executes at most this many.
MAX_STEPS = 50
#: A string value in a run's input or a literal.
MAX_STRING = 1000
#: Integer values and money, minor units (as the ledger's limit).
MAX_AMOUNT = 10**15
#: The step a jump names to finish the run.
END = "end"
#: The journal kind of a billing log and of an asynchronous run.
BILLING_KIND = "billing-log"
RUN_KIND = "run"
#: The ledger posting a partner's charge makes: the subscriber's prepaid funds to revenue.
PARTNER_CHARGE_KIND = "partner-charge"


class Type(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    #: compare's operands: any one type, the same on both sides.
    ANY = "any"


def type_of(value: Any) -> Type | None:
    if isinstance(value, bool):
        return Type.BOOLEAN
    if isinstance(value, int):
        return Type.INTEGER
    if isinstance(value, str):
        return Type.STRING
    return None


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """A biz object: what it takes, what it gives, whether its use is billed in units."""

    name: str
    description: str
    inputs: Mapping[str, Type]
    outputs: Mapping[str, Type]
    #: The legacy system role it calls through the cooperation processor, if any.
    legacy: str | None = None
    #: Inputs that must be literals in the template (compare's operator).
    literal: frozenset[str] = frozenset()


_COMPARE_OPS = ("eq", "ne", "lt", "le", "gt", "ge")

#: The starter set (O1): what a content or service provider expects to find.
OBJECTS: dict[str, ObjectSpec] = {
    spec.name: spec
    for spec in (
        ObjectSpec(
            "sms.send",
            "Send an SMS to a subscriber through the operator's SMS centre (a legacy system)",
            {"to": Type.STRING, "text": Type.STRING},
            {"message_id": Type.STRING, "segments": Type.INTEGER},
            legacy="sms",
        ),
        ObjectSpec(
            "device.locate",
            "The cell a subscriber's device was last seen in (the location legacy system)",
            {"msisdn": Type.STRING},
            {"cell": Type.STRING, "found": Type.BOOLEAN},
            legacy="location",
        ),
        ObjectSpec(
            "subscriber.status",
            "A customer's service state from its contracts: active, suspended, terminated, "
            "or unknown",
            {"subscriber": Type.STRING},
            {"status": Type.STRING, "contracts": Type.INTEGER},
        ),
        ObjectSpec(
            "balance.charge",
            "Charge a billing account's prepaid balance in the ledger (minor units); "
            "charged is false when the funds do not cover it",
            {"account": Type.STRING, "amount": Type.INTEGER},
            {"charged": Type.BOOLEAN, "available": Type.INTEGER},
        ),
        ObjectSpec(
            "compare",
            "Compare two values of one type (eq, ne; lt, le, gt, ge on integers)",
            {"left": Type.ANY, "op": Type.STRING, "right": Type.ANY},
            {"result": Type.BOOLEAN},
            literal=frozenset({"op"}),
        ),
        ObjectSpec(
            "branch",
            "Go to the step `then` names when condition holds, else to `else` (or `end`)",
            {"condition": Type.BOOLEAN},
            {},
        ),
    )
}


# -- templates as data --------------------------------------------------------------------


class InputDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["string", "integer", "boolean"]
    max_length: int = Field(default=MAX_STRING, ge=1, le=MAX_STRING)
    minimum: int = Field(default=-MAX_AMOUNT, ge=-MAX_AMOUNT, le=MAX_AMOUNT)
    maximum: int = Field(default=MAX_AMOUNT, ge=-MAX_AMOUNT, le=MAX_AMOUNT)


class StepDef(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(min_length=1, max_length=32)
    object: str = Field(min_length=1, max_length=64)
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", max_length=16)
    then: str | None = Field(default=None, max_length=32)
    else_: str | None = Field(default=None, alias="else", max_length=32)
    #: After this step, go to that one (forward only) or `end`.
    next: str | None = Field(default=None, max_length=32)


class TemplateDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(default="", max_length=500)
    inputs: dict[str, InputDef] = Field(default_factory=dict, max_length=32)
    steps: list[StepDef] = Field(min_length=1, max_length=MAX_STEPS)
    outputs: dict[str, str] = Field(default_factory=dict, max_length=32)


@dataclass(frozen=True, slots=True)
class Ref:
    """`$input.name` or `$steps.<id>.<field>`."""

    step: str | None
    name: str


def _ref(value: Any) -> Ref | None:
    if not isinstance(value, str) or not value.startswith("$") or value.startswith("$$"):
        return None
    parts = value[1:].split(".")
    if len(parts) == 2 and parts[0] == "input":
        return Ref(None, parts[1])
    if len(parts) == 3 and parts[0] == "steps":
        return Ref(parts[1], parts[2])
    raise ValueError(f"{value!r} is not $input.<name> or $steps.<step>.<output>")


def _literal(value: Any) -> Any:
    # "$$..." is a literal string that starts with "$".
    if isinstance(value, str) and value.startswith("$$"):
        return value[1:]
    return value


@dataclass(frozen=True, slots=True)
class CheckedTemplate:
    """A template that passed every check: what runs execute."""

    definition: TemplateDef
    index: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        return self.definition.model_dump(mode="json", by_alias=True, exclude_defaults=False)

    @property
    def steps(self) -> list[StepDef]:
        return self.definition.steps

    def target(self, name: str | None) -> int | None:
        """The step index a jump goes to; None for `end`."""
        if name is None or name == END:
            return None
        return self.index[name]


def parse_definition(text: str | Mapping[str, Any], *, field_name: str = "definition") -> Any:
    """A template's text (YAML, of which JSON is a subset) as data; never executes tags."""
    if isinstance(text, Mapping):
        return dict(text)
    if len(text) > 256 * 1024:
        raise InvalidInput("a template is at most 256 KiB", field=field_name)
    try:
        # safe_load builds plain data only: no tags, no objects.
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidInput(f"not valid YAML or JSON{where}", field=field_name) from None


def _step_error(step: StepDef | None, index: int, reason: str, sub: str = "") -> InvalidInput:
    name = step.id if step is not None else str(index)
    path = f"steps.{name}{'.' + sub if sub else ''}"
    return InvalidInput(f"step {name!r}: {reason}", field=path)


def check_template(data: Any) -> CheckedTemplate:
    """Check a template's definition; the first error names its step (and field)."""
    if not isinstance(data, dict):
        raise InvalidInput(
            "a template is a mapping with inputs, steps, outputs", field="definition"
        )
    try:
        definition = TemplateDef.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        if loc[:1] == ["steps"] and len(loc) > 1 and isinstance(loc[1], int):
            raw = data.get("steps")
            step_id = None
            if isinstance(raw, list) and loc[1] < len(raw) and isinstance(raw[loc[1]], dict):
                step_id = raw[loc[1]].get("id")
            name = str(step_id) if isinstance(step_id, str) and step_id else str(loc[1])
            sub = ".".join(str(p) for p in loc[2:])
            raise InvalidInput(
                f"step {name!r}: {first['msg']}", field=f"steps.{name}{'.' + sub if sub else ''}"
            ) from None
        raise InvalidInput(
            first["msg"], field=".".join(str(p) for p in loc) or "definition"
        ) from None
    for name, declared in definition.inputs.items():
        if not _FIELD.match(name):
            raise InvalidInput("input names are [a-z][a-z0-9_]{0,31}", field=f"inputs.{name}")
        if declared.minimum > declared.maximum:
            raise InvalidInput("minimum is above maximum", field=f"inputs.{name}")
    steps = definition.steps
    index: dict[str, int] = {}
    for i, step in enumerate(steps):
        if not _STEP_ID.match(step.id) or step.id == END:
            raise _step_error(step, i, "step ids are [a-z][a-z0-9_]{0,31} and not 'end'", "id")
        if step.id in index:
            raise _step_error(step, i, "a second step with this id", "id")
        index[step.id] = i
    # Jumps: known, forward only (so every run ends), and only where the object allows.
    successors: list[list[int | None]] = []
    for i, step in enumerate(steps):
        spec = OBJECTS.get(step.object)
        if spec is None:
            known = ", ".join(sorted(OBJECTS))
            raise _step_error(step, i, f"unknown object {step.object!r} (known: {known})", "object")
        is_branch = step.object == "branch"
        if is_branch and (step.then is None or step.else_ is None):
            raise _step_error(step, i, "a branch names both `then` and `else`")
        if not is_branch and (step.then is not None or step.else_ is not None):
            raise _step_error(step, i, "only a branch has `then` and `else`")
        if is_branch and step.next is not None:
            raise _step_error(step, i, "a branch goes by `then` and `else`, not `next`", "next")
        targets: list[tuple[str, str | None]] = (
            [("then", step.then), ("else", step.else_)] if is_branch else [("next", step.next)]
        )
        out: list[int | None] = []
        for key, target in targets:
            if target is None:
                out.append(i + 1 if i + 1 < len(steps) else None)
            elif target == END:
                out.append(None)
            elif target not in index:
                raise _step_error(step, i, f"{key} names no step: {target!r}", key)
            elif index[target] <= i:
                raise _step_error(step, i, f"{key} must go forward, not to {target!r}", key)
            else:
                out.append(index[target])
        successors.append(out)
    # Reachability, and what has surely run before each step (every path's intersection).
    preds: list[list[int]] = [[] for _ in steps]
    ends: list[int] = []
    reachable = [False] * len(steps)
    reachable[0] = True
    for i in range(len(steps)):
        if not reachable[i]:
            continue
        for nxt in successors[i]:
            if nxt is None:
                ends.append(i)
            else:
                reachable[nxt] = True
                preds[nxt].append(i)
    for i, step in enumerate(steps):
        if not reachable[i]:
            raise _step_error(step, i, "unreachable: no path from the first step leads here")
    surely: list[set[str]] = []
    for i in range(len(steps)):
        if i == 0:
            surely.append(set())
            continue
        sets = [surely[p] | {steps[p].id} for p in preds[i]]
        surely.append(set.intersection(*sets))
    # Types of every value each step reads.
    outputs_of = {step.id: OBJECTS[step.object].outputs for step in steps}
    for i, step in enumerate(steps):
        spec = OBJECTS[step.object]
        extra = sorted(set(step.with_) - set(spec.inputs))
        if extra:
            raise _step_error(step, i, f"{step.object} takes no input {extra[0]!r}", "with")
        seen: dict[str, Type] = {}
        for name, want in spec.inputs.items():
            sub = f"with.{name}"
            if name not in step.with_:
                raise _step_error(step, i, f"{step.object} needs input {name!r}", sub)
            value = step.with_[name]
            try:
                ref = _ref(value)
            except ValueError as exc:
                raise _step_error(step, i, str(exc), sub) from None
            if ref is not None and name in spec.literal:
                raise _step_error(step, i, f"{name} must be written out, not a reference", sub)
            if ref is None:
                got = type_of(_literal(value))
                if got is None:
                    raise _step_error(step, i, "a literal is a string, integer or boolean", sub)
                _check_literal(step, i, sub, _literal(value))
            elif ref.step is None:
                if ref.name not in definition.inputs:
                    raise _step_error(step, i, f"the template has no input {ref.name!r}", sub)
                got = Type(definition.inputs[ref.name].type)
            else:
                if ref.step not in index:
                    raise _step_error(step, i, f"no step {ref.step!r}", sub)
                if ref.step not in surely[i]:
                    raise _step_error(
                        step, i, f"step {ref.step!r} has not surely run before this one", sub
                    )
                if ref.name not in outputs_of[ref.step]:
                    raise _step_error(step, i, f"step {ref.step!r} gives no {ref.name!r}", sub)
                got = outputs_of[ref.step][ref.name]
            if want is Type.ANY:
                seen[name] = got
            elif got is not want:
                raise _step_error(step, i, f"{name} is {want.value}, given {got.value}", sub)
        if step.object == "compare":
            op = step.with_["op"]
            if op not in _COMPARE_OPS:
                raise _step_error(step, i, f"op is one of {', '.join(_COMPARE_OPS)}", "with.op")
            if seen["left"] is not seen["right"]:
                raise _step_error(
                    step,
                    i,
                    f"compares {seen['left'].value} with {seen['right'].value}",
                    "with.right",
                )
            if op in ("lt", "le", "gt", "ge") and seen["left"] is not Type.INTEGER:
                raise _step_error(step, i, f"{op} compares integers only", "with.op")
    at_end = set.intersection(*[surely[e] | {steps[e].id} for e in ends]) if ends else set()
    for name, value in definition.outputs.items():
        if not _FIELD.match(name):
            raise InvalidInput("output names are [a-z][a-z0-9_]{0,31}", field=f"outputs.{name}")
        try:
            ref = _ref(value)
        except ValueError as exc:
            raise InvalidInput(str(exc), field=f"outputs.{name}") from None
        if ref is None:
            raise InvalidInput("an output is a $input or $steps reference", field=f"outputs.{name}")
        if ref.step is None:
            if ref.name not in definition.inputs:
                raise InvalidInput(f"no input {ref.name!r}", field=f"outputs.{name}")
        elif ref.step not in index or ref.name not in outputs_of[ref.step]:
            raise InvalidInput(f"no output {value!r}", field=f"outputs.{name}")
        elif ref.step not in at_end:
            raise InvalidInput(
                f"step {ref.step!r} does not run on every path", field=f"outputs.{name}"
            )
    return CheckedTemplate(definition, index)


def _check_literal(step: StepDef, i: int, sub: str, value: Any) -> None:
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise _step_error(step, i, f"a string literal is at most {MAX_STRING} characters", sub)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_AMOUNT:
        raise _step_error(step, i, f"an integer literal is within +-{MAX_AMOUNT}", sub)


def check_object_input(name: str, data: Any) -> dict[str, Any]:
    """The inputs of one biz object run on its own (the infra channel, O4): every input
    the object declares, of its type; compare's operator one of its six."""
    spec = OBJECTS.get(name)
    if spec is None or name == "branch":
        raise InvalidInput(f"no biz object {name!r} to run", field="object")
    if not isinstance(data, dict):
        raise InvalidInput("the input is a JSON object", field="input")
    for key in data:
        if key not in spec.inputs:
            raise InvalidInput(f"{name} takes no such input", field=f"input.{key}")
    seen: dict[str, Type] = {}
    for key, want in spec.inputs.items():
        where = f"input.{key}"
        if key not in data:
            raise InvalidInput("missing", field=where)
        got = type_of(data[key])
        if got is None or (want is not Type.ANY and got is not want):
            raise InvalidInput(f"must be {want.value}", field=where)
        if isinstance(data[key], str) and len(data[key]) > MAX_STRING:
            raise InvalidInput(f"at most {MAX_STRING} characters", field=where)
        if got is Type.INTEGER and abs(data[key]) > MAX_AMOUNT:
            raise InvalidInput(f"within +-{MAX_AMOUNT}", field=where)
        seen[key] = got
    if name == "compare":
        if data["op"] not in _COMPARE_OPS:
            raise InvalidInput(f"one of {', '.join(_COMPARE_OPS)}", field="input.op")
        if seen["left"] is not seen["right"]:
            raise InvalidInput("left and right are one type", field="input.right")
        if data["op"] in ("lt", "le", "gt", "ge") and seen["left"] is not Type.INTEGER:
            raise InvalidInput("compares integers only", field="input.op")
    return dict(data)


def check_input(template: CheckedTemplate, data: Any) -> dict[str, Any]:
    """A run's input against the template's declared inputs: every field named on error."""
    if not isinstance(data, dict):
        raise InvalidInput("the input is a JSON object", field="input")
    declared = template.definition.inputs
    for name in data:
        if name not in declared:
            raise InvalidInput("the template takes no such input", field=f"input.{name}")
    checked: dict[str, Any] = {}
    for name, spec in declared.items():
        where = f"input.{name}"
        if name not in data:
            raise InvalidInput("missing", field=where)
        value = data[name]
        got = type_of(value)
        if got is None or got.value != spec.type:
            raise InvalidInput(f"must be {spec.type}", field=where)
        if isinstance(value, str):
            if len(value) > spec.max_length:
                raise InvalidInput(f"at most {spec.max_length} characters", field=where)
            if "\x00" in value:
                raise InvalidInput("NUL characters are not allowed", field=where)
        if got is Type.INTEGER and not spec.minimum <= value <= spec.maximum:
            raise InvalidInput(f"between {spec.minimum} and {spec.maximum}", field=where)
        checked[name] = value
    return checked


def resolve(value: Any, inputs: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]]) -> Any:
    ref = _ref(value)
    if ref is None:
        return _literal(value)
    if ref.step is None:
        return inputs[ref.name]
    return results[ref.step][ref.name]


def compare(left: Any, op: str, right: Any) -> bool:
    match op:
        case "eq":
            return bool(left == right)
        case "ne":
            return bool(left != right)
        case "lt":
            return bool(left < right)
        case "le":
            return bool(left <= right)
        case "gt":
            return bool(left > right)
        case "ge":
            return bool(left >= right)
    raise ValueError(op)


# -- requests and results ------------------------------------------------------------------


class PartnerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(
        pattern=NAME_PATTERN,
        description="The partner's name: its API tokens (role partner) carry the same name",
    )
    display_name: str = Field(min_length=1, max_length=200)
    rate_per_s: int = Field(default=100, ge=1, le=100_000, description="Runs per second")
    daily_quota: int = Field(default=1_000_000, ge=1, le=10**9, description="Runs per UTC day")


class PartnerInfo(PartnerRequest):
    created_at: datetime
    created_by: str


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate_per_s: int = Field(default=100, ge=1, le=100_000)
    daily_quota: int = Field(default=1_000_000, ge=1, le=10**9)


class TemplateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,63}$", description="Unique across partners")
    partner: str = Field(pattern=NAME_PATTERN, description="The partner that owns and runs it")
    definition: dict[str, Any] | str = Field(
        description="The template: a mapping, or its YAML/JSON text"
    )
    limits: Limits = Field(default_factory=Limits)


class TemplateInfo(BaseModel):
    name: str
    partner: str
    version: int
    definition: dict[str, Any]
    rate_per_s: int
    daily_quota: int
    created_at: datetime
    created_by: str


class RunMode(StrEnum):
    SYNC = "sync"
    ASYNC = "async"


class RunState(StrEnum):
    QUEUED = "queued"
    DONE = "done"
    FAILED = "failed"


class RunResult(BaseModel):
    id: int
    template: str
    version: int
    partner: str
    state: RunState
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = Field(
        default=None, description="For a failed run: {error, field, reason}"
    )
    created_at: datetime
    finished_at: datetime | None = None


class RunAccepted(BaseModel):
    id: int
    state: RunState
    location: str


class SystemKind(StrEnum):
    REST = "rest"
    SOAP = "soap"
    SQL = "sql"


class SystemRequest(BaseModel):
    """A legacy system the cooperation processor reaches (O3), by the role objects call."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    role: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="sms, location, ...")
    kind: SystemKind
    url: str = Field(min_length=1, max_length=500)
    timeout_ms: int = Field(default=2000, ge=10, le=60_000)
    #: For SQL systems: operation name -> statement with %(name)s binds (the operator's
    #: text, never a partner's; values are always bound).
    statements: dict[str, str] = Field(default_factory=dict, max_length=32)


class PolicyRequest(BaseModel):
    """A billing policy (O5): per partner, optionally per template, valid from a date."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    partner: str = Field(pattern=NAME_PATTERN)
    template: str = Field(default="*", pattern=r"^(\*|[a-z][a-z0-9-]{0,63})$")
    valid_from: date
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    per_use_fee: int = Field(default=0, ge=0, le=MAX_AMOUNT, description="Minor units per run")
    per_unit_fee: int = Field(default=0, ge=0, le=MAX_AMOUNT, description="Minor units per unit")
    revenue_share_bp: int = Field(
        default=0, ge=0, le=10_000, description="Operator's share of charges, basis points"
    )


@dataclass(frozen=True, slots=True)
class BillingPolicy:
    id: int
    partner: str
    template: str
    valid_from: date
    currency: str
    per_use_fee: int
    per_unit_fee: int
    revenue_share_bp: int


def pick_policy(
    policies: Iterable[BillingPolicy], partner: str, template: str, day: date
) -> BillingPolicy | None:
    """The template's own policy in force on `day`, else the partner's default ('*')."""
    best: BillingPolicy | None = None
    for p in policies:
        if p.partner != partner or p.valid_from > day or p.template not in (template, "*"):
            continue
        if best is None or (p.template != "*", p.valid_from) > (
            best.template != "*",
            best.valid_from,
        ):
            best = p
    return best


# -- billing logs ---------------------------------------------------------------------------


class BillingLog(BaseModel):
    """What a run leaves for billing (journal lane partners.billing, kind billing-log),
    written in the transaction of the run's result."""

    model_config = ConfigDict(extra="forbid")

    run_id: int = Field(ge=1)
    partner: str = Field(pattern=NAME_PATTERN)
    template: str = Field(pattern=r"^[a-z][a-z0-9-]{0,63}$")
    version: int = Field(ge=1)
    used_at: datetime
    #: Billable units: SMS segments sent, locations looked up.
    units: int = Field(ge=0, le=MAX_AMOUNT)
    #: Money charged to subscribers by balance.charge, minor units of `currency`.
    charged: int = Field(ge=0, le=MAX_AMOUNT)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    #: A correction reverses the record of run `run_id`; it carries negative amounts.
    correction_of: int | None = None

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_payload(cls, payload: Any) -> BillingLog:
        return cls.model_validate(payload)


def verify_log(
    payload: Any, *, now: datetime, max_age: timedelta, max_skew: timedelta
) -> tuple[BillingLog | None, str | None]:
    """(log, None) for a sound billing log; (None, reason) for a malformed one."""
    try:
        log = BillingLog.from_payload(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        return None, f"schema: {where}: {first['msg']}"
    used_at = log.used_at
    if used_at.tzinfo is None:
        return None, "clock: used_at has no time zone"
    if used_at > now + max_skew:
        return None, f"clock: used_at {used_at.isoformat()} is in the future"
    if used_at < now - max_age:
        return None, f"clock: used_at {used_at.isoformat()} is older than {max_age}"
    if log.charged and log.currency is None:
        return None, "schema: a charge without a currency"
    return log.model_copy(update={"used_at": used_at.astimezone(UTC)}), None


@dataclass(frozen=True, slots=True)
class Rated:
    fee: int
    share: int


def rate(log: BillingLog, policy: BillingPolicy) -> Rated | str:
    """The partner's fee and the operator's revenue share of one use, or why not."""
    if log.currency is not None and log.currency != policy.currency:
        return f"policy: charge in {log.currency}, policy {policy.id} in {policy.currency}"
    fee = policy.per_use_fee + policy.per_unit_fee * log.units
    share = log.charged * policy.revenue_share_bp // 10_000
    if fee > MAX_AMOUNT:
        return "policy: the fee exceeds the money limit"
    return Rated(fee, share)


# -- MDR files ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MdrHeader:
    sender: str
    recipient: str
    seq: int
    created_at: datetime
    test: bool


@dataclass(frozen=True, slots=True)
class FileRecord:
    record_id: int
    run_id: int
    partner: str
    template: str
    version: int
    used_at: datetime
    units: int
    charged: int
    fee: int
    share: int
    currency: str
    #: "U" for a use, "C" for a correction (negative amounts, naming the run it reverses).
    kind: str


@dataclass(frozen=True, slots=True)
class MdrFile:
    name: str
    content: bytes
    records: int
    units: int
    charged: int
    fee: int
    share: int
    checksum: str = field(default="")


def mdr_name(sender: str, seq: int) -> str:
    return f"MDR_{sender}_{seq:08d}.dat"


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def mdr_header_line(header: MdrHeader) -> bytes:
    return (
        f"H|MDR|1|{header.sender}|{header.recipient}|{header.seq:08d}|"
        f"{_ts(header.created_at)}|{'T' if header.test else 'P'}\n"
    ).encode()


def record_line(n: int, r: FileRecord) -> str:
    """One record line; `partners.file_lines` renders the same text in SQL (a test holds
    the two equal)."""
    return (
        f"D|{n}|{r.record_id}|{r.run_id}|{r.partner}|{r.template}|{r.version}|"
        f"{_ts(r.used_at)}|{r.units}|{r.charged}|{r.fee}|{r.share}|{r.currency}|{r.kind}\n"
    )


def assemble_mdr(
    header: MdrHeader, lines: bytes, *, records: int, units: int, charged: int, fee: int, share: int
) -> MdrFile:
    """The file's bytes from its header, its record lines and their totals; deterministic
    in its inputs, so a crashed writer renders the same file again.

    H|MDR|1|sender|recipient|seq|created|T or P
    D|n|record id|run id|partner|template|version|used at|units|charged|fee|share|cur|U or C
    T|count|units|charged|fee|share|sha256 of every byte before the trailer
    """
    body = mdr_header_line(header) + lines
    checksum = hashlib.sha256(body).hexdigest()
    trailer = f"T|{records}|{units}|{charged}|{fee}|{share}|{checksum}\n".encode()
    return MdrFile(
        mdr_name(header.sender, header.seq),
        body + trailer,
        records,
        units,
        charged,
        fee,
        share,
        checksum,
    )


def render_mdr(header: MdrHeader, records: Sequence[FileRecord]) -> MdrFile:
    """A file rendered in Python from its records (the reference for the SQL rendering)."""
    lines = "".join(record_line(n, r) for n, r in enumerate(records, 1)).encode()
    return assemble_mdr(
        header,
        lines,
        records=len(records),
        units=sum(r.units for r in records),
        charged=sum(r.charged for r in records),
        fee=sum(r.fee for r in records),
        share=sum(r.share for r in records),
    )


def parse_mdr(content: bytes) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, records, trailer) fields of an MDR file, its count and checksum checked:
    what a receiver does, and what the transfer checks of a file already on the far side."""
    text = content.decode()
    if not text.endswith("\n"):
        raise ValueError("an MDR file ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 2 or not lines[0].startswith("H|") or not lines[-1].startswith("T|"):
        raise ValueError("an MDR file has a header and a trailer")
    trailer = lines[-1].split("|")
    records = [line.split("|") for line in lines[1:-1]]
    if int(trailer[1]) != len(records):
        raise ValueError("the trailer's count does not match the records")
    body = "".join(f"{line}\n" for line in lines[:-1]).encode()
    if hashlib.sha256(body).hexdigest() != trailer[6]:
        raise ValueError("the trailer's checksum does not match")
    return lines[0].split("|"), records, trailer


# -- rate limits and the breaker -------------------------------------------------------------


class TokenBucket:
    """Runs per second with a burst of one second's worth; `now` is monotonic seconds."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate_per_s: int, now: float) -> None:
        self.rate = float(rate_per_s)
        self.capacity = float(rate_per_s)
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.rate)


class Breaker:
    """Closed -> open after `threshold` failures in a row; after `reset_s` one trial call
    (half-open) decides. `now` is monotonic seconds."""

    __slots__ = ("failures", "opened_at", "reset_s", "threshold", "trial")

    def __init__(self, threshold: int, reset_s: float) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self.failures = 0
        self.opened_at: float | None = None
        self.trial = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.trial else "open"

    def allow(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if not self.trial and now - self.opened_at >= self.reset_s:
            self.trial = True
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.trial = False

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.trial or self.failures >= self.threshold:
            self.opened_at = now
            self.trial = False


def canonical(data: Any) -> str:
    """JSON with sorted keys: a template's stored text, so equal definitions compare equal."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def valid_template_name(name: str) -> bool:
    return bool(_TEMPLATE_NAME.match(name))
