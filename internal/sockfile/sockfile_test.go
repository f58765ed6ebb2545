package sockfile

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// A second listener takes the path over; the first keeps its connection,
// and closing it leaves the second's socket, which closing the second removes.
func TestTakeOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "s.sock")
	first, err := Listen("unix", path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	c1, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	a1, err := first.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a1.Close()

	second, err := Listen("unix", path, 0o600)
	if err != nil {
		t.Fatalf("second listener: %v", err)
	}
	defer second.Close()
	if first.Owned() || !second.Owned() {
		t.Errorf("owned: first %v, second %v", first.Owned(), second.Owned())
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket file: %v, %v", fi, err)
	}
	go func() {
		if c, err := second.Accept(); err == nil {
			c.Write([]byte("2"))
			c.Close()
		}
	}()
	c2, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := c2.Read(buf); err != nil || buf[0] != '2' {
		t.Errorf("new connection: %q, %v; want the second listener's", buf, err)
	}
	c2.Close()

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// The first's accepted connection still works.
	go a1.Write([]byte("1"))
	if _, err := c1.Read(buf); err != nil || buf[0] != '1' {
		t.Errorf("old connection after the first closed: %q, %v", buf, err)
	}
	if _, err := os.Lstat(path); err != nil || !second.Owned() {
		t.Fatalf("the first's Close removed the second's socket: %v", err)
	}
	second.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("the second's Close left its socket: %v", err)
	}
	// A regular file at the path is not a stale socket: refused, not removed.
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := Listen("unix", path, 0o600); err == nil {
		l.Close()
		t.Error("listened over a regular file")
	}
}
