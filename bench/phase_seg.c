// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench --segments N: segments and transfer batches (nvb_gpu_seg_*,
 * nvb_gpu_xfer_*) against legacy CUDA IPC with hand-written copies, in one
 * run on the same GPUs.
 *
 *  setup     N processes, one segment each, every process opens every
 *            other's: publish vs cuIpcGetMemHandle, each open vs
 *            cuIpcOpenMemHandle, the total per process; the opens again
 *            after nvb_gpu_seg_prefetch (import ahead), all at once
 *            (nvb_gpu_seg_open_many: one round trip, one reservation), and
 *            where an open's microseconds went (nvb_gpu_seg_stats).
 *  transfer  Mooncake's transfer_engine_bench pattern: process 0 with T
 *            threads, each submitting batches of B blocks of S bytes at
 *            random block-aligned offsets of process 1's segment, a read
 *            share of R %; against T threads of cuMemcpyDtoDAsync per block
 *            on the legacy IPC mapping (one stream each), and the same
 *            run's large copy of B x S bytes (the rate to match), split
 *            into T contiguous slices, one per thread, each on a stream of
 *            its own (the same threads and streams as the others); also,
 *            shown apart, the same bytes as one copy on 1 thread, 1 stream.
 *
 * Processes i run on GPU gpus[i % ngpus] (default: all on GPU 0, two or
 * more processes on one GPU, as on the one-GPU hosts).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>

#include "seg_priv.h"

#ifdef NVB_BENCH_LIB

void seg_die(struct seg_ctx *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->sh->why, sizeof(c->sh->why), fmt, ap);
	va_end(ap);
	c->sh->failed = 1;
	fprintf(stderr, "nvbridge-bench --segments: process %d: %s\n", c->idx, c->sh->why);
	_exit(1);
}

void seg_bar(struct seg_ctx *c)
{
	pthread_barrier_wait(&c->sh->bar);
	if (c->sh->failed)
		_exit(1);
}

/* The setup's timed trials: --trials, one with --kv (that run is the KV phase's). */
static unsigned int setup_trials(const struct seg_opts *o)
{
	return o->kv_layers ? 1 : o->trials;
}

/*
 * Every process opens every other's segment "<prefix>.<j>": the sum in us
 * goes to figure f of trial t, with where the microseconds went (f ==
 * SF_OPEN).  In the last trial process 0 keeps process 1's segment for the
 * transfers.
 */
static void open_all(struct seg_ctx *c, const char *prefix, unsigned int t, int f, int keep)
{
	struct nvb_gpu_seg_open_opts oo = { .sz = sizeof(oo), .timeout_ns = 10000000000LL };
	double (*v)[SEG_MAXTR][SEG_MAXP] = c->sh->v;
	struct nvb_gpu_seg_stats st;
	struct nvb_gpu_seg *s;
	char name[64];
	double t0;
	int j, i = c->idx;

	for (j = 0; j < c->o->nproc; j++) {
		if (j == i)
			continue;
		snprintf(name, sizeof(name), "%s.%d", prefix, j);
		t0 = now_s();
		SNV(c, nvb_gpu_seg_open(c->g, c->h, name, &oo, &s));
		v[f][t][i] += (now_s() - t0) * 1e6;
		memset(&st, 0, sizeof(st));
		st.sz = sizeof(st);
		if (f == SF_OPEN && !nvb_gpu_seg_stats(s, &st)) {
			v[SF_WATCH][t][i] += st.watch_ns / 1e3;
			v[SF_FETCH][t][i] += st.fetch_ns / 1e3;
			v[SF_IMPORT][t][i] += (st.import_ns + st.reserve_ns + st.map_ns) / 1e3;
			v[SF_ACCESS][t][i] += st.access_ns / 1e3;
			v[SF_RT][t][i] += st.round_trips;
		}
		if (keep && j == 1 && i == 0)
			c->peer = s;
		else
			nvb_gpu_seg_close(s);
	}
}

/* publish, then all open all (every step behind a barrier) */
static struct nvb_gpu_seg *nvb_round(struct seg_ctx *c, unsigned int t, int last)
{
	double (*v)[SEG_MAXTR][SEG_MAXP] = c->sh->v;
	struct nvb_gpu_seg_stats st = { .sz = sizeof(st) };
	struct nvb_gpu_seg *mine;
	char name[64];
	double t0;

	seg_bar(c);
	snprintf(name, sizeof(name), "nvbench.seg.%u.%d", t, c->idx);	/* fresh names a trial */
	t0 = now_s();
	SNV(c, nvb_gpu_seg_publish(c->g, c->h, name, c->buf, NULL, &mine));
	v[SF_PUB][t][c->idx] = (now_s() - t0) * 1e6;
	if (!nvb_gpu_seg_stats(mine, &st)) {
		v[SF_EXPORT][t][c->idx] = st.export_ns / 1e3;
		v[SF_PUBLISH][t][c->idx] = st.publish_ns / 1e3;
	}
	seg_bar(c);
	snprintf(name, sizeof(name), "nvbench.seg.%u", t);
	open_all(c, name, t, SF_OPEN, last);
	seg_bar(c);
	return mine;
}

/* legacy IPC at the same granularity: one region per process, all open all */
static void ipc_round(struct seg_ctx *c, CUdeviceptr p, unsigned int t, int last)
{
	double (*v)[SEG_MAXTR][SEG_MAXP] = c->sh->v;
	CUdeviceptr q;
	double t0;
	int j;

	seg_bar(c);
	t0 = now_s();
	SCK(c, cuIpcGetMemHandle(&c->sh->ipc[c->idx], p));
	v[SF_GET][t][c->idx] = (now_s() - t0) * 1e6;
	seg_bar(c);	/* the handles cross through shared memory: no rendezvous timed */
	for (j = 0; j < c->o->nproc; j++) {
		if (j == c->idx)
			continue;
		t0 = now_s();
		SCK(c, cuIpcOpenMemHandle(&q, c->sh->ipc[j], CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
		v[SF_IPCOPEN][t][c->idx] += (now_s() - t0) * 1e6;
		if (last && c->idx == 0 && j == 1)
			c->ipc_peer = q;
		else
			SCK(c, cuIpcCloseMemHandle(q));
	}
	seg_bar(c);
}

/* import ahead: prefetch, then the peers publish (the same buffer, a new name), then open */
static void prefetch_round(struct seg_ctx *c, unsigned int t)
{
	struct nvb_gpu_seg *mine2;
	char name[64];
	int j;

	for (j = 0; j < c->o->nproc; j++)
		if (j != c->idx) {
			snprintf(name, sizeof(name), "nvbench.segp.%u.%d", t, j);
			SNV(c, nvb_gpu_seg_prefetch(c->g, c->h, name, NULL));
		}
	seg_bar(c);
	snprintf(name, sizeof(name), "nvbench.segp.%u.%d", t, c->idx);
	SNV(c, nvb_gpu_seg_publish(c->g, c->h, name, c->buf, NULL, &mine2));
	seg_bar(c);
	usleep(200000);	/* the library threads import in the background meanwhile */
	snprintf(name, sizeof(name), "nvbench.segp.%u", t);
	open_all(c, name, t, SF_PRE, 0);
	seg_bar(c);
	nvb_gpu_seg_close(mine2);
}

/*
 * All at once: the peers publish (the same buffer, a new name), then each
 * process opens every peer's in one nvb_gpu_seg_open_many() call.
 */
static void many_round(struct seg_ctx *c, unsigned int t)
{
	struct nvb_gpu_seg_open_opts oo = { .sz = sizeof(oo), .timeout_ns = 10000000000LL };
	struct nvb_gpu_seg *mine3, *s[SEG_MAXP];
	char names[SEG_MAXP][64], name[64];
	const char *np[SEG_MAXP];
	unsigned int k = 0, i;
	double t0;
	int j;

	snprintf(name, sizeof(name), "nvbench.segm.%u.%d", t, c->idx);
	SNV(c, nvb_gpu_seg_publish(c->g, c->h, name, c->buf, NULL, &mine3));
	for (j = 0; j < c->o->nproc; j++)
		if (j != c->idx) {
			snprintf(names[k], sizeof(names[k]), "nvbench.segm.%u.%d", t, j);
			np[k] = names[k];
			k++;
		}
	seg_bar(c);
	t0 = now_s();
	SNV(c, nvb_gpu_seg_open_many(c->g, c->h, np, k, &oo, s));
	c->sh->v[SF_MANY][t][c->idx] = (now_s() - t0) * 1e6;
	for (i = 0; i < k; i++)
		nvb_gpu_seg_close(s[i]);
	seg_bar(c);
	nvb_gpu_seg_close(mine3);
}

/*
 * Trial 0 is the warm-up (the first segment and IPC calls of the process,
 * reported apart), then --trials trials, each with fresh allocations and
 * names; which method goes first alternates.  The last trial's buffers and
 * mappings stay for the transfers.
 */
static void setup_phase(struct seg_ctx *c)
{
	struct nvb_gpu_seg *mine = NULL;
	CUdeviceptr p;
	unsigned int t, n = setup_trials(c->o);

	for (t = 0; t <= n; t++) {
		int last = t == n, nvb_first = !(t & 1);

		SNV(c, nvb_gpu_alloc(c->g, c->dev, c->o->seg_size, 0, &c->buf));
		SCK(c, cuMemAlloc(&p, c->o->seg_size));
		if (c->idx == 0) {	/* a FABRIC handle makes export and import try it first */
			c->sh->htypes = nvb_gpu_buf_handle_types(c->buf);
			c->sh->fabric_err = nvb_gpu_buf_fabric_error(c->buf);
		}
		if (nvb_first)
			mine = nvb_round(c, t, last);
		ipc_round(c, p, t, last);
		if (!nvb_first)
			mine = nvb_round(c, t, last);
		prefetch_round(c, t);
		many_round(c, t);
		seg_bar(c);	/* every peer closed its mappings of ours */
		if (last)
			break;
		nvb_gpu_seg_close(mine);
		nvb_gpu_free(c->buf);
		SCK(c, cuMemFree(p));
	}
	(void)mine;	/* the last one stays published for the transfers */
}

struct worker {
	struct seg_ctx *c;
	int legacy;
	uint64_t bytes;
	int err;
	char why[160];
};

static uint64_t rnd_block(uint64_t *state, uint64_t nblk)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return (*state % nblk);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct seg_ctx *c = w->c;
	const struct seg_opts *o = c->o;
	uint64_t nblk = o->seg_size / o->block, state = 0x9e3779b97f4a7c15ull ^ (uintptr_t)w;
	uint64_t local = nvb_gpu_buf_ptr(c->buf);
	struct nvb_gpu_xfer_req *r = calloc(o->batch, sizeof(*r));
	struct nvb_gpu_batch *b;
	CUstream st = NULL;
	unsigned int k, i;
	CUresult cr;

	if (!r || nvb_gpu_set_device(c->g, c->dev)) {
		snprintf(w->why, sizeof(w->why), "worker setup failed");
		w->err = 1;
		free(r);
		return NULL;
	}
	if (w->legacy && c->cu.cuStreamCreate(&st, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS)
		w->err = 1;
	for (k = 0; k < o->batches && !w->err; k++) {
		for (i = 0; i < o->batch; i++) {
			int rd = (int)(rnd_block(&state, 100) < o->read_pct);

			r[i].opcode = rd ? NVB_GPU_XFER_READ : NVB_GPU_XFER_WRITE;
			r[i].local = local + rnd_block(&state, nblk) * o->block;
			r[i].seg = c->peer;
			r[i].offset = rnd_block(&state, nblk) * o->block;
			r[i].len = o->block;
		}
		if (!w->legacy) {
			w->err = nvb_gpu_xfer_submit(c->g, r, o->batch, NULL, &b);
			if (!w->err) {
				w->err = nvb_gpu_batch_wait(b, 30000000000LL);
				nvb_gpu_batch_free(b);
			}
			if (w->err)
				snprintf(w->why, sizeof(w->why), "batch: %s (%s)", strerror(-w->err),
					 nvb_gpu_last_error());
		} else {
			/* what an application writes by hand on a legacy IPC mapping */
			for (i = 0; i < o->batch && !w->err; i++) {
				uint64_t remote = c->ipc_peer + r[i].offset;

				cr = c->cu.cuMemcpyDtoDAsync(r[i].opcode ? remote : r[i].local,
							     r[i].opcode ? r[i].local : remote,
							     o->block, st);
				w->err = cr != CUDA_SUCCESS;
			}
			if (!w->err)
				w->err = c->cu.cuStreamSynchronize(st) != CUDA_SUCCESS;
			if (w->err)
				snprintf(w->why, sizeof(w->why), "legacy copies failed");
		}
		w->bytes += (uint64_t)o->batch * o->block;
	}
	if (st)
		c->cu.cuStreamDestroy(st);
	free(r);
	return NULL;
}

static double run_workers(struct seg_ctx *c, int legacy)
{
	struct worker w[SEG_MAXT];
	pthread_t t[SEG_MAXT];
	uint64_t bytes = 0;
	double t0 = now_s(), dt;
	unsigned int i;

	for (i = 0; i < c->o->threads; i++) {
		w[i] = (struct worker){ .c = c, .legacy = legacy };
		if (pthread_create(&t[i], NULL, worker_main, &w[i]))
			seg_die(c, "pthread_create failed");
	}
	for (i = 0; i < c->o->threads; i++) {
		pthread_join(t[i], NULL);
		if (w[i].err)
			seg_die(c, "%s", w[i].why[0] ? w[i].why : "transfer failed");
		bytes += w[i].bytes;
	}
	dt = now_s() - t0;
	return bytes / dt / 1e9;
}

#define LARGE_IT	20	/* copies of the large range timed */

/* One thread's slice [lo, lo + len) of the large copy, LARGE_IT times on its own stream. */
struct large_slice {
	struct seg_ctx *c;
	pthread_barrier_t *go, *done;
	uint64_t lo, len;
	int err;
};

static void *large_main(void *arg)
{
	struct large_slice *w = arg;
	struct nvb_cuda *cu = &w->c->cu;
	uint64_t dst = nvb_gpu_seg_ptr(w->c->peer) + w->lo, src = nvb_gpu_buf_ptr(w->c->buf) + w->lo;
	CUstream st = NULL;
	unsigned int k;

	w->err = nvb_gpu_set_device(w->c->g, w->c->dev) ||
		 cu->cuStreamCreate(&st, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS;
	/* warm: the stream's first copy is not timed */
	if (!w->err && w->len)
		w->err = cu->cuMemcpyDtoDAsync(dst, src, w->len, st) != CUDA_SUCCESS ||
			 cu->cuStreamSynchronize(st) != CUDA_SUCCESS;
	pthread_barrier_wait(w->go);
	for (k = 0; k < LARGE_IT && !w->err && w->len; k++)
		w->err = cu->cuMemcpyDtoDAsync(dst, src, w->len, st) != CUDA_SUCCESS;
	if (!w->err && st)
		w->err = cu->cuStreamSynchronize(st) != CUDA_SUCCESS;
	pthread_barrier_wait(w->done);
	if (st)
		cu->cuStreamDestroy(st);
	return NULL;
}

/* len bytes split into T contiguous slices, a thread and a stream each: GB/s (host clock). */
static double large_split(struct seg_ctx *c, uint64_t len)
{
	unsigned int i, n = c->o->threads;
	struct large_slice w[SEG_MAXT];
	pthread_barrier_t go, done;
	pthread_t t[SEG_MAXT];
	double t0, dt;

	pthread_barrier_init(&go, NULL, n + 1);
	pthread_barrier_init(&done, NULL, n + 1);
	for (i = 0; i < n; i++) {
		w[i] = (struct large_slice){ .c = c, .go = &go, .done = &done,
			.lo = len * i / n, .len = len * (i + 1) / n - len * i / n };
		if (pthread_create(&t[i], NULL, large_main, &w[i]))
			seg_die(c, "pthread_create failed");
	}
	pthread_barrier_wait(&go);
	t0 = now_s();
	pthread_barrier_wait(&done);
	dt = now_s() - t0;
	for (i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		if (w[i].err)
			seg_die(c, "large copy, thread %u: a CUDA call failed", i);
	}
	pthread_barrier_destroy(&go);
	pthread_barrier_destroy(&done);
	return dt > 0 ? (double)len * LARGE_IT / dt / 1e9 : 0;
}

static void transfer_phase(struct seg_ctx *c)
{
	struct nvb_gpu_xfer_stats xs = { .sz = sizeof(xs) };
	uint64_t len = (uint64_t)c->o->batch * c->o->block;
	CUevent e0, e1;
	CUstream st;
	float ms = 0;
	unsigned int k, it = LARGE_IT;

	if (c->idx == 0) {
		c->sh->xfer_gbs = run_workers(c, 0);
		if (!nvb_gpu_xfer_stats(c->g, &xs))
			c->sh->method = xs.last_method;
		c->sh->legacy_gbs = run_workers(c, 1);
		if (len > c->o->seg_size)
			len = c->o->seg_size;
		c->sh->large_gbs = large_split(c, len);
		/* the same bytes by one thread on one stream, timed by events: shown apart */
		SCK(c, cuStreamCreate(&st, CU_STREAM_NON_BLOCKING));
		SCK(c, cuEventCreate(&e0, 0));
		SCK(c, cuEventCreate(&e1, 0));
		SCK(c, cuMemcpyDtoDAsync(nvb_gpu_seg_ptr(c->peer), nvb_gpu_buf_ptr(c->buf), len, st));
		SCK(c, cuEventRecord(e0, st));
		for (k = 0; k < it; k++)
			SCK(c, cuMemcpyDtoDAsync(nvb_gpu_seg_ptr(c->peer), nvb_gpu_buf_ptr(c->buf),
						 len, st));
		SCK(c, cuEventRecord(e1, st));
		SCK(c, cuEventSynchronize(e1));
		SCK(c, cuEventElapsedTime(&ms, e0, e1));
		c->sh->large1_gbs = ms > 0 ? (double)len * it / (ms * 1e-3) / 1e9 : 0;
	}
	seg_bar(c);
}

static void seg_child(const struct seg_opts *o, struct seg_shared *sh, int idx)
{
	struct nvb_opts no = { .sz = sizeof(no), .socket_path = o->socket };
	struct nvb_gpu_opts go = { .sz = sizeof(go), .sm_ctas = o->sm_ctas,
				   .flags = o->sm_yield ? NVB_GPU_OPEN_SM_YIELD : 0 };
	struct seg_ctx C, *c = &C;
	char msg[256];

	memset(c, 0, sizeof(*c));
	c->o = o;
	c->sh = sh;
	c->idx = idx;
	c->dev = o->ngpus ? o->gpus[idx % o->ngpus] : 0;
	sh->dev[idx] = c->dev;
	if (nvb_cuda_load(&c->cu, NULL, msg, sizeof(msg)))
		seg_die(c, "no usable CUDA driver: %s", msg);
	SNV(c, nvb_gpu_open(&go, &c->g));
	SNV(c, nvb_gpu_set_device(c->g, c->dev));
	if (o->socket)
		no.backend = NVB_BACKEND_BROKER;
	SNV(c, nvb_open(&no, &c->h));
	setup_phase(c);
	if (!o->kv_only)
		transfer_phase(c);
	if (sh->kv)
		kv_phase(c);
	_exit(0);
}

/* One figure of one trial: the mean over the processes. */
static double fig(const struct seg_shared *sh, int n, int f, unsigned int t)
{
	double sum = 0;
	int i;

	for (i = 0; i < n; i++)
		sum += sh->v[f][t][i];
	return sum / n;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* median, min, max of the timed trials (1..trials) of x */
struct spread {
	double med, lo, hi;
};

static struct spread spread_of(const double *x, unsigned int n)
{
	double s[SEG_MAXTR];
	struct spread r;

	memcpy(s, x + 1, n * sizeof(*s));
	qsort(s, n, sizeof(*s), cmp_d);
	r.med = n & 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	r.lo = s[0];
	r.hi = s[n - 1];
	return r;
}

/* The figures and ratios, per trial (x[0]: the warm-up), over the processes. */
enum { SR_NVB = SF_N, SR_IPC, SR_PUB_GET, SR_PRE_OPEN, SR_COLD_OPEN, SR_SPEED, SR_N };

static const char *const sr_key[SR_N] = {
	"publish_us", "export_us", "publish_req_us", "ipc_get_us", "open_us", "open_watch_us",
	"open_fetch_us", "open_import_us", "open_access_us", "open_round_trips", "open_prefetched_us",
	"ipc_open_us", "open_many_us", "setup_nvb_us", "setup_ipc_us", "ratio_publish_get",
	"ratio_prefetched_open_ipc_open", "ratio_open_ipc_open", "setup_speed",
};

static void figures(const struct seg_opts *o, const struct seg_shared *sh,
		    double x[SR_N][SEG_MAXTR])
{
	int n = o->nproc, f;
	unsigned int t;

	for (t = 0; t <= setup_trials(o); t++) {
		for (f = 0; f < SF_N; f++)
			x[f][t] = fig(sh, n, f, t);
		x[SF_RT][t] /= n - 1;	/* per open */
		x[SR_NVB][t] = x[SF_PUB][t] + x[SF_OPEN][t];
		x[SR_IPC][t] = x[SF_GET][t] + x[SF_IPCOPEN][t];
		x[SR_PUB_GET][t] = x[SF_GET][t] > 0 ? x[SF_PUB][t] / x[SF_GET][t] : 0;
		x[SR_PRE_OPEN][t] = x[SF_IPCOPEN][t] > 0 ? x[SF_PRE][t] / x[SF_IPCOPEN][t] : 0;
		x[SR_COLD_OPEN][t] = x[SF_IPCOPEN][t] > 0 ? x[SF_OPEN][t] / x[SF_IPCOPEN][t] : 0;
		x[SR_SPEED][t] = x[SR_NVB][t] > 0 ? x[SR_IPC][t] / x[SR_NVB][t] : 0;
	}
}

static void row(const char *what, const double *x, unsigned int n, const char *unit)
{
	struct spread r = spread_of(x, n);

	printf("  %-48s %9.1f %s (%.1f-%.1f)   first in the process %9.1f\n", what, r.med, unit,
	       r.lo, r.hi, x[0]);
}

static void ratio(const char *what, const double *x, unsigned int n, const char *goal)
{
	struct spread r = spread_of(x, n);

	printf("  %-48s %9.2fx (%.2f-%.2f)   %s\n", what, r.med, r.lo, r.hi, goal);
}

/* The setup table (and the transfers' unless --kv alone). */
static void seg_table(const struct seg_opts *o, const struct seg_shared *sh,
		      double x[SR_N][SEG_MAXTR])
{
	unsigned int T = setup_trials(o);
	int n = o->nproc;
	char sz[32];

	fmt_size(sz, sizeof(sz), o->seg_size);
	printf("segments: %d processes, one segment of %s each, every process opens every other;\n"
	       "  %u trial%s after one untimed warm-up trial, fresh allocations and names each,\n"
	       "  the method that goes first alternating (warm-up: nvbridge); per trial the mean\n"
	       "  over the processes; median (min-max) over the trials\n", n, sz, T, T == 1 ? "" : "s");
	row("publish (nvb_gpu_seg_publish)", x[SF_PUB], T, "us");
	row("  of it: export (cuMemExport...)", x[SF_EXPORT], T, "us");
	row("  of it: publish request (nvb_publish)", x[SF_PUBLISH], T, "us");
	row("cuIpcGetMemHandle", x[SF_GET], T, "us");
	row("opens, all peers (nvb_gpu_seg_open)", x[SF_OPEN], T, "us");
	row("  of them: watch", x[SF_WATCH], T, "us");
	row("  of them: fetch", x[SF_FETCH], T, "us");
	row("  of them: import+reserve+map", x[SF_IMPORT], T, "us");
	row("  of them: access", x[SF_ACCESS], T, "us");
	row("  round trips per open", x[SF_RT], T, "  ");
	row("opens after prefetch, all peers", x[SF_PRE], T, "us");
	row("opens, all peers at once (nvb_gpu_seg_open_many)", x[SF_MANY], T, "us");
	row("cuIpcOpenMemHandle, all peers", x[SF_IPCOPEN], T, "us");
	row("setup per process, nvbridge", x[SR_NVB], T, "us");
	row("setup per process, legacy IPC", x[SR_IPC], T, "us");
	ratio("publish / cuIpcGetMemHandle", x[SR_PUB_GET], T, "goal <= 2");
	ratio("prefetched open / cuIpcOpenMemHandle", x[SR_PRE_OPEN], T, "goal <= 1.0");
	ratio("cold open / cuIpcOpenMemHandle", x[SR_COLD_OPEN], T, "(information)");
	ratio("setup speed vs legacy IPC", x[SR_SPEED], T, "goal >= 1.0");
	printf("  segment buffers: %s handles (FABRIC: %s, CUresult %d)\n",
	       sh->htypes & NVB_GPU_HANDLE_FABRIC ? "FABRIC + POSIX fd" : "POSIX fd",
	       sh->htypes & NVB_GPU_HANDLE_FABRIC ? "exported and imported first" : "refused",
	       sh->fabric_err);
	printf("  nvbridge's setup: publish (export, the broker/device request) + the opens (watch,\n"
	       "    fetch: the rendezvous by name, import, map, access); legacy IPC's: get + open,\n"
	       "    its 64-byte handles cross through the bench's shared memory for free\n"
	       "  first in the process: the warm-up trial (nvbridge first: it starts the library\n"
	       "    thread and first-use costs; then legacy IPC's first calls), information only\n");
	if (!o->kv_only) {
		fmt_size(sz, sizeof(sz), o->block);
		printf("transfers: %u threads x %u batches of %u x %s, %u %% reads\n", o->threads,
		       o->batches, o->batch, sz, o->read_pct);
		printf("  nvb_gpu_xfer_submit       %8.1f GB/s (method %s)\n", sh->xfer_gbs,
		       sh->method == NVB_GPU_COPY_SM ? "SM" : sh->method == NVB_GPU_COPY_BATCH ?
		       "BATCH" : "LOOP");
		printf("  legacy IPC, copy per block %8.1f GB/s\n", sh->legacy_gbs);
		printf("  large copy, same bytes, %u threads x 1/%u %7.1f GB/s; batch / large = %.2f "
		       "(goal >= 0.95)\n", o->threads, o->threads, sh->large_gbs,
		       sh->large_gbs > 0 ? sh->xfer_gbs / sh->large_gbs : 0);
		printf("  large copy, 1 thread, 1 stream %7.1f GB/s (information only)\n",
		       sh->large1_gbs);
	}
}

/* "key": [median, min, max, first in the process] for every figure and ratio */
static int seg_json(const struct seg_opts *o, const struct seg_shared *sh,
		    double x[SR_N][SEG_MAXTR], char *js, size_t cap)
{
	int i, k;

	i = snprintf(js, cap, "{\"nproc\": %d, \"seg_size\": %llu, \"trials\": %u, "
		     "\"warmup_trials\": 1, \"handle_types\": %u, \"fabric_err\": %d", o->nproc,
		     (unsigned long long)o->seg_size, setup_trials(o), sh->htypes, sh->fabric_err);
	for (k = 0; k < SR_N && (size_t)i < cap; k++) {
		struct spread r = spread_of(x[k], setup_trials(o));

		i += snprintf(js + i, cap - (size_t)i, ", \"%s\": [%.*f, %.*f, %.*f, %.*f]",
			      sr_key[k], k >= SR_PUB_GET ? 3 : 1, r.med, k >= SR_PUB_GET ? 3 : 1,
			      r.lo, k >= SR_PUB_GET ? 3 : 1, r.hi, k >= SR_PUB_GET ? 3 : 1, x[k][0]);
	}
	return i;
}

int seg_main(const struct seg_opts *o)
{
	static double x[SR_N][SEG_MAXTR];
	static char js[3072];
	struct seg_shared *sh;
	pthread_barrierattr_t ba;
	pid_t pid[SEG_MAXP];
	int i, st, failed = 0, n = o->nproc;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	memset(sh, 0, sizeof(*sh));
	pthread_barrierattr_init(&ba);
	pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
	pthread_barrier_init(&sh->bar, &ba, (unsigned int)n);
	if (o->kv_layers && !(sh->kv = kv_shared_new(o)))
		return 1;
	for (i = 0; i < n; i++) {
		pid[i] = fork();
		if (pid[i] == 0) {
			if (o->timeout_s)
				alarm((unsigned int)o->timeout_s);
			seg_child(o, sh, i);
		}
	}
	for (i = 0; i < n; i++) {	/* in any order: the others wait at a barrier */
		pid_t w = waitpid(-1, &st, 0);

		if (w < 0)
			break;
		if ((!WIFEXITED(st) || WEXITSTATUS(st)) && !failed) {
			failed = 1;
			for (int k = 0; k < n; k++)
				if (pid[k] != w)
					kill(pid[k], SIGKILL);
		}
	}
	if (failed) {
		fprintf(stderr, "nvbridge-bench --segments: %s\n", sh->why[0] ? sh->why : "a process failed");
		return 1;
	}
	figures(o, sh, x);
	/* with --kv and --json, stdout is one JSON document */
	if (!(o->json && sh->kv))
		seg_table(o, sh, x);
	i = seg_json(o, sh, x, js, sizeof(js));
	if (!o->kv_only && (size_t)i < sizeof(js))	/* --kv alone ran no transfer phase */
		i += snprintf(js + i, sizeof(js) - (size_t)i, ", \"xfer_gbs\": %.2f, "
			      "\"legacy_gbs\": %.2f, \"large_gbs\": %.2f, \"large_1t_gbs\": %.2f, "
			      "\"method\": %u", sh->xfer_gbs, sh->legacy_gbs, sh->large_gbs,
			      sh->large1_gbs, sh->method);
	if ((size_t)i < sizeof(js))
		snprintf(js + i, sizeof(js) - (size_t)i, "}");
	if (sh->kv)
		return kv_report(o, sh, js);
	if (o->json)
		printf("{\"segments\": %s}\n", js);
	if (o->json_out) {
		FILE *f = fopen(o->json_out, "w");

		if (f) {
			fprintf(f, "{\"segments\": %s}\n", js);
			fclose(f);
		} else {
			perror(o->json_out);
		}
	}
	return 0;
}

#else

int seg_main(const struct seg_opts *o)
{
	(void)o;
	fprintf(stderr, "--segments: built without libnvbridge\n");
	return 2;
}

#endif
