package lean

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// record is what the state directory keeps per live sandbox, so that a
// later process can say what a crashed one left. The sandbox's ID is the
// name of the directory the record is on (a parked sandbox's starts with
// '_park-'); Created is when the root and the cgroup were paired: at
// Create, or when the sandbox was parked.
type record struct {
	Cgroup  string
	Created time.Time
}

// The record of a live sandbox is an extended attribute of its directory
// in the root builder's private tmpfs (roots/<id>): one setxattr, no file
// to create and unlink, gone with the directory, and still there after a
// crash (mounts outlive the process that made them). A parked sandbox's is
// written when it is parked and moves with the directory when Create
// renames it to the sandbox's ID. On a tmpfs without extended attributes
// (a kernel built without CONFIG_TMPFS_XATTR) it is a file of that
// directory instead, recordName. Either holds one line: the creation time
// in Unix nanoseconds, a space, and the cgroup's name.
const (
	recordXattr = "trusted.sockfaas.sandbox"
	recordName  = "sandbox.record"
)

func (r record) encode() []byte {
	b := make([]byte, 0, 24+len(r.Cgroup))
	b = strconv.AppendInt(b, r.Created.UnixNano(), 10)
	return append(append(b, ' '), r.Cgroup...)
}

func decodeRecord(b []byte) (record, bool) {
	ns, name, ok := strings.Cut(string(b), " ")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || name == "" {
		return record{}, false
	}
	return record{Cgroup: name, Created: time.Unix(0, n)}, true
}

func writeRecord(dir string, r record) error {
	data := r.encode()
	err := unix.Setxattr(dir, recordXattr, data, 0)
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = os.WriteFile(filepath.Join(dir, recordName), data, 0o600)
	}
	if err != nil {
		return fmt.Errorf("record sandbox %s: %w", filepath.Base(dir), err)
	}
	return nil
}

// readRecord reads the record on dir; ok is false when there is none.
func readRecord(dir string) (r record, ok bool) {
	var buf [512]byte
	n, err := unix.Getxattr(dir, recordXattr, buf[:])
	var data []byte
	switch {
	case err == nil:
		data = buf[:n]
	case errors.Is(err, unix.EOPNOTSUPP):
		if data, err = os.ReadFile(filepath.Join(dir, recordName)); err != nil {
			return r, false
		}
	default:
		return r, false
	}
	return decodeRecord(data)
}

// removeRecord removes the record on dir, if any.
func removeRecord(dir string) {
	if err := unix.Removexattr(dir, recordXattr); errors.Is(err, unix.EOPNOTSUPP) {
		_ = os.Remove(filepath.Join(dir, recordName))
	}
}
