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

API cuInit(unsigned int f) { (void)f; return CUDA_SUCCESS; }
API cuDriverGetVersion(int *v) { *v = 12080; return CUDA_SUCCESS; }
API cuGetErrorName(CUresult e, const char **s) { (void)e; *s = "CUDA_ERROR_FAKE"; return CUDA_SUCCESS; }
API cuGetErrorString(CUresult e, const char **s) { (void)e; *s = "fake libcuda"; return CUDA_SUCCESS; }
API cuDeviceGet(CUdevice *d, int i) { if (i) return CUDA_ERROR_INVALID_DEVICE; *d = 0; return CUDA_SUCCESS; }
API cuDeviceGetCount(int *n) { *n = 1; return CUDA_SUCCESS; }
API cuDeviceGetName(char *n, int len, CUdevice d) { (void)d; strncpy(n, "fake GPU (host memory)", len); n[len - 1] = 0; return CUDA_SUCCESS; }
static CUresult uuid(CUuuid *u, CUdevice d) { (void)d; for (int i = 0; i < 16; i++) u->bytes[i] = (char)(0xa0 + i); return CUDA_SUCCESS; }
API cuDeviceGetUuid_v2(CUuuid *u, CUdevice d) { return uuid(u, d); }
API cuDeviceGetUuid(CUuuid *u, CUdevice d) { return uuid(u, d); }
API cuDeviceGetAttribute(int *v, int a, CUdevice d) { (void)d; *v = a == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR ? 9 : 1; return CUDA_SUCCESS; }
API cuDeviceCanAccessPeer(int *c, CUdevice d, CUdevice p) { (void)d; (void)p; *c = 1; return CUDA_SUCCESS; }
static int primary_refs;
API cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) { (void)d; primary_refs++; *c = (CUcontext)(uintptr_t)0x1000; return CUDA_SUCCESS; }
API cuDevicePrimaryCtxRelease_v2(CUdevice d) { (void)d; if (primary_refs) primary_refs--; return CUDA_SUCCESS; }
API cuDevicePrimaryCtxGetState(CUdevice d, unsigned int *f, int *active) { (void)d; *f = 0; *active = primary_refs > 0; return CUDA_SUCCESS; }
API cuCtxSetCurrent(CUcontext c) { cur = c; return CUDA_SUCCESS; }
API cuCtxGetCurrent(CUcontext *c) { *c = cur; return CUDA_SUCCESS; }
API cuCtxGetDevice(CUdevice *d) { if (!cur) return 201; *d = 0; return CUDA_SUCCESS; }
API cuCtxSynchronize(void) { return CUDA_SUCCESS; }
API cuCtxEnablePeerAccess(CUcontext p, unsigned int f) { (void)p; (void)f; return CUDA_SUCCESS; }
API cuMemGetInfo_v2(size_t *f, size_t *t) { *f = 1UL << 30; *t = 2UL << 30; return CUDA_SUCCESS; }
API cuMemAlloc_v2(CUdeviceptr *p, size_t n) { void *m = calloc(1, n); *p = (CUdeviceptr)(uintptr_t)m; return m ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY; }
API cuMemFree_v2(CUdeviceptr p) { free((void *)(uintptr_t)p); return CUDA_SUCCESS; }
API cuMemAllocHost_v2(void **p, size_t n) { *p = calloc(1, n); return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY; }
API cuMemFreeHost(void *p) { free(p); return CUDA_SUCCESS; }
#define PTR(x) ((void *)(uintptr_t)(x))
API cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) { memcpy(PTR(d), s, n); return CUDA_SUCCESS; }
API cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n) { memcpy(d, PTR(s), n); return CUDA_SUCCESS; }
API cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *s, size_t n, CUstream st) { (void)st; memcpy(PTR(d), s, n); return CUDA_SUCCESS; }
API cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st) { (void)st; memmove(PTR(d), PTR(s), n); return CUDA_SUCCESS; }
API cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream st) { (void)st; memset(PTR(d), v, n); return CUDA_SUCCESS; }
API cuMemsetD32Async(CUdeviceptr d, unsigned int v, size_t n, CUstream st) { (void)st; for (size_t i = 0; i < n; i++) ((uint32_t *)PTR(d))[i] = v; return CUDA_SUCCESS; }

/* VMM: a handle is a memfd (+1, so that 0 is never a handle). */
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
	*h = (CUmemGenericAllocationHandle)fd + 1;
	return CUDA_SUCCESS;
}
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
	return CUDA_SUCCESS;
}
API cuMemAddressFree(CUdeviceptr p, size_t size) { munmap(PTR(p), size); return CUDA_SUCCESS; }
API cuMemMap(CUdeviceptr p, size_t size, size_t off, CUmemGenericAllocationHandle h, unsigned long long f)
{
	(void)f;
	/* a size larger than the allocation fails here, as cuMemMap does */
	if (lseek((int)h - 1, 0, SEEK_END) < (off_t)(off + size))
		return CUDA_ERROR_INVALID_VALUE;
	return mmap(PTR(p), size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, (int)h - 1, (off_t)off) == MAP_FAILED ?
		CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}
API cuMemUnmap(CUdeviceptr p, size_t size)
{
	return mmap(PTR(p), size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED ?
		CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}
API cuMemSetAccess(CUdeviceptr p, size_t s, const CUmemAccessDesc *d, size_t n) { (void)p; (void)s; (void)d; (void)n; return CUDA_SUCCESS; }

/* Streams and events: everything is synchronous already. */
API cuStreamCreate(CUstream *s, unsigned int f) { (void)f; *s = (CUstream)(uintptr_t)0x2000; return CUDA_SUCCESS; }
API cuStreamDestroy_v2(CUstream s) { (void)s; return CUDA_SUCCESS; }
API cuStreamSynchronize(CUstream s) { (void)s; return CUDA_SUCCESS; }
API cuStreamQuery(CUstream s) { (void)s; return CUDA_SUCCESS; }
API cuStreamWaitEvent(CUstream s, CUevent e, unsigned int f) { (void)s; (void)e; (void)f; return CUDA_SUCCESS; }
API cuStreamWriteValue32_v2(CUstream s, CUdeviceptr a, uint32_t v, unsigned int f) { (void)s; (void)f; __atomic_store_n((uint32_t *)PTR(a), v, __ATOMIC_RELEASE); return CUDA_SUCCESS; }
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
API cuIpcGetMemHandle(CUipcMemHandle *h, CUdeviceptr p) { (void)h; (void)p; return CUDA_ERROR_NOT_SUPPORTED; }
API cuIpcOpenMemHandle_v2(CUdeviceptr *p, CUipcMemHandle h, unsigned int f) { (void)p; (void)h; (void)f; return CUDA_ERROR_NOT_SUPPORTED; }
API cuIpcCloseMemHandle(CUdeviceptr p) { (void)p; return CUDA_ERROR_NOT_SUPPORTED; }

/*
 * ---- torch allocator (alloc/): cuMemRetainAllocationHandle ----
 * The handle of the allocation mapped at addr: /proc/self/maps names the
 * memfd's inode there, and the process still holds that memfd open (the
 * allocation's own handle), so a dup of it is a new reference to the same
 * "device memory".  Released with cuMemRelease, as a real retained handle.
 */
#include <stdio.h>
#include <dirent.h>
#include <sys/stat.h>

API cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *h, void *addr)
{
	unsigned long lo, hi, ino = 0, a = (unsigned long)(uintptr_t)addr;
	CUresult r = CUDA_ERROR_INVALID_VALUE;
	char line[512], path[64];
	struct dirent *e;
	struct stat st;
	FILE *f;
	DIR *d;

	f = fopen("/proc/self/maps", "re");
	if (!f)
		return CUDA_ERROR_INVALID_VALUE;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx %*s %*s %*s %lu", &lo, &hi, &ino) == 3 && a >= lo && a < hi)
			break;
		else
			ino = 0;
	fclose(f);
	if (!ino || !(d = opendir("/proc/self/fd")))
		return CUDA_ERROR_INVALID_VALUE;
	while (r != CUDA_SUCCESS && (e = readdir(d))) {
		int fd = atoi(e->d_name);
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, line, sizeof(line) - 1);
		if (n <= 0 || fd == dirfd(d))
			continue;
		line[n] = 0;
		if (strncmp(line, "/memfd:fakecuda", 15) || fstat(fd, &st) || st.st_ino != ino)
			continue;
		fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (fd >= 0) {
			*h = (CUmemGenericAllocationHandle)fd + 1;
			r = CUDA_SUCCESS;
		}
	}
	closedir(d);
	return r;
}
