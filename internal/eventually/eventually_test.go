package eventually

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestWait(t *testing.T) {
	var n atomic.Int32
	if err := Wait(time.Second, func() error {
		if n.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n.Load() != 3 {
		t.Errorf("Wait = %v after %d calls, want nil after 3", err, n.Load())
	}
	start := time.Now()
	err := Wait(100*time.Millisecond, func() error { return errors.New("never") })
	if err == nil || err.Error() != "never" || time.Since(start) < 100*time.Millisecond {
		t.Errorf("Wait = %v after %v, want the last error after the deadline", err, time.Since(start))
	}
}

func TestTrue(t *testing.T) {
	var n atomic.Int32
	True(t, "third call", time.Second, func() bool { return n.Add(1) >= 3 })
	if n.Load() != 3 {
		t.Errorf("%d calls, want 3", n.Load())
	}
}
