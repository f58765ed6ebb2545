package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/warrenmesh/warren/internal/identity"
)

// Reason says why a request was refused; it is logged, counted and returned
// to the caller.
type Reason string

// The reasons a request is refused.
const (
	ReasonUnauthenticated  Reason = "Unauthenticated"  // token missing, invalid, or not bound to a pod on a node
	ReasonCallerNotAllowed Reason = "CallerNotAllowed" // authenticated, but not a service account that may ask
	ReasonMalformedCSR     Reason = "MalformedCSR"     // not a PEM or DER CSR, or its signature is wrong
	ReasonWrongKeyType     Reason = "WrongKeyType"     // not ECDSA P-256
	ReasonWrongSANCount    Reason = "WrongSANCount"    // not exactly one URI SAN, or other SANs too
	ReasonWrongSAN         Reason = "WrongSAN"         // the URI SAN is no SPIFFE ID of this trust domain
	ReasonNotOnNode        Reason = "NotOnNode"        // no unfinished pod of that service account is bound to the caller's node
	ReasonNotOwnIdentity   Reason = "NotOwnIdentity"   // a waypoint asked for another identity than its own
)

// Denied is the error of every refused request.
type Denied struct {
	Reason Reason
	Detail string
}

func (d *Denied) Error() string {
	return "certificate request denied: " + string(d.Reason) + ": " + d.Detail
}

func deny(r Reason, format string, args ...any) *Denied {
	return &Denied{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the reason of a Denied error, or "" for other errors.
func ReasonOf(err error) Reason {
	var d *Denied
	if errors.As(err, &d) {
		return d.Reason
	}
	return ""
}

// CheckCSR parses a CSR (PEM or DER) and checks what a SVID request must be:
// a valid self-signature, an ECDSA P-256 key, exactly one SAN, a URI, that is
// a SPIFFE ID of trustDomain. It returns the CSR and the identity requested.
func CheckCSR(data []byte, trustDomain string) (*x509.CertificateRequest, identity.ID, error) {
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
			return nil, identity.ID{}, deny(ReasonMalformedCSR, "PEM block %q, want CERTIFICATE REQUEST", b.Type)
		}
		data = b.Bytes
	}
	csr, err := x509.ParseCertificateRequest(data)
	if err != nil {
		return nil, identity.ID{}, deny(ReasonMalformedCSR, "%v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, identity.ID{}, deny(ReasonMalformedCSR, "signature: %v", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, identity.ID{}, deny(ReasonWrongKeyType, "ECDSA on %s, want P-256", k.Curve.Params().Name)
		}
	default:
		return nil, identity.ID{}, deny(ReasonWrongKeyType, "%s key, want ECDSA P-256", csr.PublicKeyAlgorithm)
	}
	if n := len(csr.DNSNames) + len(csr.EmailAddresses) + len(csr.IPAddresses); n > 0 || len(csr.URIs) != 1 {
		return nil, identity.ID{}, deny(ReasonWrongSANCount, "%d URI SANs and %d other SANs, want exactly one URI SAN", len(csr.URIs), n)
	}
	id, err := identity.Parse(csr.URIs[0].String())
	if err != nil {
		return nil, identity.ID{}, deny(ReasonWrongSAN, "%v", err)
	}
	if id.TrustDomain != trustDomain {
		return nil, identity.ID{}, deny(ReasonWrongSAN, "trust domain %q, this mesh signs for %q", id.TrustDomain, trustDomain)
	}
	return csr, id, nil
}
