// SPDX-License-Identifier: MIT
/*
 * Which nvb_gpu_alloc() buffers have had their memory exported, whatever
 * struct nvb_gpu exported it (nvb_gpu_buf_exported).  An allocator that
 * caches freed buffers (libnvbridge_torch.so) asks before it hands a
 * buffer out again: an importer keeps what it mapped, so memory that was
 * ever exported must not carry another tenant's data later.
 *
 * Exports of a buffer itself (nvb_gpu_export) mark it directly.  A
 * registration (nvb_gpu_register, possibly through another struct
 * nvb_gpu, e.g. Python's) finds the VMM mappings behind a range; while an
 * nvb_gpu_alloc() buffer is live its reservation [ptr, ptr + size) is its
 * own and holds exactly its allocation, mapped from ptr, so a mapping
 * whose base is a live buffer's ptr is that buffer's memory.  The table
 * holds live buffers only (nvb_gpu_free takes them out), so it never grows
 * past what the process has allocated.  Mapping bases, not allocation
 * handles: CUDA returns the mapping's own handle value from
 * cuMemRetainAllocationHandle, but the address is what every driver (and
 * the stand-in libcuda) answers alike.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include "gpu_priv.h"

#define BUCKETS 1024	/* chained through the buffers: nothing to allocate, nothing to fail */

static struct nvb_gpu_buf *live[BUCKETS];
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;

/* fork(): a child of a thread that held the lock must not inherit it held */
static void fork_prepare(void)
{
	pthread_mutex_lock(&live_lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&live_lock);
}

static void fork_child(void)
{
	pthread_mutex_init(&live_lock, NULL);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_register(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static size_t bucket(CUdeviceptr p)
{
	uint64_t k = (uint64_t)p >> 21;	/* granules are 2 MiB and up */

	k *= 0x9e3779b97f4a7c15ull;
	return (size_t)(k >> 54) & (BUCKETS - 1);
}

void alloc_track(struct nvb_gpu_buf *b)
{
	size_t i = bucket(b->ptr);

	pthread_once(&atfork_once, atfork_register);
	pthread_mutex_lock(&live_lock);
	b->live_next = live[i];
	live[i] = b;
	pthread_mutex_unlock(&live_lock);
}

void alloc_untrack(struct nvb_gpu_buf *b)
{
	struct nvb_gpu_buf **pp;

	pthread_mutex_lock(&live_lock);
	for (pp = &live[bucket(b->ptr)]; *pp; pp = &(*pp)->live_next)
		if (*pp == b) {
			*pp = b->live_next;
			break;
		}
	pthread_mutex_unlock(&live_lock);
}

void alloc_mark_exported(CUdeviceptr base)
{
	struct nvb_gpu_buf *b;

	pthread_mutex_lock(&live_lock);
	for (b = live[bucket(base)]; b; b = b->live_next)
		if (b->ptr == base)
			__atomic_store_n(&b->exported, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&live_lock);
}

int nvb_gpu_buf_exported(const struct nvb_gpu_buf *b)
{
	if (!b)
		return seterr(-EINVAL, "nvb_gpu_buf_exported: b is NULL");
	if (b->reg)	/* a registration exports as it registers */
		return 1;
	return __atomic_load_n(&b->exported, __ATOMIC_ACQUIRE);
}
