package netns

import (
	"errors"
	"net/netip"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config (all defaults): %v", err)
	}
	bad := map[string]Config{
		"bridge too long":     {Bridge: "sockfaas-br"},
		"bridge with slash":   {Bridge: "sf/br"},
		"bridge with space":   {Bridge: "sf br"},
		"bridge leading dash": {Bridge: "-sf"},
		"ipv6 subnet":         {Subnet: netip.MustParsePrefix("fd00:1::/64")},
		"host bits set":       {Subnet: netip.MustParsePrefix("10.213.0.1/16")},
		"subnet too big":      {Subnet: netip.MustParsePrefix("10.0.0.0/8")},
		"subnet too small":    {Subnet: netip.MustParsePrefix("10.213.0.0/30")},
		"loopback subnet":     {Subnet: netip.MustParsePrefix("127.1.0.0/16")},
		"link-local subnet":   {Subnet: netip.MustParsePrefix("169.254.0.0/16")},
		"multicast subnet":    {Subnet: netip.MustParsePrefix("239.1.0.0/16")},
		"slots for subnet":    {Subnet: netip.MustParsePrefix("10.213.0.0/29"), Slots: 5},
		"negative slots":      {Slots: -1},
		"too many slots":      {Slots: 1000},
		"chain prefix digit":  {ChainPrefix: "1SF-"},
		"chain prefix long":   {ChainPrefix: "SF-abcdefghijklmno"},
		"chain prefix space":  {ChainPrefix: "SF X"},
		"relative state dir":  {StateDir: "run/net"},
		"port range reversed": {HostPorts: PortRange{Min: 3000, Max: 2000}},
		"port range zero min": {HostPorts: PortRange{Min: 0, Max: 2000}},
		"port range too high": {HostPorts: PortRange{Min: 2000, Max: 70000}},
		"unknown mode":        {DefaultMode: "bridge"},
	}
	for name, cfg := range bad {
		t.Run(name, func(t *testing.T) {
			if err := cfg.Validate(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeShared, "none": ModeNone, "shared": ModeShared, "isolated": ModeIsolated, "host": ModeHost} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseMode("bridge"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseMode(bridge) = %v, want ErrInvalid", err)
	}
}

func TestNormalizePorts(t *testing.T) {
	got, err := normalizePorts([]PortSpec{{ContainerPort: 80}, {Proto: "udp", ContainerPort: 53, HostPort: 5353, HostIP: netip.IPv4Unspecified()}})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Proto != "tcp" || got[0].HostIP != loopback {
		t.Errorf("defaults not applied: %+v", got[0])
	}
	bad := map[string][]PortSpec{
		"container port zero":  {{ContainerPort: 0}},
		"container port high":  {{ContainerPort: 65536}},
		"host port negative":   {{ContainerPort: 80, HostPort: -1}},
		"host port high":       {{ContainerPort: 80, HostPort: 70000}},
		"unknown protocol":     {{Proto: "sctp", ContainerPort: 80}},
		"ipv6 host address":    {{ContainerPort: 80, HostIP: netip.IPv6Loopback()}},
		"duplicate host port":  {{ContainerPort: 80, HostPort: 8080}, {ContainerPort: 81, HostPort: 8080}},
		"duplicate, other ips": {{ContainerPort: 80, HostPort: 8080}, {ContainerPort: 80, HostPort: 8080, HostIP: netip.IPv4Unspecified()}},
	}
	for name, specs := range bad {
		if _, err := normalizePorts(specs); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}
