// Package sideport holds what the ztunnel's and the waypoint's side ports
// serve alike: the admin port's pprof routes and the readiness endpoint.
package sideport

import (
	"fmt"
	"net/http"
	"net/http/pprof"
)

// AdminMux is a mux with the pprof routes under /debug/pprof/; the caller
// adds its own dumps.
func AdminMux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return m
}

// ReadyMux serves GET /healthz/ready: 200 while ready() holds, 503 before.
func ReadyMux(ready func() bool) *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return m
}
