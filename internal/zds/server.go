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
	// AckTimeout bounds the wait for each ack; 5 s if zero.
	AckTimeout time.Duration
	Logger     *slog.Logger
}

// Server is the agent's side: it holds every enrolled pod's netns open and
// keeps the connected ztunnel (at most one) told.
type Server struct {
	ln   *sockfile.Listener
	opts ServerOptions
	log  *slog.Logger

	mu     sync.Mutex
	pods   map[string]*entry
	conn   *net.UnixConn // the ztunnel, once its snapshot is acked; nil when none
	closed bool
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
	return &Server{ln: ln, opts: opts, log: opts.Logger, pods: map[string]*entry{}}, nil
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
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return
	}
	uids := make([]string, 0, len(s.pods))
	for uid := range s.pods {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	for _, uid := range uids {
		e := s.pods[uid]
		if err := s.exchange(c, Message{Type: TypeAdd, Pod: &e.pod}, e.netns); err != nil {
			s.log.Warn("ztunnel snapshot failed", "pod", uid, "err", err)
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
	if s.conn != nil {
		// The new ztunnel holds every pod's listeners now: the previous
		// one must not come back for them.
		_ = s.conn.SetDeadline(time.Now().Add(s.opts.AckTimeout))
		if err := send(s.conn, Message{Type: TypeSuperseded}, nil); err != nil {
			s.log.Info("previous ztunnel not told it was superseded", "err", err)
		}
		s.conn.Close()
	}
	s.conn = c
	s.log.Info("ztunnel connected, snapshot sent", "pods", len(uids))
}

// exchange sends one message and waits for its ack. Call with s.mu held.
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
// back), so only a refusal is an error. Call with s.mu held.
func (s *Server) delta(m Message, fd *os.File) error {
	if s.conn == nil {
		return nil
	}
	err := s.exchange(s.conn, m, fd)
	if err != nil && !errors.Is(err, ErrRejected) {
		s.log.Warn("ztunnel connection lost", "err", err)
		s.conn.Close()
		s.conn = nil
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
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		ns.Close()
		return net.ErrClosed
	}
	if old := s.pods[pod.UID]; old != nil {
		old.netns.Close()
	}
	s.pods[pod.UID] = &entry{pod: pod, netns: ns}
	return s.delta(Message{Type: TypeAdd, Pod: &pod}, ns)
}

// DeletePod forgets the pod and tells the ztunnel. Unknown pods are no error.
func (s *Server) DeletePod(ctx context.Context, uid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.pods[uid]
	if e == nil || s.closed {
		return nil
	}
	e.netns.Close()
	delete(s.pods, uid)
	return s.delta(Message{Type: TypeDelete, UID: uid}, nil)
}

// Connected reports whether a ztunnel has acked its snapshot and is still there, as far as known.
func (s *Server) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil
}

// Close stops listening, drops the ztunnel and closes every netns.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	for _, e := range s.pods {
		e.netns.Close()
	}
	s.pods = nil
	return s.ln.Close() // also removes the socket file, unless another agent's replaced it
}
