// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench: bulk copies through the mapping (one side, both sides),
 * pipelined small puts, scattered blocks, the same-process baseline.
 */
#define _GNU_SOURCE
#include "bench.h"

/* Bulk write/read by the importer through the mapping. */
void bw_one_side(struct side *s, const char *key, uint64_t dst, uint64_t src,
			uint64_t size, uint32_t mode, unsigned int nst, const char *method)
{
	unsigned int it = iters_for(size), i;
	void *st[NSTREAMS];

	for (i = 0; i < NSTREAMS; i++)
		st[i] = s->st[i];
	NV(s, nvb_gpu_copy(s->g, dst, src, size, st, nst, mode));	/* warm-up */
	CK(s, cuEventRecord(s->e0, s->st[0]));
	for (i = 0; i < it; i++)
		NV(s, nvb_gpu_copy(s->g, dst, src, size, st, nst, mode));
	CK(s, cuEventRecord(s->e1, s->st[0]));
	report(s, key, method, size, (double)size * it / (ev_ms(s) * 1e-3) / 1e9, "GB/s");
}

/* Both processes push size bytes into the other's buffer at once. */
void bw_bidir(struct side *s, uint64_t size, const char *method, uint32_t mode)
{
	unsigned int it = iters_for(size), i;
	void *st[NSTREAMS];
	double t[2], peer[2];

	for (i = 0; i < NSTREAMS; i++)
		st[i] = s->st[i];
	NV(s, nvb_gpu_copy(s->g, s->rdata, s->ldata, size, st, NSTREAMS, mode));
	sync_all(s);
	barrier(s);
	t[0] = now_s();
	for (i = 0; i < it; i++)
		NV(s, nvb_gpu_copy(s->g, s->rdata, s->ldata, size, st, NSTREAMS, mode));
	sync_all(s);
	t[1] = now_s();
	ctl_send(s, t, sizeof(t), -1);
	ctl_recv(s, peer, sizeof(peer), NULL);
	if (s->role == 1) {
		double start = fmin(t[0], peer[0]), end = fmax(t[1], peer[1]);

		report(s, "bidir", method, size, 2.0 * size * it / (end - start) / 1e9, "GB/s");
	}
}


void pipelined_puts(struct side *s)
{
	unsigned int n = opt.quick ? 500 : 4000, i;
	void *st0 = s->st[0];

	CK(s, cuEventRecord(s->e0, s->st[0]));
	for (i = 0; i < n; i++)
		CK(s, cuMemcpyDtoDAsync(s->rdata + (i % 64) * 4096, s->ldata, 4096, s->st[0]));
	CK(s, cuEventRecord(s->e1, s->st[0]));
	report(s, "put4k_us", "nvbridge-ce", 4096, ev_ms(s) * 1e3 / n, "us");

	if (nvb_gpu_has_kernel(s->g)) {
		CK(s, cuEventRecord(s->e0, s->st[0]));
		for (i = 0; i < n; i++)
			NV(s, nvb_gpu_put_signal(s->g, s->rdata + (i % 64) * 4096, s->ldata, 4096,
						 st0, 0, 0));
		CK(s, cuEventRecord(s->e1, s->st[0]));
		report(s, "put4k_us", "nvbridge-sm", 4096, ev_ms(s) * 1e3 / n, "us");
	}
	/* independent puts spread over the streams (copy engines in parallel) */
	CK(s, cuEventRecord(s->e0, s->st[0]));
	for (i = 1; i < NSTREAMS; i++)
		CK(s, cuStreamWaitEvent(s->st[i], s->e0, 0));
	for (i = 0; i < n; i++)
		CK(s, cuMemcpyDtoDAsync(s->rdata + (i % 64) * 4096, s->ldata + (i % 64) * 4096,
					4096, s->st[i % NSTREAMS]));
	for (i = 1; i < NSTREAMS; i++) {
		CUevent e;

		CK(s, cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
		CK(s, cuEventRecord(e, s->st[i]));
		CK(s, cuStreamWaitEvent(s->st[0], e, 0));
		CK(s, cuEventDestroy(e));
	}
	CK(s, cuEventRecord(s->e1, s->st[0]));
	report(s, "put4k_us", "nvbridge-ce-4streams", 4096, ev_ms(s) * 1e3 / n, "us");
}

static uint64_t xs_state = 0x9e3779b97f4a7c15ull;

static uint64_t xs(void)
{
	xs_state ^= xs_state << 13;
	xs_state ^= xs_state >> 7;
	xs_state ^= xs_state << 17;
	return xs_state;
}

/* Scattered blocks: the importer scatters its local blocks into the peer. */
void blocks(struct side *s, uint64_t bsize, unsigned int count, int write)
{
	struct nvb_gpu_block *b = calloc(count, sizeof(*b));
	uint64_t slots = s->data_size / bsize, *perm, i, j, t;
	static const struct {
		uint32_t flag;
		const char *name;
	} modes[] = {
		{ NVB_GPU_COPY_SM, "nvbridge-sm" },
		{ NVB_GPU_COPY_BATCH, "cuMemcpyBatchAsync" },
		{ NVB_GPU_COPY_LOOP, "memcpy-loop" },
		{ 0, "nvbridge-auto" },
	};
	unsigned int it = opt.quick ? 5 : 20, k, m;
	char key[48];

	if (!b || count > slots)
		die(s, "blocks: %u x %llu do not fit", count, (unsigned long long)bsize);
	perm = malloc(slots * sizeof(*perm));
	for (i = 0; i < slots; i++)
		perm[i] = i;
	for (i = slots - 1; i > 0; i--) {
		j = xs() % (i + 1);
		t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (k = 0; k < count; k++) {
		uint64_t loc = s->ldata + perm[k] * bsize;
		uint64_t rem = s->rdata + perm[(k + count) % slots] * bsize;

		b[k].len = bsize;
		b[k].dst = write ? rem : loc;
		b[k].src = write ? loc : rem;
	}
	free(perm);
	snprintf(key, sizeof(key), "blocks_%s_%u", write ? "write" : "read", count);
	for (m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		if (modes[m].flag == NVB_GPU_COPY_SM && !nvb_gpu_has_kernel(s->g))
			continue;
		int err = nvb_gpu_copy_blocks(s->g, b, count, s->st[0], modes[m].flag, 0, 0);

		if (err == -EOPNOTSUPP)
			continue;	/* e.g. no batch API: that row is left out */
		NV(s, err);
		CK(s, cuEventRecord(s->e0, s->st[0]));
		for (k = 0; k < it; k++)
			NV(s, nvb_gpu_copy_blocks(s->g, b, count, s->st[0], modes[m].flag, 0, 0));
		CK(s, cuEventRecord(s->e1, s->st[0]));
		report(s, key, modes[m].name, bsize,
		       (double)bsize * count * it / (ev_ms(s) * 1e-3) / 1e9, "GB/s");
	}
	free(b);
}

/* Same-process baselines, in the importer (contexts on both GPUs). */
void same_process(struct side *s, const uint64_t *sizes, int nsizes)
{
	CUdeviceptr pa, pb;
	CUstream sa, sb;
	int i, r;

	CK(s, cuCtxSetCurrent(NULL));
	NV(s, nvb_gpu_set_device(s->g, s->peer_dev));
	CK(s, cuMemAlloc(&pa, GiB));
	CK(s, cuStreamCreate(&sa, CU_STREAM_NON_BLOCKING));
	NV(s, nvb_gpu_set_device(s->g, s->dev));
	CK(s, cuMemAlloc(&pb, GiB));
	CK(s, cuStreamCreate(&sb, CU_STREAM_NON_BLOCKING));
	if (s->dev != s->peer_dev) {
		CUcontext ca, cb;

		NV(s, nvb_gpu_set_device(s->g, s->peer_dev));
		CK(s, cuCtxGetCurrent(&ca));
		NV(s, nvb_gpu_set_device(s->g, s->dev));
		CK(s, cuCtxGetCurrent(&cb));
		r = s->cu.cuCtxEnablePeerAccess(ca, 0);
		if (r && r != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)
			die(s, "cuCtxEnablePeerAccess: %s", nvb_cuda_errname(&s->cu, r));
		NV(s, nvb_gpu_set_device(s->g, s->peer_dev));
		r = s->cu.cuCtxEnablePeerAccess(cb, 0);
		if (r && r != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)
			die(s, "cuCtxEnablePeerAccess: %s", nvb_cuda_errname(&s->cu, r));
		NV(s, nvb_gpu_set_device(s->g, s->dev));
	}
	CK(s, cuMemsetD32Async(pb, 0x5a5a5a5a, GiB / 4, sb));
	for (i = 0; i < nsizes; i++) {
		uint64_t size = sizes[i];
		unsigned int it = iters_for(size), k;
		double t0, t1;

		CK(s, cuMemcpyDtoDAsync(pa, pb, size, sb));
		CK(s, cuEventRecord(s->e0, sb));
		for (k = 0; k < it; k++)
			CK(s, cuMemcpyDtoDAsync(pa, pb, size, sb));
		CK(s, cuEventRecord(s->e1, sb));
		report(s, "write", "same-process", size, (double)size * it / (ev_ms(s) * 1e-3) / 1e9, "GB/s");
		CK(s, cuEventRecord(s->e0, sb));
		for (k = 0; k < it; k++)
			CK(s, cuMemcpyDtoDAsync(pb, pa, size, sb));
		CK(s, cuEventRecord(s->e1, sb));
		report(s, "read", "same-process", size, (double)size * it / (ev_ms(s) * 1e-3) / 1e9, "GB/s");
		/* both GPUs pushing, each on its own engines */
		sync_all(s);
		t0 = now_s();
		for (k = 0; k < it; k++)
			CK(s, cuMemcpyDtoDAsync(pa, pb, size, sb));
		NV(s, nvb_gpu_set_device(s->g, s->peer_dev));
		for (k = 0; k < it; k++)
			CK(s, cuMemcpyDtoDAsync(pb, pa, size, sa));
		CK(s, cuStreamSynchronize(sa));
		NV(s, nvb_gpu_set_device(s->g, s->dev));
		CK(s, cuStreamSynchronize(sb));
		t1 = now_s();
		report(s, "bidir", "same-process", size, 2.0 * size * it / (t1 - t0) / 1e9, "GB/s");
	}
	CK(s, cuStreamDestroy(sb));
	CK(s, cuMemFree(pb));
	NV(s, nvb_gpu_set_device(s->g, s->peer_dev));
	CK(s, cuStreamDestroy(sa));
	CK(s, cuMemFree(pa));
	NV(s, nvb_gpu_set_device(s->g, s->dev));
}
