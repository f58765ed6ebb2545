package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// MTLSMode says whether a workload accepts plaintext from outside the mesh.
// +kubebuilder:validation:Enum=STRICT;PERMISSIVE
type MTLSMode string

// The modes of a PeerAuthentication.
const (
	// ModeStrict: only mutual TLS (HBONE on 15008); plaintext on 15006 is refused.
	ModeStrict MTLSMode = "STRICT"
	// ModePermissive: mutual TLS from the mesh, plaintext from outside it.
	ModePermissive MTLSMode = "PERMISSIVE"
)

// MutualTLS holds the mode of a PeerAuthentication.
type MutualTLS struct {
	// Mode is STRICT or PERMISSIVE.
	// +required
	Mode MTLSMode `json:"mode"`
}

// PeerAuthenticationSpec sets the mTLS mode of workloads.
//
// The most specific object wins: one with a selector over the namespace's
// object without a selector, over the mesh-wide object (in warren-system,
// without a selector); with none, workloads are PERMISSIVE. Two objects of
// the same scope conflict: the older one (then the first by name) is in
// force, and the other is marked Conflicted.
type PeerAuthenticationSpec struct {
	// Selector picks the workloads in this namespace; omitted: the whole
	// namespace, or the whole mesh in warren-system.
	// +optional
	Selector *WorkloadSelector `json:"selector,omitempty"`

	// MTLS is the mutual TLS setting.
	// +required
	MTLS MutualTLS `json:"mtls"`
}

// PeerAuthentication sets whether enrolled workloads accept plaintext
// (PERMISSIVE) or only mutual TLS from the mesh (STRICT).
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,categories=warren
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mtls.mode`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PeerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec PeerAuthenticationSpec `json:"spec"`
	// +optional
	Status PolicyStatus `json:"status,omitempty"`
}

// PeerAuthenticationList is a list of PeerAuthentication.
// +kubebuilder:object:root=true
type PeerAuthenticationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PeerAuthentication `json:"items"`
}
