/* SPDX-License-Identifier: MIT */
/*
 * libnvbridge_torch.so: a PyTorch pluggable allocator whose memory is
 * exportable CUDA VMM memory (cuMemCreate with POSIX_FD, and FABRIC where
 * the driver allows it), so that a tensor allocated through it can be
 * shared with nvb_gpu_register() / nvbridge.Gpu.register().
 *
 *   torch.cuda.memory.CUDAPluggableAllocator(
 *       "<libdir>/libnvbridge_torch.so", "nvb_torch_malloc", "nvb_torch_free")
 *
 * Each allocation is its own physical allocation (at least one granule,
 * 2 MiB on Hopper), so sharing one tensor never shares its neighbours.
 * Freed blocks are cached per (device, stream, size class) and reused on
 * the same stream without a CUDA call, except blocks that were shared
 * (exported through libnvbridge), which are released; the cache is bounded
 * ($NVB_TORCH_CACHE_LIMIT bytes, default 4 GiB) and trimmed on demand and
 * before an allocation the driver refused for lack of memory.
 * $NVB_TORCH_LIBCUDA names the driver library when libcuda.so.1 is not on
 * the linker's path; $NVB_TORCH_NO_FABRIC skips the FABRIC trial.
 * man nvbridge-torch-alloc(3).
 */
#ifndef NVBRIDGE_TORCH_H
#define NVBRIDGE_TORCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * size bytes on CUDA device `device` (this process's ordinal), for work on
 * `stream` (a CUstream / cudaStream_t).  NULL when size <= 0, the device
 * does not exist, or the driver has no memory left even after the cache
 * was trimmed (PyTorch turns that into an out-of-memory error); the
 * reason is in nvb_torch_last_error().  Leaves the caller's context as it
 * found it.
 */
void *nvb_torch_malloc(ssize_t size, int device, void *stream);
/*
 * Gives ptr back (size, device and stream are those of the allocation, as
 * PyTorch passes them; only ptr is trusted).  The block is cached for the
 * same stream, or released (after the device's work is complete) when the
 * cache is over its limit or its memory was ever exported through
 * libnvbridge (nvb_gpu_buf_exported: a shared block is never reused).  NULL and pointers this allocator did not
 * return are ignored (counted in bad_frees).
 */
void nvb_torch_free(void *ptr, ssize_t size, int device, void *stream);

struct nvb_torch_stats {
	size_t sz;		/* in: sizeof(struct nvb_torch_stats); out: bytes filled */
	uint64_t mallocs;	/* successful nvb_torch_malloc calls */
	uint64_t frees;		/* nvb_torch_free calls that gave a block back */
	uint64_t hits;		/* mallocs served from the cache */
	uint64_t cuda_allocs;	/* physical allocations made (nvb_gpu_alloc) */
	uint64_t cuda_frees;	/* physical allocations released */
	uint64_t failures;	/* mallocs that returned NULL */
	uint64_t bad_frees;	/* frees of pointers not from here */
	uint64_t live_bytes;	/* allocated and not yet freed (size classes) */
	uint64_t cached_bytes;	/* freed, kept for reuse */
	uint64_t cache_limit;	/* bound on cached_bytes */
	uint64_t live_blocks;
	uint64_t cached_blocks;
	uint64_t exported_releases;	/* blocks released, not cached: their memory was shared */
};
/* Fills st up to st->sz bytes.  0, or -EINVAL for a bad sz. */
int nvb_torch_stats(struct nvb_torch_stats *st);
/*
 * Releases cached blocks of `device` (-1: every device), oldest first,
 * until at most `keep` cached bytes remain (0: all).  Waits for the
 * device's work first.  Returns the bytes released.
 */
size_t nvb_torch_trim(int device, size_t keep);
/* Why the calling thread's last nvb_torch_malloc returned NULL. */
const char *nvb_torch_last_error(void);

#ifdef __cplusplus
}
#endif
#endif /* NVBRIDGE_TORCH_H */
