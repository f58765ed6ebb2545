package waypoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/warrenmesh/warren/internal/sideport"
)

// Addrs are the waypoint's side ports, as the ztunnel's: admin (config
// dump, pprof) 127.0.0.1:15000, Prometheus :15020, readiness :15021. An
// empty address is not served.
type Addrs struct {
	Admin, Metrics, Ready string
}

// ServeSide serves the admin, metrics and readiness endpoints until ctx
// ends. It returns once the listeners are open, with their addresses.
func (w *Waypoint) ServeSide(ctx context.Context, a Addrs) (Addrs, error) {
	admin := sideport.AdminMux()
	admin.HandleFunc("GET /config_dump", w.configDump)
	metrics := http.NewServeMux()
	metrics.Handle("GET /metrics", promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{}))
	ready := sideport.ReadyMux(w.Ready)
	var servers []*http.Server
	for _, s := range []struct {
		addr *string
		h    http.Handler
	}{{&a.Admin, admin}, {&a.Metrics, metrics}, {&a.Ready, ready}} {
		if *s.addr == "" {
			continue
		}
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *s.addr)
		if err != nil {
			for _, srv := range servers {
				srv.Close()
			}
			return Addrs{}, fmt.Errorf("listen %s: %w", *s.addr, err)
		}
		*s.addr = ln.Addr().String()
		srv := &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				w.log.Warn("side server stopped", "addr", ln.Addr().String(), "err", err)
			}
		}()
	}
	go func() {
		<-ctx.Done()
		for _, srv := range servers {
			srv.Close()
		}
	}()
	return a, nil
}

func (w *Waypoint) configDump(rw http.ResponseWriter, _ *http.Request) {
	cfg := w.cfg.Load()
	if cfg == nil {
		http.Error(rw, "no configuration yet", http.StatusServiceUnavailable)
		return
	}
	b, err := protojson.MarshalOptions{Multiline: true}.Marshal(cfg)
	if err != nil {
		http.Error(rw, "cannot encode", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	rw.Write(b)
}
