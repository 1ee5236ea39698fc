"""The sidecar process as one object: start in order, stop gracefully in reverse."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2

from . import tracing
from .admin import AdminServer
from .cluster import LocalRouter, Router
from .cluster.node import ClusterNode, clustered
from .cluster.status import ClusterView, cluster_routes, journal_identity
from .discovery import discover, proxy_terminated
from .dispatch import Dispatcher
from .entities import Command, EntityHost
from .entities.idempotency import IdempotencyPolicy
from .eventing import Eventing
from .function_limit import FunctionLimit
from .function_watch import UserFunctionWatch
from .grpc_front import build_grpc_server
from .h2.channel import ActionChannel, StreamChannel
from .http import PublicServer, start_public_server
from .inspection import JournalInspection, reader_factory
from .journal.base import Journal
from .journal.factory import create_journal
from .journal_watch import JournalWatch
from .metrics import Metrics
from .model import UserFunctionModel
from .ports import PortUnavailable, check_free
from .settings import Settings
from .views.runtime import Views

log = logging.getLogger("larder_sidecar")

SHUTDOWN_GRACE = 10.0
# The user function is in this pod: after it restarts, reconnect within a second
# rather than after gRPC's default back-off of up to two minutes.
_USER_FUNCTION_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class Sidecar:
    def __init__(
        self,
        settings: Settings,
        journal: Journal | None = None,
        router: Callable[[EntityHost], Router] | None = None,
    ) -> None:
        """`router` builds the router over this sidecar's entity host; by default the
        sharded one when membership is configured, else `LocalRouter`."""
        self.settings = settings
        self.eventing: Eventing | None = None
        self.metrics = Metrics()
        self.journal = journal if journal is not None else create_journal(settings)
        self._make_router = router
        self.router: Router | None = None
        self.cluster: ClusterNode | None = None
        self.inspection = JournalInspection(
            reader_factory(settings),
            lambda: self.model.file_set if self.model is not None else None,
        )
        self.admin = AdminServer(
            self.metrics,
            self._readiness,
            cluster_routes(self._cluster_view),
            guarded=self.inspection.routes(),
            token=settings.admin_token,
        )
        self.journal_watch = JournalWatch(self.journal, settings.journal_unavailable_grace)
        self.function_watch: UserFunctionWatch | None = None
        self.model: UserFunctionModel | None = None
        self.dispatcher: Dispatcher | None = None
        self.entities: EntityHost | None = None
        self.views: Views | None = None
        self.public_port = 0
        self._channel: grpc.aio.Channel | None = None
        self._streams: StreamChannel | None = None
        """The entities' streams to the user function, unless grpc.aio carries them."""
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._public: PublicServer | None = None
        self._ready = False
        self._stopped = False
        self._tracing = False
        self._not_ready_reason = "starting: waiting for the journal"

    async def _readiness(self) -> tuple[bool, str]:
        if not self._ready:
            return False, self._not_ready_reason
        if self.cluster is not None and not self.cluster.ready:
            return False, "starting: waiting for this sidecar's first shard map (membership)"
        if self.function_watch is not None:
            ok, why = self.function_watch.status()
            if not ok:
                return ok, why
        return self.journal_watch.status()

    def _cluster_view(self) -> ClusterView:
        """For the admin port's `/cluster` answers."""
        components = self.model.components.values() if self.model is not None else ()
        return ClusterView(
            configured=self._make_router is None and clustered(self.settings),
            router=self.cluster.router if self.cluster is not None else None,
            entity_types=sorted({c.entity_type for c in components if c.kind.is_entity}),
            journal=journal_identity(self.settings),
        )

    async def start_admin(self) -> None:
        await self.admin.start(self.settings.host, self.settings.admin_port)

    async def start(self) -> None:
        """Journal, discovery, the public port, then Kafka consumers. Raises
        SpecError/DiscoveryFailed/EventingError."""
        s = self.settings
        if s.tracing is not None:
            tracing.install(s.tracing, self.metrics.registry)
            self._tracing = True
        await self.journal.start()
        self.journal_watch.start()
        self._not_ready_reason = (
            f"starting: discovering the user function at {s.user_function_target}"
        )
        self._channel = grpc.aio.insecure_channel(
            s.user_function_target,
            options=[
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes),
                *_USER_FUNCTION_RECONNECT,
            ],
        )
        try:
            self.model = model = await discover(
                self._channel,
                s.user_function_target,
                s.discovery_timeout,
                max_entity_id_bytes=s.max_entity_id_bytes,
            )
        except Exception as e:
            self._not_ready_reason = f"not ready: {e}"
            raise
        self.function_watch = UserFunctionWatch(self._channel, s.user_function_unavailable_grace)
        self.function_watch.start()
        entity_journal = self.journal
        if model.views:
            # Before any entity writes: the entities write through the views' journal,
            # which publishes each committed write to the views (views/feed.py).
            self.views = Views.for_settings(
                s, model, self.journal, self._channel, self.metrics.registry
            )
            self.views.feed_topics(s.kafka)
            for rebuilt in await self.views.start():
                log.warning("view table %s changed its row type or queries: rebuilt", rebuilt)
            entity_journal = self.views.journal
        if s.user_function_transport == "h2":
            self._streams = StreamChannel(
                s.user_function_host, s.user_function_port, s.max_message_bytes
            )
        self.entities = EntityHost(
            entity_journal,
            self._channel,
            self.metrics,
            s.passivation_timeout,
            reenter=self._reenter,
            idempotency=IdempotencyPolicy(s.idempotency_window, s.idempotency_max_keys),
            streams=self._streams,
        )
        if self._make_router is None and clustered(s):
            self.cluster = ClusterNode(s, self.entities, model.methods, self.metrics.registry)
            self.router = self.cluster.router
        else:
            self.router = (self._make_router or LocalRouter)(self.entities)
        self.eventing = Eventing.for_model(model, self.settings.kafka, self.metrics.registry)
        actions: Any = self._channel
        if self._streams is not None:
            actions = ActionChannel(self._streams, self._channel)
        dispatcher_args = (model, self.router, actions, self.metrics)
        if self.eventing is None:
            self.dispatcher = Dispatcher(*dispatcher_args)
        else:
            # Its producer first: direct calls of `eventing.out` methods publish.
            await self.eventing.open()
            self.dispatcher = self.eventing.dispatcher(*dispatcher_args)
        if self.views is not None:
            self.dispatcher.views = self.views.queries
        if self.cluster is not None:
            # grpc's own bind error does not say why (the internal server binds it).
            check_free("LARDER_INTERNAL_PORT", s.host, s.internal_port)
            # After the dispatcher: commands a released entity hands back re-enter there.
            await self.cluster.start()
        # Requests too large for the user function are refused before they reach it.
        function_limit = FunctionLimit(s.user_function_max_message_bytes, s.max_entity_id_bytes)
        self._server, self._health = build_grpc_server(
            self.dispatcher,
            s.max_message_bytes,
            idle_timeout=s.public.grpc_idle_timeout,
            function_limit=function_limit,
            metrics=self.metrics,
        )
        # The public port serves unary gRPC calls and HTTP/1.1 itself and forwards every
        # other gRPC stream (streamed methods, reflection, health) to this server over
        # loopback TCP (an abstract unix socket measured no better, docs/performance.md).
        internal = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        try:
            self._public = await start_public_server(
                s.host,
                s.port,
                f"127.0.0.1:{internal}",
                self.dispatcher,
                model.method_models,
                max_message_bytes=s.max_message_bytes,
                limits=s.public,
                metrics=self.metrics,
                function_limit=function_limit,
                unary_grpc=self.dispatcher,
                grpc_methods=model.methods,
                relay=self.cluster.router if self.cluster is not None else None,
            )
        except OSError as e:
            raise PortUnavailable.from_os_error("LARDER_PORT", s.host, s.port, e) from e
        self.public_port = self._public.port
        if self.cluster is not None:
            # Peers relay HTTP commands for this sidecar's entities to its own front.
            self.cluster.server.relayed_http = self._public.dispatcher.serve_relayed
        if self.eventing is not None:
            await self.eventing.start(self.dispatcher)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._ready = True
        log.info(
            "serving %s on %s:%d (admin %d)",
            ", ".join(model.service_names),
            s.host,
            self.public_port,
            self.admin.port,
        )

    def _reenter(self, command: Command) -> None:
        # Commands reach entities only through the dispatcher, so it exists by now.
        assert self.dispatcher is not None
        self.dispatcher.reenter(command)

    async def stop(self) -> None:
        """Stop accepting, finish in-flight commands, passivate, tell the user function."""
        if self._stopped:
            return
        self._stopped = True
        self._ready = False
        self._not_ready_reason = "shutting down"
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self.cluster is not None:
            # On Kubernetes membership marks this pod terminating: its shards move to the
            # other members, and the hand-off finishes while every port still serves.
            await self.cluster.leave(SHUTDOWN_GRACE)
        if self.eventing is not None:
            # Consumed records finish and their offsets are committed while the
            # entities and the journal are still there.
            await self.eventing.stop_consuming()
        # Together: the public port's forwarded gRPC streams need the internal server
        # until they end.
        closing = []
        if self._public is not None:
            closing.append(self._public.close())
        if self._server is not None:
            closing.append(self._server.stop(SHUTDOWN_GRACE))
        await asyncio.gather(*closing)
        if self.dispatcher is not None:
            await self.dispatcher.drain()
        if self.eventing is not None:
            await self.eventing.close()
        if self.entities is not None:
            await self.entities.shutdown()
        if self.views is not None:
            # After the entities' last writes; what is still queued is caught up at the
            # next start (views/delivery.py).
            await self.views.close()
        if self.cluster is not None:
            await self.cluster.close(SHUTDOWN_GRACE)
        if self.function_watch is not None:
            await self.function_watch.close()
        if self._streams is not None:
            await self._streams.close()
        if self._channel is not None:
            if self.model is not None:
                await proxy_terminated(self._channel)
            await self._channel.close(None)
        await self.journal_watch.close()
        await self.journal.close()
        await self.admin.close()
        await self.inspection.close()
        if self._tracing:
            # The last spans (this shutdown's hand-offs included) go to the collector.
            await asyncio.to_thread(tracing.shutdown)
        log.info("stopped")
