"""Real test servers (Cassandra, Kafka, a Kubernetes control plane, helm) provisioned
from package registries and started by the session fixtures in `tests.infra.fixtures`.

Versions: `tests.infra.versions`. Command line: `python -m tests.infra --help`.
"""
