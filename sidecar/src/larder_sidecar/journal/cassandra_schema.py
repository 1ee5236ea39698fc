"""The journal's keyspace and tables, and the statements it runs against them.

`python -m larder_sidecar.journal.cassandra_schema` prints the CQL for the
keyspace and replication in the `LARDER_JOURNAL_CASSANDRA_*` environment, for
operators who create the schema themselves (`..._CREATE_SCHEMA=false`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from .cassandra_settings import CassandraSettings, Replication

TABLES = ("events", "snapshots", "value_states")

ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (table, column, type): columns added after the tables were first released. The
    # journal adds a missing one at start-up (`ALTER TABLE ... ADD`), so a keyspace
    # created by an older version keeps working.
    #
    # An entity's idempotency records (docs/http.md): key -> stored_at (8-byte float)
    # + the record. A static column of the event partition the entity's last append
    # wrote, so the records go in the same conditional batch as the events; a column
    # of the value row, so they go in the same conditional update as the state.
    ("events", "idempotency", "map<text, blob> static"),
    ("value_states", "idempotency", "map<text, blob>"),
)


def schema_cql(keyspace: str, replication: Replication) -> list[str]:
    """CREATE statements for everything the journal needs, idempotent."""
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication.cql_map()}",
        # `head` (static: one value per partition) is the sequence number of the last
        # event stored in the partition; the fencing transaction compares it.
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.events (
    persistence_id text,
    partition_nr bigint,
    sequence_nr bigint,
    head bigint static,
    idempotency map<text, blob> static,
    type_url text,
    payload blob,
    written_at timestamp,
    PRIMARY KEY ((persistence_id, partition_nr), sequence_nr)
) WITH CLUSTERING ORDER BY (sequence_nr ASC)""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.snapshots (
    persistence_id text PRIMARY KEY,
    sequence_nr bigint,
    type_url text,
    payload blob,
    written_at timestamp
)""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.value_states (
    persistence_id text PRIMARY KEY,
    revision bigint,
    type_url text,
    payload blob,
    written_at timestamp,
    idempotency map<text, blob>
)""",
    ]


def add_column_cql(keyspace: str, table: str, column: str, kind: str) -> str:
    return f"ALTER TABLE {keyspace}.{table} ADD {column} {kind}"


@dataclass(frozen=True, slots=True)
class Statements:
    """CQL text of every statement the journal prepares."""

    select_events: str
    select_heads: str
    fence_head: str
    append_one_fenced: str
    append_one: str
    set_head: str
    insert_event: str
    select_snapshot: str
    insert_snapshot: str
    select_records: str
    put_record: str
    drop_record: str
    select_value: str
    put_value_record: str
    drop_value_record: str
    insert_value_if_absent: str
    update_value_if_revision: str
    write_value: str

    @classmethod
    def for_keyspace(cls, ks: str) -> Statements:
        value_columns = "revision = ?, type_url = ?, payload = ?, written_at = ?"
        return cls(
            select_events=(
                f"SELECT sequence_nr, type_url, payload FROM {ks}.events "
                "WHERE persistence_id = ? AND partition_nr = ? AND sequence_nr >= ?"
            ),
            select_heads=(
                f"SELECT partition_nr, head FROM {ks}.events "
                "WHERE persistence_id = ? AND partition_nr IN ? PER PARTITION LIMIT 1"
            ),
            fence_head=(
                f"UPDATE {ks}.events SET head = ? "
                "WHERE persistence_id = ? AND partition_nr = ? IF head = ?"
            ),
            # A command's batch is usually one event: then one UPDATE carries the event
            # and the head, a cheaper request than a batch for driver and server alike.
            # (An UPDATE writes no row marker; the event's cells make the row.)
            append_one_fenced=(
                f"UPDATE {ks}.events SET head = ?, type_url = ?, payload = ?, written_at = ? "
                "WHERE persistence_id = ? AND partition_nr = ? AND sequence_nr = ? IF head = ?"
            ),
            append_one=(
                f"UPDATE {ks}.events SET head = ?, type_url = ?, payload = ?, written_at = ? "
                "WHERE persistence_id = ? AND partition_nr = ? AND sequence_nr = ?"
            ),
            set_head=(
                f"UPDATE {ks}.events SET head = ? WHERE persistence_id = ? AND partition_nr = ?"
            ),
            insert_event=(
                f"INSERT INTO {ks}.events "
                "(persistence_id, partition_nr, sequence_nr, type_url, payload, written_at) "
                "VALUES (?, ?, ?, ?, ?, ?)"
            ),
            select_snapshot=(
                f"SELECT sequence_nr, type_url, payload FROM {ks}.snapshots "
                "WHERE persistence_id = ?"
            ),
            # The write timestamp is the sequence number, so of two snapshot writes the
            # later state wins whatever order they reach the replicas in.
            insert_snapshot=(
                f"INSERT INTO {ks}.snapshots "
                "(persistence_id, sequence_nr, type_url, payload, written_at) "
                "VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?"
            ),
            # The idempotency records of the partitions that hold an entity's last
            # append (the one with the highest non-null head).
            select_records=(
                f"SELECT partition_nr, head, idempotency FROM {ks}.events "
                "WHERE persistence_id = ? AND partition_nr IN ? PER PARTITION LIMIT 1"
            ),
            # Each record expires by itself (TTL) after the idempotency window.
            put_record=(
                f"UPDATE {ks}.events USING TTL ? SET idempotency[?] = ? "
                "WHERE persistence_id = ? AND partition_nr = ?"
            ),
            drop_record=(
                f"DELETE idempotency[?] FROM {ks}.events "
                "WHERE persistence_id = ? AND partition_nr = ?"
            ),
            select_value=(
                f"SELECT revision, type_url, payload, idempotency FROM {ks}.value_states "
                "WHERE persistence_id = ?"
            ),
            put_value_record=(
                f"UPDATE {ks}.value_states USING TTL ? SET idempotency[?] = ? "
                "WHERE persistence_id = ?"
            ),
            drop_value_record=(
                f"DELETE idempotency[?] FROM {ks}.value_states WHERE persistence_id = ?"
            ),
            insert_value_if_absent=(
                f"INSERT INTO {ks}.value_states "
                "(persistence_id, revision, type_url, payload, written_at) "
                "VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
            ),
            update_value_if_revision=(
                f"UPDATE {ks}.value_states SET {value_columns} "
                "WHERE persistence_id = ? IF revision = ?"
            ),
            write_value=(f"UPDATE {ks}.value_states SET {value_columns} WHERE persistence_id = ?"),
        )


def main() -> None:
    settings = CassandraSettings.from_env(os.environ)
    for statement in schema_cql(settings.keyspace, settings.replication):
        sys.stdout.write(statement + ";\n\n")
    sys.stdout.write(
        "-- A keyspace created by an older Larder lacks these columns (an error for a\n"
        "-- column that exists already is harmless):\n"
    )
    for table, column, kind in ADDED_COLUMNS:
        sys.stdout.write(add_column_cql(settings.keyspace, table, column, kind) + ";\n")


if __name__ == "__main__":
    main()
