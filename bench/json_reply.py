"""CPU cost of rendering one reply as JSON (`Transcoder.encode_reply`), the HTTP hot path.

Two replies of the test library service (`tests/unit/sidecar/http/protos`), most
fields left at their defaults, as replies usually are:

- `turkey`: a 4-field message with one field set (`GET /turkeys/{id}`);
- `books`: a list of 20 books, each with a nested author, a map and some fields set
  (`POST /com.example.Library/SearchBooks`, the whole message).

    .venv/bin/python bench/json_reply.py [--number 2000] [--repeat 7]

Prints the best of `--repeat` runs, in microseconds per reply.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message_factory import GetMessageClass
from larder_sidecar.http.routes import build_route_table
from larder_sidecar.http.transcoding import Transcoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.unit.sidecar.http.protos import (  # the repository root, just added
    compile_descriptor_set,
    method_models,
)

BOOK = {
    "id": "b1",
    "pages": "300",
    "author": {"displayName": "Ann"},
    "labels": {"shelf": "top"},
    "rating": 4.5,
}
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "turkey": ("GET", "/turkeys/t1", {"turkeyId": "t1"}),
    "books": (
        "POST",
        "/com.example.Library/SearchBooks",
        {"books": [BOOK] * 20, "curator": {"name": "c"}},
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        table = build_route_table(method_models(compile_descriptor_set(Path(tmp))))
    for name, (http_method, path, document) in CASES.items():
        route, _ = table.match(http_method, path)
        reply = GetMessageClass(route.method.output)()
        json_format.ParseDict(document, reply)
        payload = reply.SerializeToString()
        transcoder = Transcoder(route)
        transcoder.encode_reply(payload)  # warm any per-route caches

        def render(t: Transcoder = transcoder, p: bytes = payload) -> None:
            t.encode_reply(p)

        best = min(timeit.repeat(render, number=args.number, repeat=args.repeat))
        print(f"{name}: {best / args.number * 1e6:.1f} µs per reply")


if __name__ == "__main__":
    main()
