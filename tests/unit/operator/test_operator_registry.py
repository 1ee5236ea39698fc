"""The kopf registry: which causes are handled, and with stable handler ids.

Handler ids end up in annotations on users' objects, so they must not depend on where the
functions are defined.
"""

from __future__ import annotations

from larder_operator import OperatorSettings, build_registry


def test_handlers_have_stable_ids_per_cause() -> None:
    registry = build_registry(OperatorSettings(sidecar_image="larder:test"))
    changing = {str(h.id) for h in registry._changing.get_all_handlers()}
    spawning = {str(h.id) for h in registry._spawning.get_all_handlers()}
    watching = {str(h.id) for h in registry._watching.get_all_handlers()}
    indexing = {str(h.id) for h in registry._indexing.get_all_handlers()}
    assert changing == {"reconcile", "check"}
    # Periodic work is the operator's own (resync.py): kopf timers and daemons would put a
    # finalizer on every resource.
    assert spawning == set()
    assert watching == {"child", "function-event", "journal-event"}
    # Handlers receive the indices under these exact keywords.
    assert indexing == {"functions_by_journal", "functions", "journals"}


def test_no_handler_makes_kopf_add_a_finalizer() -> None:
    registry = build_registry(OperatorSettings(sidecar_image="larder:test"))
    handlers = [
        *registry._changing.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
        *registry._watching.get_all_handlers(),
    ]
    assert [str(h.id) for h in handlers if getattr(h, "requires_finalizer", None)] == []


def test_two_registries_do_not_share_handlers() -> None:
    first = build_registry(OperatorSettings(sidecar_image="a"))
    second = build_registry(OperatorSettings(sidecar_image="b"))
    assert first is not second
    assert len(first._changing.get_all_handlers()) == len(second._changing.get_all_handlers())
