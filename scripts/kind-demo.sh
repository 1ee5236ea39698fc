#!/usr/bin/env bash
# Larder on a local kind cluster: build the images, load them into kind, install the
# chart, run the shopping-cart example and show its status and the sidecar's logs.
#
#   scripts/kind-demo.sh                      # create (or reuse) kind cluster "larder"
#   CLUSTER=dev scripts/kind-demo.sh
#   scripts/kind-demo.sh --no-kind --context my-cluster   # an existing cluster instead
#   scripts/kind-demo.sh --print              # only print every command
#   scripts/kind-demo.sh --no-kind --server-dry-run       # applies with --dry-run=server
#
# Polite: never changes the current context of your kubeconfig. With kind the cluster's
# credentials go to a kubeconfig of its own (KIND_KUBECONFIG, default
# ~/.cache/larder/kind-$CLUSTER.kubeconfig) and every kubectl/helm call names it and the
# context kind-$CLUSTER; with --no-kind they use KUBECONFIG and --context (or your current
# context, which is then only read). Idempotent: run it again to rebuild and re-apply.
#
# Settings (environment):
#   CLUSTER         kind cluster name (larder)
#   IMAGE           the Larder image, operator and sidecar (larder:dev), built from ./Dockerfile
#   USER_IMAGE      the function's image; unset: the shopping-cart sample is built as
#                   shopping-cart:dev (samples/shopping-cart/Dockerfile); set: it must exist
#   NAMESPACE       the operator's namespace (larder-system)
#   DEMO_NAMESPACE  the example's namespace (default)
#   KIND=skip       same as --no-kind: the images are not loaded into kind, so the cluster
#                   must be able to pull IMAGE and USER_IMAGE (push them somewhere first)
#   WAIT_TIMEOUT    how long to wait for the operator and the function (3m)
#   DOCKER, KIND, KUBECTL, HELM   the tools (docker, kind, kubectl, helm)
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

CLUSTER=${CLUSTER:-larder}
IMAGE=${IMAGE:-larder:dev}
BUILD_USER_IMAGE=no
if [ -z "${USER_IMAGE:-}" ]; then
  USER_IMAGE=shopping-cart:dev
  BUILD_USER_IMAGE=yes
fi
NAMESPACE=${NAMESPACE:-larder-system}
DEMO_NAMESPACE=${DEMO_NAMESPACE:-default}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-3m}
DOCKER=${DOCKER:-docker}
KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}
CONTEXT=""
MODE=run # run | print | server-dry-run

while [ $# -gt 0 ]; do
  case "$1" in
    --no-kind) KIND=skip ;;
    --context) CONTEXT=${2:?kind-demo: --context needs a context name}; shift ;;
    --context=*) CONTEXT=${1#*=} ;;
    --print | --dry-run) MODE=print ;;
    --server-dry-run) MODE=server-dry-run ;;
    -h | --help) usage; exit 0 ;;
    *) echo "kind-demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

kube_args=()
helm_args=()
if [ "$KIND" != skip ]; then
  if [ -n "$CONTEXT" ]; then
    echo "kind-demo: --context is for --no-kind; with kind the context is kind-$CLUSTER" >&2
    exit 2
  fi
  if [ "$MODE" = server-dry-run ]; then
    echo "kind-demo: --server-dry-run needs an existing cluster: add --no-kind" >&2
    exit 2
  fi
  KIND_KUBECONFIG=${KIND_KUBECONFIG:-${XDG_CACHE_HOME:-$HOME/.cache}/larder/kind-$CLUSTER.kubeconfig}
  CONTEXT=kind-$CLUSTER
  kube_args+=(--kubeconfig "$KIND_KUBECONFIG")
  helm_args+=(--kubeconfig "$KIND_KUBECONFIG")
fi
if [ -n "$CONTEXT" ]; then
  kube_args+=(--context "$CONTEXT")
  helm_args+=(--kube-context "$CONTEXT")
fi

# Applies are real, server-side dry runs, or not made at all.
apply_args=()
helm_dry_run=()
if [ "$MODE" = server-dry-run ]; then
  apply_args+=(--dry-run=server)
  helm_dry_run+=(--dry-run=server)
fi

# Print a command as it would be typed; run it when the mode says so.
#   run     always runs except in --print
#   observe runs only for real (waits and reads of what the applies made)
#   build   runs only for real (docker, kind)
say() { printf '+'; printf ' %q' "$@"; printf '\n'; }
run() { say "$@"; [ "$MODE" = print ] || "$@"; }
real() { say "$@"; [ "$MODE" != run ] || "$@"; }

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "kind-demo: $tool is not on PATH" >&2; exit 2; }
  done
}
case "$MODE" in
  run)
    need "$KUBECTL" "$HELM"
    if [ "$KIND" != skip ]; then need "$DOCKER" "$KIND"; fi
    ;;
  server-dry-run) need "$KUBECTL" "$HELM" ;;
esac

# 1. The cluster and the images (kind only).
pull_policy=IfNotPresent
if [ "$KIND" != skip ]; then
  # The images are loaded into the nodes, not pushed: never pull them.
  pull_policy=Never
  if [ "$MODE" = run ]; then
    mkdir -p "$(dirname "$KIND_KUBECONFIG")"
    if "$KIND" get clusters | grep -qx "$CLUSTER"; then
      real "$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KIND_KUBECONFIG"
    else
      real "$KIND" create cluster --name "$CLUSTER" --kubeconfig "$KIND_KUBECONFIG"
    fi
  else
    say "$KIND" create cluster --name "$CLUSTER" --kubeconfig "$KIND_KUBECONFIG"
  fi
  real "$DOCKER" build -t "$IMAGE" .
  if [ "$BUILD_USER_IMAGE" = yes ]; then
    real "$DOCKER" build -f samples/shopping-cart/Dockerfile -t "$USER_IMAGE" .
  elif [ "$MODE" = run ] && ! "$DOCKER" image inspect "$USER_IMAGE" >/dev/null 2>&1; then
    echo "kind-demo: USER_IMAGE $USER_IMAGE not found locally; build it first" >&2
    exit 2
  fi
  real "$KIND" load docker-image --name "$CLUSTER" "$IMAGE" "$USER_IMAGE"
fi

# 2. The CRDs and the operator. --wait is for real runs: a dry run creates nothing to wait for.
helm_wait=(--wait --timeout "$WAIT_TIMEOUT")
if [ "$MODE" = server-dry-run ]; then helm_wait=(); fi
run "$HELM" "${helm_args[@]}" upgrade --install larder charts/larder \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy="$pull_policy" --set sidecar.pullPolicy="$pull_policy" \
  "${helm_wait[@]}" "${helm_dry_run[@]}"

# 3. The example: a Journal and a StatefulFunction running USER_IMAGE.
manifest=$(sed "s|image: shopping-cart:dev|image: $USER_IMAGE|; s|imagePullPolicy: IfNotPresent|imagePullPolicy: $pull_policy|" \
  operator/examples/shopping-cart.yaml)
say "$KUBECTL" "${kube_args[@]}" apply --namespace "$DEMO_NAMESPACE" "${apply_args[@]}" -f -
echo "  (stdin: operator/examples/shopping-cart.yaml with image: $USER_IMAGE, imagePullPolicy: $pull_policy)"
if [ "$MODE" != print ]; then
  "$KUBECTL" "${kube_args[@]}" apply --namespace "$DEMO_NAMESPACE" "${apply_args[@]}" -f - <<<"$manifest"
fi

# 4. Watch it come up. A function that is not Ready in time is described, not fatal: the
#    conditions and Events say why, and the rest of the demo still prints.
kn=("$KUBECTL" "${kube_args[@]}" --namespace "$DEMO_NAMESPACE")
if ! real "${kn[@]}" wait statefulfunction/shopping-cart --for=condition=Ready --timeout="$WAIT_TIMEOUT"; then
  echo "kind-demo: shopping-cart is not Ready after $WAIT_TIMEOUT; what the operator says:" >&2
  real "${kn[@]}" describe statefulfunction/shopping-cart || true
fi
real "${kn[@]}" get statefulfunctions,journals || true
real "${kn[@]}" logs deployment/shopping-cart -c larder-sidecar --tail=50 \
  || echo "kind-demo: no sidecar logs yet (no pod is running); see the describe above" >&2

k=$(printf ' %q' "$KUBECTL" "${kube_args[@]}" --namespace "$DEMO_NAMESPACE")
if [ "$KIND" != skip ]; then
  cleanup="$KIND delete cluster --name $CLUSTER --kubeconfig $KIND_KUBECONFIG"
else
  cleanup="${k# } delete -f operator/examples/shopping-cart.yaml; $HELM$(printf ' %q' "${helm_args[@]}") uninstall larder --namespace $NAMESPACE"
fi
cat <<MSG

Try it:
 ${k} port-forward service/shopping-cart 9000:9000 &
  curl -X POST -H 'Content-Type: application/json' localhost:9000/cart/alice/items/add -d '{"product_id": "akka-tshirt", "name": "Akka T-Shirt", "quantity": 3}'
  curl localhost:9000/carts/alice
  curl -H 'Content-Type: application/json' localhost:9000/com.example.shoppingcart.ShoppingCartService/GetCart -d '{"user_id": "alice"}'
Clean up:
  ${cleanup}
MSG
