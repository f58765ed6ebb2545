// Package podroute names the policy routing that lets the ztunnel keep a
// client's address on the last hop: inside an enrolled pod's network
// namespace, the ztunnel connects to the app from the client's own address
// (IP_TRANSPARENT), so the app sees who called it, as it would without a mesh.
//
// The app's replies to that address would follow the pod's default route out
// of the pod. They are kept in: the ztunnel's socket carries SourceMark, the
// app's accepted socket inherits it from the SYN (sysctl
// net.ipv4.tcp_fwmark_accept=1, which also covers IPv6), and a rule sends
// packets with that mark to Table, whose only route is `local default dev lo`:
// they are delivered back to the ztunnel's socket. The kernel's own replies
// (a RST from a closed port) get the mark of what they answer
// (fwmark_reflect), so a refusal comes back at once. In `ip` terms, per pod:
//
//	sysctl -w net.ipv4.tcp_fwmark_accept=1 net.ipv4.fwmark_reflect=1 (net.ipv6.fwmark_reflect=1)
//	ip rule add fwmark <SourceMark> lookup 0x5741 priority 100
//	ip route add local 0.0.0.0/0 dev lo table 0x5741
//	ip -6 rule add fwmark <SourceMark> lookup 0x5741 priority 100   (pods with IPv6)
//	ip -6 route add local ::/0 dev lo table 0x5741
//
// The node agent sets this up when it enrolls a pod and removes it when the
// pod leaves the mesh; the ztunnel checks for the rule (Ready) before it
// connects from a client's address, and connects from the pod's own address
// where the rule is missing. Nothing else in the pod is marked: a SYN that
// crossed from another network namespace has its mark cleared, and setting a
// mark takes CAP_NET_ADMIN.
package podroute

import (
	"fmt"

	"github.com/warrenmesh/warren/bpf/redirect"
)

const (
	// SourceMarkBit is added to the tunnel's mark (SO_MARK of its own
	// sockets) on the sockets it opens from a client's address. The eBPF
	// programs treat both marks as the tunnel's (the bit comes from their
	// C); a tunnel mark must not have this bit.
	SourceMarkBit = redirect.SourceMarkBit
	// Table is the routing table of the rule: the default tunnel mark's
	// number, whatever mark is configured.
	Table = redirect.DefaultTunnelMark
	// Priority is the rule's: before the main table's (32766).
	Priority = 100
)

// SourceMark is the mark of the tunnel's sockets that use a client's address.
func SourceMark(tunnelMark uint32) uint32 { return tunnelMark | SourceMarkBit }

// CheckTunnelMark refuses a tunnel mark that cannot be told from its source mark.
func CheckTunnelMark(m uint32) error {
	if m&SourceMarkBit != 0 {
		return fmt.Errorf("tunnel mark %#x: bit %#x is reserved for the source-address mark", m, SourceMarkBit)
	}
	return nil
}
