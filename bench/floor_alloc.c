// SPDX-License-Identifier: MIT
/*
 * The floor of PyTorch's pluggable-allocator interface, for
 * bench/torch_alloc_bench.py only (built into build/bench, never installed):
 * the least an allocator behind torch.cuda.memory.CUDAPluggableAllocator can
 * do for repeated sizes -- a mutex and a per-size LIFO of freed blocks,
 * cuMemAlloc on a miss, nothing ever released (the process exits).  What
 * PyTorch spends around the two calls is the same for every allocator, so
 * nvbridge's allocator is judged against this in the same run as well as
 * against PyTorch's own caching allocator.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define API __attribute__((visibility("default")))
#define NSLOT 64		/* distinct sizes */
#define DEPTH 64		/* freed blocks kept per size */

struct slot {
	size_t size;
	unsigned int n;
	void *ptr[DEPTH];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot slots[NSLOT];
static int (*mem_alloc)(uint64_t *, size_t);

static struct slot *slot_of(size_t size)
{
	for (int i = 0; i < NSLOT; i++)
		if (slots[i].size == size || !slots[i].size) {
			slots[i].size = size;
			return &slots[i];
		}
	return NULL;
}

API void *floor_malloc(ssize_t size, int device, void *stream)
{
	struct slot *s;
	uint64_t p = 0;
	void *r = NULL;

	(void)device; (void)stream;
	if (size <= 0)
		return NULL;
	pthread_mutex_lock(&lock);
	s = slot_of((size_t)size);
	if (s && s->n)
		r = s->ptr[--s->n];
	pthread_mutex_unlock(&lock);
	if (r)
		return r;
	if (!mem_alloc) {
		void *cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);

		if (!cu)
			cu = dlopen("libcuda.so.1", RTLD_NOW);
		if (!cu)
			return NULL;
		*(void **)&mem_alloc = dlsym(cu, "cuMemAlloc_v2");
		if (!mem_alloc)
			return NULL;
	}
	/* torch made its context current on `device` before calling */
	return mem_alloc(&p, (size_t)size) ? NULL : (void *)(uintptr_t)p;
}

/* Leaks a block only when one size has more than DEPTH freed at once. */
API void floor_free(void *ptr, ssize_t size, int device, void *stream)
{
	struct slot *s;

	(void)device; (void)stream;
	if (!ptr)
		return;
	pthread_mutex_lock(&lock);
	s = slot_of((size_t)size);
	if (s && s->n < DEPTH)
		s->ptr[s->n++] = ptr;
	pthread_mutex_unlock(&lock);
}
