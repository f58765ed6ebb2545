package kubebin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKubeGoModReplacesEveryStagingModule(t *testing.T) {
	mod := GoMod()
	if !strings.Contains(mod, "require k8s.io/kubernetes "+Version) {
		t.Fatalf("go.mod does not require kubernetes %s:\n%s", Version, mod)
	}
	for _, m := range staging {
		line := "k8s.io/" + m + " => k8s.io/" + m + " v0.37.2"
		if !strings.Contains(mod, line) {
			t.Errorf("go.mod lacks %q", line)
		}
	}
	fl := Ldflags()
	for _, want := range []string{"k8s.io/component-base/version.gitVersion=v1.37.2", "k8s.io/client-go/pkg/version.gitMinor=37"} {
		if !strings.Contains(fl, want) {
			t.Errorf("ldflags %q lack %q", fl, want)
		}
	}
}

// Fresh needs every binary and this version's stamp.
func TestFresh(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(BinDir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range Binaries {
		if err := os.WriteFile(Path(dir, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if Fresh(dir) {
		t.Error("fresh without a stamp")
	}
	if err := os.WriteFile(StampFile(dir), []byte(Stamp()), 0o644); err != nil {
		t.Fatal(err)
	}
	if !Fresh(dir) {
		t.Error("not fresh with every binary and the stamp")
	}
	if err := os.WriteFile(StampFile(dir), []byte(strings.Replace(Stamp(), Version, "v1.0.0", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if Fresh(dir) {
		t.Error("fresh with another version's stamp")
	}
	if err := os.WriteFile(StampFile(dir), []byte(Stamp()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(BinDir(dir), "kube-apiserver")); err != nil {
		t.Fatal(err)
	}
	if Fresh(dir) {
		t.Error("fresh without kube-apiserver")
	}
}
