package deploy_test

import (
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// runtimeEnv are read by the Go runtime, not by our configuration.
var runtimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GOGC": true, "GODEBUG": true, "TZ": true}

var (
	knownOnce sync.Once
	known     map[string]map[string]bool // "api serve", "notifier", ... -> env names
	helpText  map[string]string          // "api serve", ... -> its -h output
	knownErr  error
	envInHelp = regexp.MustCompile(`\(\$([A-Z][A-Z0-9_]*)\)`)
)

// commands are what the image runs (deploy/Dockerfile: one image, the
// command picks the binary).
var commands = []string{"api serve", "api migrate", "notifier", "reaper"}

// knownEnv builds the three binaries and reads, from each command's -h,
// the environment variables it reads: the binaries themselves are the
// authority on their settings.
func knownEnv(t *testing.T) map[string]map[string]bool {
	t.Helper()
	knownOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sharelinks-bins-")
		if err != nil {
			knownErr = err
			return
		}
		defer os.RemoveAll(dir)
		// As deploy/Dockerfile builds them: static, for a base with no libc.
		build := exec.Command("go", "build", "-trimpath", "-o", dir+string(filepath.Separator), "./cmd/api", "./cmd/notifier", "./cmd/reaper")
		build.Dir = ".."
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			knownErr = errors.New("go build: " + err.Error() + "\n" + string(out))
			return
		}
		for _, b := range []string{"api", "notifier", "reaper"} {
			if err := staticELF(filepath.Join(dir, b)); err != nil {
				knownErr = err
				return
			}
		}
		known, helpText = map[string]map[string]bool{}, map[string]string{}
		for _, c := range commands {
			args := strings.Fields(c)
			out, _ := exec.Command(filepath.Join(dir, args[0]), append(args[1:], "-h")...).CombinedOutput() // -h exits non-zero
			if !bytes.Contains(out, []byte("Usage of")) {
				knownErr = errors.New(c + " -h printed no usage:\n" + string(out))
				return
			}
			known[c], helpText[c] = map[string]bool{}, string(out)
			for _, m := range envInHelp.FindAllSubmatch(out, -1) {
				known[c][string(m[1])] = true
			}
		}
	})
	if knownErr != nil {
		t.Fatal(knownErr)
	}
	return known
}

// staticELF fails for a binary that needs a dynamic loader: the image's
// distroless/static base has none, so it would not start there.
func staticELF(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New(filepath.Base(path) + " is dynamically linked (PT_INTERP): it cannot run on distroless/static")
		}
	}
	return nil
}

// TestDockerfile checks deploy/Dockerfile where it can drift from the
// repository: the Go it builds with is the one go.mod asks for, the binaries
// it builds are the ones the manifests run, it builds them static for a
// distroless/static base, and runs them as the numeric non-root user that
// runAsNonRoot verifies.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(mod))
	argLine := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\S+)$`).FindStringSubmatch(df)
	switch {
	case goLine == nil || argLine == nil:
		t.Errorf("cannot find go.mod's go line (%v) or the Dockerfile's ARG GO_VERSION (%v)", goLine, argLine)
	case argLine[1] != goLine[1]:
		t.Errorf("Dockerfile builds with Go %s, go.mod asks for %s", argLine[1], goLine[1])
	}
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/api ./cmd/notifier ./cmd/reaper"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	final := df[strings.LastIndex(df, "\nFROM ")+1:]
	if !strings.HasPrefix(final, "FROM gcr.io/distroless/static") {
		t.Errorf("the final stage is not distroless/static: %.60s", final)
	}
	if !strings.Contains(final, "\nUSER 65532:65532\n") {
		t.Error("the final stage does not run as USER 65532:65532")
	}
}

// k8s objects, as far as these checks read them.
type (
	k8sObject struct {
		Kind     string            `yaml:"kind"`
		Metadata k8sMeta           `yaml:"metadata"`
		Data     map[string]string `yaml:"data"`
		String   map[string]string `yaml:"stringData"`
		Spec     struct {
			Replicas int `yaml:"replicas"`
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Template struct {
				Metadata k8sMeta `yaml:"metadata"`
				Spec     struct {
					TerminationGracePeriodSeconds *int           `yaml:"terminationGracePeriodSeconds"`
					Containers                    []k8sContainer `yaml:"containers"`
					Volumes                       []struct {
						Name      string `yaml:"name"`
						ConfigMap *struct {
							Name string `yaml:"name"`
						} `yaml:"configMap"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	k8sMeta struct {
		Name        string            `yaml:"name"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	}
	k8sContainer struct {
		Name    string   `yaml:"name"`
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Ports   []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		EnvFrom []struct {
			ConfigMapRef *struct {
				Name string `yaml:"name"`
			} `yaml:"configMapRef"`
		} `yaml:"envFrom"`
		Env []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom *struct {
				SecretKeyRef *struct {
					Name     string `yaml:"name"`
					Key      string `yaml:"key"`
					Optional bool   `yaml:"optional"`
				} `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		Resources struct {
			Requests map[string]string `yaml:"requests"`
		} `yaml:"resources"`
		Liveness  *k8sProbe `yaml:"livenessProbe"`
		Readiness *k8sProbe `yaml:"readinessProbe"`
		Lifecycle struct {
			PreStop *struct {
				Sleep *struct {
					Seconds int `yaml:"seconds"`
				} `yaml:"sleep"`
			} `yaml:"preStop"`
		} `yaml:"lifecycle"`
	}
	k8sProbe struct {
		HTTPGet *struct {
			Path string    `yaml:"path"`
			Port yaml.Node `yaml:"port"` // a name or a number
		} `yaml:"httpGet"`
	}
)

// readK8s returns what `kubectl apply -k k8s` applies, as kustomize
// itself builds it (generated names, the image override, labels), and the
// Secret the operator creates first from secret.example.yaml.
func readK8s(t *testing.T) []k8sObject {
	t.Helper()
	objs := decodeK8s(t, "kustomize build k8s", kustomizeBuild(t))
	secret, err := os.ReadFile("k8s/secret.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return append(objs, decodeK8s(t, "k8s/secret.example.yaml", secret)...)
}

// kustomizeBuild is `kustomize build k8s`.
func kustomizeBuild(t *testing.T) []byte {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), "k8s")
	if err != nil {
		t.Fatalf("kustomize build k8s: %v", err)
	}
	built, err := m.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build k8s: %v", err)
	}
	return built
}

// decodeK8s decodes every object of a multi-document YAML stream.
func decodeK8s(t *testing.T, from string, raw []byte) []k8sObject {
	t.Helper()
	var objs []k8sObject
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			return objs
		} else if err != nil {
			t.Fatalf("%s: %v", from, err)
		}
		if o.Kind != "" {
			objs = append(objs, o)
		}
	}
}

// addrPort is the port of a listen address such as ":9091".
func addrPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return n
}

// TestKubernetesManifests checks each sharelinks container against its
// binary: every variable it is given is one the binary reads, its probes
// hit /healthz and /readyz on the port the binary listens on (where the
// scrape annotation points too), it asks for resources, and each of its
// Deployments has a PodDisruptionBudget.
func TestKubernetesManifests(t *testing.T) {
	env := knownEnv(t)
	objs := readK8s(t)
	configMaps, secrets := map[string]map[string]string{}, map[string]map[string]string{}
	var pdbs []k8sObject
	for _, o := range objs {
		switch o.Kind {
		case "ConfigMap":
			configMaps[o.Metadata.Name] = o.Data
		case "Secret":
			secrets[o.Metadata.Name] = o.String
		case "PodDisruptionBudget":
			pdbs = append(pdbs, o)
		}
	}
	usedKeys := map[string]map[string]bool{} // config map -> keys some binary reading it knows
	deployments := 0
	for _, o := range objs {
		if o.Kind != "Deployment" && o.Kind != "Job" {
			continue
		}
		for _, c := range o.Spec.Template.Spec.Containers {
			cmd := strings.Join(c.Command, " ")
			vars, ours := env[cmd]
			if !ours {
				if slices.Contains([]string{"api", "notifier", "reaper"}, c.Command[0]) {
					t.Errorf("%s %s: command %q is none of %v", o.Kind, o.Metadata.Name, cmd, commands)
				}
				continue
			}
			where := o.Kind + " " + o.Metadata.Name
			set := map[string]string{}
			for _, e := range c.Env {
				set[e.Name] = e.Value
				if !vars[e.Name] && !runtimeEnv[e.Name] {
					t.Errorf("%s: %s does not read %s", where, cmd, e.Name)
				}
				if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && !r.SecretKeyRef.Optional {
					if _, ok := secrets[r.SecretKeyRef.Name][r.SecretKeyRef.Key]; !ok {
						t.Errorf("%s: %s comes from secret %s key %s, which secret.example.yaml does not show",
							where, e.Name, r.SecretKeyRef.Name, r.SecretKeyRef.Key)
					}
				}
			}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef == nil {
					continue
				}
				cm, ok := configMaps[ef.ConfigMapRef.Name]
				if !ok {
					t.Errorf("%s: config map %s is not in k8s/", where, ef.ConfigMapRef.Name)
				}
				if usedKeys[ef.ConfigMapRef.Name] == nil {
					usedKeys[ef.ConfigMapRef.Name] = map[string]bool{}
				}
				for k, v := range cm {
					if vars[k] {
						usedKeys[ef.ConfigMapRef.Name][k] = true
						if _, own := set[k]; !own {
							set[k] = v
						}
					}
				}
			}
			if o.Kind == "Job" {
				continue
			}
			deployments++
			// The binary's one HTTP port: the api's, or a worker's metrics.
			addrVar := "METRICS_ADDR"
			if cmd == "api serve" {
				addrVar = "HTTP_ADDR"
			}
			addr, ok := set[addrVar]
			if !ok {
				t.Errorf("%s: %s is not set, so the probes' port is the binary's default, not the manifest's", where, addrVar)
				continue
			}
			port := addrPort(t, addr)
			portOf := func(n yaml.Node) int {
				if p, err := strconv.Atoi(n.Value); err == nil {
					return p
				}
				for _, p := range c.Ports {
					if p.Name == n.Value {
						return p.ContainerPort
					}
				}
				return -1
			}
			for _, pr := range []struct {
				name, path string
				probe      *k8sProbe
			}{{"liveness", "/healthz", c.Liveness}, {"readiness", "/readyz", c.Readiness}} {
				switch {
				case pr.probe == nil || pr.probe.HTTPGet == nil:
					t.Errorf("%s: no %s probe over HTTP", where, pr.name)
				case pr.probe.HTTPGet.Path != pr.path:
					t.Errorf("%s: %s probe on %s, want %s", where, pr.name, pr.probe.HTTPGet.Path, pr.path)
				case portOf(pr.probe.HTTPGet.Port) != port:
					t.Errorf("%s: %s probe on port %q, but %s=%s", where, pr.name, pr.probe.HTTPGet.Port.Value, addrVar, addr)
				}
			}
			if a := o.Spec.Template.Metadata.Annotations["prometheus.io/port"]; a != strconv.Itoa(port) {
				t.Errorf("%s: prometheus.io/port %q, but %s=%s", where, a, addrVar, addr)
			}
			if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" {
				t.Errorf("%s: requests no cpu or memory", where)
			}
			covered := slices.ContainsFunc(pdbs, func(p k8sObject) bool {
				sel := p.Spec.Selector.MatchLabels
				if len(sel) == 0 {
					return false
				}
				for k, v := range sel {
					if o.Spec.Template.Metadata.Labels[k] != v {
						return false
					}
				}
				return true
			})
			if !covered {
				t.Errorf("%s: no PodDisruptionBudget selects its pods", where)
			}
		}
	}
	if deployments != 3 {
		t.Errorf("found %d sharelinks Deployments, want api, notifier and reaper", deployments)
	}
	// Streams are created with STREAM_REPLICAS copies: one per NATS node.
	for _, o := range objs {
		if o.Kind == "StatefulSet" && o.Metadata.Name == "nats" {
			if r := configMaps["sharelinks-config"]["STREAM_REPLICAS"]; r != strconv.Itoa(o.Spec.Replicas) {
				t.Errorf("STREAM_REPLICAS is %q on a NATS cluster of %d", r, o.Spec.Replicas)
			}
		}
	}
	for name, cm := range configMaps {
		for k := range cm {
			if usedKeys[name] != nil && !usedKeys[name][k] {
				t.Errorf("config map %s sets %s, which no binary that reads the map reads", name, k)
			}
		}
	}
}

// kustomizeExtras are the files under k8s/ that `kubectl apply -k` does
// not apply, and why.
var kustomizeExtras = map[string]string{
	"kustomization.yaml":  "the kustomization itself",
	"secret.example.yaml": "the operator creates the Secret first, with real values",
	"servicemonitor.yaml": "needs the Prometheus Operator's CRDs",
	"nats-values.yaml":    "values for the NATS Helm chart, the alternative to nats.yaml",
}

// k8sService is a Service or a ServiceMonitor, as far as these checks read them.
type k8sService struct {
	Kind     string  `yaml:"kind"`
	Metadata k8sMeta `yaml:"metadata"`
	Spec     struct {
		Selector yaml.Node `yaml:"selector"` // a Service's map, a ServiceMonitor's matchLabels
		Ports    []struct {
			Name       string    `yaml:"name"`
			TargetPort yaml.Node `yaml:"targetPort"`
		} `yaml:"ports"`
		JobLabel  string `yaml:"jobLabel"`
		Endpoints []struct {
			Port string `yaml:"port"`
			Path string `yaml:"path"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

// TestKustomization checks what kustomize builds from k8s/ beyond the
// per-container checks: every manifest file is applied or is a known
// extra, every image is pinned by the kustomization, every config map a
// pod mounts exists under its generated name, every Service reaches a
// container port, and the ServiceMonitor scrapes each binary's metrics
// port under the job name the alert rules match on.
func TestKustomization(t *testing.T) {
	raw, err := os.ReadFile("k8s/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources  []string `yaml:"resources"`
		Generators []struct {
			Files []string `yaml:"files"`
		} `yaml:"configMapGenerator"`
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatalf("k8s/kustomization.yaml: %v", err)
	}
	applied := map[string]bool{}
	for _, r := range k.Resources {
		applied[r] = true
	}
	for _, g := range k.Generators {
		for _, f := range g.Files {
			applied[f] = true
		}
	}
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		if _, extra := kustomizeExtras[name]; !applied[name] && !extra {
			t.Errorf("k8s/%s is neither in kustomization.yaml nor a known extra: kubectl apply -k would skip it", name)
		}
	}

	objs := readK8s(t)
	configMaps := map[string]bool{}
	for _, o := range objs {
		if o.Kind == "ConfigMap" {
			configMaps[o.Metadata.Name] = true
		}
	}
	type pod struct {
		component string
		labels    map[string]string
		ports     map[string]int // container port name -> number
		httpPort  int            // where the binary serves /metrics: its probes' port
	}
	var pods []pod
	for _, o := range objs {
		if o.Kind != "Deployment" && o.Kind != "StatefulSet" && o.Kind != "Job" {
			continue
		}
		where := o.Kind + " " + o.Metadata.Name
		p := pod{labels: o.Spec.Template.Metadata.Labels, ports: map[string]int{}}
		for _, c := range o.Spec.Template.Spec.Containers {
			_, tag, _ := strings.Cut(c.Image, ":")
			if tag == "" || tag == "latest" {
				t.Errorf("%s: container %s runs image %q: no pinned tag", where, c.Name, c.Image)
			}
			if slices.Contains(commands, strings.Join(c.Command, " ")) && c.Image != "sharelinks:dev" {
				t.Errorf("%s: container %s runs %q, not sharelinks:dev, the image kustomization.yaml sets", where, c.Name, c.Image)
			}
			for _, cp := range c.Ports {
				p.ports[cp.Name] = cp.ContainerPort
			}
			// TestKubernetesManifests holds the probes to the binary's port.
			if r := c.Readiness; r != nil && r.HTTPGet != nil {
				if n, err := strconv.Atoi(r.HTTPGet.Port.Value); err == nil {
					p.httpPort = n
				} else {
					p.httpPort = p.ports[r.HTTPGet.Port.Value]
				}
			}
		}
		for _, v := range o.Spec.Template.Spec.Volumes {
			if v.ConfigMap != nil && !configMaps[v.ConfigMap.Name] {
				t.Errorf("%s: volume %s mounts config map %s, which the build does not contain", where, v.Name, v.ConfigMap.Name)
			}
		}
		if o.Kind == "Deployment" {
			p.component = p.labels["app.kubernetes.io/component"]
			pods = append(pods, p)
		}
	}

	var services []k8sService
	var monitor *k8sService
	for _, f := range []string{"built", "k8s/servicemonitor.yaml"} {
		stream := kustomizeBuild(t)
		if f != "built" {
			if stream, err = os.ReadFile(f); err != nil {
				t.Fatal(err)
			}
		}
		dec := yaml.NewDecoder(bytes.NewReader(stream))
		for {
			var s k8sService
			if err := dec.Decode(&s); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			switch s.Kind {
			case "Service":
				services = append(services, s)
			case "ServiceMonitor":
				monitor = &s
			}
		}
	}
	if monitor == nil {
		t.Fatal("k8s/servicemonitor.yaml holds no ServiceMonitor")
	}
	labelsOf := func(n yaml.Node, key string) map[string]string {
		m := map[string]string{}
		if key != "" {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					n = *n.Content[i+1]
				}
			}
		}
		if err := n.Decode(&m); err != nil {
			t.Fatalf("selector: %v", err)
		}
		return m
	}
	selects := func(sel, labels map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	monitorSel := labelsOf(monitor.Spec.Selector, "matchLabels")
	endpoints := map[string]bool{}
	for _, e := range monitor.Spec.Endpoints {
		if e.Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoint %s scrapes %s, want /metrics", e.Port, e.Path)
		}
		endpoints[e.Port] = true
	}
	scraped := map[string]bool{} // components
	for _, s := range services {
		sel := labelsOf(s.Spec.Selector, "")
		var target *pod
		for i := range pods {
			if selects(sel, pods[i].labels) {
				target = &pods[i]
			}
		}
		if target == nil {
			continue // not a sharelinks binary's Service (NATS)
		}
		// Where each binary serves /metrics: the port its probes use.
		for _, sp := range s.Spec.Ports {
			n, err := strconv.Atoi(sp.TargetPort.Value)
			if err != nil {
				var ok bool
				if n, ok = target.ports[sp.TargetPort.Value]; !ok {
					t.Errorf("Service %s port %s targets %q, which no container port of its pods is named", s.Metadata.Name, sp.Name, sp.TargetPort.Value)
					continue
				}
			}
			if selects(monitorSel, s.Metadata.Labels) && endpoints[sp.Name] && n == target.httpPort {
				job := s.Metadata.Labels[monitor.Spec.JobLabel]
				if job != target.component {
					t.Errorf("Service %s is scraped as job %q, but its pods are %q", s.Metadata.Name, job, target.component)
				}
				scraped[job] = true
			}
		}
	}
	for _, job := range []string{"api", "notifier", "reaper"} { // the jobs alerts.yml matches on
		if !scraped[job] {
			t.Errorf("the ServiceMonitor scrapes no Service of the %s pods under job %q", job, job)
		}
	}
}

// TestNATSImagesMatchTestedServer checks that every NATS image deploy/
// runs is the minor version of nats-server in go.mod, the one the tests
// and the benchmark run against.
func TestNATSImagesMatchTestedServer(t *testing.T) {
	v := strings.SplitN(server.VERSION, ".", 3) // the nats-server TestNATSConfigs parses with
	minor := v[0] + "." + v[1]
	tags := map[string]string{} // where -> image tag
	for _, o := range readK8s(t) {
		if o.Kind == "StatefulSet" && o.Metadata.Name == "nats" {
			for _, c := range o.Spec.Template.Spec.Containers {
				if name, tag, _ := strings.Cut(c.Image, ":"); name == "nats" {
					tags["k8s StatefulSet nats"] = tag
				}
			}
		}
	}
	var values struct {
		Container struct {
			Image struct {
				Tag string `yaml:"tag"`
			} `yaml:"image"`
		} `yaml:"container"`
	}
	var compose struct {
		Services map[string]struct {
			Image string `yaml:"image"`
		} `yaml:"services"`
	}
	for f, v := range map[string]any{"k8s/nats-values.yaml": &values, "compose.yaml": &compose} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(raw, v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	tags["k8s/nats-values.yaml"] = values.Container.Image.Tag
	_, tags["compose.yaml service nats"], _ = strings.Cut(compose.Services["nats"].Image, ":")
	for where, tag := range tags {
		if tag != minor && !strings.HasPrefix(tag, minor+".") && !strings.HasPrefix(tag, minor+"-") {
			t.Errorf("%s runs NATS %q; go.mod tests nats-server %s", where, tag, minor)
		}
	}
	if len(tags) != 3 {
		t.Errorf("found NATS images in %v, want the StatefulSet, the Helm values and compose", slices.Sorted(maps.Keys(tags)))
	}
}

// setting is what a container of command cmd gets for variable name: its
// env entry, else its config map's, else the default the binary's -h
// gives.
func setting(t *testing.T, cmd string, c k8sContainer, configMaps map[string]map[string]string, name string) string {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			if v, ok := configMaps[ef.ConfigMapRef.Name][name]; ok {
				return v
			}
		}
	}
	return helpDefault(t, cmd, name)
}

// helpDefault is the default cmd's -h gives for variable name.
func helpDefault(t *testing.T, cmd, name string) string {
	t.Helper()
	knownEnv(t)
	m := regexp.MustCompile(`\(\$` + name + `\) \(default ([^)]+)\)`).FindStringSubmatch(helpText[cmd])
	if m == nil {
		t.Fatalf("%s -h gives no default for %s", cmd, name)
	}
	return m[1]
}

// The api's shutdown fits the pod's grace period: a request may run
// REQUEST_TIMEOUT, and the api waits SHUTDOWN_TIMEOUT for those in flight
// after the preStop pause (during which the endpoints stop routing to
// it), all before Kubernetes kills it.
func TestAPIShutdownFitsTheGracePeriod(t *testing.T) {
	objs := readK8s(t)
	configMaps := map[string]map[string]string{}
	for _, o := range objs {
		if o.Kind == "ConfigMap" {
			configMaps[o.Metadata.Name] = o.Data
		}
	}
	found := false
	for _, o := range objs {
		if o.Kind != "Deployment" {
			continue
		}
		for _, c := range o.Spec.Template.Spec.Containers {
			if strings.Join(c.Command, " ") != "api serve" {
				continue
			}
			found = true
			dur := func(name string) time.Duration {
				d, err := time.ParseDuration(setting(t, "api serve", c, configMaps, name))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				return d
			}
			request, shutdown := dur("REQUEST_TIMEOUT"), dur("SHUTDOWN_TIMEOUT")
			if request <= 0 || request > shutdown {
				t.Errorf("REQUEST_TIMEOUT %s, SHUTDOWN_TIMEOUT %s: a request in flight at SIGTERM could be cut", request, shutdown)
			}
			var pause time.Duration
			if ps := c.Lifecycle.PreStop; ps != nil && ps.Sleep != nil {
				pause = time.Duration(ps.Sleep.Seconds) * time.Second
			}
			grace := 30 * time.Second // Kubernetes' default
			if g := o.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
				grace = time.Duration(*g) * time.Second
			}
			if pause+shutdown >= grace {
				t.Errorf("%s: preStop %s + SHUTDOWN_TIMEOUT %s does not fit terminationGracePeriodSeconds %s",
					o.Metadata.Name, pause, shutdown, grace)
			}
		}
	}
	if !found {
		t.Fatal("no Deployment runs api serve")
	}
}
