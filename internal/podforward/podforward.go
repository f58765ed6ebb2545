// Package podforward opens a Kubernetes port-forward (the kubelet's, through
// the API server) from a loopback port of this machine to one port of a pod,
// the way kubectl port-forward does; warrenctl reaches the node agents and
// ztunnels with it.
package podforward

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// A Forward is an open port-forward; Addr is its local end.
type Forward struct {
	Addr string
	stop chan struct{}
	done chan error
}

// Close stops forwarding.
func (f *Forward) Close() {
	close(f.stop)
	<-f.done
}

// Open forwards a loopback port of this machine to port of the pod. It
// returns once the forward is ready, or its error; ctx bounds that wait
// only: Close ends the forward.
func Open(ctx context.Context, cfg *rest.Config, namespace, pod string, port int) (*Forward, error) {
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, err
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/portforward", namespace, pod)
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return nil, err
	}
	f := &Forward{stop: stop, done: make(chan error, 1)}
	go func() { f.done <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-f.done:
		f.done <- err
		return nil, fmt.Errorf("port-forward to %s/%s:%d: %w", namespace, pod, port, err)
	case <-ctx.Done():
		f.Close()
		return nil, ctx.Err()
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		f.Close()
		return nil, fmt.Errorf("port-forward to %s/%s:%d: ports %v: %v", namespace, pod, port, ports, err)
	}
	f.Addr = fmt.Sprintf("127.0.0.1:%d", ports[0].Local)
	return f, nil
}
