package warrenctl

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ConfigKinds are what warrenctl config shows of one ztunnel.
var ConfigKinds = []string{"workloads", "services", "policies", "certs"}

// Workloads is a config dump's workloads, local pods first.
type Workloads []DumpWorkload

// Header implements Table.
func (Workloads) Header() []string {
	return []string{"NAMESPACE", "NAME", "IP", "NODE", "SERVICE ACCOUNT", "PROTOCOL", "LOCAL"}
}

// Rows implements Table.
func (ws Workloads) Rows() [][]string {
	rows := make([][]string, 0, len(ws))
	for _, w := range ws {
		proto := "TCP"
		if w.Enrolled {
			proto = "HBONE"
		}
		local := ""
		if w.Local {
			local = "yes"
		}
		rows = append(rows, []string{w.Namespace, w.Name, strings.Join(w.IPs, ","), w.Node, w.ServiceAccount, proto, local})
	}
	return rows
}

// Services is a config dump's services.
type Services []DumpService

// Header implements Table.
func (Services) Header() []string {
	return []string{"NAMESPACE", "NAME", "VIPS", "PORTS", "ENDPOINTS"}
}

// Rows implements Table.
func (ss Services) Rows() [][]string {
	rows := make([][]string, 0, len(ss))
	for _, s := range ss {
		var ports []string
		for _, p := range s.Ports {
			t := p.TargetPortName
			if t == "" {
				t = strconv.Itoa(int(p.TargetPort))
				if p.TargetPort == 0 {
					t = strconv.Itoa(int(p.Port))
				}
			}
			ports = append(ports, fmt.Sprintf("%d->%s", p.Port, t))
		}
		ready := 0
		for _, e := range s.Endpoints {
			if e.Ready {
				ready++
			}
		}
		rows = append(rows, []string{s.Namespace, s.Name, strings.Join(s.VIPs, ","), strings.Join(ports, ","), fmt.Sprintf("%d/%d", ready, len(s.Endpoints))})
	}
	return rows
}

// Policies is a config dump's authorization policies.
type Policies []DumpPolicy

// Header implements Table.
func (Policies) Header() []string {
	return []string{"NAMESPACE", "NAME", "ACTION", "SELECTOR", "RULES"}
}

// Rows implements Table.
func (ps Policies) Rows() [][]string {
	rows := make([][]string, 0, len(ps))
	for _, p := range ps {
		var sel []string
		for k, v := range p.Selector {
			sel = append(sel, k+"="+v)
		}
		sort.Strings(sel)
		rows = append(rows, []string{p.Namespace, p.Name, p.Action, strings.Join(sel, ","), strconv.Itoa(len(p.Rules))})
	}
	return rows
}

// Certs is a ztunnel's certificates, with the time they are judged at.
type Certs struct {
	Items []Cert
	Now   time.Time
}

// MarshalJSON prints the list alone.
func (c Certs) MarshalJSON() ([]byte, error) { return jsonOf(c.Items) }

// Header implements Table.
func (Certs) Header() []string {
	return []string{"IDENTITY", "SERIAL", "NOT BEFORE", "NOT AFTER", "STATE"}
}

// Rows implements Table.
func (c Certs) Rows() [][]string {
	rows := make([][]string, 0, len(c.Items))
	for _, x := range c.Items {
		rows = append(rows, []string{x.Identity, x.Serial, x.NotBefore.UTC().Format(time.RFC3339), x.NotAfter.UTC().Format(time.RFC3339), CertState(x.NotBefore, x.NotAfter, c.Now)})
	}
	return rows
}

// NearExpiry reports whether a certificate valid from nb to na is close
// enough to expiry at now to warn: less than CertWarnBefore left, or, for
// short-lived ones (workload certificates, which the ztunnel renews at half
// their life), less than 40% of its life left, so a renewal is overdue.
func NearExpiry(nb, na, now time.Time) bool {
	return na.Sub(now) < min(CertWarnBefore, na.Sub(nb)*2/5)
}

// CertState says whether a certificate valid from nb to na is valid at now,
// and how long it has left.
func CertState(nb, na, now time.Time) string {
	switch {
	case now.Before(nb):
		return "NOT YET VALID"
	case !now.Before(na):
		return "EXPIRED"
	case NearExpiry(nb, na, now):
		return "EXPIRES IN " + Human(na.Sub(now))
	}
	return "VALID (" + Human(na.Sub(now)) + " left)"
}

// Human is a duration the way kubectl prints ages: 3d4h, 5h20m, 12m, 40s.
func Human(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= 48*time.Hour:
		days := d / (24 * time.Hour)
		return fmt.Sprintf("%dd%dh", days, (d-days*24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, (d%time.Hour)/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// ZtunnelConfig fetches kind (one of ConfigKinds) from the ztunnel of node
// ("" when the cluster has one node) and returns it as printable data.
func ZtunnelConfig(ctx context.Context, c *Clients, node, kind string, now time.Time) (any, error) {
	if err := c.RequireWarren(ctx); err != nil {
		return nil, err
	}
	pod, err := PickNodePod(ctx, c, node)
	if err != nil {
		return nil, err
	}
	if kind == "certs" {
		b, err := c.Fetch(ctx, pod.Namespace, pod.Name, ZtunnelAdminPort, "/certs")
		if err != nil {
			return nil, fmt.Errorf("ztunnel admin of %s: %w; see kubectl -n %s logs %s -c %s", pod.Spec.NodeName, err, pod.Namespace, pod.Name, ZtunnelContainer)
		}
		certs, err := ParseCerts(b)
		return Certs{Items: certs, Now: now}, err
	}
	b, err := c.Fetch(ctx, pod.Namespace, pod.Name, ZtunnelAdminPort, "/config_dump")
	if err != nil {
		return nil, fmt.Errorf("ztunnel admin of %s: %w; see kubectl -n %s logs %s -c %s", pod.Spec.NodeName, err, pod.Namespace, pod.Name, ZtunnelContainer)
	}
	d, err := ParseConfigDump(b)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "workloads":
		return Workloads(append(d.Config.Pods, d.Config.Workloads...)), nil
	case "services":
		return Services(d.Config.Services), nil
	case "policies":
		return Policies(d.Config.Policies), nil
	}
	return nil, fmt.Errorf("config %q: want one of %s", kind, strings.Join(ConfigKinds, ", "))
}
