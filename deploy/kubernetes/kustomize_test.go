// Package kubernetes holds the kustomize base and overlays; its test renders
// them with kustomize's Go API (what `kubectl apply -k` runs) and decodes
// every object strictly into the Kubernetes API types, so that a typo'd
// field, a Service selecting no pod or a missing probe fails here, where no
// cluster runs.
package kubernetes

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// rendered is one overlay's output, decoded.
type rendered struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	hpas        map[string]*autoscalingv2.HorizontalPodAutoscaler
	pdbs        map[string]*policyv1.PodDisruptionBudget
	policies    map[string]*networkingv1.NetworkPolicy
	namespaces  []string
}

// render builds path (relative to this directory) from an in-memory copy of
// the tree, so that overlays/prod gets a client.env from the example file
// without one ever being written to disk.
func render(t *testing.T, path string) *rendered {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile(filepath.Join("/k", p), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	if ex, err := os.ReadFile("overlays/prod/client.env.example"); err == nil {
		if err := mem.WriteFile("/k/overlays/prod/client.env", ex); err != nil {
			t.Fatal(err)
		}
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, filepath.Join("/k", path))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", path, err)
	}
	r := &rendered{
		deployments: map[string]*appsv1.Deployment{},
		services:    map[string]*corev1.Service{},
		configMaps:  map[string]*corev1.ConfigMap{},
		secrets:     map[string]*corev1.Secret{},
		hpas:        map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		pdbs:        map[string]*policyv1.PodDisruptionBudget{},
		policies:    map[string]*networkingv1.NetworkPolicy{},
	}
	for _, res := range resMap.Resources() {
		js, err := res.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		gvk := res.GetGvk()
		name := res.GetName()
		var obj any
		switch gvk.ApiVersion() + "/" + gvk.Kind {
		case "apps/v1/Deployment":
			o := &appsv1.Deployment{}
			r.deployments[name], obj = o, o
		case "v1/Service":
			o := &corev1.Service{}
			r.services[name], obj = o, o
		case "v1/ConfigMap":
			o := &corev1.ConfigMap{}
			r.configMaps[name], obj = o, o
		case "v1/Secret":
			o := &corev1.Secret{}
			r.secrets[name], obj = o, o
		case "autoscaling/v2/HorizontalPodAutoscaler":
			o := &autoscalingv2.HorizontalPodAutoscaler{}
			r.hpas[name], obj = o, o
		case "policy/v1/PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			r.pdbs[name], obj = o, o
		case "networking.k8s.io/v1/NetworkPolicy":
			o := &networkingv1.NetworkPolicy{}
			r.policies[name], obj = o, o
		case "v1/Namespace":
			o := &corev1.Namespace{}
			r.namespaces, obj = append(r.namespaces, name), o
		default:
			t.Errorf("%s: unexpected kind %s %s", path, gvk, name)
			continue
		}
		// Strict: unknown or duplicate fields are errors, as with
		// `kubectl apply --validate=strict`.
		strictErrs, err := json.UnmarshalStrict(js, obj)
		if err != nil {
			t.Errorf("%s: %s %s: %v", path, gvk.Kind, name, err)
		}
		for _, e := range strictErrs {
			t.Errorf("%s: %s %s: %v", path, gvk.Kind, name, e)
		}
	}
	return r
}

func TestOverlays(t *testing.T) {
	for _, tc := range []struct {
		path      string
		namespace string
		emulator  bool
		replicas  int32
	}{
		{"base", "", true, 2},
		{"overlays/dev", "m2m-dev", true, 1},
		{"overlays/prod", "m2m", false, 3},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := render(t, tc.path)
			checkWorkloads(t, r, tc.emulator)
			checkServices(t, r)
			checkScaling(t, r, tc.replicas)
			checkNetworkPolicy(t, r)
			checkEgress(t, r, tc.emulator)
			checkSettings(t, r)
			checkSecrets(t, r, tc.path)
			if tc.namespace != "" && !slices.Equal(r.namespaces, []string{tc.namespace}) {
				t.Errorf("namespaces %v, want [%s]", r.namespaces, tc.namespace)
			}
		})
	}
}

func checkWorkloads(t *testing.T, r *rendered, emulator bool) {
	t.Helper()
	want := []string{"protected-data", "public-gateway"}
	if emulator {
		want = append(want, "wristband-emulator")
	}
	var got []string
	for name := range r.deployments {
		got = append(got, name)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("deployments %v, want %v", got, want)
	}
	for name, d := range r.deployments {
		// An HPA owns the count: a replicas field would reset it on
		// every apply.
		if _, scaled := r.hpas[name]; scaled && d.Spec.Replicas != nil {
			t.Errorf("%s: replicas %d set although an HPA manages it", name, *d.Spec.Replicas)
		}
		if name == "wristband-emulator" && (d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType) {
			t.Errorf("%s: want exactly one replica, strategy Recreate (one signing key)", name)
		}
		// Prometheus annotations name the admin port.
		if a := d.Spec.Template.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "9090" || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("%s: scrape annotations %v, want scrape=true port=9090 path=/metrics", name, a)
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: selector %v does not match its pods %v", name, d.Spec.Selector, d.Spec.Template.Labels)
		}
		pod := d.Spec.Template.Spec
		if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("%s: pod must run as a numeric non-root user", name)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: the services never call the Kubernetes API: do not mount a token", name)
		}
		for _, c := range pod.Containers {
			where := name + "/" + c.Name
			if c.LivenessProbe == nil || c.ReadinessProbe == nil || c.StartupProbe == nil {
				t.Errorf("%s: startup, liveness and readiness probes required", where)
			}
			for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
				if p != nil && (p.HTTPGet == nil || !hasPort(c, p.HTTPGet.Port)) {
					t.Errorf("%s: probe %+v does not name a container port", where, p.ProbeHandler)
				}
			}
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
				if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
					t.Errorf("%s: %s request %v and limit %v must be set, request <= limit", where, res, req.String(), lim.String())
				}
			}
			// preStop: keep serving while the endpoint removal spreads; the
			// grace period must cover it and the 15 s graceful shutdown.
			if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds < 3 {
				t.Errorf("%s: want a preStop sleep of a few seconds (no shell in the image: the sleep action)", where)
			} else if g := pod.TerminationGracePeriodSeconds; g == nil && c.Lifecycle.PreStop.Sleep.Seconds+15 > 30 ||
				g != nil && *g < c.Lifecycle.PreStop.Sleep.Seconds+15 {
				t.Errorf("%s: terminationGracePeriodSeconds %v < preStop %d s + 15 s shutdown", where, g, c.Lifecycle.PreStop.Sleep.Seconds)
			}
			var metrics *corev1.ContainerPort
			for i := range c.Ports {
				if c.Ports[i].Name == "metrics" {
					metrics = &c.Ports[i]
				}
			}
			if metrics == nil || metrics.ContainerPort != 9090 {
				t.Errorf("%s: want a container port named metrics on 9090", where)
			}
			// GOMEMLIMIT below the memory limit.
			lim := c.Resources.Limits[corev1.ResourceMemory]
			gml := envValue(c, "GOMEMLIMIT")
			if q, err := resource.ParseQuantity(strings.TrimSuffix(gml, "B")); gml == "" || err != nil || q.Cmp(lim) >= 0 {
				t.Errorf("%s: GOMEMLIMIT %q must be set below the memory limit %s", where, gml, lim.String())
			}
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Errorf("%s: want a read-only root, no privilege escalation, all capabilities dropped", where)
			}
			for _, e := range c.Env {
				if strings.Contains(e.Name, "SECRET") && !strings.HasSuffix(e.Name, "_FILE") && e.Value != "" {
					t.Errorf("%s: %s given as a plain value; take it from the Secret", where, e.Name)
				}
			}
			for _, ref := range envRefs(c) {
				if _, ok := r.configMaps[ref]; !ok {
					if _, ok := r.secrets[ref]; !ok {
						t.Errorf("%s: refers to %q, which the overlay does not produce", where, ref)
					}
				}
			}
		}
	}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func envVar(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// checkSettings: the secure defaults and where secrets come from.
func checkSettings(t *testing.T, r *rendered) {
	t.Helper()
	pd := r.deployments["protected-data"].Spec.Template.Spec.Containers[0]
	if v := envVar(pd, "ALLOWED_CLIENT_IDS"); v == nil || v.ValueFrom == nil || v.ValueFrom.SecretKeyRef == nil ||
		!strings.HasPrefix(v.ValueFrom.SecretKeyRef.Name, "m2m-client") || v.ValueFrom.SecretKeyRef.Key != "CLIENT_ID" {
		t.Errorf("protected-data: ALLOWED_CLIENT_IDS must be the gateway's CLIENT_ID (from the m2m-client Secret), got %+v", v)
	}
	if envValue(pd, "REQUIRE_TOKEN_TYPE") != "at+JWT" || envValue(pd, "ALLOWED_SUB_KINDS") != "client" {
		t.Error("protected-data: want REQUIRE_TOKEN_TYPE=at+JWT and ALLOWED_SUB_KINDS=client")
	}
	gwPod := r.deployments["public-gateway"].Spec.Template.Spec
	gw := gwPod.Containers[0]
	if envVar(gw, "CLIENT_SECRET") != nil {
		t.Error("public-gateway: CLIENT_SECRET in the environment; mount the Secret and set CLIENT_SECRET_FILE")
	}
	file := envValue(gw, "CLIENT_SECRET_FILE")
	mounted := false
	for _, m := range gw.VolumeMounts {
		if !strings.HasPrefix(file, m.MountPath+"/") {
			continue
		}
		for _, v := range gwPod.Volumes {
			if v.Name != m.Name || v.Secret == nil || !strings.HasPrefix(v.Secret.SecretName, "m2m-client") {
				continue
			}
			if _, ok := r.secrets[v.Secret.SecretName]; !ok {
				t.Errorf("public-gateway: volume %s mounts Secret %s, which the overlay does not produce", v.Name, v.Secret.SecretName)
			}
			for _, it := range v.Secret.Items {
				if it.Key == "CLIENT_SECRET" && m.MountPath+"/"+it.Path == file {
					mounted = true
				}
			}
		}
	}
	if !mounted {
		t.Errorf("public-gateway: CLIENT_SECRET_FILE %q is not the CLIENT_SECRET key of a mounted m2m-client Secret", file)
	}
	if d := r.deployments["wristband-emulator"]; d != nil {
		c := d.Spec.Template.Spec.Containers[0]
		key := envValue(c, "SIGNING_KEY_FILE")
		ok := false
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(key, m.MountPath+"/") && !m.ReadOnly {
				ok = true
			}
		}
		if !ok {
			t.Errorf("wristband-emulator: SIGNING_KEY_FILE %q must be on a writable volume, so that a restart keeps the key", key)
		}
	}
}

// checkEgress: every egress rule of every pod names its destination and
// ports, and each pod reaches only what it needs: the gateway protected-data,
// the identity provider and DNS; protected-data the identity provider and
// DNS; the emulator nothing.
func checkEgress(t *testing.T, r *rendered, emulator bool) {
	t.Helper()
	denied := false
	for _, p := range r.policies {
		if len(p.Spec.PodSelector.MatchLabels) == 0 && len(p.Spec.PodSelector.MatchExpressions) == 0 &&
			slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) && len(p.Spec.Egress) == 0 {
			denied = true
		}
	}
	if !denied {
		t.Error("no default-deny egress NetworkPolicy")
	}
	idp := "https"
	if emulator {
		idp = "wristband-emulator:6003"
	}
	want := map[string][]string{
		"public-gateway":     {"dns", "protected-data:6002", idp},
		"protected-data":     {"dns", idp},
		"wristband-emulator": nil,
	}
	for name, d := range r.deployments {
		pod := labels.Set(d.Spec.Template.Labels)
		var got []string
		for pname, p := range r.policies {
			sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
			if err != nil || !sel.Matches(pod) || !slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
				continue
			}
			for _, rule := range p.Spec.Egress {
				if len(rule.To) == 0 || len(rule.Ports) == 0 {
					t.Errorf("policy %s lets %s reach any destination or any port", pname, name)
					continue
				}
				for _, peer := range rule.To {
					got = append(got, classify(t, r, pname, peer, rule.Ports)...)
				}
			}
		}
		slices.Sort(got)
		got = slices.Compact(got)
		w := slices.Sorted(slices.Values(want[name]))
		if !slices.Equal(got, w) {
			t.Errorf("%s may reach %v, want exactly %v", name, got, want[name])
		}
	}
}

// classify names what one egress peer on the given ports reaches.
func classify(t *testing.T, r *rendered, policy string, peer networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) []string {
	t.Helper()
	var nums []string
	for _, p := range ports {
		if p.Port == nil {
			t.Errorf("policy %s: a rule without a port number", policy)
			return nil
		}
		nums = append(nums, p.Port.String())
	}
	switch {
	case peer.IPBlock != nil:
		if !slices.Equal(nums, []string{"443"}) || len(peer.IPBlock.Except) == 0 {
			t.Errorf("policy %s: an IP block must be HTTPS only and exclude private ranges: %+v %v", policy, peer.IPBlock, nums)
		}
		return []string{"https"}
	case peer.NamespaceSelector != nil:
		if peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "kube-system" || peer.PodSelector == nil ||
			peer.PodSelector.MatchLabels["k8s-app"] != "kube-dns" || !slices.Equal(nums, []string{"53", "53"}) {
			t.Errorf("policy %s: a namespace peer other than kube-dns on 53: %+v %v", policy, peer, nums)
		}
		return []string{"dns"}
	case peer.PodSelector != nil:
		sel, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
		if err != nil {
			t.Errorf("policy %s: %v", policy, err)
			return nil
		}
		var out []string
		for name, d := range r.deployments {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				for _, n := range nums {
					out = append(out, name+":"+n)
				}
			}
		}
		if len(out) == 0 {
			t.Errorf("policy %s: peer %v selects no pod", policy, peer.PodSelector)
		}
		return out
	}
	t.Errorf("policy %s: empty peer", policy)
	return nil
}

func hasPort(c corev1.Container, p intstr.IntOrString) bool {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return true
		}
	}
	return false
}

func envRefs(c corev1.Container) []string {
	var out []string
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			out = append(out, ef.ConfigMapRef.Name)
		}
		if ef.SecretRef != nil {
			out = append(out, ef.SecretRef.Name)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			continue
		}
		if e.ValueFrom.ConfigMapKeyRef != nil {
			out = append(out, e.ValueFrom.ConfigMapKeyRef.Name)
		}
		if e.ValueFrom.SecretKeyRef != nil {
			out = append(out, e.ValueFrom.SecretKeyRef.Name)
		}
	}
	return out
}

// checkServices: every Service selects the pods of one Deployment on a port
// they expose; protected-data is headless so the gateway sees every pod.
func checkServices(t *testing.T, r *rendered) {
	t.Helper()
	for name, s := range r.services {
		d, ok := r.deployments[name]
		if !ok {
			t.Errorf("service %s: no deployment of that name", name)
			continue
		}
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) || len(s.Spec.Selector) == 0 {
			t.Errorf("service %s: selector %v does not select its pods", name, s.Spec.Selector)
		}
		for _, p := range s.Spec.Ports {
			if !hasPort(d.Spec.Template.Spec.Containers[0], p.TargetPort) {
				t.Errorf("service %s: targetPort %s is no container port", name, p.TargetPort.String())
			}
		}
	}
	if s := r.services["protected-data"]; s == nil || s.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("protected-data must be a headless Service (clusterIP: None) so pkg/lb can balance per request")
	}
}

// checkScaling: the scaled Deployments have an HPA within sane bounds and a
// PDB that selects them.
func checkScaling(t *testing.T, r *rendered, minReplicas int32) {
	t.Helper()
	for _, name := range []string{"public-gateway", "protected-data"} {
		h := r.hpas[name]
		if h == nil {
			t.Errorf("%s: no HorizontalPodAutoscaler", name)
		} else {
			ref := h.Spec.ScaleTargetRef
			if ref.Kind != "Deployment" || ref.Name != name || r.deployments[ref.Name] == nil {
				t.Errorf("hpa %s targets %s/%s", name, ref.Kind, ref.Name)
			}
			if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != minReplicas || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
				t.Errorf("hpa %s: min %v max %d, want min %d", name, h.Spec.MinReplicas, h.Spec.MaxReplicas, minReplicas)
			}
		}
		p := r.pdbs[name]
		if p == nil {
			t.Errorf("%s: no PodDisruptionBudget", name)
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(r.deployments[name].Spec.Template.Labels)) {
			t.Errorf("pdb %s does not select its pods", name)
		}
	}
}

// checkNetworkPolicy: ingress is denied by default, and the only pods that
// may open connections to protected-data are the gateway's.
func metricsOnly(ports []networkingv1.NetworkPolicyPort) bool {
	for _, p := range ports {
		if p.Port == nil || p.Port.String() != "9090" {
			return false
		}
	}
	return len(ports) > 0
}

func checkNetworkPolicy(t *testing.T, r *rendered) {
	t.Helper()
	denyAll := false
	for _, p := range r.policies {
		if len(p.Spec.PodSelector.MatchLabels) == 0 && len(p.Spec.PodSelector.MatchExpressions) == 0 &&
			slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) && len(p.Spec.Ingress) == 0 {
			denyAll = true
		}
	}
	if !denyAll {
		t.Error("no default-deny ingress NetworkPolicy")
	}
	pd := labels.Set(r.deployments["protected-data"].Spec.Template.Labels)
	gw := labels.Set(r.deployments["public-gateway"].Spec.Template.Labels)
	allowed := 0
	for name, p := range r.policies {
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
		if err != nil {
			t.Errorf("policy %s: %v", name, err)
			continue
		}
		if !sel.Matches(pd) {
			continue
		}
		for _, rule := range p.Spec.Ingress {
			if metricsOnly(rule.Ports) {
				continue // the admin port, for Prometheus
			}
			if len(rule.From) == 0 {
				t.Errorf("policy %s lets every pod reach protected-data", name)
			}
			for _, peer := range rule.From {
				ps, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
				if peer.IPBlock != nil || peer.NamespaceSelector != nil || peer.PodSelector == nil || err != nil || !ps.Matches(gw) {
					t.Errorf("policy %s: peer %+v is not (only) the gateway", name, peer)
					continue
				}
				for _, other := range []string{"protected-data", "wristband-emulator"} {
					if d := r.deployments[other]; d != nil && ps.Matches(labels.Set(d.Spec.Template.Labels)) {
						t.Errorf("policy %s: peer selector also matches %s", name, other)
					}
				}
				allowed++
			}
		}
	}
	if allowed == 0 {
		t.Error("no policy lets the gateway reach protected-data")
	}
}

// checkSecrets: the client secret lives in a Secret only; the committed
// tree carries no real one (base: the emulator's demo credentials; prod:
// whatever client.env the user supplies, here the example's placeholder).
func checkSecrets(t *testing.T, r *rendered, path string) {
	t.Helper()
	var client *corev1.Secret
	for name, s := range r.secrets {
		if strings.HasPrefix(name, "m2m-client") {
			client = s
		}
	}
	if client == nil {
		t.Fatal("no m2m-client Secret")
	}
	secret := secretValue(client, "CLIENT_SECRET")
	if secret == "" {
		t.Error("m2m-client has no CLIENT_SECRET")
	}
	want := "demo-secret"
	if strings.Contains(path, "prod") {
		want = "your-m2m-client-secret"
	}
	if secret != want {
		t.Errorf("CLIENT_SECRET %q, want %q from the committed files", secret, want)
	}
	for name, cm := range r.configMaps {
		for k, v := range cm.Data {
			if strings.Contains(strings.ToUpper(k), "SECRET") || (secret != "" && strings.Contains(v, secret)) {
				t.Errorf("configmap %s holds %s: secrets belong in the Secret", name, k)
			}
		}
	}
}

func secretValue(s *corev1.Secret, key string) string {
	if v, ok := s.StringData[key]; ok {
		return v
	}
	return string(s.Data[key])
}
