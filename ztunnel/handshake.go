package ztunnel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/warrenmesh/warren/internal/identity"
)

// countRefusals returns srv (an identity.ServerConfig) with every refused
// client handshake counted in warren_ztunnel_connections_refused_total
// (direction inbound) by reason; hbone.Server logs it.
//
// A client that sends no certificate would be refused by crypto/tls itself
// under RequireAnyClientCert, before any callback: the copy asks with
// RequestClientCert instead, so that the refusal reaches VerifyConnection,
// which refuses an empty chain first (and identity's verifier, then
// hbone.Server's identity.PeerID, would refuse it again).
func (m *metrics) countRefusals(srv *tls.Config) *tls.Config {
	c := srv.Clone()
	verify := srv.VerifyConnection
	c.ClientAuth = tls.RequestClientCert
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			m.refused.WithLabelValues("inbound", reasonNoClientCert).Inc()
			return errors.New("ztunnel: client sent no certificate")
		}
		err := verify(cs)
		if err != nil {
			m.refused.WithLabelValues("inbound", handshakeReason(err)).Inc()
		}
		return err
	}
	return c
}

// handshakeReason classifies a refusal of identity's verifier.
func handshakeReason(err error) string {
	var (
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &unknownCA), errors.As(err, &invalid):
		return reasonUntrusted
	case errors.Is(err, identity.ErrUnexpectedPeer):
		return reasonIdentity
	}
	return reasonHandshake
}
