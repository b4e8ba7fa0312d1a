"""S2's policy hook (BRM PCM_OP_IFW_SYNC_POL_PUBLISH_EVENT): a registered Python callable
that may change an internal event before it is published, or drop it (return None).

The event notification list names the hook; the name is looked up here, among the hooks
registered in this module (`@policy`) and the entry points of installed packages in the
group `bossa.sync.policies`. That is the allow-list: no code ever comes from the
configuration file's values, from an event's payload or from a request, and a name that
is not registered is refused at start, naming the field.

A hook runs inside the business transaction that raised the event: it must be quick and
do no I/O. Whatever it raises fails that transaction, the change with it, as any other
error in it would: the event is never silently lost.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from bossa.errors import InvalidInput
from bossa.sync.models import InternalEvent

__all__ = ["ENTRY_POINT_GROUP", "PolicyHook", "policy", "registered", "resolve"]

PolicyHook = Callable[[InternalEvent], InternalEvent | None]
ENTRY_POINT_GROUP = "bossa.sync.policies"

_REGISTRY: dict[str, PolicyHook] = {}


def policy(name: str) -> Callable[[PolicyHook], PolicyHook]:
    """Register a hook under `name` (code of bossa or of a deployment's own package)."""

    def register(hook: PolicyHook) -> PolicyHook:
        if name in _REGISTRY and _REGISTRY[name] is not hook:
            raise ValueError(f"policy hook {name!r} is registered already")
        _REGISTRY[name] = hook
        return hook

    return register


def registered() -> list[str]:
    installed = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted({*_REGISTRY, *installed})


def resolve(name: str) -> PolicyHook:
    """The hook registered as `name`; InvalidInput naming `policy_hook` otherwise."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        hook = ep.load()
        if not callable(hook):
            raise InvalidInput(f"entry point {name!r} is not callable", field="policy_hook")
        return hook  # type: ignore[no-any-return]
    raise InvalidInput(
        f"no policy hook {name!r} (registered: {', '.join(registered())})", field="policy_hook"
    )


@policy("passthrough")
def passthrough(event: InternalEvent) -> InternalEvent | None:
    """Publish every event as raised."""
    return event


@policy("drop_zero_amounts")
def drop_zero_amounts(event: InternalEvent) -> InternalEvent | None:
    """Drop events whose `amount_minor` is 0: nothing changed in a balance, the pipeline
    has nothing to learn (an example of a policy that filters)."""
    if event.data.get("amount_minor") == 0:
        return None
    return event
