package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// WorkloadSelector picks workloads (pods) by their labels, in the namespace of
// the object that holds it.
type WorkloadSelector struct {
	// MatchLabels selects the pods that carry every one of these labels.
	// +required
	// +kubebuilder:validation:MinProperties=1
	// +kubebuilder:validation:MaxProperties=32
	MatchLabels map[string]string `json:"matchLabels"`
}

// ConditionAccepted is the condition type the controller sets on every Warren
// policy: True when the data plane enforces it as written.
const ConditionAccepted = "Accepted"

// Reasons of the Accepted condition.
const (
	// ReasonAccepted: the object is valid and in force.
	ReasonAccepted = "Accepted"
	// ReasonInvalid: the object passed the apiserver's checks but not the
	// controller's (for example a principal in another trust domain).
	ReasonInvalid = "Invalid"
	// ReasonOverlapsDeny: an ALLOW policy that a DENY policy overlaps. It is in
	// force, but where both match, deny wins.
	ReasonOverlapsDeny = "OverlapsDeny"
	// ReasonConflicted: another object of the same kind and scope was there
	// first; this one is not in force.
	ReasonConflicted = "Conflicted"
)

// PolicyStatus is the status of every Warren policy object.
type PolicyStatus struct {
	// ObservedGeneration is the generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Accepted, with one of the reasons Accepted, Invalid,
	// OverlapsDeny or Conflicted.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
