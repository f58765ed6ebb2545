// Package netns runs code inside Linux network namespaces and creates and
// removes named ones (/run/netns/<name>, as iproute2 does).
//
// A thread that switches namespace is never handed back to the Go scheduler:
// the goroutine stays locked to it and the thread exits with the goroutine.
// Programs that use this package should also lock their main goroutine to the
// main thread in init (runtime.LockOSThread), so that no namespace switch ever
// happens on the main thread, whose namespace /proc/PID/ns/net reports.
package netns
