// SPDX-License-Identifier: MIT
/*
 * nvb_gpu_register(): make device memory the application allocated itself
 * publishable.  Finds what backs [ptr, ptr + len): the VMM allocations
 * mapped there (one or several back to back), or the cuMemAlloc allocation
 * (a legacy IPC handle), exports them, and describes the range in the
 * metadata (struct nvb_gpu_meta_range; the importer's half is range.c).
 * Nothing here maps, unmaps or frees the application's memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu_priv.h"

#define REG_FLAGS	(NVB_GPU_REGISTER_NO_LEGACY | NVB_GPU_REGISTER_NO_FABRIC)
#define VMM_TYPES	(CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR | CU_MEM_HANDLE_TYPE_FABRIC)

/*
 * One pointer attribute.  Booleans are written as one byte by some drivers
 * and as an int by others: the zeroed 8-byte buffer reads right either way.
 */
static CUresult attr(struct nvb_gpu *g, int a, CUdeviceptr p, uint64_t *v)
{
	unsigned char buf[8] = { 0 };
	CUresult r = g->cu.cuPointerGetAttribute(buf, a, p);

	*v = 0;
	if (r == CUDA_SUCCESS) {
		if (a == CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR || a == CU_POINTER_ATTRIBUTE_MAPPING_SIZE)
			memcpy(v, buf, 8);
		else if (a == CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL || a == CU_POINTER_ATTRIBUTE_MEMORY_TYPE) {
			uint32_t x;

			memcpy(&x, buf, 4);
			*v = x;
		} else {
			*v = buf[0] | buf[1] | buf[2] | buf[3];
		}
	}
	return r;
}

/* Releases what a (partly) built registration holds; the memory stays. */
static void reg_release(struct nvb_gpu *g, struct nvb_gpu_reg *reg)
{
	uint32_t i;

	for (i = 0; i < reg->n; i++) {
		if (reg->c[i].fd >= 0)
			close(reg->c[i].fd);
		g->cu.cuMemRelease(reg->c[i].h);
	}
	explicit_bzero(&reg->ipc, sizeof(reg->ipc));	/* a bearer token (legacy IPC) */
	free(reg);
}

void reg_free(struct nvb_gpu_buf *b)
{
	reg_release(b->g, b->reg);
	free(b);
}

/*
 * The allocation behind p, the i-th of the range: retained handle, the
 * mapping it belongs to, exportable types, and its fd (exported now, so an
 * allocation that cannot be exported fails the registration, not a later
 * publish).  gran grows to the coarsest minimum granularity seen.
 */
static int chunk_find(struct nvb_gpu *g, struct nvb_gpu_reg *reg, CUdeviceptr p, uint32_t flags,
		      int *devid, size_t *gran)
{
	struct nvb_gpu_chunk *c = &reg->c[reg->n];
	CUmemAllocationProp prop;
	uint64_t base, size;
	size_t mg = 0;
	CUresult r;

	if (g->cu.cuMemRetainAllocationHandle(&c->h, (void *)(uintptr_t)p) != CUDA_SUCCESS) {
		uint64_t t;

		if (attr(g, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p, &t) != CUDA_SUCCESS)
			return seterr(-EFAULT, "nvb_gpu_register: the range runs into unmapped addresses at %#llx",
				      (unsigned long long)p);
		return seterr(-EOPNOTSUPP, "nvb_gpu_register: the range mixes VMM memory with other memory at %#llx",
			      (unsigned long long)p);
	}
	c->fd = -1;
	reg->n++;		/* from here reg_release() gives the handle back */
	if (attr(g, CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR, p, &base) != CUDA_SUCCESS ||
	    attr(g, CU_POINTER_ATTRIBUTE_MAPPING_SIZE, p, &size) != CUDA_SUCCESS ||
	    base > p || p - base >= size)
		return seterr(-EFAULT, "nvb_gpu_register: no consistent VMM mapping at %#llx",
			      (unsigned long long)p);
	/* back to back: the next allocation starts where the previous ended */
	if (reg->n > 1 && base != p)
		return seterr(-EFAULT, "nvb_gpu_register: the mapping at %#llx does not start where the previous one ends",
			      (unsigned long long)p);
	c->base = base;
	c->size = size;
	r = g->cu.cuMemGetAllocationPropertiesFromHandle(&prop, c->h);
	if (r != CUDA_SUCCESS)
		return cuerr(g, r, "cuMemGetAllocationPropertiesFromHandle");
	if (reg->n == 1)
		*devid = prop.location.id;
	else if (prop.location.id != *devid)
		return seterr(-EOPNOTSUPP, "nvb_gpu_register: the range spans devices %d and %d",
			      *devid, prop.location.id);
	if (!(prop.requestedHandleTypes & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR))
		return seterr(-EOPNOTSUPP, "nvb_gpu_register: the allocation at %#llx was created without "
			      "CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR (requestedHandleTypes %#x): it cannot be exported",
			      (unsigned long long)base, (unsigned)prop.requestedHandleTypes);
	r = g->cu.cuMemGetAllocationGranularity(&mg, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
	if (r != CUDA_SUCCESS)
		return cuerr(g, r, "cuMemGetAllocationGranularity");
	if (mg > *gran)
		*gran = mg;
	/* an nvb_gpu_alloc() buffer of this process must never be cached for reuse now */
	alloc_mark_exported(base);
	r = g->cu.cuMemExportToShareableHandle(&c->fd, c->h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
	if (r != CUDA_SUCCESS) {
		c->fd = -1;
		return cuerr(g, r, "cuMemExportToShareableHandle(POSIX_FD)");
	}
	fcntl(c->fd, F_SETFD, FD_CLOEXEC);	/* as nvb_gpu_export's: not for exec'd programs */
	c->types = NVB_GPU_HANDLE_POSIX_FD;
	if ((prop.requestedHandleTypes & CU_MEM_HANDLE_TYPE_FABRIC) &&
	    !(flags & NVB_GPU_REGISTER_NO_FABRIC) &&
	    g->cu.cuMemExportToShareableHandle(&c->fabric, c->h, CU_MEM_HANDLE_TYPE_FABRIC, 0) == CUDA_SUCCESS)
		c->types |= NVB_GPU_HANDLE_FABRIC;
	return 0;
}

/* Every allocation from ptr to end, in address order. */
static int vmm_walk(struct nvb_gpu *g, struct nvb_gpu_reg *reg, CUdeviceptr ptr, CUdeviceptr end,
		    uint32_t flags, int *devid, size_t *gran)
{
	CUdeviceptr p = ptr;
	int err;

	while (p < end) {
		if (reg->n == NVB_GPU_REGISTER_MAX_CHUNKS)
			return seterr(-E2BIG, "nvb_gpu_register: the range spans more than %d allocations",
				      NVB_GPU_REGISTER_MAX_CHUNKS);
		err = chunk_find(g, reg, p, flags, devid, gran);
		if (err)
			return err;
		p = reg->c[reg->n - 1].base + reg->c[reg->n - 1].size;
	}
	for (uint32_t i = 0; i < reg->n; i++)
		if (reg->c[i].size % *gran || reg->c[i].base % *gran)
			return seterr(-EOPNOTSUPP, "nvb_gpu_register: mapping %u (%#llx, %zu bytes) is not aligned "
				      "to the allocation granularity %zu", i,
				      (unsigned long long)reg->c[i].base, reg->c[i].size, *gran);
	reg->offset = ptr - reg->c[0].base;
	return 0;
}

/* cuMemAlloc memory: the allocation must hold the whole range. */
static int legacy_find(struct nvb_gpu *g, struct nvb_gpu_reg *reg, CUdeviceptr ptr, size_t len,
		       uint32_t flags)
{
	CUdeviceptr base = 0;
	size_t size = 0;
	uint64_t ok;
	CUresult r;

	if (attr(g, CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, ptr, &ok) != CUDA_SUCCESS || !ok)
		return seterr(-EOPNOTSUPP, "nvb_gpu_register: %#llx is device memory that is neither VMM "
			      "(cuMemCreate) nor legacy-IPC capable (a stream-ordered pool allocation?)",
			      (unsigned long long)ptr);
	if (flags & NVB_GPU_REGISTER_NO_LEGACY)
		return seterr(-EOPNOTSUPP, "nvb_gpu_register: %#llx is cuMemAlloc/cudaMalloc memory, shareable "
			      "only by a legacy IPC handle, and NVB_GPU_REGISTER_NO_LEGACY was given",
			      (unsigned long long)ptr);
	r = g->cu.cuMemGetAddressRange(&base, &size, ptr);
	if (r != CUDA_SUCCESS)
		return cuerr(g, r, "cuMemGetAddressRange");
	if (ptr < base || ptr - base > size || len > size - (ptr - base))
		return seterr(-EFAULT, "nvb_gpu_register: [%#llx, +%zu) runs past the end of its cudaMalloc "
			      "allocation [%#llx, +%zu)", (unsigned long long)ptr, len,
			      (unsigned long long)base, size);
	r = g->cu.cuIpcGetMemHandle(&reg->ipc, base);
	if (r != CUDA_SUCCESS)
		return cuerr(g, r, "cuIpcGetMemHandle");
	reg->kind = NVB_GPU_KIND_LEGACY_IPC;
	reg->ipc_base = base;
	reg->ipc_size = size;
	reg->offset = ptr - base;
	return 0;
}

/* What kind of memory p is, as an errno for the kinds that cannot be shared. */
static int classify(struct nvb_gpu *g, CUdeviceptr p, int *dev)
{
	uint64_t type, managed, ord;
	int i;

	if (attr(g, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p, &type) != CUDA_SUCCESS)
		return seterr(-EFAULT, "nvb_gpu_register: %#llx is not memory CUDA knows (plain host memory, "
			      "freed, or another process's address)", (unsigned long long)p);
	if (attr(g, CU_POINTER_ATTRIBUTE_IS_MANAGED, p, &managed) == CUDA_SUCCESS && managed)
		return seterr(-EOPNOTSUPP, "nvb_gpu_register: %#llx is managed (cudaMallocManaged) memory, "
			      "which CUDA cannot share between processes", (unsigned long long)p);
	if (type != CU_MEMORYTYPE_DEVICE)
		return seterr(-EOPNOTSUPP, "nvb_gpu_register: %#llx is pinned host memory, not device memory "
			      "(share host memory as a file with nvb_publish)", (unsigned long long)p);
	if (attr(g, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p, &ord) != CUDA_SUCCESS)
		return seterr(-EFAULT, "nvb_gpu_register: no device for %#llx", (unsigned long long)p);
	for (i = 0; i < g->ndev; i++)
		if ((uint64_t)g->d[i].dev == ord) {
			*dev = i;
			return 0;
		}
	return seterr(-ENODEV, "nvb_gpu_register: %#llx is on device %llu, which this handle does not use",
		      (unsigned long long)p, (unsigned long long)ord);
}

int nvb_gpu_register(struct nvb_gpu *g, uint64_t ptr, size_t len, uint32_t flags,
		     struct nvb_gpu_buf **out)
{
	struct nvb_gpu_reg *reg;
	struct nvb_gpu_buf *b;
	CUmemGenericAllocationHandle h;
	CUcontext old = NULL;
	size_t gran = 1;
	int dev = 0, devid = -1, err;

	if (!out)
		return seterr(-EINVAL, "nvb_gpu_register: out is NULL");
	*out = NULL;
	if (!g)
		return seterr(-EINVAL, "nvb_gpu_register: g is NULL");
	if (flags & ~REG_FLAGS)
		return seterr(-EINVAL, "nvb_gpu_register: unknown flags %#x", flags & ~REG_FLAGS);
	if (!ptr)
		return seterr(-EINVAL, "nvb_gpu_register: ptr is 0");
	if (!len)
		return seterr(-EINVAL, "nvb_gpu_register: len is 0");
	if (ptr + len < ptr)
		return seterr(-EOVERFLOW, "nvb_gpu_register: ptr %#llx + len %zu wraps around",
			      (unsigned long long)ptr, len);
	err = classify(g, ptr, &dev);
	if (err)
		return err;
	reg = calloc(1, sizeof(*reg) + NVB_GPU_REGISTER_MAX_CHUNKS * sizeof(reg->c[0]));
	b = calloc(1, sizeof(*b));
	if (!reg || !b) {
		free(reg);
		free(b);
		return seterr(-ENOMEM, "nvb_gpu_register: out of memory");
	}
	/* the owner's context for the calls; the caller's comes back at the end */
	g->cu.cuCtxGetCurrent(&old);
	g->cu.cuCtxSetCurrent(g->d[dev].ctx);
	if (g->cu.cuMemRetainAllocationHandle(&h, (void *)(uintptr_t)ptr) == CUDA_SUCCESS) {
		g->cu.cuMemRelease(h);	/* VMM: vmm_walk retains each allocation itself */
		reg->kind = NVB_GPU_KIND_VMM;
		err = vmm_walk(g, reg, ptr, ptr + len, flags, &devid, &gran);
		if (!err && devid != g->d[dev].dev)
			err = seterr(-EOPNOTSUPP, "nvb_gpu_register: allocation on device %d, pointer on %d",
				     devid, g->d[dev].dev);
	} else {
		err = legacy_find(g, reg, ptr, len, flags);
	}
	g->cu.cuCtxSetCurrent(old);
	if (err) {
		reg_release(g, reg);
		free(b);
		return err;
	}
	if (reg->n) {	/* give back the room of chunks not found */
		struct nvb_gpu_reg *r2 = realloc(reg, sizeof(*reg) + reg->n * sizeof(reg->c[0]));

		if (r2)
			reg = r2;
	}
	b->g = g;
	b->dev = dev;
	b->ptr = ptr;
	b->size = len;
	b->fd = -1;
	b->reg = reg;
	if (reg->kind == NVB_GPU_KIND_VMM) {
		b->gran = gran;
		b->types = NVB_GPU_HANDLE_POSIX_FD | NVB_GPU_HANDLE_FABRIC;
		for (uint32_t i = 0; i < reg->n; i++)
			b->types &= reg->c[i].types;
	} else {
		b->types = NVB_GPU_HANDLE_LEGACY_IPC;
	}
	*out = b;
	return 0;
}

uint32_t nvb_gpu_buf_kind(const struct nvb_gpu_buf *b)
{
	return b->reg ? b->reg->kind : NVB_GPU_KIND_ALLOC;
}

uint32_t nvb_gpu_buf_chunks(const struct nvb_gpu_buf *b)
{
	return b->reg ? b->reg->n : 1;
}

/* Whole single allocation: the 1.0 metadata says it all, and old importers take it. */
static int v1_shaped(const struct nvb_gpu_reg *reg, size_t len)
{
	return reg->kind == NVB_GPU_KIND_VMM && reg->n == 1 && reg->offset == 0 &&
	       reg->c[0].size == len;
}

int reg_export_v1(struct nvb_gpu_buf *b, int *fd, struct nvb_gpu_meta *meta)
{
	const struct nvb_gpu_reg *reg = b->reg;

	if (!v1_shaped(reg, b->size))
		return seterr(-EOPNOTSUPP, "nvb_gpu_export: a registered %s does not fit struct nvb_gpu_meta: "
			      "publish it with nvb_gpu_publish()",
			      reg->kind == NVB_GPU_KIND_LEGACY_IPC ? "cuMemAlloc range (no fd)" :
			      "sub-range or multi-allocation range");
	memset(meta, 0, sizeof(*meta));
	meta->magic = NVB_GPU_META_MAGIC;
	meta->size = sizeof(*meta);
	meta->alloc_size = reg->c[0].size;
	meta->granularity = b->gran;
	meta->handle_types = reg->c[0].types;
	if (reg->c[0].types & NVB_GPU_HANDLE_FABRIC)
		memcpy(meta->fabric, &reg->c[0].fabric, sizeof(meta->fabric));
	memcpy(meta->uuid, &b->g->d[b->dev].uuid, sizeof(meta->uuid));
	meta->owner_pid = (uint32_t)getpid();
	*fd = reg->c[0].fd;
	return 0;
}

/* ---- what nvb_gpu_publish() (gpu_nvb.c) needs ---- */

int nvb_gpu_range_fds(struct nvb_gpu_buf *b, int *fds, unsigned int max)
{
	const struct nvb_gpu_reg *reg = b->reg;
	uint32_t i;

	if (!reg || v1_shaped(reg, b->size))
		return -1;
	for (i = 0; i < reg->n && i < max; i++)
		fds[i] = reg->c[i].fd;
	return (int)reg->n;
}

int nvb_gpu_range_blob(struct nvb_gpu_buf *b, const uint64_t *ids, void **blob, size_t *len)
{
	const struct nvb_gpu_reg *reg = b->reg;
	struct nvb_gpu_meta_range hd;
	unsigned char *p;
	uint32_t i;

	*len = sizeof(hd) + reg->n * sizeof(struct nvb_gpu_meta_chunk);
	p = calloc(1, *len);
	if (!p)
		return seterr(-ENOMEM, "nvb_gpu_publish: out of memory");
	memset(&hd, 0, sizeof(hd));
	hd.magic = NVB_GPU_RANGE_MAGIC;
	hd.size = sizeof(hd);
	hd.kind = reg->kind;
	hd.offset = reg->offset;
	hd.len = b->size;
	hd.chunk_size = sizeof(struct nvb_gpu_meta_chunk);
	memcpy(hd.uuid, &b->g->d[b->dev].uuid, sizeof(hd.uuid));
	hd.owner_pid = (uint32_t)getpid();
	if (reg->kind == NVB_GPU_KIND_LEGACY_IPC) {
		hd.ipc_size = reg->ipc_size;
		memcpy(hd.ipc, &reg->ipc, sizeof(hd.ipc));
	} else {
		hd.granularity = b->gran;
		hd.nchunks = reg->n;
	}
	memcpy(p, &hd, sizeof(hd));
	for (i = 0; i < reg->n; i++) {
		struct nvb_gpu_meta_chunk c;

		memset(&c, 0, sizeof(c));
		c.offset = reg->c[i].base - reg->c[0].base;
		c.size = reg->c[i].size;
		c.entry_id = i && ids ? ids[i] : 0;
		c.handle_types = reg->c[i].types;
		if (reg->c[i].types & NVB_GPU_HANDLE_FABRIC)
			memcpy(c.fabric, &reg->c[i].fabric, sizeof(c.fabric));
		memcpy(p + sizeof(hd) + i * sizeof(c), &c, sizeof(c));
	}
	*blob = p;
	return 0;
}
