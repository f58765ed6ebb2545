// Package netnstest holds what Warren's real-kernel tests share: the gate that skips them,
// with a reason, where they cannot run.
package netnstest

import (
	"os"
	"testing"
)

// RequireKernel skips tb under -short, when not root, or on a kernel without BTF. what says
// what the test does to the machine ("attaches eBPF programs and creates network namespaces"),
// so the skip message explains itself.
func RequireKernel(tb testing.TB, what string) {
	tb.Helper()
	if testing.Short() {
		tb.Skip(what + "; skipped under -short")
	}
	if os.Geteuid() != 0 {
		tb.Skip(what + "; needs root")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		tb.Skip("kernel without BTF")
	}
}
