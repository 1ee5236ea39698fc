"""A single-node Kafka 4 in KRaft mode (combined broker and controller) on loopback ports."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer

from tests.infra.errors import ServerError
from tests.infra.java import java_argv
from tests.infra.process import ManagedProcess, free_port, port_open

READY_TIMEOUT_S = 120.0
_FORMAT_TIMEOUT_S = 120.0
_READY_TOPIC = "__larder_ready"

_LOG4J2 = """Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "%d{HH:mm:ss.SSS} %-5level [%t] %c{1} - %m%n"
  Loggers:
    Root:
      level: info
      AppenderRef:
        - ref: STDOUT
"""


@dataclass(frozen=True)
class KafkaConfig:
    workdir: Path
    port: int
    controller_port: int
    cluster_id: str
    host: str = "127.0.0.1"
    node_id: int = 1

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"


def new_cluster_id() -> str:
    """A random cluster id in Kafka's format: a UUID as 22 characters of unpadded base64url."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def render_properties(config: KafkaConfig) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(config.node_id),
        "controller.quorum.voters": f"{config.node_id}@{config.host}:{config.controller_port}",
        "listeners": (
            f"PLAINTEXT://{config.host}:{config.port},CONTROLLER://{config.host}:{config.controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{config.host}:{config.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(config.workdir / "data"),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        # One broker: every internal topic must fit on it.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Consumer groups form at once instead of waiting for more members.
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _jvm_options(config: KafkaConfig) -> list[str]:
    return [
        "-Xms256m",
        "-Xmx512m",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        f"-Dlog4j2.configurationFile={config.workdir / 'log4j2.yaml'}",
        f"-Dkafka.logs.dir={config.workdir / 'logs'}",
    ]


class KafkaServer:
    """A running (or stopped) broker. `stop()`/`start()` keep its data and ports; so do
    `kill()`/`start()` and `pause()`/`resume()`."""

    def __init__(self, lib: Path, workdir: Path) -> None:
        self.config = KafkaConfig(
            workdir, port=free_port(), controller_port=free_port(), cluster_id=new_cluster_id()
        )
        workdir.mkdir(parents=True, exist_ok=True)
        self._properties = workdir / "server.properties"
        self._properties.write_text(render_properties(self.config))
        (workdir / "log4j2.yaml").write_text(_LOG4J2)
        self._lib = lib
        self._formatted = False
        self._process = ManagedProcess(
            "kafka",
            java_argv(lib, "kafka.Kafka", _jvm_options(self.config), [str(self._properties)]),
            workdir / "kafka.log",
            cwd=workdir,
        )

    @property
    def bootstrap_servers(self) -> str:
        return self.config.bootstrap_servers

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def paused(self) -> bool:
        return self._process.paused

    def details(self) -> dict[str, str]:
        return {"bootstrap_servers": self.bootstrap_servers}

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Start the broker; return once a record produced to it can be consumed."""
        if not self._formatted:
            self._format()
        self._process.start()
        self._process.wait_until(self._round_trips, timeout, "round-tripping a record")

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (clients see their connections closed)."""
        self._process.stop()

    def kill(self) -> None:
        """SIGKILL: the broker crashes; `start()` recovers its log as after a power cut."""
        self._process.kill()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP). Its sockets stay open and the kernel still
        accepts connections and buffers requests, but nothing is answered, so clients
        only notice through their own timeouts; after `resume()` the broker handles what
        was buffered (and finds every consumer group session expired)."""
        self._process.pause()

    def resume(self) -> None:
        """Let a paused broker run again (SIGCONT); harmless when it is not paused."""
        self._process.resume()

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Paused for the block, and resumed however the block ends: the broker is
        session-wide and other tests need it answering."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def close(self) -> None:
        self._process.stop()

    def _format(self) -> None:
        formatter = ManagedProcess(
            "kafka-storage-format",
            java_argv(
                self._lib,
                "kafka.tools.StorageTool",
                _jvm_options(self.config),
                ["format", "-t", self.config.cluster_id, "-c", str(self._properties)],
            ),
            self.config.workdir / "kafka-format.log",
        )
        formatter.start()
        code = formatter.wait_exit(_FORMAT_TIMEOUT_S)
        if code != 0:
            raise ServerError("kafka", f"`StorageTool format` exited with {code}", formatter.tail())
        self._formatted = True

    def _round_trips(self) -> bool:
        if not port_open(self.config.host, self.config.port):
            return False
        servers = self.bootstrap_servers
        # librdkafka logs every refused connection to stderr; failures here only
        # mean "not ready yet", so it stays quiet.
        quiet = {"bootstrap.servers": servers, "log_level": 0}
        marker = uuid.uuid4().hex.encode()
        try:
            producer = Producer({**quiet, "message.timeout.ms": 5000})
            producer.produce(_READY_TOPIC, marker)
            if producer.flush(6) != 0:
                return False
            consumer = Consumer(
                {
                    **quiet,
                    "group.id": f"larder-ready-{marker.decode()}",
                    "auto.offset.reset": "earliest",
                }
            )
            try:
                consumer.subscribe([_READY_TOPIC])
                for _ in range(20):
                    message = consumer.poll(1.0)
                    if (
                        message is not None
                        and message.error() is None
                        and message.value() == marker
                    ):
                        return True
            finally:
                consumer.close()
        except KafkaException:
            return False
        return False
