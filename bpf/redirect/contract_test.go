package redirect

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/warrenmesh/warren/bpf/flows"
	"github.com/warrenmesh/warren/internal/hbone"
)

// enumOf returns the enumerators of a C enum as the object's BTF has them.
func enumOf(t *testing.T, spec *ebpf.CollectionSpec, name string) map[string]uint64 {
	t.Helper()
	var e *btf.Enum
	if err := spec.Types.TypeByName(name, &e); err != nil {
		t.Fatalf("enum %s: %v", name, err)
	}
	out := map[string]uint64{}
	for _, v := range e.Values {
		out[v.Name] = v.Value
	}
	return out
}

// checkNames holds a Go table of names to a C enum: slot v is named after
// the enumerator of value v (lower case, without prefix), and the enum's
// *_MAX is the table's length.
func checkNames(t *testing.T, spec *ebpf.CollectionSpec, enum, prefix string, names []string) {
	t.Helper()
	values := enumOf(t, spec, enum)
	if max, ok := values[prefix+"MAX"]; !ok || max != uint64(len(names)) {
		t.Errorf("enum %s: %sMAX = %d (present: %v), the Go table has %d names", enum, prefix, max, ok, len(names))
	}
	for c, v := range values {
		if c == prefix+"MAX" {
			continue
		}
		want := strings.ToLower(strings.TrimPrefix(c, prefix))
		if v >= uint64(len(names)) || names[v] != want {
			t.Errorf("enum %s: %s = %d, want Go's name %q in slot %d of %q", enum, c, v, want, v, names)
		}
	}
	if len(values) != len(names)+1 {
		t.Errorf("enum %s has %d enumerators, the Go table %d names plus MAX", enum, len(values), len(names))
	}
}

// The Go tables that name C enumerators, and the numbers Go shares with the
// C, agree with the compiled objects (their BTF), not only with the
// generated Go.
func TestContractMatchesTheObjects(t *testing.T) {
	spec, err := LoadRedirect()
	if err != nil {
		t.Fatal(err)
	}
	checkNames(t, spec, "prog_id", "PROG_", CounterPrograms[:])
	checkNames(t, spec, "action", "ACTION_", CounterActions[:])
	if got, want := spec.Maps[RedirectMapCounters].MaxEntries, uint32(len(CounterPrograms)*len(CounterActions)); got != want {
		t.Errorf("map counters has %d entries, the Go tables name %d", got, want)
	}
	if got := CounterKey(RedirectProgIdPROG_SK_LOOKUP, RedirectActionACTION_ERROR); got != uint32(len(CounterPrograms)*len(CounterActions)-1) {
		t.Errorf("CounterKey of the last slot = %d", got)
	}

	ports := enumOf(t, spec, "port")
	for c, v := range map[string]uint16{"PORT_OUTBOUND": PortOutbound, "PORT_INBOUND": PortInbound, "PORT_HBONE": PortHBONE} {
		if ports[c] != uint64(v) {
			t.Errorf("redirect.c has %s = %d, Go %d", c, ports[c], v)
		}
	}
	if PortHBONE != hbone.Port {
		t.Errorf("the programs steer HBONE from port %d, internal/hbone dials %d", PortHBONE, hbone.Port)
	}
	if got := enumOf(t, spec, "mark_bits")["SOURCE_MARK_BIT"]; got != uint64(SourceMarkBit) {
		t.Errorf("shared.h has SOURCE_MARK_BIT %#x, Go %#x", got, SourceMarkBit)
	}
	if DefaultTunnelMark&SourceMarkBit != 0 {
		t.Errorf("the default tunnel mark %#x has the source bit %#x", DefaultTunnelMark, SourceMarkBit)
	}

	fspec, err := flows.LoadFlows()
	if err != nil {
		t.Fatal(err)
	}
	checkNames(t, fspec, "flow_stat", "STAT_", flows.StatNames[:])
}
