"""The one thread that calls a confluent-kafka `Consumer`.

confluent-kafka runs the rebalance callbacks on the thread inside `consume()`/`close()`,
and makes some calls from other threads wait while a `consume()` runs
(`get_watermark_offsets` does, measured with 2.16). A rebalance callback that waits for
the event loop while the loop waits for the consumer is a deadlock that froze the whole
sidecar (issue 19 §7). So only this thread ever calls the consumer:

- The loop sends requests (commit, pause, resume, stop fetching, close) through a
  queue; this thread serves them between `consume()` calls and while a rebalance
  callback waits for the loop. The loop never waits for this thread, except for
  `close()` and then with a timeout.
- Everything this thread learns (records, assignments, revocations, losses,
  watermarks, whether a broker is reachable) goes to the loop in order, with
  `call_soon_threadsafe`, to the `ClientEvents` the owner gave it.

A revoke callback hands the revoked partitions to the loop and waits for their in-flight
records (bounded by `revoke_timeout`), then commits their progress before Kafka moves
them; a *lost* assignment (the group session timed out, e.g. the broker was away) is
dropped without waiting or committing, since another member may own it already.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from .librdkafka_log import LibrdkafkaLog

log = logging.getLogger("larder_sidecar.eventing")

TP = tuple[str, int]

_CONSUME_BATCH = 500
_CONSUME_WAIT_S = 0.1
"""Also how long a request from the loop waits at most for the current `consume()`."""
_WATERMARKS_EVERY_S = 0.5
_CONSUME_FAILED_PAUSE_S = 1.0
_REPEAT_LOG_S = 60.0
"""The same Kafka error is logged at most once per this long (the rest at DEBUG)."""

_CONNECTION_ERRORS = frozenset(
    {KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._ALL_BROKERS_DOWN,
     KafkaError._TIMED_OUT, KafkaError._WAIT_COORD}
)
"""What a broker outage looks like from here: logged once as "unreachable", then quiet."""


_LOGGED_BY_US = frozenset({"FAIL"})
"""librdkafka log facilities the error callback already reports (once per outage):
a connection failing, logged again on every reconnect attempt."""


class ClientEvents(Protocol):
    """What the thread tells its owner; every method is called on the owner's loop."""

    def records_fetched(self, records: list[Any]) -> None: ...
    def partitions_assigned(self, tps: list[TP]) -> None: ...
    async def partitions_revoked(self, tps: list[TP]) -> list[TopicPartition]:
        """Finish the partitions' in-flight records; return the offsets to commit."""
        ...
    def partitions_lost(self, tps: list[TP]) -> None: ...
    def watermarks_read(self, highs: dict[TP, int]) -> None: ...
    def reachability_changed(self, reachable: bool) -> None: ...
    def commit_failed(self, tps: list[TP]) -> None: ...


@dataclass(frozen=True, slots=True)
class _Commit:
    offsets: list[TopicPartition]


@dataclass(frozen=True, slots=True)
class _Pause:
    tps: list[TP]
    resume: bool


@dataclass(frozen=True, slots=True)
class _StopFetching:
    pass


@dataclass(frozen=True, slots=True)
class _Close:
    offsets: list[TopicPartition]
    done: asyncio.Future[None]


_Request = _Commit | _Pause | _StopFetching | _Close


@dataclass(slots=True)
class _Quieter:
    """Logs a repeated message once per `_REPEAT_LOG_S`, the repeats at DEBUG."""

    last: dict[Any, float] = field(default_factory=dict)

    def level(self, key: Any, level: int) -> int:
        now = time.monotonic()
        if now - self.last.get(key, -_REPEAT_LOG_S) < _REPEAT_LOG_S:
            return logging.DEBUG
        self.last[key] = now
        return level


def _tps(partitions: list[TopicPartition]) -> list[TP]:
    return [(p.topic, p.partition) for p in partitions]


def _names(tps: list[TP]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps)) or "nothing"


class ConsumerThread:
    """Owns one confluent-kafka consumer: creates it, calls it, closes it, on one thread."""

    def __init__(
        self,
        group: str,
        make_client: Callable[[dict[str, Any]], Any],
        config: dict[str, Any],
        topics: list[str],
        events: ClientEvents,
        *,
        revoke_timeout: float,
    ) -> None:
        """`make_client(config)` makes the consumer (confluent-kafka's `Consumer`, or a
        fake); it may raise KafkaException for a bad configuration."""
        self._group = group
        self._topics = topics
        self._events = events
        self._revoke_timeout = revoke_timeout
        # Created here (it only parses the configuration), then only ever touched by
        # the thread, which is not running yet.
        self._consumer = make_client(
            {
                **config,
                "on_commit": self._on_commit,
                "error_cb": self._on_error,
                "stats_cb": self._on_stats,
                "logger": LibrdkafkaLog(f"group {group}", quiet=_LOGGED_BY_US),
            }
        )
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        # A daemon thread: a client stuck in librdkafka (a close waiting for a broker
        # that is gone) must not keep the process alive after the loop gave up on it.
        self._thread = threading.Thread(
            target=self._run, name=f"kafka-consumer-{group}", daemon=True
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribed: asyncio.Future[None] | None = None
        self.finished: asyncio.Future[None] | None = None
        """Done when the thread ends: with None after a close, with the exception that
        ended it otherwise."""
        # The thread's own state (never read or written on the loop):
        self._fetching = True
        self._closing: _Close | None = None
        self._assignment: set[TP] = set()
        self._down_since: float | None = None
        self._quieter = _Quieter()

    # --- the loop's side ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the thread and subscribe; raise what subscribing raised."""
        loop = self._loop = asyncio.get_running_loop()
        self._subscribed = loop.create_future()
        self.finished = loop.create_future()
        self._thread.start()
        await self._subscribed

    def commit(self, offsets: list[TopicPartition]) -> None:
        """Commit asynchronously; a failure comes back as `commit_failed`."""
        self._requests.put(_Commit(offsets))

    def pause(self, tps: list[TP]) -> None:
        self._requests.put(_Pause(tps, resume=False))

    def resume(self, tps: list[TP]) -> None:
        self._requests.put(_Pause(tps, resume=True))

    def stop_fetching(self) -> None:
        """No more `consume()` (so no more records and no more rebalances) until close."""
        self._requests.put(_StopFetching())

    async def close(self, offsets: list[TopicPartition]) -> None:
        """Commit `offsets` and close the consumer (leaving the group). A caller that
        stops waiting (a timeout) leaves the thread to finish, or hang, alone."""
        assert self._loop is not None
        if not self._thread.is_alive():
            return
        done: asyncio.Future[None] = self._loop.create_future()
        self._requests.put(_Close(offsets, done))
        await done

    # --- handing things to the loop (from the thread) -----------------------------------

    def _post(self, callback: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        assert loop is not None
        # A closed loop: the process is exiting, nobody is listening.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)

    @staticmethod
    def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        assert self._subscribed is not None and self.finished is not None
        try:
            self._consumer.subscribe(
                self._topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        except Exception as e:  # handed to start(), which raises it
            self._post(self._settle, self._subscribed, e)
            self._post(self._settle, self.finished, None)
            return
        self._post(self._settle, self._subscribed, None)
        try:
            self._fetch()
            self._close()
        except BaseException as e:
            log.exception("bug: the Kafka consumer thread of group %s failed", self._group)
            self._post(self._settle, self.finished, e)
            if self._closing is not None:
                self._post(self._settle, self._closing.done, e)
            return
        self._post(self._settle, self.finished, None)

    def _fetch(self) -> None:
        """Consume and serve requests until the loop asks for a close."""
        next_watermarks = time.monotonic()
        while True:
            self._serve(0)
            if self._closing is not None:
                return
            if not self._fetching:
                self._serve(_CONSUME_WAIT_S)
                continue
            try:
                batch = self._consumer.consume(_CONSUME_BATCH, _CONSUME_WAIT_S)
            except KafkaException as e:
                log.error("group %s: consuming failed: %s", self._group, e)  # noqa: TRY400
                self._serve(_CONSUME_FAILED_PAUSE_S)
                continue
            good = []
            for record in batch:
                error = record.error()
                if error is None:
                    good.append(record)
                else:
                    self._on_error(error)
            if good:
                self._reachable_again("records fetched")
                self._post(self._events.records_fetched, good)
            if time.monotonic() >= next_watermarks:
                next_watermarks = time.monotonic() + _WATERMARKS_EVERY_S
                self._read_watermarks()

    def _serve(self, wait: float) -> None:
        """Run the loop's requests, waiting up to `wait` seconds for the first one. A close
        is only noted here: it runs once no callback is on the stack."""
        try:
            request = self._requests.get(timeout=wait) if wait > 0 else self._requests.get_nowait()
        except queue.Empty:
            return
        while True:
            self._execute(request)
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return

    def _execute(self, request: _Request) -> None:
        if isinstance(request, _Commit):
            try:
                self._consumer.commit(offsets=request.offsets, asynchronous=True)
            except KafkaException as e:
                self._commit_failed(e.args[0] if e.args else e, request.offsets)
        elif isinstance(request, _Pause):
            # Only partitions still assigned: the loop may ask for one just revoked.
            partitions = [TopicPartition(*tp) for tp in request.tps if tp in self._assignment]
            if not partitions:
                return
            try:
                if request.resume:
                    self._consumer.resume(partitions)
                else:
                    self._consumer.pause(partitions)
            except KafkaException as e:
                log.debug("group %s: pause/resume failed: %s", self._group, e)
        elif isinstance(request, _StopFetching):
            self._fetching = False
        else:
            self._closing = request

    def _close(self) -> None:
        closing = self._closing
        assert closing is not None
        if closing.offsets:
            try:
                self._consumer.commit(offsets=closing.offsets, asynchronous=False)
            except KafkaException as e:
                log.warning(
                    "group %s: final commit failed (records after the last commit will be "
                    "redelivered): %s", self._group, e,
                )
        try:
            # Runs `_on_revoke` for what is still assigned (nothing is in flight by now).
            self._consumer.close()
        except (KafkaException, RuntimeError) as e:
            log.warning("group %s: closing the Kafka consumer failed: %s", self._group, e)
        self._post(self._settle, closing.done, None)

    def _read_watermarks(self) -> None:
        # The high watermark the client cached with its last fetch (no request to the
        # broker). Safe here: this thread is not inside consume().
        highs = {}
        for tp in self._assignment:
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                highs[tp] = high
        self._post(self._events.watermarks_read, highs)

    # --- callbacks (run on this thread, inside consume(), commit() or close()) ----------

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = _tps(partitions)
        self._assignment.update(tps)
        self._reachable_again("partitions assigned")
        log.info("group %s: assigned %s", self._group, _names(tps))
        self._post(self._events.partitions_assigned, tps)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = _tps(partitions)
        self._assignment.difference_update(tps)
        if not tps:
            return
        offsets = self._wait_for_loop(tps)
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as e:
                log.warning(
                    "group %s: commit on revoke failed (records will be redelivered): %s",
                    self._group, e,
                )
        log.info("group %s: revoked %s", self._group, _names(tps))

    def _wait_for_loop(self, tps: list[TP]) -> list[TopicPartition]:
        """The loop finishes the revoked partitions' in-flight records; meanwhile this
        thread serves the loop's requests, so nothing the loop does waits for it."""
        loop = self._loop
        assert loop is not None
        coro = self._events.partitions_revoked(tps)
        try:
            stopped = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:
            coro.close()  # never scheduled: say so to Python, not as a warning at exit
            return []  # the loop is closed
        deadline = time.monotonic() + self._revoke_timeout
        while True:
            try:
                return stopped.result(timeout=_CONSUME_WAIT_S)
            except TimeoutError:
                pass
            except Exception:
                log.exception("bug: stopping %s failed; not committing them", _names(tps))
                return []
            self._serve(0)
            if time.monotonic() >= deadline:
                stopped.cancel()
                log.warning(
                    "group %s: %s not stopped within %.0f s; not committing them (their "
                    "records will be redelivered)", self._group, _names(tps),
                    self._revoke_timeout,
                )
                return []

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = _tps(partitions)
        self._assignment.difference_update(tps)
        if not tps:
            return
        log.warning(
            "group %s: lost %s (the group session timed out, e.g. while no broker was "
            "reachable); their unfinished records are dropped uncommitted and will be "
            "redelivered to whoever gets the partitions next", self._group, _names(tps),
        )
        self._post(self._events.partitions_lost, tps)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is None:
            self._reachable_again("offsets committed")
        elif err.code() != KafkaError._NO_OFFSET:
            self._commit_failed(err, partitions)

    def _commit_failed(self, err: Any, partitions: list[TopicPartition]) -> None:
        text = err.str() if isinstance(err, KafkaError) else str(err)
        level = logging.DEBUG if self._down_since is not None else logging.WARNING
        log.log(
            self._quieter.level("commit", level),
            "group %s: commit failed (will retry): %s", self._group, text,
        )
        # Forget what the loop believes committed, so its next round sends it again.
        self._post(self._events.commit_failed, _tps(partitions))

    def _on_error(self, error: KafkaError) -> None:
        code = error.code()
        if error.fatal():
            log.error("group %s: Kafka reports a fatal error: %s", self._group, error.str())
            return
        if code == KafkaError._ALL_BROKERS_DOWN:
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning(
                    "group %s: no Kafka broker is reachable (%s); consuming and committing "
                    "wait for one to come back, records in flight finish, nothing is lost",
                    self._group, error.str(),
                )
                self._post(self._events.reachability_changed, False)
            return
        if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
            # Consumers do not create topics; the subscription waits for it.
            log.log(
                self._quieter.level(code, logging.WARNING),
                "group %s: a subscribed topic does not exist (%s); its records are "
                "consumed once it is created (found within about 5 s)",
                self._group, error.str(),
            )
            return
        if code in _CONNECTION_ERRORS:
            # One connection dropped (the client reconnects by itself), or more of the
            # outage already reported.
            level = logging.DEBUG if self._down_since is not None else logging.INFO
        else:
            level = logging.WARNING
        log.log(
            self._quieter.level(code, level), "group %s: Kafka reports %s",
            self._group, error.str(),
        )

    def _on_stats(self, stats: str) -> None:
        # librdkafka says nothing when a broker comes back; its statistics show it.
        # Only read during an outage (they can be large).
        if self._down_since is None:
            return
        try:
            brokers = json.loads(stats).get("brokers", {})
        except ValueError:
            return
        if any(
            b.get("state") == "UP" and b.get("source") in ("configured", "learned")
            for b in brokers.values()
        ):
            self._reachable_again("a broker connection is up")

    def _reachable_again(self, how: str) -> None:
        if self._down_since is None:
            return
        log.warning(
            "group %s: Kafka is reachable again after %.1f s (%s)",
            self._group, time.monotonic() - self._down_since, how,
        )
        self._down_since = None
        self._post(self._events.reachability_changed, True)
