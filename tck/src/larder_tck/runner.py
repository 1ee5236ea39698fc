"""Running the selected cases against one frontend and collecting results."""

from __future__ import annotations

import asyncio
import fnmatch
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import grpc.aio
from larder_tck import model as model_module
from larder_tck.context import ModelContext
from larder_tck.discover import discover, implemented_types
from larder_tck.expect import CaseFailed, FrontendUnreachable
from larder_tck.registry import COMPONENT_LABELS, DISCOVERY, Case, all_cases
from larder_tck.report import Result

CASE_TIMEOUT = 60.0

ProxyStarter = Callable[[str], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True)
class Selection:
    patterns: Sequence[str] = ()
    """fnmatch patterns over case names; empty selects every case."""
    proxy: bool = True

    def selects(self, case: Case) -> bool:
        if case.kind == "proxy" and not self.proxy:
            return False
        return not self.patterns or any(fnmatch.fnmatch(case.name, p) for p in self.patterns)


async def _run_one(case: Case, context: Any) -> Result:
    started = time.monotonic()
    try:
        await asyncio.wait_for(case.run(context), CASE_TIMEOUT)
    except CaseFailed as e:
        return Result(case, "failed", str(e), time.monotonic() - started)
    except TimeoutError:
        detail = f"the case did not finish within {CASE_TIMEOUT:.0f}s"
        return Result(case, "failed", detail, time.monotonic() - started)
    except Exception as e:  # a frontend can break the TCK's expectations in any way
        detail = f"unexpected {type(e).__name__}: {e}\n{traceback.format_exc()}"
        return Result(case, "failed", detail, time.monotonic() - started)
    finally:
        closer = getattr(context, "close", None)
        if closer is not None:
            closer()
    return Result(case, "passed", "", time.monotonic() - started)


async def run(address: str, selection: Selection, start_proxy: ProxyStarter | None) -> list[Result]:
    """Discover what the frontend serves, then run every selected case (skipping the rest)."""
    # Compiling the model runs protoc in a subprocess: off the event loop.
    the_model = await asyncio.to_thread(model_module.load)
    cases = [c for c in all_cases() if selection.selects(c)]
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            spec = await discover(channel)
        except FrontendUnreachable as e:
            return [Result(c, "failed", f"discovery failed: {e}") for c in cases]
        types = implemented_types(spec) | {DISCOVERY}
        results: dict[str, Result] = {}
        runnable: list[Case] = []
        for case in cases:
            if case.component in types:
                runnable.append(case)
            else:
                reason = (
                    f"the frontend declares no {COMPONENT_LABELS[case.component]} model components"
                )
                results[case.name] = Result(case, "skipped", reason)
        for case in (c for c in runnable if c.kind == "model"):
            ctx = ModelContext(channel, the_model, spec)
            results[case.name] = await _run_one(case, ctx)
        proxy_cases = [c for c in runnable if c.kind == "proxy"]
        if proxy_cases:
            if start_proxy is None:
                raise ValueError("proxy cases were selected but no sidecar starter was given")
            try:
                async with start_proxy(address) as env:
                    for case in proxy_cases:
                        results[case.name] = await _run_one(case, env.case_context())
            except FrontendUnreachable as e:
                for case in proxy_cases:
                    if case.name not in results:
                        results[case.name] = Result(case, "failed", f"sidecar: {e}")
    return [results[c.name] for c in cases]
