// SPDX-License-Identifier: MIT
/*
 * libnvbridge_torch.so: PyTorch's CUDAPluggableAllocator entry points over
 * libnvbridge's exportable VMM allocations (nvb_gpu_alloc: FABRIC|POSIX_FD
 * trial, POSIX_FD fallback, granularity, access for every peer), plus a
 * cache so that repeated sizes cost a lock and a list pop, not a
 * cuMemCreate + reserve + map + set-access.
 *
 * Why the cache looks like this:
 *  - keyed by (device, stream, size class): PyTorch passes the stream the
 *    block was allocated on, and work queued on that stream is ordered
 *    before any later use on it, so reuse on the same stream needs no
 *    synchronisation (PyTorch's own caching allocator rule).  Blocks are
 *    never handed to another stream.
 *  - size classes: whole granules up to 16 granules, then 8 classes per
 *    power of two (at most 12.5 % over), so that nearby sizes share blocks.
 *  - bounded: over the limit the oldest cached blocks are released.  A
 *    release unmaps memory that work on its stream may still use, so the
 *    device's primary context is synchronised first (as PyTorch's
 *    empty_cache does); that happens off the fast path only.
 *  - out of memory: the device's cache is released and the allocation
 *    retried once.
 *  - never a block that was shared: an importer keeps its mapping as long
 *    as it likes (revocation takes nothing back), so a block whose memory
 *    libnvbridge exported (nvb_gpu_buf_exported: a registration of a
 *    tensor in it, through any struct nvb_gpu of the process) is released
 *    on free, never cached; the importer's mapping then keeps only that
 *    old physical allocation alive, and the next tensor gets a new one.
 *    Checked again on a cache hit, for a registration of a freed pointer.
 * One mutex guards the tables; CUDA calls run outside it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_api.h"
#include "nvbridge_gpu.h"
#include "nvbridge_torch.h"

#define API __attribute__((visibility("default")))
#define MAX_DEV 32
#define CACHE_LIMIT_DEFAULT (4ULL << 30)

struct blk {
	struct blk *next;		/* live-table chain, or cache chain */
	struct blk *older, *newer;	/* cache LRU (cached blocks only) */
	struct nvb_gpu_buf *b;
	uint64_t ptr;
	size_t cls;			/* size class: what the cache is keyed by */
	size_t size;			/* bytes of the allocation (>= cls) */
	void *stream;
	int dev;
};

struct table {
	struct blk **b;
	size_t nb;			/* buckets, a power of two */
	size_t n;
};

static struct {
	pthread_mutex_t lock;		/* everything below */
	struct table live, cache;
	struct blk *oldest, *newest;	/* cache LRU */
	struct nvb_torch_stats st;
	uint64_t limit;
} A = { .lock = PTHREAD_MUTEX_INITIALIZER };

static struct {
	pthread_mutex_t lock;
	int ready;			/* read with acquire: set once, last */
	struct nvb_gpu *g;
	struct nvb_cuda cu;
	int ndev;
	CUcontext ctx[MAX_DEV];		/* primary contexts, retained */
	size_t gran[MAX_DEV];
	int no_fabric[MAX_DEV];		/* the FABRIC trial failed once: skip it */
} I = { .lock = PTHREAD_MUTEX_INITIALIZER };

static __thread char last_err[256];

static void seterr(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_err, sizeof(last_err), fmt, ap);
	va_end(ap);
}

API const char *nvb_torch_last_error(void)
{
	return last_err;
}

/* $NVB_TORCH_CACHE_LIMIT: bytes, with an optional K/M/G suffix. */
static uint64_t env_limit(void)
{
	const char *s = getenv("NVB_TORCH_CACHE_LIMIT");
	unsigned long long v;
	char *end;

	if (!s || !*s)
		return CACHE_LIMIT_DEFAULT;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return CACHE_LIMIT_DEFAULT;
	switch (*end) {
	case 'G': case 'g': v = v > (ULLONG_MAX >> 30) ? ULLONG_MAX : v << 30; end++; break;
	case 'M': case 'm': v = v > (ULLONG_MAX >> 20) ? ULLONG_MAX : v << 20; end++; break;
	case 'K': case 'k': v = v > (ULLONG_MAX >> 10) ? ULLONG_MAX : v << 10; end++; break;
	}
	return *end ? CACHE_LIMIT_DEFAULT : v;
}

/* Opens the GPU layer once; a failure is retried by the next call. */
static int init(void)
{
	struct nvb_gpu_opts o = { .sz = sizeof(o) };
	CUmemAllocationProp prop;
	char msg[160];
	int i, n, err;

	if (__atomic_load_n(&I.ready, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&I.lock);
	if (I.ready)
		goto out;
	/* $NVB_TORCH_LIBCUDA: a driver library elsewhere than the linker's path */
	o.libcuda = getenv("NVB_TORCH_LIBCUDA");
	if (o.libcuda && !*o.libcuda)
		o.libcuda = NULL;
	err = nvb_gpu_open(&o, &I.g);
	if (err) {
		seterr("nvb_gpu_open: %s", nvb_gpu_last_error());
		goto fail;
	}
	err = nvb_cuda_load(&I.cu, o.libcuda, msg, sizeof(msg));
	if (err) {
		seterr("%s", msg);
		goto fail_close;
	}
	n = nvb_gpu_device_count(I.g);
	if (n > MAX_DEV)
		n = MAX_DEV;
	for (i = 0; i < n; i++) {
		CUdevice d;
		CUresult r = I.cu.cuDeviceGet(&d, i);

		memset(&prop, 0, sizeof(prop));
		prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
		prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
		prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
		prop.location.id = d;
		if (r == CUDA_SUCCESS)
			r = I.cu.cuDevicePrimaryCtxRetain(&I.ctx[i], d);
		if (r == CUDA_SUCCESS)
			r = I.cu.cuMemGetAllocationGranularity(&I.gran[i], &prop,
						CU_MEM_ALLOC_GRANULARITY_RECOMMENDED);
		if (r != CUDA_SUCCESS || !I.gran[i] || (I.gran[i] & (I.gran[i] - 1))) {
			seterr("device %d setup: %s (granularity %zu)", i,
			       nvb_cuda_errname(&I.cu, r), I.gran[i]);
			if (I.ctx[i])	/* retained before the granularity query failed */
				i++;
			while (i-- > 0) {
				CUdevice dd;

				if (I.cu.cuDeviceGet(&dd, i) == CUDA_SUCCESS)
					I.cu.cuDevicePrimaryCtxRelease(dd);
				I.ctx[i] = NULL;
			}
			nvb_cuda_unload(&I.cu);
			goto fail_close;
		}
		I.no_fabric[i] = getenv("NVB_TORCH_NO_FABRIC") != NULL;
	}
	I.ndev = n;
	pthread_mutex_lock(&A.lock);
	A.limit = env_limit();
	pthread_mutex_unlock(&A.lock);
	__atomic_store_n(&I.ready, 1, __ATOMIC_RELEASE);
out:
	pthread_mutex_unlock(&I.lock);
	return 0;
fail_close:
	nvb_gpu_close(I.g);
	I.g = NULL;
fail:
	pthread_mutex_unlock(&I.lock);
	return -1;
}

/* ---- size classes ---- */

/* 0 when n cannot be rounded without overflow. */
static size_t size_class(size_t n, size_t gran)
{
	size_t r, step;

	if (n > (SIZE_MAX >> 2))
		return 0;
	r = (n + gran - 1) & ~(gran - 1);
	if (r <= 16 * gran)
		return r;
	step = (size_t)1 << (63 - __builtin_clzll(r) - 3);
	return (r + step - 1) & ~(step - 1);	/* step >= 2 granules: still whole granules */
}

/* ---- tables (A.lock held) ---- */

static size_t hash64(uint64_t k, size_t nb)
{
	k ^= k >> 29;
	k *= 0x9e3779b97f4a7c15ull;
	return (size_t)(k >> 32) & (nb - 1);
}

static size_t live_hash(uint64_t ptr, size_t nb)
{
	return hash64(ptr >> 12, nb);
}

static size_t cache_hash(int dev, size_t cls, void *stream, size_t nb)
{
	return hash64((uint64_t)cls ^ ((uint64_t)(uintptr_t)stream << 7) ^ (uint64_t)dev, nb);
}

static size_t blk_hash(const struct table *t, const struct blk *k)
{
	return t == &A.live ? live_hash(k->ptr, t->nb) : cache_hash(k->dev, k->cls, k->stream, t->nb);
}

/* Doubles t when it is over two entries a bucket; keeps it as is if calloc fails. */
static void grow(struct table *t)
{
	size_t nb = t->nb ? t->nb * 2 : 256, i;
	struct blk **b, *k, *next;

	if (t->n < 2 * t->nb)
		return;
	b = calloc(nb, sizeof(*b));
	if (!b)
		return;
	for (i = 0; i < t->nb; i++)
		for (k = t->b[i]; k; k = next) {
			size_t h;

			next = k->next;
			h = t == &A.live ? live_hash(k->ptr, nb) : cache_hash(k->dev, k->cls, k->stream, nb);
			k->next = b[h];
			b[h] = k;
		}
	free(t->b);
	t->b = b;
	t->nb = nb;
}

static int insert(struct table *t, struct blk *k)
{
	size_t h;

	grow(t);
	if (!t->nb)
		return -1;
	h = blk_hash(t, k);
	k->next = t->b[h];
	t->b[h] = k;
	t->n++;
	return 0;
}

static void unlink_from(struct table *t, struct blk *k)
{
	struct blk **pp = &t->b[blk_hash(t, k)];

	for (; *pp; pp = &(*pp)->next)
		if (*pp == k) {
			*pp = k->next;
			t->n--;
			return;
		}
}

static struct blk *live_take(uint64_t ptr)
{
	struct blk **pp, *k;

	if (!A.live.nb)
		return NULL;
	for (pp = &A.live.b[live_hash(ptr, A.live.nb)]; (k = *pp); pp = &k->next)
		if (k->ptr == ptr) {
			*pp = k->next;
			A.live.n--;
			return k;
		}
	return NULL;
}

static void lru_unlink(struct blk *k)
{
	if (k->older)
		k->older->newer = k->newer;
	else
		A.oldest = k->newer;
	if (k->newer)
		k->newer->older = k->older;
	else
		A.newest = k->older;
	k->older = k->newer = NULL;
	A.st.cached_bytes -= k->size;
	A.st.cached_blocks--;
}

/* The most recently cached block of exactly (dev, stream, cls), taken out. */
static struct blk *cache_take(int dev, size_t cls, void *stream)
{
	struct blk **pp, *k;

	if (!A.cache.nb)
		return NULL;
	for (pp = &A.cache.b[cache_hash(dev, cls, stream, A.cache.nb)]; (k = *pp); pp = &k->next)
		if (k->dev == dev && k->cls == cls && k->stream == stream) {
			*pp = k->next;
			A.cache.n--;
			lru_unlink(k);
			return k;
		}
	return NULL;
}

/*
 * Takes cached blocks of dev (-1: any) out, oldest first, until at most
 * keep bytes stay cached; returns them as a list through ->next.
 */
static struct blk *cache_evict(int dev, uint64_t keep)
{
	struct blk *k = A.oldest, *older_next, *out = NULL;

	while (k && A.st.cached_bytes > keep) {
		older_next = k->newer;
		if (dev < 0 || k->dev == dev) {
			unlink_from(&A.cache, k);
			lru_unlink(k);
			k->next = out;
			out = k;
		}
		k = older_next;
	}
	return out;
}

/* ---- CUDA side (no lock held) ---- */

/* Waits for the device's work, then releases the listed blocks. */
static size_t release(struct blk *list)
{
	int synced[MAX_DEV] = { 0 };
	size_t bytes = 0, n = 0;
	struct blk *k, *next;
	CUcontext old = NULL;

	if (!list)
		return 0;
	I.cu.cuCtxGetCurrent(&old);
	for (k = list; k; k = k->next)
		if (!synced[k->dev]) {
			synced[k->dev] = 1;
			I.cu.cuCtxSetCurrent(I.ctx[k->dev]);
			I.cu.cuCtxSynchronize();
		}
	I.cu.cuCtxSetCurrent(old);
	for (k = list; k; k = next) {
		next = k->next;
		bytes += k->size;
		n++;
		nvb_gpu_free(k->b);
		free(k);
	}
	pthread_mutex_lock(&A.lock);
	A.st.cuda_frees += n;
	pthread_mutex_unlock(&A.lock);
	return bytes;
}

static int fresh(struct blk *k)
{
	int err;

	err = nvb_gpu_alloc(I.g, k->dev, k->cls,
			    __atomic_load_n(&I.no_fabric[k->dev], __ATOMIC_RELAXED) ?
			    NVB_GPU_ALLOC_NO_FABRIC : 0, &k->b);
	if (err)
		return err;
	if (!(nvb_gpu_buf_handle_types(k->b) & NVB_GPU_HANDLE_FABRIC))
		__atomic_store_n(&I.no_fabric[k->dev], 1, __ATOMIC_RELAXED);
	k->ptr = nvb_gpu_buf_ptr(k->b);
	k->size = nvb_gpu_buf_size(k->b);
	return 0;
}

/* ---- the entry points ---- */

static void *fail(void)
{
	pthread_mutex_lock(&A.lock);
	A.st.failures++;
	pthread_mutex_unlock(&A.lock);
	return NULL;
}

API void *nvb_torch_malloc(ssize_t size, int device, void *stream)
{
	struct blk *k;
	size_t cls;
	int err;

	if (size <= 0) {
		seterr("nvb_torch_malloc: size %zd", size);
		return size ? fail() : NULL;	/* 0 bytes: no memory, not a failure */
	}
	if (init())
		return fail();
	if (device < 0 || device >= I.ndev) {
		seterr("nvb_torch_malloc: device %d out of range (%d devices)", device, I.ndev);
		return fail();
	}
	cls = size_class((size_t)size, I.gran[device]);
	if (!cls) {
		seterr("nvb_torch_malloc: size %zd too large", size);
		return fail();
	}
	pthread_mutex_lock(&A.lock);
	k = cache_take(device, cls, stream);
	if (k && nvb_gpu_buf_exported(k->b)) {	/* registered while it sat in the cache */
		A.st.exported_releases++;
		pthread_mutex_unlock(&A.lock);
		k->next = NULL;
		release(k);
		pthread_mutex_lock(&A.lock);
		k = NULL;
	}
	if (k) {
		if (insert(&A.live, k)) {	/* cannot happen once the table exists */
			insert(&A.cache, k);
			pthread_mutex_unlock(&A.lock);
			seterr("nvb_torch_malloc: out of host memory");
			return fail();
		}
		A.st.hits++;
		A.st.mallocs++;
		A.st.live_bytes += k->size;
		A.st.live_blocks++;
		pthread_mutex_unlock(&A.lock);
		return (void *)(uintptr_t)k->ptr;
	}
	pthread_mutex_unlock(&A.lock);

	k = calloc(1, sizeof(*k));
	if (!k) {
		seterr("nvb_torch_malloc: out of host memory");
		return fail();
	}
	k->dev = device;
	k->cls = cls;
	k->stream = stream;
	err = fresh(k);
	if (err == -ENOMEM) {	/* the cache may hold what the driver lacks */
		pthread_mutex_lock(&A.lock);
		struct blk *ev = cache_evict(device, 0);
		pthread_mutex_unlock(&A.lock);
		if (ev) {
			release(ev);
			err = fresh(k);
		}
	}
	if (err) {
		seterr("nvb_torch_malloc(%zd) on device %d: %s", size, device, nvb_gpu_last_error());
		free(k);
		return fail();
	}
	pthread_mutex_lock(&A.lock);
	if (insert(&A.live, k)) {
		pthread_mutex_unlock(&A.lock);
		nvb_gpu_free(k->b);
		free(k);
		seterr("nvb_torch_malloc: out of host memory");
		return fail();
	}
	A.st.cuda_allocs++;
	A.st.mallocs++;
	A.st.live_bytes += k->size;
	A.st.live_blocks++;
	pthread_mutex_unlock(&A.lock);
	return (void *)(uintptr_t)k->ptr;
}

API void nvb_torch_free(void *ptr, ssize_t size, int device, void *stream)
{
	struct blk *k, *ev = NULL;
	int shared;

	/* PyTorch hands back what it was given; the table, not the caller, says what ptr is */
	(void)size; (void)device; (void)stream;
	if (!ptr)
		return;
	pthread_mutex_lock(&A.lock);
	k = live_take((uint64_t)(uintptr_t)ptr);
	if (!k) {
		A.st.bad_frees++;
		pthread_mutex_unlock(&A.lock);
		return;
	}
	A.st.frees++;
	A.st.live_bytes -= k->size;
	A.st.live_blocks--;
	shared = nvb_gpu_buf_exported(k->b) != 0;	/* an importer may still map it */
	A.st.exported_releases += shared;
	if (!shared && k->size <= A.limit && !insert(&A.cache, k)) {
		k->older = A.newest;
		k->newer = NULL;
		if (A.newest)
			A.newest->newer = k;
		else
			A.oldest = k;
		A.newest = k;
		A.st.cached_bytes += k->size;
		A.st.cached_blocks++;
		if (A.st.cached_bytes > A.limit)	/* down to 3/4 so a burst costs one sync */
			ev = cache_evict(-1, A.limit - A.limit / 4);
	} else {
		k->next = NULL;
		ev = k;
	}
	pthread_mutex_unlock(&A.lock);
	release(ev);
}

API int nvb_torch_stats(struct nvb_torch_stats *st)
{
	size_t sz;

	if (!st || st->sz < offsetof(struct nvb_torch_stats, mallocs) + sizeof(uint64_t) ||
	    st->sz > 4096)
		return -EINVAL;
	sz = st->sz < sizeof(A.st) ? st->sz : sizeof(A.st);
	pthread_mutex_lock(&A.lock);
	A.st.cache_limit = __atomic_load_n(&I.ready, __ATOMIC_ACQUIRE) ? A.limit : env_limit();
	memcpy((char *)st + sizeof(size_t), (const char *)&A.st + sizeof(size_t), sz - sizeof(size_t));
	pthread_mutex_unlock(&A.lock);
	st->sz = sz;
	return 0;
}

API size_t nvb_torch_trim(int device, size_t keep)
{
	struct blk *ev;

	if (!__atomic_load_n(&I.ready, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&A.lock);
	ev = cache_evict(device, keep);
	pthread_mutex_unlock(&A.lock);
	return release(ev);
}
