// Package zds is the protocol between Warren's node agent and the node's
// ztunnel ("ztunnel discovery service"): the agent tells the ztunnel which
// pods are enrolled and hands it each pod's network namespace as a file
// descriptor, so that the ztunnel can open its sockets inside the pod.
//
// Transport: a Unix SOCK_SEQPACKET socket (DefaultPath), served by the agent.
// One JSON message per packet (at most MaxMessage bytes), so boundaries need
// no framing; a netns fd travels with its message as SCM_RIGHTS.
//
//	ztunnel → agent   {"type":"hello","version":1}            once, first
//	agent → ztunnel   {"type":"add","pod":{...}} + netns fd    snapshot, then deltas
//	agent → ztunnel   {"type":"snapshot-sent"}                 end of the snapshot
//	agent → ztunnel   {"type":"delete","uid":"..."}            delta
//	ztunnel → agent   {"type":"ack"} / {"type":"ack","error":"..."}   one per agent message
//	agent → ztunnel   {"type":"superseded"}                   no ack; the connection then closes
//
// On every connection the agent replays the full set of enrolled pods, then
// snapshot-sent: the ztunnel drops the pods it had that the snapshot did not
// name. After that come deltas; an add for a known pod replaces it (a new
// sandbox). The agent sends one message at a time and waits for its ack; an
// ack with an error is a refusal the agent reports to its caller.
//
// A new connection replaces the previous one (a restarted ztunnel, or a new
// one started next to it during a rollout), once its snapshot is acked: by
// then the new ztunnel has taken over every pod's listeners. The previous
// connection, if still there, then gets superseded and is closed: its
// ztunnel must not connect again (it would take the pods back), but drains
// and waits to be stopped. A snapshot that fails leaves the previous
// connection in place.
package zds

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// DefaultPath is where the agent listens.
const DefaultPath = "/var/run/warren/ztunnel.sock"

// Version is the protocol version a client sends in its hello.
const Version = 1

// MaxMessage bounds one message.
const MaxMessage = 64 << 10

// Message types.
const (
	TypeHello        = "hello"
	TypeAdd          = "add"
	TypeDelete       = "delete"
	TypeSnapshotSent = "snapshot-sent"
	TypeAck          = "ack"
	TypeSuperseded   = "superseded"
)

// Pod is an enrolled pod as the ztunnel needs it.
type Pod struct {
	UID       string       `json:"uid"`
	Namespace string       `json:"namespace"`
	Name      string       `json:"name"`
	IPs       []netip.Addr `json:"ips"`
	// ServiceAccount is the pod's (its identity is namespace + service
	// account); "default" when empty, as in Kubernetes. Added after v1:
	// an older agent leaves it empty.
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// Labels select the policies that apply to the pod. Added after v1.
	Labels map[string]string `json:"labels,omitempty"`
}

// Message is every message of the protocol; Type says which fields are set.
type Message struct {
	Type    string `json:"type"`
	Version int    `json:"version,omitempty"` // hello
	Pod     *Pod   `json:"pod,omitempty"`     // add
	UID     string `json:"uid,omitempty"`     // delete
	Error   string `json:"error,omitempty"`   // ack
}

// ErrSuperseded: another ztunnel connected to the agent and took over the
// pods; Client.Run returns it and does not reconnect.
var ErrSuperseded = errors.New("zds: another ztunnel took over the pods")

// ErrRejected: the ztunnel acked a message with an error.
var ErrRejected = errors.New("ztunnel rejected the message")

// send writes one message, with fd attached when it is an open file.
func send(c *net.UnixConn, m Message, fd *os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > MaxMessage {
		return fmt.Errorf("zds: %s message of %d bytes: over %d", m.Type, len(b), MaxMessage)
	}
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	n, oobn, err := c.WriteMsgUnix(b, oob, nil)
	if err == nil && (n != len(b) || oobn != len(oob)) {
		err = fmt.Errorf("short write")
	}
	if err != nil {
		return fmt.Errorf("zds: send %s: %w", m.Type, err)
	}
	return nil
}

// recv reads one message and the file descriptors that came with it.
func recv(c *net.UnixConn) (Message, []*os.File, error) {
	buf := make([]byte, MaxMessage+1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return Message{}, nil, fmt.Errorf("zds: receive: %w", err)
	}
	files, ferr := parseRights(oob[:oobn])
	fail := func(err error) (Message, []*os.File, error) {
		closeAll(files)
		return Message{}, nil, fmt.Errorf("zds: receive: %w", err)
	}
	switch {
	case ferr != nil:
		return fail(ferr)
	case flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || n > MaxMessage:
		return fail(errors.New("message or its descriptors truncated"))
	case n == 0:
		return fail(errors.New("connection closed")) // a SEQPACKET peer's close reads as an empty packet
	}
	var m Message
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		return fail(err)
	}
	return m, files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			closeAll(files)
			return nil, err
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "netns"))
		}
	}
	return files, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
