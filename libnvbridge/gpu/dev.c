// SPDX-License-Identifier: MIT
/*
 * libnvbridge GPU layer: the handle, devices and their primary contexts, error reporting, and the
 * lazy per-device setup (kernel module, descriptor ring, event pools).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gpu_priv.h"
#include "../opts.h"

static __thread char nvb_gpu_err[320];

const char *nvb_gpu_last_error(void)
{
	return nvb_gpu_err;
}

int seterr(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(nvb_gpu_err, sizeof(nvb_gpu_err), fmt, ap);
	va_end(ap);
	return err;
}

/* A CUDA failure: -EIO (-ENOMEM for OUT_OF_MEMORY) and a message. */
int cuerr(struct nvb_gpu *g, CUresult r, const char *what)
{
	int err = -EIO;

	if (r == CUDA_ERROR_OUT_OF_MEMORY)
		err = -ENOMEM;
	else if (r == CUDA_ERROR_INVALID_VALUE)
		err = -EINVAL;
	else if (r == CUDA_ERROR_NOT_PERMITTED)
		err = -EPERM;
	else if (r == CUDA_ERROR_NOT_SUPPORTED)
		err = -EOPNOTSUPP;
	return seterr(err, "%s: %s", what, nvb_cuda_errname(&g->cu, r));
}


/*
 * The process's open contexts: a revocation read through a handle reaches
 * every one (nvb_gpu_revoked_all).  A context joins at the end of
 * nvb_gpu_open() and leaves first thing in nvb_gpu_close(): after it left
 * (live_lock taken and released) nobody else touches it.
 */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct nvb_gpu *live;
static pthread_once_t live_once = PTHREAD_ONCE_INIT;

static void live_prepare(void)
{
	pthread_mutex_lock(&live_lock);
}

static void live_parent(void)
{
	pthread_mutex_unlock(&live_lock);
}

static void live_child(void)
{
	/* the other threads are gone; their engines stay the parent's (seg_forked) */
	pthread_mutex_init(&live_lock, NULL);
}

/*
 * nvb_close() of any handle: each engine's thread wakes and drops the
 * cached mappings of closed handles' registries (parked_sweep), whether or
 * not one of its records was parked on it (a name the application watched
 * first leaves none).  Contexts with no engine drop them at their next
 * import (nvb_gpu_drop_closed); no CUDA call here, on the closer's thread.
 */
static void live_closed(void)
{
	struct nvb_gpu *g;
	struct seg_engine *e;

	pthread_mutex_lock(&live_lock);
	for (g = live; g; g = g->live_next) {
		e = __atomic_load_n(&g->seg, __ATOMIC_ACQUIRE);
		if (e)
			nvb_gpu__seg_wake(e);
	}
	pthread_mutex_unlock(&live_lock);
}

static void live_atfork(void)
{
	pthread_atfork(live_prepare, live_parent, live_child);
	nvb_set_close_hook(live_closed);
}

static void live_add(struct nvb_gpu *g)
{
	pthread_once(&live_once, live_atfork);
	pthread_mutex_lock(&live_lock);
	g->live_next = live;
	live = g;
	pthread_mutex_unlock(&live_lock);
}

static void live_del(struct nvb_gpu *g)
{
	struct nvb_gpu **pp;

	pthread_mutex_lock(&live_lock);
	for (pp = &live; *pp; pp = &(*pp)->live_next)
		if (*pp == g) {
			*pp = g->live_next;
			break;
		}
	pthread_mutex_unlock(&live_lock);
}

void nvb_gpu_revoked_all(uint64_t reg, uint64_t entry_id)
{
	struct nvb_gpu *g;
	struct seg_engine *e;

	pthread_mutex_lock(&live_lock);
	for (g = live; g; g = g->live_next) {
		nvb_gpu_revoke_in(g, reg, entry_id);
		e = __atomic_load_n(&g->seg, __ATOMIC_ACQUIRE);
		if (e)
			nvb_gpu__seg_revoked(e, reg, entry_id);
	}
	pthread_mutex_unlock(&live_lock);
}

void nvb_gpu_lost_all(struct nvb_gpu *self, uint64_t reg)
{
	struct nvb_gpu *g;
	struct seg_engine *e;

	pthread_mutex_lock(&live_lock);
	for (g = live; g; g = g->live_next) {
		nvb_gpu_names_forget(g, reg, 0);
		e = __atomic_load_n(&g->seg, __ATOMIC_ACQUIRE);
		if (e && g != self)
			nvb_gpu__seg_lost(e, reg);
	}
	pthread_mutex_unlock(&live_lock);
}

int nvb_gpu_open_v12(const struct nvb_gpu_opts *opts, struct nvb_gpu **out);
int nvb_gpu_open_v12(const struct nvb_gpu_opts *opts, struct nvb_gpu **out)
{
	struct nvb_gpu_opts o = { .sz = sizeof(o) };
	struct nvb_gpu *g;
	CUcontext old = NULL;
	char msg[256];
	int n = 0, err, i, j;
	CUresult r;

	if (!out)
		return seterr(-EINVAL, "nvb_gpu_open: out is NULL");
	*out = NULL;
	if (opts) {
		err = nvb_gpu_opts_in("nvb_gpu_open", &o, sizeof(o), opts,
				      offsetof(struct nvb_gpu_opts, flags) + sizeof(uint32_t));
		if (err)
			return err;
	}
	if (o.flags & ~NVB_GPU_OPEN_SM_YIELD)
		return seterr(-EINVAL, "nvb_gpu_open: unknown flags %#x", o.flags);
	g = calloc(1, sizeof(*g));
	if (!g)
		return seterr(-ENOMEM, "nvb_gpu_open: out of memory");
	err = nvb_cuda_load(&g->cu, o.libcuda, msg, sizeof(msg));
	if (err) {
		free(g);
		return seterr(err, "%s", msg);
	}
	r = g->cu.cuInit(0);
	if (r == CUDA_SUCCESS)
		r = g->cu.cuCtxGetCurrent(&old);	/* given back on every return */
	if (r == CUDA_SUCCESS)
		r = g->cu.cuDeviceGetCount(&n);
	if (r != CUDA_SUCCESS || n <= 0) {
		if (r == CUDA_SUCCESS)
			seterr(-ENODEV, "no CUDA device");
		else
			seterr(-ENODEV, "cuInit: %s", nvb_cuda_errname(&g->cu, r));
		nvb_cuda_unload(&g->cu);
		free(g);
		return -ENODEV;
	}
	if (n > NVB_GPU_MAX_DEV)
		n = NVB_GPU_MAX_DEV;
	pthread_mutex_init(&g->lock, NULL);
	for (i = 0; i < NVB_GPU_MAX_DEV; i++) {
		pthread_mutex_init(&g->d[i].ring_lock, NULL);
		pthread_mutex_init(&g->d[i].yield_lock, NULL);
	}
	g->ndev = n;
	for (i = 0; i < n; i++) {
		struct nvb_gpu_dev *d = &g->d[i];

		r = g->cu.cuDeviceGet(&d->dev, i);
		if (r == CUDA_SUCCESS)
			r = g->cu.cuDevicePrimaryCtxRetain(&d->ctx, d->dev);
		if (r == CUDA_SUCCESS)
			r = g->cu.cuDeviceGetUuid(&d->uuid, d->dev);
		if (r == CUDA_SUCCESS)
			r = g->cu.cuDeviceGetAttribute(&d->sm_count,
					CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d->dev);
		if (r == CUDA_SUCCESS)
			r = g->cu.cuDeviceGetAttribute(&d->cc_major,
					CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d->dev);
		if (r != CUDA_SUCCESS) {
			err = cuerr(g, r, "device setup");
			g->ndev = i + (d->ctx != NULL);
			nvb_gpu_close(g);
			g = NULL;
			goto out;
		}
	}
	for (i = 0; i < n; i++)
		for (j = 0; j < n; j++) {
			int can = (i == j);

			if (i != j && g->cu.cuDeviceCanAccessPeer(&can, g->d[i].dev,
								  g->d[j].dev))
				can = 0;
			g->peer[i][j] = !!can;
		}
	g->kernel_ok = &nvb_gpu_fatbin_end[0] > &nvb_gpu_fatbin[0];
	g->sm_yield = (o.flags & NVB_GPU_OPEN_SM_YIELD) != 0;
	g->sm_ctas = o.sm_ctas ? o.sm_ctas : g->sm_yield ? NVB_SM_YIELD_MAX_GRID :
		     NVB_GPU_SM_CTAS_DEFAULT;
	live_add(g);
	*out = g;
	err = 0;
out:
	/* cuDevicePrimaryCtxRetain made nothing current; be explicit anyway */
	if (g)
		g->cu.cuCtxSetCurrent(old);
	return err;
}

__asm__(".symver nvb_gpu_open_v12, nvb_gpu_open@@LIBNVBRIDGE_1.2");

/*
 * Binaries built against 1.0 / 1.1 call nvb_gpu_open@LIBNVBRIDGE_1.0:
 * (out, opts) with a struct that began with uint32_t size, flags, then
 * libcuda, sm_ctas.  Translated here so that they keep working.
 */
struct nvb_gpu_opts_v10 {
	uint32_t size;
	uint32_t flags;
	const char *libcuda;
	uint32_t sm_ctas;
	uint32_t __reserved;
};

int nvb_gpu_open_v10(struct nvb_gpu **out, const struct nvb_gpu_opts_v10 *opts);
__asm__(".symver nvb_gpu_open_v10, nvb_gpu_open@LIBNVBRIDGE_1.0");
int nvb_gpu_open_v10(struct nvb_gpu **out, const struct nvb_gpu_opts_v10 *opts)
{
	struct nvb_gpu_opts o = { .sz = sizeof(o) };

	if (opts) {
		if (opts->size < sizeof(uint32_t) * 2)
			return seterr(-EINVAL, "nvb_gpu_open: bad opts (size %u)", opts->size);
		if (opts->flags)	/* 1.0 defined none: its callers keep getting EINVAL */
			return seterr(-EINVAL, "nvb_gpu_open: unknown flags %#x", opts->flags);
		if (opts->size >= offsetof(struct nvb_gpu_opts_v10, sm_ctas))
			o.libcuda = opts->libcuda;
		if (opts->size >= offsetof(struct nvb_gpu_opts_v10, sm_ctas) + sizeof(uint32_t))
			o.sm_ctas = opts->sm_ctas;
	}
	return nvb_gpu_open_v12(&o, out);
}

void nvb_gpu_close(struct nvb_gpu *g)
{
	int i, k;

	CUcontext old = NULL;
	unsigned int pflags;
	int active;

	if (!g)
		return;
	live_del(g);	/* first: no other layer's revocation touches g from here on */
	g->cu.cuCtxGetCurrent(&old);
	nvb_gpu__seg_shutdown(g);	/* its thread and batches use what follows */
	while (g->proxies)
		if (nvb_gpu_proxy_stop(g->proxies, 5000000000LL))
			break;	/* a proxy that would not stop: leak it rather than hang */
	nvb_gpu_names_free(g);
	nvb_gpu_pubs_free(g);
	while (g->maps) {
		struct nvb_gpu_map *m = g->maps;

		g->maps = m->next;
		map_destroy(m);
	}
	for (i = 0; i < g->ndev; i++) {
		struct nvb_gpu_dev *d = &g->d[i];

		if (!d->ctx)
			continue;
		g->cu.cuCtxSetCurrent(d->ctx);
		/* whatever dev_ready() set up, also from a failed attempt */
		for (k = 0; k < NVB_RING_SLOTS; k++) {
			if (!d->ring_ev[k])
				continue;
			if (d->ring_used[k])
				g->cu.cuEventSynchronize(d->ring_ev[k]);
			g->cu.cuEventDestroy(d->ring_ev[k]);
		}
		if (d->ring)
			g->cu.cuMemFreeHost(d->ring);
		for (k = 0; k < NVB_EVPOOL; k++)
			if (d->evpool[k])
				g->cu.cuEventDestroy(d->evpool[k]);
		for (k = 0; k < (int)d->nyield; k++)
			g->cu.cuStreamDestroy(d->yield_st[k]);
		for (k = 0; k < NVB_MAX_PROXIES && !g->proxies; k++) {
			struct nvb_proxy_mem *pm = &d->pmem[k];

			if (pm->st)
				g->cu.cuStreamDestroy(pm->st);
			if (pm->ring)
				g->cu.cuMemFreeHost(pm->ring);
			if (pm->ph)
				g->cu.cuMemFreeHost(pm->ph);
			if (pm->dmem)
				g->cu.cuMemFree(pm->dmem);
		}
		if (d->counters)
			g->cu.cuMemFree(d->counters);
		if (d->mod)
			g->cu.cuModuleUnload(d->mod);
		g->cu.cuDevicePrimaryCtxRelease(d->dev);
		/* the caller's context was this primary one and we held the last reference */
		if (old == d->ctx && (g->cu.cuDevicePrimaryCtxGetState(d->dev, &pflags, &active) ||
				      !active))
			old = NULL;
	}
	g->cu.cuCtxSetCurrent(old);
	pthread_mutex_destroy(&g->lock);
	for (i = 0; i < NVB_GPU_MAX_DEV; i++) {
		pthread_mutex_destroy(&g->d[i].ring_lock);
		pthread_mutex_destroy(&g->d[i].yield_lock);
	}
	nvb_cuda_unload(&g->cu);
	free(g);
}

int nvb_gpu_device_count(struct nvb_gpu *g)
{
	return g->ndev;
}

int nvb_gpu_driver_version(struct nvb_gpu *g)
{
	return g->cu.driver_version;
}

int nvb_gpu_has_kernel(struct nvb_gpu *g)
{
	/*
	 * "Embedded and loaded": the image is loaded on first use, and a
	 * driver that cannot load it clears kernel_ok; so load it now, in
	 * device 0's context, the caller's given back.
	 */
	if (g->kernel_ok && !__atomic_load_n(&g->d[0].ready, __ATOMIC_ACQUIRE)) {
		CUcontext old = ctx_push(g, 0);

		dev_ready(g, 0);
		ctx_pop(g, old);
	}
	return g->kernel_ok;
}

int nvb_gpu_set_device(struct nvb_gpu *g, int dev)
{
	if (dev < 0 || dev >= g->ndev)
		return seterr(-EINVAL, "device %d out of range (0..%d)", dev, g->ndev - 1);
	CU(g, cuCtxSetCurrent(g->d[dev].ctx), "cuCtxSetCurrent");
	return 0;
}

int nvb_gpu_device_name(struct nvb_gpu *g, int dev, char *buf, size_t len)
{
	if (dev < 0 || dev >= g->ndev || len == 0)
		return seterr(-EINVAL, "bad device %d", dev);
	CU(g, cuDeviceGetName(buf, (int)len, g->d[dev].dev), "cuDeviceGetName");
	return 0;
}

int nvb_gpu_mem_info(struct nvb_gpu *g, size_t *free_b, size_t *total_b)
{
	CU(g, cuMemGetInfo(free_b, total_b), "cuMemGetInfo");
	return 0;
}

CUcontext ctx_push(struct nvb_gpu *g, int dev)
{
	CUcontext old = NULL;

	g->cu.cuCtxGetCurrent(&old);
	if (old != g->d[dev].ctx)
		g->cu.cuCtxSetCurrent(g->d[dev].ctx);
	return old;
}

void ctx_pop(struct nvb_gpu *g, CUcontext old)
{
	CUcontext cur = NULL;

	g->cu.cuCtxGetCurrent(&cur);
	if (cur != old)
		g->cu.cuCtxSetCurrent(old);
}

uint64_t ns_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Ordinal of the current context's device, or -errno. */
int cur_dev(struct nvb_gpu *g)
{
	CUdevice dev;
	int i;

	CU(g, cuCtxGetDevice(&dev), "cuCtxGetDevice (no current context?)");
	for (i = 0; i < g->ndev; i++)
		if (g->d[i].dev == dev)
			return i;
	return seterr(-ENODEV, "current device %d unknown", dev);
}

/*
 * Lazily loads the kernel and sets up the descriptor ring on device i.
 * Nothing here waits for other work in the context: g->lock is held, and
 * a stream blocked on a peer's flag may only be released by a revocation,
 * which needs g->lock.  What a failed attempt set up stays for the next
 * attempt and for nvb_gpu_close().
 */
int dev_ready(struct nvb_gpu *g, int i)
{
	struct nvb_gpu_dev *d = &g->d[i];
	CUresult r = CUDA_SUCCESS;
	CUstream st = NULL;
	int k, err = 0;

	if (__atomic_load_n(&d->ready, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&g->lock);
	if (d->ready)
		goto out;
	if (g->kernel_ok && !d->mod) {
		r = g->cu.cuModuleLoadData(&d->mod, nvb_gpu_fatbin);
		if (r == CUDA_SUCCESS)
			r = g->cu.cuModuleGetFunction(&d->fn_gather, d->mod, "nvb_gather");
		if (r == CUDA_SUCCESS)
			r = g->cu.cuModuleGetFunction(&d->fn_spin, d->mod, "nvb_spin_wait");
		if (r == CUDA_SUCCESS) {
			int regs = 0;

			if (g->cu.cuModuleGetFunction(&d->fn_proxy, d->mod, "nvb_proxy") ||
			    g->cu.cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, d->fn_proxy)) {
				d->fn_proxy = NULL;
			} else {
				/* 512 threads a CTA, registers allocated per warp in 256s */
				int per_warp = (regs * 32 + 255) / 256 * 256;
				int per_sm = per_warp ? 65536 / (per_warp * 16) : 1;

				if (per_sm > 4)
					per_sm = 4;
				if (per_sm * d->sm_count > NVB_PROXY_MAXCTA)
					per_sm = NVB_PROXY_MAXCTA / (d->sm_count ? d->sm_count : 1);
				if (per_sm < 1)
					per_sm = 1;
				d->proxy_max_ctas = per_sm * (d->sm_count ? d->sm_count : 1);
			}
		}
		if (r != CUDA_SUCCESS) {
			/* e.g. an older driver that cannot JIT our PTX */
			g->kernel_ok = 0;
			if (d->mod)
				g->cu.cuModuleUnload(d->mod);
			d->mod = NULL;
			r = CUDA_SUCCESS;
		}
	}
	if (!d->ring)
		r = g->cu.cuMemAllocHost((void **)&d->ring,
				NVB_RING_SLOTS * NVB_SLOT_BLOCKS * sizeof(struct nvb_gpu_block));
	if (r == CUDA_SUCCESS && !d->counters) {
		/* zeroed on a private stream: waits for nothing else */
		r = g->cu.cuMemAlloc(&d->counters, NVB_COUNTERS * sizeof(uint32_t));
		if (r == CUDA_SUCCESS)
			r = g->cu.cuStreamCreate(&st, CU_STREAM_NON_BLOCKING);
		if (r == CUDA_SUCCESS)
			r = g->cu.cuMemsetD32Async(d->counters, 0, NVB_COUNTERS, st);
		if (r == CUDA_SUCCESS)
			r = g->cu.cuStreamSynchronize(st);
		if (st)
			g->cu.cuStreamDestroy(st);
		if (r != CUDA_SUCCESS && d->counters) {
			g->cu.cuMemFree(d->counters);
			d->counters = 0;
		}
	}
	for (k = 0; r == CUDA_SUCCESS && k < NVB_RING_SLOTS; k++)
		if (!d->ring_ev[k])
			r = g->cu.cuEventCreate(&d->ring_ev[k], CU_EVENT_DISABLE_TIMING);
	for (k = 0; r == CUDA_SUCCESS && k < NVB_EVPOOL; k++)
		if (!d->evpool[k])
			r = g->cu.cuEventCreate(&d->evpool[k], CU_EVENT_DISABLE_TIMING);
	if (r == CUDA_SUCCESS && g->sm_yield && !d->nyield) {
		int least = 0, greatest = 0;	/* numerically, the lowest priority is the greatest */

		r = g->cu.cuCtxGetStreamPriorityRange(&least, &greatest);
		d->yield_prio = least;
		if (r == CUDA_SUCCESS)	/* the first; launch_gather() makes more as needed */
			r = g->cu.cuStreamCreateWithPriority(&d->yield_st[0], CU_STREAM_NON_BLOCKING,
							     least);
		if (r == CUDA_SUCCESS)
			d->nyield = 1;
	}
	if (r != CUDA_SUCCESS) {
		err = cuerr(g, r, "GPU layer setup");
		goto out;
	}
	__atomic_store_n(&d->ready, 1, __ATOMIC_RELEASE);
out:
	pthread_mutex_unlock(&g->lock);
	return err;
}

/* cuStreamIsCapturing came with graphs (CUDA 10): without it, no capture. */
CUresult stream_capture(struct nvb_gpu *g, CUstream st, int *cs)
{
	*cs = CU_STREAM_CAPTURE_STATUS_NONE;
	return g->cu.cuStreamIsCapturing ? g->cu.cuStreamIsCapturing(st, cs) : CUDA_SUCCESS;
}

/* An event from the device's pool (dev_ready() first); see nvb_gpu_copy_signal(). */
CUevent pool_event(struct nvb_gpu_dev *d)
{
	return d->evpool[__atomic_fetch_add(&d->ev_next, 1, __ATOMIC_RELAXED) % NVB_EVPOOL];
}

/* ---- allocation and export ---- */

void nvb_gpu_names_free(struct nvb_gpu *g)
{
	struct nvb_gpu_name **head = &g->names, *n;

	while ((n = *head)) {
		*head = n->next;
		free(n);
	}
}

void nvb_gpu_names_drop(struct nvb_gpu *g, bool (*live)(uint64_t serial))
{
	struct nvb_gpu_name **pp, *n;

	pthread_mutex_lock(&g->lock);
	for (pp = &g->names; (n = *pp);) {
		if (!live(n->reg)) {	/* its watch went with the handle */
			*pp = n->next;
			free(n);
		} else {
			pp = &n->next;
		}
	}
	pthread_mutex_unlock(&g->lock);
}

void nvb_gpu_names_forget(struct nvb_gpu *g, uint64_t reg, uint64_t id)
{
	struct nvb_gpu_name **pp, *n;

	pthread_mutex_lock(&g->lock);
	for (pp = &g->names; (n = *pp);) {
		if ((n->reg == reg || reg == NVB_GPU_REG_ANY) && (n->id == id || !id)) {
			n->id = 0;
			if (n->wid) {	/* keep the node: it says which watch to give back */
				pp = &n->next;
				continue;
			}
			*pp = n->next;
			free(n);
		} else {
			pp = &n->next;
		}
	}
	pthread_mutex_unlock(&g->lock);
}

struct nvb_gpu_name **nvb_gpu_names_head(struct nvb_gpu *g)
{
	return &g->names;
}

struct nvb_gpu_pub **nvb_gpu_pubs_head(struct nvb_gpu *g)
{
	return &g->pubs;
}

pthread_mutex_t *nvb_gpu_lock(struct nvb_gpu *g)
{
	return &g->lock;
}

int nvb_gpu_seterr(int err, const char *msg)
{
	return seterr(err, "%s", msg);
}

int nvb_gpu_opts_in(const char *fn, void *dst, size_t dst_sz, const void *opts, size_t min_sz)
{
	size_t sz;
	int err;

	memcpy(&sz, opts, sizeof(sz));
	err = nvb_opts_in(dst, dst_sz, opts, sz, min_sz);
	if (err)
		return seterr(err, "%s: opts->sz %zu %s", fn, sz,
			      err == -E2BIG ? "with unknown non-zero options" : "unsupported");
	return 0;
}
