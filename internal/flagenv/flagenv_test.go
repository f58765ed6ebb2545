package flagenv

import (
	"testing"

	"github.com/spf13/pflag"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		wantAddr string
		wantErr  bool
	}{
		{"default", nil, nil, ":1", false},
		{"flag", []string{"--listen-addr", ":2"}, nil, ":2", false},
		{"env", nil, map[string]string{"WT_LISTEN_ADDR": ":3"}, ":3", false},
		{"flag beats env", []string{"--listen-addr", ":2"}, map[string]string{"WT_LISTEN_ADDR": ":3"}, ":2", false},
		{"bad log level", []string{"--log-level", "loud"}, nil, "", true},
		{"bad log level from env", nil, map[string]string{"WT_LOG_LEVEL": "loud"}, "", true},
		{"unknown flag", []string{"--nope"}, nil, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			fs.String("listen-addr", ":1", "")
			v, log, err := Parse(fs, tc.args, "WT")
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if got := v.GetString("listen-addr"); got != tc.wantAddr || log == nil {
				t.Fatalf("listen-addr = %q (logger %v), want %q", got, log, tc.wantAddr)
			}
		})
	}
}
