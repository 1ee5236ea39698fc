"""Value entities: the stored state on activation, each update stored before its reply."""

from __future__ import annotations

import time
from typing import Any

from ..journal.base import StoredPayload
from ..model import Kind
from ..outcome import Outcome
from ..protocol import value_entity_pb2 as ve_pb2
from .command import Command
from .entity import Entity
from .lifecycle import Event


class ValueEntity(Entity):
    kind = Kind.VALUE

    _revision = 0

    async def _open(self) -> None:
        started = time.perf_counter()
        state = await self.env.journal.load_value(self.pid)
        self.env.metrics.journal_latency.labels("load").observe(time.perf_counter() - started)
        self._call = call = self.env.stub.Handle()
        init = ve_pb2.ValueEntityInit(service_name=self.env.service, entity_id=self.entity_id)
        if state.payload is not None:
            init.state.value.type_url = state.payload.type_url
            init.state.value.value = state.payload.value
        await call.write(ve_pb2.ValueEntityStreamIn(init=init))
        self._revision = state.revision

    def _command_in(self, command: Any) -> Any:
        return ve_pb2.ValueEntityStreamIn(command=command)

    async def _complete(self, command: Command, reply: Any, outcome: Outcome) -> None:
        # Each update is stored before the next command: only a failure reply or one
        # without a state action skips the journal.
        which = None if outcome.kind == "failure" else reply.state_action.WhichOneof("action")
        if which is not None:
            self.lifecycle.fire(Event.WRITE)
            await self._store(reply, which)
        if not command.future.done():
            command.future.set_result(outcome)

    async def _store(self, reply: Any, which: str) -> None:
        payload = (
            StoredPayload(
                reply.state_action.update.value.type_url, reply.state_action.update.value.value
            )
            if which == "update"
            else None
        )
        journal = self.env.journal
        self._revision = await self._journal_write(
            lambda: journal.put_value(self.pid, self._revision, payload)
        )
