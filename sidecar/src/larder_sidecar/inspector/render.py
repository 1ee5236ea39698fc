"""Output of `larder inspect`: aligned tables for people, JSON lines for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, TextIO

Output = Literal["table", "jsonl"]


def timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds")


def compact(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


class Printer:
    """Writes records either as JSON lines or as an aligned table with a header."""

    def __init__(self, out: TextIO, output: Output) -> None:
        self._out = out
        self.output: Output = output

    def line(self, text: str) -> None:
        self._out.write(text + "\n")

    def record(self, document: dict[str, Any]) -> None:
        """One JSON object on one line (jsonl output only)."""
        self.line(compact(document))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Columns padded to their widest cell; the last column is never padded."""
        widths = [
            max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)
        ]
        for row in (header, *rows):
            cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
            self.line("  ".join([*cells, row[-1]]).rstrip())

    def fields(self, pairs: Sequence[tuple[str, str]]) -> None:
        """`name  value` lines, names aligned."""
        width = max(len(name) for name, _ in pairs)
        for name, value in pairs:
            self.line(f"{name.ljust(width)}  {value}")
