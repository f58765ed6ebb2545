#!/usr/bin/env bash
# make demo: bring up the 2-node local cluster, install Warren from manifests/, deploy the demo
# app (echo servers and clients across both nodes), enroll its namespace, drive traffic, and
# print the proof: ztunnel metrics with mutual_tls and SPIFFE identities, and a packet capture
# between the nodes that shows TLS on port 15008 and no plaintext HTTP.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p bin
go build -o bin/warren-cluster ./hack/cluster
go build -o bin/warrenctl ./cmd/warrenctl
cluster=bin/warren-cluster
$cluster up
$cluster load-images >/dev/null
kubeconfig=$($cluster kubeconfig)
bindir="${WARREN_CACHE:-$HOME/.cache/warren}/bin"
kubectl="$bindir/kubectl --kubeconfig $kubeconfig"

echo
echo "==> installing Warren (kubectl apply -k manifests/, with the images built from this tree)"
$kubectl apply -k "$($cluster mesh-overlay)" >/dev/null
$kubectl -n warren-system rollout status deployment/warren-controller --timeout=180s >/dev/null
$kubectl -n warren-system rollout status daemonset/warren-node --timeout=180s >/dev/null
$kubectl -n warren-system get pods -o wide

echo
echo "==> deploying the demo app in namespace demo (not in the mesh yet)"
image=$(sed -n 's/^  "echo": "\(.*\)",\{0,1\}$/\1/p' "$(dirname "$kubeconfig")/images.json")
sed "s|ECHO_IMAGE|$image|" hack/demo/demo.yaml | $kubectl apply -f - >/dev/null
$kubectl -n demo rollout status deployment/echo --timeout=120s >/dev/null
$kubectl -n demo rollout status deployment/client --timeout=120s >/dev/null

echo
echo "==> kubectl label namespace demo warren.dev/mesh=enabled (running pods join, no restart)"
$kubectl label namespace demo warren.dev/mesh=enabled --overwrite >/dev/null

# The agent and ztunnel of each node serve the pods within a second or two; the clients call the
# echo Service every second, so mTLS connections show up in the ztunnels' metrics.
metrics() { ip netns exec "warren-$1" curl -s --max-time 5 http://127.0.0.1:15020/metrics; }
for i in $(seq 1 60); do
  n=0
  for node in node1 node2; do
    if metrics $node | grep -q 'opened_total{connection_security_policy="mutual_tls".*destination_service="demo/echo".*direction="outbound"'; then
      n=$((n + 1))
    fi
  done
  [ $n = 2 ] && break
  sleep 1
done
if [ $n != 2 ]; then
  echo "the clients' connections never went through the mesh on both nodes" >&2
  exit 1
fi

echo
echo "==> packet capture on node2's link for 5 s while the clients call the echo Service"
pcap=$(mktemp --suffix .pcap)
ip netns exec warren-node2 tcpdump --immediate-mode -i eth0 -U -s 0 -w "$pcap" 'tcp and net 10.244.0.0/16' 2>/dev/null &
tcpdump_pid=$!
sleep 5
kill -INT $tcpdump_pid
wait $tcpdump_pid 2>/dev/null || true
total=$(tcpdump -nn -r "$pcap" 2>/dev/null | wc -l)
hbone=$(tcpdump -nn -r "$pcap" 'tcp port 15008' 2>/dev/null | wc -l)
tls=$(tcpdump -nn -r "$pcap" 'tcp port 15008 and (((tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x17) or (tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16)))' 2>/dev/null | wc -l)
plain=$(tcpdump -nn -A -r "$pcap" 2>/dev/null | grep -c -E 'GET / HTTP/1.1|HTTP/1.1 200' || true)
rm -f "$pcap"
echo "   pod-to-pod packets between the nodes: $total"
echo "   of them on port 15008 (HBONE):         $hbone   (TLS records: $tls)"
echo "   plaintext HTTP requests or responses:  $plain"
if [ "$hbone" = 0 ] || [ "$plain" != 0 ]; then
  echo "the capture does not show the traffic encrypted" >&2
  exit 1
fi

echo
echo "==> ztunnel metrics (warren_ztunnel_tcp_connections_opened_total, mutual_tls, outbound):"
for node in node1 node2; do
  metrics $node | grep '^warren_ztunnel_tcp_connections_opened_total{' | grep 'direction="outbound"' |
    sed -n 's/.*connection_security_policy="\([^"]*\)".*destination_principal="\([^"]*\)".*destination_service="\([^"]*\)".*destination_workload="\([^"]*\)".*source_principal="\([^"]*\)".*source_workload="\([^"]*\)"[^}]*} \(.*\)/\6 -> \4 (service \3): \1, \5 -> \2, \7 connections/p' |
    sed "s/^/   $node: /"
done

echo
echo "==> Prometheus (Debian's) scraping every node's ztunnel and agent: http://127.0.0.1:19090"
$cluster prometheus >/dev/null
query='sum by (source_workload, destination_workload, connection_security_policy) (warren_ztunnel_tcp_connections_opened_total{direction="outbound", source_namespace="demo"})'
for i in $(seq 1 30); do
  result=$(curl -s --get --data-urlencode "query=$query" http://127.0.0.1:19090/api/v1/query)
  echo "$result" | grep -q '"mutual_tls"' && break
  sleep 1
done
echo "   query: $query"
echo "$result" | jq -r '.data.result[] | "   \(.metric.source_workload) -> \(.metric.destination_workload): \(.metric.connection_security_policy), \(.value[1]) connections"'

echo
echo "==> warrenctl observe -n demo: live flows from every node agent, as the kernel saw them (5 s)"
timeout 5 bin/warrenctl observe --kubeconfig "$kubeconfig" -n demo 2>/dev/null | head -12 || true

echo
echo "==> 4 requests from a client pod through the echo Service, spread over both nodes;"
client=$($kubectl -n demo get pods -l app=client -o jsonpath='{.items[0].metadata.name}')
client_ip=$($kubectl -n demo get pod "$client" -o jsonpath='{.status.podIP}')
echo "    the servers see the client's own address ($client_ip), as without a mesh:"
$kubectl -n demo exec "$client" -- /echo get -n 4 http://echo.demo.svc.cluster.local/ |
  jq -r '"   served by \(.pod) on \(.node), client \(.remoteAddr)"'
echo
echo "==> the demo pods were not restarted to join the mesh:"
$kubectl -n demo get pods -o wide

cat <<EOT

==> look around
   export KUBECONFIG=$kubeconfig
   $bindir/kubectl get pods -A -o wide
   http://127.0.0.1:19090                                          # Prometheus (job ztunnel, warren-agent)
   ip netns exec warren-node1 curl -s localhost:15020/metrics      # ztunnel metrics (node1)
   ip netns exec warren-node1 curl -s localhost:15000/config_dump  # what the ztunnel knows
   ip netns exec warren-node1 curl -s localhost:15000/certs        # its workloads' certificates
   ip netns exec warren-node1 curl -s localhost:15024/metrics      # node agent metrics
   bin/warrenctl observe --kubeconfig $kubeconfig -n demo          # live flows (Ctrl-C to stop)
   $bindir/kubectl label namespace demo warren.dev/mesh-           # leave the mesh (no restart)
   go run ./hack/cluster status          # processes and nodes
   go run ./hack/cluster logs node1/kubelet
   make demo-down                        # remove it all
EOT
