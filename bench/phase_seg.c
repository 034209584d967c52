// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench --segments N: segments and transfer batches (nvb_gpu_seg_*,
 * nvb_gpu_xfer_*) against legacy CUDA IPC with hand-written copies, in one
 * run on the same GPUs.
 *
 *  setup     N processes, one segment each, every process opens every
 *            other's: publish vs cuIpcGetMemHandle, each open vs
 *            cuIpcOpenMemHandle, the total per process; the opens again
 *            after nvb_gpu_seg_prefetch (import ahead), and where an open's
 *            microseconds went (nvb_gpu_seg_stats).
 *  transfer  Mooncake's transfer_engine_bench pattern: process 0 with T
 *            threads, each submitting batches of B blocks of S bytes at
 *            random block-aligned offsets of process 1's segment, a read
 *            share of R %; against T threads of cuMemcpyDtoDAsync per block
 *            on the legacy IPC mapping (one stream each), and the same
 *            run's one large copy of B x S bytes (the rate to match).
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

/*
 * Every process opens every other's segment "<prefix>.<j>"; returns the sum
 * in us.  The first round's stats are kept, and process 0 keeps process 1's
 * segment for the transfers.
 */
static double open_all(struct seg_ctx *c, const char *prefix, int first)
{
	struct nvb_gpu_seg_open_opts oo = { .sz = sizeof(oo), .timeout_ns = 10000000000LL };
	struct nvb_gpu_seg_stats st;
	struct nvb_gpu_seg *s;
	char name[64];
	double t, sum = 0;
	int j;

	for (j = 0; j < c->o->nproc; j++) {
		if (j == c->idx)
			continue;
		snprintf(name, sizeof(name), "%s.%d", prefix, j);
		t = now_s();
		SNV(c, nvb_gpu_seg_open(c->g, c->h, name, &oo, &s));
		sum += (now_s() - t) * 1e6;
		memset(&st, 0, sizeof(st));
		st.sz = sizeof(st);
		if (!nvb_gpu_seg_stats(s, &st) && first) {
			c->sh->fetch_us[c->idx] += st.fetch_ns / 1e3;
			c->sh->watch_us[c->idx] += st.watch_ns / 1e3;
			c->sh->import_us[c->idx] += (st.import_ns + st.reserve_ns + st.map_ns) / 1e3;
			c->sh->access_us[c->idx] += st.access_ns / 1e3;
		}
		if (first && j == 1 && c->idx == 0)
			c->peer = s;
		else
			nvb_gpu_seg_close(s);
	}
	return sum;
}

static void setup_phase(struct seg_ctx *c)
{
	struct nvb_gpu_seg *mine, *mine2;
	char name[64];
	CUdeviceptr p, q;
	double t;
	int j;

	SNV(c, nvb_gpu_alloc(c->g, c->dev, c->o->seg_size, 0, &c->buf));
	seg_bar(c);
	snprintf(name, sizeof(name), "nvbench.seg.%d", c->idx);
	t = now_s();
	SNV(c, nvb_gpu_seg_publish(c->g, c->h, name, c->buf, NULL, &mine));
	c->sh->pub_us[c->idx] = (now_s() - t) * 1e6;
	seg_bar(c);
	c->sh->open_us[c->idx] = open_all(c, "nvbench.seg", 1);
	seg_bar(c);

	/* import ahead: prefetch, then the peers publish, then open */
	for (j = 0; j < c->o->nproc; j++)
		if (j != c->idx) {
			snprintf(name, sizeof(name), "nvbench.segp.%d", j);
			SNV(c, nvb_gpu_seg_prefetch(c->g, c->h, name, NULL));
		}
	seg_bar(c);
	snprintf(name, sizeof(name), "nvbench.segp.%d", c->idx);
	SNV(c, nvb_gpu_seg_publish(c->g, c->h, name, c->buf, NULL, &mine2));
	seg_bar(c);
	usleep(200000);	/* the library threads import in the background meanwhile */
	c->sh->open_pre_us[c->idx] = open_all(c, "nvbench.segp", 0);
	seg_bar(c);
	nvb_gpu_seg_close(mine2);

	/* legacy IPC at the same granularity: one region per process, all open all */
	SCK(c, cuMemAlloc(&p, c->o->seg_size));
	t = now_s();
	SCK(c, cuIpcGetMemHandle(&c->sh->ipc[c->idx], p));
	c->sh->ipc_get_us[c->idx] = (now_s() - t) * 1e6;
	seg_bar(c);
	for (j = 0; j < c->o->nproc; j++) {
		if (j == c->idx)
			continue;
		t = now_s();
		SCK(c, cuIpcOpenMemHandle(&q, c->sh->ipc[j], CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
		c->sh->ipc_open_us[c->idx] += (now_s() - t) * 1e6;
		if (c->idx == 0 && j == 1)
			c->ipc_peer = q;
		else
			SCK(c, cuIpcCloseMemHandle(q));
	}
	seg_bar(c);
	(void)mine;
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

static void transfer_phase(struct seg_ctx *c)
{
	struct nvb_gpu_xfer_stats xs = { .sz = sizeof(xs) };
	uint64_t len = (uint64_t)c->o->batch * c->o->block;
	CUevent e0, e1;
	CUstream st;
	float ms = 0;
	unsigned int k, it = 20;

	if (c->idx == 0) {
		c->sh->xfer_gbs = run_workers(c, 0);
		if (!nvb_gpu_xfer_stats(c->g, &xs))
			c->sh->method = xs.last_method;
		c->sh->legacy_gbs = run_workers(c, 1);
		if (len > c->o->seg_size)
			len = c->o->seg_size;
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
		c->sh->large_gbs = ms > 0 ? (double)len * it / (ms * 1e-3) / 1e9 : 0;
	}
	seg_bar(c);
}

static void seg_child(const struct seg_opts *o, struct seg_shared *sh, int idx)
{
	struct nvb_opts no = { .sz = sizeof(no), .socket_path = o->socket };
	struct nvb_gpu_opts go = { .sz = sizeof(go), .sm_ctas = o->sm_ctas };
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

static void row(const char *what, const double *v, int n)
{
	double sum = 0, mx = 0;
	int i;

	for (i = 0; i < n; i++) {
		sum += v[i];
		if (v[i] > mx)
			mx = v[i];
	}
	printf("  %-34s mean %10.1f us   max %10.1f us\n", what, sum / n, mx);
}

/* The setup table (and the transfers' unless --kv alone). */
static void seg_table(const struct seg_opts *o, const struct seg_shared *sh,
		      const double *nvb_total, const double *ipc_total, double a, double b)
{
	int n = o->nproc;
	char sz[32];

	fmt_size(sz, sizeof(sz), o->seg_size);
	printf("segments: %d processes, one segment of %s each, every process opens every other\n",
	       n, sz);
	row("publish (nvb_gpu_seg_publish)", sh->pub_us, n);
	row("cuIpcGetMemHandle", sh->ipc_get_us, n);
	row("opens, all peers (nvb_gpu_seg_open)", sh->open_us, n);
	row("opens after prefetch", sh->open_pre_us, n);
	row("cuIpcOpenMemHandle, all peers", sh->ipc_open_us, n);
	row("  of the opens: watch", sh->watch_us, n);
	row("  of the opens: fetch", sh->fetch_us, n);
	row("  of the opens: import+reserve+map", sh->import_us, n);
	row("  of the opens: access", sh->access_us, n);
	row("setup total, nvbridge", nvb_total, n);
	row("setup total, legacy IPC", ipc_total, n);
	printf("  setup speed vs legacy IPC: %.2fx (goal >= 1.0)\n", a > 0 ? b / a : 0);
	if (!o->kv_only) {
		fmt_size(sz, sizeof(sz), o->block);
		printf("transfers: %u threads x %u batches of %u x %s, %u %% reads\n", o->threads,
		       o->batches, o->batch, sz, o->read_pct);
		printf("  nvb_gpu_xfer_submit       %8.1f GB/s (method %s)\n", sh->xfer_gbs,
		       sh->method == NVB_GPU_COPY_SM ? "SM" : sh->method == NVB_GPU_COPY_BATCH ?
		       "BATCH" : "LOOP");
		printf("  legacy IPC, copy per block %8.1f GB/s\n", sh->legacy_gbs);
		printf("  one large copy (same bytes) %7.1f GB/s; batch / large = %.2f (goal >= 0.95)\n",
		       sh->large_gbs, sh->large_gbs > 0 ? sh->xfer_gbs / sh->large_gbs : 0);
	}
}

int seg_main(const struct seg_opts *o)
{
	struct seg_shared *sh;
	pthread_barrierattr_t ba;
	pid_t pid[SEG_MAXP];
	int i, st, failed = 0, n = o->nproc;
	double nvb_total[SEG_MAXP], ipc_total[SEG_MAXP], a = 0, b = 0;
	char js[512];

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
	for (i = 0; i < n; i++) {
		nvb_total[i] = sh->pub_us[i] + sh->open_us[i];
		ipc_total[i] = sh->ipc_get_us[i] + sh->ipc_open_us[i];
		a += nvb_total[i];
		b += ipc_total[i];
	}
	/* with --kv and --json, stdout is one JSON document */
	if (!(o->json && sh->kv))
		seg_table(o, sh, nvb_total, ipc_total, a, b);
	i = snprintf(js, sizeof(js), "{\"nproc\": %d, \"seg_size\": %llu, \"setup_nvb_us\": %.1f, "
		     "\"setup_ipc_us\": %.1f", n, (unsigned long long)o->seg_size, a / n, b / n);
	if (!o->kv_only)	/* --kv alone ran no transfer phase */
		i += snprintf(js + i, sizeof(js) - (size_t)i, ", \"xfer_gbs\": %.2f, "
			      "\"legacy_gbs\": %.2f, \"large_gbs\": %.2f, \"method\": %u",
			      sh->xfer_gbs, sh->legacy_gbs, sh->large_gbs, sh->method);
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
