package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/warrenmesh/warren/nodeagent/cniapi"
)

// PluginType is the chained plugin's type (its binary's name in the CNI bin dir).
const PluginType = "warren-cni"

// Config says where the node's CNI configuration is and what to chain into it.
type Config struct {
	// BinDir is the node's CNI binary folder, /opt/cni/bin if empty.
	BinDir string
	// ConfDir is the node's CNI configuration folder, /etc/cni/net.d if empty.
	ConfDir string
	// Binary is the warren-cni binary to copy into BinDir (from the agent's image).
	Binary string
	// Socket is the agent's CNI socket as the plugin sees it (the node's path).
	Socket string
	// Timeout bounds the plugin's wait for the agent at ADD.
	Timeout time.Duration
}

// SetDefaults fills in the node's standard folders where c has none.
func (c *Config) SetDefaults() {
	if c.BinDir == "" {
		c.BinDir = "/opt/cni/bin"
	}
	if c.ConfDir == "" {
		c.ConfDir = "/etc/cni/net.d"
	}
	if c.Socket == "" {
		c.Socket = cniapi.DefaultSocket
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
}

// pluginEntry is the plugin's entry in the conflist.
func (c *Config) pluginEntry() json.RawMessage {
	b, _ := json.Marshal(struct {
		Type        string `json:"type"`
		AgentSocket string `json:"agentSocket"`
		Timeout     string `json:"timeout"`
	}{PluginType, c.Socket, c.Timeout.String()})
	return b
}

// Install copies the plugin into BinDir and chains it at the end of the
// first configuration in ConfDir (the one the runtime uses), each by an
// atomic rename. Idempotent: nothing is written when all is in place. It
// returns the configuration file it chained into.
func Install(cfg Config) (string, error) {
	cfg.SetDefaults()
	if err := installBinary(cfg.Binary, filepath.Join(cfg.BinDir, PluginType)); err != nil {
		return "", err
	}
	path, err := firstConf(cfg.ConfDir)
	if err != nil {
		return "", err
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cni config: %w", err)
	}
	conf, err := ChainPlugin(old, cfg.pluginEntry())
	if err != nil {
		return "", fmt.Errorf("cni config %s: %w", path, err)
	}
	if bytes.Equal(conf, old) {
		return path, nil
	}
	return path, writeAtomic(path, conf, 0o644)
}

// Uninstall removes the plugin from every configuration in ConfDir and its binary from BinDir.
func Uninstall(cfg Config) error {
	cfg.SetDefaults()
	var errs []error
	files, err := confFiles(cfg.ConfDir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, path := range files {
		old, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		conf, found, err := UnchainPlugin(old)
		if err != nil || !found {
			continue // not ours to touch
		}
		errs = append(errs, writeAtomic(path, conf, 0o644))
	}
	if err := os.Remove(filepath.Join(cfg.BinDir, PluginType)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("cni binary: %w", err))
	}
	return errors.Join(errs...)
}

// confFiles lists ConfDir's configurations in the order libcni and the
// runtimes read them.
func confFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cni config: %w", err)
	}
	var files []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".conflist", ".conf", ".json":
			if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				files = append(files, filepath.Join(dir, e.Name()))
			}
		}
	}
	slices.Sort(files)
	return files, nil
}

// ErrNoConfig: the node's primary CNI has not written its configuration yet.
var ErrNoConfig = errors.New("no CNI configuration yet")

func firstConf(dir string) (string, error) {
	files, err := confFiles(dir)
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("cni config in %s: %w", dir, ErrNoConfig)
	}
	return files[0], nil
}

// ChainPlugin returns the conflist with entry as its last plugin, replacing
// an entry of ours already there (its place is kept). Other fields and
// plugins are kept as they are; keys come out sorted.
func ChainPlugin(conflist []byte, entry json.RawMessage) ([]byte, error) {
	top, plugins, err := parseConflist(conflist)
	if err != nil {
		return nil, err
	}
	replaced := false
	for i, p := range plugins {
		if pluginType(p) == PluginType {
			plugins[i] = entry
			replaced = true
		}
	}
	if !replaced {
		plugins = append(plugins, entry)
	}
	return formatConflist(top, plugins)
}

// UnchainPlugin returns the conflist without our entries, and whether there were any.
func UnchainPlugin(conflist []byte) ([]byte, bool, error) {
	top, plugins, err := parseConflist(conflist)
	if err != nil {
		return nil, false, err
	}
	kept := slices.DeleteFunc(slices.Clone(plugins), func(p json.RawMessage) bool { return pluginType(p) == PluginType })
	if len(kept) == len(plugins) {
		return conflist, false, nil
	}
	out, err := formatConflist(top, kept)
	return out, true, err
}

func parseConflist(b []byte) (map[string]json.RawMessage, []json.RawMessage, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, nil, fmt.Errorf("not a JSON object: %w", err)
	}
	raw, ok := top["plugins"]
	if !ok {
		return nil, nil, errors.New("a single-plugin configuration (no \"plugins\" list): make it a .conflist to chain warren-cni")
	}
	var plugins []json.RawMessage
	if err := json.Unmarshal(raw, &plugins); err != nil {
		return nil, nil, fmt.Errorf("plugins: %w", err)
	}
	if len(plugins) == 0 {
		return nil, nil, errors.New("plugins: empty list")
	}
	return top, plugins, nil
}

func formatConflist(top map[string]json.RawMessage, plugins []json.RawMessage) ([]byte, error) {
	raw, err := json.Marshal(plugins)
	if err != nil {
		return nil, err
	}
	top["plugins"] = raw
	out, err := json.MarshalIndent(top, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func pluginType(p json.RawMessage) string {
	var t struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(p, &t)
	return t.Type
}

func installBinary(src, dst string) error {
	if src == "" {
		return errors.New("cni binary: no source path")
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("cni binary: %w", err)
	}
	if cur, err := os.ReadFile(dst); err == nil && bytes.Equal(cur, b) {
		return nil
	}
	return writeAtomic(dst, b, 0o755)
}

// writeAtomic writes through a hidden temporary file in the same folder and
// a rename, so a runtime never reads half a file (and never picks up the
// temporary one: it has no configuration extension).
func writeAtomic(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".warren-tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	err = errors.Join(err, f.Chmod(mode), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
