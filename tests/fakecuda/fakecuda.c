// SPDX-License-Identifier: MIT
/*
 * A stand-in for libcuda.so.1 where there is no GPU: "device memory" is a
 * memfd mapped into host memory, so the real GPU layer of libnvbridge (VMM
 * create, export as a POSIX fd, import, reserve, map, unmap, release) and
 * the Python package's GPU path above it run end to end on a build host.
 * It proves the plumbing (descriptors, fds, lifetimes, revocation), not
 * CUDA: no kernels, copies are memcpy, stream waits do not block.  The
 * FABRIC handle type is refused with NOT_PERMITTED, as on an H100 without
 * an IMEX channel, so the POSIX_FD fallback is what runs.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cuda_api.h"

#define API __attribute__((visibility("default"))) CUresult

static __thread CUcontext cur;
static int fake_ndev(void);	/* devices: 1, or $NVB_FAKE_DEVICES (multi-device block, at the end) */
static void fake_import_gate(void);	/* $NVB_FAKE_IMPORT_GATE (import gate block, at the end) */
/* VA calls counted (nvb_gpu_seg_open_many block, at the end): 0 reserve, 1 free, 2 access */
static void fake_va_count(int what, CUdeviceptr p, size_t size);
/* stream capture (block at the end): 1 when s is capturing and the op must not run, *r its result */
static int fake_capture_op(CUstream s, int legal, CUresult *r);
#define CAPTURED(s, legal) do { CUresult r_; if (fake_capture_op((s), (legal), &r_)) return r_; } while (0)
#define FAKE_CTX(d)	((CUcontext)(uintptr_t)(0x1000 + 0x100 * (d)))	/* device d's primary context */

API cuInit(unsigned int f) { (void)f; return CUDA_SUCCESS; }
API cuDriverGetVersion(int *v) { *v = 12080; return CUDA_SUCCESS; }
API cuGetErrorName(CUresult e, const char **s) { (void)e; *s = "CUDA_ERROR_FAKE"; return CUDA_SUCCESS; }
API cuGetErrorString(CUresult e, const char **s) { (void)e; *s = "fake libcuda"; return CUDA_SUCCESS; }
API cuDeviceGet(CUdevice *d, int i) { if (i < 0 || i >= fake_ndev()) return CUDA_ERROR_INVALID_DEVICE; *d = i; return CUDA_SUCCESS; }
API cuDeviceGetCount(int *n) { *n = fake_ndev(); return CUDA_SUCCESS; }
API cuDeviceGetName(char *n, int len, CUdevice d) { (void)d; strncpy(n, "fake GPU (host memory)", len); n[len - 1] = 0; return CUDA_SUCCESS; }
static CUresult uuid(CUuuid *u, CUdevice d) { for (int i = 0; i < 16; i++) u->bytes[i] = (char)(0xa0 + i); u->bytes[0] = (char)(0xa0 + 0x10 * d); return CUDA_SUCCESS; }
API cuDeviceGetUuid_v2(CUuuid *u, CUdevice d) { return uuid(u, d); }
API cuDeviceGetUuid(CUuuid *u, CUdevice d) { return uuid(u, d); }
API cuDeviceGetAttribute(int *v, int a, CUdevice d) { (void)d; *v = a == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR ? 9 : 1; return CUDA_SUCCESS; }
API cuDeviceCanAccessPeer(int *c, CUdevice d, CUdevice p) { (void)d; (void)p; *c = 1; return CUDA_SUCCESS; }
static int primary_refs;
API cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) { primary_refs++; *c = FAKE_CTX(d); return CUDA_SUCCESS; }
API cuDevicePrimaryCtxRelease_v2(CUdevice d) { (void)d; if (primary_refs) primary_refs--; return CUDA_SUCCESS; }
API cuDevicePrimaryCtxGetState(CUdevice d, unsigned int *f, int *active) { (void)d; *f = 0; *active = primary_refs > 0; return CUDA_SUCCESS; }
API cuCtxSetCurrent(CUcontext c) { cur = c; return CUDA_SUCCESS; }
API cuCtxGetCurrent(CUcontext *c) { *c = cur; return CUDA_SUCCESS; }
API cuCtxGetDevice(CUdevice *d) { if (!cur) return 201; *d = (CUdevice)(((uintptr_t)cur - 0x1000) / 0x100); return CUDA_SUCCESS; }
API cuCtxSynchronize(void) { return CUDA_SUCCESS; }
API cuCtxEnablePeerAccess(CUcontext p, unsigned int f) { (void)p; (void)f; return CUDA_SUCCESS; }
API cuMemGetInfo_v2(size_t *f, size_t *t) { *f = 1UL << 30; *t = 2UL << 30; return CUDA_SUCCESS; }
API cuMemAllocHost_v2(void **p, size_t n) { *p = calloc(1, n); return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY; }
API cuMemFreeHost(void *p) { free(p); return CUDA_SUCCESS; }
#define PTR(x) ((void *)(uintptr_t)(x))
API cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) { memcpy(PTR(d), s, n); return CUDA_SUCCESS; }
API cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n) { memcpy(d, PTR(s), n); return CUDA_SUCCESS; }
API cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *s, size_t n, CUstream st) { CAPTURED(st, 1); memcpy(PTR(d), s, n); return CUDA_SUCCESS; }
API cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st) { CAPTURED(st, 1); memmove(PTR(d), PTR(s), n); return CUDA_SUCCESS; }
API cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream st) { CAPTURED(st, 1); memset(PTR(d), v, n); return CUDA_SUCCESS; }
API cuMemsetD32Async(CUdeviceptr d, unsigned int v, size_t n, CUstream st) { CAPTURED(st, 1); for (size_t i = 0; i < n; i++) ((uint32_t *)PTR(d))[i] = v; return CUDA_SUCCESS; }

/* VMM: a handle is a memfd (+1, so that 0 is never a handle); cuMemCreate is below. */
API cuMemRelease(CUmemGenericAllocationHandle h) { close((int)h - 1); return CUDA_SUCCESS; }
API cuMemExportToShareableHandle(void *sh, CUmemGenericAllocationHandle h, int type, unsigned long long f)
{
	(void)f;
	if (type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
		return CUDA_ERROR_NOT_PERMITTED;
	*(int *)sh = dup((int)h - 1);
	return *(int *)sh < 0 ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;
}
API cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *h, void *os, int type)
{
	int fd;

	if (type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
		return CUDA_ERROR_NOT_SUPPORTED;
	fake_import_gate();
	fd = fcntl((int)(uintptr_t)os, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return CUDA_ERROR_INVALID_HANDLE;
	*h = (CUmemGenericAllocationHandle)fd + 1;
	return CUDA_SUCCESS;
}
API cuMemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *p, int o) { (void)p; (void)o; *g = 2UL << 20; return CUDA_SUCCESS; }
API cuMemAddressReserve(CUdeviceptr *p, size_t size, size_t align, CUdeviceptr addr, unsigned long long f)
{
	void *m;

	(void)align; (void)addr; (void)f;
	m = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*p = (CUdeviceptr)(uintptr_t)m;
	fake_va_count(0, *p, size);
	return CUDA_SUCCESS;
}
API cuMemAddressFree(CUdeviceptr p, size_t size) { fake_va_count(1, p, size); munmap(PTR(p), size); return CUDA_SUCCESS; }
API cuMemSetAccess(CUdeviceptr p, size_t s, const CUmemAccessDesc *d, size_t n) { (void)d; (void)n; fake_va_count(2, p, s); return CUDA_SUCCESS; }

/* Streams and events: everything is synchronous already. */
API cuStreamCreate(CUstream *s, unsigned int f) { (void)f; *s = (CUstream)(uintptr_t)0x2000; return CUDA_SUCCESS; }
API cuStreamDestroy_v2(CUstream s) { (void)s; return CUDA_SUCCESS; }
API cuStreamSynchronize(CUstream s) { CAPTURED(s, 0); return CUDA_SUCCESS; }
API cuStreamQuery(CUstream s) { (void)s; return CUDA_SUCCESS; }
API cuStreamWaitEvent(CUstream s, CUevent e, unsigned int f) { (void)s; (void)e; (void)f; return CUDA_SUCCESS; }
API cuStreamWriteValue32_v2(CUstream s, CUdeviceptr a, uint32_t v, unsigned int f) { CAPTURED(s, 1); (void)f; __atomic_store_n((uint32_t *)PTR(a), v, __ATOMIC_RELEASE); return CUDA_SUCCESS; }
API cuStreamWaitValue32_v2(CUstream s, CUdeviceptr a, uint32_t v, unsigned int f) { (void)s; (void)a; (void)v; (void)f; return CUDA_SUCCESS; }
API cuEventCreate(CUevent *e, unsigned int f) { (void)f; *e = (CUevent)(uintptr_t)0x3000; return CUDA_SUCCESS; }
API cuEventDestroy_v2(CUevent e) { (void)e; return CUDA_SUCCESS; }
API cuEventRecord(CUevent e, CUstream s) { (void)e; (void)s; return CUDA_SUCCESS; }
API cuEventSynchronize(CUevent e) { (void)e; return CUDA_SUCCESS; }
API cuEventQuery(CUevent e) { (void)e; return CUDA_SUCCESS; }
API cuEventElapsedTime_v2(float *ms, CUevent a, CUevent b) { (void)a; (void)b; *ms = 0; return CUDA_SUCCESS; }

/* No kernels here: the library falls back to the copy-engine paths. */
API cuModuleLoadData(CUmodule *m, const void *i) { (void)m; (void)i; return CUDA_ERROR_NOT_SUPPORTED; }
API cuModuleUnload(CUmodule m) { (void)m; return CUDA_SUCCESS; }
API cuModuleGetFunction(CUfunction *f, CUmodule m, const char *n) { (void)f; (void)m; (void)n; return CUDA_ERROR_NOT_SUPPORTED; }
API cuFuncGetAttribute(int *v, int a, CUfunction f) { (void)v; (void)a; (void)f; return CUDA_ERROR_NOT_SUPPORTED; }
API cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
		   unsigned int by, unsigned int bz, unsigned int smem, CUstream s, void **p, void **e)
{
	(void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)smem; (void)s; (void)p; (void)e;
	return CUDA_ERROR_NOT_SUPPORTED;
}

/*
 * ---- registration of existing memory (nvb_gpu_register) ----
 *
 * What the GPU layer asks about memory it did not allocate: pointer
 * attributes, address ranges, the allocation handle behind a VMM mapping
 * and its properties, and legacy IPC handles for cuMemAlloc memory.  So
 * the driver can answer, cuMemCreate remembers the requested handle types,
 * cuMemMap / cuMemUnmap keep a table of mappings, and cuMemAlloc memory is
 * a memfd whose IPC handle names /proc/<pid>/fd/<n>: a second process
 * opening it really shares the bytes, as cuIpcOpenMemHandle does.
 * fakecuda_mark() (tests only) makes a range look like pinned host or
 * managed memory, which the registration must refuse.
 */
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>

#define FAKE_MAX 1024
struct fake_range {
	CUdeviceptr base;
	size_t size;
	int fd;		/* VMM map / cuMemAlloc: the memfd; IPC open, marks: -1 */
	int kind;	/* 1 VMM map, 2 cuMemAlloc, 3 IPC open, 4 host mark, 5 managed mark */
	CUcontext ctx;	/* IPC open: the context it was opened in */
};
static struct fake_range ranges[FAKE_MAX];
static struct {
	ino_t ino;
	int types;
} created[FAKE_MAX];
static pthread_mutex_t fake_lock = PTHREAD_MUTEX_INITIALIZER;

struct fake_ipc {
	char magic[8];
	int32_t pid;
	int32_t fd;
	uint64_t size;
};

static struct fake_range *range_add(CUdeviceptr base, size_t size, int fd, int kind)
{
	for (int i = 0; i < FAKE_MAX; i++)
		if (!ranges[i].kind) {
			ranges[i] = (struct fake_range){ base, size, fd, kind, cur };
			return &ranges[i];
		}
	return NULL;
}

/* The range containing p (marks first: they stand for other memory). */
static struct fake_range *range_find(CUdeviceptr p)
{
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < FAKE_MAX; i++)
			if (ranges[i].kind && (ranges[i].kind >= 4) == !pass &&
			    p >= ranges[i].base && p - ranges[i].base < ranges[i].size)
				return &ranges[i];
	return NULL;
}

static ino_t fd_ino(int fd)
{
	struct stat st;

	return fstat(fd, &st) ? 0 : st.st_ino;
}

API cuMemCreate(CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *p, unsigned long long f)
{
	int fd;

	(void)f;
	if (p->requestedHandleTypes & CU_MEM_HANDLE_TYPE_FABRIC)
		return CUDA_ERROR_NOT_PERMITTED;
	fd = memfd_create("fakecuda", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size)) {
		if (fd >= 0)
			close(fd);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	pthread_mutex_lock(&fake_lock);
	/* an inode number is reused once its memfd is gone: overwrite the old slot */
	for (int i = 0, pass = 0; pass < 2; i = 0, pass++)
		for (; i < FAKE_MAX; i++)
			if (created[i].ino == (pass ? 0 : fd_ino(fd))) {
				created[i].ino = fd_ino(fd);
				created[i].types = p->requestedHandleTypes;
				pass = 2;
				break;
			}
	pthread_mutex_unlock(&fake_lock);
	*h = (CUmemGenericAllocationHandle)fd + 1;
	return CUDA_SUCCESS;
}

API cuMemMap(CUdeviceptr p, size_t size, size_t off, CUmemGenericAllocationHandle h, unsigned long long f)
{
	CUresult r = CUDA_SUCCESS;

	(void)f;
	/* a size larger than the allocation fails here, as cuMemMap does */
	if (lseek((int)h - 1, 0, SEEK_END) < (off_t)(off + size))
		return CUDA_ERROR_INVALID_VALUE;
	if (mmap(PTR(p), size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, (int)h - 1, (off_t)off) == MAP_FAILED)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&fake_lock);
	if (!range_add(p, size, fcntl((int)h - 1, F_DUPFD_CLOEXEC, 0), 1))
		r = CUDA_ERROR_OUT_OF_MEMORY;
	pthread_mutex_unlock(&fake_lock);
	return r;
}

API cuMemUnmap(CUdeviceptr p, size_t size)
{
	pthread_mutex_lock(&fake_lock);
	for (int i = 0; i < FAKE_MAX; i++)
		if (ranges[i].kind == 1 && ranges[i].base >= p && ranges[i].base - p < size) {
			close(ranges[i].fd);
			ranges[i].kind = 0;
		}
	pthread_mutex_unlock(&fake_lock);
	return mmap(PTR(p), size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED ?
		CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

API cuMemAlloc_v2(CUdeviceptr *p, size_t n)
{
	size_t sz = (n + 4095) & ~(size_t)4095;
	int fd = memfd_create("fakecuda-alloc", MFD_CLOEXEC);
	void *m;

	if (fd < 0 || !n || ftruncate(fd, (off_t)sz)) {
		if (fd >= 0)
			close(fd);
		return n ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_ERROR_INVALID_VALUE;
	}
	m = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		close(fd);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	pthread_mutex_lock(&fake_lock);
	range_add((CUdeviceptr)(uintptr_t)m, n, fd, 2);
	pthread_mutex_unlock(&fake_lock);
	*p = (CUdeviceptr)(uintptr_t)m;
	return CUDA_SUCCESS;
}

API cuMemFree_v2(CUdeviceptr p)
{
	struct fake_range *r;

	pthread_mutex_lock(&fake_lock);
	r = range_find(p);
	if (!r || r->kind != 2 || r->base != p) {
		pthread_mutex_unlock(&fake_lock);
		return CUDA_ERROR_INVALID_VALUE;
	}
	munmap(PTR(p), (r->size + 4095) & ~(size_t)4095);
	close(r->fd);
	r->kind = 0;
	pthread_mutex_unlock(&fake_lock);
	return CUDA_SUCCESS;
}

API cuIpcGetMemHandle(CUipcMemHandle *h, CUdeviceptr p)
{
	struct fake_ipc ipc = { "fakeipc", (int32_t)getpid(), -1, 0 };
	struct fake_range *r;

	pthread_mutex_lock(&fake_lock);
	r = range_find(p);
	if (r && r->kind == 2 && r->base == p) {
		ipc.fd = r->fd;
		ipc.size = r->size;
	}
	pthread_mutex_unlock(&fake_lock);
	if (ipc.fd < 0)
		return CUDA_ERROR_INVALID_VALUE;
	memset(h, 0, sizeof(*h));
	memcpy(h, &ipc, sizeof(ipc));
	return CUDA_SUCCESS;
}

API cuIpcOpenMemHandle_v2(CUdeviceptr *p, CUipcMemHandle h, unsigned int f)
{
	struct fake_ipc ipc;
	char path[64];
	void *m;
	int fd;

	(void)f;
	memcpy(&ipc, &h, sizeof(ipc));
	if (memcmp(ipc.magic, "fakeipc", 8) || !ipc.size)
		return CUDA_ERROR_INVALID_VALUE;
	if (ipc.pid == (int32_t)getpid())	/* as CUDA: not in the exporting process */
		return CUDA_ERROR_INVALID_CONTEXT;
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)ipc.pid, (int)ipc.fd);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return CUDA_ERROR_INVALID_HANDLE;
	m = mmap(NULL, ipc.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return CUDA_ERROR_INVALID_HANDLE;
	pthread_mutex_lock(&fake_lock);
	range_add((CUdeviceptr)(uintptr_t)m, ipc.size, -1, 3);
	pthread_mutex_unlock(&fake_lock);
	*p = (CUdeviceptr)(uintptr_t)m;
	return CUDA_SUCCESS;
}

API cuIpcCloseMemHandle(CUdeviceptr p)
{
	struct fake_range *r;

	pthread_mutex_lock(&fake_lock);
	r = range_find(p);
	if (!r || r->kind != 3 || r->base != p) {
		pthread_mutex_unlock(&fake_lock);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (r->ctx != cur) {	/* the mapping belongs to the context that opened it */
		pthread_mutex_unlock(&fake_lock);
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	munmap(PTR(p), r->size);
	r->kind = 0;
	pthread_mutex_unlock(&fake_lock);
	return CUDA_SUCCESS;
}

API cuPointerGetAttribute(void *data, int attr, CUdeviceptr p)
{
	struct fake_range r0, *r;
	uint64_t v;

	pthread_mutex_lock(&fake_lock);
	r = range_find(p);
	if (r)
		r0 = *r;
	pthread_mutex_unlock(&fake_lock);
	if (!r)
		return CUDA_ERROR_INVALID_VALUE;	/* memory CUDA does not know */
	switch (attr) {
	case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
		*(unsigned int *)data = r0.kind == 4 ? CU_MEMORYTYPE_HOST : CU_MEMORYTYPE_DEVICE;
		return CUDA_SUCCESS;
	case CU_POINTER_ATTRIBUTE_IS_MANAGED:	/* a bool: one byte, as the driver writes */
		*(unsigned char *)data = r0.kind == 5;
		return CUDA_SUCCESS;
	case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
		*(unsigned char *)data = r0.kind == 2;
		return CUDA_SUCCESS;
	case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
		*(int *)data = 0;
		return CUDA_SUCCESS;
	case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
	case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
		if (r0.kind != 1)
			return CUDA_ERROR_INVALID_VALUE;
		v = attr == CU_POINTER_ATTRIBUTE_MAPPING_SIZE ? r0.size : r0.base;
		memcpy(data, &v, sizeof(v));
		return CUDA_SUCCESS;
	}
	return CUDA_ERROR_INVALID_VALUE;
}

API cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr p)
{
	struct fake_range *r;
	CUresult ret = CUDA_ERROR_NOT_FOUND;

	pthread_mutex_lock(&fake_lock);
	r = range_find(p);
	if (r && r->kind <= 3) {
		if (base)
			*base = r->base;
		if (size)
			*size = r->size;
		ret = CUDA_SUCCESS;
	}
	pthread_mutex_unlock(&fake_lock);
	return ret;
}

API cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *h, void *addr)
{
	struct fake_range *r;
	int fd = -1;

	pthread_mutex_lock(&fake_lock);
	r = range_find((CUdeviceptr)(uintptr_t)addr);
	if (r && r->kind == 1)
		fd = fcntl(r->fd, F_DUPFD_CLOEXEC, 0);
	pthread_mutex_unlock(&fake_lock);
	if (fd < 0)
		return CUDA_ERROR_INVALID_VALUE;
	*h = (CUmemGenericAllocationHandle)fd + 1;
	return CUDA_SUCCESS;
}

API cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop, CUmemGenericAllocationHandle h)
{
	ino_t ino = fd_ino((int)h - 1);

	if (!ino)
		return CUDA_ERROR_INVALID_HANDLE;
	memset(prop, 0, sizeof(*prop));
	prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop->requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;	/* imported */
	pthread_mutex_lock(&fake_lock);
	for (int i = 0; i < FAKE_MAX; i++)
		if (created[i].ino == ino)
			prop->requestedHandleTypes = created[i].types;
	pthread_mutex_unlock(&fake_lock);
	return CUDA_SUCCESS;
}

/* Tests only: [p, p + n) answers as pinned host (kind 4) or managed (5) memory; 0 clears. */
__attribute__((visibility("default"))) int fakecuda_mark(uint64_t p, size_t n, int kind)
{
	int ret = 0;

	pthread_mutex_lock(&fake_lock);
	for (int i = 0; i < FAKE_MAX; i++)
		if (ranges[i].kind >= 4 && ranges[i].base == p)
			ranges[i].kind = 0;
	if (kind && !range_add(p, n, -1, kind))
		ret = -1;
	pthread_mutex_unlock(&fake_lock);
	return ret;
}

/*
 * Segments and transfers (libnvbridge/gpu/segment.c, xfer.c): host
 * functions and batched copies.  A host function runs at once, as when the
 * stream is idle; with NVB_FAKE_HOSTFN_DELAY_MS=N in the environment it
 * runs N ms later on a thread of its own, as the driver's callback thread
 * would once the copies before it are done: the window in which a test
 * kills a peer "mid-batch" or closes the GPU layer with batches in flight.
 */
#include <pthread.h>

static void fake_hostfn_linger(void);	/* the block "callback threads linger" at the end */

struct fake_hostfn {
	void (*fn)(void *);
	void *arg;
	unsigned int ms;
};

static void *fake_hostfn_run(void *p)
{
	struct fake_hostfn *h = p;

	usleep(h->ms * 1000u);
	h->fn(h->arg);
	free(h);
	fake_hostfn_linger();
	return NULL;
}

API cuLaunchHostFunc(CUstream s, void (*fn)(void *), void *arg)
{
	const char *d = getenv("NVB_FAKE_HOSTFN_DELAY_MS");
	struct fake_hostfn *h;
	pthread_t t;

	CAPTURED(s, 1);	/* a host node of the graph: not run now */
	if (getenv("NVB_FAKE_STREAM_ERROR"))	/* as CUDA: never called after a context error */
		return CUDA_SUCCESS;
	if (!d || !atoi(d)) {
		fn(arg);
		return CUDA_SUCCESS;
	}
	h = malloc(sizeof(*h));
	if (!h)
		return CUDA_ERROR_OUT_OF_MEMORY;
	h->fn = fn;
	h->arg = arg;
	h->ms = (unsigned int)atoi(d);
	if (pthread_create(&t, NULL, fake_hostfn_run, h)) {
		free(h);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	pthread_detach(t);
	return CUDA_SUCCESS;
}

API cuMemcpyBatchAsync_v2(CUdeviceptr *dsts, CUdeviceptr *srcs, size_t *sizes, size_t count,
			  CUmemcpyAttributes *attrs, size_t *attrsIdxs, size_t numAttrs, CUstream st)
{
	(void)attrs; (void)attrsIdxs; (void)numAttrs;
	CAPTURED(st, 1);
	for (size_t i = 0; i < count; i++)
		memmove(PTR(dsts[i]), PTR(srcs[i]), sizes[i]);
	return CUDA_SUCCESS;
}

/*
 * ---- stream callbacks (segments: batch completion after a context error) ----
 * cuStreamAddCallback: called with $NVB_FAKE_STREAM_ERROR (a CUresult) as
 * its status when set, as CUDA calls it after a device error; delayed by
 * NVB_FAKE_HOSTFN_DELAY_MS like cuLaunchHostFunc.
 */
struct fake_cb {
	void (*cb)(CUstream, CUresult, void *);
	CUstream s;
	void *arg;
	CUresult r;
	unsigned int ms;
};

static void *fake_cb_run(void *p)
{
	struct fake_cb *c = p;

	usleep(c->ms * 1000u);
	c->cb(c->s, c->r, c->arg);
	free(c);
	fake_hostfn_linger();
	return NULL;
}

API cuStreamAddCallback(CUstream s, void (*cb)(CUstream, CUresult, void *), void *arg, unsigned int f)
{
	const char *d = getenv("NVB_FAKE_HOSTFN_DELAY_MS"), *e = getenv("NVB_FAKE_STREAM_ERROR");
	CUresult r = e ? (CUresult)atoi(e) : CUDA_SUCCESS;
	struct fake_cb *c;
	pthread_t t;

	if (f)
		return CUDA_ERROR_INVALID_VALUE;
	CAPTURED(s, 0);	/* not supported in capture (CUDA's documentation): invalidates it */
	if (!d || !atoi(d)) {
		cb(s, r, arg);
		return CUDA_SUCCESS;
	}
	c = malloc(sizeof(*c));
	if (!c)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*c = (struct fake_cb){ cb, s, arg, r, (unsigned int)atoi(d) };
	if (pthread_create(&t, NULL, fake_cb_run, c)) {
		free(c);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	pthread_detach(t);
	return CUDA_SUCCESS;
}

/*
 * ---- multi-device (the import cache's device key, legacy IPC opens per device) ----
 * $NVB_FAKE_DEVICES=N (1..8) devices: ordinals 0..N-1, UUIDs differing in
 * their first byte, primary contexts FAKE_CTX(d) (cuCtxGetDevice reads it
 * back).  Memory is the same host memory whatever the device.
 */
static int fake_ndev(void)
{
	const char *e = getenv("NVB_FAKE_DEVICES");
	int n = e ? atoi(e) : 1;

	return n < 1 ? 1 : n > 8 ? 8 : n;
}

/*
 * ---- import gate (a revocation that arrives while an import is in its CUDA calls) ----
 * $NVB_FAKE_IMPORT_GATE="W,R": each cuMemImportFromShareableHandle first
 * writes one byte to fd W, then waits for one byte on fd R, so a test
 * can act between an import's fetch and the end of its CUDA work.
 */
static void fake_import_gate(void)
{
	const char *e = getenv("NVB_FAKE_IMPORT_GATE");
	int w, r;
	char c = 'i';

	if (!e || sscanf(e, "%d,%d", &w, &r) != 2)
		return;
	if (write(w, &c, 1) != 1 || read(r, &c, 1) != 1)
		return;
}

/*
 * ---- callback threads linger (nvb_gpu_close after the last host function) ----
 * $NVB_FAKE_HOSTFN_LINGER_MS=N: a delayed host function's or callback's
 * thread stays N ms in this library after the function returned, as the
 * driver's callback thread goes on in the driver: whoever unloads the
 * driver then (a dlclose at nvb_gpu_close) makes it return into unmapped
 * code, every time rather than 1 run in 40.
 */
static void fake_hostfn_linger(void)
{
	const char *e = getenv("NVB_FAKE_HOSTFN_LINGER_MS");

	if (e && atoi(e) > 0)
		usleep((unsigned int)atoi(e) * 1000u);
}

/*
 * ---- stream capture (a transfer batch on a stream captured into a CUDA graph) ----
 * cuStreamBeginCapture_v2 / cuStreamEndCapture / cuStreamIsCapturing on up
 * to 8 streams of the caller's.  While a stream captures, the work queued
 * on it is recorded (counted: fakecuda_capture_nodes), not run; a call
 * CUDA does not support in capture (cuStreamAddCallback,
 * cuStreamSynchronize) fails with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and
 * invalidates the capture, as the driver does: everything after it fails
 * with _INVALIDATED, and so does cuStreamEndCapture.
 * $NVB_FAKE_IS_CAPTURING_ERROR=N: cuStreamIsCapturing fails with N.
 */
#define FAKE_CAPTURE_UNSUPPORTED	900
#define FAKE_CAPTURE_INVALIDATED	901
static struct {
	CUstream s;
	int status;	/* CU_STREAM_CAPTURE_STATUS_* */
	int nodes;
} captures[8];

static int capture_slot(CUstream s)
{
	for (int i = 0; i < 8; i++)
		if (s && captures[i].s == s)
			return i;
	return -1;
}

static int fake_capture_op(CUstream s, int legal, CUresult *r)
{
	int i, st;

	pthread_mutex_lock(&fake_lock);
	i = capture_slot(s);
	st = i < 0 ? CU_STREAM_CAPTURE_STATUS_NONE : captures[i].status;
	if (st == CU_STREAM_CAPTURE_STATUS_ACTIVE && legal) {
		captures[i].nodes++;
		*r = CUDA_SUCCESS;
	} else if (st == CU_STREAM_CAPTURE_STATUS_ACTIVE) {
		captures[i].status = CU_STREAM_CAPTURE_STATUS_INVALIDATED;
		*r = FAKE_CAPTURE_UNSUPPORTED;
	} else {
		*r = FAKE_CAPTURE_INVALIDATED;
	}
	pthread_mutex_unlock(&fake_lock);
	return st != CU_STREAM_CAPTURE_STATUS_NONE;
}

API cuStreamBeginCapture_v2(CUstream s, int mode)
{
	CUresult r = CUDA_ERROR_OUT_OF_MEMORY;

	(void)mode;
	if (!s)
		return CUDA_ERROR_INVALID_VALUE;	/* the legacy stream cannot capture */
	pthread_mutex_lock(&fake_lock);
	if (capture_slot(s) >= 0)
		r = CUDA_ERROR_INVALID_VALUE;
	for (int i = 0; i < 8 && r == CUDA_ERROR_OUT_OF_MEMORY; i++)
		if (!captures[i].s) {
			captures[i].s = s;
			captures[i].status = CU_STREAM_CAPTURE_STATUS_ACTIVE;
			captures[i].nodes = 0;
			r = CUDA_SUCCESS;
		}
	pthread_mutex_unlock(&fake_lock);
	return r;
}

/* *graph: a non-NULL token when the capture was valid */
API cuStreamEndCapture(CUstream s, void **graph)
{
	CUresult r = CUDA_ERROR_INVALID_VALUE;
	int i;

	pthread_mutex_lock(&fake_lock);
	i = capture_slot(s);
	if (i >= 0) {
		r = captures[i].status == CU_STREAM_CAPTURE_STATUS_ACTIVE ? CUDA_SUCCESS :
		    FAKE_CAPTURE_INVALIDATED;
		captures[i].s = NULL;
	}
	pthread_mutex_unlock(&fake_lock);
	if (graph)
		*graph = r == CUDA_SUCCESS ? (void *)(uintptr_t)0x5000 : NULL;
	return r;
}

API cuStreamIsCapturing(CUstream s, int *status)
{
	const char *e = getenv("NVB_FAKE_IS_CAPTURING_ERROR");
	int i;

	if (e && atoi(e))
		return (CUresult)atoi(e);
	pthread_mutex_lock(&fake_lock);
	i = capture_slot(s);
	*status = i < 0 ? CU_STREAM_CAPTURE_STATUS_NONE : captures[i].status;
	pthread_mutex_unlock(&fake_lock);
	return CUDA_SUCCESS;
}

/* The graph cuStreamEndCapture gave (a token: nothing to free). */
API cuGraphDestroy(void *graph) { return graph ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE; }

/* Tests only: the nodes recorded so far by s's capture, or -1 when s is not capturing. */
__attribute__((visibility("default"))) int fakecuda_capture_nodes(CUstream s)
{
	int i, n;

	pthread_mutex_lock(&fake_lock);
	i = capture_slot(s);
	n = i < 0 ? -1 : captures[i].nodes;
	pthread_mutex_unlock(&fake_lock);
	return n;
}

/*
 * ---- stream priorities (NVB_GPU_OPEN_SM_YIELD) ----
 * CUDA's range on current GPUs: 0 (least) to -5 (greatest).  The stand-in
 * runs everything at once, so a priority changes nothing here; the last
 * one asked for is kept for tests.
 */
__attribute__((visibility("default"))) int fake_last_stream_prio = 1;	/* 1: none asked for */

API cuCtxGetStreamPriorityRange(int *least, int *greatest)
{
	if (least)
		*least = 0;
	if (greatest)
		*greatest = -5;
	return CUDA_SUCCESS;
}

API cuStreamCreateWithPriority(CUstream *s, unsigned int f, int prio)
{
	fake_last_stream_prio = prio;
	return cuStreamCreate(s, f);
}

/*
 * ---- VA calls (nvb_gpu_seg_open_many: one reservation, one access call) ----
 * cuMemAddressReserve, cuMemAddressFree and cuMemSetAccess calls so far,
 * and the bytes of reservations not freed yet, for tests (dlsym).  CUDA
 * refuses a cuMemSetAccess over bytes that are not mapped; the stand-in
 * counts such calls instead (fake_va_access_gaps), so that a test sees a
 * gap left in a shared reservation and nothing else changes.
 */
__attribute__((visibility("default"))) unsigned long fake_va_reserves, fake_va_frees, fake_va_access,
	fake_va_access_gaps, fake_va_reserved_bytes;

static void fake_va_count(int what, CUdeviceptr p, size_t size)
{
	size_t covered = 0;

	pthread_mutex_lock(&fake_lock);
	if (what == 0) {
		fake_va_reserves++;
		fake_va_reserved_bytes += size;
	} else if (what == 1) {
		fake_va_frees++;
		fake_va_reserved_bytes -= size;
	} else {
		fake_va_access++;
		for (int i = 0; i < FAKE_MAX; i++) {
			CUdeviceptr a = ranges[i].base, b = a + ranges[i].size;

			if (ranges[i].kind != 1 || b <= p || a >= p + size)
				continue;
			covered += (b < p + size ? b : p + size) - (a > p ? a : p);
		}
		fake_va_access_gaps += covered < size;
	}
	pthread_mutex_unlock(&fake_lock);
}
