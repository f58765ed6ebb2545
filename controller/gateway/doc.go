// Package gateway runs waypoints: a Gateway API Gateway of class
// warren-waypoint becomes, in its own namespace, a ServiceAccount (so the
// waypoint has its own SPIFFE identity from the mesh CA), a copy of the
// mesh roots, a Deployment of cmd/waypoint and a Service in front of it, all
// owned by the Gateway so that deleting it removes them. The Gateway's and
// the GatewayClass's status say whether that worked, the way the Gateway API
// spec asks (Accepted, Programmed, the address).
//
// Rendering the objects and computing the status are pure functions
// (render.go, status.go); reconcile.go applies them.
package gateway
