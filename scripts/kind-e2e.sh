#!/usr/bin/env bash
# End-to-end check of mcp-fleet on a real Kubernetes cluster (kind), on a machine
# with Docker, kind, kubectl, helm and curl:
#
#   1. create a kind cluster (kind-config.yaml), unless it exists;
#   2. build the image and load it into the cluster;
#   3. helm-install the chart (CRDs, operator, router) with a router token;
#   4. apply examples/k8s/time.yaml and wait until the MCPServer is Ready
#      (the operator's own MCP initialize through the Service answered);
#   5. call a tool through the server's Service (the bridge), then through the
#      router's Service, both with kubectl port-forward and a bearer token.
#
# Environment: CLUSTER (default mcp-fleet-e2e), NAMESPACE (mcp-fleet),
# KEEP_CLUSTER=1 keeps the cluster afterwards, SKIP_BUILD=1 reuses the image.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${CLUSTER:-mcp-fleet-e2e}"
NAMESPACE="${NAMESPACE:-mcp-fleet}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)"
IMAGE="mcp-fleet:${VERSION}"
RELEASE=mcp-fleet
SERVER_PORT=18080
ROUTER_PORT=18811
WORK="$(mktemp -d)"
PIDS=()

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'kind-e2e: %s\n' "$*" >&2; exit 1; }

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

on_failure() {
  printf '\nkind-e2e: FAILED; state of the namespace:\n' >&2
  kubectl get mcpservers,deployments,pods,services -n "$NAMESPACE" -o wide >&2 || true
  kubectl describe mcpservers -n "$NAMESPACE" >&2 || true
  kubectl logs -n "$NAMESPACE" deployment/"$RELEASE"-operator --tail=100 >&2 || true
}
trap on_failure ERR

for tool in docker kind kubectl helm curl; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

# One MCP exchange over streamable HTTP with curl: initialize, initialized,
# then tools/call; prints the call's answer (an SSE 'data:' line or JSON).
mcp_call() {
  local url="$1" token="$2" tool="$3" args="$4" auth=() sid
  [[ -n "$token" ]] && auth=(-H "Authorization: Bearer $token")
  local common=(-sS --fail-with-body -H 'Content-Type: application/json'
                -H 'Accept: application/json, text/event-stream' "${auth[@]}")
  curl "${common[@]}" -D "$WORK/headers" -o "$WORK/init" "$url" \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"kind-e2e","version":"1"}}}'
  sid="$(tr -d '\r' <"$WORK/headers" | awk 'tolower($1)=="mcp-session-id:" {print $2}')"
  [[ -n "$sid" ]] || die "no Mcp-Session-Id from $url: $(cat "$WORK/init")"
  local session=(-H "Mcp-Session-Id: $sid" -H 'MCP-Protocol-Version: 2025-06-18')
  curl "${common[@]}" "${session[@]}" -o /dev/null "$url" \
    -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
  curl "${common[@]}" "${session[@]}" "$url" \
    -d "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"$tool\",\"arguments\":$args}}"
  curl -sS "${auth[@]}" "${session[@]}" -X DELETE -o /dev/null "$url" || true
}

port_forward() {
  local target="$1" ports="$2" port="${2%%:*}"
  kubectl port-forward -n "$NAMESPACE" "$target" "$ports" >"$WORK/pf-$port.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
    sleep 0.2
  done
  die "port-forward to $target did not come up: $(cat "$WORK/pf-$port.log")"
}

log "cluster $CLUSTER"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "build $IMAGE"
  docker build -t "$IMAGE" "$ROOT"
fi
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "helm install $RELEASE into $NAMESPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
TOKEN="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
kubectl create secret generic "$RELEASE-e2e-token" -n "$NAMESPACE" \
  --from-literal=token="$TOKEN" --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install "$RELEASE" "$ROOT/charts/mcp-fleet" -n "$NAMESPACE" \
  --set image.tag="$VERSION" \
  --set router.auth.existingSecret="$RELEASE-e2e-token" \
  --wait --timeout 180s
kubectl wait --for=condition=Established crd/mcpservers.mcp-fleet.dev --timeout=60s

log "MCPServer time"
kubectl apply -n "$NAMESPACE" -f "$ROOT/examples/k8s/time.yaml"
kubectl wait -n "$NAMESPACE" mcpserver/time --for=condition=Ready --timeout=180s
kubectl get mcpservers -n "$NAMESPACE" -o wide

log "tools/call through the server's Service (the bridge)"
port_forward svc/time "$SERVER_PORT:8080"
mcp_call "http://127.0.0.1:$SERVER_PORT/mcp" "" get_current_time '{"timezone":"UTC"}' | tee "$WORK/direct"
grep -q '"datetime"' "$WORK/direct" || die "no time in the answer through the bridge"

log "tools/call through the router's Service"
kubectl rollout status -n "$NAMESPACE" deployment/"$RELEASE"-router --timeout=120s
port_forward svc/"$RELEASE"-router "$ROUTER_PORT:8811"
if curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$ROUTER_PORT/mcp" | grep -qx 401; then
  echo "router refuses requests without a token (401), as it should"
else
  die "router answered a request without a token"
fi
mcp_call "http://127.0.0.1:$ROUTER_PORT/mcp" "$TOKEN" get_current_time '{"timezone":"UTC"}' | tee "$WORK/routed"
grep -q '"datetime"' "$WORK/routed" || die "no time in the answer through the router"

log "kind-e2e: OK"
