package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// Signer answers SVID requests: it authenticates the caller, checks that
// the caller is a service account allowed to ask (CallerRole: a ztunnel's,
// or a waypoint's), checks the CSR, and signs when the Authorizer allows the
// identity on the ztunnel's node, or when it is the waypoint's own.
type Signer struct {
	CA    *CA
	Authn Authenticator
	Authz Authorizer
	// Callers are the "namespace/serviceaccount" names allowed to ask, such
	// as "warren-system/ztunnel".
	Callers []string
	// Waypoints tells the waypoints' service accounts; nil: none.
	Waypoints Waypoints
	Log       *slog.Logger
	Metrics   *Metrics // optional
}

// Validate reports a Signer that cannot work.
func (s *Signer) Validate() error {
	switch {
	case s.CA == nil:
		return errors.New("signer: no CA")
	case s.Authn == nil || s.Authz == nil:
		return errors.New("signer: no authenticator or authorizer")
	case len(s.Callers) == 0:
		return errors.New("signer: no allowed callers")
	case s.Log == nil:
		return errors.New("signer: no logger")
	}
	return nil
}

// SignCSR returns the PEM chain (leaf first) of an SVID for the identity in
// csr, or an error: a *Denied with its reason when the request is refused,
// another error when the CA could not decide (the caller may retry).
func (s *Signer) SignCSR(ctx context.Context, token string, csr []byte) ([]byte, error) {
	chain, caller, err := s.sign(ctx, token, csr)
	var d *Denied
	switch {
	case err == nil:
		s.Metrics.observe("signed", "")
	case errors.As(err, &d):
		s.Metrics.observe("denied", d.Reason)
		s.Log.Warn("certificate request denied", "reason", d.Reason, "detail", d.Detail,
			"caller_ns", caller.Namespace, "caller_sa", caller.ServiceAccount, "caller_pod", caller.Pod, "node", caller.Node)
	default:
		s.Metrics.observe("error", "")
		s.Log.Error("certificate request failed", "err", err, "node", caller.Node)
	}
	return chain, err
}

func (s *Signer) sign(ctx context.Context, token string, csrData []byte) ([]byte, Caller, error) {
	caller, err := s.Authn.Authenticate(ctx, token)
	if err != nil {
		return nil, caller, err
	}
	role, err := CallerRole(ctx, caller, s.Callers, s.Waypoints)
	if err != nil {
		return nil, caller, err
	}
	csr, id, err := CheckCSR(csrData, s.CA.TrustDomain())
	if err != nil {
		return nil, caller, err
	}
	if role == RoleWaypoint {
		err = authorizeWaypoint(caller, id)
	} else {
		err = s.Authz.Authorize(ctx, caller.Node, id)
	}
	if err != nil {
		return nil, caller, err
	}
	chain, err := s.CA.Sign(csr, id)
	if err != nil {
		return nil, caller, fmt.Errorf("sign: %w", err)
	}
	s.Log.Info("certificate signed", "identity", id.String(), "node", caller.Node)
	return chain, caller, nil
}
