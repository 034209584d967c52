// SPDX-License-Identifier: MIT
/*
 * GPU tests of segments and transfer batches (make gputest runs it after
 * gputest): exporter processes (this program re-executed with --exporter)
 * publish segments, this process opens them and moves random blocks with
 * every copy method the host has, every byte compared on the host after
 * the destination was poisoned; bad requests must leave device memory
 * untouched; a batch queued behind a stream wait while its peer is killed
 * must complete with -ENOLINK for that peer's requests (deterministically:
 * the batch can only start after the revocation was seen).  Two processes
 * on one GPU suffice; with two GPUs the exporter uses GPU 1.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cuda_api.h"
#include "nvbridge.h"
#include "nvbridge_gpu.h"

#define MiB (1ull << 20)
#define SEG (64 * MiB)

static int passed, failed;
static struct nvb_cuda cu;
static struct nvb_gpu *g;
static struct nvb *h;
static int D1;

#define CHECK(c, ...) do { if (!(c)) { printf("    %s:%d: %s: ", __func__, __LINE__, #c); \
	printf(__VA_ARGS__); printf(" [%s]\n", nvb_gpu_last_error()); return 1; } } while (0)

static void run(const char *name, int (*fn)(void))
{
	int r;

	alarm(120);
	r = fn();
	alarm(0);
	printf("%s segtest %s\n", r ? "FAIL" : "ok  ", name);
	fflush(stdout);
	if (r)
		failed++;
	else
		passed++;
}

static uint64_t xs = 88172645463325252ull;

static uint64_t rnd(uint64_t n)
{
	xs ^= xs << 13;
	xs ^= xs >> 7;
	xs ^= xs << 17;
	return n ? xs % n : xs;
}

static void fill(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd(0);
}

static struct nvb *open_nvb(void)
{
	struct nvb *x = NULL;

	return nvb_open(NULL, &x) ? NULL : x;
}

/* --exporter NAME DEV CMD_FD ACK_FD: publish a segment of random bytes; 'c' closes it. */
static int exporter_main(const char *name, int dev, int cfd, int afd)
{
	struct nvb_gpu_buf *b;
	struct nvb_gpu_seg *s;
	struct nvb_gpu *eg;
	struct nvb *eh;
	uint8_t *host = malloc(SEG);
	char c = 'E';

	xs ^= (uint64_t)getpid() << 20;
	if (host && !nvb_gpu_open(NULL, &eg) && !nvb_gpu_set_device(eg, dev) && (eh = open_nvb()) &&
	    !nvb_gpu_alloc(eg, dev, SEG, 0, &b)) {
		fill(host, SEG);
		if (!cu.cuMemcpyHtoD(nvb_gpu_buf_ptr(b), host, SEG) &&
		    !nvb_gpu_seg_publish(eg, eh, name, b, NULL, &s))
			c = 'R';
	}
	if (write(afd, &c, 1) != 1 || c != 'R')
		return 1;
	while (read(cfd, &c, 1) == 1) {
		if (c == 'c') {
			nvb_gpu_seg_close(s);
			if (write(afd, "C", 1) != 1)
				return 1;
		} else {
			break;
		}
	}
	return 0;
}

struct peer {
	pid_t pid;
	int cmd, ack;
	char name[64];
};

static int peer_start(struct peer *p, const char *what)
{
	int c[2], a[2];
	char r = 0;

	snprintf(p->name, sizeof(p->name), "segtest.%d.%s", (int)getpid(), what);
	if (pipe(c) || pipe(a))
		return -1;
	fflush(stdout);
	p->pid = fork();
	if (p->pid == 0) {
		char s0[8], s1[12], s2[12];

		close(c[1]);
		close(a[0]);
		snprintf(s0, sizeof(s0), "%d", D1);
		snprintf(s1, sizeof(s1), "%d", c[0]);
		snprintf(s2, sizeof(s2), "%d", a[1]);
		execl("/proc/self/exe", "segtest", "--exporter", p->name, s0, s1, s2, (char *)NULL);
		_exit(127);
	}
	close(c[0]);
	close(a[1]);
	p->cmd = c[1];
	p->ack = a[0];
	return read(p->ack, &r, 1) == 1 && r == 'R' ? 0 : -1;
}

static void peer_stop(struct peer *p)
{
	if (p->pid > 0) {
		if (write(p->cmd, "q", 1) != 1)
			kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
		close(p->cmd);
		close(p->ack);
		p->pid = 0;
	}
}

/* The end of a case that used a segment, a local buffer, a peer and three host buffers. */
static int done(struct nvb_gpu_seg *s, struct nvb_gpu_buf *lb, struct peer *p, uint8_t *a,
		uint8_t *b, uint8_t *c)
{
	nvb_gpu_seg_close(s);
	nvb_gpu_free(lb);
	peer_stop(p);
	free(a);
	free(b);
	free(c);
	return 0;
}

/* Random batches, every method this host has, every byte checked. */
static int t_random(void)
{
	static const uint32_t methods[] = { 0, NVB_GPU_COPY_LOOP, NVB_GPU_COPY_BATCH, NVB_GPU_COPY_SM };
	uint8_t *L = malloc(SEG), *R = malloc(SEG), *chk = malloc(SEG);
	struct nvb_gpu_xfer_req r[256];
	struct nvb_gpu_buf *lb;
	struct nvb_gpu_seg *s;
	struct nvb_gpu_batch *b;
	struct peer p;
	uint64_t lp, rp;
	int round, st[256];

	CHECK(L && R && chk, "malloc");
	CHECK(peer_start(&p, "rand") == 0, "exporter");
	CHECK(!nvb_gpu_alloc(g, 0, SEG, 0, &lb), "alloc");
	CHECK(!nvb_gpu_seg_open(g, h, p.name, NULL, &s), "open");
	lp = nvb_gpu_buf_ptr(lb);
	rp = nvb_gpu_seg_ptr(s);
	for (round = 0; round < 48; round++) {
		struct nvb_gpu_xfer_opts o = { .sz = sizeof(o), .method = methods[round % 4] };
		size_t n = 1 + rnd(256), slot = SEG / n, i;
		size_t maxlen = round % 6 == 5 ? 8 * MiB : 256 << 10;

		/* fresh random contents on both sides: every destination poisoned */
		fill(L, SEG);
		fill(R, SEG);
		CHECK(!cu.cuMemcpyHtoD(lp, L, SEG) && !cu.cuMemcpyHtoD(rp, R, SEG), "upload");
		for (i = 0; i < n; i++) {
			size_t len = 1 + rnd(slot < maxlen ? slot : maxlen);
			size_t lo = i * slot + rnd(slot - len + 1), ro = i * slot + rnd(slot - len + 1);

			r[i] = (struct nvb_gpu_xfer_req){ (uint32_t)rnd(2), 0, lp + lo, s, ro, len };
			if (r[i].opcode == NVB_GPU_XFER_READ)
				memcpy(L + lo, R + ro, len);
			else
				memcpy(R + ro, L + lo, len);
		}
		int err = nvb_gpu_xfer_submit(g, r, n, &o, &b);

		if (err == -EOPNOTSUPP && o.method)
			continue;	/* a method this host lacks */
		CHECK(err == 0, "submit %d", err);
		CHECK(nvb_gpu_batch_wait(b, 10000000000LL) == 0, "wait");
		CHECK(nvb_gpu_batch_status(b, st, n) == 0, "status");
		if (o.method)
			CHECK(nvb_gpu_batch_method(b) == o.method, "method %u", nvb_gpu_batch_method(b));
		nvb_gpu_batch_free(b);
		CHECK(!cu.cuMemcpyDtoH(chk, lp, SEG) && !memcmp(chk, L, SEG), "local bytes, round %d", round);
		CHECK(!cu.cuMemcpyDtoH(chk, rp, SEG) && !memcmp(chk, R, SEG), "segment bytes, round %d", round);
	}
	{
		struct nvb_gpu_xfer_stats x = { .sz = sizeof(x) };

		nvb_gpu_xfer_stats(g, &x);
		printf("    methods: sm %llu batch %llu loop %llu\n", (unsigned long long)x.sm_batches,
		       (unsigned long long)x.batch_batches, (unsigned long long)x.loop_batches);
	}
	return done(s, lb, &p, L, R, chk);
}

/* Refused requests leave device memory as it was. */
static int t_refused(void)
{
	uint8_t *a = malloc(SEG), *b2 = malloc(SEG);
	struct nvb_gpu_xfer_req r[2];
	struct nvb_gpu_buf *lb;
	struct nvb_gpu_seg *s;
	struct nvb_gpu_batch *b;
	struct timespec t0, t1;
	struct peer p;
	uint64_t lp;

	CHECK(a && b2, "malloc");
	CHECK(peer_start(&p, "ref") == 0, "exporter");
	CHECK(!nvb_gpu_alloc(g, 0, SEG, 0, &lb), "alloc");
	CHECK(!nvb_gpu_seg_open(g, h, p.name, NULL, &s), "open");
	lp = nvb_gpu_buf_ptr(lb);
	fill(a, SEG);
	CHECK(!cu.cuMemcpyHtoD(lp, a, SEG), "upload");
	r[0] = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0, lp, s, 0, MiB };
	r[1] = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0, lp + MiB, s, SEG - 4095, 4096 };
	CHECK(nvb_gpu_xfer_submit(g, r, 2, NULL, &b) == -ERANGE, "ERANGE");
	r[1].offset = UINT64_MAX - 100;
	CHECK(nvb_gpu_xfer_submit(g, r, 2, NULL, &b) == -ERANGE, "wrap");
	CHECK(!cu.cuCtxSynchronize() && !cu.cuMemcpyDtoH(b2, lp, SEG) && !memcmp(a, b2, SEG),
	      "local memory changed");
	CHECK(write(p.cmd, "c", 1) == 1 && read(p.ack, b2, 1) == 1, "close");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		clock_gettime(CLOCK_MONOTONIC, &t1);
	} while (!nvb_gpu_seg_revoked(s) && t1.tv_sec - t0.tv_sec < 5);
	CHECK(nvb_gpu_xfer_submit(g, r, 1, NULL, &b) == -ENOLINK, "ENOLINK");
	CHECK(!cu.cuCtxSynchronize() && !cu.cuMemcpyDtoH(b2, lp, SEG) && !memcmp(a, b2, SEG),
	      "local memory changed");
	nvb_gpu_seg_close(s);
	nvb_gpu_free(lb);
	peer_stop(&p);
	free(a);
	free(b2);
	return 0;
}

/*
 * The batch waits on the stream (an SM spin on a word of pinned host memory
 * that this thread sets with a plain store: no copy that could queue behind
 * the wait) while its peer is killed; released once the revocation is
 * seen, it completes with -ENOLINK for that peer's requests and 0 for the
 * others.
 */
static int t_killed(void)
{
	struct nvb_gpu_xfer_req r[2];
	struct nvb_gpu_buf *lb;
	struct nvb_gpu_seg *dead, *live;
	struct nvb_gpu_batch *b;
	struct peer p1, p2;
	struct timespec t0, t1;
	volatile uint32_t *gate = NULL;
	CUstream st;
	uint64_t lp;
	int s[2];

	CHECK(peer_start(&p1, "dies") == 0 && peer_start(&p2, "lives") == 0, "exporters");
	CHECK(!nvb_gpu_alloc(g, 0, 4 * MiB, 0, &lb), "alloc");
	lp = nvb_gpu_buf_ptr(lb);
	CHECK(!nvb_gpu_seg_open(g, h, p1.name, NULL, &dead) &&
	      !nvb_gpu_seg_open(g, h, p2.name, NULL, &live), "open");
	CHECK(!cu.cuStreamCreate(&st, CU_STREAM_NON_BLOCKING), "stream");
	CHECK(!cu.cuMemAllocHost((void **)&gate, 64), "pinned word");
	*gate = 0;
	CHECK(!nvb_gpu_wait_spin(g, st, (uint64_t)(uintptr_t)gate, 1), "stream wait");
	r[0] = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0, lp + MiB, dead, 0, MiB };
	r[1] = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0, lp + 2 * MiB, live, 0, MiB };
	struct nvb_gpu_xfer_opts o = { .sz = sizeof(o), .stream = st };
	CHECK(!nvb_gpu_xfer_submit(g, r, 2, &o, &b), "submit");
	usleep(1000);
	CHECK(nvb_gpu_batch_status(b, s, 2) == -EINPROGRESS, "ran before the gate opened");
	kill(p1.pid, SIGKILL);
	waitpid(p1.pid, NULL, 0);
	p1.pid = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		clock_gettime(CLOCK_MONOTONIC, &t1);
	} while (!nvb_gpu_seg_revoked(dead) && t1.tv_sec - t0.tv_sec < 5);
	__atomic_store_n(gate, 1u, __ATOMIC_RELEASE);	/* open the gate in any case */
	CHECK(nvb_gpu_seg_revoked(dead), "revocation not seen");
	CHECK(nvb_gpu_batch_wait(b, 10000000000LL) == -ENOLINK, "batch result");
	CHECK(nvb_gpu_batch_status(b, s, 2) == -ENOLINK && s[0] == -ENOLINK && s[1] == 0,
	      "statuses %d %d", s[0], s[1]);
	nvb_gpu_batch_free(b);
	cu.cuStreamSynchronize(st);
	cu.cuStreamDestroy(st);
	cu.cuMemFreeHost((void *)gate);
	nvb_gpu_seg_close(dead);
	nvb_gpu_seg_close(live);
	nvb_gpu_free(lb);
	peer_stop(&p2);
	return 0;
}

struct thr {
	struct nvb_gpu_seg *s;
	uint64_t lp, base;
	int err;
};

static void *submitter(void *arg)
{
	struct thr *t = arg;
	struct nvb_gpu_xfer_req r[64];
	struct nvb_gpu_batch *b;

	nvb_gpu_set_device(g, 0);
	for (int k = 0; k < 100 && !t->err; k++) {
		for (int i = 0; i < 64; i++)
			r[i] = (struct nvb_gpu_xfer_req){ (uint32_t)(i & 1), 0,
				t->lp + t->base + (uint64_t)i * 65536, t->s, t->base + (uint64_t)i * 65536,
				65536 };
		t->err = nvb_gpu_xfer_submit(g, r, 64, NULL, &b);
		if (!t->err) {
			t->err = nvb_gpu_batch_wait(b, 10000000000LL);
			nvb_gpu_batch_free(b);
		}
	}
	return NULL;
}

/* Four threads at once, then every byte: reads took the segment's, writes gave ours. */
static int t_threads(void)
{
	uint8_t *L = malloc(SEG), *R = malloc(SEG), *chk = malloc(SEG);
	struct nvb_gpu_buf *lb;
	struct nvb_gpu_seg *s;
	struct thr t[4];
	pthread_t th[4];
	struct peer p;
	int i;

	CHECK(L && R && chk, "malloc");
	CHECK(peer_start(&p, "thr") == 0, "exporter");
	CHECK(!nvb_gpu_alloc(g, 0, SEG, 0, &lb), "alloc");
	CHECK(!nvb_gpu_seg_open(g, h, p.name, NULL, &s), "open");
	fill(L, SEG);
	CHECK(!cu.cuMemcpyHtoD(nvb_gpu_buf_ptr(lb), L, SEG), "upload");
	CHECK(!cu.cuMemcpyDtoH(R, nvb_gpu_seg_ptr(s), SEG), "download");
	for (i = 0; i < 4; i++) {
		t[i] = (struct thr){ s, nvb_gpu_buf_ptr(lb), (uint64_t)i * (SEG / 4), 0 };
		CHECK(!pthread_create(&th[i], NULL, submitter, &t[i]), "thread");
	}
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK(t[i].err == 0, "thread %d: %d", i, t[i].err);
	}
	for (i = 0; i < 4 * 64; i++) {	/* block i of quarter q: even = read, odd = write */
		size_t off = (size_t)(i / 64) * (SEG / 4) + (size_t)(i % 64) * 65536;

		if (i & 1)
			memcpy(R + off, L + off, 65536);
		else
			memcpy(L + off, R + off, 65536);
	}
	CHECK(!cu.cuMemcpyDtoH(chk, nvb_gpu_buf_ptr(lb), SEG) && !memcmp(chk, L, SEG), "local");
	CHECK(!cu.cuMemcpyDtoH(chk, nvb_gpu_seg_ptr(s), SEG) && !memcmp(chk, R, SEG), "segment");
	return done(s, lb, &p, L, R, chk);
}

/* Setup timings (printed, not judged: bench --segments compares with legacy IPC). */
static int t_setup_stats(void)
{
	struct nvb_gpu_seg_stats a = { .sz = sizeof(a) }, b = { .sz = sizeof(b) };
	struct nvb_gpu_seg *s, *s2;
	struct peer p;
	char name[64];

	snprintf(name, sizeof(name), "segtest.%d.pre", (int)getpid());
	CHECK(!nvb_gpu_seg_prefetch(g, h, name, NULL), "prefetch");
	CHECK(peer_start(&p, "pre") == 0, "exporter");
	CHECK(!strcmp(p.name, name), "name");
	usleep(300000);
	CHECK(!nvb_gpu_seg_open(g, h, p.name, NULL, &s), "open");
	nvb_gpu_seg_stats(s, &a);
	printf("    prefetched open: cached %u, %u request(s), fetch %.1f us, total %.1f us\n",
	       a.cached, a.round_trips, a.fetch_ns / 1e3, a.total_ns / 1e3);
	nvb_gpu_seg_close(s);
	nvb_gpu_cache_trim(g);
	CHECK(!nvb_gpu_seg_open(g, h, p.name, NULL, &s2), "open");
	nvb_gpu_seg_stats(s2, &b);
	printf("    cold open: fetch %.1f us, import %.1f, reserve %.1f, map %.1f, access %.1f, "
	       "total %.1f us\n", b.fetch_ns / 1e3, b.import_ns / 1e3, b.reserve_ns / 1e3,
	       b.map_ns / 1e3, b.access_ns / 1e3, b.total_ns / 1e3);
	CHECK(a.cached == 1 && b.cached == 0 && b.import_ns > 0, "cache use");
	nvb_gpu_seg_close(s2);
	peer_stop(&p);
	return 0;
}

/*
 * A batch on a stream being captured into a CUDA graph (global mode, as
 * torch.cuda.graph captures): -EBUSY, nothing recorded, and the capture
 * still valid (cuStreamEndCapture gives a graph; before the fix the
 * refused cuStreamAddCallback invalidated it: CUDA_ERROR_STREAM_CAPTURE_*).
 * The same stream after the capture moves the bytes.
 */
static int t_capture(void)
{
	CUresult (*begin)(CUstream, int), (*end)(CUstream, void **), (*gdestroy)(void *);
	uint8_t *a = malloc(MiB), *b2 = malloc(MiB);
	struct nvb_gpu_xfer_opts xo = { .sz = sizeof(xo), .efd = -1 };
	struct nvb_gpu_xfer_req r;
	struct nvb_gpu_buf *lb;
	struct nvb_gpu_seg *s;
	struct nvb_gpu_batch *b = NULL;
	struct peer p;
	void *graph = NULL;
	CUstream st;
	CUresult cr;
	int e;

	*(void **)&begin = dlsym(cu.lib, "cuStreamBeginCapture_v2");
	*(void **)&end = dlsym(cu.lib, "cuStreamEndCapture");
	*(void **)&gdestroy = dlsym(cu.lib, "cuGraphDestroy");
	CHECK(a && b2 && begin && end && gdestroy, "malloc or graph entry points");
	CHECK(peer_start(&p, "cap") == 0, "exporter");
	CHECK(!nvb_gpu_alloc(g, 0, MiB, 0, &lb), "alloc");
	CHECK(!nvb_gpu_seg_open(g, h, p.name, NULL, &s), "open");
	fill(a, MiB);				/* poison */
	CHECK(!cu.cuMemcpyHtoD(nvb_gpu_buf_ptr(lb), a, MiB), "upload");
	CHECK(!cu.cuStreamCreate(&st, CU_STREAM_NON_BLOCKING), "stream");
	xo.stream = st;
	r = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0, nvb_gpu_buf_ptr(lb), s, 0, MiB };
	CHECK(!begin(st, 0), "cuStreamBeginCapture (global)");
	e = nvb_gpu_xfer_submit(g, &r, 1, &xo, &b);
	cr = end(st, &graph);
	CHECK(e == -EBUSY && !b, "submit while capturing: %d", e);
	CHECK(cr == CUDA_SUCCESS && graph, "capture invalidated: %s", nvb_cuda_errname(&cu, cr));
	gdestroy(graph);
	CHECK(!cu.cuCtxSynchronize() && !cu.cuMemcpyDtoH(b2, nvb_gpu_buf_ptr(lb), MiB) &&
	      !memcmp(a, b2, MiB), "local memory changed");
	CHECK(!nvb_gpu_xfer_submit(g, &r, 1, &xo, &b) && !nvb_gpu_batch_wait(b, 5000000000LL),
	      "submit after the capture");
	nvb_gpu_batch_free(b);
	CHECK(!cu.cuMemcpyDtoH(a, nvb_gpu_seg_ptr(s), MiB) &&
	      !cu.cuMemcpyDtoH(b2, nvb_gpu_buf_ptr(lb), MiB) && !memcmp(a, b2, MiB),
	      "the segment's bytes did not arrive");
	cu.cuStreamDestroy(st);
	return done(s, lb, &p, a, b2, NULL);
}

/* A segment's bytes written from the host and read back, directly and by a batch into lb. */
static int rw_check(struct nvb_gpu_seg *s, struct nvb_gpu_buf *lb, uint8_t *a, uint8_t *b2)
{
	struct nvb_gpu_xfer_req r = { NVB_GPU_XFER_READ, 0, nvb_gpu_buf_ptr(lb), s, 0, SEG };
	struct nvb_gpu_batch *b;
	int st;

	fill(a, SEG);
	CHECK(!cu.cuMemcpyHtoD(nvb_gpu_seg_ptr(s), a, SEG), "upload into the segment");
	fill(b2, SEG);				/* poison the local side */
	CHECK(!cu.cuMemcpyHtoD(nvb_gpu_buf_ptr(lb), b2, SEG), "poison");
	CHECK(!nvb_gpu_xfer_submit(g, &r, 1, NULL, &b) && !nvb_gpu_batch_wait(b, 10000000000LL) &&
	      !nvb_gpu_batch_status(b, &st, 1) && st == 0, "batch read");
	nvb_gpu_batch_free(b);
	CHECK(!cu.cuMemcpyDtoH(b2, nvb_gpu_buf_ptr(lb), SEG) && !memcmp(a, b2, SEG), "bytes read");
	return 0;
}

/*
 * nvb_gpu_seg_open_many: three exporters' segments in one reservation,
 * adjacent, readable and writable by every device (one cuMemSetAccess per
 * device over all); one revoked and closed (cuMemUnmap of its range only)
 * while the others stay usable; the reservation goes with the last.
 */
static int t_open_many(void)
{
	uint8_t *a = malloc(SEG), *b2 = malloc(SEG);
	struct nvb_gpu_seg_stats st[3];
	struct nvb_gpu_seg *s[3];
	const char *names[3];
	struct nvb_gpu_buf *lb;
	struct timespec t0, t1;
	struct peer p[3];
	int i;

	CHECK(a && b2, "malloc");
	for (i = 0; i < 3; i++) {
		char what[8];

		snprintf(what, sizeof(what), "many%d", i);
		CHECK(peer_start(&p[i], what) == 0, "exporter %d", i);
		names[i] = p[i].name;
	}
	CHECK(!nvb_gpu_alloc(g, 0, SEG, 0, &lb), "alloc");
	CHECK(!nvb_gpu_seg_open_many(g, h, names, 3, NULL, s), "open_many");
	for (i = 0; i < 3; i++) {
		st[i] = (struct nvb_gpu_seg_stats){ .sz = sizeof(st[i]) };
		nvb_gpu_seg_stats(s[i], &st[i]);
		printf("    open_many seg %d: fetch %.1f us, import %.1f, reserve %.1f, map %.1f, "
		       "access %.1f, total %.1f us\n", i, st[i].fetch_ns / 1e3, st[i].import_ns / 1e3,
		       st[i].reserve_ns / 1e3, st[i].map_ns / 1e3, st[i].access_ns / 1e3,
		       st[i].total_ns / 1e3);
		CHECK(nvb_gpu_seg_size(s[i]) == SEG, "size");
	}
	CHECK(nvb_gpu_seg_ptr(s[1]) == nvb_gpu_seg_ptr(s[0]) + SEG &&
	      nvb_gpu_seg_ptr(s[2]) == nvb_gpu_seg_ptr(s[1]) + SEG, "not adjacent: %#llx %#llx %#llx",
	      (unsigned long long)nvb_gpu_seg_ptr(s[0]), (unsigned long long)nvb_gpu_seg_ptr(s[1]),
	      (unsigned long long)nvb_gpu_seg_ptr(s[2]));
	for (i = 0; i < 3; i++)
		CHECK(rw_check(s[i], lb, a, b2) == 0, "segment %d", i);
	CHECK(write(p[1].cmd, "c", 1) == 1, "close cmd");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		usleep(1000);
		clock_gettime(CLOCK_MONOTONIC, &t1);
	} while (!nvb_gpu_seg_revoked(s[1]) && t1.tv_sec - t0.tv_sec < 5);
	CHECK(nvb_gpu_seg_revoked(s[1]) == 1, "not revoked");
	nvb_gpu_seg_close(s[1]);	/* unmaps its range in the middle of the reservation */
	CHECK(rw_check(s[0], lb, a, b2) == 0 && rw_check(s[2], lb, a, b2) == 0, "neighbours");
	nvb_gpu_seg_close(s[0]);
	nvb_gpu_cache_trim(g);
	CHECK(rw_check(s[2], lb, a, b2) == 0, "the last one");
	nvb_gpu_seg_close(s[2]);
	nvb_gpu_cache_trim(g);	/* the reservation goes */
	CHECK(!cu.cuCtxSynchronize(), "context error after the unmaps");
	nvb_gpu_free(lb);
	for (i = 0; i < 3; i++)
		peer_stop(&p[i]);
	free(a);
	free(b2);
	return 0;
}

int main(int argc, char **argv)
{
	char msg[256] = "";
	int n;

	if (nvb_cuda_load(&cu, NULL, msg, sizeof(msg)) || cu.cuInit(0)) {
		printf("SKIP segtest: no usable libcuda (%s)\n0 passed, 0 failed\n", msg);
		return 0;
	}
	if (argc == 6 && !strcmp(argv[1], "--exporter"))
		return exporter_main(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (nvb_gpu_open(NULL, &g) || (n = nvb_gpu_device_count(g)) < 1) {
		printf("SKIP segtest: %s\n0 passed, 0 failed\n", nvb_gpu_last_error());
		return 0;
	}
	D1 = n > 1;
	h = open_nvb();
	if (!h) {
		printf("FAIL no nvbridge backend: %s\n0 passed, 1 failed\n", nvb_open_error());
		return 1;
	}
	nvb_gpu_set_device(g, 0);
	xs ^= (uint64_t)time(NULL);
	printf("segtest: %d GPU(s), SM kernel %s\n", n, nvb_gpu_has_kernel(g) ? "yes" : "no");
	run("random_batches_every_byte", t_random);
	run("refused_before_copy", t_refused);
	run("killed_while_queued", t_killed);
	run("threads", t_threads);
	run("setup_stats", t_setup_stats);
	run("capture_refused_graph_intact", t_capture);
	run("open_many_one_reservation", t_open_many);
	nvb_gpu_close(g);
	nvb_close(h);
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
