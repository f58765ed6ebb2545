package model

import (
	"net"
	"net/http"
	"strconv"
	"strings"
)

// HTTPHeader is a header name (canonical) and value.
type HTTPHeader struct{ Name, Value string }

// HeaderModifier is a RequestHeaderModifier or ResponseHeaderModifier.
type HeaderModifier struct {
	Set, Add []HTTPHeader
	Remove   []string
}

// Apply sets, then adds, then removes.
func (m *HeaderModifier) Apply(h http.Header) {
	if m == nil {
		return
	}
	for _, kv := range m.Set {
		h[kv.Name] = []string{kv.Value}
	}
	for _, kv := range m.Add {
		h[kv.Name] = append(h[kv.Name], kv.Value)
	}
	for _, k := range m.Remove {
		delete(h, k)
	}
}

// PathModifier replaces the full path or the matched prefix.
type PathModifier struct {
	// Prefix: Value replaces the part of the path the rule's PathPrefix
	// match matched; otherwise Value is the whole new path.
	Prefix bool
	Value  string
}

// Apply returns the new path. m is the match that selected the rule; a
// prefix replacement on a match that is not a PathPrefix (Compile refuses
// such rules) leaves the path as it is.
func (pm *PathModifier) Apply(m *Match, path string) string {
	if pm == nil {
		return path
	}
	if !pm.Prefix {
		return pm.Value
	}
	if m == nil || m.PathType != PathPrefix {
		return path
	}
	rest := path
	if m.Path != "/" {
		rest = path[len(m.Path):] // "" or "/..."
	}
	out := strings.TrimSuffix(pm.Value, "/") + rest
	if out == "" || out[0] != '/' {
		out = "/" + out
	}
	return out
}

// Redirect is a RequestRedirect filter.
type Redirect struct {
	Scheme   string // "" keeps the request's
	Hostname string // "" keeps the request's
	Path     *PathModifier
	Port     uint16 // 0: see Location
	Status   int
}

// Location is the redirect's target for a request with this scheme, Host
// header, path and raw query; m is the match that selected the rule.
//
// Port, as the Gateway API says: the filter's; else, when the filter
// changes the scheme, none (the scheme's well-known one); else the port of
// the request's Host. A port that is the scheme's well-known one is left out.
func (r *Redirect) Location(m *Match, scheme, host, path, rawQuery string) string {
	hostname, port := host, ""
	if h, p, err := net.SplitHostPort(host); err == nil {
		hostname, port = h, p
	}
	if r.Hostname != "" {
		hostname = r.Hostname
	}
	if r.Scheme != "" && r.Scheme != scheme {
		scheme, port = r.Scheme, ""
	}
	if r.Port != 0 {
		port = strconv.Itoa(int(r.Port))
	}
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	if strings.Contains(hostname, ":") {
		hostname = "[" + hostname + "]"
	}
	loc := scheme + "://" + hostname
	if port != "" {
		loc += ":" + port
	}
	loc += r.Path.Apply(m, path)
	if rawQuery != "" {
		loc += "?" + rawQuery
	}
	return loc
}

// Rewrite is a URLRewrite filter.
type Rewrite struct {
	Hostname string // "" keeps the Host header
	Path     *PathModifier
}
