package fsbind

import (
	"errors"
	"testing"
)

func TestValidate(t *testing.T) {
	ok := []Spec{
		{},
		{Base: "/srv/rootfs", TmpSize: 1 << 20},
		{Binds: []Bind{{Source: "/src/code", Dest: "/code"}, {Source: "/src/pkgs", Dest: "/packages/", Writable: true}}},
		{Binds: []Bind{{Source: "/a", Dest: "/code"}, {Source: "/b", Dest: "/code/lib"}}},
		{Binds: []Bind{{Source: "/a", Dest: "/devices"}, {Source: "/b", Dest: "/procfs"}, {Source: "/c", Dest: "/tmpdata"}}},
	}
	for _, s := range ok {
		if err := s.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", s, err)
		}
	}
	bad := map[string]Spec{
		"relative base":        {Base: "rootfs"},
		"negative tmp size":    {TmpSize: -1},
		"relative source":      {Binds: []Bind{{Source: "code", Dest: "/code"}}},
		"empty source":         {Binds: []Bind{{Source: "", Dest: "/code"}}},
		"relative dest":        {Binds: []Bind{{Source: "/code", Dest: "code"}}},
		"empty dest":           {Binds: []Bind{{Source: "/code", Dest: ""}}},
		"dotdot dest":          {Binds: []Bind{{Source: "/code", Dest: "/code/../../etc"}}},
		"dotdot at end":        {Binds: []Bind{{Source: "/code", Dest: "/code/.."}}},
		"root dest":            {Binds: []Bind{{Source: "/code", Dest: "/"}}},
		"root dest uncleaned":  {Binds: []Bind{{Source: "/code", Dest: "//."}}},
		"proc":                 {Binds: []Bind{{Source: "/code", Dest: "/proc"}}},
		"under dev":            {Binds: []Bind{{Source: "/code", Dest: "/dev/sda"}}},
		"tmp":                  {Binds: []Bind{{Source: "/code", Dest: "/tmp/"}}},
		"under scratch":        {Binds: []Bind{{Source: "/code", Dest: "/scratch/x"}}},
		"duplicate":            {Binds: []Bind{{Source: "/a", Dest: "/code"}, {Source: "/b", Dest: "/code"}}},
		"duplicate uncleaned":  {Binds: []Bind{{Source: "/a", Dest: "/code"}, {Source: "/b", Dest: "/./code/"}}},
		"nul byte in dest":     {Binds: []Bind{{Source: "/a", Dest: "/co\x00de"}}},
		"nul byte in source":   {Binds: []Bind{{Source: "/a\x00", Dest: "/code"}}},
		"nul byte in the base": {Base: "/srv/\x00"},
	}
	for name, s := range bad {
		if err := s.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate(%+v) = %v, want ErrInvalid", name, s, err)
		}
	}
}
