package zygote

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

//go:embed runtime
var runtimeFS embed.FS

// RuntimeDir is where the runtime appears inside a sandbox.
const RuntimeDir = "/sockfaas/runtime"

// WriteRuntime writes the embedded Python runtime into dir (created if
// missing), replacing older copies, so that it can be bound read-only into
// sandboxes at RuntimeDir. Files are written to a temporary name and renamed,
// so a concurrent reader never sees half a file.
func WriteRuntime(dir string) error {
	return fs.WalkDir(runtimeFS, "runtime", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("runtime", path)
		dst := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := runtimeFS.ReadFile(path)
		if err != nil {
			return err
		}
		tmp := dst + ".tmp"
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return fmt.Errorf("write runtime: %w", err)
		}
		if err := os.Rename(tmp, dst); err != nil {
			return fmt.Errorf("write runtime: %w", err)
		}
		return nil
	})
}
