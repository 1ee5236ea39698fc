"""Resolving a Java server and its runtime dependencies from Maven Central."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from tests.infra.errors import ProvisionError
from tests.infra.procs import Step, run_step
from tests.infra.versions import MavenArtifact

_RESOLVE_TIMEOUT_S = 1800.0


def render_pom(artifact: MavenArtifact, extras: Sequence[MavenArtifact] = ()) -> str:
    """A throwaway project whose dependencies are the server artifact and `extras`."""
    dependencies = "".join(
        f"""
    <dependency>
      <groupId>{escape(a.group)}</groupId>
      <artifactId>{escape(a.artifact)}</artifactId>
      <version>{escape(a.version)}</version>
    </dependency>"""
        for a in (artifact, *extras)
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.larder.testinfra</groupId>
  <artifactId>{escape(artifact.artifact)}-classpath</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>{dependencies}
  </dependencies>
</project>
"""


def resolve_classpath(
    component: str, artifact: MavenArtifact, dest: Path, extras: Sequence[MavenArtifact] = ()
) -> Path:
    """Copy the artifact and its runtime dependencies into `dest/lib`; return that directory."""
    step = Step(component, artifact.version)
    (dest / "pom.xml").write_text(render_pom(artifact, extras))
    lib = dest / "lib"
    run_step(
        step,
        f"maven resolve {artifact.coordinates}",
        [
            "mvn",
            "-B",
            "-q",
            "-Dstyle.color=never",  # plain text in error messages
            "-f",
            str(dest / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={lib}",
            "-DincludeScope=runtime",
        ],
        timeout=_RESOLVE_TIMEOUT_S,
    )
    jars = sorted(lib.glob("*.jar"))
    if not any(jar.name.startswith(f"{artifact.artifact}-{artifact.version}") for jar in jars):
        raise ProvisionError(
            component,
            artifact.version,
            "maven resolve",
            f"{artifact.coordinates} is not among the jars copied into {lib}",
        )
    return lib


def classpath(lib: Path) -> str:
    return ":".join(str(jar) for jar in sorted(lib.glob("*.jar")))
