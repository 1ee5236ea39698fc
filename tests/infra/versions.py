"""Every pinned version of the real test servers, in one place.

Change a version here and the next `python -m tests.infra provision` builds it
into a fresh cache entry; entries of other versions are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MavenArtifact:
    group: str
    artifact: str
    version: str

    @property
    def coordinates(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"


@dataclass(frozen=True)
class GoProgram:
    """A Go main package built from a module fetched through the Go module proxy."""

    module: str
    version: str
    package: str
    pins: tuple[tuple[str, str], ...] = ()
    """Versions of its dependencies, for a module without a go.mod of its own (whose
    imports would otherwise resolve to whatever is newest on the day of the build)."""


CASSANDRA = MavenArtifact("org.apache.cassandra", "cassandra-all", "5.0.9")
# The newest 4.x proven here end to end (format, start, produce/consume, restart);
# 4.4.0 also resolves but has not been run.
KAFKA = MavenArtifact("org.apache.kafka", "kafka_2.13", "4.3.1")
# The broker logs through slf4j 1.7 but its pom brings no binding; without this
# one every broker log line would be dropped.
KAFKA_LOG_BINDING = MavenArtifact("org.apache.logging.log4j", "log4j-slf4j-impl", "2.25.4")


@dataclass(frozen=True)
class KubernetesRelease:
    version: str
    # k8s.io/kubernetes replaces its staging modules (k8s.io/api, k8s.io/client-go,
    # ...) with directories of its repository; each is published as v0.<minor>.<patch>.
    staging_version: str
    programs: tuple[str, ...] = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


KUBERNETES = KubernetesRelease("v1.34.4", "v0.34.4")

ETCD = GoProgram("go.etcd.io/etcd/server/v3", "v3.6.16", "go.etcd.io/etcd/server/v3/etcdmain")
HELM = GoProgram("helm.sh/helm/v3", "v3.19.5", "helm.sh/helm/v3/cmd/helm")
# A gRPC client that knows nothing of our protos: it learns them by reflection.
GRPCURL = GoProgram(
    "github.com/fullstorydev/grpcurl", "v1.9.3", "github.com/fullstorydev/grpcurl/cmd/grpcurl"
)

# HTTP/2 conformance cases (RFC 7540/9113, RFC 7541) run against the public port.
H2SPEC = GoProgram(
    "github.com/summerwind/h2spec",
    "v2.2.1+incompatible",
    "github.com/summerwind/h2spec/cmd/h2spec",
    pins=(
        ("github.com/fatih/color", "v1.19.0"),
        ("github.com/spf13/cobra", "v1.10.2"),
        ("golang.org/x/net", "v0.63.0"),
    ),
)

# The official gRPC interop test client (grpc-go's), run against the sidecar's public
# port. Its module needs Go 1.25 (the toolchain raises the wrapper's go line to it).
GRPC_INTEROP_CLIENT = GoProgram(
    "google.golang.org/grpc", "v1.83.2", "google.golang.org/grpc/interop/client"
)

# A gRPC load generator on grpc-go: the third-language client of the shopping-cart sample
# (the benchmarks build the same version with `go install`, bench/tools.py).
GHZ = GoProgram("github.com/bojand/ghz", "v0.121.0", "github.com/bojand/ghz/cmd/ghz")

GO_MIN_VERSION = "1.24.0"
