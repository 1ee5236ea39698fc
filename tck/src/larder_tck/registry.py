"""The catalogue of cases: each names the component type it needs and its kind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import larder_protocol

Kind = Literal["model", "proxy"]

DISCOVERY = "discovery"
"""Cases that need no particular component type."""

COMPONENT_LABELS = {
    DISCOVERY: "discovery",
    larder_protocol.EVENT_SOURCED_ENTITY: "event-sourced entity",
    larder_protocol.VALUE_ENTITY: "value entity",
    larder_protocol.ACTION: "action",
    larder_protocol.VIEW: "view",
}

CaseFn = Callable[[Any], Awaitable[None]]
F = TypeVar("F", bound=CaseFn)


@dataclass(frozen=True)
class Case:
    name: str
    kind: Kind
    component: str
    description: str
    run: CaseFn


CASES: list[Case] = []


def case(name: str, kind: Kind, component: str) -> Callable[[F], F]:
    """Register an async case function; its docstring is the case's description."""

    def register(fn: F) -> F:
        if any(c.name == name for c in CASES):
            raise ValueError(f"two TCK cases are named {name!r}")
        description = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else name
        CASES.append(Case(name, kind, component, description, fn))
        return fn

    return register


def all_cases() -> list[Case]:
    # Importing the case modules registers them.
    from larder_tck.cases import (  # noqa: PLC0415, F401
        action,
        discovery,
        eventsourced,
        proxy,
        proxy_actions,
        proxy_journal,
        proxy_views,
        valueentity,
        view,
    )

    return list(CASES)
