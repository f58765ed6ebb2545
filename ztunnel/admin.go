package ztunnel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/warrenmesh/warren/internal/reuseport"
	"github.com/warrenmesh/warren/internal/sideport"
)

// serveAdmin starts the node-side HTTP servers: admin (config dump,
// certificates, pprof), metrics and readiness. An empty address disables one.
func (t *Tunnel) serveAdmin(ctx context.Context) ([]*http.Server, error) {
	admin := sideport.AdminMux()
	admin.HandleFunc("GET /config_dump", t.configDump)
	admin.HandleFunc("GET /certs", t.certsDump)
	metrics := http.NewServeMux()
	metrics.Handle("GET /metrics", promhttp.HandlerFor(t.reg, promhttp.HandlerOpts{}))
	ready := sideport.ReadyMux(t.ready.Load)
	var servers []*http.Server
	for _, s := range []struct {
		addr string
		h    http.Handler
	}{{t.cfg.AdminAddr, admin}, {t.cfg.MetricsAddr, metrics}, {t.cfg.ReadyAddr, ready}} {
		if s.addr == "" {
			continue
		}
		// SO_REUSEPORT: during a rollout a second ztunnel (hostNetwork)
		// starts on the node before the first stops, and must bind the
		// same ports. Both answer while both run; these are read-only
		// endpoints, so which one answers does not matter.
		srv := &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		serve := func(ln net.Listener) {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.log.Warn("admin server stopped", "addr", s.addr, "err", err)
			}
		}
		ln, err := reuseport.Listen(ctx, s.addr)
		switch {
		case err == nil:
			go serve(ln)
		case reuseport.Held(err):
			// Held without SO_REUSEPORT: a ztunnel from before it was set,
			// which the rollout stops soon. Serve once it lets go.
			t.log.Warn("port held by another process, retrying", "addr", s.addr)
			go func() {
				if ln, err := reuseport.Wait(ctx, s.addr, time.Second, nil); ln != nil {
					t.log.Info("port free, serving", "addr", s.addr)
					serve(ln)
				} else if err != nil {
					t.log.Warn("admin listener", "addr", s.addr, "err", err)
				}
			}()
		default:
			for _, srv := range servers {
				srv.Close()
			}
			return nil, fmt.Errorf("listen %s: %w", s.addr, err)
		}
	}
	return servers, nil
}

func (t *Tunnel) configDump(w http.ResponseWriter, _ *http.Request) {
	t.mu.Lock()
	served := make([]string, 0, len(t.active))
	for uid := range t.active {
		served = append(served, uid)
	}
	t.mu.Unlock()
	sort.Strings(served)
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(struct {
		Config *Config  `json:"config"`
		Served []string `json:"servedPods"`
	}{t.state().cfg, served})
}

type certInfo struct {
	Identity  string    `json:"identity"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
}

func (t *Tunnel) certsDump(w http.ResponseWriter, _ *http.Request) {
	var out []certInfo
	t.certsMu.Lock()
	defer t.certsMu.Unlock()
	for id, e := range t.certs {
		c := e.src.Load()
		if c == nil || c.Leaf == nil {
			continue
		}
		out = append(out, certInfo{Identity: id.String(), Serial: c.Leaf.SerialNumber.String(), NotBefore: c.Leaf.NotBefore, NotAfter: c.Leaf.NotAfter})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Identity < out[j].Identity })
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}
