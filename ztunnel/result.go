package ztunnel

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/identity"
)

// Reasons of warren_ztunnel_connections_refused_total, and of the log line of
// a refused connection.
const (
	reasonNoOrigDst   = "no_original_destination"
	reasonRoute       = "route"
	reasonDial        = "dial"
	reasonHBONE       = "hbone"
	reasonAuthority   = "authority"
	reasonPolicy      = "policy"
	reasonWaypoint    = "not_via_waypoint" // a waypoint-bound pod's inbound that its waypoint did not carry
	reasonNotSteered  = "not_steered"
	reasonBadRequest  = "bad_request" // the HBONE request was malformed (hbone.Server refused it)
	reasonUnaccounted = "unaccounted" // a path that recorded no outcome: a bug
	// Refused mTLS handshakes (handshake.go).
	reasonNoClientCert = "no_client_certificate"
	reasonUntrusted    = "untrusted_certificate"
	reasonIdentity     = "identity"
	reasonHandshake    = "handshake"
)

// connResult is what became of one connection the ztunnel accepted. It
// records the connection's metrics and its log line exactly once, whichever
// way the connection ends, refusals before any dial included (as Istio
// ztunnel's result_tracker does): a handler makes one when it accepts, says
// what happens (refuse, open, revoke), and calls record at its end; record is
// idempotent, so a deferred call is the safety net.
type connResult struct {
	m         *metrics
	log       *slog.Logger
	direction string
	client    net.Addr
	start     time.Time

	mu       sync.Mutex
	reason   string // a refusal's, the first given
	err      error
	opened   *connMetrics
	attrs    []any  // the log line's labels, set by open
	revoked  string // why a new mesh view closed it (see Tunnel.SetMesh)
	recorded bool
}

// result starts the outcome of a connection from client.
func (m *metrics) result(log *slog.Logger, direction string, client net.Addr) *connResult {
	return &connResult{m: m, log: log, direction: direction, client: client, start: time.Now()}
}

// refuse says the connection is refused for reason (the first reason given
// stands).
func (r *connResult) refuse(reason string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reason == "" && r.opened == nil {
		r.reason, r.err = reason, err
	}
}

// open counts the connection opened to its destination. peer is the
// source's identity as its handshake proved it (zero without mTLS), or as
// the waypoint via ("<namespace>/<name>", "" if none) vouched for it: it is
// the source principal whether or not src, found by address, is known.
func (r *connResult) open(src *Workload, peer identity.ID, dst *Workload, svc *Service, mtls bool, via string) {
	lv := r.m.labelValues(r.direction, src, peer, dst, svc, mtls, via)
	cm := r.m.open(lv)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opened = &cm
	r.attrs = []any{"source_workload", lv[2] + "/" + lv[1], "source_principal", lv[3], "destination_workload", lv[5] + "/" + lv[4],
		"destination_service", lv[7], "connection_security_policy", lv[8], "waypoint", lv[9]}
}

// revoke says a new mesh view no longer allows the open connection, which
// is being closed.
func (r *connResult) revoke(why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.revoked == "" {
		r.revoked = why
	}
}

// record counts and logs the outcome, once: an opened connection as closed
// with its bytes (received: from the source), any other as refused.
func (r *connResult) record(received, sent int64, err error) {
	r.mu.Lock()
	if r.recorded {
		r.mu.Unlock()
		return
	}
	r.recorded = true
	opened, reason, rerr, attrs, revoked := r.opened, r.reason, r.err, r.attrs, r.revoked
	r.mu.Unlock()
	if opened == nil {
		if reason == "" {
			reason = reasonUnaccounted
		}
		if rerr == nil {
			rerr = err
		}
		r.m.refused.WithLabelValues(r.direction, reason).Inc()
		r.log.Info("connection refused", "direction", r.direction, "client", r.client, "reason", reason, "err", rerr)
		return
	}
	opened.done(received, sent)
	args := append([]any{"direction", r.direction, "client", r.client}, attrs...)
	args = append(args, "received", received, "sent", sent, "duration", time.Since(r.start).Round(time.Millisecond))
	if revoked != "" {
		r.log.Info("connection closed: no longer authorized", append(args, "reason", revoked)...)
		return
	}
	if err != nil {
		args = append(args, "err", err)
	}
	r.log.Debug("connection closed", args...)
}
