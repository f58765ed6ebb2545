// Package model is a waypoint's compiled state and the pure decisions made
// on it. Compile turns the distribution protobuf (meshv1.WaypointConfig:
// Services with their endpoints, HTTPRoutes and GRPCRoutes compiled by the
// controller from the Gateway API, workloads) into a State, validating it
// and reporting every problem with its field; the State answers which
// fronted Service port a tunnel's :authority is, with what protocol
// (DetectProtocol), which rule a request takes (Table.Match, with the
// Gateway API's precedence), what the rule's filters do to it (filter.go)
// and which backend a request goes to (PickBackend). Nothing here does I/O.
package model
