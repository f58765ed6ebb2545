package model

import (
	"maps"
	"slices"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
)

// FromResources is the WaypointConfig of the controller's resources held by
// a waypoint's subscription: its Services, routes (HTTPRoutes and
// GRPCRoutes alike) and peers, in key order. Kinds a waypoint does not serve
// from are ignored (a newer controller may send more).
func FromResources(res map[string]*meshv1.Resource) *meshv1.WaypointConfig {
	cfg := &meshv1.WaypointConfig{}
	for _, k := range slices.Sorted(maps.Keys(res)) {
		switch r := res[k]; {
		case r.GetService() != nil:
			cfg.Services = append(cfg.Services, r.GetService())
		case r.GetRoute() != nil:
			cfg.Routes = append(cfg.Routes, r.GetRoute())
		case r.GetPeer() != nil:
			cfg.Workloads = append(cfg.Workloads, r.GetPeer())
		}
	}
	return cfg
}
