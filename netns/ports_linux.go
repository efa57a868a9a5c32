package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// A published host port is held by a socket bound to it (never listening:
// DNAT diverts its packets first). That keeps any other process on the
// host, including another Manager, from taking the port while it is
// published, and tells the Manager which ports are already taken.

func bindReservation(proto string, ip netip.Addr, port int) (int, error) {
	typ := unix.SOCK_STREAM
	if proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: ip.As4()}); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("bind", err)
	}
	return fd, nil
}

// reservePorts gives every spec a host port and returns the published
// ports, with sandbox as the sandbox-side address. On error no port stays
// reserved. Called with m.mu held.
func (m *Manager) reservePorts(specs []PortSpec, sandbox netip.Addr) ([]PublishedPort, error) {
	pubs := make([]PublishedPort, 0, len(specs))
	for _, s := range specs {
		port, err := m.reservePort(s)
		if err != nil {
			m.freePorts(pubs)
			return nil, err
		}
		pubs = append(pubs, PublishedPort{
			Proto:   s.Proto,
			Host:    netip.AddrPortFrom(s.HostIP, uint16(port)),
			Sandbox: netip.AddrPortFrom(sandbox, uint16(s.ContainerPort)),
		})
	}
	return pubs, nil
}

// reservePort binds the requested host port, or the next free one in the
// range. Called with m.mu held.
func (m *Manager) reservePort(s PortSpec) (int, error) {
	if s.HostPort != 0 {
		k := portKey{s.Proto, s.HostPort}
		if _, taken := m.hostPorts[k]; taken {
			return 0, fmt.Errorf("host port %s/%d is already published: %w", s.Proto, s.HostPort, ErrInvalid)
		}
		fd, err := bindReservation(s.Proto, s.HostIP, s.HostPort)
		if err != nil {
			return 0, portError(s, s.HostPort, err)
		}
		m.hostPorts[k] = fd
		return s.HostPort, nil
	}
	r := m.cfg.HostPorts
	n := r.Max - r.Min + 1
	for i := range n {
		port := r.Min + (m.nextPort-r.Min+i)%n
		k := portKey{s.Proto, port}
		if _, taken := m.hostPorts[k]; taken {
			continue
		}
		fd, err := bindReservation(s.Proto, s.HostIP, port)
		if errors.Is(err, unix.EADDRINUSE) || errors.Is(err, unix.EACCES) {
			continue
		}
		if err != nil {
			return 0, portError(s, port, err)
		}
		m.hostPorts[k] = fd
		m.nextPort = port + 1
		return port, nil
	}
	return 0, fmt.Errorf("no free %s host port in %d-%d on %s: %w", s.Proto, r.Min, r.Max, s.HostIP, ErrExhausted)
}

func portError(s PortSpec, port int, err error) error {
	switch {
	case errors.Is(err, unix.EADDRINUSE):
		return fmt.Errorf("host port %s/%d is in use on the host: %w", s.Proto, port, ErrInvalid)
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return fmt.Errorf("host address %s is not an address of this host: %w", s.HostIP, ErrInvalid)
	}
	return fmt.Errorf("reserve host port %s %s:%d: %w", s.Proto, s.HostIP, port, err)
}

// freePorts closes the reservations of pubs. Called with m.mu held.
func (m *Manager) freePorts(pubs []PublishedPort) {
	for _, p := range pubs {
		k := portKey{p.Proto, int(p.Host.Port())}
		if fd, ok := m.hostPorts[k]; ok {
			unix.Close(fd)
			delete(m.hostPorts, k)
		}
	}
}
