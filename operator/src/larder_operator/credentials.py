"""A Journal's Cassandra login, read from the Secret its spec names."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from larder_operator.journals import CredentialsRef
from larder_operator.kube import Cluster, object_path


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


async def read_credentials(
    cluster: Cluster, namespace: str, ref: CredentialsRef
) -> Credentials | None:
    """The login, or None when the Secret or one of its keys is missing."""
    secret = await cluster.get(object_path("v1", "Secret", namespace, ref.secret_name))
    # `data` only: `stringData` is write-only and never comes back from the API server.
    data = (secret or {}).get("data") or {}
    if ref.username_key not in data or ref.password_key not in data:
        return None
    return Credentials(
        username=base64.b64decode(data[ref.username_key]).decode(),
        password=base64.b64decode(data[ref.password_key]).decode(),
    )


def missing_message(namespace: str, ref: CredentialsRef) -> str:
    return (
        f"Secret {ref.secret_name!r} with keys {ref.username_key!r} and {ref.password_key!r} "
        f"not found in namespace {namespace!r}; create it or fix spec.cassandra.credentialsSecret"
    )
