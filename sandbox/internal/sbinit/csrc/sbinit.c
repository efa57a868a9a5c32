/*
 * sockfaas-init: the first program that runs inside a sockfaas sandbox.
 *
 * Go cannot run code between fork and exec, so the steps that must happen
 * inside the new namespaces (mounting /proc as PID 1 of a new PID namespace,
 * pivot_root, sethostname, no_new_privs, dropping the capability bounding
 * set) happen here, in a tiny static program the Go side starts with the
 * clone flags. It has no libc: raw system calls, its own _start, no global
 * mutable state. See launcher_linux.go for the other half of the protocol.
 *
 * argv: sockfaas-init [root=P | tree=N seed=N] [host=H] [uid=N] [gid=N]
 *       [dir=P] [flags=N] [netns] [priv] [procs=N] [nogo] [noinit]
 *       -- program args...
 *   (flags are the CLONE_NEW* bits the Go side cloned us with, in decimal)
 *   tree=N seed=N (what the Go side sends): the root is a detached mount
 *   tree open at fd N (open_tree(OPEN_TREE_CLONE | AT_RECURSIVE) of the
 *   host path), and we make our mount namespace ourselves (flags has no
 *   CLONE_NEWNS): we join the seed namespace at the other fd, whose
 *   mounts are an empty read-only tmpfs and the kernel's hidden rootfs
 *   under it (see Seed below), unshare a copy of that, and attach the
 *   tree at SEED_DIR in it. The copy and the unmount of the old root then
 *   cost those two mounts instead of the host's whole table.
 *   root=P: the root is host path P, and flags has CLONE_NEWNS: our mount
 *   namespace is a copy of the caller's, every mount of it, which
 *   pivot_root and the unmount of the old root then throw away again.
 *   With CLONE_NEWPID we are PID 1 of the new namespace: we stay its init,
 *   forwarding signals and reaping orphans, and run the program as our
 *   child; with noinit we exec the program ourselves, which makes it PID 1
 *   (as runc and crun do).
 * envp: the program's environment (PATH is used to find the program).
 * fd 3: "go" pipe; one byte arrives once the Go side has attached us to
 *       our cgroups, so nothing runs before that. Not used with nogo.
 * fd 4: error pipe; "<step>: <errno>" on failure. EOF without data means
 *       the program was exec'd (every copy of fd 4 is close-on-exec).
 * fd 5: status pipe; with a PID namespace and an init, the program's raw
 *       4-byte wait status, written just before we exit.
 * fd 6: with netns, the network namespace to join.
 * fd 7...: with procs=N, N cgroup.procs files (cgroup v1, one per
 *       hierarchy) open for writing: we join those cgroups first thing.
 * then: with tree=N seed=N, the tree and the seed namespace, at the
 *       numbers given, after all of the above (from 6 without netns and
 *       procs).
 *
 * Parked: sockfaas-init root=P|tree=N seed=N flags=N [procs=N] [noinit] park
 *   does everything that does not depend on the program ahead of time (the
 *   cgroups joined, the mount namespace made private, /proc mounted,
 *   pivot_root into P, the old root unmounted, no_new_privs and the
 *   bounding set dropped; with a PID namespace and an init, PID 2 forked,
 *   which does the rest while PID 1 waits for it with fd 5, the status
 *   pipe; with noinit, PID 1 itself does the rest), turns
 *   fd 4 into a copy of fd 3 (EOF: parked), and waits on fd 3, a
 *   SOCK_SEQPACKET socket, for one message: the decimal count of the argv
 *   strings that follow, those strings (the options and program above,
 *   without root=, tree=, seed= and procs=, and with the flags= of Park),
 *   then the environment, all NUL-terminated;
 *   and, as SCM_RIGHTS, stdin, stdout, stderr, the error pipe and the
 *   network namespace (with netns). It then goes on as if started with
 *   those arguments. EOF instead of a message (the Go side went away)
 *   just exits.
 *
 * Seed: sockfaas-init flags=N seed, with flags CLONE_NEWNS
 *   makes the mount namespace tree=N seed=N starts from: an empty tmpfs
 *   with one directory, SEED_DIR, mounted read-only as the namespace's
 *   root (over the kernel's hidden rootfs). EOF on fd 4 says it is ready; the Go side then opens
 *   /proc/PID/ns/mnt, which keeps the namespace alive, and closes fd 3,
 *   on which we wait, to let us exit.
 */
#include <asm/signal.h>
#include <asm/unistd.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/errno.h>
#include <linux/fcntl.h>
#include <linux/mount.h>
#include <linux/prctl.h>
#include <linux/sched.h>
#include <linux/sockios.h>
#include <linux/wait.h>

/* Kernel ABI values whose only header is libc's. */
#define MNT_DETACH 2
#define AT_FDCWD_ (-100)
#define AF_INET 2
#define SOCK_DGRAM 2
#define IFF_UP 0x1

enum { FD_GO = 3, FD_ERR = 4, FD_STATUS = 5, FD_NETNS = 6, FD_PROCS = 7 };
enum { MAX_PROCS = 16 }; /* cgroup v1 hierarchies we may be asked to join */
enum { PATH_BUF = 4096 };
/* Where a tree=N root is attached in the copy of the seed namespace. */
#define SEED_DIR "/r"
/* A parked helper's start message: its limits, which the Go side checks. */
enum { MSG_BUF = 65536, MSG_STRINGS = 1024, MSG_FDS = 6 + MAX_PROCS };
/* Where received descriptors wait before they move to their numbers. */
enum { FD_HIGH = 64 };

/* The kernel's msghdr, iovec and cmsghdr, whose only header is libc's. */
struct iovec_ {
	void *base;
	unsigned long len;
};
struct msghdr_ {
	void *name;
	int namelen;
	struct iovec_ *iov;
	unsigned long iovlen;
	void *control;
	unsigned long controllen;
	int flags;
};
struct cmsghdr_ {
	unsigned long len;
	int level;
	int type;
};
#define SOL_SOCKET_ 1
#define SCM_RIGHTS_ 1
#define MSG_CMSG_CLOEXEC_ 0x40000000

#define STR_(x) #x
#define STR(x) STR_(x)

struct config;

#if defined(__x86_64__)

static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

/*
 * spawn_vfork(flags, stack, fn, arg) is clone(2) whose child calls fn(arg)
 * on stack. fn and arg ride in r9 and r8, which the system call preserves
 * (r8 is clone's tls argument, unused without CLONE_SETTLS).
 */
long spawn_vfork(unsigned long flags, void *stack, void (*fn)(const struct config *),
		 const struct config *arg);
__asm__(".text\n"
	".type spawn_vfork,@function\n"
	"spawn_vfork:\n"
	"	mov %rdx, %r9\n"
	"	mov %rcx, %r8\n"
	"	xor %edx, %edx\n"
	"	xor %r10d, %r10d\n"
	"	mov $" STR(__NR_clone) ", %eax\n"
	"	syscall\n"
	"	test %rax, %rax\n"
	"	jz 1f\n"
	"	ret\n"
	"1:	xor %ebp, %ebp\n"
	"	mov %r8, %rdi\n"
	"	call *%r9\n"
	"	hlt\n");
#define HAVE_SPAWN_VFORK 1

/* The kernel leaves argc at (%rsp), argv and envp above it. */
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call start\n"
	"	hlt\n");

#elif defined(__aarch64__)

static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;

	__asm__ volatile("svc 0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			 : "memory");
	return x0;
}

__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	mov x29, #0\n"
	"	mov x30, #0\n"
	"	mov x0, sp\n"
	"	bl start\n"
	"	brk #0\n");

#else
#error "sockfaas-init: add the system call and _start glue for this architecture"
#endif

/* Unused arguments are passed as 0, which every call here accepts. */
#define sys1(n, a) sys6(n, (long)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b) sys6(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c) sys6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) sys6(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define sys5(n, a, b, c, d, e) \
	sys6(n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

struct config {
	const char *root; /* 0: stay in the current root */
	long tree, seed;  /* tree=N seed=N: fds, or -1 */
	const char *host; /* 0: leave the hostname alone */
	const char *dir;
	unsigned long uid, gid, flags;
	int netns; /* join the network namespace open at FD_NETNS */
	int priv;  /* keep uid, gid and capabilities: a trusted zygote */
	int nogo;  /* no go pipe: start at once */
	int park;  /* enter the root, then wait for the rest on FD_GO */
	int noinit; /* with CLONE_NEWPID: the program is PID 1, no init */
	int mkseed; /* make the seed mount namespace (see Seed above) */
	unsigned long procs; /* cgroup.procs files at FD_PROCS... */
	char **argv; /* the program's */
	char **envp;
};

void start(long *sp) __attribute__((noreturn, used));

enum { SPAWN_STACK = 16384 };

/*
 * spawn runs fn(arg) in a child process, which must end by exec or exit.
 * Where this file has the glue, the child shares our memory until then
 * (CLONE_VM | CLONE_VFORK) on a stack of its own, stack_top down: no page
 * tables to copy, no copy-on-write faults, and we sleep until it has
 * exec'd or died, so nothing of ours changes under it.
 */
static long spawn(void (*fn)(const struct config *), const struct config *arg, char *stack_top)
{
#ifdef HAVE_SPAWN_VFORK
	return spawn_vfork(CLONE_VM | CLONE_VFORK | SIGCHLD, stack_top, fn, arg);
#else
	long pid = sys5(__NR_clone, SIGCHLD, 0, 0, 0, 0);

	(void)stack_top;
	if (pid == 0)
		fn(arg);
	return pid;
#endif
}

static __attribute__((noreturn)) void exit_now(int code)
{
	for (;;)
		sys1(__NR_exit_group, code);
}

static unsigned long length(const char *s)
{
	unsigned long n = 0;

	while (s[n])
		n++;
	return n;
}

/* The rest of s after prefix, or 0 if s does not start with prefix. */
static const char *after(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return s;
}

/* Appends s to buf[*n], keeping room for a final NUL; 0 if it does not fit. */
static int append(char *buf, unsigned long size, unsigned long *n, const char *s)
{
	while (*s) {
		if (*n + 1 >= size)
			return 0;
		buf[(*n)++] = *s++;
	}
	buf[*n] = 0;
	return 1;
}

/*
 * Reports "<step>: <errno>" on the error pipe and exits. ret is what the
 * failed system call returned (-errno).
 */
static __attribute__((noreturn)) void fail(const char *step, long ret)
{
	char msg[128], digits[24];
	unsigned long n = 0, d = 0, e = (unsigned long)-ret;

	do
		digits[d++] = (char)('0' + e % 10);
	while ((e /= 10) && d < sizeof digits);
	append(msg, sizeof msg - sizeof digits, &n, step);
	append(msg, sizeof msg, &n, ": ");
	while (d)
		msg[n++] = digits[--d];
	sys3(__NR_write, FD_ERR, msg, n);
	exit_now(127);
}

static long check(long ret, const char *step)
{
	if (ret < 0)
		fail(step, ret);
	return ret;
}

static int number(const char *s, unsigned long *v)
{
	unsigned long n = 0;

	if (!*s)
		return 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || n > (~0UL - 9) / 10)
			return 0;
		n = n * 10 + (unsigned long)(*s - '0');
	}
	*v = n;
	return 1;
}

static void parse(struct config *c, char **argv, char **envp)
{
	const char *v;

	unsigned long fd;

	*c = (struct config){ .dir = "/", .envp = envp, .tree = -1, .seed = -1 };
	for (argv++; *argv; argv++) {
		const char *a = *argv;

		if (a[0] == '-' && a[1] == '-' && !a[2]) {
			c->argv = argv + 1;
			break;
		} else if ((v = after(a, "root=")))
			c->root = v;
		else if ((v = after(a, "tree=")) && c->tree < 0 && number(v, &fd) && fd < FD_HIGH)
			c->tree = (long)fd;
		else if ((v = after(a, "seed=")) && c->seed < 0 && number(v, &fd) && fd < FD_HIGH)
			c->seed = (long)fd;
		else if ((v = after(a, "host=")))
			c->host = v;
		else if ((v = after(a, "dir=")))
			c->dir = v;
		else if ((v = after(a, "uid=")) && number(v, &c->uid))
			;
		else if ((v = after(a, "gid=")) && number(v, &c->gid))
			;
		else if ((v = after(a, "flags=")) && number(v, &c->flags))
			;
		else if (after(a, "netns") && !a[5])
			c->netns = 1;
		else if (after(a, "priv") && !a[4])
			c->priv = 1;
		else if (after(a, "nogo") && !a[4])
			c->nogo = 1;
		else if (after(a, "park") && !a[4])
			c->park = 1;
		else if (after(a, "noinit") && !a[6])
			c->noinit = 1;
		else if (after(a, "seed") && !a[4])
			c->mkseed = 1;
		else if ((v = after(a, "procs=")) && number(v, &c->procs) && c->procs <= MAX_PROCS)
			;
		else
			fail("arguments", -EINVAL);
	}
	/*
	 * A tree comes with the seed namespace it is attached in, instead of
	 * a root path and CLONE_NEWNS, at descriptors after every other one.
	 */
	fd = (c->netns || c->procs) ? FD_PROCS + c->procs : FD_NETNS;
	if ((c->tree < 0) != (c->seed < 0) || (c->tree >= 0 && c->tree == c->seed) ||
	    (c->tree >= 0 && (c->tree < (long)fd || c->seed < (long)fd || c->root ||
			      (c->flags & CLONE_NEWNS))))
		fail("arguments", -EINVAL);
	if (c->mkseed) {
		/* flags=CLONE_NEWNS and nothing else. */
		if (c->flags != CLONE_NEWNS || c->root || c->tree >= 0 || c->park || c->argv ||
		    c->host || c->netns || c->priv || c->procs || c->nogo || c->noinit || c->uid ||
		    c->gid || c->dir[0] != '/' || c->dir[1])
			fail("arguments", -EINVAL);
		return;
	}
	if (c->park) {
		/* Everything but the root and the namespaces comes later. */
		if ((!c->root && c->tree < 0) || c->argv || c->netns || c->host)
			fail("arguments", -EINVAL);
		c->nogo = 1;
	} else if (!c->argv || !c->argv[0])
		fail("arguments", -EINVAL);
	/* A network namespace is either made (CLONE_NEWNET) or joined. */
	if (c->netns && (c->flags & CLONE_NEWNET))
		fail("arguments", -EINVAL);
	/* pivot_root and a proc mount in the host's mount namespace: never. */
	if (c->root && !(c->flags & CLONE_NEWNS))
		fail("arguments", -EINVAL);
}

/*
 * Joins our cgroups by writing "0" to each cgroup.procs file we were given:
 * no round trip to the Go side, and nothing else runs before.
 */
static void join_cgroups(unsigned long n)
{
	unsigned long i;

	for (i = 0; i < n; i++) {
		check(sys3(__NR_write, FD_PROCS + i, "0", 1), "join cgroup");
		sys1(__NR_close, FD_PROCS + i);
	}
}

/* Blocks until the Go side says go; EOF means it gave up on us. */
static void wait_for_go(void)
{
	char b;
	long n;

	do
		n = sys3(__NR_read, FD_GO, &b, 1);
	while (n == -EINTR);
	if (n != 1)
		exit_now(127);
	sys1(__NR_close, FD_GO);
}

/* A new network namespace has only lo, and it is down. */
static void loopback_up(void)
{
	struct {
		char name[16];
		short flags;
		char pad[22];
	} ifr = { .name = "lo" };
	long fd = check(sys3(__NR_socket, AF_INET, SOCK_DGRAM, 0), "loopback up");

	check(sys3(__NR_ioctl, fd, SIOCGIFFLAGS, &ifr), "loopback up");
	ifr.flags |= IFF_UP;
	check(sys3(__NR_ioctl, fd, SIOCSIFFLAGS, &ifr), "loopback up");
	sys1(__NR_close, fd);
}

/*
 * A sandbox process running as uid 0 holds no capability, but the kernel's
 * permission check for root-owned 0644/0200 files in /proc is the owner's
 * bit, not a capability: /proc/sys (host-wide sysctls) and
 * /proc/sysrq-trigger would be writable. For uid 0 those are bound
 * read-only over themselves. Other uids cannot write them, so they skip
 * the cost (two mounts per path).
 */
static const char *const proc_readonly[] = { "sys", "sysrq-trigger", "irq", "bus", "fs", 0 };

static void harden_proc(char *proc, unsigned long n)
{
	const char *const *p;
	unsigned long m;
	long ret;

	for (p = proc_readonly; *p; p++) {
		m = n;
		if (!append(proc, PATH_BUF, &m, "/") || !append(proc, PATH_BUF, &m, *p))
			fail("protect /proc", -ENAMETOOLONG);
		ret = sys5(__NR_mount, proc, proc, 0, MS_BIND | MS_REC, 0);
		if (ret == -ENOENT)
			continue; /* not on this kernel */
		check(ret, "protect /proc");
		check(sys5(__NR_mount, proc, proc, 0,
			   MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, 0),
		      "protect /proc");
	}
	proc[n] = 0;
}

static void enter_root(const char *root, int as_root, int own_pids);
static void attach_tree(struct config *c);
static void limit_exec(void);
static void join_cgroups(unsigned long n);
static __attribute__((noreturn)) void init_loop(long child);
static __attribute__((noreturn)) void program_main(const struct config *c);

/*
 * Receives a parked helper's start message into buf and strs and moves the
 * descriptors that came with it to their numbers. Returns the number of
 * argv strings; strs[0..n) are those, strs[n] is 0, and the environment
 * follows, 0-terminated.
 */
static unsigned long receive_start(char *buf, char **strs, const struct config *parked,
				   struct config *c)
{
	union {
		struct cmsghdr_ h;
		char b[sizeof(struct cmsghdr_) + MSG_FDS * sizeof(int) + 8];
	} ctl;
	struct iovec_ iov = { buf, MSG_BUF - 1 };
	struct msghdr_ msg = { .iov = &iov, .iovlen = 1, .control = &ctl,
			       .controllen = sizeof ctl };
	unsigned long n, argc, i, nstr = 0, nfd, want;
	int *fds;
	long ret, hi[MSG_FDS];
	const char *p, *end;

	do
		ret = sys3(__NR_recvmsg, FD_GO, &msg, MSG_CMSG_CLOEXEC_);
	while (ret == -EINTR);
	if (ret <= 0)
		exit_now(ret == 0 ? 0 : 127); /* the Go side gave up on us */
	n = (unsigned long)ret;

	/*
	 * The descriptors first, out of the way of the numbers they go to
	 * (recvmsg put them on the lowest free ones), and the error pipe in
	 * place at once: from here on a failure reaches the Go side.
	 */
	nfd = 0;
	if (msg.controllen >= sizeof(struct cmsghdr_) && ctl.h.level == SOL_SOCKET_ &&
	    ctl.h.type == SCM_RIGHTS_)
		nfd = (ctl.h.len - sizeof(struct cmsghdr_)) / sizeof(int);
	fds = (int *)(ctl.b + sizeof(struct cmsghdr_));
	if (nfd > MSG_FDS) {
		for (i = 0; i < nfd; i++)
			sys1(__NR_close, fds[i]);
		exit_now(127);
	}
	for (i = 0; i < nfd; i++) {
		hi[i] = sys3(__NR_fcntl, fds[i], F_DUPFD_CLOEXEC, FD_HIGH);
		sys1(__NR_close, fds[i]);
		if (hi[i] < 0)
			exit_now(127);
	}
	if (nfd < 4 || msg.flags & 0x8 /* MSG_CTRUNC */)
		exit_now(127); /* no error pipe to report on */
	if (sys3(__NR_dup3, hi[3], FD_ERR, O_CLOEXEC) < 0)
		exit_now(127);
	sys1(__NR_close, FD_GO);
	if (msg.flags & 0x20 /* MSG_TRUNC */)
		fail("receive start", -EMSGSIZE);
	buf[n] = 0;

	/* The strings: every one NUL-terminated. */
	for (p = buf, end = buf + n; p < end && nstr < MSG_STRINGS - 2; p += length(p) + 1)
		strs[nstr++] = (char *)p;
	if (p != end || nstr == 0 || !number(strs[0], &argc) || argc >= nstr)
		fail("receive start", -EINVAL);
	/* strs[0] is the count: shift argv down one, leaving a 0 between it
	 * and the environment. */
	for (i = 0; i < argc; i++)
		strs[i] = strs[i + 1];
	strs[argc] = 0;
	strs[nstr] = 0;

	/* argv[0] is the program name parse skips; root and flags stay ours. */
	strs[MSG_STRINGS - 1] = 0;
	{
		char *argv[MSG_STRINGS + 1];

		argv[0] = "sockfaas-init";
		for (i = 0; i <= argc; i++)
			argv[i + 1] = strs[i];
		parse(c, argv, strs + argc + 1);
		/* parse keeps pointers into argv for the program's arguments:
		 * point them at strs, which outlives this block. */
		if (c->argv)
			c->argv = strs + (c->argv - (argv + 1));
	}
	/* Parked without the bounding set: never privileged; cgroups were
	 * joined at Park. */
	if (c->root || c->tree >= 0 || c->park || c->mkseed || c->priv || c->procs || !c->nogo ||
	    c->flags != parked->flags || c->noinit != parked->noinit)
		fail("receive start", -EINVAL);
	c->park = 1;

	want = 4 + (c->netns ? 1 : 0);
	if (nfd != want)
		fail("receive start", -EBADF);
	for (i = 0; i < nfd; i++) {
		if (i == 3)
			continue; /* the error pipe, in place already */
		check(sys3(__NR_dup3, hi[i], i < 3 ? (long)i : FD_NETNS, 0), "receive start");
		sys1(__NR_close, hi[i]);
	}
	sys1(__NR_close, hi[3]);
	return argc;
}

/*
 * A parked helper: the mount namespace made private and the root entered
 * now, the rest once the start message arrives (see receive_start).
 */
static void park(struct config *c, char *buf, char **strs)
{
	struct config parked = *c;

	join_cgroups(c->procs);
	if (c->tree >= 0)
		attach_tree(c);
	else
		check(sys5(__NR_mount, "", "/", 0, MS_REC | MS_PRIVATE, 0), "make mounts private");
	/* uid 0's /proc protection comes at start, when the uid is known. */
	enter_root(c->root, 0, c->flags & CLONE_NEWPID);
	limit_exec();
	if ((c->flags & CLONE_NEWPID) && !c->noinit) {
		/*
		 * PID 2, the program to be, is forked now too: Start wakes it
		 * and it execs, with no fork in between. PID 1 keeps only the
		 * status pipe (from Park); the socket and the error pipe are
		 * PID 2's.
		 */
		unsigned long all = ~0UL;
		long child;

		check(sys4(__NR_rt_sigprocmask, SIG_SETMASK, &all, 0, sizeof all), "block signals");
		child = check(sys5(__NR_clone, SIGCHLD, 0, 0, 0, 0), "fork");
		if (child > 0) {
			sys1(__NR_close, FD_GO);
			sys1(__NR_close, FD_ERR);
			sys1(__NR_close, 0);
			sys1(__NR_close, 1);
			sys1(__NR_close, 2);
			init_loop(child);
		}
		sys1(__NR_close, FD_STATUS);
	}
	/*
	 * EOF on the error pipe: parked. The socket takes its number, so that
	 * nothing recvmsg receives lands there before the new error pipe.
	 */
	check(sys3(__NR_dup3, FD_GO, FD_ERR, O_CLOEXEC), "park");
	receive_start(buf, strs, &parked, c);
	if (c->uid == 0) {
		char proc[PATH_BUF] = "/proc";

		harden_proc(proc, 5);
	}
}

/*
 * tree=N seed=N: our own copy of the seed namespace, with the tree attached
 * at SEED_DIR, which becomes c->root for enter_root. Nothing before the
 * setns may touch a mount: until then we are in the host's namespace.
 */
static void attach_tree(struct config *c)
{
	check(sys2(__NR_setns, c->seed, CLONE_NEWNS), "join seed mount namespace");
	sys1(__NR_close, c->seed);
	check(sys1(__NR_unshare, CLONE_NEWNS), "unshare mount namespace");
	/* The seed's mounts are private already; this makes sure. */
	check(sys5(__NR_mount, "", "/", 0, MS_REC | MS_PRIVATE, 0), "make mounts private");
	check(sys5(__NR_move_mount, c->tree, "", AT_FDCWD_, SEED_DIR, MOVE_MOUNT_F_EMPTY_PATH),
	      "attach root");
	sys1(__NR_close, c->tree);
	/* A clone of a shared mount is in its peer group: out of it, so that
	 * no mount made below reaches another namespace. */
	check(sys5(__NR_mount, "", "/", 0, MS_REC | MS_PRIVATE, 0), "make mounts private");
	c->root = SEED_DIR;
	c->tree = c->seed = -1;
}

/*
 * The seed mount namespace (see Seed above). We were cloned into a copy of
 * the host's, which we make private; then we pivot into a small read-only
 * tmpfs stacked on /proc (a directory every system we run on has) and
 * drop the rest.
 */
static __attribute__((noreturn)) void make_seed(void)
{
	char b;

	check(sys5(__NR_mount, "", "/", 0, MS_REC | MS_PRIVATE, 0), "make mounts private");
	check(sys5(__NR_mount, "tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		   "size=4k,nr_inodes=4,mode=0755"),
	      "mount seed tmpfs");
	check(sys3(__NR_mkdirat, AT_FDCWD_, "/proc" SEED_DIR, 0755), "mkdir seed dir");
	check(sys5(__NR_mount, 0, "/proc", 0,
		   MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, 0),
	      "make seed read-only");
	check(sys1(__NR_chdir, "/proc"), "chdir to seed");
	check(sys2(__NR_pivot_root, ".", "."), "pivot_root");
	check(sys2(__NR_umount2, ".", MNT_DETACH), "unmount old root");
	check(sys1(__NR_chdir, "/"), "chdir to root");
	sys1(__NR_close, FD_ERR); /* ready */
	while (sys3(__NR_read, FD_GO, &b, 1) == -EINTR)
		;
	exit_now(0);
}

static void enter_root(const char *root, int as_root, int own_pids)
{
	char proc[PATH_BUF];
	unsigned long n = 0;

	/*
	 * /proc is mounted here, by PID 1 of the new PID namespace, so that it
	 * shows the sandbox's processes and not the host's.
	 */
	if (!append(proc, sizeof proc, &n, root) ||
	    !append(proc, sizeof proc, &n, "/proc"))
		fail("mount proc", -ENAMETOOLONG);
	/*
	 * Without a PID namespace of its own, /proc would list every process
	 * of the host's: hidepid=invisible (Linux 5.8+) shows only the
	 * program's own uid's.
	 */
	check(sys5(__NR_mount, "proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		   own_pids ? 0 : "hidepid=invisible"),
	      "mount proc");
	if (as_root)
		harden_proc(proc, n);
	/*
	 * pivot_root(".", ".") stacks the old root on top of the new one, where
	 * a lazy unmount of "." removes it: no directory for the old root is
	 * needed, and nothing of the host stays reachable.
	 */
	check(sys1(__NR_chdir, root), "chdir to root");
	check(sys2(__NR_pivot_root, ".", "."), "pivot_root");
	check(sys2(__NR_umount2, ".", MNT_DETACH), "unmount old root");
	check(sys1(__NR_chdir, "/"), "chdir to root");
}

/*
 * After this, not even uid 0 holds a capability, and nothing exec'd later
 * can gain one (no_new_privs, empty bounding set) — set-uid files included.
 */
/*
 * The half of drop_privileges that takes nothing away from us now, only
 * from what we exec: a parked helper does it before it parks.
 */
static void limit_exec(void)
{
	long cap, ret;

	check(sys5(__NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs");
	/* Capabilities past the kernel's last one answer EINVAL. */
	for (cap = 0; cap < 64; cap++) {
		ret = sys2(__NR_prctl, PR_CAPBSET_DROP, cap);
		if (ret == -EINVAL)
			break;
		check(ret, "drop bounding capabilities");
	}
}

static void drop_privileges(const struct config *c, int limited)
{
	struct __user_cap_header_struct head = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = { { 0 } };

	if (!limited)
		limit_exec();
	check(sys5(__NR_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
	      "clear ambient capabilities");
	check(sys2(__NR_setgroups, 0, 0), "setgroups");
	check(sys3(__NR_setresgid, c->gid, c->gid, c->gid), "setresgid");
	check(sys3(__NR_setresuid, c->uid, c->uid, c->uid), "setresuid");
	check(sys2(__NR_capset, &head, data), "capset");
}

static const char *find_env(char **envp, const char *name)
{
	const char *v;

	for (; *envp; envp++)
		if ((v = after(*envp, name)) && *v == '=')
			return v + 1;
	return 0;
}

/*
 * Runs the program, looking a name without '/' up in $PATH like execvp
 * (minus its /bin/sh fallback for ENOEXEC). Returns only by failing.
 */
static __attribute__((noreturn)) void exec_program(const struct config *c)
{
	const char *name = c->argv[0], *dir, *end, *path;
	char buf[PATH_BUF];
	long ret = -ENOENT;
	int denied = 0;

	for (end = name; *end && *end != '/'; end++)
		;
	if (*end)
		fail("exec", sys3(__NR_execve, name, c->argv, c->envp));
	path = find_env(c->envp, "PATH");
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (dir = path;; dir = end + 1) {
		unsigned long n = 0;

		for (end = dir; *end && *end != ':'; end++)
			;
		/* An empty entry means the working directory. */
		if ((unsigned long)(end - dir) + 1 + length(name) >= sizeof buf) {
			ret = -ENAMETOOLONG;
		} else {
			while (dir < end)
				buf[n++] = *dir++;
			if (n)
				buf[n++] = '/';
			append(buf, sizeof buf, &n, name);
			ret = sys3(__NR_execve, buf, c->argv, c->envp);
		}
		/* Not here (or not for us): try the next entry. Else give up. */
		if (ret == -EACCES)
			denied = 1;
		else if (ret != -ENOENT && ret != -ENOTDIR && ret != -ENAMETOOLONG &&
			 ret != -ESTALE && ret != -ENODEV && ret != -ETIMEDOUT)
			break;
		if (!*end)
			break;
	}
	fail("exec", denied ? -EACCES : ret);
}

/* The child of run_init: it unblocks signals and becomes the program. */
static __attribute__((noreturn)) void program_main(const struct config *c)
{
	unsigned long none = 0;

	sys4(__NR_rt_sigprocmask, SIG_SETMASK, &none, 0, sizeof none);
	exec_program(c);
}

/*
 * PID 1 of a new PID namespace: runs the program as its child, forwards
 * signals to it, reaps orphans, and exits with the program's status.
 *
 * The kernel drops signals for which a namespace init has the default
 * disposition, but a blocked signal is never dropped: with every signal
 * blocked, sigtimedwait sees each one sent to us, from the host too.
 */
static __attribute__((noreturn)) void run_init(const struct config *c)
{
	unsigned long all = ~0UL;
	long child;
	/* The program's stack until it execs (see spawn). */
	char stack[SPAWN_STACK] __attribute__((aligned(16)));

	/* Blocked before the fork: no signal can slip in between. */
	check(sys4(__NR_rt_sigprocmask, SIG_SETMASK, &all, 0, sizeof all), "block signals");
	child = check(spawn(program_main, c, stack + sizeof stack), "fork");
	/*
	 * Our copy of the error pipe goes, so the Go side reads EOF exactly
	 * when the child's close-on-exec copy goes. The program's stdio is not
	 * ours to hold open either.
	 */
	sys1(__NR_close, FD_ERR);
	sys1(__NR_close, 0);
	sys1(__NR_close, 1);
	sys1(__NR_close, 2);
	init_loop(child);
}

/*
 * The rest of PID 1's life, with every signal blocked: forward signals to
 * child, reap orphans, report child's status on FD_STATUS and exit with it.
 */
static __attribute__((noreturn)) void init_loop(long child)
{
	unsigned long all = ~0UL;
	long pid, sig;
	int status;

	for (;;) {
		sig = sys4(__NR_rt_sigtimedwait, &all, 0, 0, sizeof all);
		if (sig != SIGCHLD) {
			if (sig > 0)
				sys2(__NR_kill, child, sig);
			continue;
		}
		while ((pid = sys4(__NR_wait4, -1, &status, WNOHANG, 0)) > 0) {
			if (pid != child)
				continue; /* an orphan we inherited */
			sys3(__NR_write, FD_STATUS, &status, sizeof status);
			/* Exiting kills whatever else still runs in the namespace. */
			if ((status & 0x7f) == 0)
				exit_now((status >> 8) & 0xff);
			exit_now(128 + (status & 0x7f));
		}
	}
}

/*
 * Whatever descriptors the caller inherited from its own parent (a shell's
 * redirections, a supervisor's sockets) must not reach the program: one
 * open directory is a way out of the root. Go marks only the descriptors
 * it opened itself close-on-exec. Everything from 3 up becomes
 * close-on-exec here (PID 1 keeps its pipes: it never execs).
 */
static void close_inherited(void)
{
	long fd;

	if (sys3(__NR_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
		return;
	/* Before Linux 5.11: the slow way, up to a generous limit. */
	for (fd = 3; fd < 65536; fd++)
		sys3(__NR_fcntl, fd, F_SETFD, FD_CLOEXEC);
}

void start(long *sp)
{
	char **argv = (char **)(sp + 1);
	char **envp = argv + sp[0] + 1;
	struct config c;

	sys5(__NR_prctl, PR_SET_NAME, "sockfaas-init", 0, 0, 0);
	/* Neither pipe may reach the program. */
	sys3(__NR_fcntl, FD_ERR, F_SETFD, FD_CLOEXEC);
	sys3(__NR_fcntl, FD_STATUS, F_SETFD, FD_CLOEXEC);
	parse(&c, argv, envp);
	if (c.mkseed)
		make_seed();
	if (c.park) {
		/* Static: the program's argv and environment live here, and
		 * the stack has better uses for 64 KiB. Only this one
		 * process touches them before it execs. */
		static char buf[MSG_BUF];
		static char *strs[MSG_STRINGS];

		park(&c, buf, strs);
	} else if (c.flags & CLONE_NEWNS) {
		/* so that no mount below reaches the host */
		check(sys5(__NR_mount, "", "/", 0, MS_REC | MS_PRIVATE, 0), "make mounts private");
	}
	join_cgroups(c.procs);
	if (!c.nogo)
		wait_for_go();

	if (c.host && (c.flags & CLONE_NEWUTS))
		check(sys2(__NR_sethostname, c.host, length(c.host)), "sethostname");
	if (c.flags & CLONE_NEWNET)
		loopback_up();
	if (c.netns) {
		/* A pre-built namespace (see package netns): joining costs a
		 * setns, where creating one serializes on a kernel lock. */
		check(sys2(__NR_setns, FD_NETNS, CLONE_NEWNET), "join network namespace");
		sys1(__NR_close, FD_NETNS);
	}
	if (c.tree >= 0)
		attach_tree(&c);
	if (c.root)
		enter_root(c.root, c.uid == 0, c.flags & CLONE_NEWPID);
	if (!c.priv) {
		drop_privileges(&c, c.park);
		/*
		 * Not dumpable: a uid-0 program could otherwise open PID 1's
		 * status pipe through /proc/1/fd and forge its exit status. The
		 * program itself becomes dumpable again at exec.
		 */
		check(sys5(__NR_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0), "set not dumpable");
	}
	check(sys1(__NR_chdir, c.dir), "chdir");
	close_inherited();

	if (c.park)
		program_main(&c); /* PID 2 already, PID 1 (noinit), or no PID namespace */
	if ((c.flags & CLONE_NEWPID) && !c.noinit)
		run_init(&c);
	exec_program(&c);
}
