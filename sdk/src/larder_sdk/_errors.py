"""Exceptions raised by the SDK, by what the caller should do next.

    LarderError
    ├── DefinitionError   fix the component definition (raised at import/startup time)
    └── CommandFailed     raised by `ctx.fail(...)`; the command fails, its effects are discarded

`CommandFailed` is how a handler rejects a command on purpose; the client sees its
description verbatim. Any other exception escaping a handler also fails the command
(and rolls back what it emitted), but the client sees a description naming the
component, entity id, command and exception, and the SDK logs the traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class LarderError(Exception):
    """Base class of every exception the SDK raises on purpose."""


class DefinitionError(LarderError, TypeError):
    """A component definition is wrong; every problem found is listed at once."""

    def __init__(self, subject: str, problems: Sequence[str]) -> None:
        self.subject = subject
        self.problems = tuple(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{subject} has {count} {noun}:\n{lines}")


class CommandFailed(LarderError):
    """The handler failed the command on purpose; `description` goes to the client."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description
