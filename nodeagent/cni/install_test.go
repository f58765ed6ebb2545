package cni

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update to accept):\n%s", name, got)
	}
}

var testConfig = Config{Socket: "/var/run/warren/cni.sock", Timeout: 30 * time.Second}

func TestChainPluginGolden(t *testing.T) {
	for _, name := range []string{"bridge", "chained-old"} {
		in, err := os.ReadFile(filepath.Join("testdata", name+".conflist"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig
		cfg.SetDefaults()
		chained, err := ChainPlugin(in, cfg.pluginEntry())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		golden(t, name+".chained.golden", chained)
		again, err := ChainPlugin(chained, cfg.pluginEntry())
		if err != nil || !bytes.Equal(again, chained) {
			t.Errorf("%s: chaining twice changed it: %v\n%s", name, err, again)
		}
		unchained, found, err := UnchainPlugin(chained)
		if err != nil || !found {
			t.Fatalf("%s: unchain: %v, found %v", name, err, found)
		}
		golden(t, name+".unchained.golden", unchained)
		if _, found, _ := UnchainPlugin(unchained); found {
			t.Errorf("%s: still chained after unchain", name)
		}
	}
	for _, bad := range []string{`{"cniVersion":"0.4.0","name":"k8s","type":"bridge"}`, `{"plugins":[]}`, `not json`} {
		if _, err := ChainPlugin([]byte(bad), testConfig.pluginEntry()); err == nil {
			t.Errorf("ChainPlugin(%s) took it", bad)
		}
	}
}

func TestInstallCNI(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig
	cfg.BinDir, cfg.ConfDir = filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	cfg.Binary = filepath.Join(dir, "warren-cni")
	for _, d := range []string{cfg.BinDir, cfg.ConfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(cfg.Binary, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(cfg); err == nil || !strings.Contains(err.Error(), "no CNI configuration yet") {
		t.Errorf("install with no config: %v", err)
	}
	bridge, _ := os.ReadFile(filepath.Join("testdata", "bridge.conflist"))
	single, _ := os.ReadFile(filepath.Join("testdata", "single.conf"))
	must(t, os.WriteFile(filepath.Join(cfg.ConfDir, "10-bridge.conflist"), bridge, 0o644))
	must(t, os.WriteFile(filepath.Join(cfg.ConfDir, "20-other.conf"), single, 0o644))
	must(t, os.WriteFile(filepath.Join(cfg.ConfDir, "README"), []byte("x"), 0o644))

	path, err := Install(cfg)
	if err != nil || filepath.Base(path) != "10-bridge.conflist" {
		t.Fatalf("Install = %s, %v", path, err)
	}
	got, _ := os.ReadFile(path)
	golden(t, "bridge.chained.golden", got)
	if b, err := os.ReadFile(filepath.Join(cfg.BinDir, PluginType)); err != nil || string(b) != "#!/bin/true\n" {
		t.Errorf("binary: %q, %v", b, err)
	}
	st1, _ := os.Stat(path)
	if _, err := Install(cfg); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(path); !os.SameFile(st1, st2) {
		t.Error("a second install rewrote the conflist")
	}
	if other, _ := os.ReadFile(filepath.Join(cfg.ConfDir, "20-other.conf")); !bytes.Equal(other, single) {
		t.Error("install touched another configuration")
	}

	must(t, Uninstall(cfg))
	got, _ = os.ReadFile(path)
	golden(t, "bridge.unchained.golden", got)
	if _, err := os.Stat(filepath.Join(cfg.BinDir, PluginType)); !os.IsNotExist(err) {
		t.Errorf("binary still there: %v", err)
	}
	entries, _ := os.ReadDir(cfg.ConfDir)
	if len(entries) != 3 {
		t.Errorf("conf dir holds %d files, want 3 (no temporary left)", len(entries))
	}
	must(t, Uninstall(cfg)) // idempotent
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}
