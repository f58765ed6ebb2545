package hbone

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the seed files under testdata/fuzz from fuzzSeeds and clientFuzzSeeds")

// fuzzSeeds are frame sequences a client might send after its preface and
// SETTINGS: valid tunnels, refusals, and the protocol's sharp edges.
func fuzzSeeds() [][]byte {
	enc := func(kv ...string) []byte {
		var b bytes.Buffer
		e := hpack.NewEncoder(&b)
		for i := 0; i < len(kv); i += 2 {
			e.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return b.Bytes()
	}
	connect := enc(":method", "CONNECT", ":authority", "127.0.0.1:80", "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	seq := func(f func(fr *http2.Framer)) []byte {
		var b bytes.Buffer
		fr := http2.NewFramer(&b, nil)
		fr.AllowIllegalWrites = true
		f(fr)
		return b.Bytes()
	}
	return [][]byte{
		seq(func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: connect, EndHeaders: true})
			fr.WriteData(1, false, []byte("hello"))
			fr.WriteData(1, true, nil)
		}),
		seq(func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":method", "CONNECT", ":authority", "127.0.0.1:403"), EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(":method", "GET", ":scheme", "https", ":path", "/", ":authority", "x"), EndHeaders: true, EndStream: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: enc(":method", "CONNECT", ":authority", "example.com:80"), EndHeaders: true})
		}),
		seq(func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: connect[:3], EndHeaders: false})
			fr.WriteContinuation(1, false, connect[3:6])
			fr.WriteContinuation(1, true, connect[6:])
			fr.WriteDataPadded(1, false, []byte("padded"), make([]byte, 20))
			fr.WriteWindowUpdate(1, 1000)
			fr.WriteRSTStream(1, http2.ErrCodeCancel)
			fr.WriteData(1, false, []byte("after reset"))
		}),
		seq(func(fr *http2.Framer) {
			fr.WritePing(false, [8]byte{1, 2, 3})
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
			fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 3})
			fr.WriteRawFrame(0xfa, 0, 0, []byte("unknown"))
			fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}),
		seq(func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: connect, EndHeaders: true})
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
			fr.WriteWindowUpdate(0, 1<<31-1)
			fr.WriteData(3, false, []byte("idle stream"))
		}),
		seq(func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: connect, EndHeaders: true, EndStream: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: connect, EndHeaders: true, EndStream: true})
			fr.WriteContinuation(1, true, connect)
		}),
		{0, 0, 0, 0xff, 0, 0, 0, 0, 0},
		[]byte("garbage that is no frame at all"),
	}
}

func FuzzServerFrames(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		serveBytes(t, data)
	})
}

// serveBytes runs a server connection (without TLS) over a pipe, feeds it a
// preface-less client SETTINGS and data, and checks that it ends on its own.
func serveBytes(t *testing.T, data []byte) {
	log := slog.New(slog.DiscardHandler)
	srv := &Server{Logger: log, Handler: func(ctx context.Context, r *Request) (net.Conn, error) {
		if r.Authority.Port() == 403 {
			return nil, Forbidden(errors.New("no"))
		}
		a, b := net.Pipe()
		go func() {
			io.Copy(b, b)
			b.Close()
		}()
		return a, nil
	}}
	lim := Limits{MaxConcurrentStreams: 4, StreamWindow: 1 << 16, ConnWindow: 1 << 18, MaxFrameSize: 1 << 14, MaxHeaderListSize: 1 << 12}.withDefaults()
	a, b := net.Pipe()
	raw := &batchConn{Conn: a}
	c := newConn(raw, raw, lim, true, log)
	c.peer = clientID
	c.newStream = func(s *Stream, mh *http2.MetaHeadersFrame) { srv.handleStream(c, s, mh) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c.start() == nil {
			c.readLoop()
		}
	}()
	go io.Copy(io.Discard, b)
	var settings bytes.Buffer
	http2.NewFramer(&settings, nil).WriteSettings()
	b.Write(settings.Bytes())
	b.Write(data)
	b.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server connection did not end after its peer closed")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.streams) != 0 || c.active != 0 {
		t.Fatalf("streams left after the connection ended: %d (active %d)", len(c.streams), c.active)
	}
}

// FuzzClientFrames feeds a client connection what a hostile server might send
// while two tunnels wait for their responses.
// clientFuzzSeeds are what a server might answer: responses, refusals and
// frames a client must reject.
func clientFuzzSeeds() [][]byte {
	var seeds [][]byte
	enc := func(kv ...string) []byte {
		var b bytes.Buffer
		e := hpack.NewEncoder(&b)
		for i := 0; i < len(kv); i += 2 {
			e.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return b.Bytes()
	}
	seq := func(fn func(fr *http2.Framer)) []byte {
		var b bytes.Buffer
		fr := http2.NewFramer(&b, nil)
		fr.AllowIllegalWrites = true
		fn(fr)
		return b.Bytes()
	}
	seeds = append(seeds, seq(func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "200"), EndHeaders: true})
		fr.WriteData(1, false, []byte("hi"))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(":status", "503"), EndHeaders: true, EndStream: true})
		fr.WriteData(1, true, nil)
	}))
	seeds = append(seeds, seq(func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "100"), EndHeaders: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "2x0"), EndHeaders: true})
		fr.WriteRSTStream(3, http2.ErrCodeRefusedStream)
		fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: enc(":method", "GET"), EndHeaders: true})
	}))
	seeds = append(seeds, seq(func(fr *http2.Framer) {
		fr.WriteGoAway(1, http2.ErrCodeNo, nil)
		fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 0}, http2.Setting{ID: http2.SettingEnablePush, Val: 1})
		fr.WriteWindowUpdate(1, 0)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: enc(":status", "200"), EndHeaders: true})
	}))
	return seeds
}

func FuzzClientFrames(f *testing.F) {
	for _, seed := range clientFuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		log := slog.New(slog.DiscardHandler)
		lim := Limits{StreamWindow: 1 << 16, ConnWindow: 1 << 18, MaxFrameSize: 1 << 14, MaxHeaderListSize: 1 << 12}.withDefaults()
		a, b := net.Pipe()
		raw := &batchConn{Conn: a}
		c := newConn(raw, raw, lim, false, log)
		done := make(chan struct{})
		go io.Copy(io.Discard, b)
		go func() {
			defer close(done)
			if c.start() == nil {
				c.readLoop()
			}
		}()
		var settings bytes.Buffer
		http2.NewFramer(&settings, nil).WriteSettings()
		b.Write(settings.Bytes())
		<-c.settingsCh
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		opened := make(chan error, 2)
		fields := []hpack.HeaderField{{Name: ":method", Value: "CONNECT"}, {Name: ":authority", Value: "127.0.0.1:80"}}
		for range 2 {
			if !c.tryReserve() {
				opened <- nil
				continue
			}
			go func() {
				s, err := c.openStream(ctx, fields, nil)
				if err == nil {
					io.Copy(io.Discard, s)
					s.Close()
				}
				opened <- err
			}()
		}
		b.Write(data)
		b.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("client connection did not end after its peer closed")
		}
		for range 2 {
			select {
			case <-opened:
			case <-time.After(10 * time.Second):
				t.Fatal("a tunnel kept waiting on a dead connection")
			}
		}
	})
}

func TestWriteFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to rewrite the committed corpus")
	}
	for name, seeds := range map[string][][]byte{"FuzzServerFrames": fuzzSeeds(), "FuzzClientFrames": clientFuzzSeeds()} {
		dir := filepath.Join("testdata", "fuzz", name)
		os.MkdirAll(dir, 0o755)
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(s)))
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
