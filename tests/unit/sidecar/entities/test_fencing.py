"""Two hosts that both serve one entity (a hand-off gone wrong): the journal refuses the
second writer, the command fails with ABORTED, and the refusal is counted."""

from __future__ import annotations

import grpc
import pytest
from larder_sidecar.invoke import InvokeError
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.model import Method

from .fakes import emit_one, make_host


async def test_a_refused_write_is_aborted_and_counted(method: Method) -> None:
    journal = MemoryJournal()
    first, _ = make_host(journal, emit_one)
    second, _ = make_host(journal, emit_one)
    await first.submit(method, "x", b"", ())
    await second.submit(method, "x", b"", ())  # loads one event, writes the second
    with pytest.raises(InvokeError) as info:
        await first.submit(method, "x", b"", ())  # still expects one event
    assert info.value.code is grpc.StatusCode.ABORTED
    counted = first.metrics.registry.get_sample_value(
        "larder_fencing_rejections_total", {"entity_type": "svc"}
    )
    assert counted == 1
    assert second.metrics.registry.get_sample_value(
        "larder_fencing_rejections_total", {"entity_type": "svc"}
    ) in (None, 0)
    await first.shutdown()
    await second.shutdown()
