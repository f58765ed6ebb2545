// Package cni is the node agent's side of the warren-cni plugin: the server
// the plugin calls over a Unix socket (package cniapi's protocol), which
// hands each ADD and DEL to a Handler (the agent's reconciler), and the
// installer that chains the plugin into the node's CNI configuration and
// copies its binary (Install, kept in place by the agent; Uninstall at
// Warren's removal).
package cni
