package pins

import (
	"net"
	"net/netip"
	"testing"
)

func TestWordsRoundTrip(t *testing.T) {
	for _, s := range []string{"10.1.2.3", "::1", "fd00::1:2", "::ffff:127.0.0.1"} {
		a := netip.MustParseAddr(s)
		if got := netip.AddrFrom16(Unwords(Words(a.As16()))); got != netip.AddrFrom16(a.As16()) {
			t.Errorf("%s: round trip gave %s", s, got)
		}
	}
	// The programs compare network-order u32: 10.1.2.3's last word is 0x0302010a here.
	if w := Words(netip.MustParseAddr("10.1.2.3").As16()); w[3] != 0x0302010a || w[2] != 0xffff0000 {
		t.Errorf("Words(10.1.2.3) = %#x", w)
	}
}

// addrPort must give what parsing the address's String form gives.
func TestAddrPortAsParsed(t *testing.T) {
	for _, a := range []net.Addr{
		&net.TCPAddr{IP: net.ParseIP("10.1.2.3").To4(), Port: 80},
		&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 80}, // 16-byte, v4-mapped
		&net.TCPAddr{IP: net.ParseIP("fd00::1"), Port: 15001},
		&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 15001, Zone: "eth0"},
		&net.UDPAddr{IP: net.ParseIP("::1"), Port: 53},
	} {
		want, err := netip.ParseAddrPort(a.String())
		if err != nil {
			t.Fatal(err)
		}
		if got, err := addrPort(a); err != nil || got != want {
			t.Errorf("addrPort(%v) = %v, %v; want %v", a, got, err, want)
		}
	}
}
