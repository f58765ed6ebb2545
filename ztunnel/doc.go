// Package ztunnel is Warren's per-node tunnel. It opens listeners and dials
// inside every enrolled pod's network namespace, so pod addresses stay the
// pods' own: redirected outbound connections (to listener ports of each
// ztunnel generation's own, see OutboundPort) go over HBONE (HTTP/2
// CONNECT over mutual TLS, internal/hbone) to the destination pod's 15008, or
// pass through in plaintext to destinations outside the mesh; inbound HBONE on
// 15008 and plaintext on 15006 are authenticated, checked against L4
// AuthorizationPolicies and the PeerAuthentication mode, then relayed to the
// pod's app.
//
// The decisions are pure functions (Route, Authorize) over a State built from
// a typed Config; the I/O around them lives in the _linux.go files. Pods come
// from a PodSource: today a static file, later the node agent's hand-off.
package ztunnel
