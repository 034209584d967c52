// SPDX-License-Identifier: MIT
/*
 * nvb_gpu_register(): memory the application allocated itself (cuMemCreate
 * mapped by the application, one or several allocations back to back, a
 * sub-range, cuMemAlloc memory), shared between two processes through a
 * private broker: random contents, the importer checks every byte and
 * writes back, the exporter sees it; revocations; every error path; and
 * the importer's parser fed hostile metadata.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <poll.h>
#include <stddef.h>
#include <sys/resource.h>

#include "fake.h"
#include "cuda_api.h"

#define MiB (1UL << 20)
#define GRAN (2 * MiB)		/* the stand-in's granularity */

/* The application's own CUDA calls, from the same libcuda the library loaded. */
static struct {
	CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
			   unsigned long long);
	CUresult (*release)(CUmemGenericAllocationHandle);
	CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
	CUresult (*afree)(CUdeviceptr, size_t);
	CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
	CUresult (*unmap)(CUdeviceptr, size_t);
	CUresult (*alloc)(CUdeviceptr *, size_t);
	CUresult (*mfree)(CUdeviceptr);
	int (*mark)(uint64_t, size_t, int);
} cu;

static int cu_load(void)
{
	void *l = dlopen("libcuda.so.1", RTLD_NOW);

	if (!l)
		return -1;
#define S(f, n) (*(void **)&cu.f = dlsym(l, n))
	if (!S(create, "cuMemCreate") || !S(release, "cuMemRelease") ||
	    !S(reserve, "cuMemAddressReserve") || !S(afree, "cuMemAddressFree") ||
	    !S(map, "cuMemMap") || !S(unmap, "cuMemUnmap") || !S(alloc, "cuMemAlloc_v2") ||
	    !S(mfree, "cuMemFree_v2") || !S(mark, "fakecuda_mark"))
		return -1;
#undef S
	return 0;
}

/* n allocations of chunk bytes mapped back to back, as PyTorch's expandable segments are. */
struct vmm {
	CUdeviceptr va;
	size_t total, chunk;
	int n;
	CUmemGenericAllocationHandle h[8];
};

static int vmm_make(struct vmm *v, int n, size_t chunk, int types)
{
	CUmemAllocationProp p = { .type = CU_MEM_ALLOCATION_TYPE_PINNED, .requestedHandleTypes = types,
				  .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };

	memset(v, 0, sizeof(*v));
	v->n = n;
	v->chunk = chunk;
	v->total = (size_t)n * chunk;
	if (cu.reserve(&v->va, v->total, GRAN, 0, 0))
		return -1;
	for (int i = 0; i < n; i++)
		if (cu.create(&v->h[i], chunk, &p, 0) || cu.map(v->va + i * chunk, chunk, 0, v->h[i], 0))
			return -1;
	return 0;
}

static void vmm_drop(struct vmm *v)
{
	for (int i = 0; i < v->n; i++) {
		cu.unmap(v->va + i * v->chunk, v->chunk);
		cu.release(v->h[i]);
	}
	cu.afree(v->va, v->total);
}

#define P(x) ((unsigned char *)(uintptr_t)(x))

static struct nvb_gpu *g;
static struct nvb *h;

static int setup(void)
{
	if (nvb_gpu_open(NULL, &g) || fake_nvb_open(&h) || cu_load())
		return -1;
	return 0;
}

/*
 * The importer, in a child process with its own handles: imports name,
 * checks its len bytes against want, writes their complement back.
 */
static int importer(const char *name, const unsigned char *want, size_t len, uint32_t type)
{
	struct fake_peer pe;
	unsigned char *p;
	int r = fake_peer_import(&pe, name, 5000000000LL);

	CHECK(pe.h != NULL, "GPU layer or handle: %d", r);
	if (r)
		FAIL("import %s: %s", name, nvb_gpu_last_error());
	EXPECT(nvb_gpu_map_size(pe.m), len);
	EXPECT(nvb_gpu_map_handle_type(pe.m), type);
	p = P(nvb_gpu_map_ptr(pe.m));
	for (size_t i = 0; i < len; i++)
		if (p[i] != want[i])
			FAIL("byte %zu of %zu: %#x, want %#x", i, len, p[i], want[i]);
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)~want[i];
	fake_peer_close(&pe);
	return 0;
}

/*
 * Registers [ptr, ptr + len) (random contents), publishes it, lets a child
 * import and write back, and checks the write landed, and only there.
 * lo..hi is the application's whole memory around the range.
 */
static int roundtrip(const char *name, uint64_t lo, size_t span, uint64_t ptr, size_t len,
		     uint32_t kind, uint32_t chunks, uint32_t type)
{
	unsigned char *before = malloc(span);
	struct nvb_gpu_buf *b;
	uint64_t id;
	pid_t c;
	int st;

	CHECK(before != NULL);
	fake_random(P(lo), span);
	memcpy(before, P(lo), span);
	b = (void *)1;
	if (nvb_gpu_register(g, ptr, len, 0, &b))
		FAIL("register: %s", nvb_gpu_last_error());
	EXPECT(nvb_gpu_buf_ptr(b), ptr);
	EXPECT(nvb_gpu_buf_size(b), len);
	EXPECT(nvb_gpu_buf_kind(b), kind);
	EXPECT(nvb_gpu_buf_chunks(b), chunks);
	if (nvb_gpu_publish(g, h, name, b, NVB_ACCESS_OWNER, &id))
		FAIL("publish: %s", nvb_gpu_last_error());
	c = fork();
	if (c == 0)
		_exit(importer(name, P(ptr), len, type));
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "importer failed");
	for (size_t i = 0; i < span; i++) {
		uint64_t a = lo + i;
		unsigned char want = (a >= ptr && a - ptr < len) ? (unsigned char)~before[i] : before[i];

		if (P(lo)[i] != want)
			FAIL("exporter byte %zu: %#x, want %#x", i, P(lo)[i], want);
	}
	OK(nvb_gpu_unpublish(g, h, id));
	nvb_gpu_free(b);
	/* unregistering left the application's memory alone */
	P(ptr)[0] ^= 0xff;
	EXPECT(P(ptr)[0], before[ptr - lo]);
	free(before);
	return 0;
}

static int t_vmm_single(void)
{
	struct vmm v;

	CHECK(setup() == 0);
	CHECK(vmm_make(&v, 1, 4 * MiB, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == 0);
	/* a whole allocation: the 1.0 metadata, which older importers take */
	return roundtrip("reg/single", v.va, v.total, v.va, v.total, NVB_GPU_KIND_VMM, 1,
			 NVB_GPU_HANDLE_POSIX_FD);
}

static int t_vmm_subrange(void)
{
	struct vmm v;

	CHECK(setup() == 0);
	CHECK(vmm_make(&v, 1, 4 * MiB, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == 0);
	/* a tensor inside a caching allocator's segment: odd offset and length */
	return roundtrip("reg/sub", v.va, v.total, v.va + 12345, MiB + 777, NVB_GPU_KIND_VMM, 1,
			 NVB_GPU_HANDLE_POSIX_FD);
}

static int t_vmm_multi(void)
{
	struct vmm v;

	CHECK(setup() == 0);
	CHECK(vmm_make(&v, 4, GRAN, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == 0);
	/* starts inside the first allocation, ends inside the fourth */
	return roundtrip("reg/multi", v.va, v.total, v.va + GRAN - 100, 2 * GRAN + 200,
			 NVB_GPU_KIND_VMM, 4, NVB_GPU_HANDLE_POSIX_FD);
}

static int t_legacy(void)
{
	CUdeviceptr p;

	CHECK(setup() == 0);
	CHECK(cu.alloc(&p, 3 * MiB + 5) == 0);
	return roundtrip("reg/legacy", p, 3 * MiB + 5, p + 4096 + 3, 2 * MiB, NVB_GPU_KIND_LEGACY_IPC, 0,
			 NVB_GPU_HANDLE_LEGACY_IPC);
}

/*
 * Two tensors of one cudaMalloc segment, registered and published apart:
 * the importer opens the segment's IPC handle once (CUDA wants one open
 * per context) and both mappings live in it; either outlives the other.
 */
static int t_legacy_shared_open(void)
{
	struct nvb_gpu_buf *b1, *b2;
	CUdeviceptr p;
	int st;
	pid_t c;

	CHECK(setup() == 0);
	CHECK(cu.alloc(&p, MiB) == 0);
	fake_random(P(p), MiB);
	OK(nvb_gpu_register(g, p + 512, 4096, 0, &b1));
	OK(nvb_gpu_register(g, p + 65536, 8192, 0, &b2));
	OK(nvb_gpu_publish(g, h, "reg/t1", b1, NVB_ACCESS_OWNER, NULL));
	OK(nvb_gpu_publish(g, h, "reg/t2", b2, NVB_ACCESS_OWNER, NULL));
	c = fork();
	if (c == 0) {
		struct nvb_gpu_map *m1, *m2;
		struct fake_peer pe;
		struct nvb_gpu *g2;

		if (fake_peer_import(&pe, "reg/t1", 0) ||
		    nvb_gpu_import(pe.g, pe.h, "reg/t2", 0, 0, &m2))
			_exit(2);
		g2 = pe.g;
		m1 = pe.m;
		if (nvb_gpu_map_ptr(m2) - nvb_gpu_map_ptr(m1) != 65536 - 512)
			_exit(3);	/* opened twice */
		nvb_gpu_unmap(m1);
		nvb_gpu_cache_trim(g2);
		if (memcmp(P(nvb_gpu_map_ptr(m2)), P(p + 65536), 8192))
			_exit(4);	/* the first unmap closed the shared open */
		nvb_gpu_unmap(m2);
		nvb_gpu_cache_trim(g2);
		_exit(0);
	}
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st), "importer: %d", st);
	EXPECT(WEXITSTATUS(st), 0);
	nvb_gpu_free(b1);
	nvb_gpu_free(b2);
	return 0;
}

/* The importer's side of a revocation: waits for it through events. */
static int wait_revoked(struct nvb_gpu *g2, struct nvb *h2, struct nvb_gpu_map *m)
{
	for (int i = 0; i < 500 && !nvb_gpu_map_revoked(m); i++) {
		struct pollfd pf = { .fd = nvb_event_fd(h2), .events = POLLIN };

		poll(&pf, 1, 10);
		CHECK(nvb_gpu_poll_events(g2, h2) >= 0, "%s", nvb_gpu_last_error());
	}
	CHECK(nvb_gpu_map_revoked(m), "no revocation in 5 s");
	return 0;
}

/* The exporter unpublishes a multi-allocation range: the importer hears it; no chunk entry stays. */
static int t_revoke_unpublish(void)
{
	struct nvb_entry ent;
	struct nvb_gpu_buf *b;
	struct vmm v;
	uint64_t id;
	int pfd[2], st;
	char x;
	pid_t c;

	CHECK(setup() == 0 && pipe(pfd) == 0);
	CHECK(vmm_make(&v, 3, GRAN, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == 0);
	OK(nvb_gpu_register(g, v.va + 1, v.total - 2, 0, &b));
	OK(nvb_gpu_publish(g, h, "reg/rv", b, NVB_ACCESS_OWNER, &id));
	c = fork();
	if (c == 0) {
		struct fake_peer pe;

		if (fake_peer_import(&pe, "reg/rv", 5000000000LL))
			_exit(2);
		if (write(pfd[1], "i", 1) != 1)
			_exit(3);
		_exit(wait_revoked(pe.g, pe.h, pe.m));
	}
	CHECK(read(pfd[0], &x, 1) == 1, "importer did not import");
	OK(nvb_gpu_unpublish(g, h, id));
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "importer: %d", st);
	struct nvb_fetch_opts fo = { .sz = sizeof(fo) };
	EXPECT(nvb_fetch(h, "reg/rv:c1", &fo, NULL, 0, &ent, NULL), -ENOENT);
	EXPECT(nvb_fetch(h, "reg/rv:c2", &fo, NULL, 0, &ent, NULL), -ENOENT);
	EXPECT(nvb_gpu_unpublish(g, h, id), -ENOENT);	/* once */
	EXPECT(nvb_gpu_unpublish(g, h, 0), -EINVAL);
	nvb_gpu_free(b);
	vmm_drop(&v);
	return 0;
}

/* The exporter of a cuMemAlloc range exits: the importer hears it. */
static int t_revoke_exit(void)
{
	unsigned char want[4096];
	struct nvb_gpu_map *m;
	int up[2], down[2], st;
	char x;
	pid_t c;

	CHECK(setup() == 0 && pipe(up) == 0 && pipe(down) == 0);
	fake_random(want, sizeof(want));
	c = fork();
	if (c == 0) {	/* its own handles: the parent's connection is not the exporter's */
		struct nvb_gpu_buf *b;
		struct nvb_gpu *g2;
		struct nvb *h2;
		CUdeviceptr p;

		if (nvb_gpu_open(NULL, &g2) || fake_nvb_open(&h2) || cu.alloc(&p, 2 * sizeof(want)))
			_exit(2);
		memcpy(P(p) + 100, want, sizeof(want));
		if (nvb_gpu_register(g2, p + 100, sizeof(want), 0, &b) ||
		    nvb_gpu_publish(g2, h2, "reg/exit", b, NVB_ACCESS_OWNER, NULL))
			_exit(3);
		if (write(up[1], "p", 1) != 1 || read(down[0], &x, 1) != 1)
			_exit(4);
		_exit(0);	/* no unpublish, no free: the broker sees the exit */
	}
	CHECK(read(up[0], &x, 1) == 1, "exporter did not publish");
	if (nvb_gpu_import(g, h, "reg/exit", 5000000000LL, 0, &m))
		FAIL("import: %s", nvb_gpu_last_error());
	CHECK(!memcmp(P(nvb_gpu_map_ptr(m)), want, sizeof(want)), "contents");
	CHECK(write(down[1], "x", 1) == 1);
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exporter: %d", st);
	if (wait_revoked(g, h, m))
		return 1;
	nvb_gpu_unmap(m);
	return 0;
}

static int t_errors(void)
{
	unsigned char host[64];
	struct nvb_gpu_buf *b;
	struct vmm v, nofd, odd;
	CUdeviceptr p;

	CHECK(setup() == 0);
	CHECK(vmm_make(&v, 2, GRAN, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == 0);
	CHECK(cu.alloc(&p, MiB) == 0);
	EXPECT(nvb_gpu_register(g, v.va, 1, 0, NULL), -EINVAL);
	b = (void *)1;
	EXPECT(nvb_gpu_register(g, 0, 1, 0, &b), -EINVAL);
	CHECK(b == NULL, "out not cleared");
	CHECK(strstr(nvb_gpu_last_error(), "ptr"), "%s", nvb_gpu_last_error());
	EXPECT(nvb_gpu_register(g, v.va, 0, 0, &b), -EINVAL);
	CHECK(strstr(nvb_gpu_last_error(), "len"), "%s", nvb_gpu_last_error());
	EXPECT(nvb_gpu_register(g, UINT64_MAX - 10, 100, 0, &b), -EOVERFLOW);
	EXPECT(nvb_gpu_register(g, v.va, 1, 1U << 7, &b), -EINVAL);
	CHECK(strstr(nvb_gpu_last_error(), "flags"), "%s", nvb_gpu_last_error());
	EXPECT(nvb_gpu_register(NULL, v.va, 1, 0, &b), -EINVAL);
	/* memory CUDA does not know */
	EXPECT(nvb_gpu_register(g, (uintptr_t)host, sizeof(host), 0, &b), -EFAULT);
	CHECK(strstr(nvb_gpu_last_error(), "not memory CUDA knows"), "%s", nvb_gpu_last_error());
	/* pinned host and managed memory */
	CHECK(cu.mark((uintptr_t)host, sizeof(host), 4) == 0);
	EXPECT(nvb_gpu_register(g, (uintptr_t)host, sizeof(host), 0, &b), -EOPNOTSUPP);
	CHECK(strstr(nvb_gpu_last_error(), "host"), "%s", nvb_gpu_last_error());
	CHECK(cu.mark((uintptr_t)host, sizeof(host), 5) == 0);
	EXPECT(nvb_gpu_register(g, (uintptr_t)host, sizeof(host), 0, &b), -EOPNOTSUPP);
	CHECK(strstr(nvb_gpu_last_error(), "managed"), "%s", nvb_gpu_last_error());
	cu.mark((uintptr_t)host, 0, 0);
	/* past the end of the VMM mapping, into unmapped addresses */
	EXPECT(nvb_gpu_register(g, v.va + GRAN, 2 * GRAN, 0, &b), -EFAULT);
	CHECK(strstr(nvb_gpu_last_error(), "unmapped"), "%s", nvb_gpu_last_error());
	/* VMM then something else */
	CHECK(cu.mark(v.va + GRAN, GRAN, 4) == 0);
	EXPECT(nvb_gpu_register(g, v.va, 2 * GRAN, 0, &b), -EOPNOTSUPP);
	CHECK(strstr(nvb_gpu_last_error(), "mixes"), "%s", nvb_gpu_last_error());
	cu.mark(v.va + GRAN, 0, 0);
	/* cuMemAlloc: past its end; refused without legacy handles */
	EXPECT(nvb_gpu_register(g, p + 10, MiB, 0, &b), -EFAULT);
	CHECK(strstr(nvb_gpu_last_error(), "past the end"), "%s", nvb_gpu_last_error());
	EXPECT(nvb_gpu_register(g, p, MiB, NVB_GPU_REGISTER_NO_LEGACY, &b), -EOPNOTSUPP);
	CHECK(strstr(nvb_gpu_last_error(), "NO_LEGACY"), "%s", nvb_gpu_last_error());
	/* a VMM allocation created without an exportable handle type */
	CHECK(vmm_make(&nofd, 1, GRAN, CU_MEM_HANDLE_TYPE_NONE) == 0);
	EXPECT(nvb_gpu_register(g, nofd.va, GRAN, 0, &b), -EOPNOTSUPP);
	CHECK(strstr(nvb_gpu_last_error(), "requestedHandleTypes"), "%s", nvb_gpu_last_error());
	/* mappings not on the allocation granularity */
	CHECK(vmm_make(&odd, 2, MiB, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == 0);
	EXPECT(nvb_gpu_register(g, odd.va, 2 * MiB, 0, &b), -EOPNOTSUPP);
	CHECK(strstr(nvb_gpu_last_error(), "granularity"), "%s", nvb_gpu_last_error());
	CHECK(b == NULL, "out set on failure");
	/* nothing leaked: every failure gave its handles and fds back */
	int fds = proc_fds(0);
	for (int i = 0; i < 20; i++) {
		EXPECT(nvb_gpu_register(g, v.va + GRAN, 2 * GRAN, 0, &b), -EFAULT);
		EXPECT(nvb_gpu_register(g, odd.va, 2 * MiB, 0, &b), -EOPNOTSUPP);
	}
	EXPECT(proc_fds(0), fds);
	vmm_drop(&odd);
	vmm_drop(&nofd);
	vmm_drop(&v);
	cu.mfree(p);
	return 0;
}

/* More allocations than a range may span: -E2BIG, and nothing leaked. */
static int t_too_many_chunks(void)
{
	CUmemAllocationProp pr = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
				   .requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
				   .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };
	int n = NVB_GPU_REGISTER_MAX_CHUNKS + 1, fds;
	struct rlimit rl;
	struct nvb_gpu_buf *b;
	CUdeviceptr va;

	CHECK(setup() == 0);
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	rl.rlim_cur = rl.rlim_max;
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max > 4 * (rlim_t)n, "fd limit %lu",
	      (unsigned long)rl.rlim_max);
	CHECK(cu.reserve(&va, (size_t)n * GRAN, GRAN, 0, 0) == 0);
	for (int i = 0; i < n; i++) {
		CUmemGenericAllocationHandle hd;

		/* the application keeps only the mappings, as it may */
		CHECK(cu.create(&hd, GRAN, &pr, 0) == 0 && cu.map(va + (size_t)i * GRAN, GRAN, 0, hd, 0) == 0);
		cu.release(hd);
	}
	fds = proc_fds(0);
	EXPECT(nvb_gpu_register(g, va, (size_t)n * GRAN, 0, &b), -E2BIG);
	EXPECT(proc_fds(0), fds);
	OK(nvb_gpu_register(g, va + GRAN, (size_t)(n - 1) * GRAN, 0, &b));
	EXPECT(nvb_gpu_buf_chunks(b), NVB_GPU_REGISTER_MAX_CHUNKS);
	nvb_gpu_free(b);
	EXPECT(proc_fds(0), fds);
	return 0;
}

/* nvb_gpu_export and the metadata versions */
static int t_export_versions(void)
{
	struct nvb_fetch_opts fo = { .sz = sizeof(fo) };
	unsigned char blob[4096];
	struct nvb_gpu_meta meta;
	struct nvb_gpu_meta_range hd;
	struct nvb_gpu_buf *b, *s;
	struct nvb_gpu_map *m;
	struct nvb_entry ent;
	struct vmm v;
	int fd, efd;

	CHECK(setup() == 0);
	CHECK(vmm_make(&v, 2, GRAN, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == 0);
	/* one whole allocation: struct nvb_gpu_meta, importable by any version */
	OK(nvb_gpu_register(g, v.va, GRAN, 0, &b));
	OK(nvb_gpu_export(b, &fd, &meta));
	EXPECT(meta.magic, NVB_GPU_META_MAGIC);
	EXPECT(meta.alloc_size, GRAN);
	fake_random(P(v.va), 64);
	OK(nvb_gpu_import_fd(g, 0, fd, &meta, sizeof(meta), 0, &m));
	CHECK(!memcmp(P(nvb_gpu_map_ptr(m)), P(v.va), 64), "v1 import of a registered allocation");
	nvb_gpu_unmap(m);
	/* a sub-range: only through nvb_gpu_publish, as a range blob with its own magic */
	OK(nvb_gpu_register(g, v.va + 8, GRAN, 0, &s));
	EXPECT(nvb_gpu_export(s, &fd, &meta), -EOPNOTSUPP);
	OK(nvb_gpu_publish(g, h, "reg/ver", s, NVB_ACCESS_OWNER, NULL));
	CHECK(nvb_fetch(h, "reg/ver", &fo, blob, sizeof(blob), &ent, &efd) == 0);
	memcpy(&hd, blob, sizeof(hd));
	/* an importer that predates ranges checks for NVB_GPU_META_MAGIC: refused, not misread */
	CHECK(hd.magic == NVB_GPU_RANGE_MAGIC && hd.magic != NVB_GPU_META_MAGIC);
	EXPECT(hd.size, sizeof(hd));
	EXPECT(hd.nchunks, 2);
	EXPECT(hd.offset, 8);
	EXPECT(hd.len, GRAN);
	/* more than one allocation: nvb_gpu_import_fd alone cannot take it */
	EXPECT(nvb_gpu_import_fd(g, 0, efd, blob, ent.blob_len, 0, &m), -EOPNOTSUPP);
	CHECK(strstr(nvb_gpu_last_error(), "2 allocations"), "%s", nvb_gpu_last_error());
	close(efd);
	/* a name that leaves no room for the extra entries */
	char longname[64];
	memset(longname, 'n', 62);
	longname[62] = 0;
	EXPECT(nvb_gpu_publish(g, h, longname, s, NVB_ACCESS_OWNER, NULL), -ENAMETOOLONG);
	EXPECT(nvb_fetch(h, longname, &fo, NULL, 0, &ent, NULL), -ENOENT);
	nvb_gpu_free(s);
	nvb_gpu_free(b);
	vmm_drop(&v);
	return 0;
}

/* A chunk entry replaced under the range's feet: the importer refuses it (-ESTALE). */
static int t_chunk_swapped(void)
{
	struct nvb_fetch_opts fo = { .sz = sizeof(fo) };
	struct nvb_publish_opts po = { .sz = sizeof(po), .access = NVB_ACCESS_OWNER };
	unsigned char blob[4096];
	struct nvb_gpu_meta_chunk c1;
	struct nvb_gpu_buf *b;
	struct nvb_entry ent;
	struct vmm v, other;
	uint64_t id, nid;
	int st;
	pid_t c;

	CHECK(setup() == 0);
	CHECK(vmm_make(&v, 2, GRAN, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == 0);
	CHECK(vmm_make(&other, 1, GRAN, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == 0);
	OK(nvb_gpu_register(g, v.va, 2 * GRAN, 0, &b));
	OK(nvb_gpu_publish(g, h, "reg/swap", b, NVB_ACCESS_OWNER, &id));
	OK(nvb_fetch(h, "reg/swap", &fo, blob, sizeof(blob), &ent, NULL));
	memcpy(&c1, blob + sizeof(struct nvb_gpu_meta_range) + sizeof(c1), sizeof(c1));
	OK(nvb_unpublish(h, c1.entry_id, NULL));
	int ofd = -1;
	struct nvb_gpu_buf *ob;
	struct nvb_gpu_meta om;
	OK(nvb_gpu_register(g, other.va, GRAN, 0, &ob));
	OK(nvb_gpu_export(ob, &ofd, &om));
	OK(nvb_publish(h, "reg/swap:c1", ofd, NULL, 0, &po, &nid));
	c = fork();
	if (c == 0) {
		struct fake_peer pe;
		int r = fake_peer_import(&pe, "reg/swap", 0);

		if (!pe.h)
			_exit(2);
		printf("    importer: %d %s\n", r, nvb_gpu_last_error());
		_exit(r == -ESTALE && strstr(nvb_gpu_last_error(), "republished") ? 0 : 1);
	}
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "importer took the swapped chunk");
	OK(nvb_gpu_unpublish(g, h, id));
	nvb_gpu_free(ob);
	nvb_gpu_free(b);
	return 0;
}

/* ---- hostile metadata: nvb_gpu_import_fd() on blobs another process wrote ---- */

struct rblob {
	struct nvb_gpu_meta_range h;
	struct nvb_gpu_meta_chunk c[2];
};

static size_t rlen;	/* bytes of the blob rblob_init() built */

static void rblob_init(struct rblob *r, int chunks)
{
	memset(r, 0, sizeof(*r));
	rlen = sizeof(r->h) + (size_t)chunks * sizeof(r->c[0]);
	r->h.magic = NVB_GPU_RANGE_MAGIC;
	r->h.size = sizeof(r->h);
	r->h.kind = NVB_GPU_KIND_VMM;
	r->h.offset = 100;
	r->h.len = 1000;
	r->h.granularity = GRAN;
	r->h.nchunks = (uint32_t)chunks;
	r->h.chunk_size = sizeof(r->c[0]);
	for (int i = 0; i < 16; i++)
		r->h.uuid[i] = (uint8_t)(0xa0 + i);	/* the stand-in's device */
	for (int i = 0; i < chunks; i++) {
		r->c[i].offset = (uint64_t)i * GRAN;
		r->c[i].size = GRAN;
		r->c[i].entry_id = (uint64_t)i * 7;
		r->c[i].handle_types = NVB_GPU_HANDLE_POSIX_FD;
	}
}

static int import_blob(int fd, const void *blob, size_t len)
{
	struct nvb_gpu_map *m = (void *)1;
	int r = nvb_gpu_import_fd(g, 0, fd, blob, len, 0, &m);

	if (r == 0)
		nvb_gpu_unmap(m);
	else if (m != NULL)
		return -9999;	/* out must be cleared on failure */
	return r;
}

static int t_hostile_blobs(void)
{
	unsigned char big[sizeof(struct rblob) + 64];
	struct nvb_gpu_buf *b;
	struct nvb_gpu_meta meta;
	struct rblob r;
	struct vmm v;
	int fd, fds;

#define TRY(want, ...) do { rblob_init(&r, 1); __VA_ARGS__; \
		EXPECT(import_blob(fd, &r, rlen), want); } while (0)
	CHECK(setup() == 0);
	CHECK(vmm_make(&v, 1, GRAN, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == 0);
	OK(nvb_gpu_register(g, v.va, GRAN, 0, &b));
	OK(nvb_gpu_export(b, &fd, &meta));
	fds = proc_fds(0);
	TRY(0);					/* the well-formed one imports */
	TRY(-EINVAL, r.h.size = 8);
	TRY(-EINVAL, r.h.size = sizeof(r.h) + 4);	/* unaligned */
	TRY(-EINVAL, r.h.flags = 1);
	TRY(-EINVAL, r.h.kind = 9);
	TRY(-EINVAL, r.h.len = 0);
	TRY(-EINVAL, r.h.nchunks = 0);
	TRY(-EINVAL, r.h.nchunks = 0xffffffffu);	/* huge count */
	TRY(-EINVAL, r.h.nchunks = NVB_GPU_REGISTER_MAX_CHUNKS + 1);
	TRY(-EINVAL, r.h.chunk_size = 8);
	TRY(-EINVAL, r.h.chunk_size = 1U << 30);
	TRY(-EINVAL, r.h.granularity = 0);
	TRY(-EINVAL, r.h.granularity = 3 * MiB);
	TRY(-EINVAL, r.h.ipc_size = 4096);
	TRY(-EINVAL, r.c[0].offset = 4096);		/* a hole before the first chunk */
	TRY(-EINVAL, r.c[0].size = 0);
	TRY(-EINVAL, r.c[0].size = GRAN + 1);
	TRY(-EINVAL, r.c[0].handle_types = 0);
	TRY(-EINVAL, r.c[0].handle_types = NVB_GPU_HANDLE_POSIX_FD | (1U << 20));
	TRY(-EINVAL, r.c[0].flags = 2);
	TRY(-EINVAL, r.c[0].entry_id = 5);
	TRY(-EINVAL, r.h.offset = GRAN);		/* starts past the first chunk */
	TRY(-EINVAL, r.h.len = GRAN);			/* ends past the last */
	TRY(-EINVAL, r.h.offset = UINT64_MAX - 5);
	TRY(-EINVAL, r.h.len = UINT64_MAX - 50);	/* offset + len wraps */
	TRY(-EBADF, fd = -1);				/* no fd, no fabric handle */
	OK(nvb_gpu_export(b, &fd, &meta));
	/* bigger than the allocation: CUDA refuses (INVALID_VALUE) */
	TRY(-EINVAL, r.c[0].size = 2 * GRAN, r.h.len = GRAN);
	CHECK(strstr(nvb_gpu_last_error(), "cuMemMap"), "%s", nvb_gpu_last_error());
	/* two chunks: overlapping, a gap, wrapping sizes, a range ending before the last */
	TRY(-EINVAL, rblob_init(&r, 2), r.c[1].offset = 4096);
	TRY(-EINVAL, rblob_init(&r, 2), r.c[1].offset = 0);
	TRY(-EINVAL, rblob_init(&r, 2), r.c[1].offset = 2 * GRAN);
	TRY(-EINVAL, rblob_init(&r, 2), r.c[0].size = 1ULL << 63, r.c[1].offset = 1ULL << 63,
	    r.c[1].size = 1ULL << 63);
	TRY(-EINVAL, rblob_init(&r, 2));		/* len 1000 ends in chunk 0: chunk 1 unused */
	TRY(-EOPNOTSUPP, rblob_init(&r, 2), r.h.len = GRAN);	/* well-formed, needs 2 fds */
	/* truncated blobs */
	rblob_init(&r, 1);
	for (size_t n = 0; n < rlen; n += 3) {
		int ret = import_blob(fd, &r, n);

		CHECK(ret == -EMSGSIZE, "truncated to %zu bytes: %d", n, ret);
	}
	rblob_init(&r, 1);
	r.h.size = sizeof(r.h) + 64;			/* header larger than the blob */
	EXPECT(import_blob(fd, &r, sizeof(r.h) + sizeof(r.c[0])), -EMSGSIZE);
	rblob_init(&r, 1);
	r.h.nchunks = 2;				/* count beyond the blob */
	EXPECT(import_blob(fd, &r, sizeof(r.h) + sizeof(r.c[0])), -EMSGSIZE);
	/* a newer writer: bigger header and records, unknown tails ignored */
	rblob_init(&r, 1);
	memset(big, 0x77, sizeof(big));
	r.h.size = sizeof(r.h) + 16;
	r.h.chunk_size = sizeof(r.c[0]) + 16;
	memcpy(big, &r.h, sizeof(r.h));
	memcpy(big + sizeof(r.h) + 16, &r.c[0], sizeof(r.c[0]));
	EXPECT(import_blob(fd, big, sizeof(r.h) + 16 + sizeof(r.c[0]) + 16), 0);
	/* legacy handles: never with an fd, no chunks, inside the allocation */
	rblob_init(&r, 1);
	r.h.kind = NVB_GPU_KIND_LEGACY_IPC;
	r.h.nchunks = 0;
	r.h.ipc_size = 4096;
	EXPECT(import_blob(fd, &r, sizeof(r.h)), -EINVAL);
	CHECK(strstr(nvb_gpu_last_error(), "file descriptor"), "%s", nvb_gpu_last_error());
	r.h.nchunks = 1;
	EXPECT(import_blob(-1, &r, sizeof(r.h) + sizeof(r.c[0])), -EINVAL);
	r.h.nchunks = 0;
	r.h.len = 4000;
	EXPECT(import_blob(-1, &r, sizeof(r.h)), -EINVAL);	/* 100 + 4000 > 4096 */
	r.h.len = 10;
	r.h.offset = UINT64_MAX;
	EXPECT(import_blob(-1, &r, sizeof(r.h)), -EINVAL);
	r.h.offset = 0;
	EXPECT(import_blob(-1, &r, sizeof(r.h)), -EINVAL);	/* garbage handle: CUDA refuses */
	/* random corruption of a good blob: an errno or a mapping, never a crash */
	for (int i = 0; i < 3000; i++) {
		unsigned char x[3];
		int ret;

		rblob_init(&r, 1);
		fake_random(x, sizeof(x));
		((unsigned char *)&r)[x[0] % (sizeof(r.h) + sizeof(r.c[0]))] ^= (unsigned char)(1u << (x[1] % 8));
		if (x[2] & 1)
			((unsigned char *)&r)[x[2] % (sizeof(r.h) + sizeof(r.c[0]))] = x[1];
		ret = import_blob(fd, &r, sizeof(r.h) + sizeof(r.c[0]));
		CHECK(ret <= 0 && ret != -9999, "corruption %d: %d", i, ret);
	}
	EXPECT(proc_fds(0), fds);	/* no failed import kept a descriptor */
	nvb_gpu_free(b);
	vmm_drop(&v);
	return 0;
}

/*
 * examples/register.c against the stand-in: built next door (build/gpu)
 * where cuda.h exists; the example is the two processes and the checks.
 */
static int t_example(void)
{
	char exe[4096], path[4200];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	int st;
	pid_t c;

	CHECK(n > 0);
	exe[n] = 0;
	*strrchr(exe, '/') = 0;
	snprintf(path, sizeof(path), "%s/../gpu/nvb-example-register", exe);
	if (access(path, X_OK)) {
		printf("    skipped: %s not built (no cuda.h on this host)\n", path);
		return 0;
	}
	c = fork();
	if (c == 0) {
		setenv("NVBRIDGE_BACKEND", "broker", 1);
		setenv("NVBRIDGE_SOCKET", fake_sock, 1);
		execl(path, path, (char *)NULL);
		_exit(127);
	}
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "example: status %d", st);
	return 0;
}

/*
 * A registered range as a transfer segment: the peer opens it by name and
 * moves it with READ and WRITE batches (chunk entries, legacy handles and
 * range offsets behind nvb_gpu_seg_open), and a request past the range's
 * end is refused before any copy.
 */
static int seg_peer(const char *name, const unsigned char *want, size_t len)
{
	struct nvb_gpu_xfer_req r[2];
	struct nvb_gpu_batch *bt;
	struct nvb_gpu_seg *sg;
	struct nvb_gpu_buf *lb;
	struct fake_peer pe;
	struct nvb_gpu *g2;
	unsigned char *p;
	int st[2];

	OK(fake_peer_import(&pe, NULL, 0));
	g2 = pe.g;
	struct nvb_gpu_seg_open_opts oo = { .sz = sizeof(oo), .timeout_ns = 5000000000LL };

	if (nvb_gpu_seg_open(g2, pe.h, name, &oo, &sg))
		FAIL("seg_open %s: %s", name, nvb_gpu_last_error());
	EXPECT(nvb_gpu_seg_size(sg), len);
	OK(nvb_gpu_alloc(g2, 0, len, 0, &lb));
	p = P(nvb_gpu_buf_ptr(lb));
	memset(p, 0xa5, len);				/* poisoned */
	/* split in two requests at an odd offset */
	r[0] = (struct nvb_gpu_xfer_req){ .opcode = NVB_GPU_XFER_READ, .local = nvb_gpu_buf_ptr(lb),
					  .seg = sg, .offset = 0, .len = 4097 };
	r[1] = (struct nvb_gpu_xfer_req){ .opcode = NVB_GPU_XFER_READ,
					  .local = nvb_gpu_buf_ptr(lb) + 4097, .seg = sg,
					  .offset = 4097, .len = len - 4097 };
	OK(nvb_gpu_xfer_submit(g2, r, 2, NULL, &bt));
	OK(nvb_gpu_batch_wait(bt, 5000000000LL));
	OK(nvb_gpu_batch_status(bt, st, 2));
	CHECK(st[0] == 0 && st[1] == 0, "status %d %d", st[0], st[1]);
	nvb_gpu_batch_free(bt);
	for (size_t i = 0; i < len; i++)
		if (p[i] != want[i])
			FAIL("read byte %zu of %zu: %#x, want %#x", i, len, p[i], want[i]);
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)~want[i];
	r[0] = (struct nvb_gpu_xfer_req){ .opcode = NVB_GPU_XFER_WRITE, .local = nvb_gpu_buf_ptr(lb),
					  .seg = sg, .offset = 0, .len = len };
	OK(nvb_gpu_xfer_submit(g2, r, 1, NULL, &bt));
	OK(nvb_gpu_batch_wait(bt, 5000000000LL));
	OK(nvb_gpu_batch_status(bt, st, 1));
	EXPECT(st[0], 0);
	nvb_gpu_batch_free(bt);
	/* one byte past the registered range: refused, nothing queued */
	r[0].offset = 1;
	bt = (void *)1;
	EXPECT(nvb_gpu_xfer_submit(g2, r, 1, NULL, &bt), -ERANGE);
	CHECK(bt == NULL, "a refused batch handed out");
	nvb_gpu_seg_close(sg);
	nvb_gpu_free(lb);
	fake_peer_close(&pe);
	return 0;
}

/*
 * The peer is forked before the exporter's segment engine starts its
 * thread: a child forked from a threaded process may find the allocator
 * locked by a thread that does not exist in it (glibc's malloc guards
 * against that at fork, AddressSanitizer's in GCC 12 does not).
 */
static int seg_roundtrip(const char *name, uint64_t lo, size_t span, uint64_t ptr, size_t len)
{
	unsigned char *before = malloc(span);
	struct nvb_gpu_seg *sg;
	struct nvb_gpu_buf *b;
	int st, go[2];
	pid_t c;
	char x;

	CHECK(before != NULL && pipe(go) == 0);
	fake_random(P(lo), span);
	memcpy(before, P(lo), span);
	c = fork();
	if (c == 0) {
		close(go[1]);
		_exit(read(go[0], &x, 1) == 1 ? seg_peer(name, P(ptr), len) : 3);
	}
	close(go[0]);
	if (nvb_gpu_register(g, ptr, len, 0, &b))
		FAIL("register: %s", nvb_gpu_last_error());
	if (nvb_gpu_seg_publish(g, h, name, b, NULL, &sg))
		FAIL("seg_publish: %s", nvb_gpu_last_error());
	CHECK(write(go[1], "g", 1) == 1);
	close(go[1]);
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "peer failed");
	for (size_t i = 0; i < span; i++) {
		uint64_t a = lo + i;
		unsigned char want = (a >= ptr && a - ptr < len) ? (unsigned char)~before[i] : before[i];

		if (P(lo)[i] != want)
			FAIL("exporter byte %zu: %#x, want %#x", i, P(lo)[i], want);
	}
	nvb_gpu_seg_close(sg);
	nvb_gpu_free(b);
	free(before);
	return 0;
}

static int t_seg_vmm_multi(void)
{
	struct vmm v;

	CHECK(setup() == 0);
	/* 8 allocations: a range blob larger than a segment open's first fetch buffer */
	CHECK(vmm_make(&v, 8, GRAN, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == 0);
	return seg_roundtrip("reg/seg.multi", v.va, v.total, v.va + 333, 7 * GRAN + 4444);
}

static int t_seg_legacy(void)
{
	CUdeviceptr p;

	CHECK(setup() == 0);
	CHECK(cu.alloc(&p, 2 * MiB) == 0);
	return seg_roundtrip("reg/seg.legacy", p, 2 * MiB, p + 64, MiB + 3);
}

/*
 * nvb_gpu_buf_exported(): what an allocator that caches freed buffers asks
 * before reuse.  An export of the buffer, or a registration of memory in
 * it through ANOTHER struct nvb_gpu (Python's, while the allocator has its
 * own), marks it; an untouched buffer, and a new buffer at a freed one's
 * address, answer 0.
 */
static int t_buf_exported(void)
{
	struct nvb_gpu_buf *a, *b, *c, *r;
	struct nvb_gpu_meta meta;
	struct nvb_gpu *g, *g2;
	uint64_t ptr;
	int fd;

	OK(nvb_gpu_open(NULL, &g));
	OK(nvb_gpu_open(NULL, &g2));
	OK(nvb_gpu_alloc(g, 0, 4 << 20, 0, &a));
	OK(nvb_gpu_alloc(g, 0, 4 << 20, 0, &b));
	EXPECT(nvb_gpu_buf_exported(a), 0);
	EXPECT(nvb_gpu_buf_exported(b), 0);
	OK(nvb_gpu_export(a, &fd, &meta));
	EXPECT(nvb_gpu_buf_exported(a), 1);
	EXPECT(nvb_gpu_buf_exported(b), 0);		/* its neighbour is not */
	/* a tensor inside b, registered through another handle */
	OK(nvb_gpu_register(g2, nvb_gpu_buf_ptr(b) + 4096 + 3, 1 << 20, 0, &r));
	EXPECT(nvb_gpu_buf_exported(r), 1);
	EXPECT(nvb_gpu_buf_exported(b), 1);
	nvb_gpu_free(r);
	EXPECT(nvb_gpu_buf_exported(b), 1);		/* unregistering takes nothing back */
	/* a new buffer where b was: not b's history */
	ptr = nvb_gpu_buf_ptr(b);
	nvb_gpu_free(b);
	OK(nvb_gpu_alloc(g, 0, 4 << 20, 0, &c));
	if (nvb_gpu_buf_ptr(c) != ptr)
		printf("    (the new buffer is elsewhere: %#llx, was %#llx)\n",
		       (unsigned long long)nvb_gpu_buf_ptr(c), (unsigned long long)ptr);
	EXPECT(nvb_gpu_buf_exported(c), 0);
	/* a registration that fails (runs past the mapping) still marks what it exported */
	EXPECT(nvb_gpu_register(g2, nvb_gpu_buf_ptr(c), 64 << 20, 0, &r), -EFAULT);
	EXPECT(nvb_gpu_buf_exported(c), 1);
	strcpy((char *)nvb_gpu_last_error(), "poison");
	EXPECT(nvb_gpu_buf_exported(NULL), -EINVAL);
	CHECK(strstr(nvb_gpu_last_error(), "nvb_gpu_buf_exported"), "%s", nvb_gpu_last_error());
	nvb_gpu_free(c);
	nvb_gpu_free(a);
	nvb_gpu_close(g2);
	nvb_gpu_close(g);
	return 0;
}

static const struct nvb_case cases[] = {
	{ "vmm_single_allocation", t_vmm_single },
	{ "vmm_subrange", t_vmm_subrange },
	{ "vmm_multi_allocation", t_vmm_multi },
	{ "cumemalloc_legacy_ipc", t_legacy },
	{ "cumemalloc_two_tensors_one_open", t_legacy_shared_open },
	{ "revoke_on_unpublish", t_revoke_unpublish },
	{ "revoke_on_exporter_exit", t_revoke_exit },
	{ "register_errors", t_errors },
	{ "too_many_allocations", t_too_many_chunks },
	{ "export_and_metadata_versions", t_export_versions },
	{ "swapped_chunk_entry", t_chunk_swapped },
	{ "hostile_range_blobs", t_hostile_blobs },
	{ "example_program", t_example },
	{ "segment_over_vmm_range", t_seg_vmm_multi },
	{ "segment_over_legacy_memory", t_seg_legacy },
	{ "buf_exported", t_buf_exported },
};

int main(int argc, char **argv)
{
	return fake_main("gpu-register", cases, sizeof(cases) / sizeof(cases[0]), argc, argv, NULL);
}
