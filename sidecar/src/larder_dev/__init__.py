"""`larder`, the developer command line: `larder dev` runs a user function and a sidecar
on one machine.

It talks to the sidecar only as a process (its command, environment, output) and over
the network (readiness, gRPC reflection); it imports nothing of `larder_sidecar`
(`.importlinter` says so).
"""

from larder_dev.cli import main

__all__ = ["main"]
