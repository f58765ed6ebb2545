// Package cniapi is the small API between the warren-cni plugin and the node
// agent: HTTP with JSON bodies over a Unix socket (DefaultSocket). It is a
// leaf, so that the plugin binary carries neither client-go nor eBPF.
//
//	POST /v1/add  AddRequest → 200 AddResponse, or an error status with ErrorResponse
//	POST /v1/del  DelRequest → 200, or an error status with ErrorResponse
package cniapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
)

// DefaultSocket is where the agent serves the plugin.
const DefaultSocket = "/var/run/warren/cni.sock"

// Paths of the two calls.
const (
	PathAdd = "/v1/add"
	PathDel = "/v1/del"
)

// AddRequest asks the agent to enroll a pod the runtime is creating, if its labels say so.
type AddRequest struct {
	Namespace   string       `json:"namespace"`
	Name        string       `json:"name"`
	UID         string       `json:"uid,omitempty"` // K8S_POD_UID; runtimes before containerd 1.7 do not send it
	ContainerID string       `json:"containerID"`
	Netns       string       `json:"netns"` // CNI_NETNS
	IPs         []netip.Addr `json:"ips"`   // from the previous plugin's result
}

// AddResponse says what the agent did. A pod that must be enrolled and
// cannot be is an error status instead.
type AddResponse struct {
	Enrolled bool   `json:"enrolled"`
	Reason   string `json:"reason,omitempty"`
}

// DelRequest asks the agent to unenroll a pod's sandbox; idempotent.
type DelRequest struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	UID         string `json:"uid,omitempty"`
	ContainerID string `json:"containerID"`
}

// ErrorResponse is the body of an error status.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Client calls the agent.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client for the agent at socket (DefaultSocket if empty).
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	var d net.Dialer
	return &Client{Socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

// Add asks for the pod's enrollment and waits for the answer (bounded by ctx).
func (c *Client) Add(ctx context.Context, req AddRequest) (AddResponse, error) {
	var resp AddResponse
	err := c.call(ctx, PathAdd, req, &resp)
	return resp, err
}

// Del asks for the pod's unenrollment.
func (c *Client) Del(ctx context.Context, req DelRequest) error {
	return c.call(ctx, PathDel, req, nil)
}

func (c *Client) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://warren-agent"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := c.http.Do(hreq)
	if err != nil {
		return fmt.Errorf("warren agent at %s: %w", c.Socket, err)
	}
	defer hresp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(hresp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("warren agent at %s: %w", c.Socket, err)
	}
	if hresp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = hresp.Status
		}
		return fmt.Errorf("warren agent: %s", e.Error)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("warren agent: answer: %w", err)
	}
	return nil
}
