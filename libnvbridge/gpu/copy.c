// SPDX-License-Identifier: MIT
/*
 * libnvbridge GPU layer: copies (copy engines split across streams, an SM gather/scatter
 * kernel, cuMemcpyBatchAsync), completion flags and waits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gpu_priv.h"

/* ---- copies ---- */

/* Range mode: pieces small enough that every SM gets work, 8..256 KiB. */
static unsigned long long range_chunk(struct nvb_gpu *g, int dev, uint64_t len)
{
	uint64_t c = len / ((uint64_t)(g->d[dev].sm_count ? g->d[dev].sm_count : 64) * 2);

	c = (c + 4095) & ~(uint64_t)4095;
	if (c < 8192)
		c = 8192;
	if (c > NVB_SM_CHUNK)
		c = NVB_SM_CHUNK;
	return c;
}

/*
 * NVB_GPU_OPEN_SM_YIELD's streams are shared by every thread: forked into
 * a stream being captured into a CUDA graph, one would take another
 * thread's launches into that graph.  So a launch on a capturing stream
 * (or one whose state cannot be told) stays on the caller's stream.
 */
static int may_yield(struct nvb_gpu *g, CUstream st)
{
	int cs;

	return stream_capture(g, st, &cs) == CUDA_SUCCESS && cs == CU_STREAM_CAPTURE_STATUS_NONE;
}

/* 1: st is being captured into a graph (or its capture was invalidated), 0: not, or -errno */
static int capturing(struct nvb_gpu *g, CUstream st)
{
	int cs;
	CUresult r = stream_capture(g, st, &cs);

	if (r != CUDA_SUCCESS)
		return cuerr(g, r, "nvb_gpu_copy_blocks: cuStreamIsCapturing");
	return cs != CU_STREAM_CAPTURE_STATUS_NONE;
}

/*
 * A lowest-priority stream with no work left (yield_lock held), made if
 * none is and fewer than NVB_YIELD_STREAMS exist; NULL: every one busy.
 * Never one with work queued: two unrelated caller streams forked into
 * one would be ordered, and a pair that waits on each other's flags would
 * deadlock on the GPU (gputest yield_independent_streams_no_deadlock).
 */
static CUstream idle_yield_stream(struct nvb_gpu *g, struct nvb_gpu_dev *d)
{
	unsigned int i;

	for (i = 0; i < d->nyield; i++)
		if (g->cu.cuStreamQuery(d->yield_st[i]) == CUDA_SUCCESS)
			return d->yield_st[i];
	if (d->nyield < NVB_YIELD_STREAMS &&
	    g->cu.cuStreamCreateWithPriority(&d->yield_st[d->nyield], CU_STREAM_NON_BLOCKING,
					     d->yield_prio) == CUDA_SUCCESS)
		return d->yield_st[d->nyield++];
	return NULL;
}

/* st's prior work, the gather on ys, st's later work: forked and joined by events */
static int launch_yielding(struct nvb_gpu *g, struct nvb_gpu_dev *d, CUstream ys, CUstream st,
			   unsigned int grid, void **params)
{
	CUevent fork_ev = pool_event(d), join_ev = pool_event(d);

	CU(g, cuEventRecord(fork_ev, st), "cuEventRecord (yield fork)");
	CU(g, cuStreamWaitEvent(ys, fork_ev, 0), "cuStreamWaitEvent (yield fork)");
	CU(g, cuLaunchKernel(d->fn_gather, grid, 1, 1, 512, 1, 1, 0, ys, params, NULL),
	   "cuLaunchKernel(nvb_gather, yielding)");
	CU(g, cuEventRecord(join_ev, ys), "cuEventRecord (yield join)");
	CU(g, cuStreamWaitEvent(st, join_ev, 0), "cuStreamWaitEvent (yield join)");
	return 0;
}

static int launch_gather(struct nvb_gpu *g, int dev, CUdeviceptr blks, unsigned int n,
			 uint64_t dst, uint64_t src, uint64_t len, unsigned int grid,
			 CUstream st, uint64_t flag, uint32_t flag_val)
{
	struct nvb_gpu_dev *d = &g->d[dev];
	unsigned long long chunk = blks ? NVB_SM_CHUNK : range_chunk(g, dev, len);
	CUdeviceptr ctr = 0, flagp = flag;
	void *params[9];

	if (flag) {
		unsigned int k = __atomic_fetch_add(&d->counter_next, 1, __ATOMIC_RELAXED);

		ctr = d->counters + (k % NVB_COUNTERS) * sizeof(uint32_t);
	}
	params[0] = &blks;
	params[1] = &n;
	params[2] = &dst;
	params[3] = &src;
	params[4] = &len;
	params[5] = &chunk;
	params[6] = &ctr;
	params[7] = &flagp;
	params[8] = &flag_val;
	if (!grid)
		grid = 1;
	if (g->sm_yield && d->nyield && may_yield(g, st)) {
		CUstream ys;
		int err = 0;

		/* held until the fork is queued: from then on ys reads as busy */
		pthread_mutex_lock(&d->yield_lock);
		ys = idle_yield_stream(g, d);
		if (ys)
			err = launch_yielding(g, d, ys, st, grid, params);
		pthread_mutex_unlock(&d->yield_lock);
		if (ys)
			return err;
		/* NVB_YIELD_STREAMS busy: the caller's stream, at its priority */
	}
	CU(g, cuLaunchKernel(d->fn_gather, grid, 1, 1, 512, 1, 1, 0, st, params, NULL),
	   "cuLaunchKernel(nvb_gather)");
	return 0;
}

static unsigned int sm_grid(struct nvb_gpu *g, int dev, uint64_t items)
{
	/* yielding: one CTA a piece, short-lived, so compute's CTAs get in between */
	uint64_t max = g->sm_yield ? NVB_SM_YIELD_MAX_GRID : (uint64_t)g->d[dev].sm_count * 2;

	if (!max)
		max = 64;
	if (max > g->sm_ctas)
		max = g->sm_ctas;	/* the budget (nvb_gpu_opts.sm_ctas) */
	return (unsigned int)(items < max ? (items ? items : 1) : max);
}

static int copy_one(struct nvb_gpu *g, int dev, uint64_t dst, uint64_t src, size_t len,
		    CUstream st, int sm)
{
	if (sm) {
		uint64_t c = range_chunk(g, dev, len);

		return launch_gather(g, dev, 0, 0, dst, src, len,
				     sm_grid(g, dev, (len + c - 1) / c), st, 0, 0);
	}
	CU(g, cuMemcpyDtoDAsync(dst, src, len, st), "cuMemcpyDtoDAsync");
	return 0;
}

int nvb_gpu_copy(struct nvb_gpu *g, uint64_t dst, uint64_t src, size_t len,
		 void *const *streams, unsigned int nstreams, uint32_t flags)
{
	CUevent fork_ev;
	unsigned int k, nce, pct;
	int dev, sm, hybrid, err = 0, smk[16];
	size_t part, off, sm_len, nk[16], ok[16];

	if (!streams || !nstreams || nstreams > 16)
		return seterr(-EINVAL, "nvb_gpu_copy: 1..16 streams required");
	if (flags & ~(NVB_GPU_COPY_CE | NVB_GPU_COPY_SM | NVB_GPU_COPY_SM_PCT(0xff)))
		return seterr(-EINVAL, "nvb_gpu_copy: unknown flags %#x", flags);
	if (!len)
		return 0;
	dev = cur_dev(g);
	if (dev < 0)
		return dev;
	sm = (flags & NVB_GPU_COPY_SM) != 0;
	if (sm) {
		err = dev_ready(g, dev);
		if (err)
			return err;
		if (!g->kernel_ok)
			return seterr(-EOPNOTSUPP, "SM copy kernel not available");
	}
	pct = (flags >> 8) & 0xff;
	if (!pct || pct > 90)
		pct = 20;
	hybrid = sm && (flags & NVB_GPU_COPY_CE) && nstreams >= 2 && len >= NVB_SPLIT_MIN;
	if (!hybrid && (nstreams == 1 || len < NVB_SPLIT_MIN))
		return copy_one(g, dev, dst, src, len, (CUstream)streams[0], sm && !(flags & NVB_GPU_COPY_CE));
	sm_len = hybrid ? (len / 100 * pct) & ~(size_t)0xffff : 0;
	nce = hybrid ? nstreams - 1 : nstreams;

	/* the pieces: stream k copies nk[k] bytes at ok[k] (0: none) */
	part = ((len - sm_len) / nce + 0xffff) & ~(size_t)0xffff;
	memset(nk, 0, sizeof(nk));
	for (k = 0, off = 0; k < nstreams && off < len; k++) {
		size_t n = len - sm_len - off < part ? len - sm_len - off : part;

		smk[k] = hybrid ? k == nstreams - 1 : sm;
		if (hybrid && k == nstreams - 1)
			n = len - off;
		nk[k] = n;
		ok[k] = off;
		off += n;
	}
	/*
	 * fork: the side streams wait for streams[0]'s prior work, all at
	 * once, before the copies and joins take more events from the pool:
	 * a pool event is recorded again after NVB_EVPOOL takes (by any
	 * thread), so its waits must not lag behind its record
	 */
	err = dev_ready(g, dev);
	if (err)
		return err;
	fork_ev = pool_event(&g->d[dev]);
	CU(g, cuEventRecord(fork_ev, (CUstream)streams[0]), "cuEventRecord");
	for (k = 1; k < nstreams; k++)
		if (nk[k])
			CU(g, cuStreamWaitEvent((CUstream)streams[k], fork_ev, 0),
			   "cuStreamWaitEvent (fork)");
	for (k = 0; k < nstreams; k++) {
		CUstream st = (CUstream)streams[k];

		if (!nk[k])
			continue;
		err = copy_one(g, dev, dst + ok[k], src + ok[k], nk[k], st, smk[k]);
		if (err)
			return err;
		if (k) {	/* join */
			CUevent join_ev = pool_event(&g->d[dev]);

			CU(g, cuEventRecord(join_ev, st), "cuEventRecord (join)");
			CU(g, cuStreamWaitEvent((CUstream)streams[0], join_ev, 0),
			   "cuStreamWaitEvent (join)");
		}
	}
	return 0;
}

/* Average block length below which the SM kernel beats the copy engines. */
#define NVB_SM_BLOCK_MAX	(128u << 10)

static int blocks_batch(struct nvb_gpu *g, const struct nvb_gpu_block *b, size_t n,
			CUstream st)
{
	CUdeviceptr *dsts, *srcs;
	size_t *sizes, attr_idx = 0, i;
	CUmemcpyAttributes attr;
	CUresult r;

	if (!g->cu.cuMemcpyBatchAsync)
		return seterr(-EOPNOTSUPP, "cuMemcpyBatchAsync needs a CUDA 12.8+ driver");
	dsts = malloc(n * sizeof(*dsts));
	srcs = malloc(n * sizeof(*srcs));
	sizes = malloc(n * sizeof(*sizes));
	if (!dsts || !srcs || !sizes) {
		free(dsts);
		free(srcs);
		free(sizes);
		return seterr(-ENOMEM, "out of memory");
	}
	for (i = 0; i < n; i++) {
		dsts[i] = b[i].dst;
		srcs[i] = b[i].src;
		sizes[i] = b[i].len;
	}
	memset(&attr, 0, sizeof(attr));
	attr.srcAccessOrder = CU_MEMCPY_SRC_ACCESS_ORDER_STREAM;
	r = g->cu.cuMemcpyBatchAsync(dsts, srcs, sizes, n, &attr, &attr_idx, 1, st);
	free(dsts);
	free(srcs);
	free(sizes);
	if (r != CUDA_SUCCESS)
		return cuerr(g, r, "cuMemcpyBatchAsync");
	return 0;
}

static uint64_t nchunks(uint64_t len)
{
	return (len + NVB_SM_CHUNK - 1) / NVB_SM_CHUNK;
}

static int blocks_sm(struct nvb_gpu *g, int dev, const struct nvb_gpu_block *b, size_t n,
		     CUstream st, uint64_t flag, uint32_t flag_val)
{
	struct nvb_gpu_dev *d = &g->d[dev];
	size_t i = 0;
	int err;

	while (i < n) {
		struct nvb_gpu_block *ring;
		unsigned int slot, cnt = 0;
		uint64_t need = nchunks(b[i].len);

		if (need > NVB_SLOT_BLOCKS) {	/* a huge block: range mode */
			err = launch_gather(g, dev, 0, 0, b[i].dst, b[i].src, b[i].len,
					    sm_grid(g, dev, nchunks(b[i].len)), st,
					    i + 1 == n ? flag : 0, flag_val);
			if (err)
				return err;
			i++;
			continue;
		}
		/*
		 * Not g->lock: the wait for the slot's last use may depend on a
		 * stream that only a revocation (which takes g->lock) releases.
		 */
		pthread_mutex_lock(&d->ring_lock);
		slot = d->ring_next++ % NVB_RING_SLOTS;
		if (d->ring_used[slot]) {
			CUresult r = g->cu.cuEventSynchronize(d->ring_ev[slot]);

			if (r != CUDA_SUCCESS) {
				pthread_mutex_unlock(&d->ring_lock);
				return cuerr(g, r, "descriptor ring: cuEventSynchronize");
			}
		}
		d->ring_used[slot] = 0;
		ring = d->ring + (size_t)slot * NVB_SLOT_BLOCKS;
		/* whole blocks only, cut into SM_CHUNK pieces so every CTA has work */
		while (i < n && (need = nchunks(b[i].len)) <= NVB_SLOT_BLOCKS - cnt) {
			uint64_t off;

			for (off = 0; off < b[i].len; off += NVB_SM_CHUNK) {
				uint64_t l = b[i].len - off;

				ring[cnt].dst = b[i].dst + off;
				ring[cnt].src = b[i].src + off;
				ring[cnt].len = l < NVB_SM_CHUNK ? l : NVB_SM_CHUNK;
				cnt++;
			}
			i++;
		}
		err = launch_gather(g, dev, (CUdeviceptr)(uintptr_t)ring, cnt, 0, 0, 0,
				    sm_grid(g, dev, cnt), st, i >= n ? flag : 0, flag_val);
		if (!err) {
			CUresult r = g->cu.cuEventRecord(d->ring_ev[slot], st);

			if (r != CUDA_SUCCESS)
				err = cuerr(g, r, "descriptor ring: cuEventRecord");
		}
		d->ring_used[slot] = !err;
		pthread_mutex_unlock(&d->ring_lock);
		if (err)
			return err;
	}
	return 0;
}

int nvb_gpu_copy_blocks(struct nvb_gpu *g, const struct nvb_gpu_block *blocks,
			size_t n, void *stream, uint32_t flags, uint64_t flag,
			uint32_t flag_val)
{
	CUstream st = (CUstream)stream;
	uint64_t total = 0;
	size_t i;
	int dev, err, mode;

	if (flags & ~(NVB_GPU_COPY_SM | NVB_GPU_COPY_BATCH | NVB_GPU_COPY_LOOP))
		return seterr(-EINVAL, "nvb_gpu_copy_blocks: unknown flags %#x", flags);
	if (__builtin_popcount(flags) > 1)
		return seterr(-EINVAL, "nvb_gpu_copy_blocks: pick one of SM, BATCH, LOOP");
	if (n && !blocks)
		return seterr(-EINVAL, "nvb_gpu_copy_blocks: blocks is NULL");
	dev = cur_dev(g);
	if (dev < 0)
		return dev;
	err = dev_ready(g, dev);
	if (err)
		return err;
	for (i = 0; i < n; i++)
		total += blocks[i].len;
	mode = (int)flags;
	/*
	 * The SM path hands the kernel its list in a slot of a host ring
	 * that is reused once the launch is done: a graph captured from it
	 * would read whatever a later call put there at every replay.  So a
	 * capturing stream gets copies with their addresses in the graph
	 * (LOOP) by default, and an explicit SM is refused.
	 */
	err = n && mode != NVB_GPU_COPY_LOOP ? capturing(g, st) : 0;
	if (err < 0)
		return err;
	if (err && mode == NVB_GPU_COPY_SM)
		return seterr(-EBUSY, "nvb_gpu_copy_blocks: NVB_GPU_COPY_SM on a stream being "
			      "captured into a CUDA graph (its block list lives in a reused ring): "
			      "use NVB_GPU_COPY_LOOP or the default");
	if (err && !mode)
		mode = NVB_GPU_COPY_LOOP;
	if (!mode) {
		/*
		 * The SM kernel within its budget (sm_ctas) for small blocks:
		 * measured on one H100 (bench/RESULTS.md) it cost a co-running
		 * GEMM nothing measurable and moved 6x what cuMemcpyBatchAsync
		 * did for 1024 x 64 KiB.
		 */
		if (g->kernel_ok && n && total / n <= NVB_SM_BLOCK_MAX)
			mode = NVB_GPU_COPY_SM;
		else if (g->cu.cuMemcpyBatchAsync && n > 1)
			mode = NVB_GPU_COPY_BATCH;
		else
			mode = NVB_GPU_COPY_LOOP;
	}
	if (mode == NVB_GPU_COPY_SM) {
		if (!g->kernel_ok)
			return seterr(-EOPNOTSUPP, "SM copy kernel not available");
		if (n)
			return blocks_sm(g, dev, blocks, n, st, flag, flag_val);
	} else if (mode == NVB_GPU_COPY_BATCH && n) {
		err = blocks_batch(g, blocks, n, st);
		if (err)
			return err;
	} else {
		for (i = 0; i < n; i++)
			if (blocks[i].len)
				CU(g, cuMemcpyDtoDAsync(blocks[i].dst, blocks[i].src,
							blocks[i].len, st),
				   "cuMemcpyDtoDAsync");
	}
	if (flag)
		return nvb_gpu_signal(g, stream, flag, flag_val);
	return 0;
}

int nvb_gpu_signal(struct nvb_gpu *g, void *stream, uint64_t flag, uint32_t val)
{
	if (!flag || (flag & 3))
		return seterr(-EINVAL, "flag address %#llx not 4-byte aligned",
			      (unsigned long long)flag);
	CU(g, cuStreamWriteValue32((CUstream)stream, flag, val,
				   CU_STREAM_WRITE_VALUE_DEFAULT), "cuStreamWriteValue32");
	return 0;
}

int nvb_gpu_wait(struct nvb_gpu *g, void *stream, uint64_t flag, uint32_t val)
{
	if (!flag || (flag & 3))
		return seterr(-EINVAL, "flag address %#llx not 4-byte aligned",
			      (unsigned long long)flag);
	CU(g, cuStreamWaitValue32((CUstream)stream, flag, val, CU_STREAM_WAIT_VALUE_GEQ),
	   "cuStreamWaitValue32");
	return 0;
}

static int wait_kernel(struct nvb_gpu *g, void *stream, uint64_t flag, uint32_t val,
		       volatile uint32_t *abort_word);

int nvb_gpu_wait_spin(struct nvb_gpu *g, void *stream, uint64_t flag, uint32_t val)
{
	return wait_kernel(g, stream, flag, val, NULL);
}


int nvb_gpu_wait_abortable(struct nvb_gpu *g, void *stream, uint64_t flag, uint32_t val,
			   struct nvb_gpu_map *peer)
{
	volatile uint32_t *aw;

	if (!peer)
		return seterr(-EINVAL, "nvb_gpu_wait_abortable: no mapping");
	aw = map_abort_word(g, peer);
	if (!aw)
		return seterr(-ENOMEM, "nvb_gpu_wait_abortable: no pinned memory");
	if (!g->kernel_ok)
		return seterr(-EOPNOTSUPP, "abortable waits need the SM kernel");
	return wait_kernel(g, stream, flag, val, aw);
}

static int wait_kernel(struct nvb_gpu *g, void *stream, uint64_t flag, uint32_t val,
		       volatile uint32_t *abort_word)
{
	int dev = cur_dev(g), err;
	CUdeviceptr f = flag, aw = (CUdeviceptr)(uintptr_t)abort_word;
	uint32_t av = NVB_GPU_FLAG_ABORTED;
	void *params[4] = { &f, &val, &aw, &av };

	if (dev < 0)
		return dev;
	if (!flag || (flag & 3))
		return seterr(-EINVAL, "flag address not 4-byte aligned");
	err = dev_ready(g, dev);
	if (err)
		return err;
	if (!g->kernel_ok && abort_word)	/* the module failed to load just now */
		return seterr(-EOPNOTSUPP, "abortable waits need the SM kernel");
	if (!g->kernel_ok)
		return nvb_gpu_wait(g, stream, flag, val);
	CU(g, cuLaunchKernel(g->d[dev].fn_spin, 1, 1, 1, 1, 1, 1, 0, (CUstream)stream,
			     params, NULL), "cuLaunchKernel(nvb_spin_wait)");
	return 0;
}

int nvb_gpu_put_signal(struct nvb_gpu *g, uint64_t dst, uint64_t src, size_t len,
		       void *stream, uint64_t flag, uint32_t flag_val)
{
	int dev = cur_dev(g), err;

	if (dev < 0)
		return dev;
	if (flag & 3)
		return seterr(-EINVAL, "flag address not 4-byte aligned");
	err = dev_ready(g, dev);
	if (err)
		return err;
	if (!g->kernel_ok) {	/* copy engine + stream write */
		CU(g, cuMemcpyDtoDAsync(dst, src, len, (CUstream)stream), "cuMemcpyDtoDAsync");
		return flag ? nvb_gpu_signal(g, stream, flag, flag_val) : 0;
	}
	{
		uint64_t c = range_chunk(g, dev, len);

		return launch_gather(g, dev, 0, 0, dst, src, len,
				     sm_grid(g, dev, (len + c - 1) / c ? (len + c - 1) / c : 1),
				     (CUstream)stream, flag, flag_val);
	}
}

/* ---- pipelined copy-engine transfers with completion flags ---- */

int nvb_gpu_copy_signal(struct nvb_gpu *g, uint64_t dst, uint64_t src, size_t len,
			void *const *streams, unsigned int nstreams, uint64_t flag, uint32_t val)
{
	struct nvb_gpu_dev *d;
	CUstream cs, fs;
	CUevent ev;
	int dev, err;

	if (!streams || !nstreams || nstreams > 16)
		return seterr(-EINVAL, "nvb_gpu_copy_signal: 1..16 streams required");
	if (flag & 3)
		return seterr(-EINVAL, "flag address %#llx not 4-byte aligned",
			      (unsigned long long)flag);
	dev = cur_dev(g);
	if (dev < 0)
		return dev;
	err = dev_ready(g, dev);
	if (err)
		return err;
	d = &g->d[dev];
	fs = (CUstream)streams[nstreams - 1];
	cs = nstreams == 1 ? fs :
	     (CUstream)streams[__atomic_fetch_add(&d->rot, 1, __ATOMIC_RELAXED) % (nstreams - 1)];
	if (len)
		CU(g, cuMemcpyDtoDAsync(dst, src, len, cs), "cuMemcpyDtoDAsync");
	if (!flag)
		return 0;
	if (cs != fs) {
		/*
		 * An event from the pool: cuStreamWaitEvent() binds the record
		 * current at the call, so re-recording a pooled event later is
		 * safe.
		 */
		ev = pool_event(d);
		CU(g, cuEventRecord(ev, cs), "cuEventRecord");
		CU(g, cuStreamWaitEvent(fs, ev, 0), "cuStreamWaitEvent");
	}
	return nvb_gpu_signal(g, fs, flag, val);
}

