package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Flags come from the environment too, and --uninstall removes the plugin's
// entry from the node's CNI configuration (nothing pinned here: no bpffs).
func TestUninstallFromEnv(t *testing.T) {
	dir := t.TempDir()
	confDir := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(confDir, "10-bridge.conflist")
	chained := `{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge"},{"type":"warren-cni","agentSocket":"/x"}]}`
	if err := os.WriteFile(conf, []byte(chained), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WARREN_NODE_NAME", "node1")
	t.Setenv("WARREN_CNI_CONF_DIR", confDir)
	t.Setenv("WARREN_CNI_BIN_DIR", dir)
	t.Setenv("WARREN_BPFFS", filepath.Join(dir, "bpffs"))
	t.Setenv("WARREN_ZTUNNEL_SOCKET", filepath.Join(dir, "z.sock"))
	t.Setenv("WARREN_CNI_SOCKET", filepath.Join(dir, "c.sock"))
	old := os.Args
	t.Cleanup(func() { os.Args = old })
	os.Args = []string{"warren-agent", "--uninstall", "--log-level", "error"}
	if err := run(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(conf)
	if strings.Contains(string(b), "warren-cni") || !strings.Contains(string(b), "bridge") {
		t.Errorf("after --uninstall:\n%s", b)
	}

	os.Args = []string{"warren-agent"}
	t.Setenv("WARREN_NODE_NAME", "")
	if err := run(); err == nil || !strings.Contains(err.Error(), "node name missing") {
		t.Errorf("without a node name: %v", err)
	}
}
