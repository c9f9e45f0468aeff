package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// row is one line of the result table.
type row struct {
	Scenario string
	What     string
	N        string // operations measured
	Rate     string
	P50      string
	P95      string
	P99      string
	Ceiling  string
	Ratio    string
	Target   string
	Result   string // PASS, FAIL or empty
	Note     string
}

var header = row{"#", "measurement", "n", "rate", "p50", "p95", "p99", "ceiling (same run)", "ratio", "target", "result", "note"}

func (r row) cells() []string {
	return []string{r.Scenario, r.What, r.N, r.Rate, r.P50, r.P95, r.P99, r.Ceiling, r.Ratio, r.Target, r.Result, r.Note}
}

// report collects rows in order.
type report struct {
	rows []row
}

func (rp *report) add(r row) { rp.rows = append(rp.rows, r) }

// text writes an aligned plain-text table.
func (rp *report) text(w io.Writer) {
	all := append([]row{header}, rp.rows...)
	width := make([]int, len(header.cells()))
	for _, r := range all {
		for i, c := range r.cells() {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for n, r := range all {
		var b strings.Builder
		for i, c := range r.cells() {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(c)
			if i < len(width)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
		if n == 0 {
			total := 0
			for _, x := range width {
				total += x + 2
			}
			fmt.Fprintln(w, strings.Repeat("-", total-2))
		}
	}
}

// markdown writes the table as GitHub markdown.
func (rp *report) markdown(w io.Writer) {
	esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	line := func(cells []string) {
		for i := range cells {
			cells[i] = esc(cells[i])
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	line(header.cells())
	seps := make([]string, len(header.cells()))
	for i := range seps {
		seps[i] = "---"
		if i >= 2 && i <= 8 {
			seps[i] = "---:"
		}
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(seps, "|"))
	for _, r := range rp.rows {
		line(r.cells())
	}
}

// ms formats a latency in milliseconds with sensible precision.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case d == 0:
		return "-"
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.0f ms", v)
	}
}

// perSec formats a rate.
func perSec(v float64, unit string) string {
	if unit == "" {
		unit = "/s"
	}
	switch {
	case v >= 100:
		return fmt.Sprintf("%s %s", thousands(int64(v+0.5)), unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return fmt.Sprintf("%.2f %s", v, unit)
	}
}

func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func ratio(service, ceiling float64) (string, float64) {
	if ceiling <= 0 {
		return "-", 0
	}
	r := service / ceiling
	return fmt.Sprintf("%.2f", r), r
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// latRow fills the latency columns of a row from a result.
func latRow(r *row, res result) {
	r.N = thousands(int64(res.ok))
	r.P50, r.P95, r.P99 = ms(res.pct(0.50)), ms(res.pct(0.95)), ms(res.pct(0.99))
}

// errNote describes failures of a run for the note column.
func errNote(res result) string {
	if res.failed == 0 {
		return ""
	}
	msg := ""
	if res.firstErr != nil {
		msg = res.firstErr.Error()
		if len(msg) > 80 {
			msg = msg[:80] + "…"
		}
	}
	return fmt.Sprintf("%d failed (first: %s)", res.failed, msg)
}

func joinNotes(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}
