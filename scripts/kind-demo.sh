#!/usr/bin/env bash
# Larder on a local kind cluster: build the image, load it into kind, install the chart,
# run the shopping-cart example and show its status and the sidecar's logs.
#
# Needs docker, kind, kubectl and helm on PATH. The user function's image is taken from
# USER_IMAGE (default larder-shopping-cart:dev) and must exist locally; it is loaded too.
#   scripts/kind-demo.sh            # create (or reuse) the cluster and run the demo
#   CLUSTER=dev scripts/kind-demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-larder}
IMAGE=${IMAGE:-larder:dev}
USER_IMAGE=${USER_IMAGE:-larder-shopping-cart:dev}
NAMESPACE=${NAMESPACE:-larder-system}

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-demo: $tool is not on PATH" >&2; exit 2; }
done
if ! docker image inspect "$USER_IMAGE" >/dev/null 2>&1; then
  echo "kind-demo: user function image $USER_IMAGE not found; build it or set USER_IMAGE" >&2
  exit 2
fi

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER"
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

docker build -t "$IMAGE" .
kind load docker-image --name "$CLUSTER" "$IMAGE" "$USER_IMAGE"

# The image was loaded, not pushed: never pull it.
helm upgrade --install larder charts/larder \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy=Never --set sidecar.pullPolicy=Never \
  --wait --timeout 3m

# The function's own image was loaded too.
sed "s|image: larder-shopping-cart:dev|image: $USER_IMAGE|" operator/examples/shopping-cart.yaml \
  | kubectl apply -f -
kubectl wait statefulfunction/shopping-cart --for=condition=Ready --timeout=3m \
  || kubectl describe statefulfunction/shopping-cart
kubectl get statefulfunctions,journals
kubectl logs deployment/shopping-cart -c larder-sidecar --tail=50

cat <<MSG

Try it:
  kubectl port-forward service/shopping-cart 9000:9000 &
  curl -s localhost:9000/com.example.shoppingcart.ShoppingCartService/GetCart -d '{"cart_id": "c1"}'
Clean up:
  kind delete cluster --name $CLUSTER
MSG
