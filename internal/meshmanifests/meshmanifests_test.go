package meshmanifests

import (
	"bytes"
	"os"
	"os/exec"
	"reflect"
	"testing"
)

// The embedded copy is what manifests/ renders today: edit manifests/ and
// forget go generate, and this fails.
func TestEmbeddedIsCurrent(t *testing.T) {
	b, err := Render(os.DirFS("../../manifests"), ".")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, Embedded) {
		t.Fatal("internal/meshmanifests/warren.yaml differs from manifests/: run go generate ./internal/meshmanifests")
	}
}

// Render agrees with kustomize (kubectl kustomize) on every object, when
// kubectl is here.
func TestRenderMatchesKustomize(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl on PATH")
	}
	want, err := exec.Command(kubectl, "kustomize", "../../manifests").Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v", err)
	}
	ours, err := Decode(Embedded, Images{})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := Decode(want, Images{})
	if err != nil {
		t.Fatal(err)
	}
	key := func(o map[string]any) string {
		md := o["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		return o["kind"].(string) + " " + ns + "/" + md["name"].(string)
	}
	byKey := map[string]map[string]any{}
	for _, o := range theirs {
		byKey[key(o.Object)] = o.Object
	}
	if len(ours) != len(theirs) || len(ours) < 10 {
		t.Fatalf("%d objects, kustomize %d", len(ours), len(theirs))
	}
	for _, o := range ours {
		k := key(o.Object)
		if !reflect.DeepEqual(o.Object, byKey[k]) {
			t.Errorf("%s differs from kustomize's", k)
		}
	}
}

func TestRewriteImage(t *testing.T) {
	for _, c := range []struct {
		in   string
		img  Images
		want string
	}{
		{"warren.local/ztunnel:latest", Images{}, "warren.local/ztunnel:latest"},
		{"warren.local/ztunnel:latest", Images{Tag: "v1"}, "warren.local/ztunnel:v1"},
		{"warren.local/ztunnel:latest", Images{Registry: "localhost:5000/x/"}, "localhost:5000/x/ztunnel:latest"},
		{"warren.local/ztunnel", Images{Registry: "r.io", Tag: "v2"}, "r.io/ztunnel:v2"},
		{"localhost:5000/ztunnel", Images{Registry: "r.io"}, "r.io/ztunnel"},
	} {
		if got := RewriteImage(c.in, c.img); got != c.want {
			t.Errorf("RewriteImage(%q, %+v) = %q, want %q", c.in, c.img, got, c.want)
		}
	}
	objs, err := Objects(Images{Registry: "r.io", Tag: "t"})
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{}
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
	}
	if kinds[0] != "Namespace" || kinds[1] != "CustomResourceDefinition" || kinds[len(kinds)-1] != "DaemonSet" {
		t.Errorf("order: %v", kinds)
	}
}
