package main

import (
	"context"
	"log/slog"
)

// Scenario is one path from the client pod to a server pod. Warren's data path plugs in here:
// Setup starts its ztunnels (and enrolls the pods), Proxies names their processes so that their
// CPU and memory are measured, Teardown stops them.
type Scenario interface {
	Name() string
	Description() string
	// Setup starts what the scenario needs and says where the client should connect.
	Setup(ctx context.Context, env *Env) (Target, error)
	// Proxies are the processes whose CPU and memory the scenario is charged with.
	Proxies() []*Proc
	// Teardown stops what Setup started. It is called even when Setup failed half-way.
	Teardown() error
}

// Target is where the load generators in the client pod connect.
type Target struct {
	Host      string
	IperfPort uint16
	HTTPPort  uint16
}

// Env is what a scenario may use: the topology and a private working directory.
type Env struct {
	Topo *Topology
	Dir  string // for certificates and configuration; removed after the run
	Log  *slog.Logger
}

// direct is the baseline: the client talks to a server pod with nothing in between but the
// nodes' routing.
type direct struct {
	name, desc, host string
}

func (d *direct) Name() string        { return d.name }
func (d *direct) Description() string { return d.desc }
func (d *direct) Setup(context.Context, *Env) (Target, error) {
	return Target{Host: d.host, IperfPort: iperfPort, HTTPPort: httpPort}, nil
}
func (d *direct) Proxies() []*Proc { return nil }
func (d *direct) Teardown() error  { return nil }

// planned are the scenarios that belong in the comparison but cannot run yet. They are
// reported as not run, with the reason, and never with numbers.
var planned = []struct{ name, desc, reason string }{
	{
		"warren-waypoint",
		"as warren-l4, through a waypoint proxy (L7) on node2",
		"no waypoint exists yet (waypoint/ is empty)",
	},
}

// scenarios lists what can run, in the order each repetition runs them.
func scenarios() []Scenario {
	return []Scenario{
		&direct{"direct", "client (node1) → server (node2), routed through both nodes, no proxy", serverIP},
		&direct{"direct-same-node", "client → server, both on node1, no proxy", localIP},
		&haproxyPair{},
		&warrenL4{},
		&warrenL4{podAddress: true},
	}
}

// optional scenarios run only when -scenarios names them.
var optional = map[string]bool{"warren-l4-pod-address": true}
