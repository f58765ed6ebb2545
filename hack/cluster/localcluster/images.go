package localcluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ImageRegistry is the name every locally built image carries; nothing is pulled from it.
const ImageRegistry = "warren.local"

// Image is a container image built here, as a tarball ready to import.
type Image struct {
	Name string // short name, e.g. "echo"
	Ref  string // warren.local/<name>:<content tag>
	Tar  string
}

// imageFromBinary makes a single-layer image holding the static binary at /<name>, with it as
// the entrypoint, tagged by content (the first 12 hex digits of the image digest), so a changed
// binary gets a new tag and reaches new containers.
func (c *Config) imageFromBinary(imgName, binPath string, extras ...string) (Image, error) {
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return Image{}, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, d := range []string{"tmp/", "etc/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o1777, ModTime: epoch}); err != nil {
			return Image{}, err
		}
	}
	files := map[string][]byte{
		imgName:      bin,
		"etc/passwd": []byte("root:x:0:0:root:/:/" + imgName + "\nnobody:x:65534:65534:nobody:/:/" + imgName + "\n"),
		"etc/group":  []byte("root:x:0:\nnobody:x:65534:\n"),
	}
	for _, e := range extras { // more binaries beside the entrypoint, at /<base name>
		b, err := os.ReadFile(e)
		if err != nil {
			return Image{}, err
		}
		files[filepath.Base(e)] = b
	}
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		mode := int64(0o644)
		if !strings.Contains(k, "/") { // binaries
			mode = 0o755
		}
		if k == imgName {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: k, Mode: mode, Size: int64(len(files[k])), ModTime: epoch}); err != nil {
			return Image{}, err
		}
		if _, err := tw.Write(files[k]); err != nil {
			return Image{}, err
		}
	}
	if err := tw.Close(); err != nil {
		return Image{}, err
	}
	data := buf.Bytes()
	// Fast compression: the tarball is imported locally, and the binaries are tens of MB.
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return Image{}, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return Image{}, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return Image{}, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config = v1.Config{Entrypoint: []string{"/" + imgName}, Env: []string{"PATH=/"}}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return Image{}, err
	}
	dg, err := img.Digest()
	if err != nil {
		return Image{}, err
	}
	ref := fmt.Sprintf("%s/%s:%s", ImageRegistry, imgName, dg.Hex[:12])
	tag, err := name.NewTag(ref)
	if err != nil {
		return Image{}, err
	}
	if err := os.MkdirAll(c.imageDir(), 0o755); err != nil {
		return Image{}, err
	}
	out := filepath.Join(c.imageDir(), imgName+"-"+dg.Hex[:12]+".tar")
	if _, err := os.Stat(out); err != nil {
		tmp := out + ".tmp"
		if err := tarball.WriteToFile(tmp, tag, img); err != nil {
			return Image{}, err
		}
		if err := os.Rename(tmp, out); err != nil {
			return Image{}, err
		}
	}
	return Image{Name: imgName, Ref: ref, Tar: out}, nil
}

// buildGoImages builds Go main packages of the repository (image name → package) as static
// binaries in one go build, which compiles and links them in parallel, and wraps each.
func (c *Config) buildGoImages(ctx context.Context, pkgs map[string]string) (map[string]Image, error) {
	if c.RepoDir == "" {
		return nil, fmt.Errorf("images: no repository directory configured")
	}
	outDir := filepath.Join(c.imageDir(), "bin")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(pkgs))
	// grpcnotrace as in make build (see the Makefile): no golang.org/x/net/trace in the binaries.
	args := []string{"build", "-trimpath", "-tags", "grpcnotrace", "-ldflags", "-s -w", "-o", outDir + "/"}
	for n, pkg := range pkgs {
		if filepath.Base(pkg) != n {
			return nil, fmt.Errorf("image %s: its package %s must end in %s", n, pkg, n)
		}
		names = append(names, n)
		args = append(args, pkg)
	}
	sort.Strings(names)
	var log bytes.Buffer
	if err := goCmd(ctx, c.RepoDir, &log, []string{"CGO_ENABLED=0", "GOFLAGS="}, args...); err != nil {
		return nil, fmt.Errorf("images %v: go build: %w: %s", names, err, log.String())
	}
	out := map[string]Image{}
	for _, n := range names {
		var extras []string
		for _, e := range imageExtras[n] {
			extras = append(extras, filepath.Join(outDir, e))
		}
		img, err := c.imageFromBinary(n, filepath.Join(outDir, n), extras...)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", n, err)
		}
		out[n] = img
	}
	return out, nil
}

// importImage imports an image tarball into a node's containerd (namespace k8s.io, which the
// CRI plugin uses), unless that node already has it.
func (c *Config) importImage(ctx context.Context, n node, img Image) error {
	addr := c.containerdSock(n)
	have, err := output(ctx, c.bin("ctr"), "--address", addr, "-n", "k8s.io", "images", "ls", "-q")
	if err != nil {
		return fmt.Errorf("%s: list images: %w", n.Name(), err)
	}
	for _, l := range strings.Fields(have) {
		if l == img.Ref {
			return nil
		}
	}
	if err := run(ctx, c.bin("ctr"), "--address", addr, "-n", "k8s.io", "images", "import", "--no-unpack=false", img.Tar); err != nil {
		return fmt.Errorf("%s: import %s: %w", n.Name(), img.Ref, err)
	}
	return nil
}

// imageExtras are binaries an image carries beside its own: the node agent
// installs warren-cni from its image into the node's CNI folder.
var imageExtras = map[string][]string{"warren-agent": {"warren-cni"}}

func (c *Config) imagesFile() string { return filepath.Join(c.stateDir(), "images.json") }

// projectImageSources lists the Go main packages built into images: every cmd/ binary and
// every test app. Keys are image names.
func (c *Config) projectImageSources() (map[string]string, error) {
	out := map[string]string{}
	for _, dir := range []string{"cmd", "test/apps"} {
		entries, err := os.ReadDir(filepath.Join(c.RepoDir, dir))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, err
		}
		for _, e := range entries {
			if e.IsDir() {
				out[e.Name()] = "./" + dir + "/" + e.Name()
			}
		}
	}
	return out, nil
}

// LoadImages builds images of the project's binaries (cmd/*, test/apps/*), imports them into
// every node and records their references, which ImageRef then returns.
func (c *Config) LoadImages(ctx context.Context) (map[string]string, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	srcs, err := c.projectImageSources()
	if err != nil {
		return nil, err
	}
	refs := map[string]string{}
	if b, err := os.ReadFile(c.imagesFile()); err == nil {
		_ = json.Unmarshal(b, &refs)
	}
	names := make([]string, 0, len(srcs))
	for n := range srcs {
		names = append(names, n)
	}
	sort.Strings(names)
	err = c.progress(ctx, fmt.Sprintf("building and loading images %v into %d node(s)", names, c.Nodes), func(ctx context.Context) error {
		imgs, err := c.buildGoImages(ctx, srcs)
		if err != nil {
			return err
		}
		for _, n := range names {
			for _, nd := range c.nodes() {
				if err := c.importImage(ctx, nd, imgs[n]); err != nil {
					return err
				}
			}
			refs[n] = imgs[n].Ref
		}
		return nil
	})
	if err != nil {
		return nil, stepErr("load images", "", err)
	}
	b, _ := json.MarshalIndent(refs, "", "  ")
	return refs, os.WriteFile(c.imagesFile(), b, 0o644)
}

// ImageRef returns the reference of a loaded image by short name ("echo").
func (c *Config) ImageRef(imgName string) (string, error) {
	b, err := os.ReadFile(c.imagesFile())
	if err != nil {
		return "", fmt.Errorf("no images loaded (run load-images): %w", err)
	}
	refs := map[string]string{}
	if err := json.Unmarshal(b, &refs); err != nil {
		return "", err
	}
	r, ok := refs[imgName]
	if !ok {
		return "", fmt.Errorf("image %q is not loaded", imgName)
	}
	return r, nil
}

// MeshOverlay writes a kustomization that applies the repository's
// manifests/ with the images loaded into the nodes (content tags instead of
// :latest), and returns its directory: `kubectl apply -k <dir>` installs
// Warren on the local cluster as `kubectl apply -k manifests/` would on a
// cluster whose registry has the images.
func (c *Config) MeshOverlay() (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	b, err := os.ReadFile(c.imagesFile())
	if err != nil {
		return "", fmt.Errorf("no images loaded (run load-images): %w", err)
	}
	refs := map[string]string{}
	if err := json.Unmarshal(b, &refs); err != nil {
		return "", err
	}
	dir := filepath.Join(c.stateDir(), "mesh")
	// kustomize refuses absolute paths to other kustomizations.
	base, err := filepath.Rel(dir, filepath.Join(c.RepoDir, "manifests"))
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Written by hack/cluster: manifests/ with the images built from this tree.\n")
	fmt.Fprintf(&sb, "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\nimages:\n", base)
	for _, n := range []string{"warren-agent", "warren-controller", "ztunnel"} {
		ref, ok := refs[n]
		if !ok {
			return "", fmt.Errorf("image %q is not loaded (run load-images)", n)
		}
		name, tag, _ := strings.Cut(ref, ":")
		fmt.Fprintf(&sb, "  - name: %s\n    newTag: %q\n", name, tag)
	}
	// The waypoint image is in the controller's environment, where
	// kustomize's images: does not reach.
	if ref, ok := refs["waypoint"]; ok {
		fmt.Fprintf(&sb, `patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: warren-controller, namespace: warren-system}
      spec:
        template:
          spec:
            containers:
              - name: controller
                env:
                  - name: WARREN_CONTROLLER_WAYPOINT_IMAGE
                    value: %q
`, ref)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(sb.String()), 0o644)
}
