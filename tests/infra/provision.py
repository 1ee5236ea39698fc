"""Obtaining every real test server into the cache: what to build, and how."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.infra import cache, gobuild, maven, npm_client, versions
from tests.infra.errors import ProvisionError
from tests.infra.procs import Step


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    build: Callable[[Path], None]
    # Everything besides the version that shapes what gets built (extra
    # artifacts, wrapper sources, build flags): a change makes a new entry.
    recipe: str

    @property
    def entry(self) -> Path:
        return cache.entry_dir(self.name, cache.entry_key(self.version, self.recipe))


@dataclass(frozen=True)
class Provisioned:
    name: str
    version: str
    path: Path
    cached: bool
    seconds: float


def _maven_component(
    name: str, artifact: versions.MavenArtifact, *extras: versions.MavenArtifact
) -> Component:
    def build(staging: Path) -> None:
        maven.resolve_classpath(name, artifact, staging, extras)

    return Component(name, artifact.version, build, maven.render_pom(artifact, extras))


def _kubernetes_builder(component: str, commands: tuple[str, ...]) -> Callable[[Path], None]:
    """Build `k8s.io/kubernetes/cmd/<command>` for each of `commands` at the pinned release."""

    def build(staging: Path) -> None:
        release = versions.KUBERNETES
        step = Step(component, release.version)
        upstream = gobuild.module_go_mod(step, "k8s.io/kubernetes", release.version, staging)
        staging_mods = gobuild.staging_modules(upstream)
        if not staging_mods:
            raise ProvisionError(
                step.component,
                step.version,
                "read k8s.io/kubernetes go.mod",
                "found no ./staging replacements; the wrapper module cannot pin k8s.io/* "
                "releases",
            )
        src = staging / "src"
        src.mkdir()
        (src / "go.mod").write_text(
            gobuild.render_go_mod(
                f"larder.dev/testinfra/{component}",
                versions.GO_MIN_VERSION,
                [("k8s.io/kubernetes", release.version)],
                [(mod, release.staging_version) for mod in staging_mods],
            )
        )
        gobuild.go_build(
            step,
            src,
            [f"k8s.io/kubernetes/cmd/{c}" for c in commands],
            staging / "bin",
            _KUBERNETES_LDFLAGS,
        )

    return build


_ETCD_MAIN = """// The etcd server binary: etcd's own main package lives in a module that is not
// meant to be required, so this wrapper calls the server module's entry point.
package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
\tetcdmain.Main(os.Args)
}
"""


def _build_etcd(staging: Path) -> None:
    program = versions.ETCD
    step = Step("etcd", program.version)
    src = staging / "src"
    (src / "etcd").mkdir(parents=True)
    (src / "go.mod").write_text(
        gobuild.render_go_mod(
            "larder.dev/testinfra/etcd",
            versions.GO_MIN_VERSION,
            [(program.module, program.version)],
        )
    )
    (src / "etcd" / "main.go").write_text(_ETCD_MAIN)
    gobuild.go_build(step, src, ["./etcd"], staging / "bin")


def _go_program_builder(
    name: str, program: versions.GoProgram, ldflags: tuple[str, ...] = ()
) -> Callable[[Path], None]:
    """Build one main package of a module into `bin/`, from a wrapper module."""

    def build(staging: Path) -> None:
        step = Step(name, program.version)
        src = staging / "src"
        src.mkdir()
        (src / "go.mod").write_text(
            gobuild.render_go_mod(
                f"larder.dev/testinfra/{name}",
                versions.GO_MIN_VERSION,
                [(program.module, program.version), *program.pins],
            )
        )
        gobuild.go_build(step, src, [program.package], staging / "bin", ldflags)

    return build


def _npm_client_builder(name: str, version: str, package_dir: Path) -> Callable[[Path], None]:
    def build(staging: Path) -> None:
        npm_client.install(name, version, package_dir, staging)

    return build


# The @grpc/grpc-js client of the shopping-cart sample keeps its package.json and lock
# next to its script; the entry holds only node_modules (the test puts it on NODE_PATH).
GRPC_JS_CLIENT_DIR = (
    Path(__file__).resolve().parents[1] / "e2e" / "samples" / "grpc_js_client"
)
GRPC_JS_CLIENT_VERSION = "grpc-js-1.14.7"

_GO_FLAGS = f"go {versions.GO_MIN_VERSION} CGO_ENABLED=0 -mod=mod -trimpath"
_GO_RECIPE = f"{_GO_FLAGS} {gobuild.ldflags_arg()}"
_KUBERNETES_LDFLAGS = gobuild.kubernetes_version_ldflags(versions.KUBERNETES.version)
# The Kubernetes entries' recipe names the exact linker flags, so a change of
# them (as when the version variables were added) makes new entries.
_KUBERNETES_RECIPE = f"{_GO_FLAGS} {gobuild.ldflags_arg(_KUBERNETES_LDFLAGS)} {versions.KUBERNETES}"
# grpcurl's releases set its version at link time; without it `-version` says "dev build".
_GRPCURL_LDFLAGS = ("-X", f"main.version={versions.GRPCURL.version}")

COMPONENTS: dict[str, Component] = {
    "cassandra": _maven_component("cassandra", versions.CASSANDRA),
    "kafka": _maven_component("kafka", versions.KAFKA, versions.KAFKA_LOG_BINDING),
    "etcd": Component("etcd", versions.ETCD.version, _build_etcd, _GO_RECIPE + _ETCD_MAIN),
    "kube": Component(
        "kube",
        versions.KUBERNETES.version,
        _kubernetes_builder("kube", versions.KUBERNETES.programs),
        _KUBERNETES_RECIPE,
    ),
    # The tests drive the control plane with kubectl, which no machine is assumed to
    # have; an entry of its own, so adding it did not invalidate the server binaries.
    "kubectl": Component(
        "kubectl",
        versions.KUBERNETES.version,
        _kubernetes_builder("kubectl", ("kubectl",)),
        f"{_KUBERNETES_RECIPE} kubectl",
    ),
    "helm": Component(
        "helm", versions.HELM.version, _go_program_builder("helm", versions.HELM), _GO_RECIPE
    ),
    "grpcurl": Component(
        "grpcurl",
        versions.GRPCURL.version,
        _go_program_builder("grpcurl", versions.GRPCURL, _GRPCURL_LDFLAGS),
        f"{_GO_FLAGS} {gobuild.ldflags_arg(_GRPCURL_LDFLAGS)}",
    ),
    "h2spec": Component(
        "h2spec",
        versions.H2SPEC.version,
        _go_program_builder("h2spec", versions.H2SPEC),
        f"{_GO_RECIPE} {versions.H2SPEC.pins}",
    ),
    "grpc-interop-client": Component(
        "grpc-interop-client",
        versions.GRPC_INTEROP_CLIENT.version,
        _go_program_builder("grpc-interop-client", versions.GRPC_INTEROP_CLIENT),
        _GO_RECIPE,
    ),
    "ghz": Component("ghz", versions.GHZ.version, _go_program_builder("ghz", versions.GHZ),
                     _GO_RECIPE),
    "grpc-js-client": Component(
        "grpc-js-client",
        GRPC_JS_CLIENT_VERSION,
        _npm_client_builder("grpc-js-client", GRPC_JS_CLIENT_VERSION, GRPC_JS_CLIENT_DIR),
        npm_client.recipe(GRPC_JS_CLIENT_DIR),
    ),
}

# What a user names on the command line -> the cache components it needs.
GROUPS: dict[str, tuple[str, ...]] = {
    "cassandra": ("cassandra",),
    "kafka": ("kafka",),
    "kube": ("etcd", "kube", "kubectl"),
    "helm": ("helm",),
    "grpcurl": ("grpcurl",),
    "h2spec": ("h2spec",),
    "grpc-interop": ("grpc-interop-client",),
    "ghz": ("ghz",),
    "grpc-js": ("grpc-js-client",),
}


def provision(name: str) -> Provisioned:
    component = COMPONENTS[name]
    started = time.monotonic()
    cached = cache.ensure_entry(component.entry, component.build)
    return Provisioned(name, component.version, component.entry, cached, time.monotonic() - started)


def installed(name: str) -> Path:
    """The cache entry of a component, provisioning it first if needed."""
    return provision(name).path
