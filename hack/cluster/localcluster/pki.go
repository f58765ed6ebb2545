package localcluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/warrenmesh/warren/internal/devpki"
)

// certSpec is one certificate the cluster needs.
type certSpec struct {
	file   string // base name: <file>.crt and <file>.key
	ca     string // signing CA's base name
	cn     string
	orgs   []string
	ips    []string
	dns    []string
	server bool
	client bool
}

type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// pkiSpecs lists every certificate, given the nodes.
func (c *Config) pkiSpecs() []certSpec {
	specs := []certSpec{
		{file: "apiserver", ca: "ca", cn: "kube-apiserver", server: true,
			ips: []string{cpIP, "127.0.0.1", kubernetesSvc},
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}},
		{file: "apiserver-kubelet-client", ca: "ca", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{file: "admin", ca: "ca", cn: "warren-admin", orgs: []string{"system:masters"}, client: true},
		{file: "controller-manager", ca: "ca", cn: "system:kube-controller-manager", client: true},
		{file: "scheduler", ca: "ca", cn: "system:kube-scheduler", client: true},
		{file: "kube-proxy", ca: "ca", cn: "system:kube-proxy", client: true},
		{file: "front-proxy-client", ca: "front-proxy-ca", cn: "front-proxy-client", client: true},
	}
	for _, n := range c.nodes() {
		specs = append(specs,
			certSpec{file: n.Name() + "-kubelet", ca: "ca", cn: "system:node:" + n.Name(), orgs: []string{"system:nodes"}, client: true},
			certSpec{file: n.Name() + "-kubelet-serving", ca: "ca", cn: n.Name(), server: true, ips: []string{n.IP()}, dns: []string{n.Name()}},
		)
	}
	return specs
}

// ensurePKI creates the CAs, the certificates and the service-account key pair that are not
// there yet, and the kubeconfigs of every component. Existing files are kept, so a restarted
// cluster keeps its identity.
func (c *Config) ensurePKI() error {
	dir := c.pkiDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cas := map[string]*keyPair{}
	for _, name := range []string{"ca", "front-proxy-ca"} {
		kp, err := loadOrCreate(dir, name, func() (*keyPair, error) { return newCA("warren-local-" + name) })
		if err != nil {
			return fmt.Errorf("pki %s: %w", name, err)
		}
		cas[name] = kp
	}
	for _, s := range c.pkiSpecs() {
		if _, err := loadOrCreate(dir, s.file, func() (*keyPair, error) { return newLeaf(s, cas[s.ca]) }); err != nil {
			return fmt.Errorf("pki %s: %w", s.file, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "sa.key")); errors.Is(err, os.ErrNotExist) {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, "sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k)); err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub); err != nil {
			return err
		}
	}
	inside := fmt.Sprintf("https://%s:%d", cpIP, apiPort)
	kcs := map[string]struct{ user, server string }{
		"controller-manager": {"controller-manager", inside},
		"scheduler":          {"scheduler", inside},
		"kube-proxy":         {"kube-proxy", inside},
		"admin-internal":     {"admin", inside},
	}
	for _, n := range c.nodes() {
		kcs[n.Name()+"-kubelet"] = struct{ user, server string }{n.Name() + "-kubelet", inside}
	}
	for name, kc := range kcs {
		if err := c.writeKubeconfig(filepath.Join(dir, name+".kubeconfig"), kc.user, kc.server); err != nil {
			return err
		}
	}
	return c.writeKubeconfig(c.KubeconfigPath(), "admin", "https://"+HostAPIAddr)
}

func (c *Config) writeKubeconfig(path, user, server string) error {
	read := func(n string) ([]byte, error) { return os.ReadFile(filepath.Join(c.pkiDir(), n)) }
	ca, err := read("ca.crt")
	if err != nil {
		return err
	}
	crt, err := read(user + ".crt")
	if err != nil {
		return err
	}
	key, err := read(user + ".key")
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["warren"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: crt, ClientKeyData: key}
	cfg.Contexts["warren"] = &clientcmdapi.Context{Cluster: "warren", AuthInfo: user}
	cfg.CurrentContext = "warren"
	return clientcmd.WriteToFile(*cfg, path)
}

func loadOrCreate(dir, name string, create func() (*keyPair, error)) (*keyPair, error) {
	crtPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if crtPEM, err := os.ReadFile(crtPath); err == nil {
		keyPEM, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, err
		}
		cb, _ := pem.Decode(crtPEM)
		kb, _ := pem.Decode(keyPEM)
		if cb == nil || kb == nil {
			return nil, fmt.Errorf("%s: not PEM", name)
		}
		cert, err := x509.ParseCertificate(cb.Bytes)
		if err != nil {
			return nil, err
		}
		key, err := x509.ParseECPrivateKey(kb.Bytes)
		if err != nil {
			return nil, err
		}
		return &keyPair{cert: cert, key: key}, nil
	}
	kp, err := create()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(kp.key.(*ecdsa.PrivateKey))
	if err != nil {
		return nil, err
	}
	if err := writePEM(keyPath, "EC PRIVATE KEY", der); err != nil {
		return nil, err
	}
	return kp, writePEM(crtPath, "CERTIFICATE", kp.cert.Raw)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func newCA(cn string) (*keyPair, error) {
	kp, err := devpki.NewCA(devpki.Spec{CommonName: cn,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature})
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: kp.Cert, key: kp.Key}, nil
}

func newLeaf(s certSpec, ca *keyPair) (*keyPair, error) {
	spec := devpki.Spec{CommonName: s.cn, Organization: s.orgs, DNSNames: s.dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	for _, ip := range s.ips {
		spec.IPs = append(spec.IPs, net.ParseIP(ip))
	}
	if s.server {
		spec.ExtKeyUsage = append(spec.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if s.client {
		spec.ExtKeyUsage = append(spec.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	kp, err := (&devpki.KeyPair{Cert: ca.cert, Key: ca.key}).Issue(spec)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: kp.Cert, key: kp.Key}, nil
}
