"""sockfaas fork server (a zygote): pre-imports packages, then forks children
that move themselves into other sandboxes.

Usage (started by the Go side, package zygote, as uid 0 with every
capability, in a lean sandbox of its own without a PID namespace)::

    python3 -I forkserver.py --socket /scratch/zygote.sock \
        [--import numpy,pandas] [--path DIR[:DIR...]]

Once the socket listens it prints "ready" on stdout and from then on writes
only to stderr. An ImportError of a pre-imported package is fatal: it is
reported on stderr ("error: import numpy: ...") and the server exits 2.

Protocol: one SOCK_SEQPACKET connection per fork. The client sends ONE
message: a JSON header plus the file descriptors it names (SCM_RIGHTS)::

    {"op": "fork", "kind": "exec" | "serve" | "zygote",
     "fds": ["root", "cgroup", "cgroup", ..., "body", "netns"?, "stdin"?, "stdout"?, "stderr"?],
     "uid": N, "gid": N, "hostname": "...",
     "pidns": false,           # exec only: run the program in a new PID namespace
     "newnet": false,          # unshare a private network namespace (loopback up)
     "timeout_ms": 60000}      # how long the child may take to become ready

"root" is a detached mount tree (open_tree clone of the target sandbox's
root), "cgroup" each cgroup.procs file of the target cgroup (one per v1
hierarchy), "netns" a network namespace to join, and "body" a memfd with
the rest of the request, JSON::

    {"dir": "/", "env": ["K=V", ...],
     "argv": [...],            # exec
     "function": {...},        # serve: cfg for instance.serve
     "packages": [...], "paths": [...], "socket": "..."}  # zygote

The body holds what is secret (a function's environment). The server never
reads it: it passes the fd to the child, which reads it after the fork
(_read_body). Whatever the server itself reads stays in its memory, and
every child forked later (other functions, other uids) inherits a copy of
that memory; so the header must carry nothing secret, and the receive
buffer is zeroed after each request anyway.

The server forks; the child isolates itself (steps below) and reports back
on a close-on-exec pipe. The server then answers {"ok": true, "pid": P} (P a
host pid: exec once execve succeeded, serve/zygote once the child's socket
listens) or {"ok": false, "error": "<step>: <message>"}. The connection stays
open: when the child exits the server sends {"op": "exit", "pid": P,
"status": <raw wait status>} and closes it. If the client closes the
connection first, the child is SIGKILLed.

Trust boundary: the ready pipe. Until it is ready, a serve child runs the
function's own code (its module's top level) and a child zygote its
packages' code, with the pipe's write end open; so nothing a child writes
there is trusted. The server reads at most MAX_REPORT bytes (more kills the
child), and a report can only make that one fork fail ("error <text>", kept
as bounded plain text) or look ready early; any other line is a protocol
error ("protocol: ..."), which kills the child and fails that fork only.
The pid in the reply is the one the server forked, except for an exec child
with a PID namespace: there the monitor (trusted code, whose program's copy
of the pipe closes on execve) reports the program's pid, and only a child
of the monitor is accepted. The Go side in turn checks that the pid is in
the target sandbox's cgroup before it holds or signals it.

Until it is ready a child also has SIGKILL as its parent-death signal (set
again after its credentials change, which clears it), so that a server that
dies mid-fork leaves no half-made child behind; a ready child, an execed
program included, outlives the server like any instance.

The child's steps, in order: join the target cgroup (first, so every page it
touches from then on is charged there), setsid, unshare mount+uts+ipc (and
net/pid when asked), join the given network namespace, make every mount
private, stack the cloned root on this server's /tmp, mount proc with
hidepid=invisible (without a PID namespace, instances are kept apart by
running each as its own uid: hidepid hides other uids' processes and kill()
across uids fails), bind the host-wide parts of /proc read-only for uid 0,
pivot_root into the root, set the hostname, and (except for a child zygote)
drop privileges for good: no_new_privs, empty bounding and ambient sets,
no supplementary groups, the target uid/gid, no capabilities.

With "pidns" (exec only) the program runs in a new PID namespace: the
forked child stays outside it as a small monitor, forks a reaper as PID 1
and the program as PID 2, reports the program's host pid, and exits
mirroring the program's status (a signal death included). Signals sent to
the program's host pid reach it normally, since it is not PID 1.

Everything the children need (ctypes functions, the instance module) is
resolved here before forking: a lookup in the child would cost each child
the same work again, and gc.freeze() before each fork keeps the imported
objects' pages shared copy-on-write. What every child gives up anyway
(no_new_privs, the capability bounding and ambient sets, supplementary
groups) the server gives up once at start, for itself: children inherit it.

A spare child is forked ahead of time whenever no child is starting. It
drops the server's state, runs a serve child's code paths on stand-ins
(_warm_up: the pages they dirty are copied now rather than one ~3 us fault
at a time on the request's path) and waits on a socketpair. A request is
then passed to it as received (JSON and fds); it checks the request and
carries it out like a child forked for it. The fork, the child's start-up
and most copy-on-write faults are so off the request's path. The price: the
spare's warm-up pages (some 2 MiB with numpy) are charged to the zygote's
cgroup, not the instance's, for as long as the instance lives.
SOCKFAAS_ZYGOTE_SPARE=0 in the server's environment turns spares off.

Before its first fork the server primes itself (_prime): it runs, a dozen
times and on stand-ins, the Python code a serve child runs for its request
and first invocation (and the at-fork hooks os.fork runs in every child).
CPython 3.11 writes into a code object on each of its first calls and then
rewrites its bytecode in place; done here, that happens once in pages every
child shares, instead of in private copies in each child.

A request with "trace": true gets, in its reply, "trace": [[name, ns], ...]:
checkpoints of the server and the child (time.perf_counter_ns, i.e.
CLOCK_MONOTONIC), and "#minflt", the child's minor faults when ready.

Standard library only (Python 3.9 or newer) and ctypes.
"""

import ctypes
import errno
import fcntl
import gc
import importlib
import json
import os
import platform
import resource
import selectors
import signal
import socket
import struct
import sys
import time

# signal's C functions: the module's wrappers convert to and from enums,
# Python code that a child would run (and so copy) for nothing.
_signal = getattr(signal, "_signal", None) or signal
_SIGCHLD, _SIG_DFL = int(signal.SIGCHLD), int(signal.SIG_DFL)

RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))
if RUNTIME_DIR not in sys.path:
    sys.path.insert(0, RUNTIME_DIR)

# ---------------------------------------------------------------- kernel ABI

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4

PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capset": 126, "move_mount": 429},
    "aarch64": {"pivot_root": 41, "capset": 91, "move_mount": 429},
}

# /proc entries that expose host-wide settings; a uid-0 sandbox process owns
# them despite having no capabilities, so they are bound read-only.
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")

# Signals a monitor passes on to the program it watches.
_FORWARDED = [s for s in signal.valid_signals()
              if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD) and s < signal.SIGRTMIN]

READY_TIMEOUT_MS = 60000
MAX_REQUEST = 64 << 10  # the header only: what is secret travels in the body
MAX_BODY = 64 << 20
MAX_FDS = 64
# A child's reports on its ready pipe: at most this many bytes in all (a
# child that writes more is killed), each line cut to MAX_REPORT_LINE.
MAX_REPORT = 8192
MAX_REPORT_LINE = 2048
# What the body (see the module doc) may set in a request.
BODY_KEYS = ("env", "argv", "dir", "function", "packages", "paths", "socket")


class StepError(Exception):
    """A setup step in a child failed; str() is "<step>: <message>"."""

    def __init__(self, step, message):
        super().__init__("%s: %s" % (step, message))


class _Sys:
    """libc functions and raw syscalls, resolved once in the zygote so that
    forked children pay nothing to look them up."""

    def __init__(self):
        nr = _SYSCALLS.get(platform.machine())
        if nr is None:
            raise RuntimeError("unsupported machine %s" % platform.machine())
        libc = ctypes.CDLL(None, use_errno=True)
        L, I, U, P = ctypes.c_long, ctypes.c_int, ctypes.c_ulong, ctypes.c_char_p

        def fn(name, restype, *argtypes):
            f = libc[name]  # a fresh function object: no other prototype shares it
            f.restype = restype
            f.argtypes = list(argtypes)
            return f

        self._mount = fn("mount", I, P, P, P, U, P)
        self._umount2 = fn("umount2", I, P, I)
        self._unshare = fn("unshare", I, I)
        self._setns = fn("setns", I, I, I)
        self._sethostname = fn("sethostname", I, P, ctypes.c_size_t)
        self._prctl = fn("prctl", I, I, U, U, U, U)
        self._syscall = fn("syscall", L, L, L, L, L, L, L)
        # pivot_root(new, old) and move_mount(fd, "", AT_FDCWD, to, flags)
        # with their strings passed as such.
        self._pivot_root = fn("syscall", L, L, P, P)
        self._move_mount = fn("syscall", L, L, I, P, I, P, U)
        self._nr = nr
        # capset's header and data (two 32-bit halves), all zero: no
        # effective, permitted or inheritable capability.
        self._cap_header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
        self._cap_data = (ctypes.c_uint32 * 6)()

    @staticmethod
    def _check(ret):
        if ret < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return ret

    def mount(self, source, target, fstype, flags, data=None):
        self._check(self._mount(source, target, fstype, flags, data))

    def umount2(self, target, flags):
        self._check(self._umount2(target, flags))

    def unshare(self, flags):
        self._check(self._unshare(flags))

    def setns(self, fd, nstype):
        self._check(self._setns(fd, nstype))

    def sethostname(self, name):
        self._check(self._sethostname(name, len(name)))

    def prctl(self, option, a2=0, a3=0, a4=0, a5=0):
        return self._check(self._prctl(option, a2, a3, a4, a5))

    def pivot_root(self, new, old):
        self._check(self._pivot_root(self._nr["pivot_root"], new, old))

    def move_mount(self, from_fd, to_path):
        self._check(self._move_mount(self._nr["move_mount"], from_fd, b"", AT_FDCWD, to_path,
                                     MOVE_MOUNT_F_EMPTY_PATH))

    def capset_none(self):
        self._check(self._syscall(self._nr["capset"], ctypes.addressof(self._cap_header),
                                  ctypes.addressof(self._cap_data), 0, 0, 0))


SYS = None  # set by main (or by the first ForkServer)
instance = None  # the instance module, imported before the first fork


def _step(name, f, *args):
    try:
        return f(*args)
    except OSError as e:
        raise StepError(name, e.strerror or str(e))


# ---------------------------------------------------------------- the child


def _close_except(keep):
    """Closes every fd from 3 up that is not in keep."""
    lo = 3
    for fd in sorted(k for k in keep if k >= 3):
        if fd > lo:
            os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, 1 << 20)


def _report(fd, line):
    data = line.replace("\n", " ").encode("utf-8", "replace")[:MAX_REPORT_LINE]
    try:
        os.write(fd, data + b"\n")
    except OSError:
        pass


def _loopback_up():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req + b"\0" * 22)[:18])[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP) + b"\0" * 22)
    finally:
        s.close()


def _mount_proc(target, uid, harden):
    _step("mount proc", SYS.mount, b"proc", target, b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          b"hidepid=invisible")
    if harden:
        for name in PROC_READONLY:
            p = target + b"/" + name.encode()
            if not os.path.lexists(p):
                continue
            _step("protect /proc", SYS.mount, p, p, None, MS_BIND | MS_REC, None)
            _step("protect /proc", SYS.mount, p, p, None,
                  MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None)


def _cap_last_cap():
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63


def _drop_bounding_set():
    for cap in range(_cap_last_cap() + 1):
        try:
            SYS.prctl(PR_CAPBSET_DROP, cap)
        except OSError as e:
            if e.errno == errno.EINVAL:  # past the kernel's last capability
                break
            raise StepError("drop capabilities", e.strerror)


# Whether this process (a zygote) already gave up, for itself and so for
# every child it forks, what each child would give up anyway: see
# _restrict_zygote.
_RESTRICTED = False


def _restrict_zygote():
    """Once, in the zygote: no_new_privs, an empty capability bounding set,
    no ambient capabilities, no supplementary groups. Children inherit all of
    it across fork, so each of them saves some fifty syscalls; the zygote
    keeps its effective capabilities (the bounding set only limits what an
    execve can grant, and a zygote never execs). On failure the children do
    it themselves."""
    global _RESTRICTED
    try:
        SYS.prctl(PR_SET_NO_NEW_PRIVS, 1)
        _drop_bounding_set()
        SYS.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        os.setgroups([])
    except (OSError, StepError) as e:
        print("warning: restrict zygote: %s (children will do it)" % e, file=sys.stderr, flush=True)
        return
    _RESTRICTED = True


def _drop_privileges(uid, gid):
    if not _RESTRICTED:
        _step("no_new_privs", SYS.prctl, PR_SET_NO_NEW_PRIVS, 1)
        _drop_bounding_set()
        _step("drop capabilities", SYS.prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        _step("setgroups", os.setgroups, [])
    _step("setgid", os.setresgid, gid, gid, gid)
    _step("setuid", os.setresuid, uid, uid, uid)
    _step("drop capabilities", SYS.capset_none)


def _set_stdio(fds):
    for target, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        fd = fds.get(name)
        if fd is None:
            continue
        if fd != target:
            _step("stdio", os.dup2, fd, target)
        else:
            os.set_inheritable(fd, True)
    for name in ("stdin", "stdout", "stderr"):
        fd = fds.get(name)
        if fd is not None and fd > 2:
            os.close(fd)


def _read_body(fd):
    """The request's body: what is secret in it (env, argv, the function's
    config). Only a child reads it, after the fork, from the memfd the
    client filled; the server passes the fd on unread, so that no secret
    ever lands in its memory, which every later child inherits."""
    try:
        size = os.fstat(fd).st_size
        if size > MAX_BODY:
            raise StepError("request", "body over %d bytes" % MAX_BODY)
        data = os.pread(fd, size, 0) if size else b""
    except OSError as e:
        raise StepError("request", "read body: %s" % (e.strerror or e))
    finally:
        os.close(fd)
    try:
        body = json.loads(data) if data else {}
    except ValueError as e:
        raise StepError("request", "bad body: %s" % e)
    if not isinstance(body, dict):
        raise StepError("request", "bad body: not an object")
    return {k: body[k] for k in BODY_KEYS if k in body}


def _environ(req):
    env = {}
    for kv in req.get("env") or []:
        k, sep, v = kv.partition("=")
        if sep and k:
            env[k] = v
    return env


def _set_environ(env):
    """Makes os.environ (and the C environment) exactly env, touching only
    what differs from the zygote's own."""
    cur = os.environ
    for k in [k for k in cur if k not in env]:
        del cur[k]
    for k, v in env.items():
        if cur.get(k) != v:
            cur[k] = v


def _reset_signals():
    for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(s, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _exec(req, ready_w):
    argv = [str(a) for a in req.get("argv") or []]
    if not argv or not argv[0]:
        raise StepError("exec", "empty argv")
    env = _environ(req)
    _reset_signals()
    # The program outlives a zygote that dies from now on, like a served
    # instance once ready (the Go side kills what a failed fork leaves).
    SYS.prctl(PR_SET_PDEATHSIG, 0)
    name = argv[0]
    if "/" in name:
        candidates = [name]
    else:
        path = env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        candidates = [os.path.join(d or ".", name) for d in path.split(":")]
    err = None
    for c in candidates:
        try:
            os.execve(c, argv, env)
        except OSError as e:
            # Like execvp: a denied candidate is remembered, a missing one
            # lets the search go on.
            if e.errno == errno.EACCES:
                err = e
            elif e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ESTALE,
                                 errno.ENODEV, errno.ETIMEDOUT):
                err = e
                break
            elif err is None:
                err = e
    raise StepError("exec %r" % name, err.strerror if err else "not found")


def _reap_forever():
    """PID 1 of an exec child's PID namespace: reaps orphans until killed."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        signal.sigwait({signal.SIGCHLD})


def _monitor(req, fds, ready_w, uid, gid):
    """Runs in the forked child after it entered the root with a new PID
    namespace pending: forks the reaper (PID 1) and the program (PID 2),
    then mirrors the program's exit."""
    reaper = os.fork()
    if reaper == 0:
        try:
            SYS.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            os.closerange(0, 1 << 20)
            _reap_forever()
        finally:
            os._exit(0)
    prog = os.fork()
    if prog == 0:
        try:
            _mount_proc(b"/proc", uid, uid == 0)
            _drop_privileges(uid, gid)
            _step("chdir", os.chdir, req.get("dir") or "/")
            _set_stdio(fds)
            _exec(req, ready_w)
        except StepError as e:
            _report(ready_w, "error " + str(e))
        except BaseException as e:
            _report(ready_w, "error exec: %s" % e)
        os._exit(127)
    # The monitor holds nothing the program's readers wait for.
    SYS.prctl(PR_SET_PDEATHSIG, 0)
    _report(ready_w, "pid %d" % prog)
    os.close(ready_w)
    for name in ("stdin", "stdout", "stderr"):
        if fds.get(name) is not None:
            try:
                os.close(fds[name])
            except OSError:
                pass
    os.closerange(0, 3)
    # Signals sent to the monitor go to the program, as they would to a
    # process without a PID namespace.
    def forward(sig, frame):
        try:
            os.kill(prog, sig)
        except OSError:
            pass

    for s in _FORWARDED:
        try:
            signal.signal(s, forward)
        except (OSError, ValueError):
            pass
    while True:
        try:
            _, status = os.waitpid(prog, 0)
            break
        except ChildProcessError:
            status = 0x7F00  # cannot happen: prog is our child
            break
    # Ending PID 1 kills whatever the program left in its namespace.
    try:
        os.kill(reaper, signal.SIGKILL)
        os.waitpid(reaper, 0)
    except OSError:
        pass
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        for s in _FORWARDED:
            try:
                signal.signal(s, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 127)


_TRACE = None  # a list of (checkpoint, perf_counter_ns) while a traced fork runs


def _mark(name):
    if _TRACE is not None:
        _TRACE.append((name, time.perf_counter_ns()))


def _spare(server, chan, ready_w):
    """A spare child, forked ahead of time: drops what it inherited from the
    server, then waits on chan for a request (JSON and fds, as the server
    received them) and carries it out like a child forked for it. EOF on
    chan (the server closed it, or died) ends it."""
    try:
        _die_with(server.pid)
        buf = server.rbuf  # the server's: only the pages a request fills are copied
        server.close_in_child()
        _close_except({chan.fileno(), ready_w})
        _warm_up()
        data, fds = _recv_request(chan, buf)
    except BaseException:
        os._exit(0)
    if not data:
        os._exit(0)
    t = time.perf_counter_ns()
    chan.close()
    try:
        req = json.loads(data)
        named = ForkServer._name_fds(req, fds)
    except (ValueError, KeyError, TypeError) as e:
        _report(ready_w, "error request: %s" % e)
        os._exit(127)
    _child(None, req, named, ready_w, t)


WARMUP_DIR = os.path.join(RUNTIME_DIR, "warmup")
_WARMUP_REQUEST = (b'{"op": "fork", "kind": "serve", "fds": ["root", "cgroup", "cgroup", "body"], "uid": 1, '
                   b'"gid": 1, "timeout_ms": 60000}')
_WARMUP_BODY = (b'{"env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"], "function": '
                b'{"socket": "/scratch/fn.sock", "dir": "/code", "name": "f"}}')


def _warm_body():
    """Reads the stand-in body the way a child reads its own."""
    fd = os.memfd_create("sockfaas-warmup", os.MFD_CLOEXEC)
    try:
        os.write(fd, _WARMUP_BODY)
    except OSError:
        os.close(fd)
        raise
    return _read_body(fd)


def _warmup_handler(use):
    """Imports the stand-in handler module (warmup/sockfaas_warmup.py) the
    way an instance imports a function's, calls use(settings, handler), and
    forgets the module again."""
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        s = instance._settings({"dir": WARMUP_DIR, "handler": "sockfaas_warmup.lambda_handler",
                                "socket": "/scratch/fn.sock", "name": "sockfaas-warmup"})
        use(s, instance._load(s))
    finally:
        sys.modules.pop("sockfaas_warmup", None)
        while WARMUP_DIR in sys.path:
            sys.path.remove(WARMUP_DIR)
        sys.path_importer_cache.pop(WARMUP_DIR, None)
        sys.dont_write_bytecode = saved


def _warm_up():
    """Runs, in a spare child waiting for its request, what a serve child
    will run once it has one, on stand-ins and without lasting effects:
    parse a request, set and unset an environment variable, import a
    handler module from a directory (warmup/sockfaas_warmup.py) and build
    an instance server around it, open a socket. Each page of the zygote's
    heap that this writes is copied now, while nobody waits, rather than
    on a request's path (where each such fault costs some 3 us here: a serve
    child would otherwise take several hundred). The copies are charged to
    the zygote's cgroup, the child's cgroup being unknown yet; they are
    pages the instance would have copied anyway, and their number does not
    depend on the function."""
    try:
        json.loads(_WARMUP_REQUEST)
        _warm_body()
        os.environ["SOCKFAAS_WARMUP"] = "1"
        del os.environ["SOCKFAAS_WARMUP"]
        SYS.prctl(PR_GET_DUMPABLE)
        if instance is not None and os.path.isdir(WARMUP_DIR):
            _warmup_handler(instance._Server)
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
    except Exception as e:  # a warm-up must never cost a fork
        print("zygote: warm-up: %s: %s" % (type(e).__name__, e), file=sys.stderr, flush=True)


# CPython 3.11 rewrites a function's bytecode in place ("quickening") on its
# 8th call and specializes its instructions over the next ones; until then
# every call writes to the code object. More rounds than that, so that what
# a child runs is already in its final form in pages it shares.
_PRIME_ROUNDS = 12
_PRIME_BODY = b'{"warm": true}'
_PRIME_HTTP = (b"POST /invoke HTTP/1.1\r\nHost: sockfaas\r\nContent-Type: application/json\r\n"
               b"X-Request-Id: sockfaas-warmup\r\nContent-Length: %d\r\n\r\n%s"
               % (len(_PRIME_BODY), _PRIME_BODY))


class _NullSocket:
    """Where a primed instance server's responses go."""

    def sendall(self, data):
        pass


def _prime():
    """Runs, once in the zygote before it forks anything, the Python code a
    serve child runs for its request and its first invocation, on
    stand-ins: parse a fork request, import a handler module (the warm-up
    one), build an instance server around it and put an HTTP request
    through it. What that leaves behind (quickened and specialized
    bytecode, attribute caches, the import system's caches) is then shared
    copy-on-write by every child instead of being written, and so copied,
    in each of them. Nothing else lasts: the module is forgotten again."""
    if instance is None or not os.path.isdir(WARMUP_DIR):
        return

    def serve_one(s, fn):
        server = instance._Server(s, fn)
        conn = instance._Conn(_NullSocket())
        conn.buf += _PRIME_HTTP
        server._feed(conn)

    # What os.fork runs in every child: threading's and random's at-fork
    # hooks (the former only while this is the process's one thread, where
    # running it changes nothing).
    hooks = []
    threading = sys.modules.get("threading")
    if threading is not None and callable(getattr(threading, "_after_fork", None)):
        hooks.append(lambda: threading.active_count() == 1 and threading._after_fork())
    rng = getattr(sys.modules.get("random"), "_inst", None)
    if rng is not None:
        hooks.append(rng.seed)
    try:
        for _ in range(_PRIME_ROUNDS):
            for hook in hooks:
                hook()
            req = json.loads(_WARMUP_REQUEST)
            ForkServer._name_fds(req, [-1] * len(req["fds"]))
            req.update(_warm_body())
            _environ(req)
            _warmup_handler(serve_one)
    except Exception as e:  # priming is an optimisation only
        print("warning: prime: %s: %s" % (type(e).__name__, e), file=sys.stderr, flush=True)


def _recv_request(sock, buf):
    """One message from sock into buf: (bytes, [fds]); buf is zeroed once
    the message is copied out. A message that does not fit is an error; so
    are more than MAX_FDS descriptors."""
    n, anc, flags, _ = sock.recvmsg_into([buf], socket.CMSG_SPACE(MAX_FDS * 4))
    fds = []
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack("%di" % (len(cdata) // 4), cdata[: len(cdata) - len(cdata) % 4]))
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        _zero(buf, len(buf))
        raise ValueError("request over %d bytes or %d descriptors" % (MAX_REQUEST, MAX_FDS))
    data = bytes(buf[:n])
    _zero(buf, n)
    return data, fds


def _zero(buf, n):
    """Clears the first n bytes of the bytearray buf in place."""
    if n > 0:
        ctypes.memset((ctypes.c_char * n).from_buffer(buf), 0, n)


def _die_with(parent):
    """SIGKILL for this child when the server that forked it (parent)
    dies, until it is ready (see _child): a half-made child must not
    outlive a failed fork. If the server died already, exit now."""
    global _PARENT
    _PARENT = parent
    SYS.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


_PARENT = 0  # in a child: the server that forked it


def _child(server, req, fds, ready_w, t0=None):
    """The forked child (server is None in a spare, which already dropped
    the server's state): never returns."""
    global _TRACE
    try:
        if req.get("trace"):
            _TRACE = [("child" if server is not None else "spare", t0 or time.perf_counter_ns())]
        if server is not None:
            parent = server.pid
            _die_with(parent)
            server.close_in_child()
            _mark("close_in_child")
        else:
            parent = _PARENT  # a spare: _spare set it
        keep = {ready_w}
        for v in fds.values():
            keep.update(v if isinstance(v, list) else [v])
        _close_except(keep)
        _mark("close_fds")
        kind = req["kind"]
        uid, gid = int(req.get("uid", 65534)), int(req.get("gid", 65534))
        pidns = bool(req.get("pidns")) and kind == "exec"

        for i, fd in enumerate(fds["cgroup"]):
            _step("join cgroup", os.write, fd, b"0")
            os.close(fd)
            if _TRACE is not None:
                _mark("cgroup%d" % i)
        _mark("cgroup")
        if "body" in fds:
            req.update(_read_body(fds.pop("body")))
        else:
            for k in BODY_KEYS:
                req.pop(k, None)
        _mark("body")
        _step("setsid", os.setsid)
        flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC
        if req.get("newnet"):
            flags |= CLONE_NEWNET
        if pidns:
            flags |= CLONE_NEWPID
        _step("unshare", SYS.unshare, flags)
        _mark("unshare")
        if fds.get("netns") is not None:
            _step("join network namespace", SYS.setns, fds["netns"], CLONE_NEWNET)
            os.close(fds.pop("netns"))
        elif req.get("newnet"):
            _step("loopback up", _loopback_up)
        _step("make mounts private", SYS.mount, b"", b"/", None, MS_REC | MS_PRIVATE, None)
        _mark("private")
        _step("attach root", SYS.move_mount, fds["root"], b"/tmp")
        os.close(fds.pop("root"))
        _step("enter root", os.chdir, "/tmp")
        _mark("attach")
        if not pidns:
            _mount_proc(b"proc", uid, uid == 0 and kind != "zygote")
        _mark("proc")
        _step("pivot_root", SYS.pivot_root, b".", b".")
        _mark("pivot")
        _step("detach old root", SYS.umount2, b".", MNT_DETACH)
        _mark("umount")
        _step("enter root", os.chdir, "/")
        hostname = (req.get("hostname") or "").encode()
        if hostname:
            _step("sethostname", SYS.sethostname, hostname)
        _mark("hostname")
        if pidns:
            _monitor(req, fds, ready_w, uid, gid)  # never returns
        if kind != "zygote":
            _drop_privileges(uid, gid)
            # A change of credentials clears the parent-death signal.
            _die_with(parent)
            if kind == "serve":
                # A changed uid made us non-dumpable, which would leave
                # /proc/self root-owned; an instance is an ordinary process.
                SYS.prctl(PR_SET_DUMPABLE, 1)
        _mark("drop")
        _step("chdir", os.chdir, req.get("dir") or "/")
        _set_stdio(fds)
        _mark("stdio")
        if kind == "exec":
            _exec(req, ready_w)
        _set_environ(_environ(req))
        _mark("env")

        def ready():
            global _TRACE
            if _TRACE is not None:
                _mark("ready")
                _TRACE.append(("#minflt", resource.getrusage(resource.RUSAGE_SELF).ru_minflt))
                _report(ready_w, "trace " + " ".join("%s=%d" % t for t in _TRACE))
                _TRACE = None
            # Ready: from now on the child outlives its zygote.
            SYS.prctl(PR_SET_PDEATHSIG, 0)
            _report(ready_w, "ok")
            os.close(ready_w)

        if kind == "serve":
            # /code is read-only: do not even try to write .pyc files.
            sys.dont_write_bytecode = True
            if instance is None:
                raise StepError("serve", "the instance module is not available")
            try:
                instance.serve(req.get("function") or {}, ready=ready, mark=_mark)
            except instance.StartupError as e:
                raise StepError("load", "%s: %s" % (e.kind, e))
            os._exit(0)
        if kind == "zygote":
            _become_zygote(req, ready)
        raise StepError("fork", "unknown kind %r" % kind)
    except StepError as e:
        _report(ready_w, "error " + str(e))
    except BaseException as e:
        _report(ready_w, "error %s: %s" % (type(e).__name__, e))
    os._exit(127)


def _become_zygote(req, ready):
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for p in req.get("paths") or []:
        if p not in sys.path:
            sys.path.insert(0, p)
    for name in req.get("packages") or []:
        try:
            importlib.import_module(name)
        except BaseException as e:
            raise StepError("import %s" % name, "%s: %s" % (type(e).__name__, e))
    server = ForkServer(req.get("socket") or "/scratch/zygote.sock")
    ready()
    server.serve()
    os._exit(0)


# ---------------------------------------------------------------- the server


def _is_child_of(pid, parent):
    """Whether pid is parent's child (or already gone: a monitor reaps its
    program before it exits, and then its report names no live process)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    except OSError:
        return False
    try:
        return int(stat[stat.rindex(b")") + 2:].split()[1]) == parent
    except (ValueError, IndexError):
        return False


class _Fork:
    """One fork request: its connection and its child."""

    def __init__(self, conn, pid, ready_r, deadline):
        self.conn = conn
        self.pid = pid  # the forked child's pid
        self.report_pid = pid  # the pid the client sees (the program, with pidns)
        self.ready_r = ready_r
        self.buf = b""
        self.deadline = deadline
        self.replied = False
        self.status = None  # raw wait status once reaped
        self.watched = True  # conn registered in the selector
        self.trace = None  # [(checkpoint, perf_counter_ns)] when the client asked
        # Whether the child may report another pid: only the monitor of an
        # exec child with a PID namespace, whose every writer to the ready
        # pipe is trusted code (see _finish_ready).
        self.allow_pid = False


class _Spare:
    """The spare child: its pid, the server's end of its request channel,
    and the read end of its ready pipe."""

    def __init__(self, pid, chan, ready_r):
        self.pid = pid
        self.chan = chan
        self.ready_r = ready_r


class ForkServer:
    def __init__(self, path):
        global SYS
        if SYS is None:
            SYS = _Sys()
        SYS.prctl(PR_SET_CHILD_SUBREAPER, 1)
        self.pid = os.getpid()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.nofile = (soft, hard)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, ("listen", None))
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        signal.signal(signal.SIGCHLD, lambda s, f: None)
        signal.set_wakeup_fd(self.wake_w)
        self.conns = set()  # connections not yet carrying a fork
        self.forks = {}  # child pid -> _Fork
        self.rbuf = bytearray(MAX_REQUEST)  # every request is received here
        # A child forked ahead of time that waits for the next request (see
        # _spare): the fork and the child's own start-up are then off the
        # request's path. None while there is none.
        self.spare = None
        self.use_spare = os.environ.get("SOCKFAAS_ZYGOTE_SPARE", "1") != "0"
        if not _RESTRICTED:
            _restrict_zygote()

    def close_in_child(self):
        """Drops, in a forked child, everything the server holds."""
        _signal.set_wakeup_fd(-1)
        _signal.signal(_SIGCHLD, _SIG_DFL)
        if self.spare is not None:
            self.spare.chan.close()
            os.close(self.spare.ready_r)
            self.spare = None
        self.sel.close()
        self.listener.close()
        for c in self.conns:
            c.close()
        for f in self.forks.values():
            if f.conn is not None:
                f.conn.close()
            if f.ready_r is not None:
                os.close(f.ready_r)
        self.conns.clear()
        self.forks.clear()
        os.close(self.wake_r)
        os.close(self.wake_w)
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    # -- main loop

    def serve(self):
        while True:
            timeout = None
            now = time.monotonic()
            for f in self.forks.values():
                if not f.replied:
                    t = max(0.0, f.deadline - now)
                    timeout = t if timeout is None else min(timeout, t)
            if timeout is None and self.spare is None and self.use_spare:
                # Only while no child is starting: a fork competes with
                # that child for the CPUs.
                self._spawn_spare()
            for key, _ in self.sel.select(timeout):
                what, obj = key.data
                if what == "listen":
                    self._accept()
                elif what == "wake":
                    self._reap()
                elif what == "conn":
                    self._request(obj)
                elif what == "running":
                    self._conn_event(obj)
                elif what == "ready":
                    self._ready_event(obj)
            self._reap()
            self._expire()

    def _spawn_spare(self):
        try:
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            return
        ready_r, ready_w = os.pipe()
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            gc.unfreeze()
            for fd in (ready_r, ready_w):
                os.close(fd)
            parent.close()
            child.close()
            return
        if pid == 0:
            parent.detach()  # closed by _close_except; the object must not close a reused fd
            _spare(self, child, ready_w)  # never returns
            os._exit(127)
        gc.unfreeze()
        child.close()
        os.close(ready_w)
        self.spare = _Spare(pid, parent, ready_r)
        # The fork made every page of ours copy-on-write again: take the
        # copies of those a request dirties first now, not on its path.
        self.rbuf[:8192] = bytes(8192)
        json.loads(_WARMUP_REQUEST)

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                print("zygote: accept: %s" % e, file=sys.stderr, flush=True)
                return
            conn.setblocking(False)
            self.conns.add(conn)
            self.sel.register(conn, selectors.EVENT_READ, ("conn", conn))
            # The client sends its request right after connecting: it is
            # usually there already, and a turn of the loop is saved.
            self._request(conn)

    def _drop_conn(self, conn):
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        self.conns.discard(conn)
        conn.close()

    @staticmethod
    def _send(conn, msg):
        try:
            conn.send(json.dumps(msg).encode())
        except OSError:
            pass

    def _request(self, conn):
        t0 = time.perf_counter_ns()
        try:
            data, fds = _recv_request(conn, self.rbuf)
        except (BlockingIOError, InterruptedError):
            return
        except ValueError as e:
            self._send(conn, {"ok": False, "error": "request: %s" % e})
            return self._drop_conn(conn)
        except OSError:
            self._drop_conn(conn)
            return
        try:
            if not data:
                return self._drop_conn(conn)
            if self.spare is not None and self._hand_to_spare(conn, data, fds, t0):
                fds = []  # the spare has them now
                return
            try:
                req = json.loads(data)
                named = self._name_fds(req, fds)
            except (ValueError, KeyError, TypeError) as e:
                self._send(conn, {"ok": False, "error": "request: %s" % e})
                return self._drop_conn(conn)
            fds = []  # owned by named now
            trace = None
            if req.get("trace"):
                trace = [("z_event", t0), ("z_parsed", time.perf_counter_ns())]
            self._fork(conn, req, named, trace)
        finally:
            for fd in fds:
                os.close(fd)

    @staticmethod
    def _name_fds(req, fds):
        if req.get("op") != "fork":
            raise ValueError("unknown op %r" % req.get("op"))
        if req.get("kind") not in ("exec", "serve", "zygote"):
            raise ValueError("unknown kind %r" % req.get("kind"))
        names = req.get("fds") or []
        if len(names) != len(fds):
            raise ValueError("%d fds named, %d passed" % (len(names), len(fds)))
        named = {"cgroup": []}
        for name, fd in zip(names, fds):
            if name == "cgroup":
                named["cgroup"].append(fd)
            elif name in ("root", "body", "netns", "stdin", "stdout", "stderr") and name not in named:
                named[name] = fd
            else:
                raise ValueError("unexpected fd %r" % name)
        if "root" not in named or not named["cgroup"]:
            raise ValueError("a root and at least one cgroup fd are required")
        return named

    def _hand_to_spare(self, conn, data, fds, t0):
        """Passes a request to the spare child, which checks it and carries
        it out; False if the spare is gone (the caller forks instead)."""
        sp, self.spare = self.spare, None
        try:
            socket.send_fds(sp.chan, [data], fds)
        except OSError:
            sp.chan.close()
            os.close(sp.ready_r)
            try:
                os.kill(sp.pid, signal.SIGKILL)
            except OSError:
                pass
            return False
        t1 = time.perf_counter_ns()
        sp.chan.close()
        for fd in fds:
            os.close(fd)
        # The spare parses the request itself and reports a bad one; the
        # server only wants the timeout and whether to trace.
        try:
            req = json.loads(data)
            timeout_ms = float(req.get("timeout_ms") or READY_TIMEOUT_MS)
            trace = [("z_event", t0), ("z_handed", t1)] if req.get("trace") else None
            allow_pid = req.get("kind") == "exec" and bool(req.get("pidns"))
        except (ValueError, TypeError, AttributeError):
            timeout_ms, trace, allow_pid = READY_TIMEOUT_MS, None, False
        os.set_blocking(sp.ready_r, False)
        f = _Fork(conn, sp.pid, sp.ready_r, time.monotonic() + timeout_ms / 1000.0)
        f.trace = trace
        f.allow_pid = allow_pid
        self.forks[sp.pid] = f
        self.conns.discard(conn)
        self.sel.modify(conn, selectors.EVENT_READ, ("running", f))
        self.sel.register(sp.ready_r, selectors.EVENT_READ, ("ready", f))
        return True

    def _fork(self, conn, req, named, trace=None):
        ready_r, ready_w = os.pipe()
        gc.freeze()
        if trace is not None:
            trace.append(("z_freeze", time.perf_counter_ns()))
        try:
            pid = os.fork()
        except OSError as e:
            gc.unfreeze()
            self._close_named(named)
            os.close(ready_r)
            os.close(ready_w)
            self._send(conn, {"ok": False, "error": "fork: %s" % e.strerror})
            return self._drop_conn(conn)
        if pid == 0:
            _child(self, req, named, ready_w)  # never returns
            os._exit(127)
        if trace is not None:
            trace.append(("z_forked", time.perf_counter_ns()))
        gc.unfreeze()
        os.close(ready_w)
        self._close_named(named)
        os.set_blocking(ready_r, False)
        timeout = float(req.get("timeout_ms") or READY_TIMEOUT_MS) / 1000.0
        f = _Fork(conn, pid, ready_r, time.monotonic() + timeout)
        f.trace = trace
        f.allow_pid = req.get("kind") == "exec" and bool(req.get("pidns"))
        self.forks[pid] = f
        self.conns.discard(conn)
        self.sel.modify(conn, selectors.EVENT_READ, ("running", f))
        self.sel.register(ready_r, selectors.EVENT_READ, ("ready", f))
        if trace is not None:
            trace.append(("z_waiting", time.perf_counter_ns()))

    @staticmethod
    def _close_named(named):
        for v in named.values():
            for fd in v if isinstance(v, list) else [v]:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _conn_event(self, f):
        """The client wrote or closed; the only thing it may do is close."""
        try:
            data = f.conn.recv(16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            return
        try:
            os.kill(f.pid, signal.SIGKILL)
        except OSError:
            pass
        # Keep the connection for the exit message (a client that only shut
        # down its side still reads it), but stop watching it.
        self.sel.unregister(f.conn)
        f.watched = False

    def _ready_event(self, f):
        try:
            chunk = os.read(f.ready_r, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if chunk:
            if len(f.buf) + len(chunk) > MAX_REPORT:
                f.buf = b""
                self._finish_ready(f, error="protocol: the child wrote over %d bytes on its ready pipe"
                                   % MAX_REPORT)
                return
            f.buf += chunk
            return
        self._finish_ready(f)

    def _parse_report(self, f):
        """Reads what the child wrote on its ready pipe; returns an error
        text or None. Trust boundary: until it is ready, a serve child runs
        the function's own code (its module's top level) with the pipe
        open, and a child zygote runs its packages' code, so any of those
        bytes may be hostile. They can only ever make this one fork fail
        ("error <text>": plain text, bounded) or look ready early; anything
        else is a protocol error that kills the child. A "pid" line, the
        one thing that would let a child name another process, is taken
        only from the monitor of a PID-namespace exec child (trusted code
        up to execve, which closes the pipe) and only for a child of it."""
        error = None
        pid = None
        lines = f.buf.decode("utf-8", "replace").split("\n")
        if lines[-1] != "":
            return "protocol: the child's report ends in an unfinished line"
        for line in lines[:-1]:
            word, _, rest = line.partition(" ")
            if line == "ok":
                continue
            if word == "error":
                error = error or (rest[:MAX_REPORT_LINE] or "unknown error")
            elif word == "trace":
                if f.trace is None:
                    continue
                marks = []
                for kv in rest.split():
                    k, _, v = kv.partition("=")
                    if not k or not v.isdigit() or len(v) > 20:
                        return "protocol: bad trace report from the child"
                    marks.append((k[:64], int(v)))
                f.trace.extend(marks)
            elif word == "pid" and f.allow_pid and pid is None:
                if not rest.isdigit() or len(rest) > 10:
                    return "protocol: bad pid report from the child"
                pid = int(rest)
                if pid <= 0 or not _is_child_of(pid, f.pid):
                    return "protocol: the child reported pid %d, not a child of its own" % pid
            else:
                return "protocol: unexpected report from the child"
        if pid is not None and error is None:
            f.report_pid = pid
        return error

    def _finish_ready(self, f, timeout=False, error=None):
        if f.trace is not None:
            f.trace.append(("z_eof", time.perf_counter_ns()))
        self.sel.unregister(f.ready_r)
        os.close(f.ready_r)
        f.ready_r = None
        if error is None:
            try:
                error = self._parse_report(f)
            except Exception as e:  # no bytes of a child may end the server
                error = "protocol: bad report from the child (%s)" % type(e).__name__
        f.buf = b""
        if timeout:
            error = "timeout: the child was not ready in time"
        f.replied = True
        if error is not None:
            try:
                os.kill(f.pid, signal.SIGKILL)
            except OSError:
                pass
            # Reap it (and whatever of its tree we adopted) before
            # answering: once the caller hears "failed", no process of
            # this fork may be left in its sandbox, not even a zombie.
            if f.status is None:
                try:
                    _, f.status = os.waitpid(f.pid, 0)
                except ChildProcessError:
                    pass
            self._reap()
            if f.conn is not None:
                self._send(f.conn, {"ok": False, "error": error})
        elif f.conn is not None:
            msg = {"ok": True, "pid": f.report_pid}
            if f.trace is not None:
                f.trace.append(("z_reply", time.perf_counter_ns()))
                msg["trace"] = f.trace
            self._send(f.conn, msg)
        if f.status is not None:
            self._exited(f)

    def _exited(self, f):
        self.forks.pop(f.pid, None)
        if f.conn is not None:
            self._send(f.conn, {"op": "exit", "pid": f.report_pid, "status": f.status})
            if f.watched:
                self.sel.unregister(f.conn)
            f.conn.close()
            f.conn = None

    def _reap(self):
        try:
            while os.read(self.wake_r, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            f = self.forks.get(pid)
            if f is None:
                if self.spare is not None and pid == self.spare.pid:
                    # Died unused (killed?): the loop forks another.
                    self.spare.chan.close()
                    os.close(self.spare.ready_r)
                    self.spare = None
                continue  # else an orphan we adopted as subreaper
            f.status = status
            if f.replied:
                self._exited(f)

    def _expire(self):
        now = time.monotonic()
        for f in list(self.forks.values()):
            if not f.replied and f.ready_r is not None and now >= f.deadline:
                self._finish_ready(f, timeout=True)


# ---------------------------------------------------------------- main


def _parse(argv):
    opts = {"socket": "/scratch/zygote.sock", "import": "", "path": ""}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--socket", "--import", "--path") and i + 1 < len(argv):
            opts[a[2:]] = argv[i + 1]
            i += 2
        else:
            raise SystemExit("usage: forkserver.py --socket PATH [--import a,b] [--path DIR:DIR]")
    return opts


def main(argv=None):
    global SYS, instance
    opts = _parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for p in reversed([p for p in opts["path"].split(":") if p]):
        if p not in sys.path:
            sys.path.insert(0, p)
    try:
        SYS = _Sys()
    except (OSError, RuntimeError, AttributeError) as e:
        print("error: resolve libc: %s" % e, file=sys.stderr, flush=True)
        return 2
    try:
        import instance as _instance

        instance = _instance
    except ImportError as e:
        print("warning: import instance: %s (serve forks will fail)" % e, file=sys.stderr, flush=True)
    for name in [n for n in opts["import"].split(",") if n]:
        try:
            importlib.import_module(name)
        except BaseException as e:
            print("error: import %s: %s: %s" % (name, type(e).__name__, e), file=sys.stderr, flush=True)
            return 2
    _prime()
    try:
        server = ForkServer(opts["socket"])
    except OSError as e:
        print("error: listen on %s: %s" % (opts["socket"], e), file=sys.stderr, flush=True)
        return 2
    gc.collect()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    os.dup2(2, 1)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
