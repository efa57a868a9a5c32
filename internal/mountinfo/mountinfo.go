// Package mountinfo reads /proc/self/mountinfo: the one parser the project's
// packages share for finding their mounts, cgroup hierarchies and leftovers.
package mountinfo

import (
	"bytes"
	"os"
	"strconv"
	"strings"
)

// Entry is one line of mountinfo (see proc(5)).
type Entry struct {
	Root         string // the path within the file system that is mounted
	Point        string // where it is mounted
	Options      string // per-mount options (ro, nosuid, ...)
	Optional     []string
	FSType       string
	Source       string
	SuperOptions string // per-superblock options
}

// Path is the mount table Read parses: the calling thread's. /proc/self is
// the thread-group leader's view, and libraries that move a locked thread
// into another mount namespace (libcontainer does) can leave the main
// thread wedged there for good; Go never schedules other goroutines on a
// thread in a foreign namespace, so the current thread's view is the
// process's real one.
const Path = "/proc/thread-self/mountinfo"

// Read parses the calling thread's mount table.
func Read() ([]Entry, error) {
	data, err := os.ReadFile(Path)
	if err != nil {
		return nil, err
	}
	return Parse(data), nil
}

// Parse parses mountinfo text, skipping malformed lines.
func Parse(data []byte) []Entry {
	var out []Entry
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		pre, post, ok := strings.Cut(string(line), " - ")
		if !ok {
			continue
		}
		f, tail := strings.Fields(pre), strings.Fields(post)
		if len(f) < 6 || len(tail) < 2 {
			continue
		}
		e := Entry{
			Root:     Unescape(f[3]),
			Point:    Unescape(f[4]),
			Options:  f[5],
			Optional: f[6:],
			FSType:   tail[0],
			Source:   Unescape(tail[1]),
		}
		if len(tail) > 2 {
			e.SuperOptions = tail[2]
		}
		out = append(out, e)
	}
	return out
}

// Under lists the mount points at or below dir, in table order (parents
// before the mounts on top of them).
func Under(dir string) ([]string, error) {
	entries, err := Read()
	if err != nil {
		return nil, err
	}
	dir = strings.TrimSuffix(dir, "/")
	var out []string
	for _, e := range entries {
		if e.Point == dir || strings.HasPrefix(e.Point, dir+"/") {
			out = append(out, e.Point)
		}
	}
	return out, nil
}

// Unescape undoes the kernel's octal escapes in mountinfo paths (\040 for
// a space, \011, \012, \134).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
