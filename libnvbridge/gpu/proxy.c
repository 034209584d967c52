// SPDX-License-Identifier: MIT
/*
 * libnvbridge GPU layer: the put proxy (see nvbridge_gpu.h; ring layout in proxy_layout.h).
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

static int proxy_mem_init(struct nvb_gpu *g, struct nvb_proxy_mem *pm, int maxcta)
{
	CUresult r = CUDA_SUCCESS;

	if (!pm->ring)
		r = g->cu.cuMemAllocHost((void **)&pm->ring,
					 NVB_PROXY_H * sizeof(struct nvb_proxy_desc));
	if (r == CUDA_SUCCESS && !pm->ph)
		r = g->cu.cuMemAllocHost((void **)&pm->ph, sizeof(struct nvb_proxy_host));
	if (r == CUDA_SUCCESS && !pm->dmem)
		r = g->cu.cuMemAlloc(&pm->dmem, NVB_PROXY_DEV_BYTES(maxcta));
	if (r == CUDA_SUCCESS && !pm->st)
		r = g->cu.cuStreamCreate(&pm->st, CU_STREAM_NON_BLOCKING);
	if (r != CUDA_SUCCESS)
		return cuerr(g, r, "proxy setup");
	/* fresh state: every ticket starts at 0 again */
	memset(pm->ring, 0, NVB_PROXY_H * sizeof(struct nvb_proxy_desc));
	memset((void *)pm->ph, 0, sizeof(*pm->ph));
	CU(g, cuMemsetD8Async(pm->dmem, 0, NVB_PROXY_DEV_BYTES(maxcta), pm->st),
	   "proxy setup: memset");
	CU(g, cuStreamSynchronize(pm->st), "proxy setup: memset");
	return 0;
}

/*
 * Launches the kernel for the ring as it stands (p->lock held).  state = 1
 * first: a post that reads it now knows a launch will see its op, since
 * launches on pm->st run one after the other and each resumes from the
 * counts the last one left in memory.  A launch queued behind one that
 * then stays (it saw the op after all) finds nothing and leaves after its
 * idle time: harmless.
 */
static int proxy_launch(struct nvb_gpu_proxy *p)
{
	struct nvb_gpu *g = p->g;
	struct nvb_gpu_dev *d = &g->d[p->dev];
	struct nvb_proxy_mem *pm = p->mem;
	CUdeviceptr hring = (CUdeviceptr)(uintptr_t)pm->ring, ph = (CUdeviceptr)(uintptr_t)pm->ph;
	CUdeviceptr pd = pm->dmem, dring = pm->dmem + NVB_PROXY_OFF_RING;
	CUdeviceptr ctr = pm->dmem + NVB_PROXY_OFF_CTR, pcta = pm->dmem + NVB_PROXY_OFF_CTA;
	CUdeviceptr inbox = pm->dmem + NVB_PROXY_OFF_INBOX(d->proxy_max_ctas);
	unsigned int H = NVB_PROXY_H, R = NVB_PROXY_R, epoch;
	unsigned long long idle = p->idle_ns;
	void *params[11] = { &hring, &H, &ph, &pd, &dring, &ctr, &R, &pcta, &inbox, &epoch, &idle };
	CUcontext old;
	CUresult r;

	epoch = ++p->epoch ? p->epoch : ++p->epoch;	/* 0 is "never stopped" */
	__atomic_store_n(&pm->ph->state, 1u, __ATOMIC_SEQ_CST);
	old = ctx_push(g, p->dev);
	r = g->cu.cuLaunchKernel(d->fn_proxy, p->nctas + 1, 1, 1, 512, 1, 1, 0, pm->st, params, NULL);
	ctx_pop(g, old);
	if (r != CUDA_SUCCESS) {
		__atomic_store_n(&pm->ph->state, 0u, __ATOMIC_SEQ_CST);
		return cuerr(g, r, "cuLaunchKernel(nvb_proxy)");
	}
	return 0;
}

/* Launches unless a launch is live or queued (p->lock held). */
static int proxy_kick_locked(struct nvb_gpu_proxy *p)
{
	/* pairs with the kernel's state = 0; fence; read the next slot */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&p->mem->ph->state, __ATOMIC_SEQ_CST) ||
	    __atomic_load_n(&p->mem->ph->stop, __ATOMIC_ACQUIRE))
		return 0;
	return proxy_launch(p);
}

int nvb_gpu_proxy_kick(struct nvb_gpu_proxy *p)
{
	int err = 0;

	if (!p)
		return seterr(-EINVAL, "nvb_gpu_proxy_kick: no proxy");
	pthread_mutex_lock(&p->lock);
	if (nvb_gpu_proxy_done(p) < p->tail)
		err = proxy_kick_locked(p);
	pthread_mutex_unlock(&p->lock);
	return err;
}

uint64_t nvb_gpu_proxy_launches(const struct nvb_gpu_proxy *p)
{
	return __atomic_load_n(&p->mem->ph->launches, __ATOMIC_ACQUIRE);
}

int nvb_gpu_proxy_start(struct nvb_gpu *g, int dev, unsigned int nctas, uint32_t flags,
			struct nvb_gpu_proxy **out)
{
	struct nvb_gpu_proxy *p;
	struct nvb_proxy_mem *pm = NULL;
	struct nvb_gpu_dev *d;
	unsigned int idle_us = flags & 0xffffU;
	CUcontext old;
	int k, err;

	*out = NULL;
	if (flags & ~(0xffffU | NVB_GPU_PROXY_PERSISTENT))
		return seterr(-EINVAL, "nvb_gpu_proxy_start: unknown flags %#x", flags);
	if (dev < 0 || dev >= g->ndev)
		return seterr(-EINVAL, "nvb_gpu_proxy_start: device %d out of range", dev);
	old = ctx_push(g, dev);
	err = dev_ready(g, dev);
	if (err)
		goto out_ctx;
	d = &g->d[dev];
	if (!g->kernel_ok || !d->fn_proxy) {
		err = seterr(-EOPNOTSUPP, "the proxy kernel is not available");
		goto out_ctx;
	}
	if (!nctas)
		nctas = NVB_GPU_PROXY_CTAS_DEFAULT;
	/* nctas CTAs + one reporter, all resident at once */
	if ((int)nctas + 1 > d->proxy_max_ctas) {
		err = seterr(-EINVAL, "nvb_gpu_proxy_start: %u CTAs, at most %d fit at once",
			     nctas, d->proxy_max_ctas - 1);
		goto out_ctx;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		err = seterr(-ENOMEM, "nvb_gpu_proxy_start: out of memory");
		goto out_ctx;
	}
	pthread_mutex_lock(&g->lock);
	for (k = 0; k < NVB_MAX_PROXIES; k++)
		if (!d->pmem[k].in_use) {
			pm = &d->pmem[k];
			pm->in_use = 1;
			break;
		}
	pthread_mutex_unlock(&g->lock);
	if (!pm) {
		free(p);
		err = seterr(-EBUSY, "nvb_gpu_proxy_start: %d proxies already run on device %d",
			     NVB_MAX_PROXIES, dev);
		goto out_ctx;
	}
	err = proxy_mem_init(g, pm, d->proxy_max_ctas);
	if (err) {
		pthread_mutex_lock(&g->lock);
		pm->in_use = 0;
		pthread_mutex_unlock(&g->lock);
		free(p);
		goto out_ctx;
	}
	p->g = g;
	p->dev = dev;
	p->nctas = nctas;
	p->mem = pm;
	p->idle_ns = flags & NVB_GPU_PROXY_PERSISTENT ? 0 :
		     (uint64_t)(idle_us ? idle_us : NVB_GPU_PROXY_IDLE_US_DEFAULT) * 1000;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_lock(&g->lock);
	p->next = g->proxies;
	g->proxies = p;
	pthread_mutex_unlock(&g->lock);
	*out = p;
out_ctx:
	ctx_pop(g, old);
	return err;
}

uint64_t nvb_gpu_proxy_done(const struct nvb_gpu_proxy *p)
{
	return __atomic_load_n(&p->mem->ph->done, __ATOMIC_ACQUIRE);
}

uint64_t nvb_gpu_proxy_aborted(const struct nvb_gpu_proxy *p)
{
	return __atomic_load_n(&p->mem->ph->aborted, __ATOMIC_ACQUIRE);
}

/* 1 while the kernel runs, 0 when it has exited, -errno on a CUDA error. */
static int proxy_running(struct nvb_gpu_proxy *p)
{
	CUresult r = p->g->cu.cuStreamQuery(p->mem->st);

	if (r == CUDA_ERROR_NOT_READY)
		return 1;
	if (r == CUDA_SUCCESS)
		return 0;
	return cuerr(p->g, r, "proxy kernel");
}

int nvb_gpu_proxy_post(struct nvb_gpu_proxy *p, const struct nvb_gpu_put *op, uint64_t *ticket)
{
	struct nvb_proxy_desc *slot;
	volatile uint32_t *aw = NULL;
	uint64_t t, done, seen;
	uint64_t t0 = 0;
	int err;

	if (!op || (op->flag & 3) || (op->wait_flag & 3) || (op->len && (!op->dst || !op->src)))
		return seterr(-EINVAL, "nvb_gpu_proxy_post: bad op (unaligned flag or null address)");
	if (op->wait_peer && op->wait_flag) {
		aw = map_abort_word(p->g, op->wait_peer);
		if (!aw)
			return seterr(-ENOMEM, "nvb_gpu_proxy_post: no pinned memory");
	}
	pthread_mutex_lock(&p->lock);
	t = p->tail;
	/* ring full: wait while the proxy makes progress, give up if it stalls */
	seen = nvb_gpu_proxy_done(p);
	while (t - (done = nvb_gpu_proxy_done(p)) >= NVB_PROXY_H) {
		uint64_t now = ns_now();

		if (!t0 || done != seen) {
			t0 = now;
			seen = done;
		} else if (now - t0 > 100000000ull || proxy_kick_locked(p) < 0 ||
			   proxy_running(p) < 0) {
			pthread_mutex_unlock(&p->lock);
			return seterr(-EAGAIN, "nvb_gpu_proxy_post: ring full and the proxy is not progressing");
		}
	}
	slot = &p->mem->ring[t % NVB_PROXY_H];
	slot->dst = op->dst;
	slot->src = op->src;
	slot->len = op->len;
	slot->flag = op->flag;
	slot->wait_flag = op->wait_flag;
	slot->abort_word = (uint64_t)(uintptr_t)aw;
	slot->flag_val = op->flag_val;
	slot->wait_val = op->wait_val;
	__atomic_store_n(&slot->seq, (uint32_t)(t + 1), __ATOMIC_RELEASE);
	p->tail = t + 1;
	err = proxy_kick_locked(p);
	pthread_mutex_unlock(&p->lock);
	if (ticket)
		*ticket = t + 1;
	return err;
}

int nvb_gpu_proxy_put(struct nvb_gpu_proxy *p, uint64_t dst, uint64_t src, size_t len,
		      uint64_t flag, uint32_t flag_val)
{
	struct nvb_gpu_put op;

	memset(&op, 0, sizeof(op));
	op.dst = dst;
	op.src = src;
	op.len = len;
	op.flag = flag;
	op.flag_val = flag_val;
	return nvb_gpu_proxy_post(p, &op, NULL);
}

int nvb_gpu_proxy_sync(struct nvb_gpu_proxy *p, uint64_t ticket, int64_t timeout_ns)
{
	uint64_t t0 = ns_now();
	unsigned int spins = 0;
	int run, err;

	if (!ticket) {
		pthread_mutex_lock(&p->lock);
		ticket = p->tail;
		pthread_mutex_unlock(&p->lock);
	}
	while (nvb_gpu_proxy_done(p) < ticket) {
		if (++spins % 256)
			continue;
		run = proxy_running(p);
		if (run < 0)
			return run;
		if (__atomic_load_n(&p->mem->ph->stop, __ATOMIC_ACQUIRE))
			return seterr(-ECANCELED, "the proxy stopped before ticket %llu completed",
				      (unsigned long long)ticket);
		if (!run) {	/* exited: a parked wait, or done not yet read */
			err = nvb_gpu_proxy_kick(p);
			if (err)
				return err;
		}
		if (timeout_ns >= 0 && ns_now() - t0 > (uint64_t)timeout_ns)
			return seterr(-ETIMEDOUT, "ticket %llu not complete after %lld ns (done %llu)",
				      (unsigned long long)ticket, (long long)timeout_ns,
				      (unsigned long long)nvb_gpu_proxy_done(p));
		if (spins % 65536 == 0)
			sched_yield();
	}
	return 0;
}

int nvb_gpu_proxy_stop(struct nvb_gpu_proxy *p, int64_t timeout_ns)
{
	struct nvb_gpu *g;
	struct nvb_gpu_proxy **pp;
	uint64_t t0 = ns_now();
	int run;

	if (!p)
		return 0;
	g = p->g;
	__atomic_store_n(&p->mem->ph->stop, 1u, __ATOMIC_RELEASE);
	while ((run = proxy_running(p)) == 1) {
		if (timeout_ns >= 0 && ns_now() - t0 > (uint64_t)timeout_ns)
			return seterr(-ETIMEDOUT, "the proxy did not stop within %lld ns",
				      (long long)timeout_ns);
		usleep(20);
	}
	pthread_mutex_lock(&g->lock);
	for (pp = &g->proxies; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	/* a kernel that died with an error leaves the memory suspect: keep it */
	p->mem->in_use = run < 0;
	pthread_mutex_unlock(&g->lock);
	pthread_mutex_destroy(&p->lock);
	free(p);
	return run < 0 ? run : 0;
}

/* ---- helpers for gpu_nvb.c ---- */

