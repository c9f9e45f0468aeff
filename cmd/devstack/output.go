package main

import (
	"bytes"
	"io"
	"sync"
)

// output serialises writes from several children onto one stream, whole lines
// at a time, so their lines never interleave mid-line.
type output struct {
	mu sync.Mutex
	w  io.Writer
}

// block writes s in one piece (the banner, say).
func (o *output) block(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, _ = io.WriteString(o.w, s)
}

// prefixed returns a writer that puts "[name] " before every line it passes on.
func (o *output) prefixed(name string) *lineWriter {
	return &lineWriter{out: o, prefix: []byte("[" + name + "] ")}
}

// lineWriter buffers a partial line until its newline arrives. exec.Cmd calls
// Write from a single copying goroutine per stream, so only the shared output
// needs a lock.
type lineWriter struct {
	out    *output
	prefix []byte
	buf    []byte
}

// Write passes on every complete line in p and keeps the rest for later.
func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	i := bytes.LastIndexByte(w.buf, '\n')
	if i < 0 {
		return len(p), nil
	}
	w.emit(w.buf[:i+1])
	w.buf = append(w.buf[:0], w.buf[i+1:]...)
	return len(p), nil
}

// Flush passes on a last line that had no newline.
func (w *lineWriter) Flush() {
	if len(w.buf) == 0 {
		return
	}
	w.emit(append(w.buf, '\n'))
	w.buf = w.buf[:0]
}

func (w *lineWriter) emit(lines []byte) {
	var b bytes.Buffer
	for len(lines) > 0 {
		i := bytes.IndexByte(lines, '\n')
		b.Write(w.prefix)
		b.Write(lines[:i+1])
		lines = lines[i+1:]
	}
	w.out.mu.Lock()
	defer w.out.mu.Unlock()
	_, _ = w.out.w.Write(b.Bytes())
}
