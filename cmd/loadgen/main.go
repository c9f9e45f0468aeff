// Command loadgen is `make bench`: it builds and starts a private
// sharelinks stack (api, notifier and reaper as child processes, a fresh
// database, an embedded NATS JetStream server, an SMTP sink and a
// Twilio-speaking sink), drives each scenario, measures the physical
// ceilings of the same operations on the same machine in the same run, and
// prints one table. It is never part of `make test`.
//
//	go run ./cmd/loadgen [-only create,verify,notify,otp,nats,reaper] [-short] [-out FILE]
//
// Postgres: a fresh database is created on BENCH_DATABASE_URL, else
// TEST_DATABASE_URL, else the local server on 127.0.0.1:5432, else the
// devstack's private test cluster; it is dropped at the end. NATS: embedded
// unless NATS_URL is set.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// scenarioNames are the runnable scenarios, in run order. The reaper runs
// last: the million events it publishes keep the consumers busy after it.
var scenarioNames = []string{"create", "verify", "notify", "otp", "nats", "reaper"}

type options struct {
	only    map[string]bool
	short   bool
	out     string
	timeout time.Duration
}

func (o options) enabled(name string) bool { return len(o.only) == 0 || o.only[name] }

// sizes are the run lengths; -short shrinks them to a smoke test.
type sizes struct {
	createDur, verifyDur, ceilDur time.Duration
	seedN, sampleN                int
	notifyN, burstN, otpN         int
	codeN                         int
	notifyRate, otpRate           float64
	natsN                         int
	reaperN                       int
	waitArrivals                  time.Duration
}

var fullSizes = sizes{
	createDur: 6 * time.Second, verifyDur: 5 * time.Second, ceilDur: 4 * time.Second,
	seedN: 1_000_000, sampleN: 50_000,
	notifyN: 3000, burstN: 2000, otpN: 1000, notifyRate: 50, otpRate: 50, codeN: 20_000,
	natsN: 200_000, reaperN: 1_000_000, waitArrivals: 60 * time.Second,
}

var shortSizes = sizes{
	createDur: 2 * time.Second, verifyDur: 2 * time.Second, ceilDur: 2 * time.Second,
	seedN: 20_000, sampleN: 5_000,
	notifyN: 250, burstN: 200, otpN: 100, notifyRate: 50, otpRate: 50, codeN: 2_000,
	natsN: 20_000, reaperN: 20_000, waitArrivals: 30 * time.Second,
}

func main() {
	var only string
	var o options
	flag.StringVar(&only, "only", "", "comma-separated subset of "+strings.Join(scenarioNames, ","))
	flag.BoolVar(&o.short, "short", false, "quick smoke run with small counts")
	flag.StringVar(&o.out, "out", "", "also write the table as markdown to this file")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "abort (and print what was measured) after this long")
	flag.Parse()
	if only != "" {
		o.only = map[string]bool{}
		for _, n := range strings.Split(only, ",") {
			n = strings.TrimSpace(n)
			if !slices.Contains(scenarioNames, n) {
				fmt.Fprintf(os.Stderr, "loadgen: unknown scenario %q (have %s)\n", n, strings.Join(scenarioNames, ","))
				os.Exit(2)
			}
			o.only[n] = true
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// memPeak is one process's peak RSS per scenario.
type memPeak struct {
	peak     int64
	scenario string
	per      []string
}

// bench is one run: the stack, the client, and what scenarios share.
type bench struct {
	log      *slog.Logger
	st       *stack
	opt      options
	sz       sizes
	http     *httpClient
	ceilPool *pgxpool.Pool
	rep      *report
	runID    string
	pids     map[string]int
	mem      map[string]*memPeak
	cpuNotes []row

	argon    result  // (e), measured once
	hot      hotLink // one open link for the hot-path runs
	seedRate float64 // rows/s of the million-link COPY
	// sampleIDs are ids of the million seeded links, kept for the bare
	// access-count UPDATE beside verify-by-code (in the otp scenario).
	sampleIDs []string
	jsCeiling result // (c), when measured

	nc *nats.Conn
	js jetstream.JetStream
}

// hotLink is an open link hit by every worker at once.
type hotLink struct {
	id, token string
}

func run(ctx context.Context, o options) error {
	start := time.Now()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if _, err := os.Stat("go.mod"); err != nil {
		return errors.New("run from the repository root (make bench does)")
	}
	b := &bench{log: log, opt: o, sz: fullSizes, rep: &report{}, runID: randHex(3),
		pids: map[string]int{}, mem: map[string]*memPeak{}}
	if o.short {
		b.sz = shortSizes
	}
	log.Info("sharelinks bench", "short", o.short, "cpus", runtime.NumCPU(), "go", runtime.Version())

	st, err := startStack(ctx, log)
	b.st = st
	defer st.close()
	if err != nil {
		return err
	}
	for name, c := range st.procs {
		b.pids[name] = c.cmd.Process.Pid
		b.mem[name] = &memPeak{}
	}
	b.pids["loadgen+nats"] = os.Getpid()
	b.http = newHTTPClient(st.apiURL, st.apiKey, 64)
	if err := b.connectJS(); err != nil {
		return fmt.Errorf("NATS: %w", err)
	}
	defer b.nc.Close()
	pcfg, err := pgxpool.ParseConfig(st.dbURL)
	if err != nil {
		return err
	}
	// The api's pool size: a ceiling with more connections would measure
	// a database the service is not allowed to use.
	pcfg.MaxConns = 16
	if b.ceilPool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return err
	}
	defer b.ceilPool.Close()

	runCPU := b.snapCPU(ctx)
	steps := map[string]func(context.Context) error{
		"create": b.create, "verify": b.verify, "notify": b.notify,
		"otp": b.otp, "nats": b.nats, "reaper": b.reaper,
	}
	var runErr error
	for _, name := range scenarioNames {
		if !o.enabled(name) {
			continue
		}
		if err := b.scenario(ctx, name, steps[name]); err != nil {
			runErr = fmt.Errorf("%s: %w", name, err)
			log.Error("scenario failed; printing what was measured", "scenario", name, "err", err)
			break
		}
	}
	b.memoryRows()
	for _, r := range b.cpuNotes {
		b.rep.add(r)
	}

	fmt.Println()
	mode := "full"
	if o.short {
		mode = "short (smoke test: counts too small to read as results)"
	}
	fmt.Printf("sharelinks bench — %s run, %s, %d CPUs, took %s, tree %s\n", mode, time.Now().UTC().Format(time.RFC3339),
		runtime.NumCPU(), time.Since(start).Round(time.Second), treeState())
	fmt.Printf("%s over the whole run (\"not ours\" is other work on this machine: noise)\n\n",
		cpuSummary(runCPU, b.snapCPU(context.Background()), []string{"api", "notifier", "reaper", "loadgen+nats"}))
	b.rep.text(os.Stdout)
	if o.out != "" {
		f, err := os.Create(o.out)
		if err != nil {
			return fmt.Errorf("write %s: %w", o.out, err)
		}
		b.rep.markdown(f)
		if err := f.Close(); err != nil {
			return err
		}
		log.Info("markdown table written", "file", o.out)
	}
	return runErr
}

// treeState names the code measured: the commit and how many files of the
// working tree differ from it.
func treeState() string {
	rev, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (no git)"
	}
	st, _ := exec.Command("git", "status", "--porcelain").Output()
	n := 0
	for _, l := range strings.Split(string(st), "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return fmt.Sprintf("%s + %d changed files", strings.TrimSpace(string(rev)), n)
}

// scenario runs one scenario and records the memory peaks and CPU use of
// every process during it.
func (b *bench) scenario(ctx context.Context, name string, fn func(context.Context) error) error {
	for _, pid := range b.pids {
		resetPeakRSS(pid)
	}
	order := []string{"api", "notifier", "reaper", "loadgen+nats"}
	before := b.snapCPU(ctx)
	t0 := time.Now()
	b.log.Info("scenario start", "scenario", name)
	err := fn(ctx)
	after := b.snapCPU(ctx)
	for proc, m := range b.mem {
		v, rerr := peakRSS(b.pids[proc])
		if rerr != nil {
			continue
		}
		m.per = append(m.per, fmt.Sprintf("%s %.0f", name, float64(v)/1e6))
		if v > m.peak {
			m.peak, m.scenario = v, name
		}
	}
	cpu := cpuSummary(before, after, order)
	b.cpuNotes = append(b.cpuNotes, row{Scenario: "cpu", What: name + " (" + time.Since(t0).Round(time.Second).String() + ")", Note: cpu})
	b.log.Info("scenario done", "scenario", name, "took", time.Since(t0).Round(time.Millisecond), "cpu", cpu)
	if err == nil {
		err = b.st.alive()
	}
	return err
}

// memoryRows adds scenario 6: the peak RSS of each service process.
func (b *bench) memoryRows() {
	for _, proc := range []string{"api", "notifier", "reaper"} {
		m, ok := b.mem[proc]
		if !ok || m.peak == 0 {
			continue
		}
		r := row{Scenario: "6 memory", What: "peak RSS (VmHWM) " + proc,
			Rate: fmt.Sprintf("%.1f MB", float64(m.peak)/1e6),
			Note: "during " + m.scenario + "; per scenario MB: " + strings.Join(m.per, ", ")}
		if proc == "api" {
			r.Target = "< 100 MB"
			r.Result = passFail(m.peak < 100e6)
		}
		b.rep.add(r)
	}
}
