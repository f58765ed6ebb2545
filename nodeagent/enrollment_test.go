package nodeagent

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testNS(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func testPod(mut ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "echo", UID: "u1"},
		Spec:       corev1.PodSpec{NodeName: "node1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.5",
			PodIPs: []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00::5"}}},
	}
	for _, f := range mut {
		f(p)
	}
	return p
}

func podLabel(v string) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Labels = map[string]string{LabelMesh: v} }
}

func TestDecide(t *testing.T) {
	meshNS := testNS("demo", map[string]string{LabelMesh: MeshEnabled})
	plainNS := testNS("demo", nil)
	for _, tc := range []struct {
		name    string
		ns      *corev1.Namespace
		pod     *corev1.Pod
		want    Verdict
		wantErr string
	}{
		{"enrolled namespace", meshNS, testPod(), Enroll, ""},
		{"pod label enabled too", meshNS, testPod(podLabel(MeshEnabled)), Enroll, ""},
		{"pending with an IP (the CNI enrolled it)", meshNS, testPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), Enroll, ""},
		{"namespace without label", plainNS, testPod(), Direct, ""},
		{"namespace disabled", testNS("demo", map[string]string{LabelMesh: MeshDisabled}), testPod(), Direct, ""},
		{"pod label alone does not enroll", plainNS, testPod(podLabel(MeshEnabled)), Direct, ""},
		{"pod opts out", meshNS, testPod(podLabel(MeshDisabled)), Direct, ""},
		{"malformed pod label", meshNS, testPod(podLabel("Disabled")), Direct, `pod demo/echo: label warren.dev/mesh="Disabled": want "enabled" or "disabled"`},
		{"malformed namespace label", testNS("demo", map[string]string{LabelMesh: "true"}), testPod(), Direct, `namespace demo: label warren.dev/mesh="true": want "enabled" or "disabled"`},
		{"pod label ENABLED", meshNS, testPod(podLabel("ENABLED")), Direct, `pod demo/echo: label warren.dev/mesh="ENABLED"`},
		{"pod label yes", meshNS, testPod(podLabel("yes")), Direct, `pod demo/echo: label warren.dev/mesh="yes"`},
		{"pod label empty", meshNS, testPod(podLabel("")), Direct, `pod demo/echo: label warren.dev/mesh=""`},
		{"namespace label Disabled", testNS("demo", map[string]string{LabelMesh: "Disabled"}), testPod(), Direct, `namespace demo: label warren.dev/mesh="Disabled"`},
		{"namespace label ENABLED", testNS("demo", map[string]string{LabelMesh: "ENABLED"}), testPod(), Direct, `namespace demo: label warren.dev/mesh="ENABLED"`},
		{"namespace label yes", testNS("demo", map[string]string{LabelMesh: "yes"}), testPod(), Direct, `namespace demo: label warren.dev/mesh="yes"`},
		{"namespace label empty", testNS("demo", map[string]string{LabelMesh: ""}), testPod(), Direct, `namespace demo: label warren.dev/mesh=""`},
		{"other node", meshNS, testPod(func(p *corev1.Pod) { p.Spec.NodeName = "node2" }), Ignore, ""},
		{"not scheduled", meshNS, testPod(func(p *corev1.Pod) { p.Spec.NodeName = "" }), Ignore, ""},
		{"host network", meshNS, testPod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), Ignore, ""},
		{"host network, other node", meshNS, testPod(func(p *corev1.Pod) { p.Spec.HostNetwork = true; p.Spec.NodeName = "x" }), Ignore, ""},
		{"no IP yet", meshNS, testPod(func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil }), Wait, ""},
		{"pending without IP", meshNS, testPod(func(p *corev1.Pod) { p.Status = corev1.PodStatus{Phase: corev1.PodPending} }), Wait, ""},
		{"unknown phase", meshNS, testPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodUnknown }), Wait, ""},
		{"namespace not known", nil, testPod(), Wait, ""},
		{"succeeded", meshNS, testPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), Direct, ""},
		{"failed", meshNS, testPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), Direct, ""},
		{"bad IP", meshNS, testPod(func(p *corev1.Pod) { p.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1"}} }), Wait, ""},
	} {
		d, err := Decide("node1", tc.ns, tc.pod)
		if d.Verdict != tc.want {
			t.Errorf("%s: verdict %v (%s), want %v", tc.name, d.Verdict, d.Reason, tc.want)
		}
		got := ""
		if err != nil {
			got = err.Error()
		}
		if (tc.wantErr == "") != (got == "") || !strings.Contains(got, tc.wantErr) {
			t.Errorf("%s: error %q, want %q", tc.name, got, tc.wantErr)
		}
	}
}

func TestPodIPs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status corev1.PodStatus
		want   []string
		ok     bool
	}{
		{"dual stack", corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}}, []string{"10.0.0.1", "fd00::1"}, true},
		{"podIP only", corev1.PodStatus{PodIP: "10.0.0.1"}, []string{"10.0.0.1"}, true},
		{"v4-mapped", corev1.PodStatus{PodIP: "::ffff:10.0.0.1"}, []string{"10.0.0.1"}, true},
		{"none", corev1.PodStatus{}, nil, false},
		{"garbage", corev1.PodStatus{PodIP: "x"}, nil, false},
	} {
		ips, err := PodIPs(&corev1.Pod{Status: tc.status})
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var got []string
		for _, ip := range ips {
			got = append(got, ip.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
