package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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

// httpClient is a keep-alive JSON client for the api.
type httpClient struct {
	hc   *http.Client
	base string
	key  string
}

func newHTTPClient(base, key string, conc int) *httpClient {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: max(conc, 8),
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &httpClient{
		hc: &http.Client{
			Transport: tr,
			Timeout:   60 * time.Second,
			// /open answers 302 to the target with the grant: that is the
			// result, not something to follow.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
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
func (c *httpClient) do(ctx context.Context, method, path string, body []byte, bearer string, want int, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case bearer != "":
		req.Header.Set("Authorization", "Bearer "+bearer)
	case c.key != "" && strings.HasPrefix(path, "/v1/"):
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return &statusError{status: resp.StatusCode, body: string(b)}
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	// Drain so the connection is reused.
	_, err = io.Copy(io.Discard, resp.Body)
	return err
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
