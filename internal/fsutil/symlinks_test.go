package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCopySymlinks(t *testing.T) {
	src, dir := t.TempDir(), t.TempDir()
	if err := os.Symlink("/usr/bin/python3.11", filepath.Join(src, "python3")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "plain"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "alt")
	if err := CopySymlinks(src, dst); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(filepath.Join(dst, "python3")); err != nil || got != "/usr/bin/python3.11" {
		t.Errorf("python3 -> %q, %v", got, err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "plain")); !os.IsNotExist(err) {
		t.Errorf("a plain file was copied: %v", err)
	}
	if err := CopySymlinks(filepath.Join(src, "missing"), filepath.Join(dir, "none")); err != nil {
		t.Errorf("missing src: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "none")); !os.IsNotExist(err) {
		t.Errorf("missing src made dst: %v", err)
	}
}
