package podroute

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Ready reports whether the calling thread's network namespace has the rule
// for tunnelMark's source mark in the family (unix.AF_INET or unix.AF_INET6).
// The agent writes it after the table's route and the sysctl, and removes it
// first, so the rule alone says the rest is there. Run it on a thread in the
// pod's namespace.
func Ready(family int, tunnelMark uint32) (bool, error) {
	b, err := syscall.NetlinkRIB(unix.RTM_GETRULE, family)
	if err != nil {
		return false, fmt.Errorf("netlink rule dump: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return false, fmt.Errorf("netlink rule dump: %w", err)
	}
	want := SourceMark(tunnelMark)
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWRULE {
			continue
		}
		if hasRule(m.Data, want) {
			return true, nil
		}
	}
	return false, nil
}

// hasRule tells whether a rule message (struct fib_rule_hdr, then attributes)
// is the source rule: fwmark want, table Table.
func hasRule(data []byte, want uint32) bool {
	const hdrLen = 12 // struct fib_rule_hdr
	if len(data) < hdrLen {
		return false
	}
	table := uint32(data[4])
	var mark uint32
	var hasMark bool
	for b := data[hdrLen:]; len(b) >= unix.SizeofRtAttr; {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4])
		if l < unix.SizeofRtAttr || l > len(b) {
			return false
		}
		v := b[unix.SizeofRtAttr:l]
		switch typ {
		case unix.FRA_TABLE:
			if len(v) >= 4 {
				table = binary.NativeEndian.Uint32(v)
			}
		case unix.FRA_FWMARK:
			if len(v) >= 4 {
				mark, hasMark = binary.NativeEndian.Uint32(v), true
			}
		}
		adv := (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
		if adv > len(b) {
			break
		}
		b = b[adv:]
	}
	return hasMark && mark == want && table == Table
}
