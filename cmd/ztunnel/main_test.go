package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunRefusesBadConfig(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("node: n1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no config", nil, nil, "--config is required"},
		{"bad log level", []string{"--config", bad, "--log-level", "loud"}, nil, "log-level"},
		{"invalid config, from the environment", nil, map[string]string{"ZTUNNEL_CONFIG": bad}, "caBundle: required"},
		{"controller without node", []string{"--controller-addr", "127.0.0.1:1", "--ca-bundle", bad}, nil, "node: required"},
		{"controller without roots", []string{"--controller-addr", "127.0.0.1:1", "--node-name", "n1"}, nil, "caBundle: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			old := os.Args
			os.Args = append([]string{"ztunnel"}, tc.args...)
			defer func() { os.Args = old }()
			err := run()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run: %v, want %q in it", err, tc.want)
			}
		})
	}
}
