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

int nvb_gpu_proxy_start(struct nvb_gpu *g, int dev, unsigned int nctas, uint32_t flags,
			struct nvb_gpu_proxy **out)
{
	struct nvb_gpu_proxy *p;
	struct nvb_proxy_mem *pm = NULL;
	struct nvb_gpu_dev *d;
	CUdeviceptr hring, ph, pd, dring, ctr, pcta, inbox;
	unsigned int H = NVB_PROXY_H, R = NVB_PROXY_R;
	void *params[9];
	int k, err;

	*out = NULL;
	if (flags)
		return seterr(-EINVAL, "nvb_gpu_proxy_start: unknown flags %#x", flags);
	if (dev < 0 || dev >= g->ndev)
		return seterr(-EINVAL, "nvb_gpu_proxy_start: device %d out of range", dev);
	CU(g, cuCtxSetCurrent(g->d[dev].ctx), "cuCtxSetCurrent");
	err = dev_ready(g, dev);
	if (err)
		return err;
	d = &g->d[dev];
	if (!g->kernel_ok || !d->fn_proxy)
		return seterr(-EOPNOTSUPP, "the proxy kernel is not available");
	/* nctas copy CTAs + one reporter CTA, all resident at once */
	if (!nctas)
		nctas = (unsigned int)(d->sm_count > 1 ? d->sm_count - 1 : 1);
	if ((int)nctas + 1 > d->proxy_max_ctas)
		return seterr(-EINVAL, "nvb_gpu_proxy_start: %u CTAs, at most %d fit at once",
			      nctas, d->proxy_max_ctas - 1);
	p = calloc(1, sizeof(*p));
	if (!p)
		return seterr(-ENOMEM, "nvb_gpu_proxy_start: out of memory");
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
		return seterr(-EBUSY, "nvb_gpu_proxy_start: %d proxies already run on device %d",
			      NVB_MAX_PROXIES, dev);
	}
	err = proxy_mem_init(g, pm, d->proxy_max_ctas);
	if (err)
		goto fail;
	p->g = g;
	p->dev = dev;
	p->nctas = nctas;
	p->mem = pm;
	pthread_mutex_init(&p->lock, NULL);
	hring = (CUdeviceptr)(uintptr_t)pm->ring;
	ph = (CUdeviceptr)(uintptr_t)pm->ph;
	pd = pm->dmem;
	dring = pm->dmem + NVB_PROXY_OFF_RING;
	ctr = pm->dmem + NVB_PROXY_OFF_CTR;
	pcta = pm->dmem + NVB_PROXY_OFF_CTA;
	inbox = pm->dmem + NVB_PROXY_OFF_INBOX(d->proxy_max_ctas);
	params[0] = &hring;
	params[1] = &H;
	params[2] = &ph;
	params[3] = &pd;
	params[4] = &dring;
	params[5] = &ctr;
	params[6] = &R;
	params[7] = &pcta;
	params[8] = &inbox;
	{
		CUresult r = g->cu.cuLaunchKernel(d->fn_proxy, nctas + 1, 1, 1, 512, 1, 1, 0, pm->st,
						  params, NULL);

		if (r != CUDA_SUCCESS) {
			err = cuerr(g, r, "cuLaunchKernel(nvb_proxy)");
			pthread_mutex_destroy(&p->lock);
			goto fail;
		}
	}
	pthread_mutex_lock(&g->lock);
	p->next = g->proxies;
	g->proxies = p;
	pthread_mutex_unlock(&g->lock);
	*out = p;
	return 0;
fail:
	pthread_mutex_lock(&g->lock);
	pm->in_use = 0;
	pthread_mutex_unlock(&g->lock);
	free(p);
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
		} else if (now - t0 > 100000000ull || proxy_running(p) <= 0) {
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
	pthread_mutex_unlock(&p->lock);
	if (ticket)
		*ticket = t + 1;
	return 0;
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
	int run;

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
		if (!run && nvb_gpu_proxy_done(p) < ticket)
			return seterr(-ECANCELED, "the proxy stopped before ticket %llu completed",
				      (unsigned long long)ticket);
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

