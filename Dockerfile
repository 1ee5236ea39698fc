# One image for Larder's control and data planes:
#   larder-operator  the Kubernetes operator (the Helm chart runs it)
#   larder-sidecar   the sidecar the operator injects next to every user function
# BASE_IMAGE is shared by both stages so the image can be built on a locally made base.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Every third-party package comes from the locks, with its hash checked: the build tools
# (into the builder), and the runtime dependencies as wheels for the runtime stage, so
# that stage needs no compiler and no network, and installs exactly the lock.
COPY requirements/build.lock requirements/image.lock requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/build.lock \
 && pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements/image.lock
# Only the components the image ships; the protocol wheel's build hook generates the
# protobuf/gRPC code from protocol/proto, so the generated code is never copied in.
# No build isolation: the build tools are the locked ones installed above.
COPY protocol/ protocol/
COPY sidecar/ sidecar/
COPY operator/ operator/
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels \
      ./protocol ./sidecar ./operator

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="larder" \
      org.opencontainers.image.description="Larder operator and sidecar for stateful functions" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# A fixed numeric uid, so Kubernetes can verify runAsNonRoot without a runAsUser.
RUN groupadd --system --gid 10001 larder \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin larder
# Installed straight from the builder's wheels through a bind mount, so no wheel file
# ends up in a layer; with --no-index the only versions to be had are the locked ones.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels \
      larder-protocol==0.1.0 larder-sidecar==0.1.0 larder-operator==0.1.0
USER 10001:10001
# Sidecar ports: public (gRPC + HTTP/JSON), admin (health, metrics), internal (peers).
EXPOSE 9000 9603 9604
CMD ["larder-sidecar"]
