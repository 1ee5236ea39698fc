"""The keys and certificates a private control plane needs, made with the openssl CLI.

Like controller-runtime's envtest: one self-signed CA signs the API server's
serving certificate and an admin client certificate in `system:masters`; a
separate RSA key pair signs and verifies service-account tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.infra.procs import Step, run_step

_OPENSSL_TIMEOUT_S = 60.0
_DAYS = 30
# EC keys: generated in milliseconds, unlike RSA ones.
_NEW_EC_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
_STEP = Step("kube", "certificates")


@dataclass(frozen=True)
class ControlPlaneCerts:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_pub: Path


def _openssl(directory: Path, command: str, *extra: str) -> None:
    """Run `openssl <command> <extra...>` in `directory`; every file name in
    `command` is relative to it, so splitting on spaces is safe."""
    argv = ["openssl", *command.split(), *extra]
    run_step(_STEP, f"openssl {command}", argv, timeout=_OPENSSL_TIMEOUT_S, cwd=directory)


def _signed(directory: Path, name: str, subject: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        directory, f"req -new {_NEW_EC_KEY} -keyout {name}.key -out {name}.csr", "-subj", subject
    )
    _openssl(
        directory,
        f"x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days {_DAYS} "
        f"-out {name}.crt -extfile {name}.ext",
    )


def make_certs(directory: Path) -> ControlPlaneCerts:
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        d,
        f"req -x509 {_NEW_EC_KEY} -keyout ca.key -out ca.crt -days {_DAYS}",
        "-subj",
        "/CN=larder-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )
    _signed(
        d,
        "apiserver",
        "/CN=kube-apiserver",
        "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
    )
    _signed(
        d,
        "admin",
        "/O=system:masters/CN=admin",
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
    )
    _openssl(d, "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key")
    _openssl(d, "pkey -in sa.key -pubout -out sa.pub")
    return ControlPlaneCerts(
        ca_cert=d / "ca.crt",
        ca_key=d / "ca.key",
        serving_cert=d / "apiserver.crt",
        serving_key=d / "apiserver.key",
        admin_cert=d / "admin.crt",
        admin_key=d / "admin.key",
        service_account_key=d / "sa.key",
        service_account_pub=d / "sa.pub",
    )
