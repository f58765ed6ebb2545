// Command fortio is the fortio load generator (fortio.org/fortio) built
// from this module, so the local cluster gets an image of it like every
// other test app: the end-to-end tests drive steady load from inside
// enrolled pods with it.
package main

import "fortio.org/fortio/cli"

func main() { cli.FortioMain(nil) }
