// SPDX-License-Identifier: MIT
/*
 * nvbridge conformance suite: one list of cases, through the libnvbridge
 * API, for both backends (NVBRIDGE_BACKEND=kernel|broker picks).  Every
 * case runs in its own forked process (as root: cases that need another
 * uid or namespace drop to it in a child).  Output: one line per case, then
 * "N passed, M failed".  A case that cannot run on this backend prints
 * "skip" with the reason; skips are counted as passed only for genuine
 * impossibilities (listed in the case itself).
 *
 * usage: nvb-conformance [-l] [CASE...]
 *   NVB_TEST_DAEMON=path/to/nvbridged enables the broker restart case.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <liburing.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/nvbridge.h>
#include "nvb_wire.h"
#include "nvbridge.h"
#include "nvbridge_uring.h"

int nvb__xfer(struct nvb *h, unsigned long cmd, void *arg);	/* internal, from libnvbridge.a */

#define FAIL(...) do { printf("    %s:%d: ", __func__, __LINE__); printf(__VA_ARGS__); \
		       printf("\n"); fflush(stdout); return 1; } while (0)
#define CHECK(c, ...) do { if (!(c)) FAIL("check failed: " #c ": " __VA_ARGS__); } while (0)
#define EXPECT(expr, want) do { long _r = (long)(expr), _w = (long)(want); \
		if (_r != _w) FAIL("%s = %ld (%s), want %ld (%s)", #expr, _r, \
				   _r < 0 ? strerror((int)-_r) : "ok", _w, \
				   _w < 0 ? strerror((int)-_w) : "ok"); } while (0)
#define OK(expr) EXPECT(expr, 0)
#define SKIP(...) do { printf("    skip: "); printf(__VA_ARGS__); printf("\n"); fflush(stdout); \
		       return 77; } while (0)
#define OPEN(h) do { int _e = nvb_open(NULL, &(h)); if (_e) FAIL("nvb_open: %d %s", _e, \
							nvb_open_error()); } while (0)

static char pfx[32];
static int backend;	/* of this run */

static const char *nm(const char *suffix)
{
	static __thread char b[4][NVB_NAME_MAX];
	static __thread int i;
	char *r = b[i++ & 3];

	snprintf(r, NVB_NAME_MAX, "%s%s", pfx, suffix);
	return r;
}

static void rnd(void *p, size_t n)
{
	unsigned char *c = p;

	while (n) {
		ssize_t k = getrandom(c, n, 0);

		if (k <= 0)
			abort();
		c += k;
		n -= (size_t)k;
	}
}

static int memfd_rand(size_t len, unsigned char *copy)
{
	int fd = memfd_create("cf", MFD_CLOEXEC);
	unsigned char *buf = malloc(len);

	rnd(buf, len);
	if (fd < 0 || write(fd, buf, len) != (ssize_t)len)
		abort();
	if (copy)
		memcpy(copy, buf, len);
	free(buf);
	return fd;
}

static int fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int become(uid_t uid, gid_t gid, int ngroups, const gid_t *groups)
{
	if (setgroups((size_t)ngroups, groups) || setgid(gid) || setuid(uid))
		return -errno;
	return 0;
}

/* fork; the child runs fn(arg) and exits with its result */
static pid_t spawn(int (*fn)(void *), void *arg)
{
	pid_t p = fork();

	if (p == 0) {
		fflush(stdout);
		_exit(fn(arg));
	}
	return p;
}

static int reap(pid_t p)
{
	int st;

	if (waitpid(p, &st, 0) != p)
		return -1;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + WTERMSIG(st);
}

static const struct nvb_publish_opts *pol(uint32_t access, uint32_t uid, uint32_t gid)
{
	static __thread struct nvb_publish_opts o;

	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.access = access;
	o.uid = uid;
	o.gid = gid;
	return &o;
}

static const struct nvb_fetch_opts *fwait(int64_t timeout_ns, uint32_t flags)
{
	static __thread struct nvb_fetch_opts o;

	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.flags = NVB_FETCH_WAIT | flags;
	o.timeout_ns = timeout_ns;
	return &o;
}

/* waits for up to 2 s for one event */
static int ev1(struct nvb *h, struct nvb_event *e)
{
	return nvb_event_read(h, e, 1, 2000000000LL);
}

/* pipes for simple cross-process handshakes */
struct sync { int a[2], b[2]; };
static void sync_init(struct sync *s)
{
	if (pipe(s->a) || pipe(s->b))
		abort();
}
static void sync_post(int fd) { char c = 1; if (write(fd, &c, 1) != 1) abort(); }
static int sync_wait(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	char c;

	if (poll(&p, 1, 10000) != 1)
		return -1;
	return read(fd, &c, 1) == 1 ? 0 : -1;
}

/* ================= cases ================= */

static int t_open_info(void)
{
	struct nvb_info i = { .sz = sizeof(i) };
	struct nvb *h;

	OPEN(h);
	OK(nvb_info(h, &i));
	EXPECT(i.abi_version, NVBRIDGE_ABI_VERSION);
	EXPECT(i.name_max, NVB_NAME_MAX);
	EXPECT(i.backend, backend);
	CHECK(i.max_blob_size > 0 && i.max_blob_size <= NVBRIDGE_BLOB_MAX, "%u", i.max_blob_size);
	CHECK(i.max_events >= 1 && i.max_watches >= 1 && i.max_entries_per_user >= 1, "limits");
	EXPECT(i.user_entries, 0);
	OK(nvb_publish(h, nm("a"), -1, NULL, 0, NULL, NULL));
	OK(nvb_info(h, &i));
	EXPECT(i.user_entries, 1);
	CHECK(i.entries >= 1, "%u", i.entries);
	nvb_close(h);
	return 0;
}

struct share_arg { const char *name; unsigned char data[8192]; };

static int share_child(void *p)
{
	struct share_arg *a = p;
	struct nvb_entry e;
	struct nvb *h;
	unsigned char *m;
	int fd;

	OPEN(h);
	OK(nvb_fetch(h, a->name, fwait(5000000000LL, 0), NULL, 0, &e, &fd));
	CHECK(fd >= 0, "no fd");
	CHECK(e.flags & NVB_ENTRY_HAS_FD, "flags %x", e.flags);
	CHECK(!(e.flags & NVB_ENTRY_OWN), "OWN set for another process");
	EXPECT(e.pid, getppid());
	m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(m != MAP_FAILED, "mmap");
	CHECK(!memcmp(m, a->data, 8192), "publisher's data not seen");
	for (int i = 0; i < 8192; i++)
		m[i] ^= 0x5a;	/* the publisher must see this */
	munmap(m, 8192);
	close(fd);
	nvb_close(h);
	return 0;
}

static int t_share_memfd(void)
{
	static struct share_arg a;
	struct nvb *h;
	unsigned char *m;
	int fd;

	OPEN(h);
	a.name = nm("mem");
	fd = memfd_rand(8192, a.data);
	OK(nvb_publish(h, a.name, fd, NULL, 0, pol(NVB_ACCESS_OWNER, 0, 0), NULL));
	EXPECT(reap(spawn(share_child, &a)), 0);
	m = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(m != MAP_FAILED, "mmap");
	for (int i = 0; i < 8192; i++)
		CHECK(m[i] == (a.data[i] ^ 0x5a), "byte %d not written by the fetcher", i);
	munmap(m, 8192);
	close(fd);
	nvb_close(h);
	return 0;
}

/*
 * Options structs follow one rule (libnvbridge/opts.h): a newer caller's
 * larger struct is accepted when its unknown tail is zero and refused with
 * E2BIG when not; a struct too small to hold the fields every version has,
 * or over 4096 bytes, is EINVAL.  Nothing is published by a refused call.
 */
static int t_opts_sz_convention(void)
{
	unsigned char big[sizeof(struct nvb_publish_opts) + 64];
	unsigned char fbig[sizeof(struct nvb_fetch_opts) + 64];
	struct nvb_publish_opts *po = (void *)big;
	struct nvb_fetch_opts *fo = (void *)fbig;
	struct nvb_entry e;
	struct nvb *h;
	uint64_t id;
	char out[8];

	OPEN(h);
	memset(big, 0, sizeof(big));
	po->sz = sizeof(big);
	po->access = NVB_ACCESS_OWNER;
	OK(nvb_publish(h, nm("opts.zero"), -1, "x", 1, po, &id));
	big[sizeof(*po) + 7] = 1;
	EXPECT(nvb_publish(h, nm("opts.tail"), -1, "x", 1, po, &id), -E2BIG);
	big[sizeof(*po) + 7] = 0;
	po->sz = 4097;
	EXPECT(nvb_publish(h, nm("opts.huge"), -1, "x", 1, po, &id), -EINVAL);
	po->sz = 2;
	EXPECT(nvb_publish(h, nm("opts.tiny"), -1, "x", 1, po, &id), -EINVAL);
	EXPECT(nvb_fetch(h, nm("opts.tail"), NULL, NULL, 0, &e, NULL), -ENOENT);
	EXPECT(nvb_fetch(h, nm("opts.huge"), NULL, NULL, 0, &e, NULL), -ENOENT);

	memset(fbig, 0, sizeof(fbig));
	fo->sz = sizeof(fbig);
	OK(nvb_fetch(h, nm("opts.zero"), fo, out, sizeof(out), &e, NULL));
	EXPECT(e.id, id);
	fbig[sizeof(*fo) + 3] = 9;
	EXPECT(nvb_fetch(h, nm("opts.zero"), fo, out, sizeof(out), &e, NULL), -E2BIG);
	fbig[sizeof(*fo) + 3] = 0;
	fo->sz = 4;
	EXPECT(nvb_fetch(h, nm("opts.zero"), fo, out, sizeof(out), &e, NULL), -EINVAL);
	nvb_close(h);
	return 0;
}

static int t_blob_roundtrip(void)
{
	struct nvb_info i = { .sz = sizeof(i) };
	unsigned char *b, *o;
	struct nvb_entry e;
	struct nvb *h, *g;
	uint64_t id;
	int fd;

	OPEN(h);
	OPEN(g);
	OK(nvb_info(h, &i));
	b = malloc(i.max_blob_size);
	o = malloc(i.max_blob_size);
	rnd(b, i.max_blob_size);
	memset(o, 0, i.max_blob_size);
	OK(nvb_publish(h, nm("blob"), -1, b, i.max_blob_size, NULL, &id));
	OK(nvb_fetch(g, nm("blob"), NULL, o, i.max_blob_size, &e, &fd));
	EXPECT(fd, -1);
	EXPECT(e.blob_len, i.max_blob_size);
	EXPECT(e.id, id);
	CHECK(!(e.flags & NVB_ENTRY_HAS_FD), "HAS_FD without a file");
	CHECK(!memcmp(b, o, i.max_blob_size), "blob differs");
	CHECK(!strcmp(e.name, nm("blob")), "name %s", e.name);
	/* the owner sees OWN */
	OK(nvb_fetch(h, nm("blob"), NULL, o, i.max_blob_size, &e, NULL));
	CHECK(e.flags & NVB_ENTRY_OWN, "OWN missing for the publisher");
	free(b);
	free(o);
	nvb_close(g);
	nvb_close(h);
	return 0;
}

static int t_name_marker(void)
{
	struct nvb_entry e;
	struct nvb *h;
	int fd = 5;

	OPEN(h);
	OK(nvb_publish(h, nm("marker"), -1, NULL, 0, NULL, NULL));
	OK(nvb_fetch(h, nm("marker"), NULL, NULL, 0, &e, &fd));
	EXPECT(fd, -1);
	EXPECT(e.blob_len, 0);
	nvb_close(h);
	return 0;
}

static int t_name_validation(void)
{
	char n63[64], n64[65];
	struct nvb *h;

	OPEN(h);
	memset(n63, 'x', 63);
	n63[63] = 0;
	memset(n64, 'y', 64);
	n64[64] = 0;
	EXPECT(nvb_publish(h, "", -1, NULL, 0, NULL, NULL), -EINVAL);
	EXPECT(nvb_publish(h, n64, -1, NULL, 0, NULL, NULL), -EINVAL);
	CHECK(strstr(nvb_last_error(h), "name"), "last error does not name the argument: %s",
	      nvb_last_error(h));
	EXPECT(nvb_publish(h, "has space", -1, NULL, 0, NULL, NULL), -EINVAL);
	EXPECT(nvb_publish(h, "bad\xff", -1, NULL, 0, NULL, NULL), -EINVAL);
	EXPECT(nvb_publish(h, "semi;colon", -1, NULL, 0, NULL, NULL), -EINVAL);
	EXPECT(nvb_fetch(h, "a b", NULL, NULL, 0, NULL, NULL), -EINVAL);
	EXPECT(nvb_watch(h, "a*", 0, NULL), -EINVAL);
	OK(nvb_publish(h, n63, -1, NULL, 0, NULL, NULL));
	OK(nvb_publish(h, "A-z.0_9:/-", -1, NULL, 0, NULL, NULL));
	OK(nvb_unpublish(h, 0, n63));
	nvb_close(h);
	return 0;
}

static int t_duplicate(void)
{
	struct nvb *h, *g;

	OPEN(h);
	OPEN(g);
	OK(nvb_publish(h, nm("dup"), -1, NULL, 0, NULL, NULL));
	EXPECT(nvb_publish(h, nm("dup"), -1, NULL, 0, NULL, NULL), -EEXIST);
	EXPECT(nvb_publish(g, nm("dup"), -1, NULL, 0, NULL, NULL), -EEXIST);
	nvb_close(h);
	OK(nvb_publish(g, nm("dup"), -1, NULL, 0, NULL, NULL));	/* free again after close */
	nvb_close(g);
	return 0;
}

static int t_ids(void)
{
	uint64_t a, b, c;
	struct nvb *h;

	OPEN(h);
	OK(nvb_publish(h, nm("i1"), -1, NULL, 0, NULL, &a));
	OK(nvb_publish(h, nm("i2"), -1, NULL, 0, NULL, &b));
	OK(nvb_unpublish(h, b, NULL));
	OK(nvb_publish(h, nm("i2"), -1, NULL, 0, NULL, &c));
	CHECK(a > 0 && b > a && c > b, "ids %llu %llu %llu", (unsigned long long)a,
	      (unsigned long long)b, (unsigned long long)c);
	nvb_close(h);
	return 0;
}

static int t_fetch_missing(void)
{
	struct nvb *h;
	int fd = 7;

	OPEN(h);
	EXPECT(nvb_fetch(h, nm("nothing"), NULL, NULL, 0, NULL, &fd), -ENOENT);
	EXPECT(fd, -1);
	nvb_close(h);
	return 0;
}

static int t_unpublish(void)
{
	struct nvb *h, *g;
	uint64_t id;

	OPEN(h);
	OPEN(g);
	OK(nvb_publish(h, nm("u1"), -1, NULL, 0, NULL, &id));
	OK(nvb_publish(h, nm("u2"), -1, NULL, 0, NULL, NULL));
	EXPECT(nvb_unpublish(g, id, NULL), -EPERM);
	EXPECT(nvb_unpublish(g, 0, nm("u2")), -EPERM);
	OK(nvb_unpublish(h, id, NULL));
	OK(nvb_unpublish(h, 0, nm("u2")));
	EXPECT(nvb_fetch(g, nm("u1"), NULL, NULL, 0, NULL, NULL), -ENOENT);
	EXPECT(nvb_fetch(g, nm("u2"), NULL, NULL, 0, NULL, NULL), -ENOENT);
	EXPECT(nvb_unpublish(h, id, NULL), -ENOENT);
	EXPECT(nvb_unpublish(h, 0, nm("u2")), -ENOENT);
	EXPECT(nvb_unpublish(h, 0xfffffffffffULL, NULL), -ENOENT);
	nvb_close(g);
	nvb_close(h);
	return 0;
}

static int t_close_revokes(void)
{
	struct nvb *h, *g;
	int fd = memfd_rand(64, NULL), got;

	OPEN(h);
	OPEN(g);
	OK(nvb_publish(h, nm("c1"), fd, NULL, 0, NULL, NULL));
	OK(nvb_fetch(g, nm("c1"), NULL, NULL, 0, NULL, &got));
	close(got);
	nvb_close(h);
	EXPECT(nvb_fetch(g, nm("c1"), NULL, NULL, 0, NULL, NULL), -ENOENT);
	close(fd);
	nvb_close(g);
	return 0;
}

static int t_fetch_not_consumed(void)
{
	struct nvb *h, *g;
	int fd = memfd_rand(64, NULL), a, b;

	OPEN(h);
	OPEN(g);
	OK(nvb_publish(h, nm("twice"), fd, NULL, 0, NULL, NULL));
	OK(nvb_fetch(g, nm("twice"), NULL, NULL, 0, NULL, &a));
	OK(nvb_fetch(g, nm("twice"), NULL, NULL, 0, NULL, &b));
	CHECK(a >= 0 && b >= 0 && a != b, "fds %d %d", a, b);
	close(a);
	close(b);
	close(fd);
	nvb_close(g);
	nvb_close(h);
	return 0;
}

static int t_event_published(void)
{
	struct nvb *h, *w;
	struct nvb_event e;
	uint64_t wid, id;

	OPEN(h);
	OPEN(w);
	OK(nvb_watch(w, nm("ev"), 0, &wid));
	OK(nvb_publish(h, nm("ev"), -1, NULL, 0, NULL, &id));
	EXPECT(ev1(w, &e), 1);
	EXPECT(e.type, NVB_EVENT_PUBLISHED);
	EXPECT(e.id, id);
	EXPECT(e.watch_id, wid);
	EXPECT(e.pid, getpid());
	EXPECT(e.uid, geteuid());
	EXPECT(e.gid, getegid());
	CHECK(e.seq == 1, "seq %llu", (unsigned long long)e.seq);
	CHECK(!strcmp(e.name, nm("ev")), "%s", e.name);
	OK(nvb_unpublish(h, id, NULL));
	EXPECT(ev1(w, &e), 1);
	EXPECT(e.type, NVB_EVENT_REVOKED);
	EXPECT(e.reason, NVB_REVOKE_UNPUBLISHED);
	EXPECT(e.seq, 2);
	EXPECT(e.id, id);
	nvb_close(w);
	nvb_close(h);
	return 0;
}

static int t_event_closed(void)
{
	struct nvb *h, *w;
	struct nvb_event e;
	uint64_t id;

	OPEN(h);
	OPEN(w);
	OK(nvb_watch(w, nm("cl"), 0, NULL));
	OK(nvb_publish(h, nm("cl"), -1, NULL, 0, NULL, &id));
	EXPECT(ev1(w, &e), 1);
	nvb_close(h);
	EXPECT(ev1(w, &e), 1);
	EXPECT(e.type, NVB_EVENT_REVOKED);
	EXPECT(e.reason, NVB_REVOKE_CLOSED);
	EXPECT(e.id, id);
	nvb_close(w);
	return 0;
}

static int exit_child(void *p)
{
	struct nvb *h;
	struct sync *s = p;

	OPEN(h);
	OK(nvb_publish(h, nm("ex"), -1, NULL, 0, NULL, NULL));
	sync_post(s->a[1]);
	if (sync_wait(s->b[0]))	/* killed here in the SIGKILL variant */
		return 3;
	return 0;	/* exits with the handle open */
}

static int exit_case(int sig)
{
	struct nvb *w;
	struct nvb_event e;
	struct sync s;
	pid_t p;

	OPEN(w);
	OK(nvb_watch(w, nm("ex"), 0, NULL));
	sync_init(&s);
	p = spawn(exit_child, &s);
	CHECK(sync_wait(s.a[0]) == 0, "child did not publish");
	EXPECT(ev1(w, &e), 1);
	EXPECT(e.type, NVB_EVENT_PUBLISHED);
	EXPECT(e.pid, p);
	if (sig)
		kill(p, sig);
	else
		sync_post(s.b[1]);
	reap(p);
	EXPECT(ev1(w, &e), 1);
	EXPECT(e.type, NVB_EVENT_REVOKED);
	EXPECT(e.reason, NVB_REVOKE_EXITED);
	EXPECT(nvb_fetch(w, nm("ex"), NULL, NULL, 0, NULL, NULL), -ENOENT);
	nvb_close(w);
	return 0;
}

static int t_event_exited(void) { return exit_case(0); }
static int t_event_sigkill(void) { return exit_case(SIGKILL); }

static int t_watch_prefix(void)
{
	struct nvb *h, *w;
	struct nvb_event e;
	uint64_t wa, wall;

	OPEN(h);
	OPEN(w);
	OK(nvb_watch(w, nm("p/a/"), NVB_WATCH_PREFIX, &wa));
	OK(nvb_watch(w, "", NVB_WATCH_PREFIX, &wall));
	CHECK(wa != wall, "same watch ids");
	OK(nvb_publish(h, nm("p/b/x"), -1, NULL, 0, NULL, NULL));
	EXPECT(ev1(w, &e), 1);
	EXPECT(e.watch_id, wall);
	OK(nvb_publish(h, nm("p/a/x"), -1, NULL, 0, NULL, NULL));
	/* one event per matching watch */
	uint64_t seen = 0;

	for (int i = 0; i < 2; i++) {
		EXPECT(ev1(w, &e), 1);
		CHECK(!strcmp(e.name, nm("p/a/x")), "%s", e.name);
		seen |= e.watch_id == wa ? 1 : e.watch_id == wall ? 2 : 4;
	}
	EXPECT(seen, 3);
	EXPECT(nvb_event_read(w, &e, 1, 0), -EAGAIN);
	nvb_close(w);
	nvb_close(h);
	return 0;
}

static int t_watch_manage(void)
{
	struct nvb_info i = { .sz = sizeof(i) };
	struct nvb *h, *w;
	struct nvb_event e;
	uint64_t id;
	char n[NVB_NAME_MAX];

	OPEN(h);
	OPEN(w);
	OK(nvb_info(w, &i));
	OK(nvb_publish(h, nm("pre"), -1, NULL, 0, NULL, NULL));
	OK(nvb_watch(w, nm("pre"), 0, &id));
	EXPECT(nvb_watch(w, nm("pre"), 0, NULL), -EEXIST);
	OK(nvb_watch(w, nm("pre"), NVB_WATCH_PREFIX, NULL));	/* different flags */
	/* existing entries are not reported */
	EXPECT(nvb_event_read(w, &e, 1, 100000000), -ETIMEDOUT);
	OK(nvb_unwatch(w, id));
	EXPECT(nvb_unwatch(w, id), -ENOENT);
	EXPECT(nvb_unwatch(w, 987654321), -ENOENT);
	EXPECT(nvb_watch(w, "x", 0x80, NULL), -EINVAL);
	/* limit */
	int k;

	for (k = 1; k < (int)i.max_watches; k++) {
		snprintf(n, sizeof(n), "%sw%d", pfx, k);
		OK(nvb_watch(w, n, 0, NULL));
	}
	EXPECT(nvb_watch(w, nm("one-too-many"), 0, NULL), -ENOSPC);
	nvb_close(w);
	nvb_close(h);
	return 0;
}

static int t_event_overflow(void)
{
	struct nvb_info i = { .sz = sizeof(i) };
	struct nvb *h, *w;
	struct nvb_event *ev;
	uint64_t total, got = 0, last = 0;
	int n;

	OPEN(h);
	OPEN(w);
	OK(nvb_info(w, &i));
	if (i.max_events > 8192) {
		nvb_close(w);
		nvb_close(h);
		SKIP("max_events %u too large to fill quickly", i.max_events);
	}
	OK(nvb_watch(w, nm("ovf"), 0, NULL));
	total = i.max_events + 20;
	for (uint64_t k = 0; k < total / 2; k++) {
		uint64_t id;

		OK(nvb_publish(h, nm("ovf"), -1, NULL, 0, NULL, &id));
		OK(nvb_unpublish(h, id, NULL));
	}
	ev = calloc(i.max_events + 64, sizeof(*ev));
	for (;;) {
		n = nvb_event_read(w, ev + got, 32, 1000000000LL);
		if (n == -ETIMEDOUT)
			FAIL("no OVERFLOW record after %llu events", (unsigned long long)got);
		CHECK(n > 0, "event_read %d", n);
		for (int k = 0; k < n; k++) {
			struct nvb_event *e = &ev[got + k];

			if (e->type == NVB_EVENT_OVERFLOW) {
				got += k;
				EXPECT(got, i.max_events);
				EXPECT(e->lost, total - i.max_events);
				goto overflowed;
			}
			CHECK(e->seq == last + 1, "seq %llu after %llu", (unsigned long long)e->seq,
			      (unsigned long long)last);
			last = e->seq;
		}
		got += n;
		CHECK(got <= i.max_events, "more than max_events (%u) queued", i.max_events);
	}
overflowed:
	/* the next event shows the gap: seq counts the lost ones too */
	OK(nvb_publish(h, nm("ovf"), -1, NULL, 0, NULL, NULL));
	EXPECT(ev1(w, ev), 1);
	EXPECT(ev->type, NVB_EVENT_PUBLISHED);
	EXPECT(ev->seq, total + 1);
	free(ev);
	nvb_close(w);
	nvb_close(h);
	return 0;
}

/* ---- access control ---- */
struct acc { const char *name; uid_t uid; gid_t gid; int ng; gid_t g[2]; int want; int32_t wuid; };

static int acc_child(void *p)
{
	struct acc *a = p;
	struct nvb_entry e;
	struct nvb *h;
	uint64_t cur = 0;
	struct nvb_entry l[16];
	int fd, r, n, found = 0;

	if (become(a->uid, a->gid, a->ng, a->g))
		FAIL("become %u", a->uid);
	OPEN(h);
	r = nvb_fetch(h, a->name, NULL, NULL, 0, &e, &fd);
	EXPECT(r, a->want);
	if (r == 0 && a->wuid >= 0)
		EXPECT(e.uid, a->wuid);
	if (fd >= 0)
		close(fd);
	n = nvb_list(h, &cur, l, 16);
	CHECK(n >= 0, "list %d", n);
	for (int i = 0; i < n; i++)
		found += !strcmp(l[i].name, a->name);
	EXPECT(found, r == 0 ? 1 : 0);	/* LIST shows exactly what FETCH allows */
	/* denied is absent (contract C2): a WAIT waits for an entry it may use */
	if (a->want == -ENOENT) {
		int64_t t0 = now_ns();

		EXPECT(nvb_fetch(h, a->name, fwait(100000000LL, 0), NULL, 0, NULL, NULL), -ETIMEDOUT);
		CHECK(now_ns() - t0 >= 90000000LL, "denied WAIT fetch did not wait");
	}
	nvb_close(h);
	return 0;
}

static int pub_as(struct nvb **h, uid_t uid, gid_t gid, uint32_t access, uint32_t u, uint32_t g,
		  const char *name)
{
	(void)uid;
	(void)gid;
	return nvb_publish(*h, name, -1, NULL, 0, pol(access, u, g), NULL);
}

/* publisher runs as uid 2000 gid 3000 in a child; checks run in grandchildren */
struct accset { uint32_t access, u, g; struct acc cases[6]; int n; };

static int acc_publisher(void *p)
{
	struct accset *s = p;
	struct nvb *h;
	gid_t none[1] = { 3000 };

	/* effective ids only: the handle captures them; we can still switch back */
	if (setgroups(1, none) || setegid(3000) || seteuid(2000))
		FAIL("seteuid");
	OPEN(h);
	OK(pub_as(&h, 2000, 3000, s->access, s->u, s->g, nm("acc")));
	if (seteuid(0) || setegid(0))
		FAIL("seteuid back");
	for (int i = 0; i < s->n; i++) {
		s->cases[i].name = nm("acc");
		int r = reap(spawn(acc_child, &s->cases[i]));

		if (r)
			FAIL("fetcher %d (uid %u gid %u) failed", i, s->cases[i].uid, s->cases[i].gid);
	}
	nvb_close(h);
	return 0;
}

static int run_acc(struct accset *s)
{
	return reap(spawn(acc_publisher, s)) ? 1 : 0;
}

static int t_access_owner(void)
{
	struct accset s = { NVB_ACCESS_OWNER, 0, 0, {
		{ .uid = 2000, .gid = 9, .want = 0, .wuid = 2000 },		/* same euid */
		{ .uid = 2001, .gid = 3000, .want = -ENOENT, .wuid = -1 },	/* same group: no */
		{ .uid = 2002, .gid = 4000, .want = -ENOENT, .wuid = -1 },
	}, 3 };

	return run_acc(&s);
}

static int t_access_scope(void)
{
	struct accset s = { NVB_ACCESS_SCOPE, 0, 0, {
		{ .uid = 2005, .gid = 4005, .want = 0, .wuid = 2000 },
		{ .uid = 65000, .gid = 65000, .want = 0, .wuid = 2000 },
	}, 2 };

	return run_acc(&s);
}

static int t_access_group(void)
{
	struct accset s = { NVB_ACCESS_GROUP, 0, 0, {
		{ .uid = 2001, .gid = 3000, .want = 0, .wuid = 2000 },			/* egid */
		{ .uid = 2002, .gid = 4000, .ng = 2, .g = { 4000, 3000 }, .want = 0, .wuid = -1 },	/* supplementary */
		{ .uid = 2003, .gid = 4000, .ng = 1, .g = { 4000 }, .want = -ENOENT, .wuid = -1 },
	}, 3 };

	return run_acc(&s);
}

static int t_access_uid(void)
{
	struct accset s = { NVB_ACCESS_UID, 2010, 0, {
		{ .uid = 2010, .gid = 4000, .want = 0, .wuid = -1 },
		{ .uid = 2011, .gid = 3000, .want = -ENOENT, .wuid = -1 },
	}, 2 };

	return run_acc(&s);
}

static int t_access_gid(void)
{
	struct accset s = { NVB_ACCESS_GID, 0, 5000, {
		{ .uid = 2020, .gid = 5000, .want = 0, .wuid = -1 },
		{ .uid = 2021, .gid = 4000, .ng = 2, .g = { 4000, 5000 }, .want = 0, .wuid = -1 },
		{ .uid = 2022, .gid = 3000, .ng = 1, .g = { 3000 }, .want = -ENOENT, .wuid = -1 },
	}, 3 };

	return run_acc(&s);
}

static int t_access_cap_ipc_owner(void)
{
	/* root (CAP_IPC_OWNER in the scope's user ns) may fetch an OWNER entry */
	struct accset s = { NVB_ACCESS_OWNER, 0, 0, {
		{ .uid = 0, .gid = 0, .want = 0, .wuid = 2000 },
	}, 1 };

	return run_acc(&s);
}

static int t_access_invalid(void)
{
	struct nvb *h;

	OPEN(h);
	EXPECT(nvb_publish(h, nm("a1"), -1, NULL, 0, pol(99, 0, 0), NULL), -EINVAL);
	CHECK(strstr(nvb_last_error(h), "access"), "%s", nvb_last_error(h));
	EXPECT(nvb_publish(h, nm("a2"), -1, NULL, 0, pol(NVB_ACCESS_OWNER, 5, 0), NULL), -EINVAL);
	EXPECT(nvb_publish(h, nm("a3"), -1, NULL, 0, pol(NVB_ACCESS_SCOPE, 0, 5), NULL), -EINVAL);
	EXPECT(nvb_publish(h, nm("a4"), -1, NULL, 0, pol(NVB_ACCESS_UID, (uint32_t)-1, 0), NULL), -EINVAL);
	EXPECT(nvb_publish(h, nm("a5"), -1, NULL, 0, pol(NVB_ACCESS_GID, 0, (uint32_t)-1), NULL), -EINVAL);
	OK(nvb_publish(h, nm("a6"), -1, NULL, 0, pol(NVB_ACCESS_UID, 1234, 0), NULL));
	nvb_close(h);
	return 0;
}

static int t_list(void)
{
	struct nvb_entry l[8];
	struct nvb *h;
	uint64_t ids[5], cur = 0;
	int n, k = 0;
	char n5[5][NVB_NAME_MAX];

	OPEN(h);
	for (int i = 0; i < 5; i++) {
		snprintf(n5[i], NVB_NAME_MAX, "%sl%d", pfx, i);
		OK(nvb_publish(h, n5[i], i == 2 ? memfd_rand(16, NULL) : -1, "blob", 4, NULL, &ids[i]));
	}
	/* pages of 2, ascending id, only ours (other cases' entries are gone) */
	while ((n = nvb_list(h, &cur, l, 2)) > 0) {
		for (int i = 0; i < n; i++) {
			if (strncmp(l[i].name, pfx, strlen(pfx)))
				continue;
			CHECK(k < 5, "extra entry %s", l[i].name);
			EXPECT(l[i].id, ids[k]);
			CHECK(!strcmp(l[i].name, n5[k]), "%s", l[i].name);
			EXPECT(l[i].blob_len, 4);
			EXPECT(l[i].pid, getpid());
			CHECK(l[i].flags & NVB_ENTRY_OWN, "OWN");
			EXPECT(!!(l[i].flags & NVB_ENTRY_HAS_FD), k == 2);
			k++;
		}
		CHECK(n <= 2, "n %d", n);
	}
	EXPECT(n, 0);
	EXPECT(k, 5);
	cur = ids[2];
	n = nvb_list(h, &cur, l, 8);
	CHECK(n >= 2 && l[0].id == ids[3], "cursor not honoured");
	nvb_close(h);
	return 0;
}

/* ---- namespaces ---- */
static int ipc_child(void *p)
{
	const char *name = p;
	struct nvb *h;
	struct nvb_info i = { .sz = sizeof(i) };
	uint64_t cur = 0;
	struct nvb_entry l[64];
	int n;

	if (unshare(CLONE_NEWIPC))
		SKIP("unshare(CLONE_NEWIPC): %s", strerror(errno));
	OPEN(h);
	EXPECT(nvb_fetch(h, name, NULL, NULL, 0, NULL, NULL), -ENOENT);
	n = nvb_list(h, &cur, l, 64);
	for (int k = 0; k < n; k++)
		CHECK(strcmp(l[k].name, name), "other scope's entry listed");
	OK(nvb_info(h, &i));
	EXPECT(i.entries, 0);
	OK(nvb_publish(h, name, -1, NULL, 0, pol(NVB_ACCESS_SCOPE, 0, 0), NULL));	/* no EEXIST */
	nvb_close(h);
	return 0;
}

static int t_ipc_namespace(void)
{
	struct nvb *h;
	int r;

	OPEN(h);
	OK(nvb_publish(h, nm("ipc"), -1, NULL, 0, pol(NVB_ACCESS_SCOPE, 0, 0), NULL));
	r = reap(spawn(ipc_child, (void *)nm("ipc")));
	if (r == 77) {
		nvb_close(h);
		SKIP("no IPC namespaces here");
	}
	EXPECT(r, 0);
	OK(nvb_fetch(h, nm("ipc"), NULL, NULL, 0, NULL, NULL));
	nvb_close(h);
	return 0;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -errno;
}

static int userns_child(void *p)
{
	struct sync *s = p;
	struct nvb_entry e;
	struct nvb *h;
	gid_t g = 3100;

	if (become(2100, 3100, 1, &g))
		FAIL("become");
	prctl(PR_SET_DUMPABLE, 1);
	if (unshare(CLONE_NEWUSER))
		SKIP("unshare(CLONE_NEWUSER): %s", strerror(errno));
	if (write_file("/proc/self/uid_map", "100 2100 1") ||
	    write_file("/proc/self/setgroups", "deny") ||
	    write_file("/proc/self/gid_map", "200 3100 1"))
		FAIL("id maps: %s", strerror(errno));
	OPEN(h);
	/* root's entry: root is not mapped here */
	OK(nvb_fetch(h, nm("un-root"), NULL, NULL, 0, &e, NULL));
	EXPECT(e.uid, 65534);
	EXPECT(e.gid, 65534);
	/* policy ids are read in our namespace: 100 is us (2100 outside) */
	OK(nvb_publish(h, nm("un-mine"), -1, NULL, 0, pol(NVB_ACCESS_UID, 100, 0), NULL));
	EXPECT(nvb_publish(h, nm("un-bad"), -1, NULL, 0, pol(NVB_ACCESS_UID, 5, 0), NULL), -EINVAL);
	OK(nvb_fetch(h, nm("un-mine"), NULL, NULL, 0, &e, NULL));
	EXPECT(e.uid, 100);
	EXPECT(e.gid, 200);
	sync_post(s->a[1]);
	sync_wait(s->b[0]);
	nvb_close(h);
	return 0;
}

static int t_user_namespace(void)
{
	struct nvb_entry e;
	struct nvb *h;
	struct sync s;
	pid_t p;
	int r;

	OPEN(h);
	OK(nvb_publish(h, nm("un-root"), -1, NULL, 0, pol(NVB_ACCESS_SCOPE, 0, 0), NULL));
	sync_init(&s);
	p = spawn(userns_child, &s);
	if (sync_wait(s.a[0])) {
		r = reap(p);
		nvb_close(h);
		if (r == 77)
			SKIP("no user namespaces here");
		FAIL("child failed (%d)", r);
	}
	OK(nvb_fetch(h, nm("un-mine"), NULL, NULL, 0, &e, NULL));
	EXPECT(e.uid, 2100);	/* translated back into our namespace */
	EXPECT(e.gid, 3100);
	EXPECT(e.access, NVB_ACCESS_UID);
	sync_post(s.b[1]);
	EXPECT(reap(p), 0);
	nvb_close(h);
	return 0;
}

static int pidns_grandchild(void *p)
{
	struct sync *s = p;
	struct nvb_entry e;
	struct nvb *h;

	CHECK(getpid() == 1, "not pid 1: %d", getpid());
	OPEN(h);
	OK(nvb_fetch(h, nm("pn-outer"), NULL, NULL, 0, &e, NULL));
	EXPECT(e.pid, 0);	/* the publisher is not visible from here */
	OK(nvb_publish(h, nm("pn-inner"), -1, NULL, 0, NULL, NULL));
	OK(nvb_fetch(h, nm("pn-inner"), NULL, NULL, 0, &e, NULL));
	EXPECT(e.pid, 1);
	sync_post(s->a[1]);
	sync_wait(s->b[0]);
	nvb_close(h);
	return 0;
}

/* the grandchild's pid travels on its own pipe: the grandchild may post on s.a first */
struct pidns_sync {
	struct sync s;		/* first: pidns_grandchild takes it as a struct sync */
	int gp[2];
};

static int pidns_child(void *p)
{
	struct pidns_sync *ps = p;

	if (unshare(CLONE_NEWPID))
		SKIP("unshare(CLONE_NEWPID): %s", strerror(errno));
	pid_t g = spawn(pidns_grandchild, &ps->s);

	if (write(ps->gp[1], &g, sizeof(g)) != sizeof(g))
		return 1;
	return reap(g);
}

static int t_pid_namespace(void)
{
	struct nvb_entry e;
	struct nvb *h;
	struct pidns_sync ps;
	struct sync s;
	pid_t p, g;
	char c;
	int r;

	OPEN(h);
	OK(nvb_publish(h, nm("pn-outer"), -1, NULL, 0, NULL, NULL));
	sync_init(&ps.s);
	if (pipe(ps.gp))
		FAIL("pipe");
	s = ps.s;
	p = spawn(pidns_child, &ps);
	close(ps.gp[1]);
	if (read(ps.gp[0], &g, sizeof(g)) != sizeof(g)) {
		r = reap(p);
		nvb_close(h);
		if (r == 77)
			SKIP("no pid namespaces here");
		FAIL("no grandchild (%d)", r);
	}
	if (read(s.a[0], &c, 1) != 1)
		FAIL("grandchild failed (%d)", reap(p));
	OK(nvb_fetch(h, nm("pn-inner"), NULL, NULL, 0, &e, NULL));
	EXPECT(e.pid, g);	/* its pid as we see it */
	sync_post(s.b[1]);
	EXPECT(reap(p), 0);
	nvb_close(h);
	return 0;
}

/* ---- waiting fetch ---- */
static int t_wait_publish(void)
{
	struct nvb *h, *g;
	unsigned char blob[32], got[32];
	int64_t t0;
	pid_t p;

	rnd(blob, sizeof(blob));
	OPEN(g);
	p = fork();
	if (p == 0) {
		struct nvb *c;

		usleep(200000);
		if (nvb_open(NULL, &c) || nvb_publish(c, nm("wp"), -1, blob, sizeof(blob), NULL, NULL))
			_exit(1);
		usleep(500000);
		_exit(0);
	}
	t0 = now_ns();
	OK(nvb_fetch(g, nm("wp"), fwait(5000000000LL, 0), got, sizeof(got), NULL, NULL));
	CHECK(now_ns() - t0 >= 150000000LL, "returned before the publish");
	CHECK(!memcmp(blob, got, sizeof(blob)), "blob");
	EXPECT(reap(p), 0);
	(void)h;
	nvb_close(g);
	return 0;
}

static int t_wait_timeout(void)
{
	struct nvb *h;
	int64_t t0;

	OPEN(h);
	t0 = now_ns();
	EXPECT(nvb_fetch(h, nm("never"), fwait(200000000LL, 0), NULL, 0, NULL, NULL), -ETIMEDOUT);
	CHECK(now_ns() - t0 >= 190000000LL, "timed out early: %lld ns", (long long)(now_ns() - t0));
	CHECK(now_ns() - t0 < 3000000000LL, "timed out late");
	t0 = now_ns();
	EXPECT(nvb_fetch(h, nm("never"), fwait(0, 0), NULL, 0, NULL, NULL), -ETIMEDOUT);
	CHECK(now_ns() - t0 < 100000000LL, "timeout 0 waited");
	nvb_close(h);
	return 0;
}

/*
 * A huge timeout (INT64_MAX ns, or close to it) is a very long wait, not an
 * overflow: the fetch still completes when the name is published, and a
 * short timeout waiting beside it still expires on time.
 */
struct huge { struct nvb *h; const char *name; int64_t timeout; int ret; int64_t took; };
static void *huge_waiter(void *a)
{
	struct huge *w = a;
	int64_t t0 = now_ns();

	w->ret = nvb_fetch(w->h, w->name, fwait(w->timeout, 0), NULL, 0, NULL, NULL);
	w->took = now_ns() - t0;
	return NULL;
}

static int t_wait_huge_timeout(void)
{
	struct nvb *h, *g;
	struct huge w[3];
	pthread_t t[3];
	char name0[NVB_NAME_MAX], name1[NVB_NAME_MAX], name2[NVB_NAME_MAX];

	OPEN(h);
	OPEN(g);
	snprintf(name0, sizeof(name0), "%s", nm("huge0"));
	snprintf(name1, sizeof(name1), "%s", nm("huge1"));
	snprintf(name2, sizeof(name2), "%s", nm("never"));
	w[0] = (struct huge){ g, name0, INT64_MAX, 1, 0 };
	w[1] = (struct huge){ g, name1, INT64_MAX - 1000000000LL, 1, 0 };
	w[2] = (struct huge){ g, name2, 300000000LL, 1, 0 };
	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, huge_waiter, &w[i]);
	usleep(100000);
	pthread_join(t[2], NULL);
	EXPECT(w[2].ret, -ETIMEDOUT);
	CHECK(w[2].took >= 290000000LL && w[2].took < 2000000000LL,
	      "300 ms timeout beside huge ones took %lld ns", (long long)w[2].took);
	OK(nvb_publish(h, name0, -1, NULL, 0, pol(NVB_ACCESS_SCOPE, 0, 0), NULL));
	OK(nvb_publish(h, name1, -1, NULL, 0, pol(NVB_ACCESS_SCOPE, 0, 0), NULL));
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	EXPECT(w[0].ret, 0);
	EXPECT(w[1].ret, 0);
	/* and the backend is still there for everyone */
	OK(nvb_fetch(g, name0, NULL, NULL, 0, NULL, NULL));
	nvb_close(g);
	nvb_close(h);
	return 0;
}

static void on_usr1(int s) { (void)s; }

static int t_wait_signal(void)
{
	struct sigaction sa = { .sa_handler = on_usr1 };	/* no SA_RESTART */
	struct nvb *h;
	pid_t me = getpid(), p;
	int64_t t0;

	sigaction(SIGUSR1, &sa, NULL);
	OPEN(h);
	p = fork();
	if (p == 0) {
		usleep(200000);
		kill(me, SIGUSR1);
		_exit(0);
	}
	t0 = now_ns();
	EXPECT(nvb_fetch(h, nm("sig"), fwait(-1, 0), NULL, 0, NULL, NULL), -EINTR);
	CHECK(now_ns() - t0 < 5000000000LL, "slow");
	reap(p);
	/* the handle is still usable */
	OK(nvb_publish(h, nm("sig"), -1, NULL, 0, NULL, NULL));
	OK(nvb_fetch(h, nm("sig"), fwait(-1, 0), NULL, 0, NULL, NULL));
	nvb_close(h);
	return 0;
}

/*
 * A signal ends a waiting FETCH in any thread, also one that waits while
 * another thread of the same handle is blocked reading replies (before:
 * only the reading thread saw -EINTR on the broker backend).
 */
struct sigw {
	struct nvb *h;
	char name[NVB_NAME_MAX];
	int ret;
	int done;
};

static void *sig_waiter(void *arg)
{
	struct sigw *w = arg;

	w->ret = nvb_fetch(w->h, w->name, fwait(-1, 0), NULL, 0, NULL, NULL);
	__atomic_store_n(&w->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static int t_wait_signal_second_thread(void)
{
	struct sigaction sa = { .sa_handler = on_usr1 };	/* no SA_RESTART */
	struct sigw a = { 0 }, b = { 0 };
	pthread_t ta, tb;
	struct nvb *h, *p;
	int k;

	sigaction(SIGUSR1, &sa, NULL);
	OPEN(h);
	OPEN(p);
	a.h = b.h = h;
	snprintf(a.name, sizeof(a.name), "%s", nm("sa"));
	snprintf(b.name, sizeof(b.name), "%s", nm("sb"));
	pthread_create(&ta, NULL, sig_waiter, &a);
	usleep(100000);		/* a waits (and reads replies, on the broker) */
	pthread_create(&tb, NULL, sig_waiter, &b);
	usleep(100000);		/* b waits behind it */
	pthread_kill(tb, SIGUSR1);
	for (k = 0; k < 500 && !__atomic_load_n(&b.done, __ATOMIC_SEQ_CST); k++)
		usleep(10000);
	CHECK(b.done, "the second thread's FETCH_WAIT did not end on its signal");
	EXPECT(b.ret, -EINTR);
	CHECK(!a.done, "the first thread's wait ended too (ret %d)", a.ret);
	OK(nvb_publish(p, a.name, -1, NULL, 0, NULL, NULL));
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	EXPECT(a.ret, 0);
	nvb_close(p);
	nvb_close(h);
	return 0;
}

/* ---- limits and bad input ---- */
static int quota_child(void *p)
{
	struct nvb_info i = { .sz = sizeof(i) };
	struct nvb *h, *g;
	char n[NVB_NAME_MAX];
	uint32_t k;

	(void)p;
	if (become(2200, 3200, 0, NULL))
		FAIL("become");
	OPEN(h);
	OPEN(g);
	OK(nvb_info(h, &i));
	if (i.max_entries_per_user > 20000) {
		nvb_close(g);
		nvb_close(h);
		SKIP("quota %u too large to fill quickly", i.max_entries_per_user);
	}
	for (k = 0; k < i.max_entries_per_user; k++) {
		snprintf(n, sizeof(n), "%sq%u", pfx, k);
		OK(nvb_publish(k & 1 ? h : g, n, -1, NULL, 0, NULL, NULL));	/* counted per user */
	}
	OK(nvb_info(h, &i));
	EXPECT(i.user_entries, i.max_entries_per_user);
	EXPECT(nvb_publish(h, nm("qx"), -1, NULL, 0, NULL, NULL), -ENOSPC);
	nvb_close(g);	/* frees half */
	OK(nvb_publish(h, nm("qx"), -1, NULL, 0, NULL, NULL));
	nvb_close(h);
	return 0;
}

static int t_quota(void)
{
	int r = reap(spawn(quota_child, NULL));

	if (r == 77)
		SKIP("quota too large");
	return r;
}

static int t_blob_limits(void)
{
	struct nvb_info i = { .sz = sizeof(i) };
	unsigned char *b, small[4];
	struct nvb_entry e;
	struct nvb *h;
	int fd = memfd_rand(16, NULL), got = 5, before;

	OPEN(h);
	OK(nvb_info(h, &i));
	b = malloc(i.max_blob_size + 1);
	rnd(b, i.max_blob_size + 1);
	EXPECT(nvb_publish(h, nm("big"), -1, b, i.max_blob_size + 1, NULL, NULL), -EMSGSIZE);
	EXPECT(nvb_publish(h, nm("null"), -1, NULL, 16, NULL, NULL), -EFAULT);
	OK(nvb_publish(h, nm("b16"), fd, b, 16, NULL, NULL));
	before = fd_count();
	EXPECT(nvb_fetch(h, nm("b16"), NULL, small, sizeof(small), &e, &got), -EMSGSIZE);
	EXPECT(got, -1);
	EXPECT(e.blob_len, 16);	/* says how much is needed */
	EXPECT(fd_count(), before);	/* no fd installed */
	free(b);
	close(fd);
	nvb_close(h);
	return 0;
}

static int t_bad_fd(void)
{
	struct nvb *h;
	int fd = memfd_rand(16, NULL);

	OPEN(h);
	close(fd);
	EXPECT(nvb_publish(h, nm("bf1"), fd, NULL, 0, NULL, NULL), -EBADF);
	EXPECT(nvb_publish(h, nm("bf2"), -5, NULL, 0, NULL, NULL), -EBADF);
	EXPECT(nvb_publish(h, nm("bf3"), 100000, NULL, 0, NULL, NULL), -EBADF);
	nvb_close(h);
	return 0;
}

static int raw_connect(void);

static int t_self_publish(void)
{
	struct nvb *h, *g;

	OPEN(h);
	OPEN(g);
	if (nvb_backend(h) == NVB_BACKEND_BROKER) {
		/* a socket connected to the broker itself: the broker would hold its own client */
		int s = raw_connect();

		CHECK(s >= 0, "connect");
		EXPECT(nvb_publish(h, nm("sock"), s, NULL, 0, NULL, NULL), -EINVAL);
		close(s);
	} else {
		int d = open("/dev/nvbridge", O_RDWR | O_CLOEXEC);

		CHECK(d >= 0, "open /dev/nvbridge");
		EXPECT(nvb_publish(h, nm("dev"), d, NULL, 0, NULL, NULL), -EINVAL);
		close(d);
	}
	EXPECT(nvb_publish(h, nm("self"), nvb_event_fd(h), NULL, 0, NULL, NULL), -EINVAL);
	EXPECT(nvb_publish(h, nm("other"), nvb_event_fd(g), NULL, 0, NULL, NULL), -EINVAL);
	CHECK(strstr(nvb_last_error(h), "refused"), "%s", nvb_last_error(h));
	nvb_close(g);
	nvb_close(h);
	return 0;
}

static int t_io_uring_refused(void)
{
	struct io_uring r;
	struct nvb *h;

	OPEN(h);
	if (io_uring_queue_init(4, &r, 0)) {
		nvb_close(h);
		SKIP("io_uring unavailable");
	}
	EXPECT(nvb_publish(h, nm("ring"), r.ring_fd, NULL, 0, NULL, NULL), -EINVAL);
	io_uring_queue_exit(&r);
	nvb_close(h);
	return 0;
}

static int t_cloexec(void)
{
	struct nvb *h;
	int fd = memfd_rand(16, NULL), a, b;

	OPEN(h);
	OK(nvb_publish(h, nm("ce"), fd, NULL, 0, NULL, NULL));
	OK(nvb_fetch(h, nm("ce"), NULL, NULL, 0, NULL, &a));
	struct nvb_fetch_opts o = { .sz = sizeof(o), .flags = NVB_FETCH_NO_CLOEXEC };

	OK(nvb_fetch(h, nm("ce"), &o, NULL, 0, NULL, &b));
	CHECK(fcntl(a, F_GETFD) & FD_CLOEXEC, "default fetch without O_CLOEXEC");
	CHECK(!(fcntl(b, F_GETFD) & FD_CLOEXEC), "NO_CLOEXEC fetch has O_CLOEXEC");
	close(a);
	close(b);
	close(fd);
	nvb_close(h);
	return 0;
}

static int t_no_fd_leak(void)
{
	int before = fd_count(), fd;

	for (int k = 0; k < 20; k++) {
		struct nvb *h, *g;
		int m = memfd_rand(32, NULL);
		unsigned char s[1];

		OPEN(h);
		OPEN(g);
		OK(nvb_publish(h, nm("leak"), m, "x", 1, NULL, NULL));
		OK(nvb_fetch(g, nm("leak"), NULL, s, 1, NULL, &fd));
		close(fd);
		EXPECT(nvb_fetch(g, nm("leak"), NULL, NULL, 0, NULL, &fd), -EMSGSIZE);
		EXPECT(nvb_fetch(g, nm("nope"), NULL, NULL, 0, NULL, &fd), -ENOENT);
		EXPECT(nvb_publish(h, nm("leak"), m, NULL, 0, NULL, NULL), -EEXIST);
		OK(nvb_watch(g, nm("leak"), 0, NULL));
		nvb_close(h);
		struct nvb_event e;

		EXPECT(ev1(g, &e), 1);
		nvb_close(g);
		close(m);
	}
	EXPECT(fd_count(), before);
	return 0;
}

static int t_unknown_flags(void)
{
	struct nvb_fetch_opts o = { .sz = sizeof(o), .flags = 0x80 };
	struct nvb_publish_opts po = { .sz = sizeof(po), .flags = 1 };
	struct nvb *h;

	OPEN(h);
	EXPECT(nvb_publish(h, nm("fl"), -1, NULL, 0, &po, NULL), -EINVAL);
	OK(nvb_publish(h, nm("fl"), -1, NULL, 0, NULL, NULL));
	EXPECT(nvb_fetch(h, nm("fl"), &o, NULL, 0, NULL, NULL), -EINVAL);
	EXPECT(nvb_watch(h, nm("fl"), 0x10, NULL), -EINVAL);
	nvb_close(h);
	return 0;
}

/* ---- raw structs (the ABI rules, through either transport) ---- */
static int t_struct_sizes(void)
{
	unsigned char big[8192];
	struct nvbridge_publish *p = (void *)big;
	struct nvbridge_info *in = (void *)big;
	struct nvb *h;

	OPEN(h);
	memset(big, 0, sizeof(big));
	p->size = NVBRIDGE_PUBLISH_SIZE_VER0;
	p->fd = -1;
	snprintf(p->name, sizeof(p->name), "%s", nm("s0"));
	OK(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, p));
	CHECK(p->id > 0, "no id with VER0 size");
	/* newer caller, zero tail: fine */
	memset(big, 0, sizeof(big));
	p->size = sizeof(*p) + 16;
	p->fd = -1;
	snprintf(p->name, sizeof(p->name), "%s", nm("s1"));
	OK(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, p));
	/* non-zero tail */
	big[sizeof(*p) + 3] = 1;
	snprintf(p->name, sizeof(p->name), "%s", nm("s2"));
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, p), -E2BIG);
	/* too small, too large */
	memset(big, 0, sizeof(big));
	p->size = 8;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, p), -EINVAL);
	p->size = 8192;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, p), -E2BIG);
	/* INFO with the VER0 size */
	memset(big, 0, sizeof(big));
	in->size = NVBRIDGE_INFO_SIZE_VER0;
	OK(nvb__xfer(h, NVBRIDGE_IOC_INFO, in));
	EXPECT(in->abi_version, NVBRIDGE_ABI_VERSION);
	in->flags = 1;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_INFO, in), -EINVAL);
	nvb_close(h);
	return 0;
}

static int t_struct_fields(void)
{
	struct nvbridge_publish p;
	struct nvbridge_watch w;
	struct nvbridge_fetch f;
	struct nvbridge_list l;
	struct nvbridge_entry_info rec[2];
	unsigned char wide[2][128];
	struct nvb *h;

	OPEN(h);
	memset(&p, 0, sizeof(p));
	p.size = sizeof(p);
	p.fd = -1;
	snprintf(p.name, sizeof(p.name), "%s", nm("r"));
	p.__reserved = 1;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, &p), -EINVAL);
	p.__reserved = 0;
	memset(p.name, 'u', sizeof(p.name));	/* unterminated */
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, &p), -EINVAL);
	snprintf(p.name, sizeof(p.name), "%s", nm("r"));
	OK(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, &p));
	/* fetch: reserved */
	memset(&f, 0, sizeof(f));
	f.size = sizeof(f);
	f.expect_uid = 2;	/* without FETCH_EXPECT_UID: must be 0 */
	snprintf(f.name, sizeof(f.name), "%s", nm("r"));
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_FETCH, &f), -EINVAL);
	/* unwatch wants flags 0 and an all-zero name */
	memset(&w, 0, sizeof(w));
	w.size = sizeof(w);
	snprintf(w.name, sizeof(w.name), "%s", nm("r"));
	OK(nvb__xfer(h, NVBRIDGE_IOC_WATCH, &w));
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_UNWATCH, &w), -EINVAL);
	memset(w.name, 0, sizeof(w.name));
	OK(nvb__xfer(h, NVBRIDGE_IOC_UNWATCH, &w));
	/* LIST: entry_size rules */
	memset(&l, 0, sizeof(l));
	l.size = sizeof(l);
	l.entries = (uintptr_t)rec;
	l.count = 2;
	l.entry_size = NVBRIDGE_ENTRY_INFO_SIZE_VER0 - 8;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_LIST, &l), -EINVAL);
	l.entry_size = sizeof(rec[0]);
	l.count = 0;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_LIST, &l), 0);
	memset(wide, 0xee, sizeof(wide));
	l.entries = (uintptr_t)wide;
	l.count = 2;
	l.entry_size = 128;	/* a newer caller's bigger record: zero-filled tail */
	l.cursor = p.id - 1;
	int n = nvb__xfer(h, NVBRIDGE_IOC_LIST, &l);

	CHECK(n >= 1, "list %d", n);
	memcpy(&rec[0], wide[0], sizeof(rec[0]));
	EXPECT(rec[0].id, p.id);
	for (int i = (int)sizeof(rec[0]); i < 128; i++)
		CHECK(wide[0][i] == 0, "tail byte %d not zeroed", i);
	EXPECT(l.cursor, rec[n - 1].id == 0 ? l.cursor : l.cursor);
	/* unknown command */
	EXPECT(nvb__xfer(h, _IOWR(NVBRIDGE_IOC_MAGIC, 0x3f, struct nvbridge_info), &l), -ENOTTY);
	nvb_close(h);
	return 0;
}

/* ---- FETCH_EXPECT_UID: guard against name squatting ---- */
static const struct nvb_fetch_opts *fexp(uint32_t flags, uint32_t uid, int64_t timeout_ns)
{
	static __thread struct nvb_fetch_opts o;

	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.flags = flags | NVB_FETCH_EXPECT_UID;
	o.expect_uid = uid;
	o.timeout_ns = timeout_ns;
	return &o;
}

/* uid 2210 publishes "eu" (SCOPE), then looks at it from a user namespace mapping 100 -> 2210 */
static int expect_userns_child(void *p)
{
	struct sync *s = p;
	struct nvb_entry e;
	struct nvb *h, *u;
	gid_t g = 3210;
	int fd = -1;

	(void)s;
	if (become(2210, 3210, 1, &g))
		FAIL("become");
	OPEN(h);
	OK(nvb_publish(h, nm("eu"), memfd_rand(16, NULL), NULL, 0, pol(NVB_ACCESS_SCOPE, 0, 0), NULL));
	prctl(PR_SET_DUMPABLE, 1);
	if (unshare(CLONE_NEWUSER)) {
		nvb_close(h);
		SKIP("unshare(CLONE_NEWUSER): %s", strerror(errno));
	}
	if (write_file("/proc/self/uid_map", "100 2210 1") ||
	    write_file("/proc/self/setgroups", "deny") ||
	    write_file("/proc/self/gid_map", "200 3210 1"))
		FAIL("id maps: %s", strerror(errno));
	OPEN(u);
	/* expect_uid is read in the caller's user namespace: 100 is 2210 */
	OK(nvb_fetch(u, nm("eu"), fexp(0, 100, 0), NULL, 0, &e, &fd));
	CHECK(fd >= 0, "no fd");
	close(fd);
	EXPECT(e.uid, 100);
	/* 2210 and 0 are not mapped here */
	EXPECT(nvb_fetch(u, nm("eu"), fexp(0, 2210, 0), NULL, 0, NULL, NULL), -EINVAL);
	EXPECT(nvb_fetch(u, nm("eu"), fexp(0, 0, 0), NULL, 0, NULL, NULL), -EINVAL);
	CHECK(strstr(nvb_last_error(u), "not mapped"), "%s", nvb_last_error(u));
	nvb_close(u);
	nvb_close(h);
	return 0;
}

static int t_expect_uid(void)
{
	struct nvb_fetch_opts o;
	struct nvb_entry e;
	struct nvb *h, *g;
	unsigned char blob[24], got[24];
	int fd = -1, before, r;
	int64_t t0;

	rnd(blob, sizeof(blob));
	OPEN(h);
	OPEN(g);
	OK(nvb_publish(h, nm("ex"), memfd_rand(64, NULL), blob, sizeof(blob), NULL, NULL));
	/* the expected publisher (us, euid 0) is accepted */
	OK(nvb_fetch(g, nm("ex"), fexp(0, geteuid(), 0), got, sizeof(got), &e, &fd));
	CHECK(fd >= 0, "no fd");
	CHECK(!memcmp(blob, got, sizeof(blob)), "blob");
	EXPECT(e.uid, geteuid());
	close(fd);
	/* anyone else's entry of that name does not exist for it (C3): -ENOENT, no fd; WAIT waits */
	before = fd_count();
	fd = 12345;
	EXPECT(nvb_fetch(g, nm("ex"), fexp(0, 4321, 0), got, sizeof(got), NULL, &fd), -ENOENT);
	EXPECT(fd, -1);
	t0 = now_ns();
	EXPECT(nvb_fetch(g, nm("ex"), fexp(NVB_FETCH_WAIT, 4321, 100000000LL), got, sizeof(got),
			 NULL, &fd), -ETIMEDOUT);
	CHECK(now_ns() - t0 >= 90000000LL, "waited %lld ns", (long long)(now_ns() - t0));
	EXPECT(fd_count(), before);
	/* -ENOENT is still -ENOENT, -ETIMEDOUT still -ETIMEDOUT */
	EXPECT(nvb_fetch(g, nm("nope"), fexp(0, 0, 0), NULL, 0, NULL, NULL), -ENOENT);
	EXPECT(nvb_fetch(g, nm("nope"), fexp(NVB_FETCH_WAIT, 0, 50000000LL), NULL, 0, NULL, NULL),
	       -ETIMEDOUT);
	/* bad arguments: expect_uid without the flag, an id no namespace maps */
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.expect_uid = 7;
	EXPECT(nvb_fetch(g, nm("ex"), &o, got, sizeof(got), NULL, NULL), -EINVAL);
	CHECK(strstr(nvb_last_error(g), "without NVB_FETCH_EXPECT_UID"), "%s", nvb_last_error(g));
	EXPECT(nvb_fetch(g, nm("ex"), fexp(0, (uint32_t)-1, 0), got, sizeof(got), NULL, NULL), -EINVAL);
	/* a caller built before .expect_uid existed: the field is not read */
	o.sz = offsetof(struct nvb_fetch_opts, expect_uid);
	OK(nvb_fetch(g, nm("ex"), &o, got, sizeof(got), NULL, NULL));
	/* the raw ABI: the same answers */
	{
		struct nvbridge_fetch f;

		memset(&f, 0, sizeof(f));
		f.size = sizeof(f);
		f.flags = NVBRIDGE_FETCH_EXPECT_UID;
		f.expect_uid = 4321;
		snprintf(f.name, sizeof(f.name), "%s", nm("ex"));
		f.blob = (uintptr_t)got;
		f.blob_cap = sizeof(got);
		EXPECT(nvb__xfer(g, NVBRIDGE_IOC_FETCH, &f), -ENOENT);
		f.expect_uid = (uint32_t)-1;
		EXPECT(nvb__xfer(g, NVBRIDGE_IOC_FETCH, &f), -EINVAL);
	}
	/* translation through a user namespace */
	r = reap(spawn(expect_userns_child, NULL));
	if (r != 77)
		EXPECT(r, 0);
	nvb_close(g);
	nvb_close(h);
	if (r == 77)
		printf("    (user-namespace part skipped: no user namespaces here)\n");
	return 0;
}

/* a squatter, uid 2200, takes names first */
static int squat_child(void *p)
{
	struct sync *s = p;
	struct nvb *h;
	gid_t g = 3200;

	if (become(2200, 3200, 1, &g))
		FAIL("become");
	OPEN(h);
	OK(nvb_publish(h, nm("svc"), memfd_rand(16, NULL), NULL, 0, pol(NVB_ACCESS_SCOPE, 0, 0), NULL));
	OK(nvb_publish(h, nm("priv"), memfd_rand(16, NULL), NULL, 0, NULL, NULL));	/* OWNER */
	sync_post(s->a[1]);
	CHECK(sync_wait(s->b[0]) == 0, "parent gone");	/* parent is waiting on "late" */
	usleep(100000);
	OK(nvb_publish(h, nm("late"), memfd_rand(16, NULL), NULL, 0, pol(NVB_ACCESS_SCOPE, 0, 0), NULL));
	CHECK(sync_wait(s->b[0]) == 0, "parent gone");
	nvb_close(h);
	return 0;
}

/* another user, 2300: the OWNER entry of 2200 does not exist for it, with or without expect_uid */
static int squat_other(void *p)
{
	gid_t g = 3300;

	(void)p;
	if (become(2300, 3300, 1, &g))
		FAIL("become");
	struct nvb *h;

	OPEN(h);
	EXPECT(nvb_fetch(h, nm("priv"), fexp(0, 0, 0), NULL, 0, NULL, NULL), -ENOENT);
	EXPECT(nvb_fetch(h, nm("priv"), fexp(0, 2200, 0), NULL, 0, NULL, NULL), -ENOENT);
	EXPECT(nvb_fetch(h, nm("priv"), NULL, NULL, 0, NULL, NULL), -ENOENT);
	EXPECT(nvb_fetch(h, nm("svc"), fexp(0, 0, 0), NULL, 0, NULL, NULL), -ENOENT);
	OK(nvb_fetch(h, nm("svc"), fexp(0, 2200, 0), NULL, 0, NULL, NULL));
	nvb_close(h);
	return 0;
}

static int t_expect_uid_squatter(void)
{
	struct nvb_entry e;
	struct nvb *h;
	struct sync s;
	int fd = -1, before;
	int64_t t0;
	pid_t p;

	OPEN(h);
	sync_init(&s);
	p = spawn(squat_child, &s);
	CHECK(sync_wait(s.a[0]) == 0, "squatter did not publish (%d)", reap(p));
	/* without the guard the squatter's file is handed out: the threat */
	OK(nvb_fetch(h, nm("svc"), NULL, NULL, 0, &e, &fd));
	EXPECT(e.uid, 2200);
	CHECK(fd >= 0, "no fd");
	close(fd);
	/* with it: the squatter's entry is invisible, no fd */
	before = fd_count();
	EXPECT(nvb_fetch(h, nm("svc"), fexp(0, 0, 0), NULL, 0, NULL, &fd), -ENOENT);
	EXPECT(fd, -1);
	EXPECT(fd_count(), before);
	OK(nvb_fetch(h, nm("svc"), fexp(0, 2200, 0), NULL, 0, NULL, &fd));
	close(fd);
	EXPECT(reap(spawn(squat_other, NULL)), 0);
	/* names are owned (C3): root publishes "svc" too; each owner addresses its own */
	OK(nvb_publish(h, nm("svc"), memfd_rand(16, NULL), NULL, 0, NULL, NULL));
	OK(nvb_fetch(h, nm("svc"), fexp(0, 0, 0), NULL, 0, &e, &fd));
	EXPECT(e.uid, 0);
	close(fd);
	OK(nvb_fetch(h, nm("svc"), fexp(0, 2200, 0), NULL, 0, &e, &fd));
	EXPECT(e.uid, 2200);
	close(fd);
	/* two it may use, no owner named: ambiguous, at once, also with WAIT */
	EXPECT(nvb_fetch(h, nm("svc"), NULL, NULL, 0, NULL, NULL), -ENOTUNIQ);
	EXPECT(nvb_fetch(h, nm("svc"), fwait(-1, 0), NULL, 0, NULL, NULL), -ENOTUNIQ);
	OK(nvb_unpublish(h, 0, nm("svc")));	/* ours, not the squatter's */
	OK(nvb_fetch(h, nm("svc"), fexp(0, 2200, 0), NULL, 0, NULL, &fd));
	close(fd);
	/* a waiter expecting root: the squatter's late publish does not end the wait */
	sync_post(s.b[1]);
	t0 = now_ns();
	EXPECT(nvb_fetch(h, nm("late"), fexp(NVB_FETCH_WAIT, 0, 500000000LL), NULL, 0, NULL, &fd),
	       -ETIMEDOUT);
	EXPECT(fd, -1);
	CHECK(now_ns() - t0 >= 450000000LL, "the wait ended early");
	sync_post(s.b[1]);
	EXPECT(reap(p), 0);
	nvb_close(h);
	return 0;
}

/* ---- PUBLISH refuses every AF_UNIX socket; O_PATH is -EBADF ---- */
static int t_unix_socket_refused(void)
{
	static const int types[] = { SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct nvb *h;
	int sv[2], s, fd = -1;
	struct stat st;

	OPEN(h);
	for (unsigned int i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		CHECK(socketpair(AF_UNIX, types[i] | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
		EXPECT(nvb_publish(h, nm("us"), sv[0], NULL, 0, NULL, NULL), -EINVAL);
		EXPECT(nvb_publish(h, nm("us"), sv[1], "b", 1, NULL, NULL), -EINVAL);
		close(sv[0]);
		close(sv[1]);
	}
	CHECK(strstr(nvb_last_error(h), "Unix socket"), "%s", nvb_last_error(h));
	/* unconnected, and a listening one */
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	EXPECT(nvb_publish(h, nm("us"), s, NULL, 0, NULL, NULL), -EINVAL);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/nvb-cf-%d.sock", getpid());
	unlink(sa.sun_path);
	CHECK(bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(s, 1) == 0, "listen");
	EXPECT(nvb_publish(h, nm("us"), s, NULL, 0, NULL, NULL), -EINVAL);
	close(s);
	unlink(sa.sun_path);
	EXPECT(nvb_fetch(h, nm("us"), NULL, NULL, 0, NULL, NULL), -ENOENT);
	/* other sockets and pipes too: publishable files are an allowlist (C7) */
	s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0);	/* NETLINK_ROUTE */
	CHECK(s >= 0, "netlink socket: %s", strerror(errno));
	EXPECT(nvb_publish(h, nm("nl"), s, NULL, 0, NULL, NULL), -EINVAL);
	close(s);
	EXPECT(nvb_fetch(h, nm("nl"), NULL, NULL, 0, NULL, &fd), -ENOENT);
	CHECK(pipe2(sv, O_CLOEXEC) == 0, "pipe");
	EXPECT(nvb_publish(h, nm("pipe"), sv[1], NULL, 0, NULL, NULL), -EINVAL);
	close(sv[0]);
	close(sv[1]);
	(void)st;
	nvb_close(h);
	return 0;
}

static int t_opath_fd(void)
{
	struct nvbridge_publish p;
	struct nvb *h;
	int fd;

	OPEN(h);
	fd = open("/proc/self/exe", O_PATH | O_CLOEXEC);
	CHECK(fd >= 0, "O_PATH open");
	EXPECT(nvb_publish(h, nm("op"), fd, NULL, 0, NULL, NULL), -EBADF);
	CHECK(strstr(nvb_last_error(h), "O_PATH"), "%s", nvb_last_error(h));
	close(fd);
	fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	EXPECT(nvb_publish(h, nm("op"), fd, "b", 1, pol(NVB_ACCESS_SCOPE, 0, 0), NULL), -EBADF);
	close(fd);
	EXPECT(nvb_fetch(h, nm("op"), NULL, NULL, 0, NULL, NULL), -ENOENT);
	/* a failed publish leaves .id 0 (raw ABI) */
	OK(nvb_publish(h, nm("op"), -1, "b", 1, NULL, NULL));
	memset(&p, 0, sizeof(p));
	p.size = sizeof(p);
	p.fd = -1;
	p.id = 0x5a5a5a5a5a5aULL;
	snprintf(p.name, sizeof(p.name), "%s", nm("op"));
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, &p), -EEXIST);
	EXPECT(p.id, 0);
	nvb_close(h);
	return 0;
}

/*
 * ---- pid 0 once the publisher's process is gone ----
 * An entry belongs to the open file / connection, not to a process, and the
 * pid an importer sees is the publisher's (the opener's, C6) while that
 * process exists.  P opens a handle, publishes, and hands every descriptor
 * the handle opened (device file, or broker connection and its event
 * channel) to an unrelated holder G over SCM_RIGHTS, then exits without
 * closing: the library's fork rule (a forked child's copy is closed, calls
 * give -ECHILD) does not come into it.  The entry must live on while G
 * holds the descriptors, its pid read P's while P is a zombie and 0 once P
 * is reaped, and G's death must revoke it as EXITED, with pid 0.
 */
struct pidexit { struct sync s; int sp[2]; };

static int pidexit_holder(void *p)
{
	struct pidexit *x = p;
	union { struct cmsghdr c; char b[CMSG_SPACE(16 * sizeof(int))]; } cm;
	char c;
	struct iovec io = { &c, 1 };
	struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1,
			    .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };

	close(x->sp[0]);
	CHECK(recvmsg(x->sp[1], &m, MSG_CMSG_CLOEXEC) == 1, "no descriptors from P");
	CHECK(CMSG_FIRSTHDR(&m) && CMSG_FIRSTHDR(&m)->cmsg_type == SCM_RIGHTS, "no SCM_RIGHTS");
	sync_post(x->s.b[1]);		/* holding them */
	sync_wait(x->s.a[0]);		/* until told; exiting closes them */
	return 0;
}

static int pidexit_pub(void *p)
{
	struct pidexit *x = p;
	union { struct cmsghdr c; char b[CMSG_SPACE(16 * sizeof(int))]; } cm;
	int fds[16], n = 0, lo;
	char c = 1;
	struct iovec io = { &c, 1 };
	struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = cm.b };
	struct nvb *h;

	close(x->sp[1]);
	lo = dup(0);		/* the handle's descriptors are those from here up */
	close(lo);
	OPEN(h);
	OK(nvb_publish(h, nm("pe"), memfd_rand(16, NULL), NULL, 0, pol(NVB_ACCESS_SCOPE, 0, 0), NULL));
	for (int fd = lo; fd < lo + 64 && n < 16; fd++)
		if (fd != x->sp[0] && fcntl(fd, F_GETFD) >= 0)
			fds[n++] = fd;
	CHECK(n > 0, "the handle has no descriptors");
	memset(&cm, 0, sizeof(cm));
	m.msg_controllen = CMSG_SPACE(n * sizeof(int));
	cm.c.cmsg_level = SOL_SOCKET;
	cm.c.cmsg_type = SCM_RIGHTS;
	cm.c.cmsg_len = CMSG_LEN(n * sizeof(int));
	memcpy(CMSG_DATA(&cm.c), fds, n * sizeof(int));
	CHECK(sendmsg(x->sp[0], &m, MSG_NOSIGNAL) == 1, "sendmsg: %s", strerror(errno));
	return 0;	/* exits without nvb_close(): G holds the descriptors */
}

static int t_pid_after_exit(void)
{
	struct nvb_entry e, l[64];
	struct nvb_event ev;
	struct pidexit x;
	struct nvb *w;
	siginfo_t si;
	uint64_t cur = 0, id;
	int fd = -1, n, seen = 0;
	pid_t p, g;

	sync_init(&x.s);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, x.sp) == 0, "socketpair");
	g = spawn(pidexit_holder, &x);
	OPEN(w);
	OK(nvb_watch(w, nm("pe"), 0, NULL));
	p = spawn(pidexit_pub, &x);
	close(x.sp[0]);
	close(x.sp[1]);
	EXPECT(ev1(w, &ev), 1);
	EXPECT(ev.type, NVB_EVENT_PUBLISHED);
	EXPECT(ev.pid, p);
	id = ev.id;
	CHECK(sync_wait(x.s.b[0]) == 0, "the holder did not get the descriptors");
	/* P has exited but is not reaped: a zombie still has its pid */
	CHECK(waitid(P_PID, (id_t)p, &si, WEXITED | WNOWAIT) == 0, "waitid");
	OK(nvb_fetch(w, nm("pe"), NULL, NULL, 0, &e, &fd));
	EXPECT(e.pid, p);
	close(fd);
	EXPECT(reap(p), 0);
	/* reaped: the number may be anyone's now; the entry lives on (G holds it) */
	OK(nvb_fetch(w, nm("pe"), NULL, NULL, 0, &e, &fd));
	EXPECT(e.id, id);
	EXPECT(e.pid, 0);
	EXPECT(e.uid, geteuid());
	CHECK(fd >= 0, "no fd");
	close(fd);
	while ((n = nvb_list(w, &cur, l, 64)) > 0)
		for (int i = 0; i < n; i++)
			if (l[i].id == id) {
				EXPECT(l[i].pid, 0);
				seen++;
			}
	EXPECT(seen, 1);
	EXPECT(nvb_event_read(w, &ev, 1, 0), -EAGAIN);	/* nothing revoked so far */
	/* G exits: the entry goes, as EXITED, reported with pid 0 as well */
	sync_post(x.s.a[1]);
	EXPECT(reap(g), 0);
	EXPECT(ev1(w, &ev), 1);
	EXPECT(ev.type, NVB_EVENT_REVOKED);
	EXPECT(ev.reason, NVB_REVOKE_EXITED);
	EXPECT(ev.id, id);
	EXPECT(ev.pid, 0);
	EXPECT(nvb_fetch(w, nm("pe"), NULL, NULL, 0, NULL, NULL), -ENOENT);
	nvb_close(w);
	return 0;
}

/* ---- events through io_uring and poll ---- */
static int t_events_library_ring(void)
{
	struct nvb *h, *w;
	struct nvb_event e[4];
	int64_t t0;

	OPEN(h);
	OPEN(w);
	OK(nvb_watch(w, nm("lr"), 0, NULL));
	t0 = now_ns();
	EXPECT(nvb_event_read(w, e, 4, 150000000LL), -ETIMEDOUT);
	CHECK(now_ns() - t0 >= 140000000LL, "returned early");
	EXPECT(nvb_event_read(w, e, 4, 0), -EAGAIN);
	pid_t p = fork();

	if (p == 0) {
		usleep(100000);
		struct nvb *c;

		if (nvb_open(NULL, &c) || nvb_publish(c, nm("lr"), -1, NULL, 0, NULL, NULL))
			_exit(1);
		_exit(0);	/* publish, then revoke by exit */
	}
	EXPECT(nvb_event_read(w, e, 1, -1), 1);	/* blocks in the ring until it comes */
	EXPECT(e[0].type, NVB_EVENT_PUBLISHED);
	EXPECT(ev1(w, e), 1);
	EXPECT(e[0].type, NVB_EVENT_REVOKED);
	EXPECT(reap(p), 0);
	nvb_close(w);
	nvb_close(h);
	return 0;
}

static int t_events_app_ring(void)
{
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	struct nvb *h, *w;
	struct nvb_event e[4];
	unsigned char buf[4 * NVB_EVENT_RECORD_SIZE];
	uint64_t ids[2];
	int n, got = 0;

	OPEN(h);
	OPEN(w);
	if (io_uring_queue_init(8, &ring, 0)) {
		nvb_close(w);
		nvb_close(h);
		SKIP("io_uring unavailable");
	}
	OK(nvb_watch(w, nm("ar"), NVB_WATCH_PREFIX, NULL));
	struct io_uring_sqe scratch;

	EXPECT(nvb_prep_event_read(&scratch, w, buf, 10), -EINVAL);
	/* an unrelated op on the same ring */
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data64(sqe, 42);
	OK(nvb_prep_event_read(io_uring_get_sqe(&ring), w, buf, sizeof(buf)));
	CHECK(io_uring_submit(&ring) == 2, "submit");
	OK(io_uring_wait_cqe(&ring, &cqe));
	CHECK(!nvb_cqe_is_event(w, cqe) && cqe->user_data == 42, "nop misrecognised");
	io_uring_cqe_seen(&ring, cqe);
	OK(nvb_publish(h, nm("ar1"), -1, NULL, 0, NULL, &ids[0]));
	OK(nvb_publish(h, nm("ar2"), -1, NULL, 0, NULL, &ids[1]));
	while (got < 2) {
		struct __kernel_timespec ts = { .tv_sec = 2 };

		OK(io_uring_wait_cqe_timeout(&ring, &cqe, &ts));
		CHECK(nvb_cqe_is_event(w, cqe), "completion not recognised as an event");
		n = nvb_event_parse(w, buf, cqe->res, e, 4);
		io_uring_cqe_seen(&ring, cqe);
		CHECK(n >= 1, "parse %d", n);
		for (int k = 0; k < n; k++, got++) {
			EXPECT(e[k].type, NVB_EVENT_PUBLISHED);
			EXPECT(e[k].id, ids[got]);
		}
		if (got < 2) {
			OK(nvb_prep_event_read(io_uring_get_sqe(&ring), w, buf, sizeof(buf)));
			io_uring_submit(&ring);
		}
	}
	EXPECT(nvb_event_parse(w, buf, 7, e, 4), -EPROTO);
	io_uring_queue_exit(&ring);
	nvb_close(w);
	nvb_close(h);
	return 0;
}

static int t_events_poll(void)
{
	struct nvb *h, *w;
	struct nvb_event e;
	struct pollfd p;

	OPEN(h);
	OPEN(w);
	OK(nvb_watch(w, nm("po"), 0, NULL));
	p.fd = nvb_event_fd(w);
	p.events = POLLIN;
	CHECK(p.fd >= 0, "event fd");
	EXPECT(poll(&p, 1, 50), 0);
	CHECK(fcntl(p.fd, F_GETFL) & O_NONBLOCK, "event fd is not O_NONBLOCK");
	OK(nvb_publish(h, nm("po"), -1, NULL, 0, NULL, NULL));
	EXPECT(poll(&p, 1, 2000), 1);
	CHECK(p.revents & POLLIN, "revents %x", p.revents);
	EXPECT(nvb_event_read(w, &e, 1, 0), 1);
	nvb_close(w);
	nvb_close(h);
	return 0;
}

/* ---- concurrency ---- */
#define NCLIENTS 200
static pthread_barrier_t bar;
static int cfail;

static void pattern(int i, unsigned char *b, size_t n)
{
	uint32_t x = 0x9e3779b9u * (uint32_t)(i + 1) ^ (uint32_t)getpid();

	for (size_t k = 0; k < n; k++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		b[k] = (unsigned char)x;
	}
}

static void *client_thread(void *arg)
{
	int i = (int)(intptr_t)arg, peer = (i + 1) % NCLIENTS, fd = -1, mfd;
	unsigned char blob[64], want[64], data[256], wdata[256];
	char name[NVB_NAME_MAX], pname[NVB_NAME_MAX];
	struct nvb_entry e;
	struct nvb *h;

	snprintf(name, sizeof(name), "%sc%d", pfx, i);
	snprintf(pname, sizeof(pname), "%sc%d", pfx, peer);
	if (nvb_open(NULL, &h)) {
		__atomic_add_fetch(&cfail, 1, __ATOMIC_SEQ_CST);
		pthread_barrier_wait(&bar);
		pthread_barrier_wait(&bar);
		return NULL;
	}
	pattern(i, blob, sizeof(blob));
	pattern(i + 1000, data, sizeof(data));
	mfd = memfd_create("c", MFD_CLOEXEC);
	if (write(mfd, data, sizeof(data)) != sizeof(data) ||
	    nvb_publish(h, name, mfd, blob, sizeof(blob), pol(NVB_ACCESS_SCOPE, 0, 0), NULL))
		__atomic_add_fetch(&cfail, 1, __ATOMIC_SEQ_CST);
	pthread_barrier_wait(&bar);
	pattern(peer, want, sizeof(want));
	pattern(peer + 1000, wdata, sizeof(wdata));
	memset(blob, 0, sizeof(blob));
	if (nvb_fetch(h, pname, fwait(20000000000LL, 0), blob, sizeof(blob), &e, &fd) ||
	    memcmp(blob, want, sizeof(want)) || fd < 0 ||
	    pread(fd, data, sizeof(data), 0) != sizeof(data) || memcmp(data, wdata, sizeof(data)))
		__atomic_add_fetch(&cfail, 1, __ATOMIC_SEQ_CST);
	if (fd >= 0)
		close(fd);
	pthread_barrier_wait(&bar);	/* nobody revokes before everyone fetched */
	close(mfd);
	nvb_close(h);
	return NULL;
}

static int t_200_clients(void)
{
	pthread_t t[NCLIENTS];
	struct rlimit rl;

	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	pthread_barrier_init(&bar, NULL, NCLIENTS);
	for (int i = 0; i < NCLIENTS; i++)
		if (pthread_create(&t[i], NULL, client_thread, (void *)(intptr_t)i))
			FAIL("pthread_create %d", i);
	for (int i = 0; i < NCLIENTS; i++)
		pthread_join(t[i], NULL);
	EXPECT(cfail, 0);
	return 0;
}

static struct nvb *shared_h;
static void *share_worker(void *arg)
{
	int k = (int)(intptr_t)arg;
	char n[NVB_NAME_MAX];
	unsigned char b[16], o[16];

	for (int j = 0; j < 100; j++) {
		uint64_t id;

		snprintf(n, sizeof(n), "%st%d.%d", pfx, k, j);
		pattern(k * 1000 + j, b, sizeof(b));
		if (nvb_publish(shared_h, n, -1, b, sizeof(b), NULL, &id) ||
		    nvb_fetch(shared_h, n, NULL, o, sizeof(o), NULL, NULL) || memcmp(b, o, sizeof(b)) ||
		    nvb_unpublish(shared_h, id, NULL))
			__atomic_add_fetch(&cfail, 1, __ATOMIC_SEQ_CST);
	}
	return NULL;
}

static void *waiter(void *arg)
{
	(void)arg;
	if (nvb_fetch(shared_h, nm("late"), fwait(20000000000LL, 0), NULL, 0, NULL, NULL))
		__atomic_add_fetch(&cfail, 100000, __ATOMIC_SEQ_CST);
	return NULL;
}

static int t_threads_one_handle(void)
{
	pthread_t t[8], wt;
	struct nvb *p;

	OPEN(shared_h);
	OPEN(p);
	pthread_create(&wt, NULL, waiter, NULL);
	usleep(50000);	/* the waiter is waiting: the others must still progress */
	for (int i = 0; i < 8; i++)
		pthread_create(&t[i], NULL, share_worker, (void *)(intptr_t)i);
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	EXPECT(cfail, 0);
	OK(nvb_publish(p, nm("late"), -1, NULL, 0, NULL, NULL));
	pthread_join(wt, NULL);
	EXPECT(cfail, 0);
	nvb_close(p);
	nvb_close(shared_h);
	return 0;
}

/*
 * Many threads of one handle fetching the largest blob at once: the broker
 * stops reading a client whose replies it cannot deliver, so a thread that
 * blocked in send() while holding the handle's lock kept the reading thread
 * from handing replies out (a deadlock before the fix: 300 threads hung).
 */
static unsigned char *bp_blob;
static uint32_t bp_size;

static void *bp_worker(void *arg)
{
	unsigned char *o = malloc(bp_size);

	for (int j = 0; o && j < 50; j++) {
		memset(o, 0, bp_size);
		if (nvb_fetch(shared_h, nm("bp"), NULL, o, bp_size, NULL, NULL) != 0 ||
		    memcmp(o, bp_blob, bp_size))
			__atomic_add_fetch(&cfail, 1, __ATOMIC_SEQ_CST);
	}
	if (!o)
		__atomic_add_fetch(&cfail, 1, __ATOMIC_SEQ_CST);
	free(o);
	return arg;
}

static int t_threads_reply_backpressure(void)
{
	enum { NT = 300 };
	static pthread_t t[NT];
	struct nvb_info i;
	int n = 0;

	OPEN(shared_h);
	memset(&i, 0, sizeof(i));
	i.sz = sizeof(i);
	OK(nvb_info(shared_h, &i));
	bp_size = i.max_blob_size;
	bp_blob = malloc(bp_size);
	CHECK(bp_blob != NULL, "malloc");
	rnd(bp_blob, bp_size);
	OK(nvb_publish(shared_h, nm("bp"), -1, bp_blob, bp_size, NULL, NULL));
	for (; n < NT; n++)
		if (pthread_create(&t[n], NULL, bp_worker, NULL))
			break;
	CHECK(n >= 100, "only %d threads", n);
	for (int k = 0; k < n; k++)
		pthread_join(t[k], NULL);
	EXPECT(cfail, 0);
	nvb_close(shared_h);
	free(bp_blob);
	return 0;
}

/* ---- hostile clients and broker failure ---- */
static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *path = getenv("NVBRIDGE_SOCKET");
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path ? path : NVB_DEFAULT_SOCKET);
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa))) {
		close(s);
		return -1;
	}
	return s;
}

/* true when the broker closes s within 3 s */
static int dropped(int s)
{
	struct pollfd p = { s, POLLIN, 0 };
	char b[256];

	for (;;) {
		if (poll(&p, 1, 3000) != 1)
			return 0;
		ssize_t n = recv(s, b, sizeof(b), MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return 1;
		if (n < 0 && errno != EAGAIN)
			return 0;
	}
}

static int raw_hello(int s)
{
	struct nvbridge_wire_hdr h = { .magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
				       .type = NVBRIDGE_WIRE_HELLO, .arg_size = NVBRIDGE_WIRE_HELLO_SIZE };
	struct nvbridge_wire_hello hello = { .abi_version = NVBRIDGE_ABI_VERSION };
	unsigned char msg[sizeof(h) + sizeof(hello)], rb[512];
	struct iovec iov = { msg, sizeof(msg) };
	union { struct cmsghdr c; char b[CMSG_SPACE(sizeof(int))]; } cm;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			    .msg_controllen = sizeof(cm.b) };
	int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);

	memcpy(msg, &h, sizeof(h));
	memcpy(msg + sizeof(h), &hello, sizeof(hello));
	memset(&cm, 0, sizeof(cm));
	cm.c.cmsg_level = SOL_SOCKET;
	cm.c.cmsg_type = SCM_RIGHTS;
	cm.c.cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(&cm.c), &pidfd, sizeof(int));
	if (sendmsg(s, &m, MSG_NOSIGNAL) < 0)
		return -1;
	close(pidfd);
	iov.iov_base = rb;
	iov.iov_len = sizeof(rb);
	m.msg_controllen = sizeof(cm.b);
	if (recvmsg(s, &m, MSG_CMSG_CLOEXEC) <= 0)
		return -1;
	if (m.msg_controllen >= CMSG_LEN(sizeof(int))) {
		int evfd;

		memcpy(&evfd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
		close(evfd);
	}
	return ((struct nvbridge_wire_hdr *)rb)->result;
}

static int t_garbage_client(void)
{
	struct nvb *h;
	int s;

	OPEN(h);
	if (nvb_backend(h) == NVB_BACKEND_KERNEL) {
		/* the device's equivalent of garbage: nonsense ioctls, writes, short reads */
		int fd = nvb_event_fd(h);
		unsigned char junk[256];

		rnd(junk, sizeof(junk));
		EXPECT(ioctl(fd, _IOWR(NVBRIDGE_IOC_MAGIC, 0x7e, struct nvbridge_info), junk) < 0 ? -errno : 0, -ENOTTY);
		EXPECT(ioctl(fd, 0xdeadbeef, junk) < 0 ? -errno : 0, -ENOTTY);
		EXPECT(write(fd, junk, sizeof(junk)) < 0 ? -errno : 0, -EINVAL);
		EXPECT(read(fd, junk, 16) < 0 ? -errno : 0, -EINVAL);
		junk[0] = 0;
		junk[1] = junk[2] = junk[3] = 0x80;	/* size way too large */
		EXPECT(ioctl(fd, NVBRIDGE_IOC_PUBLISH, junk) < 0 ? -errno : 0, -E2BIG);
	} else {
		unsigned char junk[4096];
		struct nvbridge_wire_hdr hd = { .magic = NVBRIDGE_WIRE_MAGIC,
						.version = NVBRIDGE_WIRE_VERSION,
						.type = NVBRIDGE_WIRE_REQUEST,
						.cmd = NVBRIDGE_IOC_INFO, .arg_size = 500 };

		/* 1: random bytes before HELLO */
		s = raw_connect();
		CHECK(s >= 0, "connect");
		rnd(junk, 7);
		send(s, junk, 7, MSG_NOSIGNAL);
		CHECK(dropped(s), "random bytes not dropped");
		close(s);
		/* 2: after a good HELLO, a header that lies about the length */
		s = raw_connect();
		EXPECT(raw_hello(s), 0);
		memcpy(junk, &hd, sizeof(hd));
		send(s, junk, sizeof(hd) + 40, MSG_NOSIGNAL);
		CHECK(dropped(s), "length lie not dropped");
		close(s);
		/* 3: oversized message */
		s = raw_connect();
		EXPECT(raw_hello(s), 0);
		size_t big = NVBRIDGE_WIRE_HDR_SIZE + NVBRIDGE_WIRE_ARG_MAX + NVBRIDGE_WIRE_DATA_MAX + 4096;
		unsigned char *bb = calloc(1, big);

		rnd(bb, big);
		int sb = (int)big * 2;

		setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb));
		send(s, bb, big, MSG_NOSIGNAL);
		free(bb);
		CHECK(dropped(s), "oversized message not dropped");
		close(s);
		/* 4: a request before HELLO */
		s = raw_connect();
		memset(junk, 0, sizeof(junk));
		hd.arg_size = 40;
		memcpy(junk, &hd, sizeof(hd));
		send(s, junk, sizeof(hd) + 40, MSG_NOSIGNAL);
		CHECK(dropped(s), "request before HELLO not dropped");
		close(s);
		/* 5: fuzz: well-framed requests with random commands, sizes and
		 * contents; each gets an answer or a drop, the broker survives */
		static const uint32_t cmds[] = { NVBRIDGE_IOC_PUBLISH, NVBRIDGE_IOC_FETCH,
			NVBRIDGE_IOC_UNPUBLISH, NVBRIDGE_IOC_WATCH, NVBRIDGE_IOC_UNWATCH,
			NVBRIDGE_IOC_LIST, NVBRIDGE_IOC_INFO, 0x12345678 };
		int answered = 0, drops = 0;

		s = -1;
		for (int k = 0; k < 400; k++) {
			unsigned char r[8], msg[32 + 300 + 100], rep[8192];
			struct nvbridge_wire_hdr fh = { .magic = NVBRIDGE_WIRE_MAGIC,
							.version = NVBRIDGE_WIRE_VERSION,
							.type = NVBRIDGE_WIRE_REQUEST };

			if (s < 0) {
				s = raw_connect();
				CHECK(s >= 0 && raw_hello(s) == 0, "reconnect");
			}
			rnd(r, sizeof(r));
			fh.cmd = cmds[r[0] % 8];
			fh.seq = (uint32_t)k;
			fh.arg_size = r[1] % 4 ? 8 + (r[2] | (r[3] & 1) << 8) % 292 : r[2] % 8;
			fh.data_len = r[4] % 4 == 0 ? r[5] % 100 : 0;
			if (r[6] % 16 == 0)
				fh.type = (uint16_t)(r[7] % 6);	/* sometimes a wrong type */
			memcpy(msg, &fh, sizeof(fh));
			rnd(msg + 32, fh.arg_size + fh.data_len);
			if (fh.arg_size >= 4 && r[7] % 2) {
				memcpy(msg + 32, &fh.arg_size, 4);	/* a size that agrees */
				if (fh.cmd == NVBRIDGE_IOC_PUBLISH && fh.arg_size >= 12)
					memset(msg + 32 + 8, 0xff, 4);	/* .fd = -1 */
			}
			send(s, msg, 32 + fh.arg_size + fh.data_len, MSG_NOSIGNAL);
			if (fh.type == NVBRIDGE_WIRE_CANCEL && !fh.arg_size && !fh.data_len)
				continue;	/* a well-formed CANCEL of nothing: no answer by design */
			struct pollfd pf = { s, POLLIN, 0 };

			if (poll(&pf, 1, 2000) != 1)
				FAIL("no answer and no drop for fuzz message %d", k);
			ssize_t n = recv(s, rep, sizeof(rep), MSG_DONTWAIT);

			if (n <= 0) {
				drops++;
				close(s);
				s = -1;
			} else {
				answered++;
			}
		}
		if (s >= 0)
			close(s);
		CHECK(answered > 50 && drops > 10, "fuzz answered %d dropped %d", answered, drops);
	}
	/* everyone else is still served */
	OK(nvb_publish(h, nm("after-garbage"), -1, "ok", 2, NULL, NULL));
	struct nvb *g;
	char b[2];

	OPEN(g);
	OK(nvb_fetch(g, nm("after-garbage"), NULL, b, 2, NULL, NULL));
	nvb_close(g);
	nvb_close(h);
	return 0;
}

static pid_t start_daemon(const char *bin, const char *sock)
{
	pid_t p = fork();

	if (p == 0) {
		int dn = open("/dev/null", O_WRONLY);

		dup2(dn, 2);
		execl(bin, bin, "--socket", sock, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200; i++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
		if (!connect(s, (struct sockaddr *)&sa, sizeof(sa))) {
			close(s);
			return p;
		}
		close(s);
		usleep(10000);
	}
	return -1;
}

struct rst { struct nvb *h; int ret; };
static void *rst_waiter(void *a)
{
	struct rst *r = a;

	r->ret = nvb_fetch(r->h, "never", fwait(-1, 0), NULL, 0, NULL, NULL);
	return NULL;
}

static int t_broker_restart(void)
{
	const char *bin = getenv("NVB_TEST_DAEMON");
	struct nvb_opts o = { .sz = sizeof(o), .backend = NVB_BACKEND_BROKER };
	char sock[108];
	struct nvb *h, *w;
	struct nvb_event e;
	struct rst r;
	pthread_t t;
	pid_t d;
	int64_t t0;

	if (backend == NVB_BACKEND_KERNEL)
		SKIP("kernel backend: there is no broker process to restart");
	if (!bin)
		FAIL("NVB_TEST_DAEMON (path to nvbridged) not set");
	snprintf(sock, sizeof(sock), "/tmp/nvb-restart-%d.sock", getpid());
	o.socket_path = sock;
	d = start_daemon(bin, sock);
	CHECK(d > 0, "daemon did not start");
	OK(nvb_open(&o, &h));
	OK(nvb_open(&o, &w));
	OK(nvb_publish(h, "r1", -1, NULL, 0, NULL, NULL));
	OK(nvb_watch(h, "", NVB_WATCH_PREFIX, NULL));
	r.h = w;
	pthread_create(&t, NULL, rst_waiter, &r);
	usleep(100000);
	kill(d, SIGKILL);
	reap(d);
	t0 = now_ns();
	pthread_join(t, NULL);
	EXPECT(r.ret, -ECONNRESET);	/* the waiting fetch: an error, not a hang */
	int ret = nvb_publish(h, "r2", -1, NULL, 0, NULL, NULL);

	CHECK(ret == -ECONNRESET || ret == -ENOTCONN, "publish after broker death: %d", ret);
	CHECK(strstr(nvb_last_error(h), "broker"), "unclear error: %s", nvb_last_error(h));
	ret = nvb_event_read(h, &e, 1, 2000000000LL);
	CHECK(ret == -ECONNRESET || ret == -ENOTCONN, "event read after broker death: %d", ret);
	CHECK(now_ns() - t0 < 3000000000LL, "took too long");
	nvb_close(h);
	nvb_close(w);
	/* no broker: a clear refusal */
	ret = nvb_open(&o, &h);
	CHECK(ret == -ECONNREFUSED || ret == -ENOENT, "open without broker: %d", ret);
	CHECK(strstr(nvb_open_error(), "nvbridged"), "%s", nvb_open_error());
	/* restart: fresh state, works */
	d = start_daemon(bin, sock);
	CHECK(d > 0, "daemon did not restart");
	OK(nvb_open(&o, &h));
	EXPECT(nvb_fetch(h, "r1", NULL, NULL, 0, NULL, NULL), -ENOENT);
	OK(nvb_publish(h, "r1", -1, NULL, 0, NULL, NULL));
	nvb_close(h);
	kill(d, SIGTERM);
	EXPECT(reap(d), 0);	/* clean shutdown */
	CHECK(access(sock, F_OK) != 0, "socket not removed at SIGTERM");
	return 0;
}

static int t_backend_select(void)
{
	struct nvb_opts o = { .sz = sizeof(o), .backend = 7 };
	struct nvb *h;

	EXPECT(nvb_open(&o, &h), -EINVAL);
	CHECK(strstr(nvb_open_error(), "backend"), "%s", nvb_open_error());
	o.backend = NVB_BACKEND_AUTO;
	o.flags = 1;
	EXPECT(nvb_open(&o, &h), -EINVAL);
	o.flags = 0;
	o.sz = 4;
	EXPECT(nvb_open(&o, &h), -EINVAL);
	OPEN(h);
	EXPECT(nvb_backend(h), backend);
	nvb_close(h);
	if (backend == NVB_BACKEND_KERNEL) {
		o.sz = sizeof(o);
		o.backend = NVB_BACKEND_BROKER;
		o.socket_path = "/nonexistent/nvb.sock";
		EXPECT(nvb_open(&o, &h), -ENOENT);
	} else {
		o.sz = sizeof(o);
		o.backend = NVB_BACKEND_KERNEL;
		o.device_path = "/nonexistent/nvbridge";
		CHECK(nvb_open(&o, &h) < 0, "kernel backend on a missing node opened");
	}
	return 0;
}

/* ================= runner ================= */
#include "contract.c"
#include "memfiles.c"
#include "gids.c"

static const struct tcase { const char *name; int (*fn)(void); } cases[] = {
	{ "open_info", t_open_info },
	{ "backend_select", t_backend_select },
	{ "share_memfd_two_processes", t_share_memfd },
	{ "blob_roundtrip", t_blob_roundtrip },
	{ "opts_sz_convention", t_opts_sz_convention },
	{ "name_marker_no_fd_no_blob", t_name_marker },
	{ "name_validation", t_name_validation },
	{ "duplicate_name", t_duplicate },
	{ "ids_increase", t_ids },
	{ "fetch_missing", t_fetch_missing },
	{ "unpublish", t_unpublish },
	{ "close_revokes", t_close_revokes },
	{ "fetch_does_not_consume", t_fetch_not_consumed },
	{ "event_published_fields", t_event_published },
	{ "event_revoked_closed", t_event_closed },
	{ "event_revoked_exited", t_event_exited },
	{ "event_revoked_sigkill", t_event_sigkill },
	{ "watch_prefix", t_watch_prefix },
	{ "watch_manage_limits", t_watch_manage },
	{ "event_overflow", t_event_overflow },
	{ "access_owner", t_access_owner },
	{ "access_scope", t_access_scope },
	{ "access_group", t_access_group },
	{ "access_uid", t_access_uid },
	{ "access_gid", t_access_gid },
	{ "access_cap_ipc_owner", t_access_cap_ipc_owner },
	{ "access_invalid", t_access_invalid },
	{ "list_cursor", t_list },
	{ "ipc_namespace_scope", t_ipc_namespace },
	{ "user_namespace_ids", t_user_namespace },
	{ "pid_namespace_pids", t_pid_namespace },
	{ "wait_wakes_on_publish", t_wait_publish },
	{ "wait_timeout", t_wait_timeout },
	{ "wait_huge_timeout", t_wait_huge_timeout },
	{ "wait_signal", t_wait_signal },
	{ "wait_signal_second_thread", t_wait_signal_second_thread },
	{ "quota", t_quota },
	{ "blob_limits", t_blob_limits },
	{ "bad_fd", t_bad_fd },
	{ "self_publish_refused", t_self_publish },
	{ "io_uring_refused", t_io_uring_refused },
	{ "fetched_fd_cloexec", t_cloexec },
	{ "no_fd_leak", t_no_fd_leak },
	{ "unknown_flags", t_unknown_flags },
	{ "struct_sizes", t_struct_sizes },
	{ "struct_fields", t_struct_fields },
	{ "events_library_ring", t_events_library_ring },
	{ "events_app_ring", t_events_app_ring },
	{ "events_poll", t_events_poll },
	{ "clients_200", t_200_clients },
	{ "threads_one_handle", t_threads_one_handle },
	{ "threads_reply_backpressure", t_threads_reply_backpressure },
	{ "garbage_client", t_garbage_client },
	{ "broker_restart", t_broker_restart },
	{ "fetch_expect_uid", t_expect_uid },
	{ "fetch_expect_uid_squatter", t_expect_uid_squatter },
	{ "unix_socket_refused", t_unix_socket_refused },
	{ "opath_fd_ebadf", t_opath_fd },
	{ "pid_zero_after_exit", t_pid_after_exit },
	/* contract v2 (contract.c) */
	{ "cmd_full_number_enotty", t_cmd_full_number },
	{ "quota_bytes_enospc", t_quota_bytes },
	{ "fetch_rejects_ignored_inputs", t_fetch_rejects },
	{ "unpublish_id_and_name_einval", t_unpublish_rejects },
	{ "list_rejects", t_list_rejects },
	{ "struct_4097_e2big", t_struct_page_plus_one },
	{ "denied_is_absent", t_denied_is_absent },
	{ "info_counts_policies", t_info_counts_policies },
	{ "names_owned", t_names_owned },
	{ "unpublish_invisible_id", t_unpublish_invisible_id },
	{ "publish_allowlist", t_publish_allowlist },
	/* memory-backed regular files only (memfiles.c) */
	{ "publish_memfd_tmpfs", t_publish_memfd_tmpfs },
	{ "publish_hugetlb", t_publish_hugetlb },
	{ "publish_not_memory_backed_einval", t_publish_not_memory_backed },
	{ "publish_fuse_file_einval", t_publish_fuse_file },
	{ "ids_per_scope", t_ids_per_scope },
	{ "override_by_capability", t_override_by_capability },
	{ "check_order", t_check_order },
	{ "ids_restart_with_scope", t_ids_restart_with_scope },
	{ "wait_signal_restart", t_wait_signal_restart },
	{ "watches_per_user", t_watches_per_user },
	/* callers with NGROUPS_MAX gids (gids.c) */
	{ "many_gids_policy", t_many_gids_policy },
	{ "many_gids_cost", t_many_gids_cost },
	{ "many_gids_crowded_cost", t_many_gids_crowded_cost },
};

int main(int argc, char **argv)
{
	int pass = 0, fail = 0, skip = 0, ncase = (int)(sizeof(cases) / sizeof(cases[0]));
	struct nvb *h;
	const char *be;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1 && !strcmp(argv[1], "-l")) {
		for (int i = 0; i < ncase; i++)
			printf("%s\n", cases[i].name);
		return 0;
	}
	if (argc > 2 && !strcmp(argv[1], "-b")) {
		setenv("NVBRIDGE_BACKEND", argv[2], 1);	/* -b kernel|broker */
		argv += 2;
		argc -= 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (nvb_open(NULL, &h)) {
		printf("cannot open nvbridge: %s\n0 passed, 1 failed\n", nvb_open_error());
		return 1;
	}
	backend = nvb_backend(h);
	nvb_close(h);
	be = nvb_backend_name(backend);
	printf("# nvbridge conformance, backend %s, %d cases\n", be, ncase);
	for (int i = 0; i < ncase; i++) {
		int sel = argc == 1, st, r;
		int64_t t0 = now_ns();

		for (int a = 1; a < argc; a++)
			sel |= !strcmp(argv[a], cases[i].name);
		if (!sel)
			continue;
		snprintf(pfx, sizeof(pfx), "cf.%d.%d.", getpid(), i);
		pid_t p = fork();

		if (p == 0) {
			alarm(60);
#if defined(__SANITIZE_ADDRESS__)
			exit(cases[i].fn());	/* run LeakSanitizer on every case */
#else
			_exit(cases[i].fn());
#endif
		}
		waitpid(p, &st, 0);
		r = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		double ms = (double)(now_ns() - t0) / 1e6;

		if (r == 0) {
			printf("ok   %2d %-28s (%.0f ms)\n", i + 1, cases[i].name, ms);
			pass++;
		} else if (r == 77) {
			printf("skip %2d %-28s (counted as passed: see reason above)\n", i + 1, cases[i].name);
			pass++;
			skip++;
		} else {
			printf("FAIL %2d %-28s (%s %d)\n", i + 1, cases[i].name,
			       WIFSIGNALED(st) ? "signal" : "exit", WIFSIGNALED(st) ? WTERMSIG(st) : r);
			fail++;
		}
	}
	printf("# backend %s: %d skipped\n", be, skip);
	printf("%d passed, %d failed\n", pass, fail);
	return fail ? 1 : 0;
}
