// Package identity holds Warren's workload identities: SPIFFE IDs of the form
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>, and the mutual TLS
// configurations that tunnels use to prove and check them. Certificates are read
// through an atomically swapped source so that rotation needs no restart.
package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// DefaultTrustDomain is the trust domain used when none is configured.
const DefaultTrustDomain = "cluster.local"

const (
	scheme = "spiffe://"
	// maxIDLen is the SPIFFE limit on the length of an ID's URI.
	maxIDLen = 2048
	// Kubernetes limits: namespaces are DNS-1123 labels, service accounts DNS-1123 subdomains.
	maxNamespaceLen = 63
	maxSALen        = 253
	maxTrustDomain  = 255
)

// ErrInvalidID is wrapped by every error that Parse and Validate return.
var ErrInvalidID = errors.New("invalid SPIFFE ID")

// ID is a workload identity. The zero ID is invalid.
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// New returns the ID of a service account in the default trust domain.
func New(namespace, serviceAccount string) ID {
	return ID{TrustDomain: DefaultTrustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
}

// String formats the ID as a SPIFFE URI. It does not validate.
func (id ID) String() string {
	return scheme + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// LogValue logs the ID as its URI.
func (id ID) LogValue() slog.Value { return slog.StringValue(id.String()) }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// Validate reports whether every part of the ID is well formed.
func (id ID) Validate() error {
	if err := validateTrustDomain(id.TrustDomain); err != nil {
		return err
	}
	if err := validateName("namespace", id.Namespace, maxNamespaceLen, false); err != nil {
		return err
	}
	if err := validateName("service account", id.ServiceAccount, maxSALen, true); err != nil {
		return err
	}
	if len(id.String()) > maxIDLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidID, maxIDLen)
	}
	return nil
}

// Parse parses spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
// It is strict: no query, fragment, port, user info, percent-encoding or extra
// path segments, and the trust domain must be lower case, because two spellings
// of one identity would let a policy be bypassed.
func Parse(s string) (ID, error) {
	if len(s) > maxIDLen {
		return ID{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidID, maxIDLen)
	}
	rest, ok := strings.CutPrefix(s, scheme)
	if !ok {
		return ID{}, fmt.Errorf("%w: %q: scheme is not spiffe://", ErrInvalidID, s)
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return ID{}, fmt.Errorf("%w: %q: no path", ErrInvalidID, s)
	}
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return ID{}, fmt.Errorf("%w: %q: path is not /ns/<namespace>/sa/<service account>", ErrInvalidID, s)
	}
	id := ID{TrustDomain: td, Namespace: parts[1], ServiceAccount: parts[3]}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("%q: %w", s, err)
	}
	return id, nil
}

// MustParse is Parse for constants in tests and examples; it panics on error.
func MustParse(s string) ID {
	id, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return id
}

func validateTrustDomain(td string) error {
	if td == "" {
		return fmt.Errorf("%w: empty trust domain", ErrInvalidID)
	}
	if len(td) > maxTrustDomain {
		return fmt.Errorf("%w: trust domain longer than %d bytes", ErrInvalidID, maxTrustDomain)
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("%w: trust domain %q: character %q not allowed", ErrInvalidID, td, c)
		}
	}
	return nil
}

// validateName checks a Kubernetes object name as it appears in a SPIFFE path:
// lower-case alphanumerics and '-', plus '.' for subdomains, starting and ending
// alphanumeric.
func validateName(what, v string, maxLen int, dots bool) error {
	if v == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalidID, what)
	}
	if len(v) > maxLen {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalidID, what, maxLen)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		switch {
		case alnum:
		case (c == '-' || dots && c == '.') && i > 0 && i < len(v)-1:
			if c == '.' && (v[i-1] == '.' || v[i+1] == '.') {
				return fmt.Errorf("%w: %s %q: empty label", ErrInvalidID, what, v)
			}
		default:
			return fmt.Errorf("%w: %s %q: character %q not allowed here", ErrInvalidID, what, v, c)
		}
	}
	return nil
}

// FromCertificate returns the SPIFFE ID in a certificate's URI SAN. A SVID
// carries exactly one URI SAN; a certificate with several is refused rather than
// guessing which one names the peer.
func FromCertificate(cert *x509.Certificate) (ID, error) {
	if cert == nil {
		return ID{}, errors.New("no certificate")
	}
	if len(cert.URIs) != 1 {
		return ID{}, fmt.Errorf("certificate has %d URI SANs, want exactly 1", len(cert.URIs))
	}
	return Parse(cert.URIs[0].String())
}
