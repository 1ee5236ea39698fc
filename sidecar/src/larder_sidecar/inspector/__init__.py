"""`larder inspect`: read-only views of a journal's entities, for people and scripts.

Run as `python -m larder_sidecar.inspector` (which `larder inspect` does); the
journal reading itself is `larder_sidecar.journal.reading` and its implementations.
"""

from .cli import main, run

__all__ = ["main", "run"]
