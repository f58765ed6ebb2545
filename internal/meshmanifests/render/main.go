// Command render writes manifests/ rendered (meshmanifests.Render) to a
// file: go generate's step for internal/meshmanifests/warren.yaml.
package main

import (
	"fmt"
	"os"

	"github.com/warrenmesh/warren/internal/meshmanifests"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: render MANIFESTS-DIR OUT-FILE")
		os.Exit(2)
	}
	b, err := meshmanifests.Render(os.DirFS(os.Args[1]), ".")
	if err == nil {
		err = os.WriteFile(os.Args[2], b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}
