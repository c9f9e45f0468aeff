// Package atomicfile writes files so that a reader polling the directory
// never sees half of one: write a temporary file beside it, then rename.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes data to name atomically. The file gets os.CreateTemp's
// mode, 0600: the dev sinks' files hold addresses, numbers and codes.
func Write(name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}
