package model

import "strings"

// Protocol is what a waypoint speaks on a Service port.
type Protocol int

const (
	// TCP ports are passed through as bytes: no routes, no L7 telemetry.
	TCP Protocol = iota
	// HTTP is HTTP/1.1 (clients may still use HTTP/2 with prior knowledge).
	HTTP
	// HTTP2 is cleartext HTTP/2 (h2c) to the backends.
	HTTP2
	// GRPC is HTTP/2 with gRPC's status in trailers and GRPCRoutes.
	GRPC
)

func (p Protocol) String() string {
	switch p {
	case HTTP:
		return "http"
	case HTTP2:
		return "http2"
	case GRPC:
		return "grpc"
	default:
		return "tcp"
	}
}

// IsHTTP2 reports whether backends are spoken to in HTTP/2.
func (p Protocol) IsHTTP2() bool { return p == HTTP2 || p == GRPC }

// DetectProtocol gives a Service port's protocol from its appProtocol, and
// when that is empty from its name (Istio's convention: the name or the part
// before its first '-'). An appProtocol the waypoint does not know makes the
// port TCP, whatever its name: the owner said what it is.
func DetectProtocol(appProtocol, portName string) Protocol {
	if appProtocol != "" {
		switch strings.ToLower(appProtocol) {
		case "http", "http1", "http/1.1":
			return HTTP
		case "http2", "h2c", "kubernetes.io/h2c":
			return HTTP2
		case "grpc":
			return GRPC
		default:
			return TCP
		}
	}
	name := strings.ToLower(portName)
	if i := strings.IndexByte(name, '-'); i >= 0 {
		name = name[:i]
	}
	switch name {
	case "http":
		return HTTP
	case "http2", "h2c":
		return HTTP2
	case "grpc":
		return GRPC
	default:
		return TCP
	}
}
