#!/usr/bin/env bash
# Installs the Debian packages Warren's builds, tests, local cluster and benchmarks use.
# Idempotent: does nothing when everything is present.
set -euo pipefail
pkgs=(
  etcd-server runc containernetworking-plugins iptables nftables conntrack socat  # local cluster
  iproute2 tcpdump curl jq                                                         # netns tests, captures, demo
  clang llvm libbpf-dev                                                            # bpf2go
  protobuf-compiler                                                                # api/proto (protoc)
  haproxy iperf3                                                                   # benchmarks
  prometheus                                                                       # promtool (metrics checks in tests)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing packages ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
