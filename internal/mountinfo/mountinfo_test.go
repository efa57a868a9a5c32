package mountinfo

import (
	"testing"
)

func TestParse(t *testing.T) {
	data := []byte("22 27 0:21 / /proc rw,relatime - proc proc rw\n" +
		"35 31 0:32 /process_api /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory\n" +
		"90 27 0:50 / /run/with\\040space rw - tmpfs tmp\\040fs rw,size=1k\n" +
		"garbage line\n")
	got := Parse(data)
	if len(got) != 3 {
		t.Fatalf("parsed %d entries: %+v", len(got), got)
	}
	if e := got[1]; e.Root != "/process_api" || e.Point != "/sys/fs/cgroup/memory" || e.FSType != "cgroup" ||
		e.SuperOptions != "rw,memory" || len(e.Optional) != 1 || e.Optional[0] != "shared:5" {
		t.Errorf("cgroup entry: %+v", e)
	}
	if e := got[2]; e.Point != "/run/with space" || e.Source != "tmp fs" {
		t.Errorf("escaped entry: %+v", e)
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`a\040b`: "a b", `\134x`: `\x`, `plain`: "plain", `bad\09`: `bad\09`, `end\04`: `end\04`} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnderSelf(t *testing.T) {
	m, err := Under("/proc")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) == 0 || m[0] != "/proc" {
		t.Fatalf("Under(/proc) = %v", m)
	}
}
