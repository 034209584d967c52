// SPDX-License-Identifier: MIT
/*
 * The importer's half of registered ranges: parse a struct
 * nvb_gpu_meta_range blob (written by another process: every count,
 * offset and size is checked before use, overflow-safe, and a bad blob is
 * -EINVAL / -EMSGSIZE with a message, never a crash), then map the chunks
 * back to back in one reservation, or open the legacy IPC handle.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu_priv.h"

#define CHUNK_TYPES	(NVB_GPU_HANDLE_POSIX_FD | NVB_GPU_HANDLE_FABRIC)
#define CHUNK_SIZE_MAX	4096	/* a stride beyond this is not a newer writer, it is garbage */

struct range {
	struct nvb_gpu_meta_range h;
	struct nvb_gpu_meta_chunk *c;	/* h.nchunks, malloc'd */
};

#define bad(err, ...)	seterr(err, "range metadata: " __VA_ARGS__)

static int check_chunks(struct range *r)
{
	const struct nvb_gpu_meta_range *h = &r->h;
	uint64_t at = 0, end;
	uint32_t i;

	if (!h->granularity || (h->granularity & (h->granularity - 1)))
		return bad(-EINVAL, "granularity %llu is not a power of two",
			   (unsigned long long)h->granularity);
	if (h->ipc_size)
		return bad(-EINVAL, "VMM range with an IPC allocation size");
	for (i = 0; i < h->nchunks; i++) {
		const struct nvb_gpu_meta_chunk *c = &r->c[i];

		if (c->offset != at)	/* overlapping, or a hole in the range */
			return bad(-EINVAL, "chunk %u at offset %llu, expected %llu", i,
				   (unsigned long long)c->offset, (unsigned long long)at);
		if (!c->size || c->size % h->granularity)
			return bad(-EINVAL, "chunk %u size %llu is not a positive multiple of %llu", i,
				   (unsigned long long)c->size, (unsigned long long)h->granularity);
		if (__builtin_add_overflow(at, c->size, &at))
			return bad(-EINVAL, "chunk %u ends past the address space", i);
		if (!(c->handle_types & NVB_GPU_HANDLE_POSIX_FD) || (c->handle_types & ~CHUNK_TYPES))
			return bad(-EINVAL, "chunk %u handle types %#x", i, c->handle_types);
		if (c->flags)
			return bad(-EINVAL, "chunk %u flags %#x", i, c->flags);
		if (i == 0 && c->entry_id)	/* chunk 0 is the entry itself */
			return bad(-EINVAL, "chunk 0 names entry %llu", (unsigned long long)c->entry_id);
	}
	/* the range starts in the first chunk and ends in the last: none is unused */
	if (h->offset >= r->c[0].size)
		return bad(-EINVAL, "range offset %llu is past the first chunk (%llu bytes)",
			   (unsigned long long)h->offset, (unsigned long long)r->c[0].size);
	if (__builtin_add_overflow(h->offset, h->len, &end) || end > at)
		return bad(-EINVAL, "range [%llu, +%llu) runs past the chunks (%llu bytes)",
			   (unsigned long long)h->offset, (unsigned long long)h->len,
			   (unsigned long long)at);
	if (end <= at - r->c[h->nchunks - 1].size)
		return bad(-EINVAL, "range ends before the last chunk");
	return 0;
}

/* Parses and checks blob; r->c is malloc'd (free it) when it returns 0. */
static int range_parse(const void *blob, size_t len, struct range *r)
{
	struct nvb_gpu_meta_range *h = &r->h;
	uint64_t need;
	uint32_t i;
	int err;

	memset(r, 0, sizeof(*r));
	if (!blob || len < sizeof(*h))
		return bad(-EMSGSIZE, "%zu bytes, the header alone is %zu", blob ? len : 0, sizeof(*h));
	memcpy(h, blob, sizeof(*h));
	if (h->magic != NVB_GPU_RANGE_MAGIC)
		return bad(-EINVAL, "magic %#x", h->magic);
	if (h->size < sizeof(*h) || h->size % 8)
		return bad(-EINVAL, "header size %u (this library's is %zu)", h->size, sizeof(*h));
	if (h->size > len)
		return bad(-EMSGSIZE, "header of %u bytes in a %zu-byte blob", h->size, len);
	if (h->flags)
		return bad(-EINVAL, "flags %#x", h->flags);
	if (!h->len)
		return bad(-EINVAL, "empty range");
	if (h->kind == NVB_GPU_KIND_LEGACY_IPC) {
		uint64_t end;

		if (h->nchunks)
			return bad(-EINVAL, "legacy IPC range with %u chunks", h->nchunks);
		if (__builtin_add_overflow(h->offset, h->len, &end) || end > h->ipc_size)
			return bad(-EINVAL, "range [%llu, +%llu) outside the %llu-byte allocation",
				   (unsigned long long)h->offset, (unsigned long long)h->len,
				   (unsigned long long)h->ipc_size);
		return 0;
	}
	if (h->kind != NVB_GPU_KIND_VMM)
		return bad(-EINVAL, "unknown kind %u", h->kind);
	if (!h->nchunks || h->nchunks > NVB_GPU_REGISTER_MAX_CHUNKS)
		return bad(-EINVAL, "%u chunks (1..%d)", h->nchunks, NVB_GPU_REGISTER_MAX_CHUNKS);
	if (h->chunk_size < sizeof(struct nvb_gpu_meta_chunk) || h->chunk_size > CHUNK_SIZE_MAX ||
	    h->chunk_size % 8)
		return bad(-EINVAL, "chunk record size %u", h->chunk_size);
	/* bounded above: no overflow */
	need = (uint64_t)h->size + (uint64_t)h->nchunks * h->chunk_size;
	if (need > len)
		return bad(-EMSGSIZE, "%u chunks need %llu bytes, the blob has %zu", h->nchunks,
			   (unsigned long long)need, len);
	r->c = calloc(h->nchunks, sizeof(*r->c));
	if (!r->c)
		return seterr(-ENOMEM, "range metadata: out of memory");
	for (i = 0; i < h->nchunks; i++)
		memcpy(&r->c[i], (const unsigned char *)blob + h->size + (size_t)i * h->chunk_size,
		       sizeof(r->c[i]));
	err = check_chunks(r);
	if (err) {
		free(r->c);
		r->c = NULL;
	}
	return err;
}

int nvb_gpu_range_ids(const void *blob, size_t len, uint64_t *ids, unsigned int max)
{
	struct range r;
	uint32_t magic, i;
	int err;

	if (!blob || len < sizeof(magic))
		return 0;
	memcpy(&magic, blob, sizeof(magic));
	if (magic != NVB_GPU_RANGE_MAGIC)
		return 0;
	err = range_parse(blob, len, &r);
	if (err)
		return err;
	for (i = 0; i < r.h.nchunks && i < max; i++)
		ids[i] = r.c[i].entry_id;
	free(r.c);
	return (int)r.h.nchunks;
}

int nvb_gpu_import_fds(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id, const int *fds, unsigned int nfds,
		       const void *blob, size_t blob_len, uint32_t flags, struct nvb_gpu_map **out)
{
	*out = NULL;
	if (entry_id && nvb_gpu_import_cached_in(g, reg, entry_id, flags, out) == 0)
		return 0;
	return range_import(g, reg, entry_id, fds, nfds, blob, blob_len, flags, out);
}

/*
 * Opens handle in device dev's context (the current one), or takes another
 * reference on it if this process has it open there.
 */
static CUresult ipc_open(struct nvb_gpu *g, const CUipcMemHandle *handle, int dev, CUdeviceptr *base)
{
	struct nvb_gpu_ipc *o;
	CUresult res;

	pthread_mutex_lock(&g->lock);	/* held across the open: two threads must not both open it */
	for (o = g->ipcs; o; o = o->next)
		if (o->dev == dev && !memcmp(&o->handle, handle, sizeof(*handle))) {
			o->refs++;
			*base = o->base;
			pthread_mutex_unlock(&g->lock);
			return CUDA_SUCCESS;
		}
	o = calloc(1, sizeof(*o));
	if (!o) {
		pthread_mutex_unlock(&g->lock);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	res = g->cu.cuIpcOpenMemHandle(&o->base, *handle, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
	if (res == CUDA_SUCCESS) {
		o->handle = *handle;
		o->dev = dev;
		o->refs = 1;
		o->next = g->ipcs;
		g->ipcs = o;
		*base = o->base;
	} else {
		free(o);
	}
	pthread_mutex_unlock(&g->lock);
	return res;
}

/* Drops a reference; the last one closes the handle, in the context that opened it. */
static void ipc_close(struct nvb_gpu *g, CUdeviceptr base)
{
	struct nvb_gpu_ipc *o, **pp;
	CUcontext old;

	pthread_mutex_lock(&g->lock);
	for (pp = &g->ipcs; (o = *pp); pp = &o->next)
		if (o->base == base) {
			if (--o->refs == 0)
				*pp = o->next;
			else
				o = NULL;
			break;
		}
	pthread_mutex_unlock(&g->lock);
	if (o) {
		old = ctx_push(g, o->dev);
		g->cu.cuIpcCloseMemHandle(base);
		ctx_pop(g, old);
		/* a bearer token: not left for the next malloc (or a core dump) to find */
		explicit_bzero(&o->handle, sizeof(o->handle));
		free(o);
	}
}

/* Unmaps (one cuMemUnmap per cuMemMap, as CUDA wants), frees the reservation, releases. */
void range_unmap(struct nvb_gpu_map *m)
{
	struct nvb_gpu *g = m->g;
	uint32_t i;

	if (m->ipc_base)
		ipc_close(g, m->ipc_base);
	for (i = 0; i < m->nh; i++)
		if (m->hs[i].mapped)
			g->cu.cuMemUnmap(m->rbase + m->hs[i].off, m->hs[i].size);
	if (m->rbase)
		g->cu.cuMemAddressFree(m->rbase, m->rsize);
	for (i = 0; i < m->nh; i++)
		g->cu.cuMemRelease(m->hs[i].h);
	free(m->hs);
}

static int import_legacy(struct nvb_gpu *g, struct nvb_gpu_map *m, const struct range *r)
{
	CUipcMemHandle ipc;
	CUdeviceptr base = 0, abase = 0;
	size_t asize = 0;
	CUresult res;

	if (m->owner_dev < 0)
		return seterr(-ENODEV, "the legacy IPC allocation's GPU is not visible to this process");
	memcpy(&ipc, r->h.ipc, sizeof(ipc));
	res = ipc_open(g, &ipc, m->owner_dev, &base);
	if (res != CUDA_SUCCESS)
		return cuerr(g, res, "cuIpcOpenMemHandle");
	m->ipc_base = base;
	/*
	 * The handle is the truth, not the blob: the range must lie inside what
	 * opened.  Not knowing what opened is a failure too: trusting ipc_size
	 * would hand out a mapping that runs past CUDA's.
	 */
	res = g->cu.cuMemGetAddressRange(&abase, &asize, base);
	if (res != CUDA_SUCCESS)
		return cuerr(g, res, "cuMemGetAddressRange (of the opened IPC handle)");
	if (abase != base || r->h.offset + r->h.len > asize)
		return seterr(-EINVAL, "range metadata: [%llu, +%llu) outside the %zu bytes the IPC handle opened",
			      (unsigned long long)r->h.offset, (unsigned long long)r->h.len, asize);
	m->ptr = base + r->h.offset;
	m->size = r->h.len;
	m->type = NVB_GPU_HANDLE_LEGACY_IPC;
	return 0;
}

/* Imports chunk i's handle: its fabric handle when allowed and it imports, else fd. */
static int import_chunk(struct nvb_gpu *g, struct nvb_gpu_map *m, const struct nvb_gpu_meta_chunk *c,
			int fd, uint32_t flags, uint32_t i)
{
	CUresult res = CUDA_ERROR_NOT_SUPPORTED;

	if ((c->handle_types & NVB_GPU_HANDLE_FABRIC) && !(flags & NVB_GPU_IMPORT_NO_FABRIC)) {
		res = g->cu.cuMemImportFromShareableHandle(&m->hs[i].h, (void *)c->fabric,
							   CU_MEM_HANDLE_TYPE_FABRIC);
		if (res == CUDA_SUCCESS && i == 0)
			m->type = NVB_GPU_HANDLE_FABRIC;
	}
	if (res != CUDA_SUCCESS) {
		if (fd < 0)
			return seterr(-EBADF, "chunk %u: no fd and no importable fabric handle", i);
		res = g->cu.cuMemImportFromShareableHandle(&m->hs[i].h, (void *)(uintptr_t)fd,
							   CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
		if (res != CUDA_SUCCESS)
			return cuerr(g, res, "cuMemImportFromShareableHandle(POSIX_FD)");
		if (i == 0)
			m->type = NVB_GPU_HANDLE_POSIX_FD;
	}
	m->hs[i].off = c->offset;
	m->hs[i].size = c->size;
	m->nh = i + 1;
	return 0;
}

static int import_vmm(struct nvb_gpu *g, struct nvb_gpu_map *m, const struct range *r,
		      const int *fds, uint32_t flags, int cur)
{
	CUmemAccessDesc desc[NVB_GPU_MAX_DEV];
	const struct nvb_gpu_meta_chunk *last = &r->c[r->h.nchunks - 1];
	uint64_t t0 = ns_now();
	size_t ndesc, k;
	CUresult res;
	uint32_t i;
	int err;

	m->hs = calloc(r->h.nchunks, sizeof(*m->hs));
	if (!m->hs)
		return seterr(-ENOMEM, "out of memory");
	for (i = 0; i < r->h.nchunks; i++) {
		err = import_chunk(g, m, &r->c[i], fds[i], flags, i);
		if (err)
			return err;
	}
	m->stats.import_ns = ns_now() - t0;
	t0 = ns_now();
	m->rsize = last->offset + last->size;
	res = g->cu.cuMemAddressReserve(&m->rbase, m->rsize, r->h.granularity, 0, 0);
	if (res != CUDA_SUCCESS) {
		m->rbase = 0;
		return cuerr(g, res, "cuMemAddressReserve");
	}
	m->stats.reserve_ns = ns_now() - t0;
	t0 = ns_now();
	for (i = 0; i < r->h.nchunks; i++) {
		res = g->cu.cuMemMap(m->rbase + r->c[i].offset, r->c[i].size, 0, m->hs[i].h, 0);
		if (res != CUDA_SUCCESS)	/* a size larger than the allocation lands here */
			return cuerr(g, res, "cuMemMap (does the chunk size match the allocation?)");
		m->hs[i].mapped = 1;
	}
	m->stats.map_ns = ns_now() - t0;
	ndesc = access_descs(g, m->owner_dev, (flags & NVB_GPU_IMPORT_LOCAL_ONLY) ? cur : -1, desc);
	if (!ndesc)
		return seterr(-ENODEV, "no GPU in this process can reach the allocation's device");
	for (k = 0; k < ndesc; k++) {
		t0 = ns_now();
		res = g->cu.cuMemSetAccess(m->rbase, m->rsize, &desc[k], 1);
		if (res != CUDA_SUCCESS)
			return cuerr(g, res, "cuMemSetAccess");
		if (k < 4) {
			m->stats.access_ns[k] = ns_now() - t0;
			m->stats.access_dev[k] = desc[k].location.id;
			m->stats.naccess = (uint32_t)k + 1;
		}
	}
	m->ptr = m->rbase + r->h.offset;
	m->size = r->h.len;
	return 0;
}


int range_import(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id, const int *fds, unsigned int nfds,
		 const void *blob, size_t blob_len, uint32_t flags, struct nvb_gpu_map **out)
{
	struct nvb_gpu_map *m;
	struct range r;
	CUcontext old = NULL;
	int i, cur, err;

	*out = NULL;
	if (flags & ~(NVB_GPU_IMPORT_NO_FABRIC | NVB_GPU_IMPORT_LOCAL_ONLY))
		return seterr(-EINVAL, "nvb_gpu_import: unknown flags %#x", flags);
	err = range_parse(blob, blob_len, &r);
	if (err)
		return err;
	if (r.h.kind == NVB_GPU_KIND_LEGACY_IPC && nfds && fds[0] >= 0)
		err = bad(-EINVAL, "a legacy IPC range came with a file descriptor");
	else if (r.h.kind == NVB_GPU_KIND_VMM && r.h.nchunks > nfds)
		err = seterr(-EOPNOTSUPP, "the range spans %u allocations: nvb_gpu_import() fetches their "
			     "entries, nvb_gpu_import_fd() takes one", r.h.nchunks);
	if (!err && !(m = calloc(1, sizeof(*m))))
		err = seterr(-ENOMEM, "nvb_gpu_import: out of memory");
	if (err) {
		free(r.c);
		return err;
	}
	m->g = g;
	m->reg = reg;
	m->id = entry_id;
	m->refs = 1;
	m->owner_dev = -1;
	m->stats.sz = sizeof(m->stats);
	for (i = 0; i < g->ndev; i++)
		if (!memcmp(&g->d[i].uuid, r.h.uuid, sizeof(r.h.uuid)))
			m->owner_dev = i;
	g->cu.cuCtxGetCurrent(&old);
	cur = cur_dev(g);
	if (cur < 0)
		cur = 0;
	/* legacy IPC: CUDA enables peer access as devices use it; VMM: as import_vmm grants */
	m->local_dev = (flags & NVB_GPU_IMPORT_LOCAL_ONLY) && r.h.kind == NVB_GPU_KIND_VMM ? cur : -1;
	/* IPC handles open in the owner's context; VMM calls take the current one */
	g->cu.cuCtxSetCurrent(g->d[m->owner_dev >= 0 ? m->owner_dev : cur].ctx);
	if (r.h.kind == NVB_GPU_KIND_LEGACY_IPC)
		err = import_legacy(g, m, &r);
	else
		err = import_vmm(g, m, &r, fds, flags, cur);
	if (err)	/* range_unmap undoes what got done, in the owner's context */
		range_unmap(m);
	g->cu.cuCtxSetCurrent(old);
	free(r.c);
	if (err) {
		free(m);
		return err;
	}
	map_insert(g, m, out);
	return 0;
}
