package zds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"
)

// Handler is the ztunnel's side of the protocol. Each method's error is
// sent back to the agent in the ack.
type Handler interface {
	// AddPod starts serving a pod; the handler owns netns (close it when
	// the pod goes). A known pod is replaced.
	AddPod(ctx context.Context, pod Pod, netns *os.File) error
	// DeletePod stops serving a pod.
	DeletePod(ctx context.Context, uid string) error
	// SnapshotSent ends a snapshot: pods it did not name are gone.
	SnapshotSent(ctx context.Context) error
}

// Client is the ztunnel's connection to the agent, kept up by Run.
type Client struct {
	// Path is the agent's socket; DefaultPath if empty.
	Path    string
	Handler Handler
	// Backoff is the wait between reconnects, doubling up to 5 s; 100 ms if zero.
	Backoff time.Duration
	Logger  *slog.Logger
	// OnConnect, if set, is called once per connection after the hello is
	// sent, before the first message of its snapshot: a handler that must
	// tell a snapshot's pods from those it had can start counting there.
	OnConnect func()
	// NoReconnect, once closed, makes the current connection the last: Run
	// returns nil when it ends instead of connecting again. A stopping
	// ztunnel closes it and keeps serving until the agent supersedes it (a
	// successor took the pods over) or its own deadline ends ctx. Nil: never.
	NoReconnect <-chan struct{}
}

// Run connects to the agent and applies its messages until ctx ends,
// reconnecting (and so getting a full snapshot again) whenever the
// connection is lost, except when the agent said another ztunnel superseded
// this one: Run then returns ErrSuperseded.
func (c *Client) Run(ctx context.Context) error {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := c.Backoff
	if backoff == 0 {
		backoff = 100 * time.Millisecond
	}
	wait := backoff
	for {
		served, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrSuperseded) {
			log.Info("another ztunnel took over the pods; not reconnecting")
			return err
		}
		select {
		case <-c.NoReconnect:
			log.Info("agent connection ended; stopping, not reconnecting", "err", err)
			return nil
		default:
		}
		if served {
			wait = backoff
		}
		log.Warn("agent connection lost, reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-c.NoReconnect:
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// session runs one connection; served reports whether it got as far as a message.
func (c *Client) session(ctx context.Context) (served bool, err error) {
	path := c.Path
	if path == "" {
		path = DefaultPath
	}
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return false, fmt.Errorf("zds: dial: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := send(conn, Message{Type: TypeHello, Version: Version}, nil); err != nil {
		return false, err
	}
	if c.OnConnect != nil {
		c.OnConnect()
	}
	for {
		m, files, err := recv(conn)
		if err != nil {
			return served, err
		}
		if m.Type == TypeSuperseded {
			closeAll(files)
			return served, ErrSuperseded
		}
		served = true
		herr := c.apply(ctx, m, files)
		ack := Message{Type: TypeAck}
		if herr != nil {
			ack.Error = herr.Error()
		}
		if err := send(conn, ack, nil); err != nil {
			return served, err
		}
	}
}

func (c *Client) apply(ctx context.Context, m Message, files []*os.File) error {
	switch m.Type {
	case TypeAdd:
		if m.Pod == nil || m.Pod.UID == "" || len(files) != 1 {
			closeAll(files)
			return errors.New("add: want a pod and one netns descriptor")
		}
		return c.Handler.AddPod(ctx, *m.Pod, files[0])
	case TypeDelete:
		closeAll(files)
		if m.UID == "" {
			return errors.New("delete: no uid")
		}
		return c.Handler.DeletePod(ctx, m.UID)
	case TypeSnapshotSent:
		closeAll(files)
		return c.Handler.SnapshotSent(ctx)
	}
	closeAll(files)
	return fmt.Errorf("unknown message type %q", m.Type)
}
