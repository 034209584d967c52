// SPDX-License-Identifier: MIT
/*
 * Compile-time proof that libnvbridge/cuda_api.h (our own declarations of
 * the driver API) matches the toolkit's cuda.h: constants, struct sizes and
 * field offsets.  Built by the gpu-build suite wherever cuda.h exists.
 */
#include <stddef.h>
#include <cuda.h>

enum {
	C_SUCCESS = CUDA_SUCCESS, C_NOT_PERMITTED = CUDA_ERROR_NOT_PERMITTED,
	C_NOT_SUPPORTED = CUDA_ERROR_NOT_SUPPORTED, C_NOT_READY = CUDA_ERROR_NOT_READY,
	C_OOM = CUDA_ERROR_OUT_OF_MEMORY, C_PEER_EN = CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED,
	C_H_FD = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, C_H_FAB = CU_MEM_HANDLE_TYPE_FABRIC,
	C_PINNED = CU_MEM_ALLOCATION_TYPE_PINNED, C_LOC_DEV = CU_MEM_LOCATION_TYPE_DEVICE,
	C_RW = CU_MEM_ACCESS_FLAGS_PROT_READWRITE, C_GRAN_REC = CU_MEM_ALLOC_GRANULARITY_RECOMMENDED,
	C_ORDER_STREAM = CU_MEMCPY_SRC_ACCESS_ORDER_STREAM,
	C_SMS = CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
	C_CCMAJ = CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
	C_FAB_SUP = CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED,
	C_NONBLOCK = CU_STREAM_NON_BLOCKING, C_NOTIMING = CU_EVENT_DISABLE_TIMING,
	C_GEQ = CU_STREAM_WAIT_VALUE_GEQ, C_WDEF = CU_STREAM_WRITE_VALUE_DEFAULT,
	C_LAZY = CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS, C_NREGS = CU_FUNC_ATTRIBUTE_NUM_REGS,
	C_INV_CTX = CUDA_ERROR_INVALID_CONTEXT,
	C_PA_TYPE = CU_POINTER_ATTRIBUTE_MEMORY_TYPE, C_PA_MANAGED = CU_POINTER_ATTRIBUTE_IS_MANAGED,
	C_PA_ORD = CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
	C_PA_IPC = CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE,
	C_PA_MSIZE = CU_POINTER_ATTRIBUTE_MAPPING_SIZE, C_PA_MBASE = CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR,
	C_MT_HOST = CU_MEMORYTYPE_HOST, C_MT_DEV = CU_MEMORYTYPE_DEVICE,
};

/* our names, renamed so both headers fit in one translation unit */
#define CUresult nvb_CUresult
#define CUdevice nvb_CUdevice
#define CUdeviceptr nvb_CUdeviceptr
#define CUmemGenericAllocationHandle nvb_CUmemGenericAllocationHandle
#define CUcontext nvb_CUcontext
#define CUstream nvb_CUstream
#define CUevent nvb_CUevent
#define CUmodule nvb_CUmodule
#define CUfunction nvb_CUfunction
#define CUuuid nvb_CUuuid
#define CUipcMemHandle nvb_CUipcMemHandle
#define CUmemFabricHandle nvb_CUmemFabricHandle
#define CUmemLocation nvb_CUmemLocation
#define CUmemAllocationProp nvb_CUmemAllocationProp
#define CUmemAccessDesc nvb_CUmemAccessDesc
#define CUmemcpyAttributes nvb_CUmemcpyAttributes
#include "cuda_api.h"

#define SAME(a, b) _Static_assert((a) == (b), #a " != " #b)
SAME(CUDA_SUCCESS, C_SUCCESS);
SAME(CUDA_ERROR_NOT_PERMITTED, C_NOT_PERMITTED);
SAME(CUDA_ERROR_NOT_SUPPORTED, C_NOT_SUPPORTED);
SAME(CUDA_ERROR_NOT_READY, C_NOT_READY);
SAME(CUDA_ERROR_OUT_OF_MEMORY, C_OOM);
SAME(CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED, C_PEER_EN);
SAME(CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, C_H_FD);
SAME(CU_MEM_HANDLE_TYPE_FABRIC, C_H_FAB);
SAME(CU_MEM_ALLOCATION_TYPE_PINNED, C_PINNED);
SAME(CU_MEM_LOCATION_TYPE_DEVICE, C_LOC_DEV);
SAME(CU_MEM_ACCESS_FLAGS_PROT_READWRITE, C_RW);
SAME(CU_MEM_ALLOC_GRANULARITY_RECOMMENDED, C_GRAN_REC);
SAME(CU_MEMCPY_SRC_ACCESS_ORDER_STREAM, C_ORDER_STREAM);
SAME(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, C_SMS);
SAME(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, C_CCMAJ);
SAME(CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED, C_FAB_SUP);
SAME(CU_STREAM_NON_BLOCKING, C_NONBLOCK);
SAME(CU_EVENT_DISABLE_TIMING, C_NOTIMING);
SAME(CU_STREAM_WAIT_VALUE_GEQ, C_GEQ);
SAME(CU_STREAM_WRITE_VALUE_DEFAULT, C_WDEF);
SAME(CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS, C_LAZY);
SAME(CU_FUNC_ATTRIBUTE_NUM_REGS, C_NREGS);
SAME(CUDA_ERROR_INVALID_CONTEXT, C_INV_CTX);
SAME(CU_POINTER_ATTRIBUTE_MEMORY_TYPE, C_PA_TYPE);
SAME(CU_POINTER_ATTRIBUTE_IS_MANAGED, C_PA_MANAGED);
SAME(CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, C_PA_ORD);
SAME(CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, C_PA_IPC);
SAME(CU_POINTER_ATTRIBUTE_MAPPING_SIZE, C_PA_MSIZE);
SAME(CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR, C_PA_MBASE);
SAME(CU_MEMORYTYPE_HOST, C_MT_HOST);
SAME(CU_MEMORYTYPE_DEVICE, C_MT_DEV);
SAME(sizeof(nvb_CUmemAllocationProp), sizeof(struct CUmemAllocationProp_st));
SAME(offsetof(nvb_CUmemAllocationProp, location), offsetof(struct CUmemAllocationProp_st, location));
SAME(offsetof(nvb_CUmemAllocationProp, win32HandleMetaData),
     offsetof(struct CUmemAllocationProp_st, win32HandleMetaData));
SAME(offsetof(nvb_CUmemAllocationProp, allocFlags), offsetof(struct CUmemAllocationProp_st, allocFlags));
SAME(sizeof(nvb_CUmemAccessDesc), sizeof(struct CUmemAccessDesc_st));
SAME(offsetof(nvb_CUmemAccessDesc, flags), offsetof(struct CUmemAccessDesc_st, flags));
SAME(sizeof(nvb_CUmemcpyAttributes), sizeof(struct CUmemcpyAttributes_st));
SAME(offsetof(nvb_CUmemcpyAttributes, flags), offsetof(struct CUmemcpyAttributes_st, flags));
SAME(sizeof(nvb_CUipcMemHandle), sizeof(struct CUipcMemHandle_st));
SAME(sizeof(nvb_CUmemFabricHandle), sizeof(struct CUmemFabricHandle_st));
SAME(sizeof(nvb_CUuuid), sizeof(struct CUuuid_st));
SAME(sizeof(nvb_CUdeviceptr), sizeof(CUdeviceptr));

int main(void)
{
	return 0;
}
