package deploy_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
)

// loadCompose loads compose.yaml the way `docker compose config` does
// (compose-go is the library behind it): interpolation, merges, schema
// and consistency checks, with env as the only environment.
func loadCompose(t *testing.T, env ...string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"compose.yaml"},
		cli.WithWorkingDirectory("."), cli.WithEnv(env), cli.WithConsistency(true), cli.WithDiscardEnvFile)
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

// TestComposeConfig is `docker compose config` for deploy/compose.yaml,
// plus what that does not check: the files it mounts exist, the system is
// all there, and each sharelinks service is given only variables its
// command reads.
func TestComposeConfig(t *testing.T) {
	if _, err := loadCompose(t); err == nil || !strings.Contains(err.Error(), "SHARELINKS_SECRET") {
		t.Errorf("without SHARELINKS_SECRET the file must refuse to load, naming it; got %v", err)
	}
	p, err := loadCompose(t, "SHARELINKS_SECRET=x")
	if err != nil {
		t.Fatalf("docker compose config would fail: %v", err)
	}
	for _, want := range []string{"postgres", "nats", "mailpit", "migrate", "api", "notifier", "reaper", "prometheus", "grafana"} {
		if _, ok := p.Services[want]; !ok {
			t.Errorf("no %s service", want)
		}
	}
	if nats, ok := p.Services["nats"]; ok && !slices.Contains(nats.Command, "-js") {
		t.Errorf("nats runs without JetStream: %v", nats.Command)
	}
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("service %s mounts %s, which is not in the repository: %v", name, v.Source, err)
			}
		}
	}

	// Variables every sharelinks service gets (the shared block) need one
	// reader; the others, their own service's command.
	env := knownEnv(t)
	var ours []string
	for name, s := range p.Services {
		if _, ok := env[strings.Join(s.Command, " ")]; ok {
			ours = append(ours, name)
		}
	}
	slices.Sort(ours)
	if !slices.Equal(ours, []string{"api", "migrate", "notifier", "reaper"}) {
		t.Fatalf("sharelinks services %v, want api, migrate, notifier and reaper", ours)
	}
	shared := map[string]int{}
	for _, name := range ours {
		for k := range p.Services[name].Environment {
			shared[k]++
		}
	}
	sharedRead := map[string]bool{}
	for _, name := range ours {
		s := p.Services[name]
		cmd := strings.Join(s.Command, " ")
		for k := range s.Environment {
			switch {
			case shared[k] == len(ours):
				sharedRead[k] = sharedRead[k] || env[cmd][k]
			case !env[cmd][k] && !runtimeEnv[k]:
				t.Errorf("service %s: %s does not read %s", name, cmd, k)
			}
		}
	}
	for k, read := range sharedRead {
		if !read {
			t.Errorf("every sharelinks service gets %s, which none of them reads", k)
		}
	}
	// docker compose stop waits stop_grace_period (10 s unless set) before
	// SIGKILL: the api's shutdown, and a request in flight, must fit.
	api := p.Services["api"]
	dur := func(name string) time.Duration {
		v := helpDefault(t, "api serve", name)
		if e, ok := api.Environment[name]; ok && e != nil {
			v = *e
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return d
	}
	grace := 10 * time.Second
	if api.StopGracePeriod != nil {
		grace = time.Duration(*api.StopGracePeriod)
	}
	if request, shutdown := dur("REQUEST_TIMEOUT"), dur("SHUTDOWN_TIMEOUT"); request > shutdown || shutdown >= grace {
		t.Errorf("api: REQUEST_TIMEOUT %s, SHUTDOWN_TIMEOUT %s, stop_grace_period %s: a SIGTERM's shutdown does not fit", request, shutdown, grace)
	}
}

// TestNATSConfigs parses each NATS config with nats-server itself (the
// version in go.mod) and checks the settings deploy/README.md promises:
// JetStream on with an fsync before every acknowledgement, a 3-route
// cluster, and the Kubernetes copy identical to its source.
func TestNATSConfigs(t *testing.T) {
	t.Setenv("SERVER_NAME", "nats-0") // the cluster config takes it from the pod
	for _, f := range []string{"nats/nats-dev.conf", "nats/nats-cluster.conf", "k8s/nats.conf"} {
		o, err := server.ProcessConfigFile(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if !o.JetStream && !strings.Contains(f, "dev") { // dev turns it on with -js (compose)
			t.Errorf("%s: JetStream is off", f)
		}
		if !o.SyncAlways {
			t.Errorf("%s: sync_interval is not always: an acknowledged event could be lost with the machine", f)
		}
		if strings.Contains(f, "dev") {
			continue
		}
		if o.Cluster.Port == 0 || len(o.Routes) != 3 {
			t.Errorf("%s: cluster port %d with %d routes, want a 3-node cluster", f, o.Cluster.Port, len(o.Routes))
		}
	}
	src, err := os.ReadFile(filepath.Join("nats", "nats-cluster.conf"))
	if err != nil {
		t.Fatal(err)
	}
	cp, err := os.ReadFile(filepath.Join("k8s", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if string(src) != string(cp) {
		t.Error("k8s/nats.conf differs from nats/nats-cluster.conf (kustomize reads only files under k8s/, so it is a copy)")
	}
}
