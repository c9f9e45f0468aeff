package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc CPU times (100 on Linux).
const clockTicks = 100

// peakRSS reads VmHWM (peak resident set) of a process, in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM for pid %d", pid)
}

// resetPeakRSS resets VmHWM to the current RSS (Linux ≥ 4.0), so the next
// read is the peak of the next scenario alone. It reports whether that
// worked; if not, peaks are cumulative.
func resetPeakRSS(pid int) bool {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
}

// cpuTime is a process's user+system CPU time.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the whole line.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// machineCPU is the busy (non-idle, non-iowait) CPU time of the whole
// machine, summed over all CPUs.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already counted in user
			break
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// cpuSnap is a CPU-time snapshot of the machine and the processes we know.
type cpuSnap struct {
	at      time.Time
	machine time.Duration
	procs   map[string]time.Duration
	pg      map[int]pgProc
}

func snapCPU(pids map[string]int, pg pgPids) cpuSnap {
	s := cpuSnap{at: time.Now(), machine: machineCPU(), procs: map[string]time.Duration{}}
	for name, pid := range pids {
		s.procs[name] = cpuTime(pid)
	}
	s.pg = map[int]pgProc{}
	for _, pid := range pg.ours {
		s.pg[pid] = pgProc{cpuTime(pid), "postgres"}
	}
	for _, pid := range pg.shared {
		s.pg[pid] = pgProc{cpuTime(pid), "pg shared"}
	}
	return s
}

// pgProc is one Postgres process's CPU time and the bucket it counts in.
type pgProc struct {
	cpu    time.Duration
	bucket string
}

// delta is the CPU each named process used from a to b; Postgres
// processes are compared one by one, so a backend that started in
// between counts whole and one that exited counts nothing.
func delta(a, b cpuSnap) map[string]time.Duration {
	d := map[string]time.Duration{}
	for name, v := range b.procs {
		d[name] = v - a.procs[name]
	}
	for pid, p := range b.pg {
		d[p.bucket] += p.cpu - a.pg[pid].cpu
	}
	d["machine"] = b.machine - a.machine
	return d
}

// pgPids are the Postgres processes working for the bench database (its
// backends and autovacuum workers) and those working for every database
// (WAL writer, checkpointer, background writer). Backends of other
// databases on a shared server are neither.
type pgPids struct {
	ours, shared []int
}

// cpuSummary describes where CPU went between two snapshots, as cores used
// on average (2.00 = both cores of this machine busy).
func cpuSummary(a, b cpuSnap, order []string) string {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return ""
	}
	cores := func(d time.Duration) float64 { return d.Seconds() / wall }
	dd := delta(a, b)
	var parts []string
	var known time.Duration
	for _, name := range order {
		known += dd[name]
		parts = append(parts, fmt.Sprintf("%s %.2f", name, cores(dd[name])))
	}
	pg, sh, total := dd["postgres"], dd["pg shared"], dd["machine"]
	parts = append(parts, fmt.Sprintf("postgres (bench db) %.2f", cores(pg)), fmt.Sprintf("postgres (shared) %.2f", cores(sh)),
		fmt.Sprintf("not ours %.2f", cores(max(total-known-pg-sh, 0))))
	return fmt.Sprintf("CPU cores busy %.2f: %s", cores(total), strings.Join(parts, ", "))
}
