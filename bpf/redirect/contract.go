package redirect

// The numbers of the kernel contract that Go code uses, each defined once:
// those the programs also hold come from redirect.c's and warren/shared.h's
// enums through bpf2go (-type, redirect_bpfel.go), so C and Go cannot
// disagree; DefaultTunnelMark is Go's only (the programs get the mark at
// load time).
const (
	// PortOutbound is where a redirected connect() goes when the tunnel
	// registered no outbound port for the pod's netns (tunnel_ports):
	// 127.0.0.1 / [::1] on it, where nothing listens, so it is refused.
	PortOutbound = uint16(RedirectPortPORT_OUTBOUND)
	// PortInbound is the pod port of plaintext inbound (any port but
	// PortHBONE is steered to the tunnel's inbound listener).
	PortInbound = uint16(RedirectPortPORT_INBOUND)
	// PortHBONE is the pod port of HBONE (internal/hbone.Port).
	PortHBONE = uint16(RedirectPortPORT_HBONE)

	// SourceMarkBit is added to the tunnel's mark on its sockets that
	// connect from a client's address; the programs take both marks as the
	// tunnel's (internal/podroute).
	SourceMarkBit = uint32(RedirectMarkBitsSOURCE_MARK_BIT)

	// DefaultTunnelMark is the SO_MARK of the tunnel's own sockets, which
	// the programs never redirect, unless the agent and the ztunnel are
	// given another one. internal/podroute also uses it as its routing
	// table's id.
	DefaultTunnelMark = 0x5741
)

// CounterPrograms and CounterActions name the slots of the counters map (a
// program's slot is prog*ACTION_MAX+action), in the order of redirect.c's
// enum prog_id and enum action; the names are the enumerators', lower case,
// without their prefix (a test holds them to the object's BTF).
var (
	CounterPrograms = [RedirectProgIdPROG_MAX]string{
		RedirectProgIdPROG_CONNECT4:  "connect4",
		RedirectProgIdPROG_CONNECT6:  "connect6",
		RedirectProgIdPROG_SOCKOPS:   "sockops",
		RedirectProgIdPROG_SK_LOOKUP: "sk_lookup",
	}
	CounterActions = [RedirectActionACTION_MAX]string{
		RedirectActionACTION_REDIRECTED: "redirected",
		RedirectActionACTION_BYPASSED:   "bypassed",
		RedirectActionACTION_ERROR:      "error",
	}
)

// CounterKey is the counters map's key of a program's action.
func CounterKey(prog RedirectProgId, action RedirectAction) uint32 {
	return uint32(prog)*uint32(RedirectActionACTION_MAX) + uint32(action)
}
