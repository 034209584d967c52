// SPDX-License-Identifier: MIT
/*
 * Segments and transfer batches (nvb_gpu_seg_*, nvb_gpu_xfer_*, nvb_gpu_batch_*)
 * against the stand-in libcuda: exporter processes publish segments of
 * random bytes, this process opens them and moves random blocks in random
 * batches, every byte checked against a shadow copy, destinations poisoned
 * first.  Bad requests and revoked segments must be refused before any
 * copy (nothing changes anywhere); a peer killed mid-batch (host functions
 * delayed by NVB_FAKE_HOSTFN_DELAY_MS) must end its batch with -ENOLINK.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>

#include "fake.h"
#include "nvbridge_uring.h"

#define SEG_SIZE	(4u << 20)	/* two fake granules */

struct peer {
	pid_t pid;
	int rd, wr;
};

/* An exporter process: publishes name (size bytes of random data) and obeys 'c'lose / 'q'uit. */
/* The device node peers publish through (kernel backend), or NULL: the private broker. */
static const char *peer_kdev;

static int peer_nvb_open(struct nvb **h)
{
	struct nvb_opts o = { .sz = sizeof(o), .backend = NVB_BACKEND_KERNEL,
			      .device_path = peer_kdev };

	return peer_kdev ? nvb_open(&o, h) : fake_nvb_open(h);
}

static int peer_start(struct peer *p, const char *name, size_t size)
{
	int up[2], down[2];
	char c = 0;

	if (pipe(up) || pipe(down))
		return -1;
	p->pid = fork();
	if (p->pid == 0) {
		struct nvb_gpu *g;
		struct nvb *h;
		struct nvb_gpu_buf *b;
		struct nvb_gpu_seg *s;

		close(up[0]);
		close(down[1]);
		if (nvb_gpu_open(NULL, &g) || peer_nvb_open(&h) || nvb_gpu_alloc(g, 0, size, 0, &b)) {
			c = 'E';
		} else {
			fake_random((void *)(uintptr_t)nvb_gpu_buf_ptr(b), nvb_gpu_buf_size(b));
			c = nvb_gpu_seg_publish(g, h, name, b, NULL, &s) ? 'E' : 'R';
		}
		if (write(up[1], &c, 1) != 1 || c != 'R')
			_exit(1);
		while (read(down[0], &c, 1) == 1) {
			if (c == 'c') {
				nvb_gpu_seg_close(s);
				if (write(up[1], "C", 1) != 1)
					_exit(1);
			} else if (c == 'q') {
				break;
			}
		}
		_exit(0);
	}
	close(up[1]);
	close(down[0]);
	p->rd = up[0];
	p->wr = down[1];
	if (p->pid < 0 || read(p->rd, &c, 1) != 1 || c != 'R')
		return -1;
	return 0;
}

static int peer_cmd(struct peer *p, char c)
{
	char r = 0;

	if (write(p->wr, &c, 1) != 1)
		return -1;
	return c == 'c' ? (read(p->rd, &r, 1) == 1 && r == 'C' ? 0 : -1) : 0;
}

static uint64_t rnd(uint64_t n)
{
	uint64_t v;

	fake_random(&v, sizeof(v));
	return n ? v % n : v;
}

static int64_t ms_since(struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* This process's side: a GPU layer, a handle, a local buffer. */
struct side {
	struct nvb_gpu *g;
	struct nvb *h;
	struct nvb_gpu_buf *lb;
	unsigned char *local;
	size_t lsize;
};

static int side_open(struct side *s, size_t lsize)
{
	if (nvb_gpu_open(NULL, &s->g) || fake_nvb_open(&s->h) ||
	    nvb_gpu_alloc(s->g, 0, lsize, 0, &s->lb))
		return -1;
	s->local = (unsigned char *)(uintptr_t)nvb_gpu_buf_ptr(s->lb);
	s->lsize = nvb_gpu_buf_size(s->lb);
	fake_random(s->local, s->lsize);
	return 0;
}

static void side_close(struct side *s)
{
	nvb_gpu_free(s->lb);
	nvb_gpu_close(s->g);
	nvb_close(s->h);
}

/*
 * n random requests in disjoint slots of [0, lspan) locally and
 * [0, rspan) in the segment, lengths up to maxlen, applied to the shadows.
 * Destinations are poisoned (random bytes, in memory and shadow alike).
 */
static void random_batch(struct nvb_gpu_xfer_req *r, size_t n, struct nvb_gpu_seg *seg,
			 unsigned char *local, unsigned char *lshadow, size_t lbase, size_t lspan,
			 unsigned char *remote, unsigned char *rshadow, size_t rspan, size_t maxlen)
{
	size_t lslot = lspan / n, rslot = rspan / n, i;

	for (i = 0; i < n; i++) {
		size_t cap = lslot < rslot ? lslot : rslot, len, lo, ro;

		if (cap > maxlen)
			cap = maxlen;
		len = 1 + rnd(cap);
		lo = lbase + i * lslot + rnd(lslot - len + 1);
		ro = i * rslot + rnd(rslot - len + 1);
		r[i] = (struct nvb_gpu_xfer_req){ .opcode = (uint32_t)rnd(2), .seg = seg,
			.local = (uint64_t)(uintptr_t)(local + lo), .offset = ro, .len = len };
		if (r[i].opcode == NVB_GPU_XFER_READ) {
			fake_random(local + lo, len);
			memcpy(lshadow + lo, remote + ro, len);
		} else {
			fake_random(remote + ro, len);
			memcpy(rshadow + ro, local + lo, len);
		}
	}
}

/* Random batches in both directions, every byte checked, per method. */
static int t_random_batches(void)
{
	static const uint32_t methods[] = { 0, NVB_GPU_COPY_LOOP, NVB_GPU_COPY_BATCH };
	struct nvb_gpu_xfer_stats xs = { .sz = sizeof(xs) };
	struct nvb_gpu_xfer_req r[64];
	struct nvb_gpu_seg *seg;
	struct nvb_gpu_batch *b;
	unsigned char *remote, *lsh, *rsh;
	struct side me;
	struct peer p;
	int st[64], round;
	uint64_t batches = 0;

	CHECK(peer_start(&p, "seg.rand", SEG_SIZE) == 0);
	CHECK(side_open(&me, SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.rand", NULL, &seg));
	EXPECT(nvb_gpu_seg_size(seg), SEG_SIZE);
	remote = (unsigned char *)(uintptr_t)nvb_gpu_seg_ptr(seg);
	lsh = malloc(me.lsize);
	rsh = malloc(SEG_SIZE);
	CHECK(lsh && rsh);
	for (round = 0; round < 60; round++) {
		struct nvb_gpu_xfer_opts o = { .sz = sizeof(o), .method = methods[round % 3],
					       .user_data = 1000 + (uint64_t)round };
		size_t n = 1 + rnd(64), maxlen = round % 5 == 4 ? (4u << 20) : (64u << 10);
		uint64_t total = 0;

		memcpy(lsh, me.local, me.lsize);
		memcpy(rsh, remote, SEG_SIZE);
		random_batch(r, n, seg, me.local, lsh, 0, me.lsize, remote, rsh, SEG_SIZE, maxlen);
		for (size_t i = 0; i < n; i++)
			total += r[i].len;
		OK(nvb_gpu_xfer_submit(me.g, r, n, &o, &b));
		batches++;
		OK(nvb_gpu_batch_wait(b, 5000000000LL));
		memset(st, 0x5a, sizeof(st));
		OK(nvb_gpu_batch_status(b, st, n));
		for (size_t i = 0; i < n; i++)
			EXPECT(st[i], 0);
		EXPECT(nvb_gpu_batch_user_data(b), 1000 + (uint64_t)round);
		if (o.method)
			EXPECT(nvb_gpu_batch_method(b), o.method);
		else	/* no SM kernel in the fake: BATCH for many blocks, else one copy each */
			EXPECT(nvb_gpu_batch_method(b), n > 1 && total / n < (1u << 20) ?
			       NVB_GPU_COPY_BATCH : NVB_GPU_COPY_LOOP);
		nvb_gpu_batch_free(b);
		CHECK(!memcmp(me.local, lsh, me.lsize), "round %d: local bytes differ", round);
		CHECK(!memcmp(remote, rsh, SEG_SIZE), "round %d: segment bytes differ", round);
	}
	OK(nvb_gpu_xfer_stats(me.g, &xs));
	EXPECT(xs.batches, batches);
	EXPECT(xs.completed, batches);
	EXPECT(xs.failed, 0);
	EXPECT(xs.rejected, 0);
	EXPECT(xs.inflight, 0);
	EXPECT(xs.sm_batches + xs.batch_batches + xs.loop_batches, batches);
	CHECK(xs.loop_batches >= 20 && xs.batch_batches >= 20, "loop %llu batch %llu",
	      (unsigned long long)xs.loop_batches, (unsigned long long)xs.batch_batches);
	nvb_gpu_seg_close(seg);
	side_close(&me);
	free(lsh);
	free(rsh);
	return 0;
}

/* The request at index last of a valid batch is bad: refused, nothing copied. */
static int refused(struct side *me, struct nvb_gpu_seg *seg, unsigned char *remote,
		   struct nvb_gpu_xfer_req bad, int want)
{
	struct nvb_gpu_xfer_stats a = { .sz = sizeof(a) }, z = { .sz = sizeof(z) };
	struct nvb_gpu_xfer_req r[3];
	struct nvb_gpu_batch *b = (void *)1;
	unsigned char *lsnap = malloc(me->lsize), *rsnap = malloc(SEG_SIZE);

	CHECK(lsnap && rsnap);
	r[0] = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0, (uint64_t)(uintptr_t)me->local,
					  seg, 0, 4096 };
	r[1] = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_WRITE, 0,
					  (uint64_t)(uintptr_t)me->local + 8192, seg, 8192, 4096 };
	r[2] = bad;
	fake_random(me->local, me->lsize);	/* poison: anything copied would show */
	fake_random(remote, SEG_SIZE);
	memcpy(lsnap, me->local, me->lsize);
	memcpy(rsnap, remote, SEG_SIZE);
	OK(nvb_gpu_xfer_stats(me->g, &a));
	EXPECT(nvb_gpu_xfer_submit(me->g, r, 3, NULL, &b), want);
	CHECK(b == NULL, "out not cleared");
	/* a revoked segment is named by the first request on it */
	CHECK(strstr(nvb_gpu_last_error(), want == -ENOLINK ? "request 0" : "request 2"), "%s",
	      nvb_gpu_last_error());
	OK(nvb_gpu_xfer_stats(me->g, &z));
	EXPECT(z.rejected, a.rejected + 1);
	EXPECT(z.batches, a.batches);
	CHECK(!memcmp(me->local, lsnap, me->lsize), "local memory changed");
	CHECK(!memcmp(remote, rsnap, SEG_SIZE), "segment changed");
	free(lsnap);
	free(rsnap);
	return 0;
}

static int t_rejected_before_copy(void)
{
	struct nvb_gpu_seg *seg;
	struct nvb_gpu_batch *b;
	struct timespec t0;
	unsigned char *remote;
	struct side me;
	struct peer p;
	uint64_t loc;
	struct nvb_gpu_xfer_req ok;

	CHECK(peer_start(&p, "seg.rej", SEG_SIZE) == 0);
	CHECK(side_open(&me, SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.rej", NULL, &seg));
	remote = (unsigned char *)(uintptr_t)nvb_gpu_seg_ptr(seg);
	loc = (uint64_t)(uintptr_t)me.local + 65536;
	ok = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0, loc, seg, 0, 1 };

	/* each as the last request of an otherwise good batch */
	static const struct {
		uint32_t opcode, pad;
		int null_seg;
		uint64_t offset, len;
		int want;
	} bads[] = {
		{ NVB_GPU_XFER_READ, 0, 0, SEG_SIZE - 100, 101, -ERANGE },	/* a byte past the end */
		{ NVB_GPU_XFER_READ, 0, 0, SEG_SIZE, 1, -ERANGE },
		{ NVB_GPU_XFER_READ, 0, 0, UINT64_MAX - 10, 100, -ERANGE },	/* offset + len wraps */
		{ NVB_GPU_XFER_WRITE, 0, 0, 16, UINT64_MAX - 8, -ERANGE },
		{ NVB_GPU_XFER_READ, 0, 0, 0, 0, -EINVAL },			/* zero length */
		{ 7, 0, 0, 0, 1, -EINVAL },					/* unknown opcode */
		{ NVB_GPU_XFER_READ, 0, 1, 0, 1, -EINVAL },			/* no segment */
		{ NVB_GPU_XFER_READ, 1, 0, 0, 1, -EINVAL },			/* __pad */
	};
	struct nvb_gpu_xfer_req bad;

	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		bad = (struct nvb_gpu_xfer_req){ bads[i].opcode, bads[i].pad, loc,
			bads[i].null_seg ? NULL : seg, bads[i].offset, bads[i].len };
		if (refused(&me, seg, remote, bad, bads[i].want))
			FAIL("bad request %zu", i);
	}

	/* exactly up to the end is fine */
	ok.offset = SEG_SIZE - 4096;
	ok.len = 4096;
	OK(nvb_gpu_xfer_submit(me.g, &ok, 1, NULL, &b));
	OK(nvb_gpu_batch_wait(b, 5000000000LL));
	CHECK(!memcmp(me.local + 65536, remote + SEG_SIZE - 4096, 4096));
	nvb_gpu_batch_free(b);

	/* revoked: the exporter closes its segment; the library thread sees the event */
	EXPECT(nvb_gpu_seg_revoked(seg), 0);
	CHECK(peer_cmd(&p, 'c') == 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!nvb_gpu_seg_revoked(seg) && ms_since(&t0) < 5000)
		usleep(1000);
	EXPECT(nvb_gpu_seg_revoked(seg), 1);
	bad = ok;
	bad.offset = 0;
	if (refused(&me, seg, remote, bad, -ENOLINK))
		return 1;
	nvb_gpu_seg_close(seg);
	side_close(&me);
	return 0;
}

/* Revocation noticed at submit even when it arrived just before (no thread race). */
static int t_revoked_at_submit(void)
{
	struct nvb_gpu_xfer_req r;
	struct nvb_gpu_seg *seg;
	struct nvb_gpu_batch *b;
	struct side me;
	struct peer p;
	unsigned char before[4096];

	CHECK(peer_start(&p, "seg.rv", SEG_SIZE) == 0);
	CHECK(side_open(&me, SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.rv", NULL, &seg));
	CHECK(peer_cmd(&p, 'c') == 0);
	usleep(50000);	/* the broker has sent the event; thread or submit reads it */
	memcpy(before, me.local, sizeof(before));
	r = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0, (uint64_t)(uintptr_t)me.local,
				       seg, 0, sizeof(before) };
	EXPECT(nvb_gpu_xfer_submit(me.g, &r, 1, NULL, &b), -ENOLINK);
	CHECK(!memcmp(before, me.local, sizeof(before)));
	nvb_gpu_seg_close(seg);
	side_close(&me);
	return 0;
}

/* Exporter killed while its batch is in flight: -ENOLINK for its requests, no hang. */
static int t_killed_mid_batch(void)
{
	struct nvb_gpu_xfer_req r[4];
	struct nvb_gpu_seg *dead, *live, *mine;
	struct nvb_gpu_batch *b;
	struct nvb_gpu_buf *own;
	struct timespec t0;
	struct side me;
	struct peer p1, p2;
	int st[4], i;

	CHECK(peer_start(&p1, "seg.dies", SEG_SIZE) == 0);
	CHECK(peer_start(&p2, "seg.lives", SEG_SIZE) == 0);
	CHECK(side_open(&me, SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.dies", NULL, &dead));
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.lives", NULL, &live));
	OK(nvb_gpu_alloc(me.g, 0, 1 << 20, 0, &own));
	OK(nvb_gpu_seg_publish(me.g, me.h, "seg.mine", own, NULL, &mine));	/* loopback */
	for (i = 0; i < 4; i++)
		r[i] = (struct nvb_gpu_xfer_req){ i & 1 ? NVB_GPU_XFER_WRITE : NVB_GPU_XFER_READ, 0,
			(uint64_t)(uintptr_t)me.local + (uint64_t)i * 65536,
			i < 2 ? dead : i == 2 ? live : mine, (uint64_t)i * 4096, 4096 };
	setenv("NVB_FAKE_HOSTFN_DELAY_MS", "400", 1);
	OK(nvb_gpu_xfer_submit(me.g, r, 4, NULL, &b));
	EXPECT(nvb_gpu_batch_status(b, st, 4), -EINPROGRESS);
	EXPECT(st[0], -EINPROGRESS);
	kill(p1.pid, SIGKILL);
	waitpid(p1.pid, NULL, 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	EXPECT(nvb_gpu_batch_wait(b, 10000000000LL), -ENOLINK);
	CHECK(ms_since(&t0) < 5000, "took %lld ms", (long long)ms_since(&t0));
	EXPECT(nvb_gpu_batch_status(b, st, 4), -ENOLINK);
	EXPECT(st[0], -ENOLINK);
	EXPECT(st[1], -ENOLINK);
	EXPECT(st[2], 0);
	EXPECT(st[3], 0);
	EXPECT(nvb_gpu_seg_revoked(dead), 1);
	EXPECT(nvb_gpu_seg_revoked(live), 0);
	nvb_gpu_batch_free(b);
	unsetenv("NVB_FAKE_HOSTFN_DELAY_MS");
	{
		struct nvb_gpu_xfer_stats xs = { .sz = sizeof(xs) };

		OK(nvb_gpu_xfer_stats(me.g, &xs));
		EXPECT(xs.failed, 1);
		EXPECT(xs.completed, 1);
	}
	nvb_gpu_seg_close(dead);
	nvb_gpu_seg_close(live);
	nvb_gpu_seg_close(mine);
	nvb_gpu_free(own);
	side_close(&me);
	return 0;
}

/* Several threads submit at once into disjoint quarters; every byte checked. */
struct thr_arg {
	struct nvb_gpu *g;
	struct nvb_gpu_seg *seg;
	unsigned char *local, *lsh, *remote, *rsh;
	size_t base, span;
	int err;
};

static void *submitter(void *p)
{
	struct thr_arg *a = p;
	struct nvb_gpu_xfer_req r[16];
	struct nvb_gpu_batch *b;

	for (int k = 0; k < 40 && !a->err; k++) {
		size_t n = 1 + rnd(16), lslot = a->span / n, i;

		for (i = 0; i < n; i++) {
			size_t len = 1 + rnd(lslot < 8192 ? lslot : 8192);
			size_t off = a->base + i * lslot + rnd(lslot - len + 1);

			r[i] = (struct nvb_gpu_xfer_req){ (uint32_t)rnd(2), 0,
				(uint64_t)(uintptr_t)(a->local + off), a->seg, off, len };
			/* the same offsets on both sides: quarters stay disjoint */
			if (r[i].opcode == NVB_GPU_XFER_READ) {
				fake_random(a->local + off, len);
				memcpy(a->lsh + off, a->remote + off, len);
			} else {
				fake_random(a->remote + off, len);
				memcpy(a->rsh + off, a->local + off, len);
			}
		}
		a->err = nvb_gpu_xfer_submit(a->g, r, n, NULL, &b);
		if (!a->err) {
			a->err = nvb_gpu_batch_wait(b, 5000000000LL);
			nvb_gpu_batch_free(b);
		}
	}
	return NULL;
}

static int t_threads(void)
{
	struct nvb_gpu_xfer_stats xs = { .sz = sizeof(xs) };
	struct thr_arg a[4];
	pthread_t t[4];
	struct nvb_gpu_seg *seg;
	unsigned char *remote, *lsh, *rsh;
	struct side me;
	struct peer p;
	int i;

	CHECK(peer_start(&p, "seg.thr", SEG_SIZE) == 0);
	CHECK(side_open(&me, SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.thr", NULL, &seg));
	remote = (unsigned char *)(uintptr_t)nvb_gpu_seg_ptr(seg);
	lsh = malloc(SEG_SIZE);
	rsh = malloc(SEG_SIZE);
	CHECK(lsh && rsh);
	memcpy(lsh, me.local, SEG_SIZE);
	memcpy(rsh, remote, SEG_SIZE);
	for (i = 0; i < 4; i++) {
		a[i] = (struct thr_arg){ me.g, seg, me.local, lsh, remote, rsh,
					 (size_t)i * (SEG_SIZE / 4), SEG_SIZE / 4, 0 };
		CHECK(pthread_create(&t[i], NULL, submitter, &a[i]) == 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		EXPECT(a[i].err, 0);
	}
	CHECK(!memcmp(me.local, lsh, SEG_SIZE), "local bytes differ");
	CHECK(!memcmp(remote, rsh, SEG_SIZE), "segment bytes differ");
	OK(nvb_gpu_xfer_stats(me.g, &xs));
	EXPECT(xs.batches, 160);
	EXPECT(xs.completed, 160);
	nvb_gpu_seg_close(seg);
	side_close(&me);
	free(lsh);
	free(rsh);
	return 0;
}

/* Completion through the caller's eventfd and the library's, and a device flag. */
static int t_eventfd_and_flag(void)
{
	struct nvb_gpu_xfer_req r;
	struct nvb_gpu_seg *seg;
	struct nvb_gpu_batch *b;
	struct pollfd pf[2];
	struct side me;
	struct peer p;
	uint64_t v = 0;
	uint32_t *flag;
	int efd, lfd;

	CHECK(peer_start(&p, "seg.efd", SEG_SIZE) == 0);
	CHECK(side_open(&me, SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.efd", NULL, &seg));
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	lfd = nvb_gpu_xfer_fd(me.g);
	CHECK(efd >= 0 && lfd >= 0);
	flag = (uint32_t *)(me.local + SEG_SIZE - 64);	/* a word of device memory */
	*flag = 0;
	r = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0, (uint64_t)(uintptr_t)me.local,
				       seg, 4096, 100000 };
	struct nvb_gpu_xfer_opts o = { .sz = sizeof(o), .flags = NVB_GPU_XFER_EVENTFD, .efd = efd,
				       .flag = (uint64_t)(uintptr_t)flag, .flag_val = 77 };
	setenv("NVB_FAKE_HOSTFN_DELAY_MS", "100", 1);
	OK(nvb_gpu_xfer_submit(me.g, &r, 1, &o, &b));
	EXPECT(nvb_gpu_batch_status(b, NULL, 0), -EINPROGRESS);
	CHECK(read(efd, &v, sizeof(v)) < 0 && errno == EAGAIN, "eventfd ready too early");
	pf[0] = (struct pollfd){ .fd = efd, .events = POLLIN };
	pf[1] = (struct pollfd){ .fd = lfd, .events = POLLIN };
	CHECK(poll(&pf[0], 1, 5000) == 1, "the caller's eventfd readable");
	CHECK(poll(&pf[1], 1, 5000) == 1, "the library's eventfd readable");
	EXPECT(read(efd, &v, sizeof(v)), sizeof(v));
	EXPECT(v, 1);
	EXPECT(read(lfd, &v, sizeof(v)), sizeof(v));
	EXPECT(v, 1);
	OK(nvb_gpu_batch_status(b, NULL, 0));
	EXPECT(*flag, 77);
	CHECK(!memcmp(me.local, (unsigned char *)(uintptr_t)nvb_gpu_seg_ptr(seg) + 4096, 100000));
	nvb_gpu_batch_free(b);
	o.efd = -1;
	EXPECT(nvb_gpu_xfer_submit(me.g, &r, 1, &o, &b), -EBADF);
	unsetenv("NVB_FAKE_HOSTFN_DELAY_MS");
	close(efd);
	nvb_gpu_seg_close(seg);
	side_close(&me);
	return 0;
}

/* Completions on the application's own io_uring, in the style of nvb_prep_event_read(). */
static int t_io_uring(void)
{
	struct __kernel_timespec ts = { .tv_sec = 5 };
	struct nvb_gpu_xfer_req r;
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	struct nvb_gpu_seg *seg;
	struct nvb_gpu_batch *b;
	struct io_uring ring;
	struct side me;
	struct peer p;
	uint64_t count = 0;

	CHECK(peer_start(&p, "seg.uring", SEG_SIZE) == 0);
	CHECK(side_open(&me, SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.uring", NULL, &seg));
	OK(io_uring_queue_init(4, &ring, 0));
	sqe = io_uring_get_sqe(&ring);
	EXPECT(nvb_gpu_prep_xfer_read(NULL, me.g, &count), -EINVAL);
	EXPECT(nvb_gpu_prep_xfer_read(sqe, me.g, NULL), -EINVAL);
	OK(nvb_gpu_prep_xfer_read(sqe, me.g, &count));
	EXPECT(io_uring_submit(&ring), 1);
	setenv("NVB_FAKE_HOSTFN_DELAY_MS", "100", 1);
	r = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_WRITE, 0, (uint64_t)(uintptr_t)me.local,
				       seg, 100, 5000 };
	OK(nvb_gpu_xfer_submit(me.g, &r, 1, NULL, &b));
	EXPECT(io_uring_peek_cqe(&ring, &cqe), -EAGAIN);	/* the batch is still running */
	OK(io_uring_wait_cqe_timeout(&ring, &cqe, &ts));
	CHECK(nvb_gpu_cqe_is_xfer(me.g, cqe), "user_data %#llx", (unsigned long long)cqe->user_data);
	CHECK(!nvb_cqe_is_event(me.h, cqe), "tags of events and transfers differ");
	EXPECT(cqe->res, sizeof(count));
	EXPECT(count, 1);
	io_uring_cqe_seen(&ring, cqe);
	OK(nvb_gpu_batch_status(b, NULL, 0));	/* final once the completion is seen */
	CHECK(!memcmp(me.local, (unsigned char *)(uintptr_t)nvb_gpu_seg_ptr(seg) + 100, 5000));
	nvb_gpu_batch_free(b);
	unsetenv("NVB_FAKE_HOSTFN_DELAY_MS");
	io_uring_queue_exit(&ring);
	nvb_gpu_seg_close(seg);
	side_close(&me);
	return 0;
}

/* nvb_gpu_close() with batches in flight (some freed, some not): no hang, no leak of fds. */
static int t_close_in_flight(void)
{
	struct nvb_gpu_xfer_req r;
	struct nvb_gpu_seg *seg;
	struct nvb_gpu_batch *b;
	struct timespec t0;
	struct side me;
	struct peer p;
	int fds, i;

	CHECK(peer_start(&p, "seg.close", SEG_SIZE) == 0);
	CHECK(fake_nvb_open(&me.h) == 0);
	OK(nvb_gpu_open(NULL, &me.g));
	OK(nvb_gpu_alloc(me.g, 0, SEG_SIZE, 0, &me.lb));	/* the application's: stays */
	fds = proc_fds(0);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.close", NULL, &seg));
	setenv("NVB_FAKE_HOSTFN_DELAY_MS", "300", 1);
	for (i = 0; i < 8; i++) {
		r = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0,
			nvb_gpu_buf_ptr(me.lb) + (uint64_t)i * 4096, seg, (uint64_t)i * 4096, 4096 };
		OK(nvb_gpu_xfer_submit(me.g, &r, 1, NULL, &b));
		if (i & 1)
			nvb_gpu_batch_free(b);	/* freed in flight: the library frees it */
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	nvb_gpu_close(me.g);	/* segment, buffer and batches left open on purpose */
	CHECK(ms_since(&t0) < 3000, "close took %lld ms", (long long)ms_since(&t0));
	usleep(50000);
	EXPECT(proc_fds(0), fds);
	nvb_close(me.h);
	return 0;
}

/*
 * The driver's callback thread goes on in the driver after our host
 * function returned, and nvb_gpu_close cannot wait for that: a close that
 * unloaded the driver made the thread return into unmapped code (the 1 in
 * 40 SIGSEGV of close_with_batches_in_flight).  The stand-in keeps its
 * thread 200 ms in its code after the function: a crash here, every run,
 * unless the driver stays mapped.
 */
static int t_close_after_hostfn(void)
{
	struct nvb_gpu_xfer_req r;
	struct nvb_gpu_seg *seg;
	struct nvb_gpu_batch *b;
	struct side me;
	struct peer p;

	CHECK(peer_start(&p, "seg.linger", SEG_SIZE) == 0);
	CHECK(fake_nvb_open(&me.h) == 0);
	OK(nvb_gpu_open(NULL, &me.g));
	OK(nvb_gpu_alloc(me.g, 0, SEG_SIZE, 0, &me.lb));
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.linger", NULL, &seg));
	setenv("NVB_FAKE_HOSTFN_DELAY_MS", "50", 1);
	setenv("NVB_FAKE_HOSTFN_LINGER_MS", "200", 1);
	r = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0, nvb_gpu_buf_ptr(me.lb), seg, 0, 4096 };
	OK(nvb_gpu_xfer_submit(me.g, &r, 1, NULL, &b));
	nvb_gpu_close(me.g);	/* returns once the function ran, its thread still lingering */
	usleep(400000);		/* the thread leaves the driver's code */
	nvb_close(me.h);
	return 0;
}

/* Owner expectations, option conventions, argument errors. */
static int t_owner_and_args(void)
{
	struct nvb_gpu_seg_open_opts oo = { .sz = sizeof(oo) };
	unsigned char big[sizeof(struct nvb_gpu_xfer_opts) + 16];
	struct nvb_gpu_xfer_opts *xo = (void *)big;
	struct nvb_gpu_xfer_req r;
	struct nvb_gpu_seg *seg = (void *)1;
	struct nvb_gpu_batch *b;
	struct side me;
	struct peer p;
	char longname[80];

	CHECK(peer_start(&p, "seg.own", SEG_SIZE) == 0);
	CHECK(side_open(&me, SEG_SIZE) == 0);
	oo.flags = NVB_GPU_SEG_OWNER_UID;
	oo.owner_uid = geteuid() + 4242;	/* somebody else: their entry does not exist */
	EXPECT(nvb_gpu_seg_open(me.g, me.h, "seg.own", &oo, &seg), -ENOENT);
	CHECK(seg == NULL);
	oo.timeout_ns = 100000000;	/* waiting for them times out */
	EXPECT(nvb_gpu_seg_open(me.g, me.h, "seg.own", &oo, &seg), -ETIMEDOUT);
	oo.timeout_ns = 0;
	oo.flags = NVB_GPU_SEG_OWNER_UID | NVB_GPU_SEG_ANY_OWNER;
	EXPECT(nvb_gpu_seg_open(me.g, me.h, "seg.own", &oo, &seg), -EINVAL);
	oo.flags = 0;			/* owner_uid without the flag */
	EXPECT(nvb_gpu_seg_open(me.g, me.h, "seg.own", &oo, &seg), -EINVAL);
	oo.owner_uid = 0;
	oo.flags = 1u << 9;
	EXPECT(nvb_gpu_seg_open(me.g, me.h, "seg.own", &oo, &seg), -EINVAL);
	oo.flags = 0;
	EXPECT(nvb_gpu_seg_open(me.g, me.h, "seg.none", &oo, &seg), -ENOENT);
	memset(longname, 'a', sizeof(longname));
	longname[79] = 0;
	EXPECT(nvb_gpu_seg_open(me.g, me.h, longname, NULL, &seg), -EINVAL);
	EXPECT(nvb_gpu_seg_open(me.g, me.h, NULL, NULL, &seg), -EINVAL);
	EXPECT(nvb_gpu_seg_open(me.g, me.h, "seg.own", NULL, NULL), -EINVAL);
	oo.flags = NVB_GPU_SEG_OWNER_UID;
	oo.owner_uid = geteuid();
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.own", &oo, &seg));
	nvb_gpu_seg_close(seg);
	oo.flags = NVB_GPU_SEG_ANY_OWNER;
	oo.owner_uid = 0;
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.own", &oo, &seg));

	/* publish: flags, name, NULLs */
	struct nvb_gpu_seg_publish_opts po = { .sz = sizeof(po), .flags = 1 };
	struct nvb_gpu_seg *ls;

	EXPECT(nvb_gpu_seg_publish(me.g, me.h, "seg.pub", me.lb, &po, &ls), -EINVAL);
	po.flags = 0;
	EXPECT(nvb_gpu_seg_publish(me.g, me.h, "", me.lb, &po, &ls), -EINVAL);
	EXPECT(nvb_gpu_seg_publish(me.g, me.h, "seg.pub", NULL, &po, &ls), -EINVAL);
	OK(nvb_gpu_seg_publish(me.g, me.h, "seg.pub", me.lb, &po, &ls));
	EXPECT(nvb_gpu_seg_publish(me.g, me.h, "seg.pub", me.lb, &po, &ls), -EEXIST);

	/* submit's options: the size convention, flags, method, alignment, counts */
	r = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0, (uint64_t)(uintptr_t)me.local, seg, 0, 64 };
	memset(big, 0, sizeof(big));
	xo->sz = sizeof(big);			/* a newer caller, zero tail */
	OK(nvb_gpu_xfer_submit(me.g, &r, 1, xo, &b));
	OK(nvb_gpu_batch_wait(b, -1));
	nvb_gpu_batch_free(b);
	big[sizeof(*xo) + 3] = 1;		/* an option this library does not know */
	EXPECT(nvb_gpu_xfer_submit(me.g, &r, 1, xo, &b), -E2BIG);
	big[sizeof(*xo) + 3] = 0;
	xo->sz = offsetof(struct nvb_gpu_xfer_opts, flags) + sizeof(uint32_t);	/* older */
	OK(nvb_gpu_xfer_submit(me.g, &r, 1, xo, &b));
	OK(nvb_gpu_batch_wait(b, -1));
	nvb_gpu_batch_free(b);
	xo->sz = 4;
	EXPECT(nvb_gpu_xfer_submit(me.g, &r, 1, xo, &b), -EINVAL);
	xo->sz = sizeof(*xo);
	xo->flags = 1u << 7;
	EXPECT(nvb_gpu_xfer_submit(me.g, &r, 1, xo, &b), -EINVAL);
	xo->flags = 0;
	xo->method = NVB_GPU_COPY_CE;
	EXPECT(nvb_gpu_xfer_submit(me.g, &r, 1, xo, &b), -EINVAL);
	xo->method = NVB_GPU_COPY_SM;		/* no kernel in the fake */
	EXPECT(nvb_gpu_xfer_submit(me.g, &r, 1, xo, &b), -EOPNOTSUPP);
	xo->method = 0;
	xo->flag = 2;
	EXPECT(nvb_gpu_xfer_submit(me.g, &r, 1, xo, &b), -EINVAL);
	xo->flag = 0;
	EXPECT(nvb_gpu_xfer_submit(me.g, &r, 0, xo, &b), -EINVAL);
	EXPECT(nvb_gpu_xfer_submit(me.g, NULL, 1, xo, &b), -EINVAL);
	EXPECT(nvb_gpu_xfer_submit(me.g, &r, 1, xo, NULL), -EINVAL);
	EXPECT(nvb_gpu_batch_status(NULL, NULL, 0), -EINVAL);
	EXPECT(nvb_gpu_batch_wait(NULL, 0), -EINVAL);

	nvb_gpu_seg_close(ls);
	nvb_gpu_seg_close(seg);
	side_close(&me);
	return 0;
}

/* Where an open's time goes; a prefetched segment opens from the cache. */
static int t_stats_and_prefetch(void)
{
	struct nvb_gpu_seg_stats st, small;
	struct nvb_gpu_seg *seg, *ls, *pre;
	struct nvb_gpu_buf *own;
	struct timespec t0;
	struct side me;
	struct peer p, q;

	CHECK(peer_start(&p, "seg.st", SEG_SIZE) == 0);
	CHECK(side_open(&me, SEG_SIZE) == 0);
	OK(nvb_gpu_seg_prefetch(me.g, me.h, "seg.later", NULL));	/* not published yet */

	OK(nvb_gpu_seg_open(me.g, me.h, "seg.st", NULL, &seg));
	memset(&st, 0x5a, sizeof(st));
	st.sz = sizeof(st);
	OK(nvb_gpu_seg_stats(seg, &st));
	EXPECT(st.sz, sizeof(st));
	EXPECT(st.local, 0);
	EXPECT(st.cached, 0);
	EXPECT(st.round_trips, 1);	/* watch + fetch, sent together (broker) */
	EXPECT(st.owner_uid, geteuid());
	EXPECT(st.watch_ns, 0);	/* no answer of its own waited for */
	CHECK(st.fetch_ns > 0 && st.import_ns > 0, "timings missing");
	CHECK(st.total_ns >= st.watch_ns + st.fetch_ns + st.import_ns + st.map_ns, "total");
	EXPECT(st.export_ns, 0);
	nvb_gpu_seg_close(seg);

	/* the same name again: the watch is held and the mapping cached */
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.st", NULL, &seg));
	OK(nvb_gpu_seg_stats(seg, &st));
	EXPECT(st.round_trips, 1);
	EXPECT(st.cached, 1);
	EXPECT(st.watch_ns, 0);
	EXPECT(st.import_ns, 0);

	memset(&small, 0x5a, sizeof(small));
	small.sz = offsetof(struct nvb_gpu_seg_stats, publish_ns);
	OK(nvb_gpu_seg_stats(seg, &small));
	EXPECT(small.sz, offsetof(struct nvb_gpu_seg_stats, publish_ns));
	EXPECT(small.round_trips, 1);
	EXPECT(small.publish_ns, 0x5a5a5a5a5a5a5a5aull);
	small.sz = 4;
	EXPECT(nvb_gpu_seg_stats(seg, &small), -EINVAL);
	EXPECT(nvb_gpu_seg_stats(NULL, &st), -EINVAL);

	OK(nvb_gpu_alloc(me.g, 0, 1 << 20, 0, &own));
	OK(nvb_gpu_seg_publish(me.g, me.h, "seg.local", own, NULL, &ls));
	OK(nvb_gpu_seg_stats(ls, &st));
	EXPECT(st.local, 1);
	EXPECT(st.round_trips, 1);
	CHECK(st.export_ns > 0 && st.publish_ns > 0, "publish timings missing");
	EXPECT(nvb_gpu_seg_size(ls), nvb_gpu_buf_size(own));
	EXPECT(nvb_gpu_seg_ptr(ls), nvb_gpu_buf_ptr(own));
	CHECK(nvb_gpu_seg_id(ls) > 0);

	/* published after the prefetch: the thread imports it ahead of the open */
	CHECK(peer_start(&q, "seg.later", SEG_SIZE) == 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		OK(nvb_gpu_seg_open(me.g, me.h, "seg.later", NULL, &pre));
		OK(nvb_gpu_seg_stats(pre, &st));
		if (st.cached || ms_since(&t0) > 3000)
			break;
		/* opened before the thread got to it: not what is measured; retry */
		nvb_gpu_seg_close(pre);
		nvb_gpu_cache_trim(me.g);
		OK(nvb_gpu_seg_prefetch(me.g, me.h, "seg.later", NULL));
		usleep(20000);
	}
	EXPECT(st.cached, 1);
	EXPECT(st.round_trips, 0);	/* the prefetch fetched and watched already */
	EXPECT(st.fetch_ns, 0);
	EXPECT(st.import_ns, 0);
	EXPECT(st.owner_uid, geteuid());
	/* no request of its own, yet its revocation reaches it through the prefetch's watch */
	EXPECT(nvb_gpu_seg_revoked(pre), 0);
	CHECK(peer_cmd(&q, 'c') == 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!nvb_gpu_seg_revoked(pre) && ms_since(&t0) < 5000)
		usleep(1000);
	EXPECT(nvb_gpu_seg_revoked(pre), 1);
	nvb_gpu_seg_close(pre);

	/* a prefetch made with other owner expectations never serves an open */
	struct nvb_gpu_seg_open_opts any = { .sz = sizeof(any), .flags = NVB_GPU_SEG_ANY_OWNER };
	struct nvb_gpu_seg_open_opts other = { .sz = sizeof(other), .flags = NVB_GPU_SEG_OWNER_UID,
					       .owner_uid = geteuid() + 4242 };

	OK(nvb_gpu_seg_prefetch(me.g, me.h, "seg.st", &any));
	usleep(200000);	/* the thread imports it (it is cached already anyway) */
	EXPECT(nvb_gpu_seg_open(me.g, me.h, "seg.st", &other, &pre), -ENOENT);
	OK(nvb_gpu_seg_prefetch(me.g, me.h, "seg.st", &any));
	usleep(200000);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.st", NULL, &pre));	/* default: own euid */
	OK(nvb_gpu_seg_stats(pre, &st));
	EXPECT(st.round_trips, 1);	/* fetched with its own expectation */
	nvb_gpu_seg_close(pre);
	nvb_gpu_seg_close(ls);
	nvb_gpu_seg_close(seg);
	nvb_gpu_free(own);
	side_close(&me);
	return 0;
}

/* Every new entry point is in the LIBNVBRIDGE_1.2 node, none in 1.0. */
static int t_symbol_versions(void)
{
	static const char *const fns[] = {
		"nvb_gpu_seg_publish", "nvb_gpu_seg_open", "nvb_gpu_seg_prefetch",
		"nvb_gpu_seg_close", "nvb_gpu_seg_ptr", "nvb_gpu_seg_size", "nvb_gpu_seg_id",
		"nvb_gpu_seg_revoked", "nvb_gpu_seg_stats", "nvb_gpu_xfer_submit",
		"nvb_gpu_batch_status", "nvb_gpu_batch_wait", "nvb_gpu_batch_method",
		"nvb_gpu_batch_user_data", "nvb_gpu_batch_free", "nvb_gpu_xfer_fd",
		"nvb_gpu_xfer_stats", "nvb_gpu_prep_xfer_read", "nvb_gpu_xfer_tag",
		"nvb_gpu_cqe_is_xfer",
	};
	void *l = dlopen("libnvbridge.so.1", RTLD_NOW | RTLD_NOLOAD);

	CHECK(l != NULL, "%s", dlerror());
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		CHECK(dlvsym(l, fns[i], "LIBNVBRIDGE_1.2") != NULL, "%s@LIBNVBRIDGE_1.2", fns[i]);
		CHECK(dlvsym(l, fns[i], "LIBNVBRIDGE_1.0") == NULL, "%s@LIBNVBRIDGE_1.0", fns[i]);
	}
	return 0;
}

static int nfds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	while (d && readdir(d))
		n++;
	if (d)
		closedir(d);
	return n;
}

/* Descriptors of this process on the stand-in's "device memory" (its memfds). */
static int fake_mem_fds(void)
{
	char path[64], link[128];
	struct dirent *d;
	DIR *dir = opendir("/proc/self/fd");
	ssize_t n;
	int c = 0;

	while (dir && (d = readdir(dir))) {
		snprintf(path, sizeof(path), "/proc/self/fd/%s", d->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = 0;
			c += strstr(link, "memfd:fakecuda") != NULL;
		}
	}
	if (dir)
		closedir(dir);
	return c;
}

/* The peer's segment, opened through h, is revoked within 5 s of the peer closing it. */
static int revoked_soon(struct peer *p, struct nvb_gpu_seg *s)
{
	struct timespec t0;

	EXPECT(nvb_gpu_seg_revoked(s), 0);
	CHECK(peer_cmd(p, 'c') == 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!nvb_gpu_seg_revoked(s) && ms_since(&t0) < 5000)
		usleep(1000);
	EXPECT(nvb_gpu_seg_revoked(s), 1);
	return 0;
}

/*
 * A first open sends its watch and its fetch together: one round trip, and
 * a revocation right after still reaches it.  When the watch fails (the
 * handle's watch table full of the application's own watches: -ENOSPC,
 * the scope-wide fallback refused as well) the fetch that went with it,
 * which found the entry, yields nothing: the open fails with the watch's
 * errno, no segment unwatched, no fd left behind.
 */
static int t_watch_fetch_pipelined(void)
{
	struct nvb_gpu_seg_stats st;
	struct nvb_gpu_seg *seg;
	struct side me, other;
	struct peer p, q;
	uint64_t wid = 0, last = 0;
	char name[64];
	int i, n, err = 0;

	CHECK(peer_start(&p, "seg.pipe", SEG_SIZE) == 0);
	CHECK(side_open(&me, SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.pipe", NULL, &seg));
	memset(&st, 0x5a, sizeof(st));
	st.sz = sizeof(st);
	OK(nvb_gpu_seg_stats(seg, &st));
	EXPECT(st.round_trips, 1);
	EXPECT(st.watch_ns, 0);
	EXPECT(st.cached, 0);
	CHECK(revoked_soon(&p, seg) == 0);
	nvb_gpu_seg_close(seg);

	/* the application watches the name on the handle itself: -EEXIST is a watch in force */
	CHECK(peer_start(&p, "seg.pipe.own", SEG_SIZE) == 0);
	OK(nvb_watch(me.h, "seg.pipe.own", 0, &wid));
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.pipe.own", NULL, &seg));
	OK(nvb_gpu_seg_stats(seg, &st));
	EXPECT(st.round_trips, 1);
	CHECK(nvb_gpu_seg_size(seg) >= SEG_SIZE);
	CHECK(revoked_soon(&p, seg) == 0);
	nvb_gpu_seg_close(seg);
	side_close(&me);

	/* another handle: the application's own watches fill its table */
	CHECK(side_open(&other, SEG_SIZE) == 0);
	for (i = 0; i < 100000 && !err; i++) {
		snprintf(name, sizeof(name), "fill.%d", i);
		err = nvb_watch(other.h, name, 0, &wid);
		if (!err)
			last = wid;
	}
	EXPECT(err, -ENOSPC);
	CHECK(last != 0);
	CHECK(peer_start(&q, "seg.pipe2", SEG_SIZE) == 0);
	EXPECT(nvb_gpu_seg_open(other.g, other.h, "seg.pipe2", NULL, &seg), -ENOSPC);
	seg = (struct nvb_gpu_seg *)&st;	/* poisoned: must come back NULL */
	n = nfds();	/* after the first segment call: its engine's eventfds are there */
	EXPECT(nvb_gpu_seg_open(other.g, other.h, "seg.pipe2", NULL, &seg), -ENOSPC);
	CHECK(seg == NULL);
	EXPECT(nfds(), n);	/* the dropped fetch's fd closed */
	CHECK(strstr(nvb_gpu_last_error(), "nvb_watch") != NULL, "%s", nvb_gpu_last_error());
	/* one slot free: watched and fetched in one round trip, revocable */
	OK(nvb_unwatch(other.h, last));
	OK(nvb_gpu_seg_open(other.g, other.h, "seg.pipe2", NULL, &seg));
	OK(nvb_gpu_seg_stats(seg, &st));
	EXPECT(st.round_trips, 1);
	CHECK(revoked_soon(&q, seg) == 0);
	nvb_gpu_seg_close(seg);
	side_close(&other);
	return 0;
}

/*
 * A first open that waits for its name (timeout_ns) while the watch that
 * goes in front of its fetch is refused (-ENOSPC: the table full of the
 * application's own watches) fails at once with the watch's errno: the
 * fetch sent behind it, unwatched and worth nothing, must not keep it
 * waiting for a publish (negative timeout: forever), as the kernel
 * backend, which sends no fetch then, does not.
 */
static int t_watch_refused_no_wait(void)
{
	struct nvb_gpu_seg_open_opts wait = { .sz = sizeof(wait), .timeout_ns = 3000000000LL };
	struct nvb_gpu_seg *seg;
	struct timespec t0;
	struct side me;
	uint64_t wid = 0;
	char name[64];
	int i, err = 0;

	CHECK(side_open(&me, SEG_SIZE) == 0);
	for (i = 0; i < 100000 && !err; i++) {
		snprintf(name, sizeof(name), "fillw.%d", i);
		err = nvb_watch(me.h, name, 0, &wid);
	}
	EXPECT(err, -ENOSPC);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	seg = (struct nvb_gpu_seg *)&me;	/* poisoned: must come back NULL */
	EXPECT(nvb_gpu_seg_open(me.g, me.h, "seg.never.w", &wait, &seg), -ENOSPC);
	CHECK(seg == NULL);
	CHECK(ms_since(&t0) < 1000, "refused watch kept the open waiting %lld ms",
	      (long long)ms_since(&t0));
	/* the handle still answers in order: a plain request after it gets its own reply */
	EXPECT(nvb_unwatch(me.h, wid), 0);
	side_close(&me);
	return 0;
}

/*
 * The application's own watch of a name, in force at a first open (the
 * library's watch then -EEXIST), is the application's to end: after it
 * unwatches, a later open of the name on the handle (the first segment
 * closed meanwhile, or still open) must watch the name again, not take
 * the application's gone watch for its own, so the exporter's close still
 * revokes it.
 */
static int t_own_watch_ended(void)
{
	struct nvb_gpu_seg *seg, *kept;
	struct side me;
	struct peer p, q;
	uint64_t wid = 0;

	CHECK(side_open(&me, SEG_SIZE) == 0);
	/* A: the first segment closed before the unwatch: the handle's records parked */
	CHECK(peer_start(&p, "seg.own.gone", SEG_SIZE) == 0);
	OK(nvb_watch(me.h, "seg.own.gone", 0, &wid));
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.own.gone", NULL, &seg));
	nvb_gpu_seg_close(seg);
	OK(nvb_unwatch(me.h, wid));
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.own.gone", NULL, &seg));
	CHECK(revoked_soon(&p, seg) == 0);
	nvb_gpu_seg_close(seg);
	/* B: a segment of the name stays open across the unwatch; the next open watches */
	CHECK(peer_start(&q, "seg.own.kept", SEG_SIZE) == 0);
	OK(nvb_watch(me.h, "seg.own.kept", 0, &wid));
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.own.kept", NULL, &kept));
	OK(nvb_unwatch(me.h, wid));
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.own.kept", NULL, &seg));
	CHECK(revoked_soon(&q, seg) == 0);
	CHECK(nvb_gpu_seg_revoked(kept) == 1);
	nvb_gpu_seg_close(seg);
	nvb_gpu_seg_close(kept);
	side_close(&me);
	return 0;
}

/* n opens of names never published (timeout 0): each -ENOENT, out NULL. */
static int open_gone(struct side *me, const char *prefix, int n)
{
	struct nvb_gpu_seg_open_opts now = { .sz = sizeof(now) };
	struct nvb_gpu_seg *none;
	char name[64];
	int i, err;

	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%s.%d", prefix, i);
		none = (struct nvb_gpu_seg *)me;	/* poisoned: must come back NULL */
		err = nvb_gpu_seg_open(me->g, me->h, name, &now, &none);
		CHECK(err == -ENOENT, "%s: %d %s", name, err, nvb_gpu_last_error());
		CHECK(none == NULL);
	}
	return 0;
}

/*
 * Watch records of handles that stay open are never forgotten while their
 * watches stand at the broker: 17 open handles whose tables (64 here) are
 * full of the library's watches of names no segment uses (1088 records,
 * more than the 1024 the library once kept) must each still trade one of
 * them for the scope-wide watch when an open needs room, the oldest handle
 * too; a forgotten record is a watch nobody can give back (-ENOSPC).
 */
static int t_parked_records_kept(void)
{
	struct nvb_gpu_seg *seg;
	struct nvb *h[17];
	struct side me;
	struct peer p;
	char prefix[32];
	int i;

	CHECK(side_open(&me, SEG_SIZE) == 0);
	for (i = 0; i < 17; i++) {
		struct side s = me;

		CHECK(fake_nvb_open(&h[i]) == 0);
		s.h = h[i];
		snprintf(prefix, sizeof(prefix), "seg.park.%d", i);
		CHECK(open_gone(&s, prefix, 64) == 0);
	}
	CHECK(peer_start(&p, "seg.park.pub", SEG_SIZE) == 0);
	for (i = 0; i < 17; i++) {
		int err = nvb_gpu_seg_open(me.g, h[i], "seg.park.pub", NULL, &seg);

		CHECK(err == 0, "handle %d: %d %s", i, err, nvb_gpu_last_error());
		nvb_gpu_seg_close(seg);
	}
	CHECK(peer_cmd(&p, 'q') == 0);
	for (i = 0; i < 17; i++)
		nvb_close(h[i]);
	side_close(&me);
	return 0;
}

struct opener {
	struct side *me;
	const char *name;
	struct nvb_gpu_seg *seg;
	int err;
};

static void *opener_run(void *arg)
{
	struct opener *o = arg;

	o->err = nvb_gpu_seg_open(o->me->g, o->me->h, o->name, NULL, &o->seg);
	return NULL;
}

/* The stand-in's import gate: pipes to it and back, and the thread held in it. */
struct gate {
	int w[2], r[2];
	pthread_t th;
};

/* Starts o's open in a thread and returns once it is held in its import (0), or -1. */
static int gate_hold(struct gate *gt, struct opener *o)
{
	char env[32], c;

	if (pipe(gt->w) || pipe(gt->r))
		return -1;
	snprintf(env, sizeof(env), "%d,%d", gt->w[1], gt->r[0]);
	setenv("NVB_FAKE_IMPORT_GATE", env, 1);
	if (pthread_create(&gt->th, NULL, opener_run, o))
		return -1;
	if (read(gt->w[0], &c, 1) != 1)
		return -1;	/* the open never reached the import */
	unsetenv("NVB_FAKE_IMPORT_GATE");
	return 0;
}

/* Lets the held open go on and waits for it. */
static void gate_release(struct gate *gt)
{
	if (write(gt->r[1], "g", 1) != 1)
		abort();
	pthread_join(gt->th, NULL);
	close(gt->w[0]);
	close(gt->w[1]);
	close(gt->r[0]);
	close(gt->r[1]);
}

/*
 * A revocation that the library thread reads while an open is between its
 * fetch and its import (held in cuMemImportFromShareableHandle by the
 * stand-in's gate) still marks the segment, however many other
 * revocations the thread reads meanwhile: here 300 of other names in the
 * scope (another tenant's churn), seen through a scope-wide watch on the
 * handle, more than the 256 revoked ids the library once remembered.
 */
static int t_revoked_during_open_churn(void)
{
	struct opener o = { .name = "seg.ring.x" };
	unsigned char blob[16];
	struct gate gt;
	uint64_t wid, id;
	struct side me;
	struct peer p;
	struct nvb *h2;
	char name[64];
	int i;

	CHECK(side_open(&me, SEG_SIZE) == 0);
	CHECK(fake_nvb_open(&h2) == 0);
	OK(nvb_watch(me.h, "", NVB_WATCH_PREFIX, &wid));
	CHECK(peer_start(&p, o.name, SEG_SIZE) == 0);
	o.me = &me;
	CHECK(gate_hold(&gt, &o) == 0, "the open never reached the import");
	CHECK(peer_cmd(&p, 'c') == 0);	/* the fetched entry is revoked */
	usleep(300000);			/* the thread reads it */
	for (i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "seg.ring.churn.%d", i);
		fake_random(blob, sizeof(blob));
		OK(nvb_publish(h2, name, -1, blob, sizeof(blob), NULL, &id));
		OK(nvb_unpublish(h2, id, name));
		if (i % 50 == 49)
			usleep(100000);	/* the thread keeps up: no OVERFLOW */
	}
	usleep(300000);
	gate_release(&gt);
	OK(o.err);
	EXPECT(nvb_gpu_seg_revoked(o.seg), 1);
	nvb_gpu_seg_close(o.seg);
	CHECK(peer_cmd(&p, 'q') == 0);
	nvb_close(h2);
	side_close(&me);
	return 0;
}

/*
 * Opens of ever new names, each leaving its watch, fill the handle's
 * table (64 watches a connection here): the library then trades the watch
 * of a name nothing uses any more for one scope-wide watch and goes on
 * opening.  A: no segment stays open between the opens, so the handle's
 * record goes each time: its watch records must outlive it (parked).
 * B: a segment open across the trade is still revoked when its exporter
 * closes it, and so is one opened after.
 */
static int t_watch_table_full(void)
{
	struct nvb_gpu_seg *seg, *kept;
	struct nvb_gpu_seg_stats st;
	struct side a, me;
	struct peer p, q;

	CHECK(side_open(&a, SEG_SIZE) == 0);
	CHECK(open_gone(&a, "seg.gone.a", 200) == 0);
	side_close(&a);

	CHECK(peer_start(&p, "seg.kept", SEG_SIZE) == 0);
	CHECK(side_open(&me, SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.kept", NULL, &kept));
	CHECK(open_gone(&me, "seg.gone.b", 200) == 0);
	CHECK(peer_start(&q, "seg.after", SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.after", NULL, &seg));
	st.sz = sizeof(st);
	OK(nvb_gpu_seg_stats(seg, &st));
	EXPECT(st.round_trips, 1);	/* the scope-wide watch covers it: the fetch alone */
	CHECK(revoked_soon(&q, seg) == 0);
	CHECK(revoked_soon(&p, kept) == 0);
	nvb_gpu_seg_close(seg);
	nvb_gpu_seg_close(kept);
	side_close(&me);
	return 0;
}

/*
 * The library's own nvb_unwatch() calls come here (this program's definition
 * interposes on the library's, which it then calls), so a case can act
 * exactly between the unwatch of a trade for the scope-wide watch and that
 * watch: trade_hook, when set, runs once right after the real unwatch.
 */
static void (*trade_hook)(void);

int nvb_unwatch(struct nvb *h, uint64_t wid)
{
	static int (*real)(struct nvb *, uint64_t);
	void (*hook)(void) = trade_hook;
	int err;

	if (!real)
		*(void **)&real = dlvsym(RTLD_NEXT, "nvb_unwatch", "LIBNVBRIDGE_1.0");
	if (!real)
		abort();
	err = real(h, wid);
	if (hook) {
		trade_hook = NULL;
		hook();
	}
	return err;
}

static struct peer trade_peer;
static int trade_hooked;

static void trade_revoke(void)
{
	trade_hooked = 1;
	if (peer_cmd(&trade_peer, 'c'))	/* unpublished at the broker when it answers */
		trade_hooked = -1;
}

/*
 * An open in flight (fetched under the library's watch of its name, held
 * in its import by the stand-in's gate) while another open finds the
 * handle's watch table full and trades a name watch nothing uses for the
 * scope-wide watch.  The name of the open in flight was the newest unused
 * one; its exporter unpublishes exactly between the unwatch and the
 * scope-wide watch (trade_hook).  Before the fix that name's watch was
 * the one given up: the revocation reached nobody, and the open handed out
 * a segment of a revoked entry that never read as revoked.  Now a watch an
 * open in flight relies on is pinned: another name's watch goes, the
 * revocation arrives, and the segment reads revoked.
 */
static int t_trade_window_open_in_flight(void)
{
	struct nvb_gpu_seg_open_opts now = { .sz = sizeof(now) };
	struct opener o = { .name = "seg.tw.x" };
	struct nvb_gpu_seg *none;
	struct timespec t0;
	struct gate gt;
	struct side me;

	CHECK(side_open(&me, SEG_SIZE) == 0);
	/* 63 unused name watches, then the name's own, the newest: the table (64) is full */
	CHECK(open_gone(&me, "seg.tw.fill", 63) == 0);
	EXPECT(nvb_gpu_seg_open(me.g, me.h, "seg.tw.x", &now, &none), -ENOENT);
	CHECK(peer_start(&trade_peer, o.name, SEG_SIZE) == 0);
	o.me = &me;
	CHECK(gate_hold(&gt, &o) == 0, "the open never reached the import");
	/* the trade: a new name finds the table full */
	trade_hook = trade_revoke;
	none = (struct nvb_gpu_seg *)&me;
	EXPECT(nvb_gpu_seg_open(me.g, me.h, "seg.tw.new", &now, &none), -ENOENT);
	CHECK(none == NULL);
	trade_hook = NULL;
	EXPECT(trade_hooked, 1);	/* the revocation fell right after the unwatch */
	usleep(300000);			/* the thread reads what reached the handle */
	gate_release(&gt);
	OK(o.err);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!nvb_gpu_seg_revoked(o.seg) && ms_since(&t0) < 3000)
		usleep(1000);
	EXPECT(nvb_gpu_seg_revoked(o.seg), 1);	/* before: 0, for ever */
	nvb_gpu_seg_close(o.seg);
	CHECK(peer_cmd(&trade_peer, 'q') == 0);
	side_close(&me);
	return 0;
}

/*
 * A handle whose segments are all closed (parked) keeps the mapping of the
 * last one cached, and the library's watch of its name.  Its exporter
 * unpublishes: the revocation must reach that mapping now, releasing the
 * exporter's memory (here: the importer's descriptors on it), not at the
 * handle's next open.  Before, nobody read a parked handle's events and
 * the mapping stayed until then.  A parked handle opened again is served
 * from the cache (its record taken back), and one the application closes
 * is dropped with the mappings imported through it.
 */
static int t_parked_revocation_releases_mapping(void)
{
	struct nvb_gpu_seg_open_opts now = { .sz = sizeof(now) };
	struct nvb_gpu_seg_stats st = { .sz = sizeof(st) };
	struct nvb_gpu_seg *seg;
	struct timespec t0;
	struct side me;
	struct peer p, q;
	struct nvb *h2;
	int base;

	CHECK(side_open(&me, SEG_SIZE) == 0);
	base = fake_mem_fds();
	CHECK(peer_start(&p, "seg.parkrel", SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.parkrel", NULL, &seg));
	CHECK(fake_mem_fds() > base, "the import holds no descriptor on the peer's memory");
	nvb_gpu_seg_close(seg);		/* the handle is parked; the mapping stays cached */
	OK(nvb_gpu_seg_open(me.g, me.h, "seg.parkrel", NULL, &seg));
	OK(nvb_gpu_seg_stats(seg, &st));
	EXPECT(st.cached, 1);		/* taken back: the cache and the watch still serve */
	EXPECT(st.round_trips, 1);
	nvb_gpu_seg_close(seg);
	usleep(100000);
	CHECK(fake_mem_fds() > base, "the cached mapping went without a revocation");
	CHECK(peer_cmd(&p, 'c') == 0);	/* revoked while parked */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (fake_mem_fds() > base && ms_since(&t0) < 5000)
		usleep(1000);
	EXPECT(fake_mem_fds(), base);	/* before: still mapped until the next open */
	EXPECT(nvb_gpu_seg_open(me.g, me.h, "seg.parkrel", &now, &seg), -ENOENT);

	/* a parked handle the application closes: its record and cached mappings go */
	CHECK(fake_nvb_open(&h2) == 0);
	CHECK(peer_start(&q, "seg.parkrel2", SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, h2, "seg.parkrel2", NULL, &seg));
	nvb_gpu_seg_close(seg);
	CHECK(fake_mem_fds() > base);
	nvb_close(h2);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (fake_mem_fds() > base && ms_since(&t0) < 5000)
		usleep(1000);
	EXPECT(fake_mem_fds(), base);	/* no revocation can reach them any more */
	CHECK(peer_cmd(&q, 'q') == 0);
	CHECK(peer_cmd(&p, 'q') == 0);
	side_close(&me);
	return 0;
}

/* ---- review B: two GPU layers of one process on one handle ---- */

/*
 * g1 opens a segment through h and closes it: h is parked in g1, whose
 * library thread goes on reading h's events (nvb_event_read_live) until h
 * closes.  The same process's second GPU layer (g2: another library, a
 * plugin) then imports names through h with nvb_gpu_import() and relies on
 * h's revocation events (its import_name() polls them before serving from
 * the cache).  g1's thread reads them first and applies them to g1 only:
 * g2's name cache keeps name -> the revoked id, and nvb_gpu_import() of the
 * name serves the revoked entry's mapping with no request.  Before the
 * parked handles (d12d98a) g1 forgot h with its last segment and g2 saw
 * every revocation.  FAILS on main (every round is stale).
 */
static int t_rvb_two_layers_import_served_revoked(void)
{
	struct nvb_gpu *g1;
	struct nvb_gpu_seg *seg;
	struct nvb_gpu_map *m, *m2;
	struct side me;
	struct peer p0, p;
	char name[64];
	int i, stale = 0, unmarked = 0, rounds = 4;

	CHECK(side_open(&me, SEG_SIZE) == 0);
	OK(nvb_gpu_open(NULL, &g1));
	CHECK(peer_start(&p0, "rvb.park", SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(g1, me.h, "rvb.park", NULL, &seg));
	nvb_gpu_seg_close(seg);		/* h parked in g1: g1's thread reads its events */
	for (i = 0; i < rounds; i++) {
		snprintf(name, sizeof(name), "rvb.imp.%d", i);
		CHECK(peer_start(&p, name, SEG_SIZE) == 0);
		OK(nvb_gpu_import(me.g, me.h, name, 0, 0, &m));
		CHECK(peer_cmd(&p, 'c') == 0);	/* unpublished: revoked at the broker */
		usleep(300000);
		m2 = NULL;
		if (nvb_gpu_import(me.g, me.h, name, 0, 0, &m2) == 0) {
			stale++;	/* the revoked entry's mapping, from g2's cache */
			nvb_gpu_unmap(m2);
		}
		unmarked += !nvb_gpu_map_revoked(m);
		nvb_gpu_unmap(m);
		CHECK(peer_cmd(&p, 'q') == 0);
		waitpid(p.pid, NULL, 0);
	}
	EXPECT(stale, 0);
	EXPECT(unmarked, 0);
	CHECK(peer_cmd(&p0, 'q') == 0);
	nvb_gpu_close(g1);
	side_close(&me);
	return 0;
}

/*
 * The same with segments on both sides: g1's parked h and g2's open
 * segments through h.  Both threads poll h's event fd; whichever reads a
 * REVOKED record consumes it, so g2's segment stays usable after its
 * exporter unpublished.  FAILS on main in most runs (a coin flip a round).
 */
static int t_rvb_two_layers_segment_revocation_lost(void)
{
	struct nvb_gpu *g1;
	struct nvb_gpu_seg *seg;
	struct timespec t0;
	struct side me;
	struct peer p0, p;
	char name[64];
	int i, lost = 0, rounds = 16;

	CHECK(side_open(&me, SEG_SIZE) == 0);
	OK(nvb_gpu_open(NULL, &g1));
	CHECK(peer_start(&p0, "rvb.park2", SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(g1, me.h, "rvb.park2", NULL, &seg));
	nvb_gpu_seg_close(seg);
	for (i = 0; i < rounds; i++) {
		snprintf(name, sizeof(name), "rvb.seg.%d", i);
		CHECK(peer_start(&p, name, SEG_SIZE) == 0);
		OK(nvb_gpu_seg_open(me.g, me.h, name, NULL, &seg));
		CHECK(peer_cmd(&p, 'c') == 0);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		while (!nvb_gpu_seg_revoked(seg) && ms_since(&t0) < 1500)
			usleep(1000);
		lost += !nvb_gpu_seg_revoked(seg);
		nvb_gpu_seg_close(seg);
		CHECK(peer_cmd(&p, 'q') == 0);
		waitpid(p.pid, NULL, 0);
	}
	EXPECT(lost, 0);
	CHECK(peer_cmd(&p0, 'q') == 0);
	nvb_gpu_close(g1);
	side_close(&me);
	return 0;
}

/*
 * nvb_event_read_live()'s check is a trylock that it releases before
 * nvb_event_read() takes the same lock: an application wait that takes
 * h's event lock in between (the case the check is there for) holds the
 * library thread, with handles_lock (every nvb_open()/nvb_close()) and the
 * engine's hlock (every segment call), for as long as the wait lasts.  The
 * interleaving is forced here: this program's pthread_mutex_trylock (the
 * library's only caller is nvb_event_read_live) lets the application's
 * wait in right after the library's check succeeded, as a preemption
 * there would, and hides the library's matching unlock.  FAILS on main:
 * nvb_open() takes as long as the application's wait (~1.5 s).
 */
static int (*tt_real_trylock)(pthread_mutex_t *), (*tt_real_unlock)(pthread_mutex_t *);
static pthread_mutex_t *tt_skip;
static pthread_t tt_skip_thr;
static struct nvb *tt_h;
static int tt_armed, tt_fired, tt_go[2];

__attribute__((constructor)) static void tt_resolve(void)
{
	*(void **)&tt_real_trylock = dlsym(RTLD_NEXT, "pthread_mutex_trylock");
	*(void **)&tt_real_unlock = dlsym(RTLD_NEXT, "pthread_mutex_unlock");
}

int pthread_mutex_trylock(pthread_mutex_t *m)
{
	struct nvb_event ev[32];
	int r = tt_real_trylock(m);

	if (r || !__atomic_exchange_n(&tt_armed, 0, __ATOMIC_SEQ_CST))
		return r;
	tt_real_unlock(m);
	while (nvb_event_read(tt_h, ev, 32, 0) > 0)
		;	/* the application's wait starts on an empty queue */
	if (write(tt_go[1], "g", 1) != 1)
		abort();
	usleep(200000);	/* it holds h's event lock now, waiting */
	tt_skip = m;
	tt_skip_thr = pthread_self();
	__atomic_store_n(&tt_fired, 1, __ATOMIC_SEQ_CST);
	return 0;	/* the library's check saw the lock free */
}

int pthread_mutex_unlock(pthread_mutex_t *m)
{
	if (m == tt_skip && pthread_equal(pthread_self(), tt_skip_thr)) {
		tt_skip = NULL;	/* the check's unlock: the lock is the application's */
		return 0;
	}
	return tt_real_unlock(m);
}

static void *tt_app_wait(void *arg)
{
	struct nvb_event ev;
	char c;

	(void)arg;
	if (read(tt_go[0], &c, 1) == 1)
		nvb_event_read(tt_h, &ev, 1, 1500000000LL);
	return NULL;
}

static int t_rvb_event_read_live_stalls(void)
{
	struct nvb_gpu_seg *seg;
	struct timespec t0;
	struct side me;
	struct peer p;
	struct nvb *h3;
	pthread_t th;
	int64_t ms;

	CHECK(tt_real_trylock && tt_real_unlock);
	CHECK(side_open(&me, SEG_SIZE) == 0);
	CHECK(peer_start(&p, "rvb.tt", SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, me.h, "rvb.tt", NULL, &seg));
	nvb_gpu_seg_close(seg);		/* parked: read through nvb_event_read_live() */
	tt_h = me.h;
	CHECK(pipe(tt_go) == 0);
	CHECK(pthread_create(&th, NULL, tt_app_wait, NULL) == 0);
	__atomic_store_n(&tt_armed, 1, __ATOMIC_SEQ_CST);
	CHECK(peer_cmd(&p, 'c') == 0);	/* an event: the thread reads the parked handle */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!__atomic_load_n(&tt_fired, __ATOMIC_SEQ_CST) && ms_since(&t0) < 3000)
		usleep(1000);
	__atomic_store_n(&tt_armed, 0, __ATOMIC_SEQ_CST);
	CHECK(tt_fired, "the library thread never read the parked handle");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	OK(fake_nvb_open(&h3));		/* needs handles_lock */
	ms = ms_since(&t0);
	nvb_close(h3);
	pthread_join(th, NULL);
	CHECK(ms < 500, "nvb_open() waited %lld ms behind the application's event wait",
	      (long long)ms);
	CHECK(peer_cmd(&p, 'q') == 0);
	close(tt_go[0]);
	close(tt_go[1]);
	side_close(&me);
	return 0;
}

/*
 * nvb_gpu_seg_publish(3): "when h is closed, the mappings imported through
 * it leave the cache".  Only a parked record's sweep drops them: a handle
 * on which this layer holds no watch of its own (the application watched
 * the name first: the library's watch is -EEXIST, not noted) is forgotten
 * with its last segment, and its cached mapping (the exporter's memory)
 * stays after nvb_close() until some later import happens to sweep.
 * FAILS on main.
 */
static int t_rvb_closed_handle_keeps_mapping(void)
{
	struct nvb_gpu_seg *seg;
	struct timespec t0;
	struct side me;
	struct peer p;
	struct nvb *h2;
	uint64_t wid;
	int base;

	CHECK(side_open(&me, SEG_SIZE) == 0);
	base = fake_mem_fds();
	CHECK(fake_nvb_open(&h2) == 0);
	CHECK(peer_start(&p, "rvb.own", SEG_SIZE) == 0);
	OK(nvb_watch(h2, "rvb.own", 0, &wid));	/* the application's own watch */
	OK(nvb_gpu_seg_open(me.g, h2, "rvb.own", NULL, &seg));
	nvb_gpu_seg_close(seg);
	CHECK(fake_mem_fds() > base, "the import holds no descriptor on the peer's memory");
	nvb_close(h2);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (fake_mem_fds() > base && ms_since(&t0) < 3000)
		usleep(1000);
	EXPECT(fake_mem_fds(), base);	/* main: still mapped */
	CHECK(peer_cmd(&p, 'q') == 0);
	side_close(&me);
	return 0;
}

/*
 * The library thread's wait must hold no reference on the event fds it
 * waits on.  With the kernel backend the event fd is the /dev/nvbridge fd,
 * and its release is what revokes the handle's entries (nvb_open(3): when
 * nvb_close() returns); a poll(2) sleeping on it pins the file (fs/select.c
 * takes a reference per fd), so the close is not the last reference and
 * the entries stay until the thread next wakes (a parked handle: the next
 * event of any handle).  The broker's event fd (a socketpair end, listed
 * in /proc/net/unix while its file lives) shows the same: the program's
 * only descriptor of it is replaced (dup2, so that nvb_close's wake-up of
 * the thread does not hide a pin) while the thread sleeps on it; the
 * socket must be gone at once.  FAILS with poll(2): the socket stays.
 */
static int unix_inode_listed(unsigned long ino)
{
	FILE *f = fopen("/proc/net/unix", "re");
	char line[512];
	unsigned long i;
	int found = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%*s %*s %*s %*s %*s %*s %lu", &i) == 1 && i == ino)
			found = 1;
	fclose(f);
	return found;
}

static int t_rvb_parked_event_fd_not_pinned(void)
{
	struct nvb_gpu_seg *seg;
	struct side me;
	struct peer p;
	struct nvb *h2;
	struct stat st;
	int evfd, pr[2], listed;

	CHECK(side_open(&me, SEG_SIZE) == 0);
	CHECK(fake_nvb_open(&h2) == 0);
	CHECK(peer_start(&p, "rvb.pin", SEG_SIZE) == 0);
	OK(nvb_gpu_seg_open(me.g, h2, "rvb.pin", NULL, &seg));
	nvb_gpu_seg_close(seg);		/* parked: the thread waits on h2's event fd */
	evfd = nvb_event_fd(h2);
	CHECK(evfd >= 0 && fstat(evfd, &st) == 0 && S_ISSOCK(st.st_mode));
	CHECK(unix_inode_listed((unsigned long)st.st_ino) == 1, "event socket not in /proc/net/unix");
	CHECK(pipe2(pr, O_CLOEXEC) == 0);
	usleep(200000);			/* the thread sleeps in its wait */
	CHECK(dup2(pr[0], evfd) == evfd);	/* the program's last reference to the socket */
	usleep(100000);
	listed = unix_inode_listed((unsigned long)st.st_ino);
	nvb_close(h2);			/* closes evfd: now the pipe's duplicate */
	close(pr[0]);
	close(pr[1]);
	CHECK(peer_cmd(&p, 'q') == 0);
	waitpid(p.pid, NULL, 0);
	side_close(&me);
	EXPECT(listed, 0);		/* poll(2): 1, the sleeping thread holds it */
	return 0;
}

/*
 * The kernel backend's half of rvb_parked_event_fd_not_pinned, end to end
 * (the lead runs it in the VM, the module loaded: NVB_TEST_KERNEL_DEV=
 * /dev/nvbridge build/gpu-fake/segment rvb_kernel_close_revokes_parked,
 * with the gpu-fake LD_LIBRARY_PATH): hk is parked in g's thread (its
 * event fd is the /dev/nvbridge fd), publishes an entry of its own, and
 * is closed while the thread sleeps; nvb_open(3) says its entries are
 * revoked when nvb_close() returns.  With a poll(2) wait the thread's
 * reference kept the file open: the entry stayed fetchable.  Skipped
 * without the device.
 */
static int t_rvb_kernel_close_revokes_parked(void)
{
	const char *dev = getenv("NVB_TEST_KERNEL_DEV");
	struct nvb_opts o = { .sz = sizeof(o), .backend = NVB_BACKEND_KERNEL, .device_path = dev };
	struct nvb_fetch_opts fo = { .sz = sizeof(fo) };
	unsigned char blob[16];
	struct nvb_gpu_seg *seg;
	struct nvb_entry ent;
	struct nvb_gpu *g;
	struct nvb *hk, *hq;
	struct peer p;
	int fd = -1, err;

	if (!dev || access(dev, R_OK | W_OK)) {
		printf("    NVB_TEST_KERNEL_DEV unset or unusable: needs the kernel module (VM)\n");
		return NVB_CASE_SKIP;
	}
	fake_random(blob, sizeof(blob));
	OK(nvb_gpu_open(NULL, &g));
	CHECK(nvb_open(&o, &hk) == 0 && nvb_open(&o, &hq) == 0);
	peer_kdev = dev;
	err = peer_start(&p, "rvbk.seg", SEG_SIZE);
	peer_kdev = NULL;
	CHECK(err == 0);
	OK(nvb_gpu_seg_open(g, hk, "rvbk.seg", NULL, &seg));
	nvb_gpu_seg_close(seg);		/* hk parked: g's thread waits on /dev/nvbridge */
	CHECK(nvb_publish(hk, "rvbk.mine", -1, blob, sizeof(blob), NULL, NULL) == 0);
	err = nvb_fetch(hq, "rvbk.mine", &fo, NULL, 0, &ent, NULL);
	CHECK(err == 0 || err == -EMSGSIZE, "the entry is not there before the close: %d", err);
	usleep(200000);			/* the thread sleeps */
	nvb_close(hk);
	err = nvb_fetch(hq, "rvbk.mine", &fo, NULL, 0, &ent, &fd);
	if (fd >= 0)
		close(fd);
	CHECK(peer_cmd(&p, 'q') == 0);
	waitpid(p.pid, NULL, 0);
	nvb_close(hq);
	nvb_gpu_close(g);
	EXPECT(err, -ENOENT);		/* poll(2): 0 or -EMSGSIZE, still published */
	return 0;
}

static const struct nvb_case cases[] = {
	{ "symbol_versions", t_symbol_versions },
	{ "random_batches_every_byte", t_random_batches },
	{ "rejected_before_copy", t_rejected_before_copy },
	{ "revoked_at_submit", t_revoked_at_submit },
	{ "exporter_killed_mid_batch", t_killed_mid_batch },
	{ "threads_submit_at_once", t_threads },
	{ "eventfd_and_device_flag", t_eventfd_and_flag },
	{ "io_uring_completion", t_io_uring },
	{ "close_with_batches_in_flight", t_close_in_flight },
	{ "close_after_hostfn_returns", t_close_after_hostfn },
	{ "owner_and_arguments", t_owner_and_args },
	{ "setup_stats_and_prefetch", t_stats_and_prefetch },
	{ "watch_fetch_one_round_trip", t_watch_fetch_pipelined },
	{ "watch_table_full_goes_scope_wide", t_watch_table_full },
	{ "watch_refused_open_does_not_wait", t_watch_refused_no_wait },
	{ "own_watch_ended_library_watches_again", t_own_watch_ended },
	{ "parked_watch_records_kept_while_open", t_parked_records_kept },
	{ "revoked_during_open_amid_churn", t_revoked_during_open_churn },
	{ "trade_window_open_in_flight", t_trade_window_open_in_flight },
	{ "parked_handle_revocation_releases_mapping", t_parked_revocation_releases_mapping },
	{ "rvb_two_layers_import_served_revoked", t_rvb_two_layers_import_served_revoked },
	{ "rvb_two_layers_segment_revocation_lost", t_rvb_two_layers_segment_revocation_lost },
	{ "rvb_event_read_live_stalls_handles_lock", t_rvb_event_read_live_stalls },
	{ "rvb_closed_handle_keeps_mapping", t_rvb_closed_handle_keeps_mapping },
	{ "rvb_parked_event_fd_not_pinned", t_rvb_parked_event_fd_not_pinned },
	{ "rvb_kernel_close_revokes_parked", t_rvb_kernel_close_revokes_parked },
};

int main(int argc, char **argv)
{
	return fake_main("gpu-segment", cases, sizeof(cases) / sizeof(cases[0]), argc, argv, NULL);
}
