package flows

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// TestLoad passes every program through the kernel's verifier.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("loads eBPF programs into the kernel; skipped under -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("loads eBPF programs into the kernel; needs root")
	}
	var objs FlowsObjects
	err := LoadFlowsObjects(&objs, nil)
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		t.Fatalf("verifier: %+v", verr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := objs.Close(); err != nil {
		t.Fatal(err)
	}
}
