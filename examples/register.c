// SPDX-License-Identifier: MIT
/*
 * Example: share memory the application allocated itself.
 *
 *   nvb-example-register
 *
 * The exporter allocates as an application does, with the CUDA driver API:
 * two VMM allocations (cuMemCreate) mapped back to back by itself, as
 * PyTorch's expandable segments are, and a cuMemAlloc buffer (what
 * cudaMalloc gives).  It fills both with pseudo-random bytes, registers a
 * range that starts inside the first VMM allocation and ends inside the
 * second (a tensor inside an allocator's segment), and the whole cuMemAlloc
 * buffer, with nvb_gpu_register(), and publishes them.
 * The importer, a second process, imports both by name, copies each into
 * a buffer of its own (nvb_gpu_copy), checks every byte, and writes the
 * complement back; the exporter checks that it sees it.
 *
 * The two processes are forked before either touches CUDA (a CUDA context
 * does not survive fork).  Rendezvous: /dev/nvbridge, else nvbridged
 * (NVBRIDGE_BACKEND, NVBRIDGE_SOCKET as for every nvbridge program).  Build:
 *   cc register.c $(pkg-config --cflags --libs libnvbridge) -I/usr/local/cuda/include \
 *      -L/usr/local/cuda/lib64/stubs -lcuda
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cuda.h>
#include <nvbridge.h>
#include <nvbridge_gpu.h>

#define VMM_LEN	(3u << 20)			/* registered: 1.5 MiB each side of the seam */
#define LEG_LEN	((1u << 20) + 123)	/* the whole cuMemAlloc buffer */

static int cu_ok(CUresult r, const char *what)
{
	const char *s = NULL;

	if (r == CUDA_SUCCESS)
		return 1;
	cuGetErrorName(r, &s);
	fprintf(stderr, "%s: %s\n", what, s ? s : "CUDA error");
	return 0;
}

#define CU(call) do { if (!cu_ok((call), #call)) return 1; } while (0)
#define NVB(call) do { int e_ = (call); if (e_) { fprintf(stderr, "%s: %s (%s)\n", #call, \
		strerror(-e_), nvb_gpu_last_error()); return 1; } } while (0)

/* Both sides compute the contents from the seed the exporter sends. */
static void pattern(unsigned char *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		p[i] = (unsigned char)seed;
	}
}

static int context(CUcontext *ctx)
{
	CUdevice dev;

	CU(cuInit(0));
	CU(cuDeviceGet(&dev, 0));
	CU(cuDevicePrimaryCtxRetain(ctx, dev));
	CU(cuCtxSetCurrent(*ctx));
	return 0;
}

/* Imports name, checks it against the pattern through a copy, writes the complement back. */
static int check_one(struct nvb_gpu *g, struct nvb *h, const char *name, size_t len, uint64_t seed)
{
	unsigned char *want = malloc(len), *got = malloc(len);
	struct nvb_gpu_map *m;
	struct nvb_gpu_buf *local;
	void *stream = NULL;	/* the default stream */

	if (!want || !got)
		return 1;
	NVB(nvb_gpu_import(g, h, name, 10000000000LL, 0, &m));
	if (nvb_gpu_map_size(m) != len) {
		fprintf(stderr, "%s: %zu bytes, want %zu\n", name, nvb_gpu_map_size(m), len);
		return 1;
	}
	NVB(nvb_gpu_alloc(g, 0, len, 0, &local));
	NVB(nvb_gpu_copy(g, nvb_gpu_buf_ptr(local), nvb_gpu_map_ptr(m), len, &stream, 1, 0));
	CU(cuCtxSynchronize());
	CU(cuMemcpyDtoH(got, nvb_gpu_buf_ptr(local), len));
	pattern(want, len, seed);
	for (size_t i = 0; i < len; i++)
		if (got[i] != want[i]) {
			fprintf(stderr, "%s: byte %zu is %#x, want %#x\n", name, i, got[i], want[i]);
			return 1;
		}
	for (size_t i = 0; i < len; i++)
		want[i] = (unsigned char)~want[i];
	CU(cuMemcpyHtoD(nvb_gpu_buf_ptr(local), want, len));
	NVB(nvb_gpu_copy(g, nvb_gpu_map_ptr(m), nvb_gpu_buf_ptr(local), len, &stream, 1, 0));
	CU(cuCtxSynchronize());
	printf("importer: %s: %zu bytes checked (%s), complement written back\n", name, len,
	       nvb_gpu_map_handle_type(m) == NVB_GPU_HANDLE_LEGACY_IPC ? "legacy IPC handle" : "VMM fd");
	nvb_gpu_unmap(m);	/* after the synchronize: no work uses it any more */
	nvb_gpu_free(local);
	free(want);
	free(got);
	return 0;
}

static int importer(int rfd, const char *vname, const char *lname)
{
	struct nvb_gpu *g;
	struct nvb *h;
	CUcontext ctx;
	uint64_t seed;

	if (read(rfd, &seed, sizeof(seed)) != sizeof(seed))
		return 1;	/* the exporter failed before publishing */
	if (context(&ctx))
		return 1;
	NVB(nvb_gpu_open(NULL, &g));
	NVB(nvb_open(NULL, &h));
	if (check_one(g, h, vname, VMM_LEN, seed) || check_one(g, h, lname, LEG_LEN, seed + 1))
		return 1;
	nvb_close(h);
	nvb_gpu_close(g);
	return 0;
}

/*
 * The application's own VMM memory: two allocations of *chunk bytes
 * (cuMemCreate) mapped back to back in one reservation, each given access.
 */
static int vmm_alloc(size_t *chunk, CUmemGenericAllocationHandle mh[2], CUdeviceptr *va)
{
	CUmemAllocationProp prop = { 0 };
	CUmemAccessDesc acc = { 0 };
	size_t gran;

	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;	/* exportable */
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = 0;
	CU(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED));
	*chunk = (VMM_LEN / 2 + 1 + gran - 1) / gran * gran;
	CU(cuMemAddressReserve(va, 2 * *chunk, gran, 0, 0));
	acc.location = prop.location;
	acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	for (int i = 0; i < 2; i++) {
		CU(cuMemCreate(&mh[i], *chunk, &prop, 0));
		CU(cuMemMap(*va + i * *chunk, *chunk, 0, mh[i], 0));
		CU(cuMemSetAccess(*va + i * *chunk, *chunk, &acc, 1));
	}
	return 0;
}

/* Registers, publishes, waits for the importer, checks the write-back. */
static int share(struct nvb_gpu *g, struct nvb *h, const char *name, CUdeviceptr ptr, size_t len,
		 uint64_t seed, uint64_t *id, struct nvb_gpu_buf **b)
{
	unsigned char *p = malloc(len);

	if (!p)
		return 1;
	pattern(p, len, seed);
	CU(cuMemcpyHtoD(ptr, p, len));
	free(p);
	NVB(nvb_gpu_register(g, ptr, len, 0, b));
	NVB(nvb_gpu_publish(g, h, name, *b, NVB_ACCESS_OWNER, id));
	printf("exporter: %s: %zu bytes registered (%s, %u allocation(s)) and published\n", name, len,
	       nvb_gpu_buf_kind(*b) == NVB_GPU_KIND_VMM ? "VMM" : "cuMemAlloc, legacy IPC",
	       nvb_gpu_buf_chunks(*b));
	return 0;
}

static int check_back(const char *name, CUdeviceptr ptr, size_t len, uint64_t seed)
{
	unsigned char *want = malloc(len), *got = malloc(len);

	if (!want || !got)
		return 1;
	pattern(want, len, seed);
	CU(cuMemcpyDtoH(got, ptr, len));
	for (size_t i = 0; i < len; i++)
		if (got[i] != (unsigned char)~want[i]) {
			fprintf(stderr, "%s: byte %zu not written back\n", name, i);
			return 1;
		}
	printf("exporter: %s: the importer's write-back is here\n", name);
	free(want);
	free(got);
	return 0;
}

static int exporter(int wfd, pid_t child, const char *vname, const char *lname)
{
	CUmemGenericAllocationHandle mh[2];
	struct nvb_gpu_buf *vb, *lb;
	struct nvb_gpu *g;
	struct nvb *h;
	CUdeviceptr va, vp, dp;
	CUcontext ctx;
	uint64_t seed, vid, lid;
	size_t chunk;
	int st;

	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed) || context(&ctx) ||
	    vmm_alloc(&chunk, mh, &va))
		return 1;
	vp = va + chunk - VMM_LEN / 2;	/* the "tensor": across the seam of the two allocations */
	CU(cuMemAlloc(&dp, LEG_LEN));
	NVB(nvb_gpu_open(NULL, &g));
	NVB(nvb_open(NULL, &h));
	if (share(g, h, vname, vp, VMM_LEN, seed, &vid, &vb) ||
	    share(g, h, lname, dp, LEG_LEN, seed + 1, &lid, &lb))
		return 1;
	if (write(wfd, &seed, sizeof(seed)) != sizeof(seed))
		return 1;
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "importer failed\n");
		return 1;
	}
	if (check_back(vname, vp, VMM_LEN, seed) || check_back(lname, dp, LEG_LEN, seed + 1))
		return 1;
	/* withdraw, then unregister: the application's memory stays, it frees it itself */
	NVB(nvb_gpu_unpublish(g, h, vid));
	NVB(nvb_gpu_unpublish(g, h, lid));
	nvb_gpu_free(vb);
	nvb_gpu_free(lb);
	nvb_close(h);
	nvb_gpu_close(g);
	for (int i = 0; i < 2; i++) {
		CU(cuMemUnmap(va + i * chunk, chunk));
		CU(cuMemRelease(mh[i]));
	}
	CU(cuMemAddressFree(va, 2 * chunk));
	CU(cuMemFree(dp));
	return 0;
}

int main(void)
{
	char vname[64], lname[64];
	int p[2], r;
	pid_t c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(vname, sizeof(vname), "example/register/%d/vmm", (int)getpid());
	snprintf(lname, sizeof(lname), "example/register/%d/cumemalloc", (int)getpid());
	if (pipe(p))
		return 1;
	c = fork();
	if (c < 0)
		return 1;
	if (c == 0) {
		close(p[1]);
		r = importer(p[0], vname, lname);
		fflush(stdout);
		_exit(r);
	}
	close(p[0]);
	r = exporter(p[1], c, vname, lname);
	close(p[1]);
	if (r)
		waitpid(c, NULL, 0);
	printf("%s\n", r ? "FAILED" : "OK: both registered ranges shared, copied and checked");
	return r;
}
