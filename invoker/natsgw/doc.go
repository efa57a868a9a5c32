// Package natsgw is sockfaas's upstream gateway over NATS: the global
// message bus of SAND's hierarchical queue, for many hosts. Each host runs
// an invoker with a Gateway as its upstream (invoker.WithUpstream); calls
// between functions on one host stay on that host's local queue, and the
// Gateway carries only what a host cannot serve itself.
//
// With the default prefix "sockfaas", the hosts share:
//
//   - sockfaas.call.<function>: synchronous calls, request/reply. Every
//     host that serves the function is in the subject's queue group, so
//     NATS picks one of them for each call. A call carries its trace
//     (caller, depth, path, deadline) in headers; the reply carries the
//     result, or the error's kind (NotFound, Timeout, TooLarge, ...), so
//     a caller sees a callee on another host fail as it would locally.
//   - sockfaas.host.<host>.call.<function>: calls for one host, used to
//     offload a call this host is too busy to take.
//   - the stream sockfaas_events (subjects sockfaas.event.<function>, work
//     queue retention): asynchronous events. Each function has a durable
//     pull consumer named after it that the hosts serving it share; a host
//     takes no more events than it has room for, runs each in its local
//     queue (with its retries) and acknowledges it only once its outcome
//     is final, telling the server it is in progress meanwhile. An event a
//     host could not finish (it stopped) is handed back at once; one whose
//     host died is delivered again after AckWait.
//   - the stream sockfaas_backups (subjects sockfaas.backup.<host>.
//     <function>): SAND's backup copies. An event a host runs itself (a
//     function's invoke_async to a function on the same host, or an
//     asynchronous call from outside) is stored there first, and deleted
//     when its outcome is final.
//   - the key-value bucket sockfaas_hosts: every host puts its name and the
//     functions it serves every Heartbeat; the entries expire after
//     HostTTL. When a host's entry is gone, any other host moves that
//     host's backups to sockfaas_events (each under its event ID, so the
//     stream's duplicate detection stores it once even when two hosts move
//     it), where the hosts that serve the function take them.
//
// Delivery is at least once: an event runs again if its host dies after
// running it but before deleting its backup or acknowledging it, or if a
// host that is alive but stalled for longer than HostTTL is taken for
// dead. Every run of an event has the same aws_request_id, the
// idempotency key a function reads from its context.
//
// A lost connection is survived: the client reconnects forever and
// resubscribes; the sync calls in flight when it drops fail at once with
// invoker.ErrUnavailable (the callee may or may not have run), and calls
// and events for other hosts while it is down fail the same way instead of
// waiting. Events a host serves itself still run, without a backup copy
// (logged). Events already stored are not lost (with file storage, not
// even when the NATS server restarts); a server that comes back without
// its store gets the streams and consumers made anew. After a reconnect a
// host waits HostTTL and a heartbeat before it takes any other host for
// dead, since every heartbeat lapsed during the outage.
//
// Deadlines travel as wall-clock times: the hosts' clocks must agree to
// well within invoker.CallReserve (NTP does).
//
// The hosts trust each other and the NATS server: a host runs what the bus
// delivers. Secure the NATS server (accounts, TLS) as you would any bus
// between machines; see Config.Options.
//
// Package embedded runs a NATS server in the process, for a cluster of one
// machine and for tests.
package natsgw
