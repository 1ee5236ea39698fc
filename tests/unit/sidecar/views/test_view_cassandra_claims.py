"""Claims of view changes per bucket (`views/cassandra_claims.py`): an entity's bucket,
grouping a wave's claims, and sorting the answer to a refused conditional batch. The
batches themselves run against the real Cassandra in
tests/integration/views/test_cassandra_store.py."""

from __future__ import annotations

import subprocess
import sys

from larder_sidecar.views.cassandra_claims import (
    BUCKETS,
    CLAIMS_PER_BATCH,
    Claim,
    bucket_of,
    by_bucket,
    sort_answer,
)


def _claim(pid: str, expected: int, ts: int = 100, index: int = 0) -> Claim:
    return Claim(index, pid, expected, expected + 1, [], ts)


def test_a_bucket_depends_on_the_persistence_id_alone() -> None:
    pids = [f"items|{i}" for i in range(2000)]
    buckets = [bucket_of(p) for p in pids]
    assert all(0 <= b < BUCKETS for b in buckets)
    assert set(buckets) == set(range(BUCKETS))  # 2,000 ids reach every bucket
    # The same in another process (hash randomization must not move an entity).
    code = (
        "from larder_sidecar.views.cassandra_claims import bucket_of; print(bucket_of('items|7'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == bucket_of("items|7")


def test_a_wave_is_grouped_per_bucket_in_bounded_batches() -> None:
    claims = [_claim(f"p{i}", 0, index=i) for i in range(3000)]
    groups = by_bucket(claims)
    assert sorted(c.index for _, g in groups for c in g) == list(range(3000))
    for bucket, group in groups:
        assert 0 < len(group) <= CLAIMS_PER_BATCH
        assert all(bucket_of(c.pid) == bucket for c in group)
    assert any(len(g) == CLAIMS_PER_BATCH for _, g in groups)


def test_a_refused_batch_is_sorted_claim_by_claim() -> None:
    claims = [
        _claim("new", 0),  # no row: its IF NOT EXISTS held
        _claim("taken", 0),  # someone claimed its first change meanwhile
        _claim("ok", 3),  # applied = done = 3: held
        _claim("moved", 3),  # done and applied 4: the offset moved
        _claim("unfinished", 3),  # applied 4, done 3: finish it first
        _claim("gone", 2),  # no row though 2 expected: refused
        _claim("behind", 5, ts=100),  # held but for the timestamp
    ]
    rows = [
        {"[applied]": False, "pid": "taken", "applied": 1, "done": None, "ts": 1},
        {"[applied]": False, "pid": "ok", "applied": 3, "done": 3, "ts": 50},
        {"[applied]": False, "pid": "moved", "applied": 4, "done": 4, "ts": 60},
        {"[applied]": False, "pid": "unfinished", "applied": 4, "done": 3, "ts": 70},
        {"[applied]": False, "pid": "behind", "applied": 5, "done": 5, "ts": 140},
    ]
    answer = sort_answer(claims, rows)
    assert [c.pid for c in answer.retry] == ["new", "ok", "behind"]
    assert [c.pid for c in answer.refused] == ["taken", "moved", "unfinished", "gone"]
    assert answer.unfinished == ["taken", "unfinished"]
    assert [c.ts for c in answer.retry] == [100, 100, 141]
