package identity

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ErrNoPEMCertificate: PEM data without a CERTIFICATE block.
var ErrNoPEMCertificate = errors.New("no PEM certificate")

// ParseCertificatesPEM returns the CERTIFICATE blocks of data, in order,
// skipping blocks of other types; none at all is ErrNoPEMCertificate.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, ErrNoPEMCertificate
	}
	return out, nil
}
