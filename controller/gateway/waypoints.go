package gateway

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Waypoints tells the CA and the distribution API (ca.Waypoints) which
// service accounts are waypoints': namespace/name is one when a Gateway of
// class ClassName of that name, not being deleted, is in that namespace (its
// waypoint runs as the ServiceAccount Render names like it).
//
// Decision: the Gateway, not the Deployment the controller renders from it.
// The Gateway is what the user declared and what the controller acts on;
// a Deployment is derived (it may lag behind a deleted Gateway until the
// garbage collector runs), and its labels are no stronger a proof. Either
// way the rule grants nothing beyond the caller's own identity: the CA signs
// for the token's own service account only.
type Waypoints struct {
	// Reader reads Gateways: the manager's cached client.
	Reader client.Reader
}

// IsWaypoint implements ca.Waypoints.
func (w Waypoints) IsWaypoint(ctx context.Context, namespace, name string) (bool, error) {
	var gw gwv1.Gateway
	err := w.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &gw)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return string(gw.Spec.GatewayClassName) == ClassName && gw.DeletionTimestamp == nil, nil
}
