/* SPDX-License-Identifier: MIT */
/*
 * The co-run phase: a bf16 GEMM (cuBLAS through dlopen) runs on the same
 * GPU as each transfer method in turn; both sides are measured in the same
 * run, the GEMM also alone right before each method.
 */
#ifndef NVB_BENCH_CORUN_H
#define NVB_BENCH_CORUN_H

#include <stdint.h>

#include "../libnvbridge/cuda_api.h"
#include "../libnvbridge/nvbridge_gpu.h"

struct corun_env {
	struct nvb_cuda *cu;
	struct nvb_gpu *g;
	int dev;
	uint64_t local;		/* own buffer (device memory), >= 256 MiB */
	uint64_t remote;	/* the other process's buffer, mapped; >= 256 MiB */
	uint64_t remote_ipc;	/* the other process's cuMemAlloc buffer through legacy IPC
				 * (>= 128 MiB), or 0: that row is skipped */
	int quick;
	unsigned int trials;
	unsigned int proxy_ctas;
	const char *cublas;	/* NULL: NVB_CUBLAS_LIB, libcublas.so.13, .so.12 */
	void *ctx;
	void (*report)(void *ctx, const char *key, const char *method, uint64_t size,
		       double value, const char *unit);
	void (*progress)(void *ctx, const char *what);
};

/*
 * Runs the phase; 0, or -1 with why filled (cuBLAS missing, a CUDA error):
 * the caller reports it and exits non-zero.
 */
int corun_phase(const struct corun_env *e, char *why, size_t len);

#endif
