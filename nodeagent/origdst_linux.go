package nodeagent

import "github.com/warrenmesh/warren/bpf/redirect/pins"

// OrigDstTable answers the tunnel's question about a redirected connection
// it accepted on its outbound listener: where was it going? It is package
// pins's, which the
// ztunnel uses without importing nodeagent.
type OrigDstTable = pins.OrigDstTable

// OpenOrigDstTable opens the table an agent pinned in pinDir, read-only, for
// a tunnel in another process.
func OpenOrigDstTable(pinDir string) (*OrigDstTable, error) {
	return pins.OpenOrigDstTable(pinDir)
}
