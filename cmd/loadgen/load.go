package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// result is one measured run: successful operations, their latencies
// (sorted), failures, and the wall time they took.
type result struct {
	ok       int
	failed   int
	elapsed  time.Duration
	lat      []time.Duration // sorted
	firstErr error
}

// merge adds o's operations, failures, wall time and latencies to r's.
func (r result) merge(o result) result {
	r.ok, r.failed, r.elapsed = r.ok+o.ok, r.failed+o.failed, r.elapsed+o.elapsed
	r.lat = append(slices.Clip(r.lat), o.lat...)
	slices.Sort(r.lat)
	r.firstErr = cmp.Or(r.firstErr, o.firstErr)
	return r
}

// rate is successful operations per second of wall time.
func (r result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

// pct returns the q-quantile (0..1) of the latencies: the sample at rank
// ceil(q*n), no interpolation.
func (r result) pct(q float64) time.Duration {
	return quantile(r.lat, q)
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	i = min(max(i, 0), len(sorted)-1)
	return sorted[i]
}

// runEach runs op once for each index in [0, n), conc at a time, and
// measures it like runClosed.
func runEach(ctx context.Context, conc, n int, op func(ctx context.Context, i int) error) result {
	var next atomic.Int64
	return runWorkers(ctx, conc, func(ctx context.Context, _ int) (bool, error) {
		i := int(next.Add(1)) - 1
		if i >= n {
			return false, nil
		}
		return true, op(ctx, i)
	})
}

// runClosed runs op from conc workers back to back for dur and measures
// each call. Workers start together; the run ends when the last in-flight
// call returns after dur.
func runClosed(ctx context.Context, conc int, dur time.Duration, op func(ctx context.Context, worker int) error) result {
	stop := time.Now().Add(dur)
	return runWorkers(ctx, conc, func(ctx context.Context, w int) (bool, error) {
		if time.Now().After(stop) {
			return false, nil
		}
		return true, op(ctx, w)
	})
}

// runWorkers runs conc workers that call step until it reports no more
// work (or ctx ends), timing each step that did work.
func runWorkers(ctx context.Context, conc int, step func(ctx context.Context, worker int) (bool, error)) result {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		all      []time.Duration
		failed   atomic.Int64
		firstErr error
	)
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				more, err := step(ctx, w)
				if !more {
					break
				}
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					failed.Add(1)
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					continue
				}
				lat = append(lat, d)
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := result{ok: len(all), failed: int(failed.Load()), elapsed: time.Since(start), lat: all, firstErr: firstErr}
	slices.Sort(r.lat)
	return r
}

// runRate starts op(i, scheduled) for i in [0,n) at a fixed rate, without
// waiting for earlier calls (an open loop: a slow service does not slow
// the offered load). It returns when every call has returned, with the
// number of failures and the first error.
func runRate(ctx context.Context, perSecond float64, n int, op func(ctx context.Context, i int, scheduled time.Time) error) (failed int, firstErr error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		fail int
	)
	interval := time.Duration(float64(time.Second) / perSecond)
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := op(ctx, i, at); err != nil {
				mu.Lock()
				fail++
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return fail, firstErr
}

// httpClient is a keep-alive JSON client for the api. It is fasthttp's,
// as lean load tools use, rather than net/http's: the load generator runs
// on the same two cores as the service and takes its CPU from the service
// measured, and net/http's client cost about as much CPU per request as
// the handler it was measuring (BENCHMARKS.md, session 7). The service's
// own cost is the same either way; the ceilings' pgx clients are lean too.
type httpClient struct {
	hc   *fasthttp.HostClient
	base string
	key  string
}

func newHTTPClient(base, key string, conc int) *httpClient {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		panic(fmt.Sprintf("loadgen: bad api base URL %q", base))
	}
	return &httpClient{
		hc: &fasthttp.HostClient{
			Addr:                          u.Host,
			MaxConns:                      max(conc, 256),
			MaxIdleConnDuration:           90 * time.Second,
			DisableHeaderNamesNormalizing: true,
			NoDefaultUserAgentHeader:      true,
			// Paths carry tokens exactly as the service issued them.
			DisablePathNormalizing: true,
		},
		base: base, key: key,
	}
}

// statusError is an unexpected HTTP status.
type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

// do sends a request and checks the status; out (if not nil) receives the
// decoded JSON body. bearer overrides the API key (recipient access tokens).
// Redirects are not followed: /open answers 302 to the target with the
// grant, and that is the result.
func (c *httpClient) do(ctx context.Context, method, path string, body []byte, bearer string, want int, out any, headers ...string) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(c.base + path)
	req.Header.SetMethod(method)
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(body)
	}
	switch {
	case bearer != "":
		req.Header.Set("Authorization", "Bearer "+bearer)
	case c.key != "" && strings.HasPrefix(path, "/v1/"):
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > 60*time.Second {
		deadline = time.Now().Add(60 * time.Second)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.hc.DoDeadline(req, resp, deadline); err != nil {
		return err
	}
	if resp.StatusCode() != want {
		b := resp.Body()
		return &statusError{status: resp.StatusCode(), body: string(b[:min(len(b), 300)])}
	}
	if out != nil {
		return json.Unmarshal(resp.Body(), out)
	}
	return nil
}

// createdLinks is the part of POST /v1/links' answer the bench needs.
type createdLinks struct {
	Links []struct {
		ID  string `json:"id"`
		URL string `json:"url"`
	} `json:"links"`
}

// tokens returns the link tokens (the last path segment of each URL).
func (c createdLinks) tokens() ([]string, error) {
	out := make([]string, len(c.Links))
	for i, l := range c.Links {
		j := strings.LastIndex(l.URL, "/s/")
		if j < 0 {
			return nil, errors.New("link URL without /s/: " + l.URL)
		}
		out[i] = l.URL[j+3:]
	}
	return out, nil
}
