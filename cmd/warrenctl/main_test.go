package main

import (
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	var out strings.Builder
	if err := run(nil, &out); err != nil || !strings.Contains(out.String(), "warrenctl observe") {
		t.Errorf("no verb: %v, %q", err, out.String())
	}
	if err := run([]string{"watch"}, &out); err == nil || !strings.Contains(err.Error(), `unknown verb "watch"`) {
		t.Errorf("unknown verb: %v", err)
	}
	for _, args := range [][]string{
		{"observe", "--verdict", "dropped"},
		{"observe", "-o", "yaml"},
		{"observe", "--pod", "a/b/c"},
		{"observe", "--no-such-flag"},
	} {
		if err := run(args, &out); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	// A kubeconfig that does not exist: refused before any stream.
	err := run([]string{"observe", "--kubeconfig", t.TempDir() + "/none"}, &out)
	if err == nil || !strings.Contains(err.Error(), "kubernetes config") {
		t.Errorf("missing kubeconfig: %v", err)
	}
}
