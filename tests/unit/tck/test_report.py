"""The report: text summary, JUnit XML, and the mismatch message of a failed case."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from google.protobuf import wrappers_pb2
from larder_tck.expect import CaseFailed, expect_equal
from larder_tck.registry import Case, all_cases
from larder_tck.report import Result, summary, write_junit, write_text
from larder_tck.runner import Selection


async def _noop(_: object) -> None:
    return None


def _case(name: str, kind: str = "model") -> Case:
    return Case(name, kind, "discovery", f"describes {name}", _noop)  # type: ignore[arg-type]


def test_summary_counts_each_status() -> None:
    results = [
        Result(_case("a"), "passed"),
        Result(_case("b"), "failed", "broken"),
        Result(_case("c"), "skipped", "not implemented"),
        Result(_case("d"), "passed"),
    ]
    assert summary(results) == "2 passed, 1 failed, 1 skipped"
    out = io.StringIO()
    write_text(results, out)
    text = out.getvalue()
    assert "FAIL  b  (model) describes b" in text
    assert "SKIP  c  (model) describes c [not implemented]" in text
    assert "=== FAILED b: describes b\nbroken" in text
    assert text.strip().splitlines()[-1] == "2 passed, 1 failed, 1 skipped"


def test_junit_has_one_testcase_per_result(tmp_path: Path) -> None:
    results = [
        Result(_case("x.ok"), "passed", seconds=0.5),
        Result(_case("x.bad"), "failed", "first line\nmore"),
        Result(_case("x.skip"), "skipped", "why"),
    ]
    path = tmp_path / "out" / "junit.xml"
    write_junit(results, path)
    root = ET.parse(path).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    failure = cases["x.bad"].find("failure")
    assert failure is not None
    assert failure.get("message") == "first line"
    assert failure.text == "first line\nmore"
    skipped = cases["x.skip"].find("skipped")
    assert skipped is not None and skipped.get("message") == "why"
    assert cases["x.ok"].find("failure") is None


def test_mismatch_shows_expected_actual_diff_and_hint() -> None:
    with pytest.raises(CaseFailed) as caught:
        expect_equal(
            "the reply",
            wrappers_pb2.StringValue(value="a"),
            wrappers_pb2.StringValue(value="b"),
            "why",
        )
    text = str(caught.value)
    assert text.startswith("the reply: the frontend's message differs")
    assert "Likely cause: why" in text
    assert '-  value: "a"' in text and '+  value: "b"' in text


def test_selection_by_glob_and_proxy_flag() -> None:
    selection = Selection(patterns=["eventsourced.*"], proxy=False)
    assert selection.selects(_case("eventsourced.single-event"))
    assert not selection.selects(_case("valueentity.update"))
    assert not Selection(proxy=False).selects(_case("proxy.http.json", "proxy"))
    assert Selection().selects(_case("proxy.http.json", "proxy"))


def test_catalogue_names_are_unique_and_described() -> None:
    cases = all_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names))
    assert {c.kind for c in cases} == {"model", "proxy"}
    assert all(c.description and c.description != c.name for c in cases)
