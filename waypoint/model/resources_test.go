package model

import (
	"testing"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
)

func TestFromResources(t *testing.T) {
	res := map[string]*meshv1.Resource{
		"service/b/web":     {Key: "service/b/web", Kind: &meshv1.Resource_Service{Service: &meshv1.Service{Namespace: "b", Name: "web"}}},
		"service/a/web":     {Key: "service/a/web", Kind: &meshv1.Resource_Service{Service: &meshv1.Service{Namespace: "a", Name: "web"}}},
		"route/a/r":         {Key: "route/a/r", Kind: &meshv1.Resource_Route{Route: &meshv1.Route{Namespace: "a", Name: "r", Kind: meshv1.RouteKind_ROUTE_KIND_HTTP}}},
		"grpcroute/a/g":     {Key: "grpcroute/a/g", Kind: &meshv1.Resource_Route{Route: &meshv1.Route{Namespace: "a", Name: "g", Kind: meshv1.RouteKind_ROUTE_KIND_GRPC}}},
		"peer/u1":           {Key: "peer/u1", Kind: &meshv1.Resource_Peer{Peer: &meshv1.Peer{Uid: "u1"}}},
		"policy/a/p":        {Key: "policy/a/p", Kind: &meshv1.Resource_Policy{Policy: &meshv1.Policy{Namespace: "a", Name: "p"}}},
		"workload/u2":       {Key: "workload/u2", Kind: &meshv1.Resource_Workload{Workload: &meshv1.Workload{Uid: "u2"}}},
		"something-new/x/y": {Key: "something-new/x/y"},
	}
	cfg := FromResources(res)
	if len(cfg.Services) != 2 || cfg.Services[0].Namespace != "a" || cfg.Services[1].Namespace != "b" {
		t.Errorf("services (in key order): %v", cfg.Services)
	}
	if len(cfg.Routes) != 2 || cfg.Routes[0].Name != "g" || cfg.Routes[1].Name != "r" {
		t.Errorf("routes, GRPCRoutes too, in key order: %v", cfg.Routes)
	}
	if len(cfg.Workloads) != 1 || cfg.Workloads[0].Uid != "u1" {
		t.Errorf("workloads are the peers: %v", cfg.Workloads)
	}
}
