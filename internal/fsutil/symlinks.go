// Package fsutil holds small file-system helpers shared by packages that
// build sandbox roots (fsbind) and peer runtimes' bundles (benchmarks).
package fsutil

import (
	"errors"
	"os"
	"path/filepath"
)

// CopySymlinks recreates the symlinks of directory src in a new directory
// dst, targets unchanged; other entries are left out. A missing src is not
// an error (and makes no dst).
func CopySymlinks(src, dst string) error {
	entries, err := os.ReadDir(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if e.Type()&os.ModeSymlink == 0 {
			continue
		}
		target, err := os.Readlink(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.Symlink(target, filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
