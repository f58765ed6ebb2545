package ca

import (
	"context"
	"fmt"
	"slices"

	"github.com/warrenmesh/warren/internal/identity"
)

// Waypoints tells which service accounts are waypoints'. The controller
// runs a waypoint as a ServiceAccount named like its Gateway, in the
// Gateway's namespace (controller/gateway).
type Waypoints interface {
	// IsWaypoint reports whether namespace/name is a waypoint's service
	// account; an error when it cannot tell (the caller may retry).
	IsWaypoint(ctx context.Context, namespace, name string) (bool, error)
}

// WaypointsFunc adapts a function to Waypoints.
type WaypointsFunc func(ctx context.Context, namespace, name string) (bool, error)

// IsWaypoint implements Waypoints.
func (f WaypointsFunc) IsWaypoint(ctx context.Context, namespace, name string) (bool, error) {
	return f(ctx, namespace, name)
}

// Role is what an authenticated caller may act as.
type Role int

// The roles.
const (
	// RoleNode is a node's ztunnel: it gets its node's view and
	// certificates for the identities of its node's pods.
	RoleNode Role = iota + 1
	// RoleWaypoint is a waypoint: it gets the waypoint view and a
	// certificate for its own identity only.
	RoleWaypoint
)

// CallerRole decides what c may act as: a node's ztunnel when its service
// account is one of callers ("namespace/serviceaccount"), a waypoint when
// waypoints (nil: none) says its service account is one. Anyone else is
// denied (ReasonCallerNotAllowed); an error that is no *Denied means
// waypoints could not tell.
func CallerRole(ctx context.Context, c Caller, callers []string, waypoints Waypoints) (Role, error) {
	if slices.Contains(callers, c.Namespace+"/"+c.ServiceAccount) {
		return RoleNode, nil
	}
	if waypoints != nil {
		ok, err := waypoints.IsWaypoint(ctx, c.Namespace, c.ServiceAccount)
		if err != nil {
			return 0, fmt.Errorf("is %s/%s a waypoint: %w", c.Namespace, c.ServiceAccount, err)
		}
		if ok {
			return RoleWaypoint, nil
		}
	}
	return 0, deny(ReasonCallerNotAllowed, "service account %s/%s is neither an allowed caller nor a waypoint's", c.Namespace, c.ServiceAccount)
}

// authorizeWaypoint allows a waypoint its own identity and nothing else.
func authorizeWaypoint(c Caller, id identity.ID) error {
	if id.Namespace != c.Namespace || id.ServiceAccount != c.ServiceAccount {
		return deny(ReasonNotOwnIdentity, "waypoint %s/%s may only have its own identity, not %s", c.Namespace, c.ServiceAccount, id)
	}
	return nil
}
