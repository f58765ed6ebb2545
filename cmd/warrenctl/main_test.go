package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCmd runs warrenctl and returns its exit code, stdout and stderr.
func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut strings.Builder
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHelpAndCompletion(t *testing.T) {
	code, out, _ := runCmd(t)
	for _, sub := range []string{"observe", "check", "install", "uninstall", "status", "config", "enroll", "unenroll", "version", "completion"} {
		if !strings.Contains(out, "  "+sub+" ") {
			t.Errorf("help lacks %q:\n%s", sub, out)
		}
	}
	if code != 0 {
		t.Errorf("help exit %d", code)
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		code, out, errOut := runCmd(t, "completion", shell)
		if code != 0 || !strings.Contains(out, "warrenctl") || errOut != "" {
			t.Errorf("completion %s: exit %d, %d bytes, stderr %q", shell, code, len(out), errOut)
		}
	}
	// Static completions: -o values.
	_, out, _ = runCmd(t, "__complete", "status", "-o", "")
	if !strings.Contains(out, "json\n") || !strings.Contains(out, "yaml\n") {
		t.Errorf("completion of -o: %q", out)
	}
}

// Bad input: one line on stderr saying what and what to do, exit 1, no
// stack trace, nothing on stdout.
func TestBadInput(t *testing.T) {
	none := filepath.Join(t.TempDir(), "none")
	// A kubeconfig whose server refuses connections: a closed loopback port.
	unreachable := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(unreachable, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"watch"}, `unknown command "watch" for "warrenctl"`},
		{[]string{"config", "routes"}, `unknown command "routes" for "warrenctl config"`},
		{[]string{"enroll"}, "takes one namespace"},
		{[]string{"enroll", "a", "b"}, "takes one namespace"},
		{[]string{"status", "-o", "xml"}, `output "xml": want table, json, yaml`},
		{[]string{"check", "-o", "xml"}, `output "xml"`},
		{[]string{"observe", "--verdict", "dropped"}, "dropped"},
		{[]string{"observe", "-o", "yaml"}, `output "yaml"`},
		{[]string{"observe", "--pod", "a/b/c"}, "a/b/c"},
		{[]string{"observe", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"observe", "--kubeconfig", none}, "kubernetes config"},
		{[]string{"status", "--kubeconfig", none}, "kubernetes config"},
		{[]string{"enroll", "shop", "--kubeconfig", unreachable}, "the API server is unreachable"},
		{[]string{"status", "--kubeconfig", unreachable}, "the API server is unreachable"},
		{[]string{"config", "certs", "--kubeconfig", unreachable}, "the API server is unreachable"},
		{[]string{"install", "--kubeconfig", unreachable, "--timeout", "5s"}, "the API server is unreachable"},
	} {
		code, out, errOut := runCmd(t, tc.args...)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 and %q", tc.args, code, errOut, tc.want)
		}
		if strings.Count(strings.TrimSpace(errOut), "\n") != 0 || strings.Contains(errOut, "goroutine") || !strings.HasPrefix(errOut, "warrenctl: ") {
			t.Errorf("%v: stderr is not one line: %q", tc.args, errOut)
		}
		if strings.Contains(tc.args[0], "observe") && out != "" {
			t.Errorf("%v: stdout %q", tc.args, out)
		}
	}
	// check against an unreachable cluster: a report, a failed check, exit 1.
	code, out, _ := runCmd(t, "check", "--pre", "--kubeconfig", unreachable)
	if code != 1 || !strings.Contains(out, "× can reach the API server") || !strings.Contains(out, "hint: ") {
		t.Errorf("check --pre unreachable: exit %d\n%s", code, out)
	}
	// version without a cluster still prints the client's.
	code, out, _ = runCmd(t, "version", "--kubeconfig", unreachable)
	if code != 0 || !strings.Contains(out, "warrenctl") || !strings.Contains(out, "unreachable") {
		t.Errorf("version unreachable: exit %d\n%s", code, out)
	}
}

func TestInstallDryRun(t *testing.T) {
	code, out, errOut := runCmd(t, "install", "--dry-run", "--registry", "ghcr.io/acme", "--image-tag", "v9")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"kind: Namespace", "kind: CustomResourceDefinition", "kind: DaemonSet", "image: ghcr.io/acme/warren-agent:v9", "image: ghcr.io/acme/ztunnel:v9", "image: ghcr.io/acme/warren-controller:v9", "value: ghcr.io/acme/waypoint:v9"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run lacks %q", want)
		}
	}
	if strings.Contains(out, "warren.local") {
		t.Error("dry run still names warren.local")
	}
}
