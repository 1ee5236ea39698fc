"""The results: a readable text report and JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from larder_tck.registry import Case

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Result:
    case: Case
    status: Status
    detail: str = ""
    seconds: float = 0.0


def summary(results: list[Result]) -> str:
    counts = Counter(r.status for r in results)
    return f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"


def write_text(results: list[Result], out: TextIO, *, verbose: bool = False) -> None:
    marks = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}
    for r in results:
        line = f"{marks[r.status]}  {r.case.name}  ({r.case.kind}) {r.case.description}"
        if r.status == "skipped":
            line += f" [{r.detail}]"
        out.write(line + "\n")
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        out.write(f"\n=== FAILED {r.case.name}: {r.case.description}\n{r.detail}\n")
    out.write(f"\n{summary(results)}\n")


def write_junit(results: list[Result], path: Path, suite: str = "larder-tck") -> None:
    counts = Counter(r.status for r in results)
    root = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(counts["failed"]),
        skipped=str(counts["skipped"]),
        errors="0",
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for r in results:
        element = ET.SubElement(
            root,
            "testcase",
            classname=f"larder_tck.{r.case.kind}.{r.case.name.split('.')[0]}",
            name=r.case.name,
            time=f"{r.seconds:.3f}",
        )
        if r.status == "failed":
            first = r.detail.splitlines()[0] if r.detail else "failed"
            failure = ET.SubElement(element, "failure", message=first)
            failure.text = r.detail
        elif r.status == "skipped":
            ET.SubElement(element, "skipped", message=r.detail)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
