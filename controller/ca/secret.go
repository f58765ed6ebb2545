package ca

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coreclient "k8s.io/client-go/kubernetes/typed/core/v1"
)

// Keys of the CA Secret. An operator who brings an intermediate creates the
// Secret before the controller first starts: tls.crt is the intermediate
// followed by its issuers, tls.key its key, ca.crt the roots.
const (
	SecretCert  = "tls.crt"
	SecretKey   = "tls.key"
	SecretRoots = "ca.crt"
	// DefaultSecretName is the CA Secret in the system namespace.
	DefaultSecretName = "warren-ca"
)

// LoadOrCreate returns the CA kept in the Secret name (in the namespace of
// secrets), creating a new root there when there is none. When several
// replicas start at once, the first Create wins and the others load its
// root, so they all sign with one key.
func LoadOrCreate(ctx context.Context, secrets coreclient.SecretInterface, name string, o Options, log *slog.Logger) (*CA, error) {
	s, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		return fromSecret(s, o)
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get CA secret %s: %w", name, err)
	}
	ca, err := NewRoot(o)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, rootsPEM, err := ca.PEM()
	if err != nil {
		return nil, err
	}
	s = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/part-of": "warren"}},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{SecretCert: certPEM, SecretKey: keyPEM, SecretRoots: rootsPEM},
	}
	created, err := secrets.Create(ctx, s, metav1.CreateOptions{})
	switch {
	case err == nil:
		log.Info("created a new mesh root", "secret", name, "trust_domain", ca.TrustDomain(), "not_after", ca.cert.NotAfter)
		return fromSecret(created, o)
	case apierrors.IsAlreadyExists(err):
		s, err = secrets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("get CA secret %s after losing the race to create it: %w", name, err)
		}
		return fromSecret(s, o)
	default:
		return nil, fmt.Errorf("create CA secret %s: %w", name, err)
	}
}

func fromSecret(s *corev1.Secret, o Options) (*CA, error) {
	ca, err := Load(s.Data[SecretCert], s.Data[SecretKey], s.Data[SecretRoots], o)
	if err != nil {
		return nil, fmt.Errorf("CA secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return ca, nil
}

// Roots ConfigMap: the mesh's trust anchors, public, for data planes to
// verify the controller's serving certificate before they hold an SVID
// (Istio's istio-ca-root-cert plays the same part).
const (
	RootsConfigMap = "warren-ca-root-cert"
	RootsKey       = "root-cert.pem"
)

// PublishRoots writes the CA's roots into the ConfigMap RootsConfigMap,
// creating or updating it. Every replica may call it: the content is the same.
func PublishRoots(ctx context.Context, cms coreclient.ConfigMapInterface, ca *CA) error {
	want := string(ca.RootsPEM())
	cm, err := cms.Get(ctx, RootsConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: RootsConfigMap, Labels: map[string]string{"app.kubernetes.io/part-of": "warren"}},
			Data:       map[string]string{RootsKey: want},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil // another replica won; same content
		}
	case err == nil && cm.Data[RootsKey] != want:
		cm.Data = map[string]string{RootsKey: want}
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("publish roots in ConfigMap %s: %w", RootsConfigMap, err)
	}
	return nil
}
