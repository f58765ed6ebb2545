package enrollment

import (
	"errors"
	"testing"
)

func TestShouldEnroll(t *testing.T) {
	on := map[string]string{Label: Enabled}
	off := map[string]string{Label: Disabled}
	with := func(v string) map[string]string { return map[string]string{Label: v, "app": "web"} }
	for _, tc := range []struct {
		name      string
		ns, pod   map[string]string
		want      bool
		badObject string // "pod" or "namespace": a *LabelError about it
	}{
		{"enabled namespace", on, nil, true, ""},
		{"enabled namespace, other pod labels", on, map[string]string{"app": "web"}, true, ""},
		{"pod label enabled too", on, with(Enabled), true, ""},
		{"pod opts out", on, off, false, ""},
		{"namespace without label", nil, nil, false, ""},
		{"namespace with other labels", map[string]string{"team": "a"}, nil, false, ""},
		{"namespace disabled", off, nil, false, ""},
		{"pod label alone does not enroll", nil, with(Enabled), false, ""},
		{"pod Disabled", on, with("Disabled"), false, "pod"},
		{"pod ENABLED", on, with("ENABLED"), false, "pod"},
		{"pod yes", on, with("yes"), false, "pod"},
		{"pod empty", on, with(""), false, "pod"},
		{"pod malformed in a plain namespace", nil, with("Disabled"), false, "pod"},
		{"namespace Disabled", with("Disabled"), nil, false, "namespace"},
		{"namespace ENABLED", with("ENABLED"), nil, false, "namespace"},
		{"namespace yes", with("yes"), nil, false, "namespace"},
		{"namespace empty", with(""), nil, false, "namespace"},
		{"namespace malformed, pod opts out", with("yes"), off, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ShouldEnroll(tc.ns, tc.pod)
			if got != tc.want {
				t.Errorf("enrolled = %v, want %v", got, tc.want)
			}
			var le *LabelError
			switch {
			case tc.badObject == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tc.badObject != "" && !errors.As(err, &le):
				t.Errorf("error %v, want a *LabelError about the %s", err, tc.badObject)
			case tc.badObject != "" && le.Object != tc.badObject:
				t.Errorf("error about the %s (%v), want the %s", le.Object, err, tc.badObject)
			}
		})
	}
}

func TestLabelErrorMessage(t *testing.T) {
	_, err := ShouldEnroll(map[string]string{Label: Enabled}, map[string]string{Label: "Disabled"})
	if want := `label warren.dev/mesh="Disabled": want "enabled" or "disabled"`; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}
