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
    assert spawning == {"resync", "recheck"}
    assert watching == {"child", "journal-event"}
    # Handlers receive the index under this exact keyword.
    assert indexing == {"functions_by_journal"}


def test_two_registries_do_not_share_handlers() -> None:
    first = build_registry(OperatorSettings(sidecar_image="a"))
    second = build_registry(OperatorSettings(sidecar_image="b"))
    assert first is not second
    assert len(first._changing.get_all_handlers()) == len(second._changing.get_all_handlers())
