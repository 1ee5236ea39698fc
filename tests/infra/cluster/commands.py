"""Running host commands (ip, buildah) from async code: always with a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

COMMAND_TIMEOUT_S = 60.0


class CommandError(RuntimeError):
    """A host command failed; the message holds the command line and its output."""

    def __init__(self, argv: Sequence[str], returncode: int | None, output: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        state = "timed out" if returncode is None else f"exited with {returncode}"
        super().__init__(f"`{' '.join(argv)}` {state}: {output.strip()[-2000:]}")


async def run(argv: Sequence[str], *, limit_s: float = COMMAND_TIMEOUT_S) -> str:
    """Run a command to completion and return its stdout; raise CommandError on failure."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise CommandError(argv, None, "") from None
    except asyncio.CancelledError:
        # A cancelled caller (a pod deleted mid-start) must not leave the command running.
        if process.returncode is None:
            process.kill()
            await asyncio.shield(process.wait())
        raise
    if process.returncode != 0:
        raise CommandError(argv, process.returncode, err.decode(errors="replace"))
    return out.decode(errors="replace")


async def run_quietly(argv: Sequence[str], *, limit_s: float = COMMAND_TIMEOUT_S) -> bool:
    """Run a cleanup command whose failure only means there was nothing to clean."""
    try:
        await run(argv, limit_s=limit_s)
    except CommandError:
        return False
    return True
