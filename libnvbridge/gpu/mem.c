// SPDX-License-Identifier: MIT
/*
 * libnvbridge GPU layer: VMM allocation with a FABRIC trial, export to an fd + metadata
 * blob, import with a mapping cache keyed by (registry, entry id), revocation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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

static void prop_init(CUmemAllocationProp *p, int devid, int types)
{
	memset(p, 0, sizeof(*p));
	p->type = CU_MEM_ALLOCATION_TYPE_PINNED;
	p->requestedHandleTypes = types;
	p->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	p->location.id = devid;
}

size_t access_descs(struct nvb_gpu *g, int owner, int only,
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

void access_cur_first(struct nvb_gpu *g, int cur, CUmemAccessDesc *desc, size_t n)
{
	size_t k;

	for (k = 1; k < n; k++)
		if (desc[k].location.id == g->d[cur].dev) {
			CUmemAccessDesc tmp = desc[0];

			desc[0] = desc[k];
			desc[k] = tmp;
		}
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
	alloc_track(b);
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
	if (b->reg) {		/* registered: never the application's memory */
		reg_free(b);
		return;
	}
	g = b->g;
	alloc_untrack(b);	/* before the address can be reserved again */
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

	if (b->reg)
		return reg_export_v1(b, fd, meta);
	if (b->fd < 0) {
		int f = -1;

		/* before the handle exists: a failed export may have made one */
		__atomic_store_n(&b->exported, 1, __ATOMIC_RELEASE);

		CU(g, cuMemExportToShareableHandle(&f, b->h,
				CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
		   "cuMemExportToShareableHandle(POSIX_FD)");
		/* a capability to the memory: no exec'd program inherits it (the driver does not promise) */
		fcntl(f, F_SETFD, FD_CLOEXEC);
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

void map_destroy(struct nvb_gpu_map *m)
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
	if (m->hs || m->ipc_base) {
		range_unmap(m);
	} else if (m->grp) {
		vagroup_unmap(m);
	} else {
		g->cu.cuMemUnmap(m->ptr, m->size);
		g->cu.cuMemAddressFree(m->ptr, m->size);
		g->cu.cuMemRelease(m->h);
	}
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

#define DEV_ANY	(-2)

/*
 * The cached mapping of entry id of registry reg (NVB_GPU_REG_ANY: of any)
 * that device dev can use (-1: every device must have access; DEV_ANY:
 * whatever its access).
 */
static struct nvb_gpu_map *cache_find(struct nvb_gpu *g, uint64_t reg, uint64_t id, int dev)
{
	struct nvb_gpu_map *m;

	for (m = g->maps; m; m = m->next)
		if (m->cached && m->id == id && (m->reg == reg || reg == NVB_GPU_REG_ANY) &&
		    (dev == DEV_ANY || m->local_dev < 0 || m->local_dev == dev))
			return m;
	return NULL;
}

/*
 * Was entry id of registry reg revoked lately (g->lock held)?  Only
 * handles' registries: their ids are never reused (a registry is one
 * connection), while the caller's own (registry 0) may be.
 */
static int revoked_lately(struct nvb_gpu *g, uint64_t reg, uint64_t id)
{
	unsigned int i;

	if (reg == 0)
		return 0;
	for (i = 0; i < NVB_GPU_REVOKED_RING; i++)
		if (g->revoked[i].id == id && g->revoked[i].reg == reg)
			return 1;
	return 0;
}

void map_insert(struct nvb_gpu *g, struct nvb_gpu_map *m, struct nvb_gpu_map **out)
{
	pthread_mutex_lock(&g->lock);
	if (m->id && revoked_lately(g, m->reg, m->id)) {
		/* revoked while this import ran: the caller gets it revoked, the cache never */
		__atomic_store_n(&m->revoked, 1, __ATOMIC_RELEASE);
	} else if (m->id) {
		struct nvb_gpu_map *old = cache_find(g, m->reg, m->id, m->local_dev);

		if (old) {	/* lost a race with another thread: use its mapping */
			old->refs++;
			pthread_mutex_unlock(&g->lock);
			map_destroy(m);
			*out = old;
			return;
		}
		m->cached = 1;
	}
	m->next = g->maps;
	g->maps = m;
	pthread_mutex_unlock(&g->lock);
	*out = m;
}

int nvb_gpu_import_cached_in(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id, uint32_t flags,
			     struct nvb_gpu_map **out)
{
	struct nvb_gpu_map *m;
	int dev = -1;

	if (flags & NVB_GPU_IMPORT_LOCAL_ONLY) {
		dev = cur_dev(g);
		if (dev < 0)	/* as the import: device 0 when the thread has no context */
			dev = 0;
	}
	pthread_mutex_lock(&g->lock);
	m = entry_id && reg != NVB_GPU_REG_ANY ? cache_find(g, reg, entry_id, dev) : NULL;
	if (m)
		m->refs++;
	pthread_mutex_unlock(&g->lock);
	*out = m;
	return m ? 0 : -ENOENT;
}

/*
 * The caller's own ids (registry 0): never an entry of a handle's
 * registry; a mapping the current device can use.
 */
int nvb_gpu_import_cached(struct nvb_gpu *g, uint64_t entry_id, struct nvb_gpu_map **out)
{
	return nvb_gpu_import_cached_in(g, 0, entry_id, NVB_GPU_IMPORT_LOCAL_ONLY, out);
}

int nvb_gpu_import_fd(struct nvb_gpu *g, uint64_t entry_id, int fd,
		      const void *blob, size_t blob_len, uint32_t flags,
		      struct nvb_gpu_map **out)
{
	return nvb_gpu_import_fd_in(g, 0, entry_id, fd, blob, blob_len, flags, out);
}

/* The checked struct nvb_gpu_meta of an import's blob (not a range's): 0 or -errno. */
int meta_read(const void *blob, size_t blob_len, struct nvb_gpu_meta *meta)
{
	if (!blob || blob_len < offsetof(struct nvb_gpu_meta, owner_pid))
		return seterr(-EMSGSIZE, "nvb_gpu_import_fd: metadata blob of %zu bytes is too short (need %zu)",
			      blob_len, offsetof(struct nvb_gpu_meta, owner_pid));
	memset(meta, 0, sizeof(*meta));
	memcpy(meta, blob, blob_len < sizeof(*meta) ? blob_len : sizeof(*meta));
	if (meta->magic != NVB_GPU_META_MAGIC)
		return seterr(-EINVAL, "nvb_gpu_import_fd: blob is not nvbridge GPU metadata (magic %#x)",
			      meta->magic);
	if (meta->size > blob_len || meta->alloc_size == 0 || meta->granularity == 0 ||
	    meta->alloc_size % meta->granularity)
		return seterr(-EINVAL, "nvb_gpu_import_fd: inconsistent metadata (size %llu, granularity %llu)",
			      (unsigned long long)meta->alloc_size,
			      (unsigned long long)meta->granularity);
	return 0;
}

int import_handle(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id, int fd,
		  const struct nvb_gpu_meta *meta, uint32_t flags, int cur, struct nvb_gpu_map **out)
{
	struct nvb_gpu_map *m;
	uint64_t t0;
	CUresult r;
	int i, err;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return seterr(-ENOMEM, "nvb_gpu_import_fd: out of memory");
	m->g = g;
	m->reg = reg;
	m->id = entry_id;
	m->refs = 1;
	m->owner_dev = -1;
	m->local_dev = (flags & NVB_GPU_IMPORT_LOCAL_ONLY) ? cur : -1;
	for (i = 0; i < g->ndev; i++)
		if (!memcmp(&g->d[i].uuid, meta->uuid, sizeof(meta->uuid)))
			m->owner_dev = i;

	m->stats.sz = sizeof(m->stats);
	t0 = ns_now();
	r = CUDA_ERROR_NOT_SUPPORTED;
	if ((meta->handle_types & NVB_GPU_HANDLE_FABRIC) && !(flags & NVB_GPU_IMPORT_NO_FABRIC)) {
		r = g->cu.cuMemImportFromShareableHandle(&m->h, (void *)meta->fabric,
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
	m->size = meta->alloc_size;
	m->stats.import_ns = ns_now() - t0;
	*out = m;
	return 0;
}

/*
 * nvb_gpu_import_fd_in's work.  A thread without a context (of this
 * process's devices) gets device 0's for the CUDA calls: *old is then what
 * was current, for the caller to put back.
 */
static int import_fd_ctx(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id, int fd,
			 const void *blob, size_t blob_len, uint32_t flags,
			 struct nvb_gpu_map **out, int *ctx_set, CUcontext *old)
{
	CUmemAccessDesc desc[NVB_GPU_MAX_DEV];
	struct nvb_gpu_meta meta;
	struct nvb_gpu_map *m;
	size_t ndesc, k;
	CUresult r;
	int cur, err;
	uint64_t t0, t1;

	*out = NULL;
	if (flags & ~(NVB_GPU_IMPORT_NO_FABRIC | NVB_GPU_IMPORT_LOCAL_ONLY))
		return seterr(-EINVAL, "nvb_gpu_import_fd: unknown flags %#x", flags);
	if (entry_id && nvb_gpu_import_cached_in(g, reg, entry_id, flags, out) == 0)
		return 0;
	if (blob && blob_len >= sizeof(uint32_t)) {
		uint32_t magic;

		memcpy(&magic, blob, sizeof(magic));
		if (magic == NVB_GPU_RANGE_MAGIC)	/* a registered range */
			return range_import(g, reg, entry_id, &fd, 1, blob, blob_len, flags, out);
	}
	err = meta_read(blob, blob_len, &meta);
	if (err)
		return err;
	cur = cur_dev(g);
	if (cur < 0) {
		g->cu.cuCtxGetCurrent(old);
		g->cu.cuCtxSetCurrent(g->d[0].ctx);
		*ctx_set = 1;
		cur = 0;
	}
	err = import_handle(g, reg, entry_id, fd, &meta, flags, cur, &m);
	if (err)
		return err;
	t0 = ns_now();
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
	access_cur_first(g, cur, desc, ndesc);
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
	map_insert(g, m, out);
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

int nvb_gpu_import_fd_in(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id, int fd,
			 const void *blob, size_t blob_len, uint32_t flags,
			 struct nvb_gpu_map **out)
{
	CUcontext old = NULL;
	int ctx_set = 0, err;

	err = import_fd_ctx(g, reg, entry_id, fd, blob, blob_len, flags, out, &ctx_set, &old);
	if (ctx_set)	/* the caller's context as it was (a cache hit touches none) */
		g->cu.cuCtxSetCurrent(old);
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

/* out->sz bytes at most; out->sz becomes what was filled. */
int nvb_gpu_map_stats_v12(const struct nvb_gpu_map *m, struct nvb_gpu_map_stats *out);
__asm__(".symver nvb_gpu_map_stats_v12, nvb_gpu_map_stats@@LIBNVBRIDGE_1.2");
int nvb_gpu_map_stats_v12(const struct nvb_gpu_map *m, struct nvb_gpu_map_stats *out)
{
	size_t sz;

	if (!m || !out || out->sz < offsetof(struct nvb_gpu_map_stats, import_ns) ||
	    out->sz > NVB_OPTS_MAX)
		return seterr(-EINVAL, "nvb_gpu_map_stats: bad arguments");
	sz = out->sz < sizeof(m->stats) ? out->sz : sizeof(m->stats);
	memcpy(out, &m->stats, sz);
	out->sz = sz;
	return 0;
}

/* The 1.0 layout: uint32_t size, naccess, then the same fields. */
int nvb_gpu_map_stats_v10(const struct nvb_gpu_map *m, void *out);
__asm__(".symver nvb_gpu_map_stats_v10, nvb_gpu_map_stats@LIBNVBRIDGE_1.0");
int nvb_gpu_map_stats_v10(const struct nvb_gpu_map *m, void *out)
{
	const size_t tail = offsetof(struct nvb_gpu_map_stats, import_ns);
	uint32_t size, sz;

	if (!m || !out)
		return seterr(-EINVAL, "nvb_gpu_map_stats: bad arguments");
	memcpy(&size, out, sizeof(size));
	if (size < sizeof(uint32_t) * 2)
		return seterr(-EINVAL, "nvb_gpu_map_stats: bad arguments");
	sz = size < 8 + sizeof(m->stats) - tail ? size : (uint32_t)(8 + sizeof(m->stats) - tail);
	memcpy((char *)out + 4, &m->stats.naccess, sizeof(uint32_t));
	memcpy((char *)out + 8, (const char *)&m->stats + tail, sz - 8);
	memcpy(out, &sz, sizeof(sz));
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

/* One cached mapping of (reg, entry_id) revoked: 1, or 0 when none is left. */
static int revoke_one(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id)
{
	struct nvb_gpu_map *m;
	int destroy = 0, k, n = 0;
	struct {
		int dev;
		CUdeviceptr addr;
	} ab[NVB_MAX_ABORT_FLAGS];

	pthread_mutex_lock(&g->lock);
	m = cache_find(g, reg, entry_id, DEV_ANY);
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

int nvb_gpu_revoke_in(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id)
{
	int n = 0;

	if (!entry_id)
		return 0;
	/*
	 * For an import of it still in flight (map_insert).  Not nvb_gpu_revoke's
	 * every-registry revocations: which registry's entry is gone is not
	 * known, and another registry's live entry of that id would come back
	 * revoked from every import for a while.
	 */
	if (reg != 0 && reg != NVB_GPU_REG_ANY) {
		pthread_mutex_lock(&g->lock);
		g->revoked[g->revoked_next % NVB_GPU_REVOKED_RING].reg = reg;
		g->revoked[g->revoked_next % NVB_GPU_REVOKED_RING].id = entry_id;
		g->revoked_next++;
		pthread_mutex_unlock(&g->lock);
	}
	while (revoke_one(g, reg, entry_id))	/* several only for NVB_GPU_REG_ANY */
		n++;
	/*
	 * A handle's revocation also reaches the caller's id of that number:
	 * a 1.0 program imports what it fetched through h with
	 * nvb_gpu_import_fd(entry id) and relies on nvb_gpu_poll_events(g, h).
	 * Imports never cross the spaces; a revocation may, as revoking a
	 * coincident id of the caller's is the safe error and missing one
	 * leaves a revoked entry in the cache.
	 */
	if (reg != NVB_GPU_REG_ANY && reg != 0)
		while (revoke_one(g, 0, entry_id))
			n++;
	nvb_gpu_names_forget(g, reg, entry_id);
	return n;
}

/* Not told which registry: entry_id of every one (with several, nvb_gpu_poll_events is exact). */
int nvb_gpu_revoke(struct nvb_gpu *g, uint64_t entry_id)
{
	return nvb_gpu_revoke_in(g, NVB_GPU_REG_ANY, entry_id) > 0;
}

void nvb_gpu_drop_closed(struct nvb_gpu *g, uint64_t closes, bool (*live)(uint64_t serial))
{
	struct nvb_gpu_map *m, **pp, *dead = NULL;

	if (__atomic_load_n(&g->closes_seen, __ATOMIC_ACQUIRE) == closes)
		return;	/* the cache-hit path: one load */
	pthread_mutex_lock(&g->lock);
	__atomic_store_n(&g->closes_seen, closes, __ATOMIC_RELEASE);
	for (pp = &g->maps; (m = *pp);) {
		/* registry 0 is the caller's; any other is a handle's serial */
		if (m->cached && m->reg != 0 && !live(m->reg)) {
			m->cached = 0;	/* still referenced: unmapped with its last reference */
			if (m->refs == 0) {
				*pp = m->next;
				m->next = dead;
				dead = m;
				continue;
			}
		}
		pp = &m->next;
	}
	pthread_mutex_unlock(&g->lock);
	while (dead) {
		m = dead;
		dead = m->next;
		map_destroy(m);
	}
	nvb_gpu_names_drop(g, live);
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
		if (m->id)
			nvb_gpu_names_forget(g, m->reg, m->id);
		map_destroy(m);
	}
	return n;
}

/* ---- the persistent proxy ---- */

volatile uint32_t *map_abort_word(struct nvb_gpu *g, struct nvb_gpu_map *m)
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
