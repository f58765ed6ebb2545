package warrenctl

import (
	"context"
	"strings"
	"testing"
)

// config's tables and -o json/yaml, from a dump; the dump's key material
// never reaches the output.
func TestConfigOutput(t *testing.T) {
	c := &Clients{Fetch: fakeZtunnels(nil)}
	b, _ := c.Fetch(context.Background(), "", "p", ZtunnelAdminPort, "/config_dump")
	d, err := ParseConfigDump(b)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	ws := Workloads(append(d.Config.Pods, d.Config.Workloads...))
	for _, o := range Outputs {
		if err := Print(&out, o, ws); err != nil {
			t.Fatal(err)
		}
	}
	if err := Print(&out, "table", Services{{Name: "web", Namespace: "shop", VIPs: []string{"10.96.0.10"}}}); err != nil {
		t.Fatal(err)
	}
	if err := Print(&out, "xml", ws); err == nil {
		t.Error("-o xml accepted")
	}
	if strings.Contains(out.String(), "SECRET") {
		t.Error("the dump's caKey reached the output")
	}
	golden(t, "config.golden", out.String())
	s := BuildStatus(nil, nil, nil, nil)
	out.Reset()
	if err := WriteStatus(&out, s); err != nil || !strings.HasPrefix(out.String(), "NODE ") {
		t.Errorf("empty status: %v %q", err, out.String())
	}
	if ImageTag("r.io:5000/ztunnel") != "latest" || ImageTag("r.io/z@sha256:ab") != "sha256:ab" || ImageTag("z:v1") != "v1" {
		t.Error("ImageTag")
	}
}
