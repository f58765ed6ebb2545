package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The class Warren owns, and what it answers to.
const (
	ClassName      = "warren-waypoint"
	ControllerName = gwv1.GatewayController("warren.dev/waypoint-controller")
)

// The waypoint's ports: HBONE from the ztunnels (the only listener a
// waypoint Gateway may declare), and the node-port conventions the ztunnel
// uses for metrics and readiness.
const (
	HBONEPort        = 15008
	HBONEProtocol    = gwv1.ProtocolType("HBONE")
	MetricsPort      = 15020
	ReadinessPort    = 15021
	rootsVolume      = "warren-ca"
	rootsMountPath   = "/var/run/warren-ca"
	rootsKey         = "root-cert.pem"
	containerName    = "waypoint"
	labelGatewayName = "gateway.networking.k8s.io/gateway-name"
	// LabelMesh with value "disabled" keeps the waypoint's own pods out of
	// redirection: they speak HBONE themselves.
	labelMesh = "warren.dev/mesh"
)

// Options are what every waypoint shares.
type Options struct {
	// Image of cmd/waypoint.
	Image string
	// Controller is the distribution API's address (host:port).
	Controller string
	// TrustDomain of the mesh; default cluster.local.
	TrustDomain string
}

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	if o.Image == "" {
		errs = append(errs, errors.New("gateway: no waypoint image"))
	}
	if o.Controller == "" {
		errs = append(errs, errors.New("gateway: no controller address for waypoints"))
	}
	o.TrustDomain = cmp.Or(o.TrustDomain, "cluster.local")
	return errors.Join(errs...)
}

// Objects are what one waypoint Gateway runs as.
type Objects struct {
	ServiceAccount *corev1.ServiceAccount
	Roots          *corev1.ConfigMap
	Deployment     *appsv1.Deployment
	Service        *corev1.Service
}

// Name is the name of every object a Gateway runs as: the Gateway's own, so
// that `kubectl get deploy,svc,sa <name>` finds them.
func Name(gw *gwv1.Gateway) string { return gw.Name }

// RootsName is the ConfigMap of mesh roots in the Gateway's namespace.
func RootsName(gw *gwv1.Gateway) string { return gw.Name + "-warren-ca" }

// Labels select the waypoint's pods.
func Labels(gw *gwv1.Gateway) map[string]string {
	return map[string]string{labelGatewayName: gw.Name}
}

// Render returns the objects for gw, each owned by it. roots is the PEM of
// the mesh roots.
func Render(gw *gwv1.Gateway, roots string, o Options) Objects {
	owner := []metav1.OwnerReference{*metav1.NewControllerRef(gw, schema.GroupVersionKind{Group: gwv1.GroupName, Version: gwv1.GroupVersion.Version, Kind: "Gateway"})}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Name: name, Namespace: gw.Namespace, OwnerReferences: owner,
			Labels: map[string]string{
				labelGatewayName:               gw.Name,
				"app.kubernetes.io/name":       gw.Name,
				"app.kubernetes.io/component":  "waypoint",
				"app.kubernetes.io/managed-by": "warren-controller",
			},
		}
	}
	podLabels := Labels(gw)
	podLabels[labelMesh] = "disabled"
	podLabels["app.kubernetes.io/name"] = gw.Name
	podLabels["app.kubernetes.io/component"] = "waypoint"
	port := func(name string, p int32) corev1.ContainerPort {
		return corev1.ContainerPort{Name: name, ContainerPort: p, Protocol: corev1.ProtocolTCP}
	}
	env := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	dep := &appsv1.Deployment{
		ObjectMeta: meta(Name(gw)),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: Labels(gw)},
			// A new waypoint is ready before the old one leaves: no gap in
			// a rollout.
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1))}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels: podLabels,
					Annotations: map[string]string{
						"prometheus.io/scrape": "true",
						"prometheus.io/port":   strconv.Itoa(MetricsPort),
						"prometheus.io/path":   "/metrics",
					},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName:            Name(gw),
					TerminationGracePeriodSeconds: ptr.To[int64](30),
					Containers: []corev1.Container{{
						Name:            containerName,
						Image:           o.Image,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Command:         []string{"/waypoint"},
						Args: []string{
							"--controller=" + o.Controller,
							"--ca-bundle=" + rootsMountPath + "/" + rootsKey,
							"--trust-domain=" + o.TrustDomain,
							"--gateway=" + gw.Namespace + "/" + gw.Name,
						},
						Env: []corev1.EnvVar{
							env("POD_NAME", "metadata.name"), env("POD_NAMESPACE", "metadata.namespace"),
							env("NODE_NAME", "spec.nodeName"), env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
						},
						Ports: []corev1.ContainerPort{port("hbone", HBONEPort), port("metrics", MetricsPort), port("ready", ReadinessPort)},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/ready", Port: intstr.FromString("ready")}},
							PeriodSeconds: 2,
						},
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
							Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
						},
						SecurityContext: &corev1.SecurityContext{
							RunAsNonRoot:             ptr.To(true),
							RunAsUser:                ptr.To[int64](65534),
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
							SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: rootsVolume, MountPath: rootsMountPath, ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{Name: rootsVolume, VolumeSource: corev1.VolumeSource{
						ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: RootsName(gw)}}}}},
				},
			},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: meta(Name(gw)),
		Spec: corev1.ServiceSpec{
			Selector: Labels(gw),
			Ports: []corev1.ServicePort{{
				Name: "mesh", Port: HBONEPort, TargetPort: intstr.FromInt32(HBONEPort), Protocol: corev1.ProtocolTCP,
				AppProtocol: ptr.To("warren.dev/hbone"),
			}},
		},
	}
	return Objects{
		ServiceAccount: &corev1.ServiceAccount{ObjectMeta: meta(Name(gw))},
		Roots:          &corev1.ConfigMap{ObjectMeta: meta(RootsName(gw)), Data: map[string]string{rootsKey: roots}},
		Deployment:     dep,
		Service:        svc,
	}
}

// checkListeners says, per listener, why it cannot be served, or "" when it
// can: a waypoint listens for HBONE on 15008 and nothing else.
func checkListener(l gwv1.Listener) (gwv1.ListenerConditionReason, string) {
	switch {
	case l.Protocol != HBONEProtocol:
		return gwv1.ListenerReasonUnsupportedProtocol, fmt.Sprintf("a %s listener serves protocol HBONE only, not %q", ClassName, l.Protocol)
	case l.Port != HBONEPort:
		return gwv1.ListenerReasonPortUnavailable, fmt.Sprintf("a %s listener serves port %d only, not %d", ClassName, HBONEPort, l.Port)
	}
	return "", ""
}
