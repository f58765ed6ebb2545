package model

import "errors"

// ErrNoBackend: the rule has no backend with a weight above 0, or the one
// picked does not resolve. The Gateway API answers 500.
var ErrNoBackend = errors.New("no usable backend")

// PickBackend chooses among backends in proportion to their weights; a
// weight of 0 is never picked. rnd(n) returns a uniform int in [0, n). The
// chosen backend may not resolve (Port nil): its share of requests gets
// ErrNoBackend, as the Gateway API wants for an invalid backendRef.
func PickBackend(backends []Backend, rnd func(n int64) int64) (*Backend, error) {
	var total int64
	for i := range backends {
		total += int64(max(backends[i].Weight, 0))
	}
	if total == 0 {
		return nil, ErrNoBackend
	}
	x := rnd(total)
	for i := range backends {
		w := int64(max(backends[i].Weight, 0))
		if x < w {
			if backends[i].Port == nil {
				return nil, ErrNoBackend
			}
			return &backends[i], nil
		}
		x -= w
	}
	return nil, ErrNoBackend // unreachable with a correct rnd
}
