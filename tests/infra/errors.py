"""Errors of the test infrastructure, by what the caller should do next.

InfraError
├── ProvisionError   obtaining or building a server failed: check the registry, the
│                    toolchain or the named step, then run `provision` again
└── ServerError      a provisioned server did not start, become ready or stop:
                     read the log lines in the message and the kept log files
"""

from __future__ import annotations


class InfraError(Exception):
    """Base of every error raised by tests.infra."""


class ProvisionError(InfraError):
    def __init__(self, component: str, version: str, step: str, detail: str) -> None:
        self.component = component
        self.version = version
        self.step = step
        super().__init__(f"provisioning {component} {version} failed at step '{step}': {detail}")


class ServerError(InfraError):
    def __init__(self, server: str, what: str, log_tail: str = "") -> None:
        self.server = server
        message = f"{server}: {what}"
        if log_tail:
            message += f"\n--- last log lines of {server} ---\n{log_tail}"
        super().__init__(message)
