// SPDX-License-Identifier: MIT
/*
 * Co-run phase (see corun.h).  Each trial, for each transfer method: the
 * GEMM alone (a batch of NREP products on its own stream), then the same
 * batch while the host keeps the method busy on another stream until the
 * batch ends.  Reported per trial, so the parent gives median and spread:
 *   corun_gemm_tflops/solo          the GEMM alone
 *   corun_gemm_ratio/<method>       GEMM with the method / the GEMM alone just before
 *   corun_xfer_GBs/<method>         the method's rate beside the GEMM
 *   solo_xfer_GBs/<method>          the method's rate alone (same duration)
 *   corun_lat_us/<method>, solo_lat_us/<method>   for the latency methods
 * Every method runs with the library's defaults (SM budget, proxy CTAs),
 * except nvbridge-blocks-yield: NVB_GPU_OPEN_SM_YIELD (its SM kernel on a
 * lowest-priority stream, one CTA a block, no cap).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "corun.h"

#define MiB (1ull << 20)
#define GN 8192			/* GEMM: GN x GN x GN, bf16 in, fp32 accumulate */
#define INFLIGHT 8		/* transfer units queued at most */

typedef int (*cublas_create_t)(void **);
typedef int (*cublas_destroy_t)(void *);
typedef int (*cublas_set_stream_t)(void *, CUstream);
typedef int (*cublas_gemm_ex_t)(void *, int, int, int, int, int, const void *, const void *, int,
				int, const void *, int, int, const void *, void *, int, int, int, int);

struct corun {
	const struct corun_env *e;
	struct nvb_cuda *cu;
	void *blas_lib, *blas;
	cublas_gemm_ex_t gemm;
	CUdeviceptr a, b, c, blk_tab;
	CUstream sg, st;
	CUevent g0, g1, ev[INFLIGHT];
	struct nvb_gpu_proxy *proxy;
	struct nvb_gpu *gy;	/* a second context of the library: SM kernels yield */
	uint64_t pticket[INFLIGHT];
	struct nvb_gpu_block *blk;
	unsigned int nrep;
	uint32_t fval;
	char *why;
	size_t wlen;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int fail(struct corun *c, const char *what, int r)
{
	snprintf(c->why, c->wlen, "co-run: %s failed (%d)", what, r);
	return -1;
}

#define CKC(c, call) do { CUresult r_ = (c)->cu->call; \
	if (r_ != CUDA_SUCCESS) return fail((c), #call, (int)r_); } while (0)

static int blas_load(struct corun *c)
{
	const char *cand[4] = { c->e->cublas, getenv("NVB_CUBLAS_LIB"), "libcublas.so.13",
				"libcublas.so.12" };
	cublas_create_t create;
	cublas_set_stream_t set_stream;
	void *p;
	int i, r;

	for (i = 0; i < 4 && !c->blas_lib; i++)
		if (cand[i])
			c->blas_lib = dlopen(cand[i], RTLD_NOW | RTLD_LOCAL);
	if (!c->blas_lib) {
		snprintf(c->why, c->wlen, "co-run skipped: no libcublas (--cublas PATH or "
			 "NVB_CUBLAS_LIB; tried libcublas.so.13/.12): %s", dlerror());
		return -1;
	}
	p = dlsym(c->blas_lib, "cublasCreate_v2");
	memcpy(&create, &p, sizeof(p));
	p = dlsym(c->blas_lib, "cublasSetStream_v2");
	memcpy(&set_stream, &p, sizeof(p));
	p = dlsym(c->blas_lib, "cublasGemmEx");
	memcpy(&c->gemm, &p, sizeof(p));
	if (!create || !set_stream || !c->gemm) {
		snprintf(c->why, c->wlen, "co-run skipped: libcublas lacks cublasCreate_v2/"
			 "cublasSetStream_v2/cublasGemmEx");
		return -1;
	}
	r = create(&c->blas);
	if (r)
		return fail(c, "cublasCreate", r);
	r = set_stream(c->blas, c->sg);
	if (r)
		return fail(c, "cublasSetStream", r);
	return 0;
}

/* Random bf16 in [-1, 1): never time a GEMM on zeros. */
static int fill_bf16(struct corun *c, CUdeviceptr d, uint64_t seed)
{
	size_t n = (size_t)GN * GN, i;
	uint16_t *h = malloc(n * 2);
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	CUresult r;

	if (!h)
		return fail(c, "malloc", -ENOMEM);
	for (i = 0; i < n; i++) {
		float f;
		uint32_t u;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		f = (float)((x >> 40) & 0xffff) / 32768.0f - 1.0f;
		memcpy(&u, &f, 4);
		h[i] = (uint16_t)(u >> 16);
	}
	r = c->cu->cuMemcpyHtoD(d, h, n * 2);
	free(h);
	return r ? fail(c, "cuMemcpyHtoD", (int)r) : 0;
}

/* Queues the batch: NREP products between g0 and g1 on sg. */
static int gemm_batch(struct corun *c)
{
	const float one = 1.0f, zero = 0.0f;
	unsigned int k;
	int r;

	CKC(c, cuEventRecord(c->g0, c->sg));
	for (k = 0; k < c->nrep; k++) {
		/* CUBLAS_OP_N, CUDA_R_16BF (14), CUBLAS_COMPUTE_32F (68), CUBLAS_GEMM_DEFAULT (-1) */
		r = c->gemm(c->blas, 0, 0, GN, GN, GN, &one, (void *)(uintptr_t)c->a, 14, GN,
			    (void *)(uintptr_t)c->b, 14, GN, &zero, (void *)(uintptr_t)c->c, 14, GN,
			    68, -1);
		if (r)
			return fail(c, "cublasGemmEx", r);
	}
	CKC(c, cuEventRecord(c->g1, c->sg));
	return 0;
}

static double gemm_tflops(struct corun *c)
{
	float ms = 0;

	if (c->cu->cuEventSynchronize(c->g1) || c->cu->cuEventElapsedTime(&ms, c->g0, c->g1) || ms <= 0)
		return -1;
	return 2.0 * GN * GN * (double)GN * c->nrep / (ms * 1e-3) / 1e12;
}

enum { M_CE, M_CE_FLAG, M_BLK_AUTO, M_BLK_SM, M_BLK_YIELD, M_SM, M_PROXY, M_LOCAL, M_IPC,
       M_LAT_CE, M_LAT_PROXY, M_PROXY_IDLE, M_N };
static const char *const mname[M_N] = {
	"nvbridge-ce-64M", "nvbridge-ce+flag-1M", "nvbridge-blocks-auto-1024x64K",
	"nvbridge-blocks-sm-1024x64K", "nvbridge-blocks-yield-1024x64K", "nvbridge-sm-64M",
	"nvbridge-proxy-1M",
	"same-process-ce-64M", "legacy-ipc-ce-64M", "nvbridge-ce+flag-4K-lat", "nvbridge-proxy-4K-lat",
	"nvbridge-proxy-idle",
};

/*
 * One unit of method m, queued (i: unit number).  Returns its bytes, or
 * -1.  Units are bounded to INFLIGHT: the caller waits for unit i - INFLIGHT.
 */
static int64_t unit(struct corun *c, int m, unsigned int i)
{
	const struct corun_env *e = c->e;
	uint64_t off = (uint64_t)(i % 2) * 64 * MiB, flag = e->remote + 255 * MiB;
	void *st = c->st;
	int err = 0;

	switch (m) {
	case M_CE:
		err = nvb_gpu_copy(e->g, e->remote + off, e->local + off, 64 * MiB, &st, 1,
				   NVB_GPU_COPY_CE);
		return err ? -1 : (int64_t)(64 * MiB);
	case M_SM:
		err = nvb_gpu_copy(e->g, e->remote + off, e->local + off, 64 * MiB, &st, 1,
				   NVB_GPU_COPY_SM);
		return err ? -1 : (int64_t)(64 * MiB);
	case M_LOCAL:
		err = c->cu->cuMemcpyDtoDAsync(e->local + 128 * MiB + off / 2, e->local + off / 2,
					       64 * MiB, c->st);
		return err ? -1 : (int64_t)(64 * MiB);
	case M_IPC:	/* the same cross-process copy as M_CE, on a legacy IPC mapping */
		err = c->cu->cuMemcpyDtoDAsync(e->remote_ipc + off, e->local + off, 64 * MiB, c->st);
		return err ? -1 : (int64_t)(64 * MiB);
	case M_CE_FLAG:
		err = nvb_gpu_copy_signal(e->g, e->remote + (i % 64) * MiB, e->local + (i % 64) * MiB,
					  MiB, &st, 1, flag, ++c->fval);
		return err ? -1 : (int64_t)MiB;
	case M_BLK_AUTO:
	case M_BLK_SM:
	case M_BLK_YIELD:	/* gy: NVB_GPU_OPEN_SM_YIELD, no CTA cap */
		err = nvb_gpu_copy_blocks(m == M_BLK_YIELD ? c->gy : e->g, c->blk, 1024, st,
					  m == M_BLK_AUTO ? 0 : NVB_GPU_COPY_SM, flag, ++c->fval);
		return err ? -1 : (int64_t)(64 * MiB);
	case M_PROXY: {
		struct nvb_gpu_put op;

		memset(&op, 0, sizeof(op));
		op.dst = e->remote + (i % 64) * MiB;
		op.src = e->local + (i % 64) * MiB;
		op.len = MiB;
		op.flag = flag;
		op.flag_val = ++c->fval;
		err = nvb_gpu_proxy_post(c->proxy, &op, &c->pticket[i % INFLIGHT]);
		return err ? -1 : (int64_t)MiB;
	}
	}
	return -1;
}

/* Queued units of m: keep at most INFLIGHT, then wait for the oldest. */
static int unit_wait(struct corun *c, int m, unsigned int i)
{
	if (m == M_PROXY)	/* the ticket of unit i - INFLIGHT */
		return nvb_gpu_proxy_sync(c->proxy, c->pticket[i % INFLIGHT], 10000000000LL) ? -1 : 0;
	return c->cu->cuEventSynchronize(c->ev[i % INFLIGHT]) ? -1 : 0;
}

/*
 * Keeps m busy until stop() (the GEMM batch is done) or for dur seconds;
 * returns GB/s over the whole time, queue drained.
 */
static double drive(struct corun *c, int m, double dur, int beside_gemm)
{
	unsigned int i = 0;
	double t0 = now(), bytes = 0;

	for (;;) {
		int64_t n;

		if (beside_gemm ? c->cu->cuEventQuery(c->g1) == CUDA_SUCCESS : now() - t0 >= dur)
			break;
		if (i >= INFLIGHT && unit_wait(c, m, i))
			return -1;
		n = unit(c, m, i);
		if (n < 0)
			return -1;
		if (m != M_PROXY && c->cu->cuEventRecord(c->ev[i % INFLIGHT], c->st))
			return -1;
		bytes += (double)n;
		i++;
	}
	if (m == M_PROXY ? nvb_gpu_proxy_sync(c->proxy, 0, 10000000000LL) != 0 :
	    c->cu->cuStreamSynchronize(c->st) != CUDA_SUCCESS)
		return -1;
	return bytes / (now() - t0) / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* 4 KiB put + completion seen by this host, one at a time: median latency in us. */
static double latency(struct corun *c, int m, double dur, int beside_gemm)
{
	static double lat[20000];
	const struct corun_env *e = c->e;
	unsigned int n = 0;
	double t0 = now();
	void *st = c->st;

	while (n < sizeof(lat) / sizeof(lat[0])) {
		double a;
		int err;

		if (beside_gemm ? c->cu->cuEventQuery(c->g1) == CUDA_SUCCESS : now() - t0 >= dur)
			break;
		a = now();
		if (m == M_LAT_CE) {
			err = nvb_gpu_copy_signal(e->g, e->remote, e->local, 4096, &st, 1,
						  e->remote + 255 * MiB, ++c->fval);
			if (!err)
				err = c->cu->cuStreamSynchronize(c->st) ? -EIO : 0;
		} else {
			err = nvb_gpu_proxy_put(c->proxy, e->remote, e->local, 4096,
						e->remote + 255 * MiB, ++c->fval);
			if (!err)
				err = nvb_gpu_proxy_sync(c->proxy, 0, 10000000000LL);
		}
		if (err)
			return -1;
		lat[n++] = (now() - a) * 1e6;
	}
	if (!n)
		return -1;
	qsort(lat, n, sizeof(double), cmp_d);
	return lat[n / 2];
}

static int run_method(struct corun *c, int m)
{
	const struct corun_env *e = c->e;
	double solo, with, t_solo, x;
	float ms = 0;
	int lat = m == M_LAT_CE || m == M_LAT_PROXY;

	/* the GEMM alone, right before: the ratio's denominator */
	if (gemm_batch(c))
		return -1;
	solo = gemm_tflops(c);
	if (solo <= 0)
		return fail(c, "GEMM alone", 0);
	c->cu->cuEventElapsedTime(&ms, c->g0, c->g1);
	t_solo = ms * 1e-3;
	if (m == M_PROXY_IDLE) {
		/* a proxy that served one put and went idle: what does it cost? */
		if (nvb_gpu_proxy_put(c->proxy, e->remote, e->local, 4096, 0, 0) ||
		    nvb_gpu_proxy_sync(c->proxy, 0, 10000000000LL))
			return fail(c, "proxy put", 0);
		if (gemm_batch(c))
			return -1;
		with = gemm_tflops(c);
	} else {
		/* the method alone for as long as the batch took */
		x = lat ? latency(c, m, t_solo, 0) : drive(c, m, t_solo, 0);
		if (x < 0)
			return fail(c, mname[m], 0);
		e->report(e->ctx, lat ? "solo_lat_us" : "solo_xfer_GBs", mname[m], 0, x,
			  lat ? "us" : "GB/s");
		if (gemm_batch(c))
			return -1;
		x = lat ? latency(c, m, 0, 1) : drive(c, m, 0, 1);
		with = gemm_tflops(c);
		if (x < 0)
			return fail(c, mname[m], 0);
		e->report(e->ctx, lat ? "corun_lat_us" : "corun_xfer_GBs", mname[m], 0, x,
			  lat ? "us" : "GB/s");
	}
	if (with <= 0)
		return fail(c, "GEMM beside a transfer", 0);
	e->report(e->ctx, "corun_gemm_tflops", "solo", 0, solo, "TFLOP/s");
	e->report(e->ctx, "corun_gemm_ratio", mname[m], 0, with / solo, "x");
	return 0;
}

int corun_phase(const struct corun_env *e, char *why, size_t len)
{
	struct corun C, *c = &C;
	unsigned int t, k;
	int m, rc = -1;

	memset(c, 0, sizeof(*c));
	c->e = e;
	c->cu = e->cu;
	c->why = why;
	c->wlen = len;
	c->nrep = e->quick ? 60 : 120;
	why[0] = 0;
	if (nvb_gpu_set_device(e->g, e->dev))
		return fail(c, "nvb_gpu_set_device", 0);
	if (c->cu->cuStreamCreate(&c->sg, CU_STREAM_NON_BLOCKING) ||
	    c->cu->cuStreamCreate(&c->st, CU_STREAM_NON_BLOCKING) ||
	    c->cu->cuEventCreate(&c->g0, CU_EVENT_DEFAULT) ||
	    c->cu->cuEventCreate(&c->g1, CU_EVENT_DEFAULT))
		return fail(c, "stream/event setup", 0);
	for (k = 0; k < INFLIGHT; k++)
		if (c->cu->cuEventCreate(&c->ev[k], CU_EVENT_DISABLE_TIMING))
			return fail(c, "cuEventCreate", 0);
	if (blas_load(c))
		goto out;
	if (c->cu->cuMemAlloc(&c->a, (size_t)GN * GN * 2) ||
	    c->cu->cuMemAlloc(&c->b, (size_t)GN * GN * 2) ||
	    c->cu->cuMemAlloc(&c->c, (size_t)GN * GN * 2)) {
		fail(c, "cuMemAlloc (GEMM operands)", 0);
		goto out;
	}
	if (fill_bf16(c, c->a, 1) || fill_bf16(c, c->b, 2))
		goto out;
	c->blk = malloc(1024 * sizeof(*c->blk));
	if (!c->blk)
		goto out;
	for (k = 0; k < 1024; k++) {	/* scattered: every other 64 KiB slot, shuffled order */
		uint64_t slot = (k * 617u) % 1024;

		c->blk[k].dst = e->remote + 128 * MiB + slot * 2 * 65536 % (126 * MiB);
		c->blk[k].src = e->local + slot * 65536;
		c->blk[k].len = 65536;
	}
	if (nvb_gpu_has_kernel(e->g)) {
		struct nvb_gpu_opts go = { .sz = sizeof(go), .flags = NVB_GPU_OPEN_SM_YIELD };

		if (nvb_gpu_open(&go, &c->gy) || nvb_gpu_set_device(c->gy, e->dev)) {
			fail(c, "nvb_gpu_open(NVB_GPU_OPEN_SM_YIELD)", 0);
			goto out;
		}
	}
	if (nvb_gpu_has_kernel(e->g) &&
	    nvb_gpu_proxy_start(e->g, e->dev, e->proxy_ctas, 0, &c->proxy)) {
		fail(c, "nvb_gpu_proxy_start", 0);
		goto out;
	}
	/* warm-up: cuBLAS picks its kernel, every method once */
	if (gemm_batch(c) || gemm_tflops(c) <= 0)
		goto out;
	for (m = 0; m < M_N; m++) {
		if ((m == M_PROXY || m == M_LAT_PROXY || m == M_PROXY_IDLE) && !c->proxy)
			continue;
		if (((m == M_BLK_SM || m == M_BLK_YIELD) && !nvb_gpu_has_kernel(e->g)) ||
		    (m == M_IPC && !e->remote_ipc))
			continue;
		if (m < M_LAT_CE && drive(c, m, 0.02, 0) < 0) {
			fail(c, mname[m], 0);
			goto out;
		}
	}
	for (t = 0; t < e->trials; t++) {
		for (m = 0; m < M_N; m++) {
			char p[96];

			if ((m == M_PROXY || m == M_LAT_PROXY || m == M_PROXY_IDLE) && !c->proxy)
				continue;
			if ((m == M_BLK_SM || m == M_BLK_YIELD || m == M_SM) &&
			    !nvb_gpu_has_kernel(e->g))
				continue;
			if (m == M_IPC && !e->remote_ipc)
				continue;
			snprintf(p, sizeof(p), "co-run %u/%u: %s", t + 1, e->trials, mname[m]);
			e->progress(e->ctx, p);
			if (run_method(c, m))
				goto out;
		}
	}
	rc = 0;
out:
	if (c->proxy)
		nvb_gpu_proxy_stop(c->proxy, 5000000000LL);
	c->cu->cuStreamSynchronize(c->sg);
	c->cu->cuStreamSynchronize(c->st);
	if (c->gy) {
		nvb_gpu_close(c->gy);
		nvb_gpu_set_device(e->g, e->dev);	/* its context current again, as before */
	}
	if (c->a)
		c->cu->cuMemFree(c->a);
	if (c->b)
		c->cu->cuMemFree(c->b);
	if (c->c)
		c->cu->cuMemFree(c->c);
	free(c->blk);
	if (c->blas) {
		void *p = dlsym(c->blas_lib, "cublasDestroy_v2");
		cublas_destroy_t destroy;

		memcpy(&destroy, &p, sizeof(p));
		if (destroy)
			destroy(c->blas);
	}
	/* libcublas stays loaded: its runtime may still hold the context */
	return rc;
}
