package ztunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/svid"
)

// SignFunc sends a PEM certificate signing request to the mesh CA and
// returns the PEM chain (leaf first) and the CA's PEM roots (may be empty).
// ControlPlane.Sign is one.
type SignFunc = svid.SignFunc

// certWait bounds how long a handshake waits for a certificate still on its
// way from the CA; then it fails (closed), and the next one waits again.
const certWait = hbone.DefaultHandshakeTimeout

// certEntry is a local identity's certificate as handshakes use it: ready at
// once when loaded from a file, or once the CA answered (fetchCert). Until
// then, handshakes wait for it (certWait at most), so a pod is served, and
// the node agent acked, before its identity's first certificate is issued.
type certEntry struct {
	src   *identity.CertSource
	ready chan struct{} // closed once src holds a certificate
}

func readyCert(src *identity.CertSource) *certEntry {
	e := &certEntry{src: src, ready: make(chan struct{})}
	close(e.ready)
	return e
}

func (e *certEntry) wait(ctx context.Context) error {
	select {
	case <-e.ready:
		return nil
	default:
	}
	timer := time.NewTimer(certWait)
	defer timer.Stop()
	select {
	case <-e.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("%w: the CA has not answered yet", identity.ErrNoCertificate)
	}
}

// getCertificate is the server's tls.Config.GetCertificate.
func (e *certEntry) getCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if err := e.wait(h.Context()); err != nil {
		return nil, err
	}
	return e.src.GetCertificate(h)
}

// getClientCertificate is the client's tls.Config.GetClientCertificate.
func (e *certEntry) getClientCertificate(r *tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if err := e.wait(r.Context()); err != nil {
		return nil, err
	}
	return e.src.GetClientCertificate(r)
}

// fetchCert gets a local identity's first certificate from the CA, retrying
// until it comes or the tunnel stops (the controller may not have seen a new
// pod on this node yet), then keeps it renewed. The key is made here and
// never leaves the node; only the CSR does.
func (t *Tunnel) fetchCert(id identity.ID, e *certEntry) {
	ctx := t.runCtx
	sign := func(ctx context.Context) (*tls.Certificate, error) { return t.signOnce(ctx, id) }
	cert, err := svid.Obtain(ctx, sign, func(err error, wait time.Duration) {
		t.metrics.certs.WithLabelValues("error").Inc()
		t.log.Info("certificate request failed, retrying", "identity", id, "err", err, "in", wait)
	})
	if err != nil {
		return
	}
	e.src.Store(cert)
	close(e.ready)
	t.metrics.certs.WithLabelValues("issued").Inc()
	t.log.Info("certificate issued", "identity", id, "not_after", cert.Leaf.NotAfter)
	svid.Renew(ctx, e.src, sign, func(cert *tls.Certificate) {
		t.metrics.certs.WithLabelValues("renewed").Inc()
		t.log.Info("certificate renewed", "identity", id, "not_after", cert.Leaf.NotAfter)
	}, func(leaf *x509.Certificate, err error, retry time.Duration) {
		t.metrics.certs.WithLabelValues("error").Inc()
		t.log.Warn("certificate renewal failed, keeping the valid one", "identity", id, "not_after", leaf.NotAfter, "retry_in", retry, "err", err)
	})
}

// signOnce has a certificate for id signed (svid.Sign), and adds the CA's
// roots to the tunnel's.
func (t *Tunnel) signOnce(ctx context.Context, id identity.ID) (*tls.Certificate, error) {
	cert, rootsPEM, err := svid.Sign(ctx, id, t.sign)
	if err != nil {
		return nil, err
	}
	if len(rootsPEM) > 0 {
		pool, err := loadRoots(t.cfg)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(rootsPEM) {
			return nil, errors.New("CA answered roots without a certificate")
		}
		t.roots.Store(pool)
	}
	return cert, nil
}
