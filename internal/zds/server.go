package zds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/sockfile"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// AckTimeout bounds the wait for each ack; 5 s if zero. The ztunnel
	// acks an add once the pod's listeners are open and registered, which
	// takes milliseconds: it waits for nothing remote (a certificate the
	// mesh CA has yet to issue comes after the ack, see ztunnel.certEntry).
	AckTimeout time.Duration
	Logger     *slog.Logger
}

// Server is the agent's side: it holds every enrolled pod's netns open and
// keeps the connected ztunnel (at most one) told.
type Server struct {
	ln   *sockfile.Listener
	opts ServerOptions
	log  *slog.Logger

	// io serializes the conversations (a snapshot, each delta), so that a
	// delta follows any snapshot in flight and reaches the connection that
	// snapshot makes current. A pod's netns descriptor is closed only while
	// io is held: no message in flight carries a closed one. Order: io, then mu.
	io sync.Mutex
	// mu covers the fields below, only for reads and writes of them: no
	// I/O under it, so Connected and Close never wait for a ztunnel.
	mu      sync.Mutex
	pods    map[string]*entry
	conn    *net.UnixConn          // the ztunnel, once its snapshot is acked; nil when none
	pending map[*net.UnixConn]bool // connections in their snapshot, for Close
	closed  bool
}

type entry struct {
	pod   Pod
	netns *os.File
}

// Listen listens on path (DefaultPath if empty), replacing a socket file
// already there (a stale one, or a previous agent's during a rolling update).
func Listen(path string, opts ServerOptions) (*Server, error) {
	if path == "" {
		path = DefaultPath
	}
	if opts.AckTimeout == 0 {
		opts.AckTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// A previous agent's socket is replaced; that agent keeps its
	// connected ztunnel until it exits, and leaves this socket then. Only
	// root (the ztunnel) may connect: the socket hands out namespaces.
	ln, err := sockfile.Listen("unixpacket", path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("zds: listen: %w", err)
	}
	return &Server{ln: ln, opts: opts, log: opts.Logger, pods: map[string]*entry{}, pending: map[*net.UnixConn]bool{}}, nil
}

// Addr is the socket's path.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve accepts ztunnel connections until Close or ctx ends. Each new one
// gets the full snapshot, then replaces the previous, which is told it was
// superseded (see the package documentation).
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("zds: accept: %w", err)
		}
		go s.handshake(c)
	}
}

// handshake reads the ztunnel's hello, then replays the snapshot to it.
func (s *Server) handshake(c *net.UnixConn) {
	_ = c.SetDeadline(time.Now().Add(s.opts.AckTimeout))
	m, files, err := recv(c)
	closeAll(files)
	if err == nil && (m.Type != TypeHello || m.Version != Version) {
		err = fmt.Errorf("want hello version %d, got %s version %d", Version, m.Type, m.Version)
	}
	if err != nil {
		s.log.Warn("ztunnel handshake failed", "err", err)
		c.Close()
		return
	}
	s.io.Lock()
	defer s.io.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	snapshot := make([]*entry, 0, len(s.pods))
	for _, e := range s.pods {
		snapshot = append(snapshot, e)
	}
	s.pending[c] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, c)
		s.mu.Unlock()
	}()
	sort.Slice(snapshot, func(i, j int) bool { return snapshot[i].pod.UID < snapshot[j].pod.UID })
	for _, e := range snapshot {
		if err := s.exchange(c, Message{Type: TypeAdd, Pod: &e.pod}, e.netns); err != nil {
			s.log.Warn("ztunnel snapshot failed", "pod", e.pod.UID, "err", err)
			if !errors.Is(err, ErrRejected) {
				c.Close()
				return
			}
		}
	}
	if err := s.exchange(c, Message{Type: TypeSnapshotSent}, nil); err != nil {
		s.log.Warn("ztunnel snapshot failed", "err", err)
		c.Close()
		return
	}
	s.mu.Lock()
	prev, closed := s.conn, s.closed
	if !closed {
		s.conn = c
	}
	s.mu.Unlock()
	if closed {
		c.Close()
		return
	}
	if prev != nil {
		// The new ztunnel holds every pod's listeners now: the previous
		// one must not come back for them.
		_ = prev.SetDeadline(time.Now().Add(s.opts.AckTimeout))
		if err := send(prev, Message{Type: TypeSuperseded}, nil); err != nil {
			s.log.Info("previous ztunnel not told it was superseded", "err", err)
		}
		prev.Close()
	}
	s.log.Info("ztunnel connected, snapshot sent", "pods", len(snapshot))
}

// exchange sends one message and waits for its ack. Call with s.io held.
func (s *Server) exchange(c *net.UnixConn, m Message, fd *os.File) error {
	_ = c.SetDeadline(time.Now().Add(s.opts.AckTimeout))
	if err := send(c, m, fd); err != nil {
		return err
	}
	ack, files, err := recv(c)
	closeAll(files)
	switch {
	case err != nil:
		return err
	case ack.Type != TypeAck:
		return fmt.Errorf("zds: want ack, got %q", ack.Type)
	case ack.Error != "":
		return fmt.Errorf("%w: %s", ErrRejected, ack.Error)
	}
	return nil
}

// delta sends a message to the connected ztunnel, if any. A broken
// connection is dropped (the ztunnel gets everything again when it comes
// back), so only a refusal is an error. Call with s.io held.
func (s *Server) delta(m Message, fd *os.File) error {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	err := s.exchange(c, m, fd)
	if err != nil && !errors.Is(err, ErrRejected) {
		s.log.Warn("ztunnel connection lost", "err", err)
		s.mu.Lock()
		if s.conn == c {
			s.conn = nil
		}
		s.mu.Unlock()
		c.Close()
		return nil
	}
	return err
}

// AddPod opens the pod's netns (netnsPath), keeps it, and sends it to the
// ztunnel; it returns once acked, or at once when no ztunnel is connected.
func (s *Server) AddPod(ctx context.Context, pod Pod, netnsPath string) error {
	ns, err := os.Open(netnsPath)
	if err != nil {
		return fmt.Errorf("zds: pod %s: netns: %w", pod.UID, err)
	}
	if t, err := unix.IoctlRetInt(int(ns.Fd()), unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWNET {
		ns.Close()
		return fmt.Errorf("zds: pod %s: %s is not a network namespace", pod.UID, netnsPath)
	}
	s.io.Lock()
	defer s.io.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ns.Close()
		return net.ErrClosed
	}
	old := s.pods[pod.UID]
	s.pods[pod.UID] = &entry{pod: pod, netns: ns}
	s.mu.Unlock()
	if old != nil {
		old.netns.Close()
	}
	return s.delta(Message{Type: TypeAdd, Pod: &pod}, ns)
}

// DeletePod forgets the pod and tells the ztunnel. Unknown pods are no error.
func (s *Server) DeletePod(ctx context.Context, uid string) error {
	s.io.Lock()
	defer s.io.Unlock()
	s.mu.Lock()
	e := s.pods[uid]
	if e == nil || s.closed {
		s.mu.Unlock()
		return nil
	}
	delete(s.pods, uid)
	s.mu.Unlock()
	e.netns.Close()
	return s.delta(Message{Type: TypeDelete, UID: uid}, nil)
}

// Connected reports whether a ztunnel has acked its snapshot and is still there, as far as known.
func (s *Server) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil
}

// Close stops listening, drops the ztunnel (and any in its snapshot) and
// closes every netns, once no message is in flight.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	for c := range s.pending {
		c.Close() // its snapshot fails at once
	}
	pods := s.pods
	s.pods = nil
	// Also removes the socket file, unless another agent's replaced it.
	// Under mu: Serve, which reads closed under mu, returns only once the
	// file is dealt with, so that a new server may bind the path then.
	err := s.ln.Close()
	s.mu.Unlock()
	s.io.Lock()
	defer s.io.Unlock()
	for _, e := range pods {
		e.netns.Close()
	}
	return err
}
