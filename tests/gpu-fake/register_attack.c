// SPDX-License-Identifier: MIT
/*
 * Attacks on nvb_gpu_register() ranges, through a private broker and the
 * stand-in libcuda: another local user squatting the derived chunk names
 * "<name>:c<i>", an importer in another user namespace (a container sharing
 * the IPC namespace), a malicious exporter whose entries and metadata the
 * importer takes in (wrong sizes, wrong ids, chunk entries with blobs or
 * without files, descriptor exhaustion), and a legacy IPC range claiming
 * more than its handle opened.  Every failure must leave no descriptor and
 * no mapping behind.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <grp.h>
#include <malloc.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "fake.h"
#include "cuda_api.h"

#define MiB (1UL << 20)
#define GRAN (2 * MiB)		/* the stand-in's granularity */
#define P(x) ((unsigned char *)(uintptr_t)(x))

static struct {
	CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
			   unsigned long long);
	CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
	CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
	CUresult (*alloc)(CUdeviceptr *, size_t);
	int (*mark)(uint64_t, size_t, int);
	CUresult (*ipcget)(CUipcMemHandle *, CUdeviceptr);
} cu;

static struct nvb_gpu *g;
static struct nvb *h;

static int setup(void)
{
	void *l;

	if (nvb_gpu_open(NULL, &g) || fake_nvb_open(&h))
		return -1;
	l = dlopen("libcuda.so.1", RTLD_NOW);
	if (!l)
		return -1;
	*(void **)&cu.create = dlsym(l, "cuMemCreate");
	*(void **)&cu.reserve = dlsym(l, "cuMemAddressReserve");
	*(void **)&cu.map = dlsym(l, "cuMemMap");
	*(void **)&cu.alloc = dlsym(l, "cuMemAlloc_v2");
	*(void **)&cu.mark = dlsym(l, "fakecuda_mark");
	*(void **)&cu.ipcget = dlsym(l, "cuIpcGetMemHandle");
	return cu.create && cu.reserve && cu.map && cu.alloc && cu.mark && cu.ipcget ? 0 : -1;
}

/* n VMM allocations of GRAN bytes mapped back to back, random contents: the base address. */
static CUdeviceptr vmm(int n)
{
	CUmemAllocationProp p = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
				  .requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
				  .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };
	CUmemGenericAllocationHandle a;
	CUdeviceptr va;

	if (cu.reserve(&va, (size_t)n * GRAN, GRAN, 0, 0))
		return 0;
	for (int i = 0; i < n; i++)
		if (cu.create(&a, GRAN, &p, 0) || cu.map(va + (size_t)i * GRAN, GRAN, 0, a, 0))
			return 0;
	fake_random(P(va), (size_t)n * GRAN);
	return va;
}

/*
 * Mappings of the stand-in's "device memory" (memfds) and reservations in
 * this process.  AddressSanitizer's allocator maps PROT_NONE guard regions
 * as it goes, so under it only the memfd mappings are counted (the plain
 * run counts reservations too).
 */
#if defined(__SANITIZE_ADDRESS__)
#define ASAN_GUARDS 1
#else
#define ASAN_GUARDS 0
#endif
static int live_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, "memfd:") != NULL || (!ASAN_GUARDS && strstr(line, " ---p ") != NULL);
	fclose(f);
	return n;
}

static int become(uid_t uid)
{
	return setgroups(0, NULL) || setgid(uid) || setuid(uid) ? -1 : 0;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), ok;

	if (fd < 0)
		return -1;
	ok = write(fd, s, strlen(s)) == (ssize_t)strlen(s);
	close(fd);
	return ok ? 0 : -1;
}

/* A memfd of n random bytes. */
static int memfd_rand(size_t n)
{
	int fd = memfd_create("attacker", MFD_CLOEXEC);
	unsigned char *p;

	if (fd < 0 || ftruncate(fd, (off_t)n))
		return -1;
	p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -1;
	fake_random(p, n);
	munmap(p, n);
	return fd;
}

/*
 * Imports name with fresh handles (in whatever user and namespace the
 * caller now is) and compares len bytes with want: 0, or the import's
 * errno, or 100 + a mismatch.
 */
static int import_check(const char *name, const unsigned char *want, size_t len)
{
	struct fake_peer pe;
	int r = fake_peer_import(&pe, name, 0);

	if (!pe.h)
		return 99;
	if (r) {
		printf("    import %s: %s\n", name, nvb_gpu_last_error());
		return -r;
	}
	if (nvb_gpu_map_size(pe.m) != len || memcmp(P(nvb_gpu_map_ptr(pe.m)), want, len))
		return 100;
	fake_peer_close(&pe);
	return 0;
}

static int child_status(pid_t c)
{
	int st;

	if (waitpid(c, &st, 0) != c || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/*
 * Another user publishes "<name>:c1" and "<name>:c2" (its own memory,
 * readable by all) before the victim publishes a three-allocation range
 * under name, and again after: importers of another uid, and root (who may
 * use every entry), still get the victim's bytes.
 */
static int t_chunk_names_squatted(void)
{
	int up[2], down[2];
	struct nvb_gpu_buf *b;
	CUdeviceptr va;
	pid_t att, c;
	char x;

	CHECK(setup() == 0 && pipe(up) == 0 && pipe(down) == 0);
	CHECK((va = vmm(3)) != 0);
	att = fork();
	if (att == 0) {
		struct nvb_publish_opts po = { .sz = sizeof(po), .access = NVB_ACCESS_SCOPE };
		struct nvb *ha;

		if (become(2201) || fake_nvb_open(&ha) ||
		    nvb_publish(ha, "ra/sq:c1", memfd_rand(GRAN), NULL, 0, &po, NULL) ||
		    nvb_publish(ha, "ra/sq:c2", memfd_rand(GRAN), NULL, 0, &po, NULL) ||
		    write(up[1], "a", 1) != 1 || read(down[0], &x, 1) != 1)
			_exit(2);
		/* after the victim: the same names again, from a second connection */
		struct nvb *hb;
		if (fake_nvb_open(&hb) ||
		    nvb_publish(hb, "ra/sq:c1", memfd_rand(GRAN), NULL, 0, &po, NULL) != -EEXIST)
			_exit(3);
		if (write(up[1], "b", 1) != 1 || read(down[0], &x, 1) != 1)
			_exit(4);
		_exit(0);
	}
	CHECK(read(up[0], &x, 1) == 1, "attacker did not publish");
	OK(nvb_gpu_register(g, va + 4096, 3 * GRAN - 8192, 0, &b));
	OK(nvb_gpu_publish(g, h, "ra/sq", b, NVB_ACCESS_SCOPE, NULL));
	CHECK(write(down[1], "x", 1) == 1 && read(up[0], &x, 1) == 1);
	for (int who = 0; who < 2; who++) {
		c = fork();
		if (c == 0)
			_exit(who && become(2202) ? 98 : import_check("ra/sq", P(va + 4096), 3 * GRAN - 8192));
		EXPECT(child_status(c), 0);
	}
	CHECK(write(down[1], "x", 1) == 1);
	EXPECT(child_status(att), 0);
	nvb_gpu_free(b);
	return 0;
}

/*
 * Enters a new user namespace as uid 2100 mapped to 100: root, who
 * publishes, is not mapped there, so fetches report its uid as the
 * overflow uid.  77: no user namespaces on this host.
 */
static int enter_userns(void)
{
	if (become(2100))
		return 98;
	prctl(PR_SET_DUMPABLE, 1);
	if (unshare(CLONE_NEWUSER))
		return 77;
	if (write_file("/proc/self/uid_map", "100 2100 1") || write_file("/proc/self/setgroups", "deny") ||
	    write_file("/proc/self/gid_map", "100 2100 1"))
		return 97;
	return 0;
}

/*
 * An importer in another user namespace that shares the IPC namespace (a
 * container with --ipc=host and remapped ids) imports a range over three
 * allocations, as it imports a single one.  The publisher's uid reads as
 * the overflow uid there, which no NVB_FETCH_EXPECT_UID can name; the
 * chunk entries' ids are what ties them to the range.  A user who squats
 * the chunk names then can only make the import fail, never hand it its
 * own memory.
 */
static int t_userns_importer(void)
{
	struct nvb_gpu_buf *one, *three;
	CUdeviceptr a, b;
	int r;
	pid_t c;

	CHECK(setup() == 0);
	CHECK((a = vmm(1)) != 0 && (b = vmm(3)) != 0);
	OK(nvb_gpu_register(g, a + 100, GRAN - 200, 0, &one));
	OK(nvb_gpu_publish(g, h, "ra/ns1", one, NVB_ACCESS_SCOPE, NULL));
	OK(nvb_gpu_register(g, b + 100, 3 * GRAN - 200, 0, &three));
	OK(nvb_gpu_publish(g, h, "ra/ns3", three, NVB_ACCESS_SCOPE, NULL));
	c = fork();
	if (c == 0) {
		r = enter_userns();
		if (!r)
			r = import_check("ra/ns1", P(a + 100), GRAN - 200);
		if (!r)
			r = import_check("ra/ns3", P(b + 100), 3 * GRAN - 200) + 10;
		_exit(r);
	}
	r = child_status(c);
	if (r == 77) {
		printf("    skip: unshare(CLONE_NEWUSER) refused\n");
		return 0;
	}
	CHECK(r != 10 + EINVAL, "multi-allocation import refused in another user namespace (-EINVAL)");
	EXPECT(r, 10);
	/* a squatter of the chunk name, visible to the importer: an error, never its memory */
	c = fork();
	if (c == 0) {
		struct nvb_publish_opts po = { .sz = sizeof(po), .access = NVB_ACCESS_SCOPE };
		struct nvb *ha;
		int p[2];
		char x;

		if (pipe(p))
			_exit(2);
		pid_t att = fork();
		if (att == 0) {
			close(p[0]);
			if (become(2203) || fake_nvb_open(&ha) ||
			    nvb_publish(ha, "ra/ns3:c1", memfd_rand(GRAN), NULL, 0, &po, NULL) ||
			    write(p[1], "a", 1) != 1)
				_exit(2);
			pause();
			_exit(0);
		}
		close(p[1]);
		if (read(p[0], &x, 1) != 1)
			_exit(3);
		r = enter_userns();
		if (!r)
			r = import_check("ra/ns3", P(b + 100), 3 * GRAN - 200);
		kill(att, SIGKILL);
		_exit(r == 100 ? 100 : r ? 1 : 0);
	}
	r = child_status(c);
	CHECK(r != 100, "the importer mapped the squatter's memory");
	CHECK(r == 0 || r == 1, "status %d", r);
	nvb_gpu_free(one);
	nvb_gpu_free(three);
	return 0;
}

/* ---- a malicious exporter: its own entries, hand-made metadata ---- */

struct rb {
	struct nvb_gpu_meta_range h;
	struct nvb_gpu_meta_chunk c[3];
};

/* A well-formed three-chunk blob for chunk entries ids[1], ids[2]. */
static size_t rb_init(struct rb *r, const uint64_t *ids)
{
	memset(r, 0, sizeof(*r));
	r->h.magic = NVB_GPU_RANGE_MAGIC;
	r->h.size = sizeof(r->h);
	r->h.kind = NVB_GPU_KIND_VMM;
	r->h.offset = 10;
	r->h.len = 3 * GRAN - 20;
	r->h.granularity = GRAN;
	r->h.nchunks = 3;
	r->h.chunk_size = sizeof(r->c[0]);
	for (int i = 0; i < 16; i++)
		r->h.uuid[i] = (uint8_t)(0xa0 + i);
	for (int i = 0; i < 3; i++) {
		r->c[i].offset = (uint64_t)i * GRAN;
		r->c[i].size = GRAN;
		r->c[i].entry_id = i ? ids[i] : 0;
		r->c[i].handle_types = NVB_GPU_HANDLE_POSIX_FD;
	}
	return sizeof(*r);
}

/*
 * In a child: imports name 20 times, each failing with want, leaving no
 * descriptor or mapping behind.  emfile: only two descriptors are free
 * (the range's own and one chunk's), so a chunk's fetch runs out.
 */
static int import_fails_clean(const char *name, int want, int emfile, const char *msg)
{
	struct nvb_gpu_map *m;
	struct fake_peer pe;
	int fds, maps, r;
	pid_t c = fork();

	if (c == 0) {
		if (fake_peer_import(&pe, NULL, 0))
			_exit(99);
		if (emfile) {	/* no holes below the limit: the next fds are the last two */
			int top = -1, fd;
			struct rlimit rl;

			for (fd = 0; fd < 4096; fd++)
				if (fcntl(fd, F_GETFD) >= 0)
					top = fd;
			while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0 && fd < top)
				;
			if (fd > top)
				close(fd);
			rl.rlim_cur = rl.rlim_max = (rlim_t)top + 3;
			if (setrlimit(RLIMIT_NOFILE, &rl))
				_exit(98);
		} else {
			/* the first failure may allocate what later ones reuse */
			nvb_gpu_import(pe.g, pe.h, name, 0, 0, &m);
		}
		fds = proc_fds(0);
		maps = live_maps();
		for (int i = 0; i < 20; i++) {
			m = (void *)1;
			r = nvb_gpu_import(pe.g, pe.h, name, 0, 0, &m);
			if (r != want || m != NULL || (msg && !strstr(nvb_gpu_last_error(), msg))) {
				printf("    %s: %d (%s), want %d (%s)\n", name, r, nvb_gpu_last_error(), want,
				       msg ? msg : "");
				_exit(1);
			}
		}
		if (proc_fds(0) != fds || live_maps() != maps) {
			printf("    %s: fds %d -> %d, mappings %d -> %d\n", name, fds, proc_fds(0), maps,
			       live_maps());
			_exit(2);
		}
		_exit(0);
	}
	return child_status(c);
}

static int t_malicious_exporter(void)
{
	struct nvb_publish_opts po = { .sz = sizeof(po), .access = NVB_ACCESS_OWNER };
	uint64_t ids[3], other;
	struct rb r;

	CHECK(setup() == 0);
	/* chunk 2's allocation is half what the metadata says: cuMemMap refuses it */
	OK(nvb_publish(h, "ra/small:c1", memfd_rand(GRAN), NULL, 0, &po, &ids[1]));
	OK(nvb_publish(h, "ra/small:c2", memfd_rand(GRAN / 2), NULL, 0, &po, &ids[2]));
	rb_init(&r, ids);
	OK(nvb_publish(h, "ra/small", memfd_rand(GRAN), &r, sizeof(r), &po, NULL));
	EXPECT(import_fails_clean("ra/small", -EINVAL, 0, "cuMemMap"), 0);
	/* the metadata names another entry of the same user: -ESTALE */
	OK(nvb_publish(h, "ra/other", memfd_rand(GRAN), NULL, 0, &po, &other));
	OK(nvb_publish(h, "ra/id:c1", memfd_rand(GRAN), NULL, 0, &po, &ids[1]));
	OK(nvb_publish(h, "ra/id:c2", memfd_rand(GRAN), NULL, 0, &po, &ids[2]));
	ids[2] = other;
	rb_init(&r, ids);
	OK(nvb_publish(h, "ra/id", memfd_rand(GRAN), &r, sizeof(r), &po, NULL));
	EXPECT(import_fails_clean("ra/id", -ESTALE, 0, "republished"), 0);
	/* a chunk entry with a blob (no descriptor comes with -EMSGSIZE), one without a file */
	OK(nvb_publish(h, "ra/blob:c1", memfd_rand(GRAN), NULL, 0, &po, &ids[1]));
	OK(nvb_publish(h, "ra/blob:c2", memfd_rand(GRAN), &r, 16, &po, &ids[2]));
	rb_init(&r, ids);
	OK(nvb_publish(h, "ra/blob", memfd_rand(GRAN), &r, sizeof(r), &po, NULL));
	EXPECT(import_fails_clean("ra/blob", -EMSGSIZE, 0, NULL), 0);
	OK(nvb_publish(h, "ra/nofd:c1", memfd_rand(GRAN), NULL, 0, &po, &ids[1]));
	OK(nvb_publish(h, "ra/nofd:c2", -1, NULL, 0, &po, &ids[2]));
	rb_init(&r, ids);
	OK(nvb_publish(h, "ra/nofd", memfd_rand(GRAN), &r, sizeof(r), &po, NULL));
	EXPECT(import_fails_clean("ra/nofd", -ESTALE, 0, "holds no file"), 0);
	/* a chunk entry missing */
	OK(nvb_publish(h, "ra/gone:c1", memfd_rand(GRAN), NULL, 0, &po, &ids[1]));
	ids[2] = ids[1] + 1000;
	rb_init(&r, ids);
	OK(nvb_publish(h, "ra/gone", memfd_rand(GRAN), &r, sizeof(r), &po, NULL));
	EXPECT(import_fails_clean("ra/gone", -ENOENT, 0, NULL), 0);
	/* well-formed, but the importer runs out of descriptors half way */
	OK(nvb_publish(h, "ra/ok:c1", memfd_rand(GRAN), NULL, 0, &po, &ids[1]));
	OK(nvb_publish(h, "ra/ok:c2", memfd_rand(GRAN), NULL, 0, &po, &ids[2]));
	rb_init(&r, ids);
	OK(nvb_publish(h, "ra/ok", memfd_rand(GRAN), &r, sizeof(r), &po, NULL));
	EXPECT(import_fails_clean("ra/ok", -EMFILE, 1, NULL), 0);
	return 0;
}

/*
 * A legacy IPC range's metadata claims an allocation larger than the one
 * its handle opens.  The handle is the truth: when the importer cannot
 * learn what opened (cuMemGetAddressRange fails; here: the stand-in's
 * table of ranges is full, so it does not know the mapping it made), the
 * import must fail, not trust the metadata and hand out a mapping that
 * runs past what CUDA mapped.
 */
static int t_legacy_range_unchecked(void)
{
	struct nvb_fetch_opts fo = { .sz = sizeof(fo) };
	struct nvb_gpu_meta_range hd;
	struct nvb_gpu_buf *b;
	struct nvb_entry ent;
	unsigned char blob[512];
	CUdeviceptr p;
	pid_t c;

	CHECK(setup() == 0);
	CHECK(cu.alloc(&p, MiB) == 0);
	OK(nvb_gpu_register(g, p, MiB, 0, &b));
	OK(nvb_gpu_publish(g, h, "ra/legacy", b, NVB_ACCESS_OWNER, NULL));
	OK(nvb_fetch(h, "ra/legacy", &fo, blob, sizeof(blob), &ent, NULL));
	memcpy(&hd, blob, sizeof(hd));
	hd.ipc_size = 1ULL << 40;
	hd.len = 64 * MiB;
	memcpy(blob, &hd, sizeof(hd));
	c = fork();
	if (c == 0) {	/* CUDA opens a handle only in another process */
		struct nvb_gpu_map *m = NULL;
		struct nvb_gpu *g2;
		uint64_t at = 1ULL << 44;
		int r;

		if (nvb_gpu_open(NULL, &g2))
			_exit(99);
		/* the honest check first: the handle opened MiB bytes */
		r = nvb_gpu_import_fd(g2, 0, -1, blob, ent.blob_len, 0, &m);
		if (r != -EINVAL || m) {
			printf("    with a working cuMemGetAddressRange: %d\n", r);
			_exit(1);
		}
		while (cu.mark(at, 4096, 4) == 0)	/* fill the stand-in's table */
			at += 4096;
		r = nvb_gpu_import_fd(g2, 0, -1, blob, ent.blob_len, 0, &m);
		if (r == 0) {
			printf("    imported: %zu bytes mapped over a %lu-byte allocation\n",
			       nvb_gpu_map_size(m), MiB);
			_exit(2);
		}
		printf("    refused: %d %s\n", r, nvb_gpu_last_error());
		_exit(0);
	}
	EXPECT(child_status(c), 0);
	nvb_gpu_free(b);
	return 0;
}

/*
 * What an importer is given is whole allocations, whatever sub-range was
 * registered (nvb_gpu_register(3), SECURITY): the bytes around the range
 * (other tensors of the segment) are in its mapping of a VMM range, and
 * in what its legacy IPC handle opened.  Checked so that the man page
 * stays true.
 */
static int t_whole_allocation(void)
{
	struct nvb_gpu_buf *bv, *bl;
	CUdeviceptr va, p;
	pid_t c;

	CHECK(setup() == 0);
	CHECK((va = vmm(1)) != 0 && cu.alloc(&p, MiB) == 0);
	fake_random(P(p), MiB);
	OK(nvb_gpu_register(g, va + 12345, 1000, 0, &bv));
	OK(nvb_gpu_register(g, p + 4096, 1000, 0, &bl));
	OK(nvb_gpu_publish(g, h, "ra/wv", bv, NVB_ACCESS_OWNER, NULL));
	OK(nvb_gpu_publish(g, h, "ra/wl", bl, NVB_ACCESS_OWNER, NULL));
	c = fork();
	if (c == 0) {
		struct nvb_gpu_map *mv, *ml;
		struct fake_peer pe;

		if (fake_peer_import(&pe, "ra/wv", 0) || nvb_gpu_import(pe.g, pe.h, "ra/wl", 0, 0, &ml))
			_exit(2);
		mv = pe.m;
		if (nvb_gpu_map_size(mv) != 1000 || nvb_gpu_map_size(ml) != 1000)
			_exit(3);
		/* the whole first allocation, and the whole cudaMalloc allocation */
		if (memcmp(P(nvb_gpu_map_ptr(mv) - 12345), P(va), GRAN) ||
		    memcmp(P(nvb_gpu_map_ptr(ml) - 4096), P(p), MiB))
			_exit(4);
		_exit(0);
	}
	EXPECT(child_status(c), 0);
	nvb_gpu_free(bv);
	nvb_gpu_free(bl);
	return 0;
}

/*
 * Every block this program frees passes here: while a secret is armed,
 * count the blocks that still hold it (libnvbridge and the stand-in
 * resolve free() to this definition).
 */
static unsigned char secret[24];
static int secret_armed, secret_freed;

/*
 * AddressSanitizer owns free() (and poisons freed blocks, so reading them
 * is what it reports): the gpu-fake-asan run skips this case.
 */
#if defined(__SANITIZE_ADDRESS__)
#define FREE_HOOK_SKIP "free() interposition does not combine with AddressSanitizer"
#else
extern void __libc_free(void *p);

void free(void *p)
{
	if (p && secret_armed && memmem(p, malloc_usable_size(p), secret, sizeof(secret)))
		secret_freed++;
	__libc_free(p);
}
#endif

/*
 * A legacy IPC handle is a bearer token: no block the library gives back
 * to the allocator may still hold it, where any later allocation of the
 * process (and a core dump) would find it: not while the exporter
 * registers, publishes, unpublishes and unregisters, nor while the
 * importer imports, unmaps, trims its cache and closes its GPU handle.
 */
static int t_legacy_handle_wiped(void)
{
	struct nvb_gpu_buf *b;
	CUipcMemHandle ipc;
	CUdeviceptr p;
	uint64_t id;
	int st[1], exp;
	pid_t c;

#if defined(__SANITIZE_ADDRESS__)
	printf("    %s\n", FREE_HOOK_SKIP);
	return NVB_CASE_SKIP;
#endif
	CHECK(setup() == 0);
	CHECK(cu.alloc(&p, MiB) == 0 && cu.ipcget(&ipc, p) == 0);
	memcpy(secret, &ipc, sizeof(secret));	/* the stand-in's handle: magic, pid, fd, size */
	memset(&ipc, 0, sizeof(ipc));
	secret_armed = 1;
	OK(nvb_gpu_register(g, p + 64, 4096, 0, &b));
	OK(nvb_gpu_publish(g, h, "ra/token", b, NVB_ACCESS_OWNER, &id));
	c = fork();
	if (c == 0) {
		struct fake_peer pe;

		secret_armed = 0;
		if (fake_peer_import(&pe, NULL, 0))
			_exit(99);
		secret_freed = 0;
		secret_armed = 1;
		if (nvb_gpu_import(pe.g, pe.h, "ra/token", 0, 0, &pe.m))
			_exit(98);
		nvb_gpu_unmap(pe.m);
		nvb_gpu_cache_trim(pe.g);
		nvb_gpu_close(pe.g);
		secret_armed = 0;
		_exit(secret_freed);
	}
	st[0] = child_status(c);
	OK(nvb_gpu_unpublish(g, h, id));
	nvb_gpu_free(b);
	secret_armed = 0;
	exp = secret_freed;
	CHECK(st[0] == 0 && exp == 0, "freed blocks holding the handle: importer %d, exporter %d", st[0], exp);
	return 0;
}

/*
 * nvb_gpu_publish() of a three-allocation range fails half way (the name,
 * or one of its chunk names, already published by the same user): the
 * chunk entries it did publish are withdrawn, and no descriptor is left.
 */
static int t_publish_fails_half_way(void)
{
	struct nvb_publish_opts po = { .sz = sizeof(po), .access = NVB_ACCESS_OWNER };
	struct nvb_fetch_opts fo = { .sz = sizeof(fo) };
	struct nvb_gpu_buf *b;
	struct nvb_entry ent;
	CUdeviceptr va;
	uint64_t id;
	int fds;

	CHECK(setup() == 0);
	CHECK((va = vmm(3)) != 0);
	OK(nvb_gpu_register(g, va, 3 * GRAN, 0, &b));
	OK(nvb_publish(h, "ra/pf", -1, &po, sizeof(po), &po, NULL));
	OK(nvb_publish(h, "ra/pg:c2", -1, &po, sizeof(po), &po, NULL));
	fds = proc_fds(0);
	for (int i = 0; i < 10; i++) {
		EXPECT(nvb_gpu_publish(g, h, "ra/pf", b, NVB_ACCESS_OWNER, &id), -EEXIST);
		EXPECT(nvb_fetch(h, "ra/pf:c1", &fo, NULL, 0, &ent, NULL), -ENOENT);
		EXPECT(nvb_fetch(h, "ra/pf:c2", &fo, NULL, 0, &ent, NULL), -ENOENT);
		EXPECT(nvb_gpu_publish(g, h, "ra/pg", b, NVB_ACCESS_OWNER, &id), -EEXIST);
		EXPECT(nvb_fetch(h, "ra/pg:c1", &fo, NULL, 0, &ent, NULL), -ENOENT);
		EXPECT(nvb_fetch(h, "ra/pg", &fo, NULL, 0, &ent, NULL), -ENOENT);
	}
	EXPECT(proc_fds(0), fds);
	OK(nvb_unpublish(h, 0, "ra/pg:c2"));
	OK(nvb_gpu_publish(g, h, "ra/pg", b, NVB_ACCESS_OWNER, &id));	/* and then it works */
	OK(nvb_gpu_unpublish(g, h, id));
	EXPECT(proc_fds(0), fds);
	nvb_gpu_free(b);
	return 0;
}

/*
 * The exporter republishes a name over and over, alternating between two
 * three-allocation ranges, while an importer imports it in a loop: every
 * import that succeeds holds one range whole (no chunk of the other slips
 * in between the fetch of the name and those of its chunks); the others
 * fail with -ESTALE or -ENOENT.
 */
static int t_republish_race(void)
{
	struct nvb_gpu_buf *b[2];
	CUdeviceptr va[2];
	size_t len = 3 * GRAN - 2;
	int up[2], st, ok = 0, stale = 0;
	pid_t c;
	char x;

	CHECK(setup() == 0 && pipe(up) == 0);
	CHECK((va[0] = vmm(3)) != 0 && (va[1] = vmm(3)) != 0);
	for (int k = 0; k < 2; k++)
		OK(nvb_gpu_register(g, va[k] + 1, len, 0, &b[k]));
	c = fork();
	if (c == 0) {
		struct fake_peer pe;
		int n[4] = { 0, 0, 0, 0 };

		if (fake_peer_import(&pe, NULL, 0) || read(up[0], &x, 1) != 1)
			_exit(99);
		for (int i = 0; i < 300; i++) {
			struct nvb_gpu_map *m;
			int r = nvb_gpu_import(pe.g, pe.h, "ra/race", 100000000LL, 0, &m);

			if (r == -ESTALE || r == -ENOENT || r == -ETIMEDOUT) {
				n[r == -ESTALE ? 2 : 3]++;
				continue;
			}
			if (r)
				_exit(2);
			if (nvb_gpu_map_size(m) != len)
				_exit(3);
			if (!memcmp(P(nvb_gpu_map_ptr(m)), P(va[0] + 1), len))
				n[0]++;
			else if (!memcmp(P(nvb_gpu_map_ptr(m)), P(va[1] + 1), len))
				n[1]++;
			else
				_exit(4);	/* a mix of the two */
			nvb_gpu_unmap(m);
			nvb_gpu_cache_trim(pe.g);
		}
		printf("    importer: %d of A, %d of B, %d -ESTALE, %d gone\n", n[0], n[1], n[2], n[3]);
		_exit(0);
	}
	CHECK(write(up[1], "g", 1) == 1);
	for (int i = 0; waitpid(c, &st, WNOHANG) == 0; i++) {
		uint64_t id;

		if (nvb_gpu_publish(g, h, "ra/race", b[i & 1], NVB_ACCESS_OWNER, &id) == 0) {
			ok++;
			usleep(200);
			nvb_gpu_unpublish(g, h, id);
		} else {
			stale++;
		}
	}
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "importer: status %#x", st);
	CHECK(ok > 10, "%d publications, %d failed", ok, stale);
	nvb_gpu_free(b[0]);
	nvb_gpu_free(b[1]);
	return 0;
}

/*
 * uid 2205 publishes its own buffer under a name before the victim (uid
 * 2204) does.  nvb_gpu_import(), which takes any publisher, hands an
 * importer (uid 2203) the squatter's memory; nvb_gpu_import_with() naming
 * the victim waits for and gets the victim's bytes, even when that
 * importer's cache already holds the squatter's mapping under the name;
 * its default (the importer's own euid) sees neither.
 */
static int squat_pub(uid_t uid, const char *name, unsigned char fill, int go, int done)
{
	struct nvb_gpu_buf *b;
	struct nvb_gpu *gs;
	struct nvb *hs;
	char x;

	if (become(uid) || read(go, &x, 1) != 1 || nvb_gpu_open(NULL, &gs) || fake_nvb_open(&hs) ||
	    nvb_gpu_alloc(gs, 0, GRAN, 0, &b))
		return 2;
	memset(P(nvb_gpu_buf_ptr(b)), fill, GRAN);
	if (nvb_gpu_publish(gs, hs, name, b, NVB_ACCESS_SCOPE, NULL) || write(done, "p", 1) != 1)
		return 3;
	pause();		/* the entry lives as long as this process */
	return 0;
}

static int t_main_name_squatted(void)
{
	int sgo[2], sdone[2], vgo[2], vdone[2], st;
	struct nvb_gpu_import_opts io = { .sz = sizeof(io) };
	struct nvb_gpu_map *m, *m2;
	struct fake_peer pe;
	struct nvb_gpu *gi;
	struct nvb *hi;
	pid_t sq, vic, imp;
	char x;

	/*
	 * libcuda (the stand-in) is loaded here, before the children change
	 * uid: a tree under a 0700 directory (a clone in /root) is not
	 * readable by the test uids.
	 */
	CHECK(setup() == 0);
	CHECK(pipe(sgo) == 0 && pipe(sdone) == 0 && pipe(vgo) == 0 && pipe(vdone) == 0);
	sq = fork();
	if (sq == 0)
		_exit(squat_pub(2205, "ra/main", 0x55, sgo[0], sdone[1]));
	vic = fork();
	if (vic == 0)
		_exit(squat_pub(2204, "ra/main", 0x77, vgo[0], vdone[1]));
	close(sdone[1]);	/* a publisher that dies is an EOF, not a hang */
	close(vdone[1]);
	CHECK(write(sgo[1], "g", 1) == 1 && read(sdone[0], &x, 1) == 1, "squatter did not publish");
	imp = fork();
	if (imp == 0) {
		/* any publisher: the squatter's memory, and now in the cache */
		if (become(2203))
			_exit(10);
		st = fake_peer_import(&pe, "ra/main", 0);
		if (!pe.h)
			_exit(10);
		gi = pe.g;
		hi = pe.h;
		m = pe.m;
		if (st || P(nvb_gpu_map_ptr(m))[0] != 0x55)
			_exit(11);
		/* the importer's own euid by default: nobody's */
		if (nvb_gpu_import_with(gi, hi, "ra/main", NULL, &m2) != -ENOENT)
			_exit(12);
		if (write(vgo[1], "g", 1) != 1 || read(vdone[0], &x, 1) != 1)
			_exit(13);
		io.flags = NVB_GPU_IMPORT_OWNER_UID;
		io.owner_uid = 2204;
		io.timeout_ns = 5000000000LL;
		if (nvb_gpu_import_with(gi, hi, "ra/main", &io, &m2)) {
			printf("    import_with: %s\n", nvb_gpu_last_error());
			_exit(14);
		}
		if (m2 == m || P(nvb_gpu_map_ptr(m2))[0] != 0x77 || P(nvb_gpu_map_ptr(m2))[GRAN - 1] != 0x77)
			_exit(15);
		/* argument checks */
		io.flags = 0;
		if (nvb_gpu_import_with(gi, hi, "ra/main", &io, &m2) != -EINVAL)
			_exit(16);	/* owner_uid without OWNER_UID */
		io.flags = NVB_GPU_IMPORT_OWNER_UID | NVB_GPU_IMPORT_ANY_OWNER;
		if (nvb_gpu_import_with(gi, hi, "ra/main", &io, &m2) != -EINVAL)
			_exit(17);
		io.flags = 1U << 30;
		io.owner_uid = 0;
		if (nvb_gpu_import_with(gi, hi, "ra/main", &io, &m2) != -EINVAL)
			_exit(18);
		_exit(0);
	}
	st = child_status(imp);
	kill(sq, SIGKILL);
	kill(vic, SIGKILL);
	waitpid(sq, NULL, 0);
	waitpid(vic, NULL, 0);
	EXPECT(st, 0);
	return 0;
}

static const struct nvb_case cases[] = {
	{ "chunk_names_squatted_by_another_user", t_chunk_names_squatted },
	{ "importer_in_another_user_namespace", t_userns_importer },
	{ "malicious_exporter_entries", t_malicious_exporter },
	{ "legacy_range_past_what_opened", t_legacy_range_unchecked },
	{ "importer_gets_whole_allocations", t_whole_allocation },
	{ "legacy_handle_wiped_when_freed", t_legacy_handle_wiped },
	{ "publish_fails_half_way", t_publish_fails_half_way },
	{ "republish_race", t_republish_race },
	{ "main_name_squatted_import_with", t_main_name_squatted },
};

int main(int argc, char **argv)
{
	return fake_main("gpu-register-attack", cases, sizeof(cases) / sizeof(cases[0]), argc, argv, NULL);
}
