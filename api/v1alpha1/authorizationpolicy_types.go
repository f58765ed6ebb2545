package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// AuthorizationAction says what a matching AuthorizationPolicy does.
// +kubebuilder:validation:Enum=ALLOW;DENY
type AuthorizationAction string

// The actions of an AuthorizationPolicy.
const (
	ActionAllow AuthorizationAction = "ALLOW"
	ActionDeny  AuthorizationAction = "DENY"
)

// AuthorizationPolicySpec selects workloads and says which connections to
// them are allowed or denied.
//
// For a workload, a connection is refused when any DENY policy that applies
// to it matches; otherwise, when at least one ALLOW policy applies to it, the
// connection must match one of them; when none applies it is allowed. So deny
// wins over allow, whatever the order the policies were created in.
//
// A policy applies to the workloads its selector picks in its namespace (all
// of them when there is no selector); a policy in warren-system without a
// selector applies to every workload of the mesh.
type AuthorizationPolicySpec struct {
	// Selector picks the workloads the policy applies to; omitted: every
	// workload of the namespace.
	// +optional
	Selector *WorkloadSelector `json:"selector,omitempty"`

	// Action is ALLOW or DENY.
	// +required
	Action AuthorizationAction `json:"action"`

	// Rules: the policy matches a connection when any rule matches it. An
	// ALLOW policy without rules allows nothing; a DENY policy without rules
	// denies nothing. A rule with neither from nor to matches every connection.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Rules []Rule `json:"rules,omitempty"`
}

// Rule matches a connection when one of its sources (or no from at all)
// matches the peer and one of its destinations (or no to at all) matches the
// port.
type Rule struct {
	// From lists the sources; any of them may match.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	From []Source `json:"from,omitempty"`

	// To lists the destinations; any of them may match.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	To []Destination `json:"to,omitempty"`
}

// Source matches the peer of a connection. When both fields are set the peer
// must match both.
// +kubebuilder:validation:XValidation:rule="has(self.principals) || has(self.namespaces)",message="a source needs principals or namespaces"
type Source struct {
	// Principals are SPIFFE IDs (spiffe://<trust domain>/ns/<namespace>/sa/<service account>);
	// the peer's identity must be one of them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:items:Pattern=`^spiffe://[a-z0-9._-]+/ns/[a-z0-9-]+/sa/[a-z0-9.-]+$`
	Principals []string `json:"principals,omitempty"`

	// Namespaces: the peer's identity must be in one of these namespaces.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespaces []string `json:"namespaces,omitempty"`
}

// Destination matches what a connection reaches on the selected workload.
type Destination struct {
	// Ports are the workload's TCP ports (not the Service's).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	Ports []int32 `json:"ports,omitempty"`

	// Methods are HTTP methods. Reserved for waypoints: the apiserver refuses
	// them until Warren has waypoints, rather than let the ztunnel ignore an
	// L7 rule it cannot enforce.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="size(self) == 0",message="methods is an L7 field that needs a waypoint; Warren has no waypoints yet, so only ports can be matched"
	Methods []string `json:"methods,omitempty"`

	// Paths are HTTP paths. Reserved for waypoints, refused like methods.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="size(self) == 0",message="paths is an L7 field that needs a waypoint; Warren has no waypoints yet, so only ports can be matched"
	Paths []string `json:"paths,omitempty"`
}

// AuthorizationPolicy allows or denies connections to enrolled workloads by
// the peer's identity or namespace and the destination port. The ztunnel of
// the destination's node enforces it.
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,categories=warren
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec AuthorizationPolicySpec `json:"spec"`
	// +optional
	Status PolicyStatus `json:"status,omitempty"`
}

// AuthorizationPolicyList is a list of AuthorizationPolicy.
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthorizationPolicy `json:"items"`
}
