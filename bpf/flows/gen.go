// Package flows holds Warren's kernel flow-record eBPF object (flows.c): a
// sockops program, attached at the cgroup2 root next to bpf/redirect's, that
// records what TCP saw of each connection an enrolled pod opens (bytes each
// way, segments, RTT, retransmits, how it ended) and sends start and end
// events through a ring buffer. It shares the redirect object's `enrolled`,
// `orig_by_cookie` and `orig_by_tuple` maps by pin. The object is compiled by
// bpf2go; the generated Go and ELF files are committed, so building needs no
// clang. Loading, attaching and reading live in package nodeagent.
package flows

//go:generate go tool bpf2go -target bpfel -type flow_event -type flow -type flow_hop -type flow_kind -type flow_end -type flow_stat -type addr Flows flows.c -- -O2 -Wall -Werror -I../include
