// Package waypoint is Warren's L7 proxy: the data plane of a waypoint, a
// Deployment with its own ServiceAccount that the ztunnels send the traffic
// of the Services it fronts to, over HBONE.
//
// A tunnel comes in on the waypoint's HBONE listener (internal/hbone's
// Server, the waypoint's own certificate) with the caller's SPIFFE ID from
// the mTLS handshake and the Service's VIP:port as :authority. The port's
// protocol (model.DetectProtocol) decides the rest: TCP ports are relayed
// as bytes to an endpoint; HTTP ports are served by net/http (HTTP/1.1 with
// keep-alive and upgrades, and HTTP/2 with prior knowledge, so gRPC with
// its trailers and streams) on the tunnel. Each request takes its route
// (model.Table), filters, a weighted backend, an endpoint (lb) and retries
// (retry), and goes out over a pooled HTTP connection whose transport is a
// new HBONE stream to the endpoint's pod, opened as the waypoint's identity
// and carrying the original caller (Forwarded: for=<ip>, X-Warren-Caller:
// <SPIFFE ID>), which the destination trusts from waypoints only.
//
// Pure decisions live in the subpackages model, lb and retry; this package
// does the I/O.
package waypoint
