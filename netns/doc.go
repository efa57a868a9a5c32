// Package netns gives sandboxes their network. It owns one Linux bridge, the
// network namespaces behind it, the veth pairs and addresses that join them,
// a few iptables chains of its own, and the state directory those
// namespaces are pinned in. It never touches links, chains, rules or
// namespaces it did not make, and it never runs a process: the sandbox layer
// joins the namespace an Attachment names.
//
// # Modes
//
//   - ModeShared (the default): the sandbox joins one of Config.Slots
//     namespaces built when the Manager starts. Each slot has a veth
//     ("eth0") on the bridge, its own address in Config.Subnet and a default
//     route via the bridge. Egress is masqueraded; published ports are DNAT
//     rules. Sandboxes in the same slot share its loopback and its port
//     space, so the Manager never gives two of them the same published
//     container port in one slot. That sharing is also a trust boundary:
//     a sandbox can bind a port another one in its slot publishes before
//     the owner does, and reach the others' loopback listeners and abstract
//     Unix sockets. Give mutually untrusting tenants different slots (or
//     ModeIsolated for sandboxes that publish ports).
//   - ModeNone: a private namespace with loopback only, taken from a pool
//     that a background goroutine keeps filled. Used once, then destroyed
//     off the caller's path, so no state (abstract Unix sockets, sockets in
//     TIME_WAIT) passes from one sandbox to the next.
//   - ModeIsolated: a namespace, a veth pair and an address made for this
//     sandbox alone, the way Docker does it. It costs milliseconds and is
//     kept for comparison and for workloads that need a private port space.
//   - ModeHost: the host's own stack, for trusted workloads. Nothing is made.
//
// # Why the costs decide the design
//
// On the machines sockfaas targets, creating a network namespace takes
// 0.5–0.9 ms and the kernel serializes it; its teardown takes ~40 ms and
// throttles the next creation; creating a veth and moving its peer into a
// namespace takes ~23 ms, while creating the peer inside the namespace
// (IFLA_NET_NS_FD on the peer) takes ~1.9 ms for the whole setup; deleting a
// veth takes 26–35 ms and deleting an iptables-nft rule 14–33 ms. So: slots
// are built once, at New; `none` namespaces are pooled; every teardown
// (rules, links, namespaces) runs in the background after Release; and
// veth peers are always created directly in their namespace. Attaching a
// sandbox to a shared slot without published ports is a few map updates
// under a mutex. Publishing a port adds one iptables rule on the caller's
// path: one exec of iptables, ~2 ms alone, ~12-15 ms (measured) while the
// deletions of earlier Releases are running. Its removal runs in the
// background.
//
// # Host state it makes
//
// With the default Config:
//
//   - bridge "sf-br0" with address 10.213.0.1/16 (the gateway) and
//     net.ipv4.conf.sf-br0.route_localnet=1, which is what lets a DNAT to a
//     sandbox work for clients connecting to a port published on 127.0.0.1;
//     the setting lives and dies with the bridge;
//   - host-side veths "sf-br0s<N>" (slots) and "sf-br0i<N>" (isolated
//     sandboxes), bridge ports in isolated mode so that sandboxes in
//     different namespaces cannot reach each other at layer 2;
//   - chains SF-DNAT (nat; jumped to from PREROUTING and OUTPUT),
//     SF-POSTROUTING (nat; from POSTROUTING), SF-FORWARD (filter; from
//     FORWARD) and SF-INPUT (filter; from INPUT). SF-POSTROUTING masquerades
//     egress from the subnet, connections from 127.0.0.0/8 to the bridge
//     (loopback clients of published ports) and hairpin connections from a
//     sandbox to a port published by another. SF-FORWARD accepts published
//     ports and, with Egress, new connections out of the subnet, and drops
//     traffic routed from the bridge back into it. SF-INPUT drops new
//     packets from the bridge addressed to 127.0.0.0/8, which
//     route_localnet would otherwise let sandboxes send to the host's
//     loopback services;
//   - net.ipv4.ip_forward=1, only when Config.Egress is set and only if it
//     was off; it is turned off again when the last sockfaas bridge that
//     needed it goes away. The bridge's link alias records that, so a later
//     process can restore it after a crash;
//   - under Config.StateDir: "lock" (held while a Manager lives) and "ns/",
//     a shared bind mount of itself holding one nsfs bind mount per
//     namespace ("slot-<N>", "none-<N>", "iso-<N>").
//
// Close removes all of it; Cleanup (which New runs first) removes what a
// killed process left. Addresses are IPv4 only.
//
// # Joining a namespace
//
// The sandbox layer sets sandbox.Spec.NetNS to Attachment.NSPath: it opens
// the file and hands the fd to the process that becomes the sandbox's init,
// which calls setns(fd, CLONE_NEWNET) before it unshares anything else (in
// particular before a user namespace, since joining needs CAP_SYS_ADMIN over
// the namespace's owner). Nothing is created on that path. Host mode has no
// NSPath: the sandbox neither joins nor unshares a network namespace. The
// sandbox layer must not unmount or remove the file (slots are shared), and
// calls Release once the sandbox's processes are gone.
package netns
