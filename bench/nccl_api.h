/* SPDX-License-Identifier: MIT */
/* NCCL through dlopen (libnccl.so.2): phase_nccl.c loads it, phase_kv.c uses it too. */
#ifndef NVB_BENCH_NCCL_API_H
#define NVB_BENCH_NCCL_API_H

#include <stddef.h>

#include "../libnvbridge/cuda_api.h"

typedef struct {
	char internal[128];
} ncclUniqueId;
typedef struct ncclComm *ncclComm_t;
#define NCCL_INT8	0	/* ncclInt8: counts are bytes */
struct nccl_api {
	void *lib;
	int (*GetVersion)(int *);
	int (*GetUniqueId)(ncclUniqueId *);
	int (*CommInitRank)(ncclComm_t *, int, ncclUniqueId, int);
	int (*CommDestroy)(ncclComm_t);
	int (*Send)(const void *, size_t, int, int, ncclComm_t, CUstream);
	int (*Recv)(void *, size_t, int, int, ncclComm_t, CUstream);
	int (*GroupStart)(void);
	int (*GroupEnd)(void);
	const char *(*GetErrorString)(int);
};

/*
 * dlopens --nccl PATH, else $NVB_NCCL_LIB, else libnccl.so.2, with NVLink
 * multicast off (NCCL_NVLS_ENABLE=0); 0, or -1 and why.
 */
int nccl_load(struct nccl_api *n, char *why, size_t len);

#endif
