#!/usr/bin/env bash
# make demo: bring up the local cluster, deploy the demo workload across both nodes, drive
# traffic and show where it went. The mesh itself joins this demo as its parts land.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p bin
go build -o bin/warren-cluster ./hack/cluster
cluster=bin/warren-cluster
$cluster up
$cluster load-images >/dev/null
kubeconfig=$($cluster kubeconfig)
kubectl="${WARREN_CACHE:-$HOME/.cache/warren}/bin/kubectl --kubeconfig $kubeconfig"
image=$(sed -n 's/^  "echo": "\(.*\)",\{0,1\}$/\1/p' "$(dirname "$kubeconfig")/images.json")
sed "s|ECHO_IMAGE|$image|" hack/demo/demo.yaml | $kubectl apply -f - >/dev/null
$kubectl -n demo rollout status deployment/echo --timeout=120s >/dev/null
$kubectl -n demo rollout status deployment/client --timeout=120s >/dev/null
echo
echo "==> demo pods"
$kubectl -n demo get pods -o wide
echo
echo "==> 10 requests from a client pod through the echo Service (ClusterIP, by DNS name):"
client=$($kubectl -n demo get pods -l app=client -o jsonpath='{.items[0].metadata.name}')
$kubectl -n demo exec "$client" -- /echo get -n 10 http://echo.demo.svc.cluster.local/ |
  sed -n 's/.*"pod":"\([^"]*\)".*"node":"\([^"]*\)".*"remoteAddr":"\([^"]*\)".*/   served by \1 on \2, client seen as \3/p'
cat <<EOT

==> look around
   export KUBECONFIG=$kubeconfig
   $(dirname "$kubeconfig" | sed "s|/cluster\$|/bin|")/kubectl get pods -A -o wide
   go run ./hack/cluster status          # processes and nodes
   go run ./hack/cluster logs node1/kubelet
   make demo-down                        # remove it all
EOT
