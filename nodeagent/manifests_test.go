package nodeagent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The node DaemonSet's manifests parse strictly as what they claim to be,
// and keep the promises the design makes: no privileged, exactly the
// capabilities each container needs, the host paths the agent uses, the node
// name from the pod, and a rollout that surges (no host ports, maxSurge 1).
func TestNodeManifests(t *testing.T) {
	dir := filepath.Join("..", "manifests", "node")
	var kust struct {
		Resources []string `json:"resources"`
	}
	readYAML(t, filepath.Join(dir, "kustomization.yaml"), &kust, false)
	if !slices.Equal(kust.Resources, []string{"serviceaccount.yaml", "rbac.yaml", "daemonset.yaml"}) {
		t.Errorf("kustomization resources %v", kust.Resources)
	}
	var ds appsv1.DaemonSet
	readYAML(t, filepath.Join(dir, "daemonset.yaml"), &ds, true)
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || !spec.HostPID || spec.ServiceAccountName != "warren-node" {
		t.Errorf("hostNetwork %v, hostPID %v, serviceAccount %q", spec.HostNetwork, spec.HostPID, spec.ServiceAccountName)
	}
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru == nil || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 1 || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update %+v: want maxSurge 1, maxUnavailable 0", ds.Spec.UpdateStrategy.RollingUpdate)
	}
	if len(spec.Containers) != 2 || spec.Containers[0].Name != "agent" || spec.Containers[1].Name != "ztunnel" {
		t.Fatalf("containers: want agent and ztunnel")
	}
	for _, c := range spec.Containers {
		if len(c.Ports) > 0 {
			t.Errorf("container %s declares ports: with hostNetwork they are host ports and block the surge pod", c.Name)
		}
	}
	zsc := spec.Containers[1].SecurityContext
	if zsc == nil || zsc.Privileged == nil || *zsc.Privileged || zsc.Capabilities == nil ||
		!slices.Equal(zsc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "SYS_ADMIN"}) {
		t.Errorf("ztunnel securityContext %+v: want NET_ADMIN and SYS_ADMIN only", zsc)
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil {
		t.Fatalf("securityContext %+v: want privileged: false with capabilities", sc)
	}
	var caps []string
	for _, cp := range sc.Capabilities.Add {
		caps = append(caps, string(cp))
	}
	if !slices.Equal(caps, []string{"BPF", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"}) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities add %v drop %v", caps, sc.Capabilities.Drop)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for mount, host := range map[string]string{
		"/host/cgroup": "/sys/fs/cgroup", "/sys/fs/bpf": "/sys/fs/bpf", "/opt/cni/bin": "/opt/cni/bin",
		"/etc/cni/net.d": "/etc/cni/net.d", "/var/run/netns": "/var/run/netns", "/var/run/warren": "/var/run/warren",
	} {
		m, ok := mounts[mount]
		if !ok || hostPaths[m.Name] != host {
			t.Errorf("mount %s: want hostPath %s, got volume %q (%s)", mount, host, m.Name, hostPaths[m.Name])
		}
	}
	if p := mounts["/var/run/netns"].MountPropagation; p == nil || *p != corev1.MountPropagationHostToContainer {
		t.Error("/var/run/netns: want mountPropagation HostToContainer")
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["WARREN_NODE_NAME"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("WARREN_NODE_NAME: %+v", e)
	}
	if env["WARREN_CGROUP"].Value != "/host/cgroup" {
		t.Errorf("WARREN_CGROUP = %q", env["WARREN_CGROUP"].Value)
	}

	b, err := os.ReadFile(filepath.Join(dir, "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `resources: ["pods", "namespaces", "services"]`) || !strings.Contains(string(b), `verbs: ["get", "list", "watch"]`) {
		t.Errorf("rbac.yaml: want get/list/watch on pods, namespaces and services (the flows' pod and Service index)")
	}
}

func readYAML(t *testing.T, path string, v any, strict bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strict {
		err = yaml.UnmarshalStrict(b, v)
	} else {
		err = yaml.Unmarshal(b, v)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
