"""The keys and certificates a private control plane needs, made with the openssl CLI.

Like controller-runtime's envtest: one self-signed CA signs the API server's
serving certificate and an admin client certificate in `system:masters`; a
separate key pair signs and verifies service-account tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.infra.procs import Step, run_step

_OPENSSL_TIMEOUT_S = 60.0
_DAYS = "30"
_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


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


def _openssl(step: Step, name: str, *args: str, cwd: Path) -> None:
    run_step(step, f"openssl {name}", ["openssl", *args], timeout=_OPENSSL_TIMEOUT_S, cwd=cwd)


def _signed(step: Step, d: Path, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt", d / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(step, f"req {name}", "req", "-new", *_EC_KEY, "-keyout", str(key),
             "-out", str(csr), "-subj", subject, cwd=d)  # fmt: skip
    _openssl(step, f"sign {name}", "x509", "-req", "-in", str(csr), "-CA", "ca.crt",
             "-CAkey", "ca.key", "-CAcreateserial", "-days", _DAYS, "-out", str(cert),
             "-extfile", str(ext), cwd=d)  # fmt: skip
    return cert, key


def make_certs(directory: Path) -> ControlPlaneCerts:
    step = Step("kube", "certificates")
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    _openssl(step, "req ca", "req", "-x509", *_EC_KEY, "-keyout", "ca.key", "-out", "ca.crt",
             "-days", _DAYS, "-subj", "/CN=larder-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=d)  # fmt: skip
    serving = _signed(
        step,
        d,
        "apiserver",
        "/CN=kube-apiserver",
        "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
    )
    admin = _signed(
        step,
        d,
        "admin",
        "/O=system:masters/CN=admin",
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
    )
    _openssl(step, "genpkey sa", "genpkey", "-algorithm", "RSA",
             "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=d)  # fmt: skip
    _openssl(step, "pubkey sa", "pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    return ControlPlaneCerts(
        ca_cert=d / "ca.crt",
        ca_key=d / "ca.key",
        serving_cert=serving[0],
        serving_key=serving[1],
        admin_cert=admin[0],
        admin_key=admin[1],
        service_account_key=d / "sa.key",
        service_account_pub=d / "sa.pub",
    )
