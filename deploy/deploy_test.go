// Package deploy_test checks the files in deploy/ against the binaries.
// Here: the alert rules, their unit tests and the Grafana dashboard query
// metrics the binaries really export, with labels those metrics really
// have; a renamed metric or label would otherwise leave an alert that can
// never fire and a panel that stays empty, and nothing would say so until
// an incident. manifests_test.go: the Kubernetes manifests and the compose
// file set only variables the binaries read, and probe where they listen.
package deploy_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/sharelinks/sharelinks/internal/delivery"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/httpapi"
	"github.com/sharelinks/sharelinks/internal/obs"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/reaper"
	"github.com/sharelinks/sharelinks/internal/webhook"
)

// metric is what the binaries export under one name.
type metric struct {
	labels    map[string]bool
	histogram bool
	values    map[string]map[string]bool // label -> values exported up front (zeros)
}

// scrapeLabels are added by Prometheus itself to every scraped series.
var scrapeLabels = map[string]bool{"job": true, "instance": true}

// recorder registers collectors on a registry and keeps their descriptions:
// a vector with no children yet is described, though not gathered.
type recorder struct {
	*prometheus.Registry
	descs map[*prometheus.Desc]bool // true: a histogram's
}

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	var hist bool
	switch c.(type) {
	case *prometheus.HistogramVec, prometheus.Histogram:
		hist = true
	}
	for d := range ch {
		r.descs[d] = hist
	}
	return r.Registry.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

var (
	descName   = regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)
	descConst  = regexp.MustCompile(`constLabels: \{([^}]*)\}`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}\}$`)
)

// exported registers every metric of the api, notifier and reaper, through
// the constructors the binaries call, and returns them by name.
func exported(t *testing.T) map[string]*metric {
	t.Helper()
	rec := &recorder{Registry: obs.NewRegistry("test"), descs: map[*prometheus.Desc]bool{}}
	httpapi.NewMetrics(rec)
	events.NewRelayMetrics(rec)
	events.NewConsumerMetrics(rec)
	delivery.NewMetrics(rec)
	webhook.NewMetrics(rec)
	reaper.NewMetrics(rec)
	postgres.NewStore(nil, nil).InstrumentGroupCommit(rec)
	rec.MustRegister(obs.NewReadiness()) // as obs.Handle does in each binary

	out := map[string]*metric{}
	get := func(name string) *metric {
		if out[name] == nil {
			out[name] = &metric{labels: map[string]bool{}, values: map[string]map[string]bool{}}
		}
		return out[name]
	}
	// Desc has no accessors; its String form is the documented way to read it.
	for d, hist := range rec.descs {
		s := d.String()
		name := descName.FindStringSubmatch(s)
		vars := descLabels.FindStringSubmatch(s)
		if name == nil || vars == nil {
			t.Fatalf("cannot read metric description %s", s)
		}
		m := get(name[1])
		m.histogram = hist
		for _, l := range strings.Split(vars[1], ",") {
			if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
				m.labels[l] = true
			}
		}
		if c := descConst.FindStringSubmatch(s); c != nil {
			for _, kv := range strings.Split(c[1], ",") {
				if k, _, ok := strings.Cut(kv, "="); ok {
					m.labels[k] = true
				}
			}
		}
	}
	// The Go and process collectors and sharelinks_build_info come from
	// obs.NewRegistry; gathering also gives the label values that the
	// constructors export up front.
	mfs, err := rec.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		m := get(mf.GetName())
		m.histogram = m.histogram || mf.GetType().String() == "HISTOGRAM"
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				m.labels[lp.GetName()] = true
				if m.values[lp.GetName()] == nil {
					m.values[lp.GetName()] = map[string]bool{}
				}
				m.values[lp.GetName()][lp.GetValue()] = true
			}
		}
	}
	return out
}

// resolve finds the metric a series name belongs to (a histogram's
// _bucket, _sum and _count series belong to it): its registered name, and
// the labels a series of that name carries.
func resolve(all map[string]*metric, name string) (string, *metric, map[string]bool) {
	if m, ok := all[name]; ok && !m.histogram {
		return name, m, m.labels
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suf)
		if m := all[base]; ok && m != nil && m.histogram {
			ls := maps.Clone(m.labels)
			if suf == "_bucket" {
				ls["le"] = true
			}
			return base, m, ls
		}
	}
	return "", nil, nil
}

// checker checks PromQL against the exported metrics.
type checker struct {
	t      *testing.T
	all    map[string]*metric
	p      parser.Parser
	ours   map[string]bool // sharelinks_ metrics used, by their registered name
	others []string        // non-sharelinks metrics a query may use
	// zeros: a result or status an alert compares must be exported as zero
	// from the start, or increase() misses its first occurrence.
	zeros bool
}

// zerosAtRuntime are metrics whose results are exported as zeros when a
// worker starts (per consumer name), not by their constructor.
var zerosAtRuntime = map[string]bool{"sharelinks_events_consumed_total": true}

// expr checks one query: every sharelinks_ selector names an exported
// series with labels it has (and, where the code exports a label's values
// up front, a value it can take), and every by/without label is one that
// the series being aggregated carry.
func (c *checker) expr(where, q string) {
	e, err := c.p.ParseExpr(q)
	if err != nil {
		c.t.Errorf("%s: %q does not parse: %v", where, q, err)
		return
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			c.selector(where, n.Name, n.LabelMatchers)
		case *parser.AggregateExpr:
			have := c.labelsUnder(n.Expr)
			for _, g := range n.Grouping {
				if have != nil && !have[g] {
					c.t.Errorf("%s: %q groups by %q, which %s do not carry", where, q, g, n.Expr)
				}
			}
		}
		return nil
	})
}

func (c *checker) selector(where, name string, ms []*labels.Matcher) {
	if !strings.HasPrefix(name, "sharelinks_") {
		if !slices.Contains(c.others, name) {
			c.t.Errorf("%s: %q is neither a sharelinks_ metric nor one of %v", where, name, c.others)
		}
		return
	}
	reg, m, ls := resolve(c.all, name)
	if m == nil {
		c.t.Errorf("%s: no binary exports %s", where, name)
		return
	}
	c.ours[reg] = true
	for _, lm := range ms {
		if lm.Name == labels.MetricName {
			continue
		}
		if !ls[lm.Name] && !scrapeLabels[lm.Name] {
			c.t.Errorf("%s: %s has no label %q (it has %v)", where, name, lm.Name, slices.Sorted(maps.Keys(ls)))
			continue
		}
		vals := m.values[lm.Name]
		if lm.Type == labels.MatchEqual && vals != nil && !vals[lm.Value] {
			c.t.Errorf("%s: %s{%s=%q}: the code exports %s values %v", where, name, lm.Name, lm.Value, lm.Name, slices.Sorted(maps.Keys(vals)))
		}
		if c.zeros && vals == nil && (lm.Name == "result" || lm.Name == "status") && !zerosAtRuntime[name] {
			c.t.Errorf("%s: %s{%s=%q}: no %s value is exported before it first happens, so increase() misses the first", where, name, lm.Name, lm.Value, lm.Name)
		}
	}
}

// labelsUnder is the label set the series selected under n carry (the
// intersection over its selectors), or nil when it holds no sharelinks_
// selector (no claim is made about other metrics).
func (c *checker) labelsUnder(n parser.Node) map[string]bool {
	var have map[string]bool
	parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok || !strings.HasPrefix(vs.Name, "sharelinks_") {
			return nil
		}
		_, _, ls := resolve(c.all, vs.Name)
		if ls == nil {
			return nil
		}
		ls = maps.Clone(ls)
		maps.Copy(ls, scrapeLabels)
		if have == nil {
			have = ls
			return nil
		}
		maps.DeleteFunc(have, func(k string, _ bool) bool { return !ls[k] })
		return nil
	})
	return have
}

func newChecker(t *testing.T) *checker {
	return &checker{t: t, all: exported(t), p: parser.NewParser(parser.Options{}), ours: map[string]bool{},
		others: []string{"up", "process_resident_memory_bytes", "go_goroutines"}}
}

func TestAlertRulesQueryExportedMetrics(t *testing.T) {
	c := newChecker(t)
	c.zeros = true
	groups, errs := rulefmt.ParseFile("prometheus/alerts.yml", false, model.UTF8Validation, c.p,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil {
		t.FailNow()
	}
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			c.expr("alert "+r.Alert, r.Expr)
			n++
		}
	}
	if n == 0 {
		t.Fatal("alerts.yml holds no rules")
	}
}

// The rule unit tests feed series by hand: they must look like the ones
// the binaries export, or a passing test proves nothing about production.
func TestAlertUnitTestsFeedExportedSeries(t *testing.T) {
	c := newChecker(t)
	raw, err := os.ReadFile("prometheus/alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Tests []struct {
			Name   string `yaml:"name"`
			Series []struct {
				Series string `yaml:"series"`
			} `yaml:"input_series"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tc := range f.Tests {
		for _, s := range tc.Series {
			ls, err := c.p.ParseMetric(s.Series)
			if err != nil {
				t.Errorf("test %q: series %q: %v", tc.Name, s.Series, err)
				continue
			}
			name := ls.Get(labels.MetricName)
			var ms []*labels.Matcher
			ls.Range(func(l labels.Label) { ms = append(ms, labels.MustNewMatcher(labels.MatchEqual, l.Name, l.Value)) })
			c.selector("test "+tc.Name, name, ms)
			// A real series carries every label of its metric.
			if _, _, want := resolve(c.all, name); want != nil {
				for l := range want {
					if !ls.Has(l) {
						t.Errorf("test %q: series %s lacks label %q, which every exported series has", tc.Name, s.Series, l)
					}
				}
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("alerts_test.yml feeds no series")
	}
}

// grafanaVars are the dashboard's variables that appear inside queries,
// with a value that parses in their place.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

func TestDashboardQueriesExportedMetrics(t *testing.T) {
	c := newChecker(t)
	raw, err := os.ReadFile("grafana/sharelinks-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if e, ok := v["expr"].(string); ok {
				exprs = append(exprs, e)
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	if len(exprs) == 0 {
		t.Fatal("the dashboard holds no queries")
	}
	for _, e := range exprs {
		q := grafanaVars.Replace(e)
		if strings.Contains(q, "$") {
			t.Errorf("dashboard query %q uses a variable this test does not know", e)
			continue
		}
		c.expr("dashboard", q)
	}
	// Every metric the binaries export has a panel: the dashboard is
	// where operators look first.
	for name := range c.all {
		if strings.HasPrefix(name, "sharelinks_") && !c.ours[name] {
			t.Errorf("no dashboard panel shows %s", name)
		}
	}
}

// The metric names README.md lists ("Metrics and alerts") are exactly the
// sharelinks_ metrics the binaries export.
func TestREADMEListsEveryMetric(t *testing.T) {
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, list, ok := strings.Cut(string(raw), "Names (all prefixed `sharelinks_`):")
	list, _, ok2 := strings.Cut(list, "plus the Go and process collectors")
	if !ok || !ok2 {
		t.Fatal("README.md has no metric list (\"Names (all prefixed `sharelinks_`): … plus the Go and process collectors\")")
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(list, -1) {
		listed["sharelinks_"+m[1]] = true
	}
	for name := range exported(t) {
		if strings.HasPrefix(name, "sharelinks_") && !listed[name] {
			t.Errorf("README.md does not list %s", name)
		}
		delete(listed, name)
	}
	for name := range listed {
		t.Errorf("README.md lists %s, which no binary exports", name)
	}
}
