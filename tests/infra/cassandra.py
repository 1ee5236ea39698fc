"""A single-node Cassandra 5.0 on loopback ports, started from the cached classpath."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cassandra.cluster import Cluster, Session

from tests.infra.java import java_argv
from tests.infra.process import ManagedProcess, free_port, port_open

READY_TIMEOUT_S = 180.0

# From Cassandra's conf/jvm17-server.options: the JDK internals it reaches into.
JDK17_MODULE_FLAGS = (
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-exports=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
)

# A single node needs none of the waits that let a real ring settle.
FAST_START_FLAGS = (
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=0",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.initial_token=0",
)

_LOGBACK = """<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level [%thread] %logger{20} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
"""


@dataclass(frozen=True)
class CassandraConfig:
    workdir: Path
    port: int
    storage_port: int
    host: str = "127.0.0.1"
    commitlog_sync: str = "periodic"
    """`periodic` (Cassandra's default: synced every 10 s, acknowledged before), `batch`
    or `group` (synced before a write is acknowledged)."""

    @property
    def data_root(self) -> Path:
        return self.workdir / "data"


def render_yaml(config: CassandraConfig) -> str:
    """cassandra.yaml for one node. JSON is valid YAML, and needs no quoting rules."""
    root = config.data_root
    settings: dict[str, Any] = {
        "cluster_name": "larder-test",
        "num_tokens": 1,
        "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
        "endpoint_snitch": "SimpleSnitch",
        "authenticator": "AllowAllAuthenticator",
        "authorizer": "AllowAllAuthorizer",
        "data_file_directories": [str(root / "data")],
        "commitlog_directory": str(root / "commitlog"),
        "saved_caches_directory": str(root / "saved_caches"),
        "hints_directory": str(root / "hints"),
        "cdc_raw_directory": str(root / "cdc_raw"),
        **_commitlog_settings(config.commitlog_sync),
        "seed_provider": [
            {
                "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                "parameters": [{"seeds": f"{config.host}:{config.storage_port}"}],
            }
        ],
        "listen_address": config.host,
        "rpc_address": config.host,
        "storage_port": config.storage_port,
        "native_transport_port": config.port,
        "start_native_transport": True,
        # Lightweight transactions (the journal's fencing) work on one node as is.
        "concurrent_reads": 8,
        "concurrent_writes": 8,
        "concurrent_counter_writes": 8,
        "auto_snapshot": False,
        "snapshot_on_duplicate_row_detection": False,
        "user_defined_functions_enabled": False,
        "materialized_views_enabled": False,
    }
    return json.dumps(settings, indent=2) + "\n"


def _commitlog_settings(mode: str) -> dict[str, str]:
    if mode == "periodic":
        return {"commitlog_sync": "periodic", "commitlog_sync_period": "10000ms"}
    if mode == "batch":
        return {"commitlog_sync": "batch"}
    if mode == "group":
        return {"commitlog_sync": "group", "commitlog_sync_group_window": "10ms"}
    raise ValueError(f"commitlog_sync {mode!r} is not periodic, batch or group")


def jvm_options(config: CassandraConfig) -> list[str]:
    logs = config.workdir / "logs"
    return [
        "-Xms512m",
        "-Xmx1g",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Xss512k",
        *JDK17_MODULE_FLAGS,
        *FAST_START_FLAGS,
        f"-Dcassandra.config=file://{config.workdir / 'cassandra.yaml'}",
        f"-Dcassandra.storagedir={config.data_root}",
        f"-Dcassandra.logdir={logs}",
        f"-Dlogback.configurationFile=file://{config.workdir / 'logback.xml'}",
        "-Dcassandra-foreground=yes",
        # No JMX port at all: nothing to collide with, nothing to expose.
        "-Dcom.sun.management.jmxremote=false",
    ]


class CassandraServer:
    """A running (or stopped) Cassandra node. `stop()`/`start()` keep data dir and ports;
    `pause()`/`resume()` (or `with suspended():`) freeze it without closing anything."""

    def __init__(self, lib: Path, workdir: Path, *, commitlog_sync: str = "periodic") -> None:
        self.config = CassandraConfig(
            workdir, port=free_port(), storage_port=free_port(), commitlog_sync=commitlog_sync
        )
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "cassandra.yaml").write_text(render_yaml(self.config))
        (workdir / "logback.xml").write_text(_LOGBACK)
        self._process = ManagedProcess(
            "cassandra",
            java_argv(
                lib, "org.apache.cassandra.service.CassandraDaemon", jvm_options(self.config)
            ),
            workdir / "cassandra.log",
            cwd=workdir,
        )

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def contact_points(self) -> list[str]:
        return [self.config.host]

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    @property
    def running(self) -> bool:
        return self._process.running

    def details(self) -> dict[str, str]:
        return {"host": self.host, "port": str(self.port), "cql": f"{self.host}:{self.port}"}

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Start the node and return once CQL queries succeed."""
        self._process.start()
        self._process.wait_until(self._answers_cql, timeout, "answering CQL queries")

    def stop(self) -> None:
        """Graceful stop (SIGTERM); the data survives for the next `start()`."""
        self._process.stop()

    def kill(self) -> None:
        """SIGKILL, as a crash; the next `start()` replays the commit log.

        Replay stops at the last sync: with `commitlog_sync: periodic` (the default
        here) the log is synced every 10 s, so acknowledged writes of the last seconds
        may be lost, as in a real crash of such a node; with `batch` or `group` a write
        is synced before it is acknowledged."""
        self._process.kill()

    @property
    def paused(self) -> bool:
        return self._process.paused

    def pause(self) -> None:
        """Freeze the node (SIGSTOP). Connections stay open and requests are accepted by
        the kernel but never answered, so clients hit their own timeouts; after
        `resume()` the node processes what was buffered."""
        self._process.pause()

    def resume(self) -> None:
        """Let a paused node run again (SIGCONT); harmless when it is not paused."""
        self._process.resume()

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Paused for the block, and resumed however the block ends: the node is
        session-wide and other tests need it answering."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def close(self) -> None:
        self._process.stop()

    def _answers_cql(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        cluster = Cluster(
            [self.host], port=self.port, connect_timeout=5, control_connection_timeout=5
        )
        try:
            session = cluster.connect()
            session.execute("SELECT release_version FROM system.local", timeout=5)
        except Exception:
            # Any driver error here means "not ready yet"; the caller's deadline
            # and the log tail it reports explain a node that never gets there.
            return False
        finally:
            cluster.shutdown()
        return True


class NodeViews:
    """The node's own view of its clients and work (the `system_views` virtual tables),
    read over a connection of its own. Blocking: call it through `asyncio.to_thread`."""

    def __init__(self, server: CassandraServer) -> None:
        self._cluster = Cluster(server.contact_points, port=server.port)
        self._session: Session | None = None

    def _connect(self) -> Session:
        if self._session is None:
            self._session = self._cluster.connect()
        return self._session

    def requests_by_client(self) -> dict[int, int]:
        """Client port -> requests the node has received on that connection (this
        reader's own connections included)."""
        rows = self._connect().execute("SELECT port, request_count FROM system_views.clients")
        return {int(r.port): int(r.request_count) for r in rows}

    def running_tasks(self) -> list[str]:
        """What the node is executing or has queued right now, as it describes it
        (`BATCH of [...]`, `Paxos Commit(...)`, `QUERY ...`), without this query."""
        rows = self._connect().execute("SELECT task FROM system_views.queries")
        return [str(r.task) for r in rows if "system_views.queries" not in str(r.task)]

    def close(self) -> None:
        self._cluster.shutdown()
