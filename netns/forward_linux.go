package netns

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// net.ipv4.ip_forward is host-wide, and several Managers (a server and a
// test run, two test binaries) may want it at once. The rule: a Manager with
// Egress turns it on if it was off, and it goes off again when the last
// sockfaas bridge that needed it goes away, not before. Each bridge that
// depends on it says so in its link alias (forwardMark), which
// outlives a crash, so Cleanup in a later process applies the same rule.
// Deciding and writing happen under an exclusive flock on the sysctl file
// itself, so that two processes cannot interleave.

const forwardSysctl = "/proc/sys/net/ipv4/ip_forward"

// lockForwarding opens ip_forward locked; closing the file unlocks it.
func lockForwarding() (*os.File, error) {
	f, err := os.OpenFile(forwardSysctl, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", sysctlName(forwardSysctl), err)
	}
	if err := retryEINTR(func() error { return unix.Flock(int(f.Fd()), unix.LOCK_EX) }); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", sysctlName(forwardSysctl), os.NewSyscallError("flock", err))
	}
	return f, nil
}

// enableForwarding turns ip_forward on for the bridge br, recording in br's
// alias when it was off (or on only because another sockfaas bridge needed
// it).
func enableForwarding(br netlink.Link, stateDir string, log zerolog.Logger) error {
	f, err := lockForwarding()
	if err != nil {
		return err
	}
	defer f.Close()
	var buf [8]byte
	n, err := f.ReadAt(buf[:], 0)
	if n == 0 {
		return fmt.Errorf("read %s: %w", sysctlName(forwardSysctl), err)
	}
	on := strings.TrimSpace(string(buf[:n])) != "0"
	needed := !on
	if on {
		if needed, err = otherForwardingBridge(br.Attrs().Name); err != nil {
			return err
		}
	}
	if needed {
		if err := netlink.LinkSetAlias(br, bridgeAlias(stateDir, true)); err != nil {
			return fmt.Errorf("record ip_forward on bridge %s: %w", br.Attrs().Name, err)
		}
	}
	if on {
		log.Info().Msg("egress enabled; net.ipv4.ip_forward was already on")
		return nil
	}
	if _, err := f.WriteAt([]byte("1\n"), 0); err != nil {
		return fmt.Errorf("set %s: %w", sysctlName(forwardSysctl), err)
	}
	log.Info().Msg("egress enabled: turned net.ipv4.ip_forward on; it goes off again on close")
	return nil
}

// restoreForwarding undoes enableForwarding for the bridge named bridge, if
// that bridge exists and recorded that it needed forwarding.
func restoreForwarding(bridge string, log zerolog.Logger) error {
	br, err := netlink.LinkByName(bridge)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w", bridge, err)
	}
	stateDir, forwardWasOff, ok := parseBridgeAlias(br.Attrs().Alias)
	if !ok || !forwardWasOff {
		return nil
	}
	f, err := lockForwarding()
	if err != nil {
		return err
	}
	defer f.Close()
	// Drop our claim first, under the lock, so that two bridges closing
	// together cannot each leave forwarding on for the other.
	if err := netlink.LinkSetAlias(br, bridgeAlias(stateDir, false)); err != nil {
		return fmt.Errorf("clear ip_forward record on bridge %s: %w", bridge, err)
	}
	other, err := otherForwardingBridge(bridge)
	if err != nil {
		return err
	}
	if other {
		log.Info().Msg("leaving net.ipv4.ip_forward on: another sockfaas bridge needs it")
		return nil
	}
	if _, err := f.WriteAt([]byte("0\n"), 0); err != nil {
		return fmt.Errorf("restore %s: %w", sysctlName(forwardSysctl), err)
	}
	log.Info().Msg("turned net.ipv4.ip_forward off again")
	return nil
}

// otherForwardingBridge reports whether a sockfaas bridge other than bridge
// depends on ip_forward.
func otherForwardingBridge(bridge string) (bool, error) {
	links, err := netlink.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return false, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if _, forwardWasOff, ok := parseBridgeAlias(l.Attrs().Alias); ok && forwardWasOff && l.Attrs().Name != bridge {
			return true, nil
		}
	}
	return false, nil
}
