/* SPDX-License-Identifier: MIT */
/*
 * The slice of the CUDA driver API that libnvbridge uses, declared here so
 * that the library builds without the CUDA toolkit and loads libcuda at run
 * time with dlopen().  Values and layouts match cuda.h of CUDA 12.8+/13.0;
 * tests/gpu/abi_check.c asserts that wherever cuda.h is available.
 *
 * Internal header: not installed.
 */
#ifndef NVB_CUDA_API_H
#define NVB_CUDA_API_H

#include <stddef.h>
#include <stdint.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef unsigned long long CUmemGenericAllocationHandle;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;

#define CUDA_SUCCESS			0
#define CUDA_ERROR_INVALID_VALUE	1
#define CUDA_ERROR_OUT_OF_MEMORY	2
#define CUDA_ERROR_NOT_INITIALIZED	3
#define CUDA_ERROR_DEINITIALIZED	4
#define CUDA_ERROR_NO_DEVICE		100
#define CUDA_ERROR_INVALID_DEVICE	101
#define CUDA_ERROR_INVALID_CONTEXT	201
#define CUDA_ERROR_INVALID_HANDLE	400
#define CUDA_ERROR_NOT_FOUND		500
#define CUDA_ERROR_NOT_READY		600
#define CUDA_ERROR_ILLEGAL_ADDRESS	700
#define CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED 704
#define CUDA_ERROR_NOT_PERMITTED	800
#define CUDA_ERROR_NOT_SUPPORTED	801

typedef struct {
	char bytes[16];
} CUuuid;

#define CU_IPC_HANDLE_SIZE 64
typedef struct {
	char reserved[CU_IPC_HANDLE_SIZE];
} CUipcMemHandle;
typedef struct {
	unsigned char data[CU_IPC_HANDLE_SIZE];
} CUmemFabricHandle;

/* CUmemAllocationHandleType */
#define CU_MEM_HANDLE_TYPE_NONE			0x0
#define CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR 0x1
#define CU_MEM_HANDLE_TYPE_FABRIC		0x8

#define CU_MEM_ALLOCATION_TYPE_PINNED		0x1
#define CU_MEM_LOCATION_TYPE_DEVICE		0x1
#define CU_MEM_ACCESS_FLAGS_PROT_READWRITE	0x3
#define CU_MEM_ALLOC_GRANULARITY_MINIMUM	0x0
#define CU_MEM_ALLOC_GRANULARITY_RECOMMENDED	0x1

typedef struct {
	int type;		/* CUmemLocationType */
	int id;
} CUmemLocation;

typedef struct {
	int type;			/* CUmemAllocationType */
	int requestedHandleTypes;	/* CUmemAllocationHandleType */
	CUmemLocation location;
	void *win32HandleMetaData;
	struct {
		unsigned char compressionType;
		unsigned char gpuDirectRDMACapable;
		unsigned short usage;
		unsigned char reserved[4];
	} allocFlags;
} CUmemAllocationProp;

typedef struct {
	CUmemLocation location;
	int flags;		/* CUmemAccess_flags */
} CUmemAccessDesc;

#define CU_MEMCPY_SRC_ACCESS_ORDER_STREAM	0x1
#define CU_MEMCPY_SRC_ACCESS_ORDER_ANY		0x3
typedef struct {
	int srcAccessOrder;	/* CUmemcpySrcAccessOrder */
	CUmemLocation srcLocHint;
	CUmemLocation dstLocHint;
	unsigned int flags;
} CUmemcpyAttributes;

#define CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT		16
#define CU_DEVICE_ATTRIBUTE_PCI_BUS_ID				33
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR		75
#define CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED	102
#define CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED 103
#define CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED	128

/* CUpointer_attribute, CUmemorytype (registration) */
#define CU_POINTER_ATTRIBUTE_MEMORY_TYPE	2
#define CU_POINTER_ATTRIBUTE_IS_MANAGED		8
#define CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL	9
#define CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE 10
#define CU_POINTER_ATTRIBUTE_MAPPING_SIZE	18
#define CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR	19
#define CU_MEMORYTYPE_HOST			0x1
#define CU_MEMORYTYPE_DEVICE			0x2

#define CU_STREAM_NON_BLOCKING		0x1
/* CUstreamCaptureStatus (cuStreamIsCapturing) */
#define CU_STREAM_CAPTURE_STATUS_NONE		0
#define CU_STREAM_CAPTURE_STATUS_ACTIVE		1
#define CU_STREAM_CAPTURE_STATUS_INVALIDATED	2
#define CU_EVENT_DEFAULT		0x0
#define CU_EVENT_DISABLE_TIMING		0x2
#define CU_STREAM_WAIT_VALUE_GEQ	0x0
#define CU_STREAM_WAIT_VALUE_EQ		0x1
#define CU_STREAM_WRITE_VALUE_DEFAULT	0x0
#define CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS 0x1
#define CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK 0
#define CU_FUNC_ATTRIBUTE_NUM_REGS		4

/*
 * X(return-type-is-always-CUresult, our name, exported symbol, (params)).
 * The exported symbol is the versioned one that cuda.h maps the name to.
 */
#define NVB_CUDA_FUNCS(X)						\
	X(cuInit, "cuInit", (unsigned int flags))			\
	X(cuDriverGetVersion, "cuDriverGetVersion", (int *v))		\
	X(cuGetErrorName, "cuGetErrorName", (CUresult e, const char **s)) \
	X(cuGetErrorString, "cuGetErrorString", (CUresult e, const char **s)) \
	X(cuDeviceGet, "cuDeviceGet", (CUdevice *d, int ordinal))	\
	X(cuDeviceGetCount, "cuDeviceGetCount", (int *n))		\
	X(cuDeviceGetName, "cuDeviceGetName", (char *name, int len, CUdevice d)) \
	X(cuDeviceGetUuid, "cuDeviceGetUuid_v2", (CUuuid *u, CUdevice d)) \
	X(cuDeviceGetAttribute, "cuDeviceGetAttribute", (int *v, int attr, CUdevice d)) \
	X(cuDeviceCanAccessPeer, "cuDeviceCanAccessPeer", (int *can, CUdevice d, CUdevice peer)) \
	X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", (CUcontext *c, CUdevice d)) \
	X(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", (CUdevice d)) \
	X(cuDevicePrimaryCtxGetState, "cuDevicePrimaryCtxGetState", (CUdevice d, unsigned int *flags, int *active)) \
	X(cuCtxSetCurrent, "cuCtxSetCurrent", (CUcontext c))		\
	X(cuCtxGetCurrent, "cuCtxGetCurrent", (CUcontext *c))		\
	X(cuCtxGetDevice, "cuCtxGetDevice", (CUdevice *d))		\
	X(cuCtxSynchronize, "cuCtxSynchronize", (void))			\
	X(cuCtxEnablePeerAccess, "cuCtxEnablePeerAccess", (CUcontext peer, unsigned int flags)) \
	X(cuMemGetInfo, "cuMemGetInfo_v2", (size_t *free, size_t *total)) \
	X(cuMemAlloc, "cuMemAlloc_v2", (CUdeviceptr *p, size_t n))	\
	X(cuMemFree, "cuMemFree_v2", (CUdeviceptr p))			\
	X(cuMemAllocHost, "cuMemAllocHost_v2", (void **p, size_t n))	\
	X(cuMemFreeHost, "cuMemFreeHost", (void *p))			\
	X(cuMemcpyHtoD, "cuMemcpyHtoD_v2", (CUdeviceptr d, const void *s, size_t n)) \
	X(cuMemcpyDtoH, "cuMemcpyDtoH_v2", (void *d, CUdeviceptr s, size_t n)) \
	X(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", (CUdeviceptr d, const void *s, size_t n, CUstream st)) \
	X(cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2", (CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st)) \
	X(cuMemsetD8Async, "cuMemsetD8Async", (CUdeviceptr d, unsigned char v, size_t n, CUstream st)) \
	X(cuMemsetD32Async, "cuMemsetD32Async", (CUdeviceptr d, unsigned int v, size_t n, CUstream st)) \
	X(cuMemcpyBatchAsync, "cuMemcpyBatchAsync_v2", (CUdeviceptr *dsts, CUdeviceptr *srcs, size_t *sizes, size_t count, CUmemcpyAttributes *attrs, size_t *attrsIdxs, size_t numAttrs, CUstream st)) \
	X(cuMemCreate, "cuMemCreate", (CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *prop, unsigned long long flags)) \
	X(cuMemRelease, "cuMemRelease", (CUmemGenericAllocationHandle h)) \
	X(cuMemExportToShareableHandle, "cuMemExportToShareableHandle", (void *sh, CUmemGenericAllocationHandle h, int type, unsigned long long flags)) \
	X(cuMemImportFromShareableHandle, "cuMemImportFromShareableHandle", (CUmemGenericAllocationHandle *h, void *os, int type)) \
	X(cuMemGetAllocationGranularity, "cuMemGetAllocationGranularity", (size_t *g, const CUmemAllocationProp *prop, int option)) \
	X(cuMemAddressReserve, "cuMemAddressReserve", (CUdeviceptr *p, size_t size, size_t align, CUdeviceptr addr, unsigned long long flags)) \
	X(cuMemAddressFree, "cuMemAddressFree", (CUdeviceptr p, size_t size)) \
	X(cuMemMap, "cuMemMap", (CUdeviceptr p, size_t size, size_t off, CUmemGenericAllocationHandle h, unsigned long long flags)) \
	X(cuMemUnmap, "cuMemUnmap", (CUdeviceptr p, size_t size))	\
	X(cuMemSetAccess, "cuMemSetAccess", (CUdeviceptr p, size_t size, const CUmemAccessDesc *desc, size_t count)) \
	X(cuStreamCreate, "cuStreamCreate", (CUstream *s, unsigned int flags)) \
	X(cuStreamCreateWithPriority, "cuStreamCreateWithPriority", (CUstream *s, unsigned int flags, int prio)) \
	X(cuCtxGetStreamPriorityRange, "cuCtxGetStreamPriorityRange", (int *least, int *greatest)) \
	X(cuStreamDestroy, "cuStreamDestroy_v2", (CUstream s))		\
	X(cuStreamSynchronize, "cuStreamSynchronize", (CUstream s))	\
	X(cuStreamQuery, "cuStreamQuery", (CUstream s))			\
	X(cuStreamWaitEvent, "cuStreamWaitEvent", (CUstream s, CUevent e, unsigned int flags)) \
	X(cuStreamWriteValue32, "cuStreamWriteValue32_v2", (CUstream s, CUdeviceptr a, uint32_t v, unsigned int flags)) \
	X(cuStreamWaitValue32, "cuStreamWaitValue32_v2", (CUstream s, CUdeviceptr a, uint32_t v, unsigned int flags)) \
	X(cuEventCreate, "cuEventCreate", (CUevent *e, unsigned int flags)) \
	X(cuEventDestroy, "cuEventDestroy_v2", (CUevent e))		\
	X(cuEventRecord, "cuEventRecord", (CUevent e, CUstream s))	\
	X(cuEventSynchronize, "cuEventSynchronize", (CUevent e))	\
	X(cuEventQuery, "cuEventQuery", (CUevent e))			\
	X(cuEventElapsedTime, "cuEventElapsedTime_v2", (float *ms, CUevent a, CUevent b)) \
	X(cuModuleLoadData, "cuModuleLoadData", (CUmodule *m, const void *image)) \
	X(cuModuleUnload, "cuModuleUnload", (CUmodule m))		\
	X(cuModuleGetFunction, "cuModuleGetFunction", (CUfunction *f, CUmodule m, const char *name)) \
	X(cuFuncGetAttribute, "cuFuncGetAttribute", (int *v, int attr, CUfunction f)) \
	X(cuLaunchKernel, "cuLaunchKernel", (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int smem, CUstream s, void **params, void **extra)) \
	X(cuIpcGetMemHandle, "cuIpcGetMemHandle", (CUipcMemHandle *h, CUdeviceptr p)) \
	X(cuIpcOpenMemHandle, "cuIpcOpenMemHandle_v2", (CUdeviceptr *p, CUipcMemHandle h, unsigned int flags)) \
	X(cuIpcCloseMemHandle, "cuIpcCloseMemHandle", (CUdeviceptr p))	\
	X(cuPointerGetAttribute, "cuPointerGetAttribute", (void *data, int attr, CUdeviceptr p)) \
	X(cuMemGetAddressRange, "cuMemGetAddressRange_v2", (CUdeviceptr *base, size_t *size, CUdeviceptr p)) \
	X(cuMemRetainAllocationHandle, "cuMemRetainAllocationHandle", (CUmemGenericAllocationHandle *h, void *addr)) \
	X(cuMemGetAllocationPropertiesFromHandle, "cuMemGetAllocationPropertiesFromHandle", (CUmemAllocationProp *prop, CUmemGenericAllocationHandle h)) \
	X(cuLaunchHostFunc, "cuLaunchHostFunc", (CUstream s, void (*fn)(void *), void *arg)) \
	X(cuStreamAddCallback, "cuStreamAddCallback", (CUstream s, void (*cb)(CUstream, CUresult, void *), void *arg, unsigned int flags)) \
	X(cuStreamIsCapturing, "cuStreamIsCapturing", (CUstream s, int *status))

struct nvb_cuda {
	void *lib;
	int driver_version;
#define NVB_CUDA_MEMBER(name, sym, params) CUresult (*name) params;
	NVB_CUDA_FUNCS(NVB_CUDA_MEMBER)
#undef NVB_CUDA_MEMBER
	/*
	 * optional: cuMemcpyBatchAsync is NULL when the driver is older than
	 * 12.8; cuStreamAddCallback (slated for deprecation) may go one day;
	 * cuStreamIsCapturing came with graphs (CUDA 10): without it no
	 * stream can be capturing
	 */
};

/*
 * Loads libcuda (path NULL: "libcuda.so.1") and resolves every symbol
 * except the optional ones (cuMemcpyBatchAsync, cuStreamAddCallback and
 * cuStreamIsCapturing may be NULL).  Returns 0, -ENOENT when the library
 * is missing, -ENOSYS when a required symbol is missing; errbuf gets a
 * message.
 */
int nvb_cuda_load(struct nvb_cuda *cu, const char *path, char *errbuf, size_t errlen);
void nvb_cuda_unload(struct nvb_cuda *cu);
/* "CUDA_ERROR_NOT_PERMITTED (800)"-style name, never NULL. */
const char *nvb_cuda_errname(const struct nvb_cuda *cu, CUresult r);

#endif /* NVB_CUDA_API_H */
