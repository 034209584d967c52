// SPDX-License-Identifier: MIT
/*
 * libnvbridge GPU layer: VMM allocation with a FABRIC trial, export to an
 * fd + metadata blob, import with a mapping cache keyed by entry id,
 * revocation, and copies (copy engines split across streams, an SM
 * gather/scatter kernel, cuMemcpyBatchAsync) with completion flags.
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

#include "cuda_api.h"
#include "gpu_internal.h"
#include "nvbridge_gpu.h"

/* The embedded fatbin (gpu_fatbin.S); empty when nvcc was not available. */
extern const unsigned char nvb_gpu_fatbin[];
extern const unsigned char nvb_gpu_fatbin_end[];

#define NVB_GPU_MAX_DEV		32
#define NVB_RING_SLOTS		16
#define NVB_SLOT_BLOCKS		8192
#define NVB_COUNTERS		1024
#define NVB_SM_CHUNK		(256u << 10)
#define NVB_SPLIT_MIN		(8u << 20)
#define NVB_MAX_ABORT_FLAGS	8
#define NVB_EVPOOL		64	/* events for nvb_gpu_copy_signal */
#define NVB_MAX_PROXIES		4	/* per device */
#define NVB_PROXY_H		4096	/* host ring slots */
#define NVB_PROXY_R		1024	/* device ring slots */

/* Proxy layouts shared with gather.cu (struct nvb_pdesc, nvb_phost, ...). */
struct nvb_proxy_desc {
	uint64_t dst, src, len, flag, wait_flag, abort_word;
	uint32_t flag_val, wait_val, rsv, seq;
};
struct nvb_proxy_host {
	uint32_t stop;
	uint32_t pad0[15];
	uint64_t done;
	uint64_t aborted;
	uint64_t pad1[6];
};
#define NVB_PROXY_INB		256	/* per-CTA inbox slots (gather.cu NVB_INB) */
#define NVB_PROXY_MAXCTA	1024	/* gather.cu NVB_PMAXCTA */
/* control block, device ring, done counters, per-CTA inbox counters, inboxes */
#define NVB_PROXY_OFF_RING	384
#define NVB_PROXY_OFF_CTR	(NVB_PROXY_OFF_RING + NVB_PROXY_R * 64)
#define NVB_PROXY_OFF_CTA	(NVB_PROXY_OFF_CTR + NVB_PROXY_R * 4)
#define NVB_PROXY_OFF_INBOX(n)	(NVB_PROXY_OFF_CTA + (size_t)(n) * 256)
#define NVB_PROXY_DEV_BYTES(n)	(NVB_PROXY_OFF_INBOX(n) + (size_t)(n) * NVB_PROXY_INB * 8)

/* Memory of one proxy slot: allocated once, reused, freed by nvb_gpu_close. */
struct nvb_proxy_mem {
	int in_use;
	struct nvb_proxy_desc *ring;	/* pinned host */
	struct nvb_proxy_host *ph;	/* pinned host */
	CUdeviceptr dmem;		/* control block, device ring, counters */
	CUstream st;
};

struct nvb_gpu_dev {
	CUdevice dev;
	CUcontext ctx;
	CUuuid uuid;
	int sm_count;
	int cc_major;
	int ready;		/* module/ring initialised */
	CUmodule mod;
	CUfunction fn_gather;
	CUfunction fn_spin;
	CUfunction fn_proxy;	/* NULL: not in the embedded image */
	int proxy_max_ctas;	/* co-resident proxy CTAs on this device */
	CUevent evpool[NVB_EVPOOL];
	unsigned int ev_next;
	unsigned int rot;
	struct nvb_proxy_mem pmem[NVB_MAX_PROXIES];
	struct nvb_gpu_block *ring;	/* pinned host: NVB_RING_SLOTS * NVB_SLOT_BLOCKS */
	CUevent ring_ev[NVB_RING_SLOTS];
	int ring_used[NVB_RING_SLOTS];
	unsigned int ring_next;
	CUdeviceptr counters;	/* NVB_COUNTERS words, zeroed */
	unsigned int counter_next;
	pthread_mutex_t ring_lock;	/* ring_next, ring_used, ring_ev */
};

struct nvb_gpu {
	struct nvb_cuda cu;
	int ndev;
	struct nvb_gpu_dev d[NVB_GPU_MAX_DEV];
	unsigned char peer[NVB_GPU_MAX_DEV][NVB_GPU_MAX_DEV];	/* i can access j */
	pthread_mutex_t lock;
	struct nvb_gpu_map *maps;	/* all live mappings */
	struct nvb_gpu_name *names;	/* name cache (gpu_nvb.c) */
	struct nvb_gpu_proxy *proxies;	/* running proxies */
	int kernel_ok;
};

struct nvb_gpu_buf {
	struct nvb_gpu *g;
	int dev;
	CUmemGenericAllocationHandle h;
	CUdeviceptr ptr;
	size_t size;
	size_t gran;
	uint32_t types;
	int fabric_err;
	int fd;
	int fabric_ok;
	CUmemFabricHandle fabric;
};

struct nvb_gpu_map {
	struct nvb_gpu *g;
	struct nvb_gpu_map *next;
	uint64_t id;
	int refs;
	int cached;		/* findable by id */
	int revoked;
	int owner_dev;		/* -1: not visible here */
	CUmemGenericAllocationHandle h;
	CUdeviceptr ptr;
	size_t size;
	uint32_t type;
	volatile uint32_t *abort_word;	/* pinned host word, set on revoke */
	int nabort;
	struct {
		int dev;
		CUdeviceptr addr;
	} abort[NVB_MAX_ABORT_FLAGS];
	struct nvb_gpu_map_stats stats;
};

struct nvb_gpu_proxy {
	struct nvb_gpu *g;
	struct nvb_gpu_proxy *next;
	int dev;
	unsigned int nctas;
	struct nvb_proxy_mem *mem;
	pthread_mutex_t lock;
	uint64_t tail;		/* next ticket - 1 */
};

static __thread char nvb_gpu_err[320];

const char *nvb_gpu_last_error(void)
{
	return nvb_gpu_err;
}

__attribute__((format(printf, 2, 3)))
static int seterr(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(nvb_gpu_err, sizeof(nvb_gpu_err), fmt, ap);
	va_end(ap);
	return err;
}

/* A CUDA failure: -EIO (-ENOMEM for OUT_OF_MEMORY) and a message. */
static int cuerr(struct nvb_gpu *g, CUresult r, const char *what)
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

#define CU(g, call, what) do {					\
	CUresult r_ = (g)->cu.call;				\
	if (r_ != CUDA_SUCCESS)					\
		return cuerr((g), r_, (what));			\
} while (0)

int nvb_gpu_open(struct nvb_gpu **out, const struct nvb_gpu_opts *opts)
{
	struct nvb_gpu *g;
	char msg[256];
	int n = 0, err, i, j;
	CUresult r;

	*out = NULL;
	if (opts && (opts->size < sizeof(uint32_t) * 2 || opts->flags))
		return seterr(-EINVAL, "nvb_gpu_open: bad opts (size %u, flags %#x)",
			      opts->size, opts->flags);
	g = calloc(1, sizeof(*g));
	if (!g)
		return seterr(-ENOMEM, "nvb_gpu_open: out of memory");
	err = nvb_cuda_load(&g->cu, opts && opts->size >= sizeof(*opts) ?
			    opts->libcuda : NULL, msg, sizeof(msg));
	if (err) {
		free(g);
		return seterr(err, "%s", msg);
	}
	r = g->cu.cuInit(0);
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
	for (i = 0; i < NVB_GPU_MAX_DEV; i++)
		pthread_mutex_init(&g->d[i].ring_lock, NULL);
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
			return err;
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
	g->cu.cuCtxSetCurrent(g->d[0].ctx);
	*out = g;
	return 0;
}

static void map_destroy(struct nvb_gpu_map *m);

void nvb_gpu_close(struct nvb_gpu *g)
{
	int i, k;

	if (!g)
		return;
	while (g->proxies)
		if (nvb_gpu_proxy_stop(g->proxies, 5000000000LL))
			break;	/* a proxy that would not stop: leak it rather than hang */
	nvb_gpu_names_free(g);
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
	}
	g->cu.cuCtxSetCurrent(NULL);
	pthread_mutex_destroy(&g->lock);
	for (i = 0; i < NVB_GPU_MAX_DEV; i++)
		pthread_mutex_destroy(&g->d[i].ring_lock);
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

static uint64_t ns_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Ordinal of the current context's device, or -errno. */
static int cur_dev(struct nvb_gpu *g)
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
static int dev_ready(struct nvb_gpu *g, int i)
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
	if (r != CUDA_SUCCESS) {
		err = cuerr(g, r, "GPU layer setup");
		goto out;
	}
	__atomic_store_n(&d->ready, 1, __ATOMIC_RELEASE);
out:
	pthread_mutex_unlock(&g->lock);
	return err;
}

/* An event from the device's pool (dev_ready() first); see nvb_gpu_copy_signal(). */
static CUevent pool_event(struct nvb_gpu_dev *d)
{
	return d->evpool[__atomic_fetch_add(&d->ev_next, 1, __ATOMIC_RELAXED) % NVB_EVPOOL];
}

/* ---- allocation and export ---- */

static void prop_init(CUmemAllocationProp *p, int devid, int types)
{
	memset(p, 0, sizeof(*p));
	p->type = CU_MEM_ALLOCATION_TYPE_PINNED;
	p->requestedHandleTypes = types;
	p->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	p->location.id = devid;
}

/* Access descriptors for every device that can reach owner (or only cur). */
static size_t access_descs(struct nvb_gpu *g, int owner, int only,
			   CUmemAccessDesc *desc)
{
	size_t n = 0;
	int i;

	for (i = 0; i < g->ndev; i++) {
		if (only >= 0 && i != only)
			continue;
		if (owner >= 0 && !g->peer[i][owner])
			continue;
		desc[n].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
		desc[n].location.id = g->d[i].dev;
		desc[n].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
		n++;
	}
	return n;
}

/* cuMemCreate of @size rounded up to the granularity, for handle @types. */
static CUresult create_handle(struct nvb_gpu *g, struct nvb_gpu_buf *b, size_t size,
			      CUmemAllocationProp *prop, int types)
{
	CUresult r;

	prop_init(prop, g->d[b->dev].dev, types);
	r = g->cu.cuMemGetAllocationGranularity(&b->gran, prop,
						CU_MEM_ALLOC_GRANULARITY_RECOMMENDED);
	if (r != CUDA_SUCCESS)
		return r;
	b->size = (size + b->gran - 1) / b->gran * b->gran;
	return g->cu.cuMemCreate(&b->h, b->size, prop, 0);
}

int nvb_gpu_alloc(struct nvb_gpu *g, int dev, size_t size, uint32_t flags,
		  struct nvb_gpu_buf **out)
{
	CUmemAccessDesc desc[NVB_GPU_MAX_DEV];
	CUmemAllocationProp prop;
	struct nvb_gpu_buf *b;
	CUcontext old = NULL;
	CUresult r;
	int err;

	*out = NULL;
	if (dev < 0 || dev >= g->ndev)
		return seterr(-EINVAL, "nvb_gpu_alloc: device %d out of range", dev);
	if (!size)
		return seterr(-EINVAL, "nvb_gpu_alloc: size 0");
	if (flags & ~NVB_GPU_ALLOC_NO_FABRIC)
		return seterr(-EINVAL, "nvb_gpu_alloc: unknown flags %#x", flags);
	b = calloc(1, sizeof(*b));
	if (!b)
		return seterr(-ENOMEM, "nvb_gpu_alloc: out of memory");
	b->g = g;
	b->dev = dev;
	b->fd = -1;
	/* the device's context for the calls; the caller's comes back at the end */
	g->cu.cuCtxGetCurrent(&old);
	g->cu.cuCtxSetCurrent(g->d[dev].ctx);

	r = CUDA_ERROR_NOT_SUPPORTED;
	if (!(flags & NVB_GPU_ALLOC_NO_FABRIC)) {
		r = create_handle(g, b, size, &prop,
				  CU_MEM_HANDLE_TYPE_FABRIC | CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
		if (r == CUDA_SUCCESS)
			b->types = NVB_GPU_HANDLE_FABRIC | NVB_GPU_HANDLE_POSIX_FD;
		else
			b->fabric_err = r;
		if (r != CUDA_SUCCESS && r != CUDA_ERROR_NOT_PERMITTED &&
		    r != CUDA_ERROR_NOT_SUPPORTED && r != CUDA_ERROR_INVALID_VALUE) {
			err = cuerr(g, r, "cuMemCreate(FABRIC|POSIX_FD)");
			goto fail_free;
		}
	}
	if (r != CUDA_SUCCESS) {
		r = create_handle(g, b, size, &prop, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
		if (r != CUDA_SUCCESS) {
			err = cuerr(g, r, "cuMemCreate(POSIX_FD)");
			goto fail_free;
		}
		b->types = NVB_GPU_HANDLE_POSIX_FD;
	}
	r = g->cu.cuMemAddressReserve(&b->ptr, b->size, b->gran, 0, 0);
	if (r != CUDA_SUCCESS)
		goto fail_release;
	r = g->cu.cuMemMap(b->ptr, b->size, 0, b->h, 0);
	if (r != CUDA_SUCCESS)
		goto fail_unreserve;
	r = g->cu.cuMemSetAccess(b->ptr, b->size, desc, access_descs(g, dev, -1, desc));
	if (r != CUDA_SUCCESS)
		goto fail_unmap;
	g->cu.cuCtxSetCurrent(old);
	*out = b;
	return 0;

fail_unmap:
	g->cu.cuMemUnmap(b->ptr, b->size);
fail_unreserve:
	g->cu.cuMemAddressFree(b->ptr, b->size);
fail_release:
	err = cuerr(g, r, "nvb_gpu_alloc: map");
	g->cu.cuMemRelease(b->h);
fail_free:
	free(b);
	g->cu.cuCtxSetCurrent(old);
	return err;
}

void nvb_gpu_free(struct nvb_gpu_buf *b)
{
	struct nvb_gpu *g;

	if (!b)
		return;
	g = b->g;
	{
		CUcontext old = NULL;

		g->cu.cuCtxGetCurrent(&old);
		g->cu.cuCtxSetCurrent(g->d[b->dev].ctx);
		g->cu.cuMemUnmap(b->ptr, b->size);
		g->cu.cuMemAddressFree(b->ptr, b->size);
		g->cu.cuMemRelease(b->h);
		g->cu.cuCtxSetCurrent(old);
	}
	if (b->fd >= 0)
		close(b->fd);
	free(b);
}

uint64_t nvb_gpu_buf_ptr(const struct nvb_gpu_buf *b)
{
	return b->ptr;
}

size_t nvb_gpu_buf_size(const struct nvb_gpu_buf *b)
{
	return b->size;
}

uint32_t nvb_gpu_buf_handle_types(const struct nvb_gpu_buf *b)
{
	return b->types;
}

int nvb_gpu_buf_fabric_error(const struct nvb_gpu_buf *b)
{
	return b->fabric_err;
}

int nvb_gpu_export(struct nvb_gpu_buf *b, int *fd, struct nvb_gpu_meta *meta)
{
	struct nvb_gpu *g = b->g;

	if (b->fd < 0) {
		int f = -1;

		CU(g, cuMemExportToShareableHandle(&f, b->h,
				CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
		   "cuMemExportToShareableHandle(POSIX_FD)");
		b->fd = f;
		if (b->types & NVB_GPU_HANDLE_FABRIC) {
			CUresult r = g->cu.cuMemExportToShareableHandle(&b->fabric, b->h,
						CU_MEM_HANDLE_TYPE_FABRIC, 0);
			b->fabric_ok = (r == CUDA_SUCCESS);
		}
	}
	memset(meta, 0, sizeof(*meta));
	meta->magic = NVB_GPU_META_MAGIC;
	meta->size = sizeof(*meta);
	meta->alloc_size = b->size;
	meta->granularity = b->gran;
	meta->handle_types = NVB_GPU_HANDLE_POSIX_FD;
	if (b->fabric_ok) {
		meta->handle_types |= NVB_GPU_HANDLE_FABRIC;
		memcpy(meta->fabric, &b->fabric, sizeof(meta->fabric));
	}
	memcpy(meta->uuid, &g->d[b->dev].uuid, sizeof(meta->uuid));
	meta->owner_pid = (uint32_t)getpid();
	*fd = b->fd;
	return 0;
}

/* ---- import, cache, revoke ---- */

static void map_destroy(struct nvb_gpu_map *m)
{
	struct nvb_gpu *g = m->g;
	CUcontext old = NULL;

	/* the caller's context stays current (NCCL & co. read it back) */
	g->cu.cuCtxGetCurrent(&old);
	if (m->owner_dev >= 0)
		g->cu.cuCtxSetCurrent(g->d[m->owner_dev].ctx);
	/*
	 * No cuCtxSynchronize here: a stream blocked on a dead peer's flag
	 * would hang us.  Work using the mapping must be complete before the
	 * last nvb_gpu_unmap() (documented).
	 */
	g->cu.cuMemUnmap(m->ptr, m->size);
	g->cu.cuMemAddressFree(m->ptr, m->size);
	g->cu.cuMemRelease(m->h);
	if (m->abort_word)
		g->cu.cuMemFreeHost((void *)m->abort_word);
	free(m);
	g->cu.cuCtxSetCurrent(old);
}

static void map_unlink(struct nvb_gpu *g, struct nvb_gpu_map *m)
{
	struct nvb_gpu_map **pp;

	for (pp = &g->maps; *pp; pp = &(*pp)->next)
		if (*pp == m) {
			*pp = m->next;
			return;
		}
}

static struct nvb_gpu_map *cache_find(struct nvb_gpu *g, uint64_t id)
{
	struct nvb_gpu_map *m;

	for (m = g->maps; m; m = m->next)
		if (m->cached && m->id == id)
			return m;
	return NULL;
}

int nvb_gpu_import_cached(struct nvb_gpu *g, uint64_t entry_id, struct nvb_gpu_map **out)
{
	struct nvb_gpu_map *m;

	pthread_mutex_lock(&g->lock);
	m = entry_id ? cache_find(g, entry_id) : NULL;
	if (m)
		m->refs++;
	pthread_mutex_unlock(&g->lock);
	*out = m;
	return m ? 0 : -ENOENT;
}

int nvb_gpu_import_fd(struct nvb_gpu *g, uint64_t entry_id, int fd,
		      const void *blob, size_t blob_len, uint32_t flags,
		      struct nvb_gpu_map **out)
{
	CUmemAccessDesc desc[NVB_GPU_MAX_DEV];
	struct nvb_gpu_meta meta;
	struct nvb_gpu_map *m;
	size_t ndesc, k;
	CUresult r;
	int i, cur, err;
	uint64_t t0, t1;

	*out = NULL;
	if (flags & ~(NVB_GPU_IMPORT_NO_FABRIC | NVB_GPU_IMPORT_LOCAL_ONLY))
		return seterr(-EINVAL, "nvb_gpu_import_fd: unknown flags %#x", flags);
	if (entry_id && nvb_gpu_import_cached(g, entry_id, out) == 0)
		return 0;
	if (!blob || blob_len < offsetof(struct nvb_gpu_meta, owner_pid))
		return seterr(-EMSGSIZE, "nvb_gpu_import_fd: metadata blob of %zu bytes is too short (need %zu)",
			      blob_len, offsetof(struct nvb_gpu_meta, owner_pid));
	memset(&meta, 0, sizeof(meta));
	memcpy(&meta, blob, blob_len < sizeof(meta) ? blob_len : sizeof(meta));
	if (meta.magic != NVB_GPU_META_MAGIC)
		return seterr(-EINVAL, "nvb_gpu_import_fd: blob is not nvbridge GPU metadata (magic %#x)",
			      meta.magic);
	if (meta.size > blob_len || meta.alloc_size == 0 || meta.granularity == 0 ||
	    meta.alloc_size % meta.granularity)
		return seterr(-EINVAL, "nvb_gpu_import_fd: inconsistent metadata (size %llu, granularity %llu)",
			      (unsigned long long)meta.alloc_size,
			      (unsigned long long)meta.granularity);
	cur = cur_dev(g);
	if (cur < 0) {
		g->cu.cuCtxSetCurrent(g->d[0].ctx);
		cur = 0;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return seterr(-ENOMEM, "nvb_gpu_import_fd: out of memory");
	m->g = g;
	m->id = entry_id;
	m->refs = 1;
	m->owner_dev = -1;
	for (i = 0; i < g->ndev; i++)
		if (!memcmp(&g->d[i].uuid, meta.uuid, sizeof(meta.uuid)))
			m->owner_dev = i;

	m->stats.size = sizeof(m->stats);
	t0 = ns_now();
	r = CUDA_ERROR_NOT_SUPPORTED;
	if ((meta.handle_types & NVB_GPU_HANDLE_FABRIC) && !(flags & NVB_GPU_IMPORT_NO_FABRIC)) {
		r = g->cu.cuMemImportFromShareableHandle(&m->h, meta.fabric,
							 CU_MEM_HANDLE_TYPE_FABRIC);
		if (r == CUDA_SUCCESS)
			m->type = NVB_GPU_HANDLE_FABRIC;
	}
	if (r != CUDA_SUCCESS) {
		if (fd < 0) {
			free(m);
			return seterr(-EBADF, "nvb_gpu_import_fd: no fd and no importable fabric handle");
		}
		r = g->cu.cuMemImportFromShareableHandle(&m->h, (void *)(uintptr_t)fd,
					CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
		if (r != CUDA_SUCCESS) {
			err = cuerr(g, r, "cuMemImportFromShareableHandle(POSIX_FD)");
			free(m);
			return err;
		}
		m->type = NVB_GPU_HANDLE_POSIX_FD;
	}
	m->size = meta.alloc_size;
	t1 = ns_now();
	m->stats.import_ns = t1 - t0;
	t0 = t1;
	r = g->cu.cuMemAddressReserve(&m->ptr, m->size, meta.granularity, 0, 0);
	if (r != CUDA_SUCCESS) {
		err = cuerr(g, r, "cuMemAddressReserve");
		goto fail_release;
	}
	t1 = ns_now();
	m->stats.reserve_ns = t1 - t0;
	t0 = t1;
	r = g->cu.cuMemMap(m->ptr, m->size, 0, m->h, 0);
	if (r != CUDA_SUCCESS) {
		/* A size that does not match the allocation lands here. */
		err = cuerr(g, r, "cuMemMap (does the metadata size match the allocation?)");
		goto fail_free;
	}
	t1 = ns_now();
	m->stats.map_ns = t1 - t0;
	ndesc = access_descs(g, m->owner_dev,
			     (flags & NVB_GPU_IMPORT_LOCAL_ONLY) ? cur : -1, desc);
	if (!ndesc) {
		err = seterr(-ENODEV, "no GPU in this process can reach the allocation's device");
		goto fail_unmap;
	}
	/* the current device first; one call per device so each is timed */
	for (k = 1; k < ndesc; k++)
		if (desc[k].location.id == g->d[cur].dev) {
			CUmemAccessDesc tmp = desc[0];

			desc[0] = desc[k];
			desc[k] = tmp;
		}
	for (k = 0; k < ndesc; k++) {
		t0 = ns_now();
		r = g->cu.cuMemSetAccess(m->ptr, m->size, &desc[k], 1);
		if (r != CUDA_SUCCESS) {
			err = cuerr(g, r, "cuMemSetAccess");
			goto fail_unmap;
		}
		if (k < 4) {
			m->stats.access_ns[k] = ns_now() - t0;
			m->stats.access_dev[k] = desc[k].location.id;
			m->stats.naccess = (uint32_t)k + 1;
		}
	}
	pthread_mutex_lock(&g->lock);
	if (entry_id) {
		struct nvb_gpu_map *old = cache_find(g, entry_id);

		if (old) {	/* lost a race with another thread: use its mapping */
			old->refs++;
			pthread_mutex_unlock(&g->lock);
			g->cu.cuMemUnmap(m->ptr, m->size);
			g->cu.cuMemAddressFree(m->ptr, m->size);
			g->cu.cuMemRelease(m->h);
			free(m);
			*out = old;
			return 0;
		}
		m->cached = 1;
	}
	m->next = g->maps;
	g->maps = m;
	pthread_mutex_unlock(&g->lock);
	*out = m;
	return 0;

fail_unmap:
	g->cu.cuMemUnmap(m->ptr, m->size);
fail_free:
	g->cu.cuMemAddressFree(m->ptr, m->size);
fail_release:
	g->cu.cuMemRelease(m->h);
	free(m);
	return err;
}

void nvb_gpu_unmap(struct nvb_gpu_map *m)
{
	struct nvb_gpu *g;
	int destroy;

	if (!m)
		return;
	g = m->g;
	pthread_mutex_lock(&g->lock);
	destroy = (--m->refs == 0) && (m->revoked || !m->cached);
	if (destroy)
		map_unlink(g, m);
	pthread_mutex_unlock(&g->lock);
	if (destroy)
		map_destroy(m);
}

int nvb_gpu_map_stats(const struct nvb_gpu_map *m, struct nvb_gpu_map_stats *out)
{
	uint32_t sz;

	if (!m || !out || out->size < sizeof(uint32_t) * 2)
		return seterr(-EINVAL, "nvb_gpu_map_stats: bad arguments");
	sz = out->size < sizeof(m->stats) ? out->size : (uint32_t)sizeof(m->stats);
	memcpy((char *)out + sizeof(uint32_t), (const char *)&m->stats + sizeof(uint32_t),
	       sz - sizeof(uint32_t));
	out->size = sz;
	return 0;
}

uint64_t nvb_gpu_map_ptr(const struct nvb_gpu_map *m)
{
	return m->ptr;
}

size_t nvb_gpu_map_size(const struct nvb_gpu_map *m)
{
	return m->size;
}

uint64_t nvb_gpu_map_id(const struct nvb_gpu_map *m)
{
	return m->id;
}

uint32_t nvb_gpu_map_handle_type(const struct nvb_gpu_map *m)
{
	return m->type;
}

int nvb_gpu_map_revoked(const struct nvb_gpu_map *m)
{
	return __atomic_load_n(&m->revoked, __ATOMIC_ACQUIRE);
}

int nvb_gpu_map_abort_on_revoke(struct nvb_gpu_map *m, uint64_t local_flag)
{
	struct nvb_gpu *g = m->g;
	int dev = cur_dev(g), err = 0, revoked;

	if (dev < 0)
		return dev;
	pthread_mutex_lock(&g->lock);
	revoked = m->revoked;
	if (!revoked) {
		if (m->nabort == NVB_MAX_ABORT_FLAGS) {
			err = seterr(-ENOSPC, "at most %d abort flags per mapping",
				     NVB_MAX_ABORT_FLAGS);
		} else {
			m->abort[m->nabort].dev = dev;
			m->abort[m->nabort].addr = local_flag;
			m->nabort++;
		}
	}
	pthread_mutex_unlock(&g->lock);
	if (revoked)
		return nvb_gpu_abort_flag(g, local_flag);
	return err;
}

int nvb_gpu_abort_flag(struct nvb_gpu *g, uint64_t local_flag)
{
	uint32_t v = NVB_GPU_FLAG_ABORTED;

	/* Synchronous, from the host: works while the stream is blocked. */
	CU(g, cuMemcpyHtoD(local_flag, &v, sizeof(v)), "abort flag write");
	return 0;
}

int nvb_gpu_revoke(struct nvb_gpu *g, uint64_t entry_id)
{
	struct nvb_gpu_map *m;
	int destroy = 0, k, n = 0;
	struct {
		int dev;
		CUdeviceptr addr;
	} ab[NVB_MAX_ABORT_FLAGS];

	pthread_mutex_lock(&g->lock);
	m = cache_find(g, entry_id);
	if (m) {
		__atomic_store_n(&m->revoked, 1, __ATOMIC_RELEASE);
		if (m->abort_word)	/* ends nvb_gpu_wait_abortable() kernels */
			__atomic_store_n(m->abort_word, 1u, __ATOMIC_RELEASE);
		m->cached = 0;
		n = m->nabort;
		memcpy(ab, m->abort, sizeof(ab[0]) * (size_t)n);
		m->nabort = 0;
		destroy = (m->refs == 0);
		if (destroy)
			map_unlink(g, m);
	}
	pthread_mutex_unlock(&g->lock);
	nvb_gpu_names_forget(g, entry_id);
	if (n) {
		CUcontext old = NULL;

		g->cu.cuCtxGetCurrent(&old);
		for (k = 0; k < n; k++) {
			g->cu.cuCtxSetCurrent(g->d[ab[k].dev].ctx);
			nvb_gpu_abort_flag(g, ab[k].addr);
		}
		g->cu.cuCtxSetCurrent(old);
	}
	if (destroy)
		map_destroy(m);
	return m != NULL;
}

int nvb_gpu_cache_trim(struct nvb_gpu *g)
{
	struct nvb_gpu_map *m, **pp, *dead = NULL;
	int n = 0;

	pthread_mutex_lock(&g->lock);
	for (pp = &g->maps; *pp;) {
		m = *pp;
		if (m->refs == 0) {
			*pp = m->next;
			m->next = dead;
			dead = m;
			n++;
		} else {
			pp = &m->next;
		}
	}
	pthread_mutex_unlock(&g->lock);
	while (dead) {
		m = dead;
		dead = m->next;
		nvb_gpu_names_forget(g, m->id);
		map_destroy(m);
	}
	return n;
}

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
	CU(g, cuLaunchKernel(d->fn_gather, grid, 1, 1, 512, 1, 1, 0, st, params, NULL),
	   "cuLaunchKernel(nvb_gather)");
	return 0;
}

static unsigned int sm_grid(struct nvb_gpu *g, int dev, uint64_t items)
{
	uint64_t max = (uint64_t)g->d[dev].sm_count * 2;

	if (!max)
		max = 64;
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
	int dev, sm, hybrid, err = 0;
	size_t part, off, sm_len;

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

	/* fork: the side streams wait for streams[0]'s prior work */
	err = dev_ready(g, dev);
	if (err)
		return err;
	fork_ev = pool_event(&g->d[dev]);
	CU(g, cuEventRecord(fork_ev, (CUstream)streams[0]), "cuEventRecord");
	part = ((len - sm_len) / nce + 0xffff) & ~(size_t)0xffff;
	for (k = 0, off = 0; k < nstreams && off < len; k++) {
		size_t n = len - sm_len - off < part ? len - sm_len - off : part;
		CUstream st = (CUstream)streams[k];
		int use_sm = 0;

		if (hybrid && k == nstreams - 1) {
			n = len - off;
			use_sm = 1;
		} else if (!hybrid) {
			use_sm = sm;
		}
		if (!n)
			continue;
		if (k)
			CU(g, cuStreamWaitEvent(st, fork_ev, 0), "cuStreamWaitEvent (fork)");
		err = copy_one(g, dev, dst + off, src + off, n, st, use_sm);
		if (err)
			return err;
		off += n;
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
	if (!mode) {
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

static volatile uint32_t *map_abort_word(struct nvb_gpu *g, struct nvb_gpu_map *m);

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

/* ---- the persistent proxy ---- */

static volatile uint32_t *map_abort_word(struct nvb_gpu *g, struct nvb_gpu_map *m)
{
	pthread_mutex_lock(&g->lock);
	if (!m->abort_word) {
		void *p = NULL;

		if (g->cu.cuMemAllocHost(&p, 64) == CUDA_SUCCESS) {
			*(volatile uint32_t *)p = m->revoked;
			m->abort_word = p;
		}
	}
	pthread_mutex_unlock(&g->lock);
	return m->abort_word;
}

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

void nvb_gpu_names_free(struct nvb_gpu *g)
{
	struct nvb_gpu_name **head = &g->names, *n;

	while ((n = *head)) {
		*head = n->next;
		free(n);
	}
}

/* Forgets the name(s) of entry id (every name when id is 0). */
void nvb_gpu_names_forget(struct nvb_gpu *g, uint64_t id)
{
	struct nvb_gpu_name **pp, *n;

	pthread_mutex_lock(&g->lock);
	for (pp = &g->names; (n = *pp);) {
		if (n->id == id || !id) {
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

pthread_mutex_t *nvb_gpu_lock(struct nvb_gpu *g)
{
	return &g->lock;
}

int nvb_gpu_seterr(int err, const char *msg)
{
	return seterr(err, "%s", msg);
}
