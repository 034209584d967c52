// SPDX-License-Identifier: MIT
/*
 * nvbridged: closing files that clients sent, outside the broker's process.
 *
 * close() runs the file's ->flush, and a FUSE file's flush (FLUSH is a
 * forced request) waits uninterruptibly for its server, which a client can
 * control.  Whoever runs that close sleeps until the server answers or its
 * connection ends: on the loop thread it stops the broker for everyone;
 * in a thread of the broker, an io-wq worker included, it keeps the
 * broker's process from being reaped after SIGTERM or SIGKILL (attack
 * fuse_flush), so systemd cannot restart it.
 *
 * So every client-supplied fd is closed by a closer: a child process that
 * shares the broker's fd table and memory (clone(CLONE_VM | CLONE_FILES),
 * not a thread) and does nothing but read an fd number from its pipe,
 * close() it and report.  A hung FLUSH holds a closer, never the loop,
 * and the broker's own process exits at once: the closers die with it
 * (PR_SET_PDEATHSIG), a hung one when its FLUSH returns, holding the fd
 * table's leftovers and the broker's memory until then.
 * This needs no io_uring, which seccomp profiles and
 * kernel.io_uring_disabled often refuse.
 *
 * Closes queue per tenant (conn.c: a uid and the user namespaces it owns)
 * and are handed out round-robin; a tenant has at most
 * CLOSING_PER_TENANT closes running, so one tenant's hung FLUSHes hold
 * at most that many of the CLOSERS_MAX closers and other tenants' files
 * are closed meanwhile.  A tenant's second close only starts while more
 * than CLOSERS_RESERVE closers are free: the last ones go to tenants
 * with no close running, so that 16 tenants (distinct uids) hanging two
 * FLUSHes each no longer hold all 32 and everyone else's closes waiting
 * for ever (attack closer_reserve); it now takes 32 such tenants.  Closers start on demand and end after
 * CLOSER_IDLE_NS idle.  Every close is charged to the uid and the tenant
 * that sent the file until it completes: one at
 * --max-pending-closes-per-user / -per-tenant, or with any pending while
 * the total is at --max-pending-closes, is not read from and not accepted
 * (conn.c) until they complete, which bounds the fds waiting here.
 *
 * No client file that may block is ever closed on the loop.  When no
 * closer can start (clone() refused: pids exhausted by a fork bomb, a
 * pids limit, a seccomp profile), the closes stay queued, still charged
 * to their uid and tenant (so a tenant at its bound is paused and refused
 * as above, however long that lasts), and a closer is tried again every
 * CLOSER_RETRY_NS (attack closer_clone).  Queueing a close allocates
 * nothing (struct close_req), so it cannot fail for memory either.
 *
 * Files the broker opened itself (sockets, pidfds, /proc) are closed with
 * close(): none has a ->flush that a client controls.
 */
#include "nvbridged.h"
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define CLOSERS_MAX 32
#define CLOSING_PER_TENANT 2
#define CLOSERS_RESERVE (CLOSERS_MAX / 2)	/* for tenants with no close running */
#define CLOSER_IDLE_NS 1000000000LL
#define CLOSER_RETRY_NS 100000000LL	/* after a refused write, a closer that did not start */
#define CLOSE_TABLE_MAX (1U << 20)	/* fd numbers with a request: the kernel's default nr_open */
#define CLOSER_STACK 16384	/* it needs a few hundred bytes */

/*
 * A close waiting for a closer is reqs[fd]: one slot per fd number, made
 * at start (closer_reserve()), so queueing a close never allocates.  It
 * used to malloc() one, and closed the file on the loop when that failed:
 * a tenant that makes memory tight (strict overcommit: its own
 * allocations use up the commit limit) and sends a FUSE file whose FLUSH
 * hangs stopped the broker.  A reserve of a few requests would run dry;
 * the fd table cannot: every waiting close holds its fd number open, and
 * the kernel gives no number at or above RLIMIT_NOFILE, which
 * closer_reserve() makes the table's size.  Only the pages of numbers in
 * use are touched (MAP_NORESERVE).  A running close is copied into its
 * closer (struct closer.job): once the closer's close() frees the number,
 * the loop may receive another file under it before it reads the report.
 */
struct close_req {
	struct close_req *next;
	int fd;
	bool heap;		/* allocated: fd at or above the table (our limit raised since) */
	struct user *u, *t;	/* charged; t is never NULL (orphans) */
};
static struct close_req *reqs;
static unsigned int nreqs;

/*
 * The slots are kept on lists, so that the dispatch loop, which asks how
 * many could take a close at every step, and the tick at every pass of
 * the main loop look at no slot that has nothing to say: free slots on a
 * stack, idle closers on a list in the order they became idle (the
 * newest takes the next close, the oldest is the next to retire).  A
 * busy or retiring closer is on neither.
 */
static struct closer {
	pid_t pid;		/* 0: a free slot */
	int req_w, req_r;	/* fd numbers, one per message */
	bool retiring;		/* req_w is closed: it exits, waiting to be reaped */
	bool busy;		/* job: the close it runs */
	struct close_req job;
	int64_t idle_since;
	struct closer *inext, **ipprev;	/* on the idle list; ipprev NULL: not idle */
	struct closer *fnext;		/* on the free stack (pid 0) */
} closers[CLOSERS_MAX];

struct done_msg {
	int32_t slot;
	int32_t pid;
};

static int done_r = -1, done_w = -1;
static unsigned int nclosers, pending, nidle;
static struct closer *idle_head, **idle_tail = &idle_head;	/* oldest first */
static struct closer *free_slots;
static int64_t stalled_until;	/* a request could not be written: dispatch waits until then */
static int64_t spawn_after;	/* a closer could not start: none is tried before then */
static unsigned int spawn_fails;	/* in a row: said at the first, every 100th and the end */
static struct user *ready, **ready_tail = &ready;	/* tenants with closes that may start */
static struct user orphans = { .is_tenant = true };	/* no record could be had */
static int64_t last_warn;

/*
 * The request table, one slot per fd number below our RLIMIT_NOFILE (as
 * probe_host() raised it); above CLOSE_TABLE_MAX the limit is lowered to
 * it, the hard one too.  A number above the table exists only once someone
 * raised the limit from outside (prlimit(1), our uid or CAP_SYS_RESOURCE):
 * its close costs a malloc() (unit daemon_closer_fd_above_table).  Before
 * conn_limits_init(), which reads the limit.
 */
int closer_reserve(void)
{
	struct rlimit rl;
	void *m;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		rl.rlim_cur = rl.rlim_max = 1024;
	if (rl.rlim_max > CLOSE_TABLE_MAX) {
		rl.rlim_max = CLOSE_TABLE_MAX;
		if (rl.rlim_cur > rl.rlim_max)
			rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl))
			logmsg("closer: setrlimit(RLIMIT_NOFILE, %u): %s", CLOSE_TABLE_MAX,
			       strerror(errno));
	}
	nreqs = rl.rlim_cur < CLOSE_TABLE_MAX ? (unsigned int)rl.rlim_cur : CLOSE_TABLE_MAX;
	m = mmap(NULL, (size_t)nreqs * sizeof(*reqs), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED) {
		logmsg("closer: a table of %u close requests: %s", nreqs, strerror(errno));
		return -ENOMEM;
	}
	reqs = m;
	return 0;
}

int closer_init(void)
{
	int p[2];
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_CLOSER };

	if (pipe2(p, O_CLOEXEC)) {
		logmsg("closer: pipe: %s", strerror(errno));
		return -errno;
	}
	done_r = p[0];
	done_w = p[1];
	fcntl(done_r, F_SETFL, O_NONBLOCK);
	orphans.cq_tail = &orphans.cq;
	for (int i = CLOSERS_MAX - 1; i >= 0; i--) {
		closers[i].fnext = free_slots;
		free_slots = &closers[i];
	}
	return epoll_ctl(ep, EPOLL_CTL_ADD, done_r, &ev) ? -errno : 0;
}

unsigned int closer_pending(void)
{
	return pending;
}

/*
 * ---- the closer process: shares our memory and our fd table ----
 *
 * A closer made with clone(CLONE_FILES) alone was a copy-on-write fork:
 * each kept the pages of the heap as they were at its start, outside
 * --max-memory-mb, for as long as a hung FLUSH held it; 12 MiB of blobs
 * rewritten between 32 hangs pinned 430 MiB beside a 16 MiB bound (attack
 * closer_memory).  So it shares our memory too (CLONE_VM), still a
 * process of its own (no CLONE_THREAD: the broker's exit does not wait for
 * it).  It then runs beside the loop in the same memory, on the loop
 * thread's TLS: it touches nothing but its own stack and its own slot of
 * closer_args (written before the clone, left alone until it is reaped),
 * takes no lock, allocates nothing and makes its system calls itself, as
 * libc's wrappers would write errno (the loop's) and ASan's interceptors
 * would run.  It starts with every signal blocked, so no handler of ours
 * runs on its stack.  Elsewhere (no raw syscall below) it stays a copy.
 */
struct child_arg {
	int req_r, done_w, slot;
	pid_t parent;
};

#if defined(__x86_64__)
#define CLOSER_CLONE_VM CLONE_VM
__attribute__((always_inline, no_sanitize_address))
static inline long ksys(long n, long a, long b, long c)
{
	long r;

	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return r;
}
#elif defined(__aarch64__)
#define CLOSER_CLONE_VM CLONE_VM
__attribute__((always_inline, no_sanitize_address))
static inline long ksys(long n, long a, long b, long c)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;

	__asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory", "cc");
	return x0;
}
#else
#define CLOSER_CLONE_VM 0	/* a copy of our memory: libc's errno is its own */
#define ksys(n, a, b, c) syscall(n, a, b, c)
#endif

static struct child_arg closer_args[CLOSERS_MAX];
static char *closer_stacks[CLOSERS_MAX];	/* each CLOSER_STACK, above a guard page */

__attribute__((no_sanitize_address))
static int closer_main(void *p)
{
	struct child_arg a = *(struct child_arg *)p;
	struct done_msg d = { .slot = a.slot, .pid = (int32_t)ksys(SYS_getpid, 0, 0, 0) };

	ksys(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0);
	if (ksys(SYS_getppid, 0, 0, 0) != a.parent)
		return 0;
	for (;;) {
		int32_t fd;
		long n = ksys(SYS_read, a.req_r, (long)&fd, sizeof(fd));

		if (n == -EINTR)
			continue;
		if (n != sizeof(fd))
			return 0;	/* the broker closed our pipe: retired */
		ksys(SYS_close, fd, 0, 0);
		if (ksys(SYS_write, a.done_w, (long)&d, sizeof(d)) != sizeof(d))
			return 0;
	}
}

/* slot i's stack, mapped once and kept: its top, or NULL */
static char *closer_stack(int i)
{
	long pg = sysconf(_SC_PAGESIZE);
	char *m;

	if (closer_stacks[i])
		return closer_stacks[i] + CLOSER_STACK;
	m = mmap(NULL, (size_t)pg + CLOSER_STACK, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	if (mprotect(m, (size_t)pg, PROT_NONE)) {	/* an overflow faults, never writes our memory */
		munmap(m, (size_t)pg + CLOSER_STACK);
		return NULL;
	}
	closer_stacks[i] = m + pg;
	return closer_stacks[i] + CLOSER_STACK;
}

static void idle_add(struct closer *k)
{
	k->idle_since = now_ns();
	k->inext = NULL;
	k->ipprev = idle_tail;
	*idle_tail = k;
	idle_tail = &k->inext;
	nidle++;
}

static void idle_del(struct closer *k)
{
	*k->ipprev = k->inext;
	if (k->inext)
		k->inext->ipprev = k->ipprev;
	else
		idle_tail = k->ipprev;
	k->ipprev = NULL;
	nidle--;
}

/*
 * No closer could start: the closes wait (closer_tick() says why not on
 * the loop) and another is tried in CLOSER_RETRY_NS.  Said at the first
 * refusal and every 100th (10 s), not at each: a pids limit can last.
 */
static struct closer *spawn_failed(const char *what, int e)
{
	if (spawn_fails++ % 100 == 0)
		logmsg("closer: %s: %s: %u closes wait, a closer tried again every %lld ms "
		       "(%u tries refused)", what, strerror(e), pending, CLOSER_RETRY_NS / 1000000,
		       spawn_fails);
	spawn_after = now_ns() + CLOSER_RETRY_NS;
	return NULL;
}

/* a new closer, idle, in a free slot; NULL when none could start */
static struct closer *spawn(void)
{
	struct closer *k = free_slots;
	sigset_t all, old;
	char *stack;
	int p[2], i;

	if (!k)
		return NULL;	/* all CLOSERS_MAX running: no failure */
	if (spawn_after)
		return NULL;	/* backing off: closer_tick() clears it */
	if (!(stack = closer_stack((int)(k - closers))) || pipe2(p, O_CLOEXEC))
		return spawn_failed("no stack or pipe", errno);
	i = (int)(k - closers);
	closer_args[i] = (struct child_arg){ p[0], done_w, i, getpid() };
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);	/* the closer starts with all blocked */
	k->pid = clone(closer_main, stack, CLOSER_CLONE_VM | CLONE_FILES | SIGCHLD, &closer_args[i]);
	if (k->pid <= 0) {
		int e = errno;

		sigprocmask(SIG_SETMASK, &old, NULL);
		k->pid = 0;
		close(p[0]);
		close(p[1]);
		return spawn_failed("clone", e);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (spawn_fails)
		logmsg("closer: started after %u tries refused", spawn_fails);
	spawn_fails = 0;
	free_slots = k->fnext;
	k->fnext = NULL;
	fcntl(p[1], F_SETFL, O_NONBLOCK);
	k->req_r = p[0];
	k->req_w = p[1];
	k->retiring = false;
	k->busy = false;
	idle_add(k);
	nclosers++;
	return k;
}

/* the newest idle closer, or a new one; it stays on the idle list */
static struct closer *idle_closer(void)
{
	if (nidle)
		return container_of(idle_tail, struct closer, inext);
	return spawn();
}

/* closers that could take a close now: idle ones, and free slots */
static unsigned int closers_free(void)
{
	return nidle + (CLOSERS_MAX - nclosers);
}

static void ready_add(struct user *t)
{
	if (t->cq_ready || !t->cq || t->closing >= CLOSING_PER_TENANT)
		return;
	t->cq_ready = true;
	t->ready_next = NULL;
	*ready_tail = t;
	ready_tail = &t->ready_next;
}

/* k's close completed (or k is gone) */
static void complete(struct closer *k)
{
	struct close_req *r = &k->job;

	k->busy = false;
	pending--;
	r->t->closing--;
	r->t->closes--;
	ready_add(r->t);
	if (r->u) {
		r->u->closes--;
		user_put(r->u);
	}
	if (r->t != &orphans)
		user_put(r->t);
}

/*
 * Hands queued closes to idle closers, one tenant at a time; a tenant with
 * a close running waits, in its place, while CLOSERS_RESERVE or fewer are
 * free, and those behind it that have none running go first.
 */
static void dispatch(void)
{
	struct user **pp = &ready;

	if (stalled_until)
		return;	/* closer_tick() calls again when it is time */
	while (*pp) {
		struct user *t = *pp;
		struct close_req *r = t->cq;
		unsigned int nfree = closers_free();
		struct closer *k;
		int32_t fd;

		if (!nfree)
			return;
		if (t->closing && nfree <= CLOSERS_RESERVE) {
			pp = &t->ready_next;
			continue;
		}
		k = idle_closer();
		if (!k)
			return;
		*pp = t->ready_next;
		if (!*pp)
			ready_tail = pp;
		t->cq_ready = false;
		t->cq = r->next;
		if (!t->cq)
			t->cq_tail = &t->cq;
		t->closing++;
		fd = r->fd;
		if (write(k->req_w, &fd, sizeof(fd)) != sizeof(fd)) {
			/*
			 * An empty pipe that its reader holds open: only a pipe
			 * buffer that could not be had (ENOMEM) refuses.  The close
			 * goes back to the head of its queue and k stays idle, both
			 * tried again in CLOSER_RETRY_NS: closing it here could
			 * block the loop (a FUSE file's FLUSH), and retrying at once
			 * would spin on the same refusal.
			 */
			logmsg_rl("closer: write: %s: close of fd %d requeued", strerror(errno), fd);
			r->next = t->cq;
			t->cq = r;
			if (!r->next)
				t->cq_tail = &r->next;
			t->closing--;
			ready_add(t);
			stalled_until = now_ns() + CLOSER_RETRY_NS;
			return;
		}
		idle_del(k);
		k->busy = true;
		k->job = *r;	/* r's fd number is free once k has closed it */
		if (r->heap)
			free(r);
		else
			r->t = NULL;	/* the slot is free */
		ready_add(t);	/* at the tail: the scan reaches it again after the others */
	}
}

/*
 * The kernel names an anonymous inode's fd link from the inode itself
 * ("anon_inode:[pidfd]"); a file of a file system has a path, which starts
 * with '/', whatever its name.
 */
static bool fd_is_pidfd(int fd)
{
	static const char want[] = "anon_inode:[pidfd]";
	char path[64], link[sizeof(want) + 1];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link));
	return n == (ssize_t)sizeof(want) - 1 && !memcmp(link, want, sizeof(want) - 1);
}

/*
 * Closes fd off the loop, charged to u and t (the uid and tenant that sent
 * it; either may be NULL).  A file closed here at once is charged to
 * nobody, and u and t are put: entry_put() may have made their records
 * just for this call, which would otherwise stay, one per uid, for ever.
 */
static void close_now(int fd, struct user *u, struct user *t)
{
	close(fd);
	user_put(u);
	user_put(t);
}

void closer_close(int fd, struct user *u, struct user *t)
{
	if (fd < 0)
		return;
	/*
	 * Files whose close can neither block nor take long are closed here:
	 * small memory-backed files (fd_cheap_close()), and the pidfd a HELLO
	 * brings.  A closer's round trip would only slow every hang-up and
	 * revocation (a tenant's 200 clients connecting and leaving at once
	 * filled its pending-close bound, and its requests waited behind it).
	 * An entry's file is not asked its kind again here: it was kept at
	 * PUBLISH (registry.c entry_put()).
	 */
	if (fd_cheap_close(fd, false) || fd_is_pidfd(fd)) {
		close_now(fd, u, t);
		return;
	}
	closer_queue(fd, u, t);
}

void closer_queue(int fd, struct user *u, struct user *t)
{
	struct close_req *r = (unsigned int)fd < nreqs ? &reqs[fd] : calloc(1, sizeof(*r));

	if (!r) {
		/* not closed on the loop, where it may block: left open, counted nowhere */
		logmsg_rl("closer: fd %d, above the %u of the table, and no memory: left open",
			  fd, nreqs);
		user_put(u);
		user_put(t);
		return;
	}
	if (r->t) {
		/* queued and not yet running: the same open number twice is a bug of ours */
		logmsg("closer: fd %d queued twice: once kept", fd);
		user_put(u);
		user_put(t);
		return;
	}
	if (!t)
		t = &orphans;
	else if (!t->cq_tail)
		t->cq_tail = &t->cq;
	r->next = NULL;
	r->fd = fd;
	r->heap = (unsigned int)fd >= nreqs;
	r->u = u;
	r->t = t;
	*t->cq_tail = r;
	t->cq_tail = &r->next;
	if (u)
		u->closes++;	/* keeps u and t: user_put() frees none with closes pending */
	t->closes++;
	pending++;
	ready_add(t);
	dispatch();
}

/* done_r is readable: closes completed. */
void closer_completions(void)
{
	struct done_msg d[64];
	ssize_t n;
	bool any = false;

	while ((n = read(done_r, d, sizeof(d))) > 0) {
		for (size_t i = 0; i < (size_t)n / sizeof(d[0]); i++) {
			struct closer *k = d[i].slot >= 0 && d[i].slot < CLOSERS_MAX ?
					   &closers[d[i].slot] : NULL;

			/* a closer reaped (and its slot reused) before its message was read: stale */
			if (!k || k->pid != d[i].pid || !k->busy)
				continue;
			complete(k);
			idle_add(k);
			any = true;
		}
	}
	dispatch();
	if (any)
		conns_closes_resume();
}

/*
 * SIGCHLD: closers that ended (retired, or killed by someone else).  One
 * killed while busy may have died before its close() took the fd from the
 * table; that fd number is not closed here, as the loop may have reused
 * it.  Only the closers' own pids are waited for: waitpid(-1) would reap
 * any other child of this process (one it inherited across exec, one a
 * library started) from under whoever waits for it (unit
 * daemon_reaps_only_closers).  ECHILD: somebody did that to a closer.
 */
void closer_reap(void)
{
	bool any = false;

	for (int i = 0; i < CLOSERS_MAX; i++) {
		struct closer *k = &closers[i];
		pid_t r;

		if (!k->pid)
			continue;
		r = waitpid(k->pid, NULL, WNOHANG);
		if (r == 0 || (r < 0 && errno != ECHILD))
			continue;
		if (k->busy) {
			complete(k);
			any = true;
		}
		if (k->ipprev)
			idle_del(k);
		if (!k->retiring)
			close(k->req_w);
		close(k->req_r);	/* only now: see closer_tick() */
		memset(k, 0, sizeof(*k));
		k->fnext = free_slots;
		free_slots = k;
		nclosers--;
	}
	dispatch();
	if (any)
		conns_closes_resume();
}

/*
 * Retires closers idle for CLOSER_IDLE_NS, oldest first, and retries a
 * stalled dispatch and a closer that could not start; *next: when to look
 * again.
 */
void closer_tick(int64_t now, int64_t *next)
{
	while (idle_head && now - idle_head->idle_since >= CLOSER_IDLE_NS) {
		struct closer *k = idle_head;

		/*
		 * No writer left: its read() returns 0 and it exits.  req_r
		 * stays open until it is reaped: it reads that number from
		 * our shared table, maybe only after this (just reported, not
		 * yet back in read(), stopped), and a freed number could be
		 * a new client's socket by then, whose bytes it would take
		 * for an fd number to close (unit daemon_closer_pipe_kept).
		 */
		idle_del(k);
		close(k->req_w);
		k->retiring = true;
	}
	if (idle_head && (*next < 0 || idle_head->idle_since + CLOSER_IDLE_NS < *next))
		*next = idle_head->idle_since + CLOSER_IDLE_NS;
	if (stalled_until && now >= stalled_until) {
		stalled_until = 0;
		dispatch();
	}
	if (stalled_until && (*next < 0 || stalled_until < *next))
		*next = stalled_until;
	/*
	 * A closer could not start (clone() refused: pids exhausted, a
	 * seccomp profile; no pipe or stack): its closes wait, parked with
	 * the tenants that sent them (counted against their bounds, conn.c),
	 * and a closer is tried again every CLOSER_RETRY_NS.  They were
	 * closed on the loop when not one closer could start: a FUSE file
	 * whose FLUSH hangs then stopped the broker (attack closer_clone).
	 * Cleared first: a dispatch that needs no closer leaves it 0.
	 */
	if (spawn_after && now >= spawn_after) {
		spawn_after = 0;
		dispatch();
	}
	if (spawn_after && (*next < 0 || spawn_after < *next))
		*next = spawn_after;
	if (pending > CLOSERS_MAX && now - last_warn > 10000000000LL) {
		logmsg("%u closes of client files pending (a file system not answering FLUSH?)",
		       pending);
		last_warn = now;
	}
}

/*
 * At exit: the closes still waiting are left to the closers, which share
 * our fd table, so our exit only drops our hold on it (each closer's exit,
 * at PR_SET_PDEATHSIG, closes what is left, a hung FLUSH holding that
 * closer).  With none that stays (clone() refused until now, only retiring
 * ones), our own exit would close them and could wait in a FLUSH, never
 * reaped (attack fuse_flush): one more closer is tried.
 */
void closer_exit(void)
{
	for (int i = 0; i < CLOSERS_MAX; i++)
		if (closers[i].pid && !closers[i].retiring)
			return;
	spawn_after = 0;
	if (pending && !spawn())
		logmsg("%u closes pending and no closer could start: this exit closes their files "
		       "and waits for any FLUSH among them", pending);
}
