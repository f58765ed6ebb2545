package podroute

import (
	"os"
	"regexp"
	"strconv"
	"testing"
)

// The eBPF programs tell the tunnel's sockets by the same bit.
func TestSourceMarkBitMatchesTheBPFHeader(t *testing.T) {
	b, err := os.ReadFile("../../bpf/include/warren/shared.h")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^#define SOURCE_MARK_BIT (0x[0-9a-fA-F]+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no SOURCE_MARK_BIT in shared.h")
	}
	v, err := strconv.ParseUint(string(m[1]), 0, 32)
	if err != nil || v != SourceMarkBit {
		t.Errorf("shared.h has SOURCE_MARK_BIT %s, Go has %#x", m[1], SourceMarkBit)
	}
}

func TestCheckTunnelMark(t *testing.T) {
	if err := CheckTunnelMark(0x5741); err != nil {
		t.Errorf("default mark refused: %v", err)
	}
	if err := CheckTunnelMark(0x5741 | SourceMarkBit); err == nil {
		t.Error("a mark with the source bit was accepted")
	}
	if got := SourceMark(0x5741); got != 0x15741 {
		t.Errorf("SourceMark = %#x", got)
	}
}
