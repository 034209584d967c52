// SPDX-License-Identifier: MIT
/*
 * nvb_gpu_seg_open_many() against the stand-in libcuda: exporter processes
 * publish segments of random bytes (the test's own, inherited through
 * fork), this process opens them all in one call and reads every byte
 * through the mappings.  The stand-in counts cuMemAddressReserve / Free /
 * cuMemSetAccess calls (and access calls over unmapped bytes), so one
 * reservation and one access call per device are checked, not assumed.
 * A revoked and closed segment unmaps only its range, the reservation goes
 * with the last; a failure of any name fails the whole call with the
 * single open's errno, out[] NULL, nothing left behind.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <time.h>

#include "fake.h"

#define GRAN	(2u << 20)	/* the stand-in's granularity */
#define MAXN	40		/* more than nvb_broker_xfern's window of 32 */

/* An exporter process publishing n names (prefix.i), segment i from data + i * size. */
struct exporter {
	pid_t pid;
	int rd, wr;
};

static void exporter_child(int rd, int wr, const char *prefix, unsigned int n, size_t size,
			   const unsigned char *data)
{
	struct nvb_gpu_seg *s[MAXN];
	struct nvb_gpu_buf *b;
	struct nvb_gpu *g;
	struct nvb *h;
	char name[64], c = 'R';
	unsigned char i;

	if (nvb_gpu_open(NULL, &g) || fake_nvb_open(&h))
		c = 'E';
	for (i = 0; c == 'R' && i < n; i++) {
		snprintf(name, sizeof(name), "%s.%u", prefix, i);
		if (nvb_gpu_alloc(g, 0, size, 0, &b) || nvb_gpu_buf_size(b) != size) {
			c = 'E';
			break;
		}
		memcpy((void *)(uintptr_t)nvb_gpu_buf_ptr(b), data + (size_t)i * size, size);
		if (nvb_gpu_seg_publish(g, h, name, b, NULL, &s[i]))
			c = 'E';
	}
	if (write(wr, &c, 1) != 1 || c != 'R')
		_exit(1);
	/* 'c' then an index: close (unpublish) that segment; anything else: quit */
	while (read(rd, &c, 1) == 1 && c == 'c' && read(rd, &i, 1) == 1 && i < n) {
		nvb_gpu_seg_close(s[i]);
		if (write(wr, "C", 1) != 1)
			_exit(1);
	}
	_exit(0);
}

static int exporter_start(struct exporter *x, const char *prefix, unsigned int n, size_t size,
			  const unsigned char *data)
{
	int up[2], down[2];
	char c = 0;

	if (pipe(up) || pipe(down))
		return -1;
	x->pid = fork();
	if (x->pid == 0) {
		close(up[0]);
		close(down[1]);
		exporter_child(down[0], up[1], prefix, n, size, data);
	}
	close(up[1]);
	close(down[0]);
	x->rd = up[0];
	x->wr = down[1];
	return x->pid > 0 && read(x->rd, &c, 1) == 1 && c == 'R' ? 0 : -1;
}

static int exporter_close_seg(struct exporter *x, unsigned char i)
{
	char cmd[2] = { 'c', (char)i }, r = 0;

	return write(x->wr, cmd, 2) == 2 && read(x->rd, &r, 1) == 1 && r == 'C' ? 0 : -1;
}

/* The stand-in's VA counters (dlsym: it is libcuda.so.1 on the library path). */
struct va {
	unsigned long reserves, frees, access, gaps, bytes;
};

static int va_now(struct va *v)
{
	void *cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	const char *names[] = { "fake_va_reserves", "fake_va_frees", "fake_va_access",
				"fake_va_access_gaps", "fake_va_reserved_bytes" };
	unsigned long *out[] = { &v->reserves, &v->frees, &v->access, &v->gaps, &v->bytes };

	for (size_t i = 0; i < 5; i++) {
		unsigned long *p = cu ? dlsym(cu, names[i]) : NULL;

		if (!p)
			return -1;
		*out[i] = __atomic_load_n(p, __ATOMIC_ACQUIRE);
	}
	return 0;
}

struct ctx {
	struct nvb_gpu *g;
	struct nvb *h;
	struct exporter x[MAXN];
	unsigned int nx;
	unsigned char *data;	/* what exporter e's segment i holds: data[(e * per + i) * size] */
	size_t size;
	char names[MAXN][64];
	const char *np[MAXN];
};

/* nx exporters of per segments each (size bytes of random data), and this side's handles. */
static int ctx_start(struct ctx *c, unsigned int nx, unsigned int per, size_t size)
{
	char prefix[32];

	memset(c, 0, sizeof(*c));
	c->size = size;
	c->data = malloc((size_t)nx * per * size);
	if (!c->data)
		return -1;
	fake_random(c->data, (size_t)nx * per * size);
	for (unsigned int e = 0; e < nx; e++) {
		snprintf(prefix, sizeof(prefix), "many%u", e);
		if (exporter_start(&c->x[e], prefix, per, size, c->data + (size_t)e * per * size))
			return -1;
		c->nx++;
		for (unsigned int i = 0; i < per; i++) {
			snprintf(c->names[e * per + i], 64, "%s.%u", prefix, i);
			c->np[e * per + i] = c->names[e * per + i];
		}
	}
	return nvb_gpu_open(NULL, &c->g) || fake_nvb_open(&c->h) ? -1 : 0;
}

static void ctx_stop(struct ctx *c)
{
	for (unsigned int e = 0; e < c->nx; e++) {
		/* 'q', not EOF: later exporters inherited the pipe's write end */
		if (write(c->x[e].wr, "q", 1) != 1)
			kill(c->x[e].pid, SIGKILL);
		close(c->x[e].wr);
		waitpid(c->x[e].pid, NULL, 0);
		close(c->x[e].rd);
	}
	nvb_close(c->h);
	nvb_gpu_close(c->g);
	free(c->data);
}

/* Segment s (name k of the context) holds its exporter's bytes. */
static int holds(struct ctx *c, struct nvb_gpu_seg *s, unsigned int k)
{
	CHECK(s != NULL);
	EXPECT(nvb_gpu_seg_size(s), c->size);
	CHECK(!memcmp((void *)(uintptr_t)nvb_gpu_seg_ptr(s), c->data + (size_t)k * c->size, c->size),
	      "segment %u's bytes differ", k);
	return 0;
}

static int cmp_ptr(const void *a, const void *b)
{
	uint64_t x = nvb_gpu_seg_ptr(*(struct nvb_gpu_seg *const *)a);
	uint64_t y = nvb_gpu_seg_ptr(*(struct nvb_gpu_seg *const *)b);

	return x < y ? -1 : x > y;
}

/* The n segments lie back to back, each its size after the one before. */
static int adjacent(struct nvb_gpu_seg **s, unsigned int n)
{
	struct nvb_gpu_seg *o[MAXN];

	memcpy(o, s, n * sizeof(*s));
	qsort(o, n, sizeof(*o), cmp_ptr);
	for (unsigned int i = 1; i < n; i++)
		EXPECT(nvb_gpu_seg_ptr(o[i]), nvb_gpu_seg_ptr(o[i - 1]) + nvb_gpu_seg_size(o[i - 1]));
	return 0;
}

static int open_all_at_once(unsigned int nx, unsigned int per, size_t size, unsigned int ndev)
{
	struct nvb_gpu_seg *s[MAXN];
	struct nvb_gpu_seg_stats st;
	unsigned int n = nx * per, i;
	struct va v0, v1;
	struct ctx c;

	CHECK(ctx_start(&c, nx, per, size) == 0);
	CHECK(va_now(&v0) == 0, "the stand-in lacks the VA counters");
	for (i = 0; i < n; i++)
		s[i] = (void *)1;	/* poisoned: the call must set each */
	OK(nvb_gpu_seg_open_many(c.g, c.h, c.np, n, NULL, s));
	CHECK(va_now(&v1) == 0);
	EXPECT(v1.reserves - v0.reserves, 1);		/* one reservation for all */
	EXPECT(v1.bytes - v0.bytes, (unsigned long)n * size);
	EXPECT(v1.access - v0.access, ndev);		/* one access call per device */
	EXPECT(v1.gaps - v0.gaps, 0);			/* over mapped bytes only */
	CHECK(adjacent(s, n) == 0);
	for (i = 0; i < n; i++) {
		CHECK(holds(&c, s[i], i) == 0);
		EXPECT(nvb_gpu_seg_revoked(s[i]), 0);
		memset(&st, 0x5a, sizeof(st));
		st.sz = sizeof(st);
		OK(nvb_gpu_seg_stats(s[i], &st));
		EXPECT(st.cached, 0);
		EXPECT(st.local, 0);
		EXPECT(st.owner_uid, geteuid());
		CHECK(st.import_ns > 0, "segment %u: its own import time", i);
		/*
		 * the shared costs on the first, none on the others; the
		 * module answers each request on its own (nvb_gpu_seg_stats)
		 */
		if (fake_kernel_backend() && i == 0)
			CHECK(st.round_trips >= 1, "round_trips %u", st.round_trips);
		else
			EXPECT(st.round_trips, i == 0);
		if (i) {
			EXPECT(st.fetch_ns, 0);
			EXPECT(st.reserve_ns, 0);
			EXPECT(st.access_ns, 0);
			EXPECT(st.total_ns, 0);
		} else {
			CHECK(st.fetch_ns > 0 && st.reserve_ns > 0 && st.access_ns > 0, "shared costs");
			CHECK(st.total_ns >= st.fetch_ns + st.reserve_ns + st.access_ns, "total");
		}
	}
	for (i = 0; i < n; i++)
		nvb_gpu_seg_close(s[i]);
	nvb_gpu_cache_trim(c.g);
	CHECK(va_now(&v1) == 0);
	EXPECT(v1.frees - v0.frees, 1);
	EXPECT(v1.bytes, v0.bytes);
	ctx_stop(&c);
	return 0;
}

/* Four exporters' segments (two granules each) in one reservation, every byte read back. */
static int t_four_peers(void)
{
	return open_all_at_once(4, 1, 2 * GRAN, 1);
}

/* More names than the pipeline's window (32): the rest go as answers come. */
static int t_beyond_window(void)
{
	return open_all_at_once(2, MAXN / 2, GRAN, 1);
}

/* Two devices: one access call for each over the whole reservation. */
static int t_two_devices(void)
{
	setenv("NVB_FAKE_DEVICES", "2", 1);
	return open_all_at_once(3, 1, GRAN, 2);
}

/* NVB_GPU_SEG_LOCAL_ONLY with two devices: the current device's access alone. */
static int t_two_devices_local_only(void)
{
	struct nvb_gpu_seg_open_opts oo = { .sz = sizeof(oo), .flags = NVB_GPU_SEG_LOCAL_ONLY };
	struct nvb_gpu_seg *s[3];
	struct va v0, v1;
	struct ctx c;

	setenv("NVB_FAKE_DEVICES", "2", 1);
	CHECK(ctx_start(&c, 3, 1, GRAN) == 0);
	CHECK(va_now(&v0) == 0);
	OK(nvb_gpu_seg_open_many(c.g, c.h, c.np, 3, &oo, s));
	CHECK(va_now(&v1) == 0);
	EXPECT(v1.reserves - v0.reserves, 1);
	EXPECT(v1.access - v0.access, 1);
	EXPECT(v1.gaps - v0.gaps, 0);
	CHECK(adjacent(s, 3) == 0);
	for (unsigned int i = 0; i < 3; i++) {
		CHECK(holds(&c, s[i], i) == 0);
		nvb_gpu_seg_close(s[i]);
	}
	ctx_stop(&c);
	return 0;
}

/*
 * One revoked and closed: its range alone is unmapped (its memory's
 * descriptors go), the others stay readable, the reservation stays until
 * the last mapping in it goes.
 */
static int t_revoke_one(void)
{
	struct nvb_gpu_seg *s[3];
	struct timespec t0;
	struct va v0, v1;
	struct ctx c;
	int fds0;

	CHECK(ctx_start(&c, 3, 1, GRAN) == 0);
	CHECK(va_now(&v0) == 0);
	fds0 = fake_mem_fds();
	OK(nvb_gpu_seg_open_many(c.g, c.h, c.np, 3, NULL, s));
	CHECK(fake_mem_fds() > fds0);
	CHECK(exporter_close_seg(&c.x[1], 0) == 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!nvb_gpu_seg_revoked(s[1]) && fake_ms_since(&t0) < 5000)
		usleep(1000);
	EXPECT(nvb_gpu_seg_revoked(s[1]), 1);
	EXPECT(nvb_gpu_seg_revoked(s[0]), 0);
	EXPECT(nvb_gpu_seg_revoked(s[2]), 0);
	int fds1 = fake_mem_fds();

	nvb_gpu_seg_close(s[1]);	/* revoked: unmapped at its close, not cached */
	CHECK(fake_mem_fds() < fds1, "the revoked segment's memory is still held");
	CHECK(va_now(&v1) == 0);
	EXPECT(v1.frees, v0.frees);	/* the others still live in the reservation */
	CHECK(holds(&c, s[0], 0) == 0);
	CHECK(holds(&c, s[2], 2) == 0);
	nvb_gpu_seg_close(s[0]);
	nvb_gpu_cache_trim(c.g);	/* s[0]'s cached mapping goes; s[2] holds the reservation */
	CHECK(va_now(&v1) == 0);
	EXPECT(v1.frees, v0.frees);
	CHECK(holds(&c, s[2], 2) == 0);
	nvb_gpu_seg_close(s[2]);
	nvb_gpu_cache_trim(c.g);
	CHECK(va_now(&v1) == 0);
	EXPECT(v1.frees - v0.frees, 1);
	EXPECT(v1.bytes, v0.bytes);
	EXPECT(fake_mem_fds(), fds0);
	ctx_stop(&c);
	return 0;
}

/*
 * Segments cached by an earlier open come from the cache; only the others
 * are mapped (one alone: its own reservation, as a single open's).
 */
static int t_cached_mixed(void)
{
	struct nvb_gpu_seg *s[4], *one;
	struct nvb_gpu_seg_stats st = { .sz = sizeof(st) };
	struct va v0, v1;
	struct ctx c;

	CHECK(ctx_start(&c, 4, 1, GRAN) == 0);
	OK(nvb_gpu_seg_open(c.g, c.h, c.np[2], NULL, &one));
	nvb_gpu_seg_close(one);		/* its mapping stays cached */
	CHECK(va_now(&v0) == 0);
	OK(nvb_gpu_seg_open_many(c.g, c.h, c.np, 4, NULL, s));
	CHECK(va_now(&v1) == 0);
	EXPECT(v1.reserves - v0.reserves, 1);
	EXPECT(v1.bytes - v0.bytes, 3ul * GRAN);
	OK(nvb_gpu_seg_stats(s[2], &st));
	EXPECT(st.cached, 1);
	for (unsigned int i = 0; i < 4; i++)
		CHECK(holds(&c, s[i], i) == 0);
	for (unsigned int i = 0; i < 4; i++)
		nvb_gpu_seg_close(s[i]);
	/* all cached now but one: that one alone is mapped, in a reservation of its own */
	nvb_gpu_cache_trim(c.g);
	OK(nvb_gpu_seg_open(c.g, c.h, c.np[0], NULL, &one));
	OK(nvb_gpu_seg_open(c.g, c.h, c.np[1], NULL, &s[1]));
	OK(nvb_gpu_seg_open(c.g, c.h, c.np[3], NULL, &s[3]));
	CHECK(va_now(&v0) == 0);
	nvb_gpu_seg_close(one);
	nvb_gpu_seg_close(s[1]);
	nvb_gpu_seg_close(s[3]);
	OK(nvb_gpu_seg_open_many(c.g, c.h, c.np, 4, NULL, s));
	CHECK(va_now(&v1) == 0);
	EXPECT(v1.reserves - v0.reserves, 1);
	EXPECT(v1.access - v0.access, 1);
	for (unsigned int i = 0; i < 4; i++) {
		CHECK(holds(&c, s[i], i) == 0);
		OK(nvb_gpu_seg_stats(s[i], &st));
		EXPECT(st.cached, i != 2);
		nvb_gpu_seg_close(s[i]);
	}
	ctx_stop(&c);
	return 0;
}

/* Whatever fails fails the whole call with a single open's errno; nothing is left behind. */
static int t_errors(void)
{
	struct nvb_gpu_seg_open_opts oo = { .sz = sizeof(oo) };
	struct nvb_gpu_seg *s[3], *one;
	const char *names[3];
	struct va v0, v1;
	struct ctx c;
	int fds0, mfds0, single;

	CHECK(ctx_start(&c, 2, 1, GRAN) == 0);
	/* the engine and the watches exist first: what is counted is the calls' own */
	OK(nvb_gpu_seg_open(c.g, c.h, c.np[0], NULL, &one));
	nvb_gpu_seg_close(one);
	nvb_gpu_cache_trim(c.g);
	names[0] = c.np[0];
	names[1] = "many.none";
	names[2] = c.np[1];
	/* every failing call: out[] NULL */
#define REFUSED(n, call, err) do {						\
		s[0] = s[1] = s[2] = (void *)1;					\
		EXPECT(call, err);						\
		for (unsigned int k_ = 0; k_ < 3; k_++)				\
			CHECK(s[k_] == (k_ + 1 <= (unsigned int)(n) ? NULL : (void *)1), "out[%u]", k_);	\
	} while (0)
	single = nvb_gpu_seg_open(c.g, c.h, "many.none", NULL, &one);
	EXPECT(single, -ENOENT);
	(void)nvb_gpu_seg_open(c.g, c.h, c.np[1], NULL, &one);	/* its watch, noted */
	nvb_gpu_seg_close(one);
	nvb_gpu_cache_trim(c.g);
	fds0 = proc_fds(0);
	mfds0 = fake_mem_fds();
	CHECK(va_now(&v0) == 0);
	REFUSED(3, nvb_gpu_seg_open_many(c.g, c.h, names, 3, NULL, s), single);
	CHECK(strstr(nvb_gpu_last_error(), "many.none") != NULL, "%s", nvb_gpu_last_error());
	oo.timeout_ns = 100000000;	/* waiting for it times out, as one open's would */
	REFUSED(3, nvb_gpu_seg_open_many(c.g, c.h, names, 3, &oo, s),
		nvb_gpu_seg_open(c.g, c.h, "many.none", &oo, &one));
	EXPECT(nvb_gpu_seg_open(c.g, c.h, "many.none", &oo, &one), -ETIMEDOUT);
	/* somebody else's: the entry of that owner does not exist */
	oo.timeout_ns = 0;
	oo.flags = NVB_GPU_SEG_OWNER_UID;
	oo.owner_uid = geteuid() + 4242;
	single = nvb_gpu_seg_open(c.g, c.h, c.np[0], &oo, &one);
	EXPECT(single, -ENOENT);
	REFUSED(2, nvb_gpu_seg_open_many(c.g, c.h, c.np, 2, &oo, s), single);
	CHECK(va_now(&v1) == 0);
	EXPECT(v1.reserves, v0.reserves);	/* refused before any CUDA call */
	EXPECT(proc_fds(0), fds0);
	EXPECT(fake_mem_fds(), mfds0);

	/* arguments: each -EINVAL */
	oo.flags = 1u << 9;
	oo.owner_uid = 0;
	REFUSED(2, nvb_gpu_seg_open_many(c.g, c.h, c.np, 2, &oo, s), -EINVAL);
	REFUSED(0, nvb_gpu_seg_open_many(c.g, c.h, c.np, 0, NULL, s), -EINVAL);
	s[0] = s[1] = s[2] = (void *)1;	/* beyond the bound: names and out untouched (ASan) */
	EXPECT(nvb_gpu_seg_open_many(c.g, c.h, c.np, NVB_GPU_SEG_OPEN_MANY_MAX + 1, NULL, s),
	       -EINVAL);
	CHECK(s[0] == (void *)1 && s[2] == (void *)1);
	REFUSED(2, nvb_gpu_seg_open_many(NULL, c.h, c.np, 2, NULL, s), -EINVAL);
	REFUSED(2, nvb_gpu_seg_open_many(c.g, NULL, c.np, 2, NULL, s), -EINVAL);
	REFUSED(2, nvb_gpu_seg_open_many(c.g, c.h, NULL, 2, NULL, s), -EINVAL);
	EXPECT(nvb_gpu_seg_open_many(c.g, c.h, c.np, 2, NULL, NULL), -EINVAL);
	names[1] = NULL;
	REFUSED(3, nvb_gpu_seg_open_many(c.g, c.h, names, 3, NULL, s), -EINVAL);
	names[1] = "";
	REFUSED(3, nvb_gpu_seg_open_many(c.g, c.h, names, 3, NULL, s), -EINVAL);
	names[1] = c.np[0];	/* a name twice: refused (documented), not two references */
	REFUSED(3, nvb_gpu_seg_open_many(c.g, c.h, names, 3, NULL, s), -EINVAL);
	CHECK(strstr(nvb_gpu_last_error(), "twice") != NULL, "%s", nvb_gpu_last_error());
#undef REFUSED
	CHECK(va_now(&v1) == 0);
	EXPECT(v1.reserves, v0.reserves);
	EXPECT(proc_fds(0), fds0);
	EXPECT(fake_mem_fds(), mfds0);

	/* and after all that, the call works */
	OK(nvb_gpu_seg_open_many(c.g, c.h, c.np, 2, NULL, s));
	CHECK(holds(&c, s[0], 0) == 0 && holds(&c, s[1], 1) == 0);
	nvb_gpu_seg_close(s[0]);
	nvb_gpu_seg_close(s[1]);
	ctx_stop(&c);
	return 0;
}

/* A prefetched name costs the call no request; the others are fetched. */
static int t_prefetched(void)
{
	struct nvb_gpu_seg_stats st = { .sz = sizeof(st) };
	struct nvb_gpu_seg *s[3];
	struct timespec t0;
	struct ctx c;

	CHECK(ctx_start(&c, 3, 1, GRAN) == 0);
	OK(nvb_gpu_seg_prefetch(c.g, c.h, c.np[0], NULL));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		OK(nvb_gpu_seg_open_many(c.g, c.h, c.np, 3, NULL, s));
		OK(nvb_gpu_seg_stats(s[0], &st));
		if ((st.cached && !st.round_trips) || fake_ms_since(&t0) > 3000)
			break;
		/* opened before the thread imported it (or noted its id): again */
		for (unsigned int i = 0; i < 3; i++)
			nvb_gpu_seg_close(s[i]);
		nvb_gpu_cache_trim(c.g);
		OK(nvb_gpu_seg_prefetch(c.g, c.h, c.np[0], NULL));
		usleep(20000);
	}
	EXPECT(st.cached, 1);
	EXPECT(st.round_trips, 0);
	OK(nvb_gpu_seg_stats(s[1], &st));
	/* the first that made a request (the module: one a request) */
	if (fake_kernel_backend())
		CHECK(st.round_trips >= 1, "round_trips %u", st.round_trips);
	else
		EXPECT(st.round_trips, 1);
	for (unsigned int i = 0; i < 3; i++) {
		CHECK(holds(&c, s[i], i) == 0);
		nvb_gpu_seg_close(s[i]);
	}
	ctx_stop(&c);
	return 0;
}

static const struct nvb_case cases[] = {
	{ "four_peers_one_reservation", t_four_peers },
	{ "beyond_the_pipeline_window", t_beyond_window },
	{ "two_devices_one_access_each", t_two_devices },
	{ "two_devices_local_only", t_two_devices_local_only },
	{ "revoke_one_others_stay", t_revoke_one },
	{ "cached_served_from_cache", t_cached_mixed },
	{ "errors_fail_whole_call", t_errors },
	{ "prefetched_no_request", t_prefetched },
};

int main(int argc, char **argv)
{
	return fake_main("seg_open_many", cases, sizeof(cases) / sizeof(cases[0]), argc, argv, NULL);
}
