package podroute

import (
	"testing"

	"github.com/warrenmesh/warren/bpf/redirect"
)

func TestCheckTunnelMark(t *testing.T) {
	if err := CheckTunnelMark(redirect.DefaultTunnelMark); err != nil {
		t.Errorf("default mark refused: %v", err)
	}
	if err := CheckTunnelMark(redirect.DefaultTunnelMark | SourceMarkBit); err == nil {
		t.Error("a mark with the source bit was accepted")
	}
	if got := SourceMark(redirect.DefaultTunnelMark); got != redirect.DefaultTunnelMark|SourceMarkBit {
		t.Errorf("SourceMark = %#x", got)
	}
}
