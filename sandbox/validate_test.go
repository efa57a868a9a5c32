package sandbox

import (
	"errors"
	"strings"
	"testing"

	"github.com/sockfaas/sockfaas/fsbind"
)

func TestValidateID(t *testing.T) {
	for _, id := range []string{"a", "fn-1", "A.b_c-9", strings.Repeat("x", 64)} {
		if err := ValidateID(id); err != nil {
			t.Errorf("ValidateID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", "../x", "a/b", "-x", ".x", "x y", "x\x00", strings.Repeat("x", 65)} {
		if err := ValidateID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateID(%q) = %v, want ErrInvalid", id, err)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	ok := []Spec{
		{},
		{Namespaces: DefaultNamespaces | NSNet, Limits: Limits{MemoryBytes: 64 << 20, CPUMillis: 500, Pids: 10}},
		{NetNS: "/run/sockfaas/netns/slot-0"},
	}
	for i, s := range ok {
		if err := s.Validate(); err != nil {
			t.Errorf("ok[%d]: %v", i, err)
		}
	}
	bad := map[string]Spec{
		"unknown namespace": {Namespaces: 1 << 10},
		"negative limit":    {Limits: Limits{Pids: -1}},
		"tiny memory":       {Limits: Limits{MemoryBytes: 1 << 20}},
		"long hostname":     {Hostname: strings.Repeat("h", 65)},
		"relative netns":    {NetNS: "netns/x"},
		"netns and NSNet":   {NetNS: "/proc/1/ns/net", Namespaces: DefaultNamespaces | NSNet},
		"relative bind":     {Root: fsbind.Spec{Binds: []fsbind.Bind{{Source: "code", Dest: "/code"}}}},
		"escaping bind":     {Root: fsbind.Spec{Binds: []fsbind.Bind{{Source: "/code", Dest: "/code/../../etc"}}}},
		"bind over /proc":   {Root: fsbind.Spec{Binds: []fsbind.Bind{{Source: "/code", Dest: "/proc/x"}}}},
		"duplicate bind":    {Root: fsbind.Spec{Binds: []fsbind.Bind{{Source: "/a", Dest: "/x"}, {Source: "/b", Dest: "/x/"}}}},
		"relative base":     {Root: fsbind.Spec{Base: "rootfs"}},
		"negative tmp size": {Root: fsbind.Spec{TmpSize: -1}},
	}
	for name, s := range bad {
		if err := s.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
	for name, p := range map[string]ProcessSpec{
		"empty argv":   {},
		"relative dir": {Args: []string{"/bin/true"}, Dir: "tmp"},
		"NUL in arg":   {Args: []string{"/bin/echo", "a\x00b"}},
		"bad env":      {Args: []string{"/bin/true"}, Env: []string{"NOEQUALS"}},
	} {
		if err := p.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
	for name, s := range map[string]Spec{
		"huge pids":   {Limits: Limits{Pids: 1 << 62}},
		"huge cpu":    {Limits: Limits{CPUMillis: 1 << 40}},
		"huge memory": {Limits: Limits{MemoryBytes: 1 << 62}},
	} {
		if err := s.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}
