// Package redirect holds Warren's traffic-redirection eBPF object
// (redirect.c): cgroup connect4/connect6 and sockops programs attached at the
// cgroup2 root, and an sk_lookup program attached to each enrolled pod's
// network namespace, with the maps they share. The object is compiled by
// bpf2go; the generated Go and ELF files are committed, so building needs no
// clang. The numbers Go shares with the C (ports, mark bit, counter slots)
// are generated from its enums too (contract.go). Loading, attaching and
// pinning live in package nodeagent.
package redirect

//go:generate go tool bpf2go -target bpfel -type pod_info -type ip -type addr -type tuple -type sock_key -type sock_kind -type node_ip -type outbound_ports -type prog_id -type action -type port -type mark_bits Redirect redirect.c -- -O2 -Wall -Werror -I../include
