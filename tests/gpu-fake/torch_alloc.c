// SPDX-License-Identifier: MIT
/*
 * libnvbridge_torch.so (alloc/) against the stand-in libcuda: loaded with
 * dlopen + dlsym by name, as torch.cuda.memory.CUDAPluggableAllocator
 * loads it, and called as PyTorch calls it.  Each case runs in its own
 * process, so each starts with an empty allocator (and its own
 * $NVB_TORCH_CACHE_LIMIT).  Handles of the fake are memfds: a leaked
 * handle is a leaked fd, a leaked VA reservation a leaked mapping.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <sys/resource.h>

#include "fake.h"
#include "cuda_api.h"
#include "../../alloc/nvbridge_torch.h"

#define MiB (1UL << 20)

static void *(*t_malloc)(ssize_t, int, void *);
static void (*t_free)(void *, ssize_t, int, void *);
static int (*t_stats)(struct nvb_torch_stats *);
static size_t (*t_trim)(int, size_t);
static const char *(*t_err)(void);
static void *alloc_lib;

#define S1 ((void *)(uintptr_t)0x5100)	/* two "streams" */
#define S2 ((void *)(uintptr_t)0x5200)

static int load(void)
{
	alloc_lib = dlopen("libnvbridge_torch.so", RTLD_NOW | RTLD_LOCAL);
	if (!alloc_lib) {
		printf("    dlopen: %s\n", dlerror());
		return -1;
	}
	*(void **)&t_malloc = dlsym(alloc_lib, "nvb_torch_malloc");
	*(void **)&t_free = dlsym(alloc_lib, "nvb_torch_free");
	*(void **)&t_stats = dlsym(alloc_lib, "nvb_torch_stats");
	*(void **)&t_trim = dlsym(alloc_lib, "nvb_torch_trim");
	*(void **)&t_err = dlsym(alloc_lib, "nvb_torch_last_error");
	return t_malloc && t_free && t_stats && t_trim && t_err ? 0 : -1;
}

static struct nvb_torch_stats stats(void)
{
	struct nvb_torch_stats s;

	memset(&s, 0xa5, sizeof(s));
	s.sz = sizeof(s);
	if (t_stats(&s))
		abort();
	return s;
}

static int maps_count(void)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "re");
	int n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n++;
	fclose(f);
	return n;
}

static int t_exports_only_entry_points(void)
{
	CHECK(load() == 0, "entry points missing");
	CHECK(dlsym(alloc_lib, "nvb_cuda_load") == NULL, "internal symbol exported");
	CHECK(dlsym(alloc_lib, "size_class") == NULL, "internal symbol exported");
	CHECK(dlvsym(alloc_lib, "nvb_torch_malloc", "NVBRIDGE_TORCH_1.0") != NULL, "version node");
	return 0;
}

/* Size classes: whole granules (2 MiB in the fake), then 8 per power of two. */
static int t_sizes_and_granularity(void)
{
	static const struct { ssize_t req; uint64_t cls; } cases[] = {
		{ 1, 2 * MiB }, { 2 * MiB, 2 * MiB }, { 2 * MiB + 1, 4 * MiB },
		{ 32 * MiB, 32 * MiB }, { 32 * MiB + 1, 36 * MiB }, { 100 * MiB, 104 * MiB },
		{ 129 * MiB, 144 * MiB },
	};
	CHECK(load() == 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned char *p = t_malloc(cases[i].req, 0, S1), probe[4096];
		struct nvb_torch_stats s = stats();

		CHECK(p != NULL, "%zd bytes: %s", cases[i].req, t_err());
		EXPECT(s.live_bytes, cases[i].cls);
		EXPECT(s.live_blocks, 1);
		/* every byte of the class is memory: random data at both ends */
		fake_random(probe, sizeof(probe));
		memcpy(p, probe, sizeof(probe));
		memcpy(p + cases[i].cls - sizeof(probe), probe, sizeof(probe));
		CHECK(!memcmp(p + cases[i].cls - sizeof(probe), probe, sizeof(probe)));
		t_free(p, cases[i].req, 0, S1);
		EXPECT(stats().live_bytes, 0);
	}
	return 0;
}

static int t_reuse_same_stream_only(void)
{
	struct nvb_torch_stats s0, s;
	void *p, *q, *r;
	int fds;

	CHECK(load() == 0);
	p = t_malloc(3 * MiB, 0, S1);
	CHECK(p != NULL, "%s", t_err());
	t_free(p, 3 * MiB, 0, S1);
	s0 = stats();
	fds = proc_fds(0);
	EXPECT(s0.cached_bytes, 4 * MiB);
	q = t_malloc(3 * MiB + 5, 0, S1);	/* same class, same stream: the cached block */
	s = stats();
	CHECK(q == p, "not reused");
	EXPECT(s.hits, s0.hits + 1);
	EXPECT(s.cuda_allocs, s0.cuda_allocs);
	EXPECT(s.cached_bytes, 0);
	EXPECT(proc_fds(0), fds);
	t_free(q, 3 * MiB, 0, S1);
	r = t_malloc(3 * MiB, 0, S2);		/* another stream never gets it */
	CHECK(r != NULL && r != p, "block crossed streams");
	EXPECT(stats().cuda_allocs, s0.cuda_allocs + 1);
	t_free(r, 3 * MiB, 0, S2);
	q = t_malloc(5 * MiB, 0, S1);		/* another class neither */
	CHECK(q != NULL && q != p);
	t_free(q, 5 * MiB, 0, S1);
	EXPECT(stats().cached_blocks, 3);
	return 0;
}

/* Every VA reservation and handle goes back: trim, bound, OOM path. */
static int t_no_leaks(void)
{
	int fds0, maps0;
	void *p[24];
	struct nvb_torch_stats s;

	CHECK(load() == 0);
	t_free(t_malloc(1, 0, S1), 1, 0, S1);	/* lazy setup outside the count */
	t_trim(-1, 0);
	fds0 = proc_fds(0);
	maps0 = maps_count();
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 24; i++) {
			p[i] = t_malloc((ssize_t)((i % 6) + 1) * 3 * MiB + i, 0, i & 1 ? S1 : S2);
			CHECK(p[i] != NULL, "%s", t_err());
		}
		for (int i = 0; i < 24; i++)
			t_free(p[i], 0, 0, i & 1 ? S1 : S2);
	}
	s = stats();
	EXPECT(s.live_blocks, 0);
	CHECK(s.hits >= 48, "hits %llu", (unsigned long long)s.hits);
	CHECK(t_trim(-1, 0) == s.cached_bytes, "trim released a different amount");
	s = stats();
	EXPECT(s.cached_bytes, 0);
	EXPECT(s.cached_blocks, 0);
	EXPECT(s.cuda_frees, s.cuda_allocs);
	EXPECT(proc_fds(0), fds0);
	EXPECT(maps_count(), maps0);
	EXPECT(t_trim(-1, 0), 0);
	return 0;
}

/* $NVB_TORCH_CACHE_LIMIT bounds what is kept; trim(keep) keeps that much. */
static int t_cache_bound(void)
{
	void *p[10];
	struct nvb_torch_stats s;

	setenv("NVB_TORCH_CACHE_LIMIT", "8M", 1);
	CHECK(load() == 0);
	EXPECT(stats().cache_limit, 8 * MiB);
	for (int i = 0; i < 10; i++)
		CHECK((p[i] = t_malloc(2 * MiB, 0, S1)) != NULL, "%s", t_err());
	for (int i = 0; i < 10; i++) {
		t_free(p[i], 2 * MiB, 0, S1);
		CHECK(stats().cached_bytes <= 8 * MiB, "cache over its bound");
	}
	s = stats();
	CHECK(s.cuda_frees >= 2, "nothing released (%llu)", (unsigned long long)s.cuda_frees);
	EXPECT(s.cuda_frees + s.cached_blocks, 10);
	EXPECT(t_trim(-1, 2 * MiB), s.cached_bytes - 2 * MiB);
	EXPECT(stats().cached_bytes, 2 * MiB);
	EXPECT(t_trim(1, 0), 0);		/* a device with nothing cached */
	EXPECT(t_trim(0, 0), 2 * MiB);

	/* bigger than the bound: released at once */
	p[0] = t_malloc(16 * MiB, 0, S1);
	CHECK(p[0] != NULL);
	t_free(p[0], 16 * MiB, 0, S1);
	EXPECT(stats().cached_bytes, 0);

	setenv("NVB_TORCH_CACHE_LIMIT", "0", 1);	/* read once, at setup */
	EXPECT(stats().cache_limit, 8 * MiB);
	return 0;
}

static int t_no_cache(void)
{
	void *p;

	setenv("NVB_TORCH_CACHE_LIMIT", "0", 1);
	CHECK(load() == 0);
	p = t_malloc(MiB, 0, S1);
	CHECK(p != NULL);
	t_free(p, MiB, 0, S1);
	EXPECT(stats().cached_bytes, 0);
	EXPECT(stats().cuda_frees, 1);
	return 0;
}

/*
 * The driver out of memory: the fake's cuMemCreate fails with
 * OUT_OF_MEMORY when no fd can be made, so RLIMIT_NOFILE at the lowest
 * free fd makes every new allocation fail until cached blocks (memfds)
 * are released.
 */
static int t_oom_trims_cache_then_fails(void)
{
	struct nvb_torch_stats s;
	struct rlimit rl0, rl;
	void *p[4], *q;
	int lowest;

	CHECK(load() == 0);
	for (int i = 0; i < 4; i++)
		CHECK((p[i] = t_malloc(2 * MiB, 0, S1)) != NULL);
	for (int i = 0; i < 4; i++)
		t_free(p[i], 2 * MiB, 0, S1);
	EXPECT(stats().cached_blocks, 4);
	lowest = open("/dev/null", O_RDONLY | O_CLOEXEC);
	CHECK(lowest >= 0);
	close(lowest);
	getrlimit(RLIMIT_NOFILE, &rl0);
	rl = rl0;
	rl.rlim_cur = (rlim_t)lowest;
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);

	q = t_malloc(6 * MiB, 0, S1);		/* a new class: needs the driver */
	s = stats();
	CHECK(q != NULL, "cache not trimmed on OOM: %s", t_err());
	EXPECT(s.cached_blocks, 0);
	EXPECT(s.failures, 0);
	t_free(q, 6 * MiB, 0, S1);
	t_trim(-1, 0);
	/* now nothing to trim: every fd below the limit is taken again */
	lowest = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (lowest >= 0) {
		close(lowest);
		rl.rlim_cur = (rlim_t)lowest;
		CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	}
	strcpy((char *)t_err(), "poison");
	q = t_malloc(2 * MiB, 0, S1);
	CHECK(q == NULL, "allocated with no memory left");
	EXPECT(stats().failures, 1);
	CHECK(strstr(t_err(), "nvb_torch_malloc") && !strstr(t_err(), "poison"), "%s", t_err());
	setrlimit(RLIMIT_NOFILE, &rl0);
	q = t_malloc(2 * MiB, 0, S1);		/* and it recovers */
	CHECK(q != NULL, "%s", t_err());
	t_free(q, 2 * MiB, 0, S1);
	return 0;
}

/*
 * What the allocator hands out is shareable: the allocation handle
 * retained from the pointer exports a POSIX fd that another process
 * imports and maps, and both see the same bytes.
 */
static int t_exportable(void)
{
	CUresult (*retain)(CUmemGenericAllocationHandle *, void *);
	CUresult (*export)(void *, CUmemGenericAllocationHandle, int, unsigned long long);
	CUresult (*release)(CUmemGenericAllocationHandle);
	const size_t n = 4 * MiB;
	CUmemGenericAllocationHandle h;
	unsigned char *p, *want;
	int fd, st, fds0;
	void *cu;
	pid_t c;

	CHECK(load() == 0);
	cu = dlopen("libcuda.so.1", RTLD_NOW);
	CHECK(cu != NULL, "%s", dlerror());
	*(void **)&retain = dlsym(cu, "cuMemRetainAllocationHandle");
	*(void **)&export = dlsym(cu, "cuMemExportToShareableHandle");
	*(void **)&release = dlsym(cu, "cuMemRelease");
	CHECK(retain && export && release);
	p = t_malloc((ssize_t)n - 100, 0, S1);
	CHECK(p != NULL, "%s", t_err());
	want = malloc(n);
	CHECK(want != NULL);
	fake_random(want, n);
	memcpy(p, want, n);
	fds0 = proc_fds(0);
	EXPECT(retain(&h, p + 12345), CUDA_SUCCESS);	/* any address inside */
	EXPECT(export(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0), CUDA_SUCCESS);
	EXPECT(release(h), CUDA_SUCCESS);
	c = fork();
	if (c == 0) {
		/* a fresh import and mapping, not the parent's pages */
		CUresult (*imp)(CUmemGenericAllocationHandle *, void *, int) = dlsym(cu, "cuMemImportFromShareableHandle");
		CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long) = dlsym(cu, "cuMemAddressReserve");
		CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long) = dlsym(cu, "cuMemMap");
		CUmemGenericAllocationHandle ih;
		CUdeviceptr m;

		if (imp(&ih, (void *)(uintptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) ||
		    reserve(&m, n, 0, 0, 0) || map(m, n, 0, ih, 0) || (unsigned char *)(uintptr_t)m == p)
			_exit(2);
		if (memcmp((void *)(uintptr_t)m, want, n))
			_exit(3);
		for (size_t i = 0; i < n; i++)
			((unsigned char *)(uintptr_t)m)[i] ^= 0xff;
		_exit(0);
	}
	CHECK(c > 0);
	waitpid(c, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "importer status %#x", st);
	for (size_t i = 0; i < n; i++)
		CHECK(p[i] == (unsigned char)~want[i], "byte %zu not written back", i);
	close(fd);
	EXPECT(proc_fds(0), fds0);
	t_free(p, (ssize_t)n - 100, 0, S1);
	free(want);
	return 0;
}

/*
 * The path an application takes: a tensor inside an allocator block is
 * registered (nvb_gpu_register, a sub-range at an odd offset, and the whole
 * block), published through the broker, imported by another process,
 * checked byte for byte and written back.
 */
static int share_range(struct nvb_gpu *g, struct nvb *h, const char *name, unsigned char *ptr,
		       size_t len)
{
	struct nvb_gpu_buf *b;
	unsigned char *want = malloc(len);
	uint64_t id;
	pid_t c;
	int st;

	CHECK(want != NULL);
	fake_random(want, len);
	memcpy(ptr, want, len);
	if (nvb_gpu_register(g, (uint64_t)(uintptr_t)ptr, len, 0, &b))
		FAIL("register: %s", nvb_gpu_last_error());
	EXPECT(nvb_gpu_buf_kind(b), NVB_GPU_KIND_VMM);
	if (nvb_gpu_publish(g, h, name, b, NVB_ACCESS_OWNER, &id))
		FAIL("publish: %s", nvb_gpu_last_error());
	c = fork();
	if (c == 0) {
		struct fake_peer pe;
		unsigned char *q;

		if (fake_peer_import(&pe, name, 5000000000LL) || nvb_gpu_map_size(pe.m) != len)
			_exit(2);
		q = (unsigned char *)(uintptr_t)nvb_gpu_map_ptr(pe.m);
		if (memcmp(q, want, len))
			_exit(3);
		for (size_t i = 0; i < len; i++)
			q[i] = (unsigned char)~want[i];
		nvb_gpu_unmap(pe.m);
		_exit(0);
	}
	CHECK(c > 0);
	waitpid(c, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "importer status %#x", st);
	for (size_t i = 0; i < len; i++)
		CHECK(ptr[i] == (unsigned char)~want[i], "byte %zu not written back", i);
	OK(nvb_gpu_unpublish(g, h, id));
	nvb_gpu_free(b);
	free(want);
	return 0;
}

static int t_register_and_share(void)
{
	struct nvb_gpu *g;
	struct nvb *h;
	unsigned char *p;
	int fds0;

	CHECK(load() == 0);
	OK(nvb_gpu_open(NULL, &g));
	OK(fake_nvb_open(&h));
	p = t_malloc(5 * MiB - 3, 0, S1);
	CHECK(p != NULL, "%s", t_err());
	fds0 = proc_fds(0);
	if (share_range(g, h, "torch/sub", p + 4099, 3 * MiB + 5) ||
	    share_range(g, h, "torch/whole", p, 6 * MiB))
		return 1;
	EXPECT(proc_fds(0), fds0);
	t_free(p, 5 * MiB - 3, 0, S1);
	nvb_close(h);
	nvb_gpu_close(g);
	/* shared: released at the free, not cached (shared_block_not_reused) */
	EXPECT(stats().exported_releases, 1);
	EXPECT(stats().cuda_frees, 1);
	EXPECT(t_trim(-1, 0), 0);
	return 0;
}

/*
 * The attack on block reuse (cross-tenant leak): the exporter shares a
 * block, an importer keeps its mapping (it ignores the revocation, as a
 * hostile one would), the exporter frees the tensor and allocates the
 * same size again, then writes a secret there.  The importer must still
 * see the old bytes, never the secret: a block whose memory was exported
 * is released, not cached, and the next allocation is a new physical one.
 * mode 0: unpublished and unregistered before the free (the careful
 * exporter); 1: freed while still registered and published; 2: the stale
 * pointer registered while its block sat in the cache (the reuse check).
 */
static int reuse_probe(int mode)
{
	const size_t n = 4 * MiB;
	unsigned char *p, *q, *want, *secret, got[4096];
	int to_child[2], to_parent[2], st;
	struct nvb_torch_stats s0, s;
	struct nvb_gpu_buf *b;
	struct nvb_gpu *g;
	struct nvb *h;
	char c = 0;
	uint64_t id;
	pid_t pid;

	CHECK(load() == 0);
	OK(nvb_gpu_open(NULL, &g));
	OK(fake_nvb_open(&h));
	want = malloc(n);
	secret = malloc(n);
	CHECK(want && secret);
	fake_random(want, n);
	p = t_malloc((ssize_t)n, 0, S1);
	CHECK(p != NULL, "%s", t_err());
	memcpy(p, want, n);
	if (mode == 2)
		t_free(p, (ssize_t)n, 0, S1);	/* cached, still mapped at p */
	if (nvb_gpu_register(g, (uint64_t)(uintptr_t)p, n, 0, &b))
		FAIL("register: %s", nvb_gpu_last_error());
	if (nvb_gpu_publish(g, h, "torch/reuse", b, NVB_ACCESS_OWNER, &id))
		FAIL("publish: %s", nvb_gpu_last_error());
	CHECK(pipe(to_child) == 0 && pipe(to_parent) == 0);
	pid = fork();
	if (pid == 0) {
		struct fake_peer pe;
		unsigned char *v;

		close(to_child[1]);
		close(to_parent[0]);
		if (fake_peer_import(&pe, "torch/reuse", 5000000000LL) || nvb_gpu_map_size(pe.m) != n)
			_exit(2);
		v = (unsigned char *)(uintptr_t)nvb_gpu_map_ptr(pe.m);
		if (memcmp(v, want, n))
			_exit(3);
		/* mapped; wait for the exporter's new tensor, then look */
		if (write(to_parent[1], "m", 1) != 1 || read(to_child[0], &c, 1) != 1)
			_exit(4);
		if (write(to_parent[1], v, sizeof(got)) != (ssize_t)sizeof(got))
			_exit(5);
		_exit(memcmp(v, want, n) ? 6 : 0);
	}
	CHECK(pid > 0);
	close(to_child[0]);
	close(to_parent[1]);
	CHECK(read(to_parent[0], &c, 1) == 1 && c == 'm', "importer did not map");
	if (mode == 0) {
		OK(nvb_gpu_unpublish(g, h, id));
		nvb_gpu_free(b);
	}
	s0 = stats();
	if (mode != 2)
		t_free(p, (ssize_t)n, 0, S1);
	q = t_malloc((ssize_t)n, 0, S1);	/* the next tensor of that size class */
	CHECK(q != NULL, "%s", t_err());
	s = stats();
	fake_random(secret, n);
	memcpy(q, secret, n);
	CHECK(write(to_child[1], "g", 1) == 1);
	CHECK(read(to_parent[0], got, sizeof(got)) == (ssize_t)sizeof(got), "importer gave nothing back");
	waitpid(pid, &st, 0);
	CHECK(memcmp(got, secret, sizeof(got)), "LEAK: the importer reads the exporter's new tensor");
	CHECK(!memcmp(got, want, sizeof(got)), "the importer's mapping changed under it");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "importer status %#x", st);
	EXPECT(s.hits, s0.hits);		/* not served from the cache */
	EXPECT(s.cuda_allocs, s0.cuda_allocs + 1);
	EXPECT(s.cuda_frees, s0.cuda_frees + 1);
	EXPECT(s.cached_blocks, 0);
	EXPECT(s.exported_releases, s0.exported_releases + 1);
	CHECK(!memcmp(q, secret, n), "the new tensor lost its bytes");
	t_free(q, (ssize_t)n, 0, S1);
	EXPECT(stats().cached_blocks, 1);	/* never shared: cached as before */
	if (mode) {
		OK(nvb_gpu_unpublish(g, h, id));
		nvb_gpu_free(b);
	}
	nvb_close(h);
	nvb_gpu_close(g);
	free(want);
	free(secret);
	return 0;
}

static int t_shared_block_not_reused(void)
{
	return reuse_probe(0);
}

static int t_shared_block_freed_while_published(void)
{
	return reuse_probe(1);
}

static int t_stale_pointer_registered_in_cache(void)
{
	return reuse_probe(2);
}

/* Many threads, shared and private streams: no block is ever handed out twice. */
struct worker {
	int id;
	int bad;
	char why[128];
};

static void *work(void *arg)
{
	struct worker *w = arg;
	static const ssize_t sizes[] = { 1000, 2 * MiB + 7, 5 * MiB, 40 * MiB };
	unsigned int seed = (unsigned int)w->id * 7919u;

	for (int it = 0; it < 400 && !w->bad; it++) {
		ssize_t sz = sizes[rand_r(&seed) % 4];
		void *st = (it & 1) ? S1 : (void *)(uintptr_t)(0x6000 + w->id);
		uint64_t *p = t_malloc(sz, 0, st), tag = ((uint64_t)w->id << 32) | (uint64_t)it;

		if (!p) {
			w->bad = 1;
			snprintf(w->why, sizeof(w->why), "malloc: %s", t_err());
			break;
		}
		p[0] = tag;
		memcpy((char *)p + sz - sizeof(tag), &tag, sizeof(tag));	/* sz need not be a multiple of 8 */
		sched_yield();
		if (p[0] != tag || memcmp((char *)p + sz - sizeof(tag), &tag, sizeof(tag))) {
			w->bad = 1;
			snprintf(w->why, sizeof(w->why), "block %p shared with another thread", (void *)p);
		}
		t_free(p, sz, 0, st);
	}
	return NULL;
}

static int t_threads(void)
{
	struct worker w[8];
	pthread_t th[8];
	struct nvb_torch_stats s;

	setenv("NVB_TORCH_CACHE_LIMIT", "256M", 1);	/* evictions happen too */
	CHECK(load() == 0);
	for (int i = 0; i < 8; i++) {
		w[i] = (struct worker){ .id = i };
		CHECK(pthread_create(&th[i], NULL, work, &w[i]) == 0);
	}
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 8; i++)
		CHECK(!w[i].bad, "thread %d: %s", i, w[i].why);
	s = stats();
	EXPECT(s.mallocs, 8 * 400);
	EXPECT(s.frees, 8 * 400);
	EXPECT(s.live_blocks, 0);
	EXPECT(s.live_bytes, 0);
	CHECK(s.hits > s.mallocs / 2, "hits %llu", (unsigned long long)s.hits);
	CHECK(s.cached_bytes <= 256 * MiB);
	EXPECT(s.cuda_allocs - s.cuda_frees, s.cached_blocks);
	return 0;
}

static int t_bad_input(void)
{
	struct nvb_torch_stats s;
	unsigned char big[sizeof(s) + 16];
	void *p;

	CHECK(load() == 0);
	EXPECT(t_malloc(-1, 0, S1), 0);
	EXPECT(t_malloc(SSIZE_MAX, 0, S1), 0);
	CHECK(strstr(t_err(), "too large"), "%s", t_err());
	EXPECT(t_malloc(1, 1, S1), 0);		/* the fake has one device */
	CHECK(strstr(t_err(), "device 1"), "%s", t_err());
	EXPECT(t_malloc(1, -1, S1), 0);
	EXPECT(stats().failures, 4);
	EXPECT(t_malloc(0, 0, S1), 0);		/* empty tensors: no memory, no failure */
	EXPECT(stats().failures, 4);
	t_free(NULL, 0, 0, S1);
	p = t_malloc(MiB, 0, S1);
	CHECK(p != NULL);
	t_free((char *)p + 64, MiB, 0, S1);	/* not a pointer we returned */
	t_free(&s, 8, 0, S1);
	EXPECT(stats().bad_frees, 2);
	EXPECT(stats().live_blocks, 1);
	t_free(p, MiB, 0, S1);
	t_free(p, MiB, 0, S1);			/* double free: ignored */
	s = stats();
	EXPECT(s.bad_frees, 3);
	EXPECT(s.frees, 1);
	EXPECT(s.cached_blocks, 1);
	/* the stats struct: older (smaller) and newer (larger) callers */
	EXPECT(t_stats(NULL), -EINVAL);
	s.sz = 4;
	EXPECT(t_stats(&s), -EINVAL);
	memset(big, 0x5a, sizeof(big));
	((struct nvb_torch_stats *)big)->sz = sizeof(big);
	EXPECT(t_stats((struct nvb_torch_stats *)big), 0);
	EXPECT(((struct nvb_torch_stats *)big)->sz, sizeof(s));
	CHECK(big[sizeof(s)] == 0x5a, "wrote past its struct");
	s.sz = offsetof(struct nvb_torch_stats, hits);
	s.hits = 77;
	EXPECT(t_stats(&s), 0);
	EXPECT(s.sz, offsetof(struct nvb_torch_stats, hits));
	EXPECT(s.hits, 77);
	EXPECT(s.frees, 1);
	((struct nvb_torch_stats *)big)->sz = 5000;
	EXPECT(t_stats((struct nvb_torch_stats *)big), -EINVAL);
	return 0;
}

/* The caller's current context is what it was, whatever the call did. */
static int t_context_left_alone(void)
{
	CUresult (*get)(CUcontext *), (*set)(CUcontext);
	CUcontext c = (CUcontext)(uintptr_t)1, mine = (CUcontext)(uintptr_t)0x7777;
	void *cu, *p;

	CHECK(load() == 0);
	cu = dlopen("libcuda.so.1", RTLD_NOW);
	CHECK(cu != NULL);
	*(void **)&get = dlsym(cu, "cuCtxGetCurrent");
	*(void **)&set = dlsym(cu, "cuCtxSetCurrent");
	set(NULL);
	p = t_malloc(3 * MiB, 0, S1);		/* first call: setup + a fresh allocation */
	CHECK(p != NULL);
	get(&c);
	CHECK(c == NULL, "context changed by malloc");
	set(mine);
	t_free(p, 3 * MiB, 0, S1);
	t_free(t_malloc(3 * MiB, 0, S1), 3 * MiB, 0, S1);
	EXPECT(t_trim(-1, 0), 4 * MiB);		/* synchronises the device */
	get(&c);
	CHECK(c == mine, "context changed by free/trim");
	return 0;
}

/*
 * Without a libcuda: NULL with the reason, and the next call tries again
 * (here after $NVB_TORCH_LIBCUDA pointed at one).
 * Runs this program again with only the allocator's directory on the
 * library path (the stand-in libcuda is not there), as a host without a
 * driver would.
 */
static int no_driver_child(void)
{
	void *p;

	if (load())
		return 10;
	if (t_malloc(MiB, 0, S1) || !strstr(t_err(), "nvb_gpu_open"))
		return 11;
	strcpy((char *)t_err(), "poison");
	if (t_malloc(MiB, 0, S1) || !strstr(t_err(), "nvb_gpu_open"))
		return 12;
	t_free(S1, MiB, 0, S1);
	if (t_trim(-1, 0) != 0 || stats().failures != 2 || stats().bad_frees != 1)
		return 13;
	/* $NVB_TORCH_LIBCUDA names a driver the linker would not find: the next call sets up */
	if (!getenv("NVB_FAKE_CUDA") || setenv("NVB_TORCH_LIBCUDA", getenv("NVB_FAKE_CUDA"), 1))
		return 14;
	p = t_malloc(MiB, 0, S1);
	if (!p)
		return 15;
	t_free(p, MiB, 0, S1);
	return stats().cached_blocks == 1 ? 0 : 16;
}

static int t_no_driver(void)
{
	char dir[4096], *slash;
	Dl_info di;
	pid_t c;
	int st;

	CHECK(load() == 0);
	CHECK(dladdr((void *)t_malloc, &di) && di.dli_fname);
	snprintf(dir, sizeof(dir), "%s", di.dli_fname);
	slash = strrchr(dir, '/');
	CHECK(slash != NULL);
	*slash = 0;
	c = fork();
	if (c == 0) {
		setenv("LD_LIBRARY_PATH", dir, 1);
		execl("/proc/self/exe", "torch_alloc", "--no-driver-child", (char *)NULL);
		_exit(127);
	}
	CHECK(c > 0);
	waitpid(c, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
	return 0;
}

static const struct nvb_case cases[] = {
	{ "exports_only_entry_points", t_exports_only_entry_points },
	{ "sizes_and_granularity", t_sizes_and_granularity },
	{ "reuse_same_stream_only", t_reuse_same_stream_only },
	{ "no_leaks", t_no_leaks },
	{ "cache_bound", t_cache_bound },
	{ "no_cache", t_no_cache },
	{ "oom_trims_cache_then_fails", t_oom_trims_cache_then_fails },
	{ "exportable", t_exportable },
	{ "register_and_share", t_register_and_share },
	{ "shared_block_not_reused", t_shared_block_not_reused },
	{ "shared_block_freed_while_published", t_shared_block_freed_while_published },
	{ "stale_pointer_registered_in_cache", t_stale_pointer_registered_in_cache },
	{ "threads", t_threads },
	{ "bad_input", t_bad_input },
	{ "context_left_alone", t_context_left_alone },
	{ "no_driver", t_no_driver },
};

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--no-driver-child"))
		return no_driver_child();
	return fake_main("torch-alloc", cases, sizeof(cases) / sizeof(cases[0]), argc, argv, NULL);
}
