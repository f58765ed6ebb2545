package sideport

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

func TestReadyMux(t *testing.T) {
	var ready atomic.Bool
	m := ReadyMux(ready.Load)
	get := func() int {
		rec := httptest.NewRecorder()
		m.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz/ready", nil))
		return rec.Code
	}
	if c := get(); c != http.StatusServiceUnavailable {
		t.Errorf("before ready: %d, want 503", c)
	}
	ready.Store(true)
	if c := get(); c != http.StatusOK {
		t.Errorf("ready: %d, want 200", c)
	}
}

func TestAdminMux(t *testing.T) {
	rec := httptest.NewRecorder()
	AdminMux().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/cmdline", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("pprof cmdline: %d, want 200", rec.Code)
	}
}
