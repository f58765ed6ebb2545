//go:build e2e

package e2e

import (
	"encoding/json"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// pinnedPrograms returns the IDs of the programs behind the links a node's agent pinned.
func pinnedPrograms(t *testing.T, node string) []ebpf.ProgramID {
	t.Helper()
	root, err := cluster.Config.NodeRoot(node)
	if err != nil {
		t.Fatal(err)
	}
	var ids []ebpf.ProgramID
	dir := filepath.Join(root, "sys/fs/bpf/warren", node)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			return nil // a map
		}
		defer l.Close()
		if info, err := l.Info(); err == nil {
			ids = append(ids, info.Program)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("pins of %s: %v", node, err)
	}
	return ids
}

// programLoaded reports whether the kernel still holds a program.
func programLoaded(id ebpf.ProgramID) bool {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return false
	}
	p.Close()
	return true
}
