/* SPDX-License-Identifier: MIT */
/* nvbridge-bench --segments: segments and transfer batches (bench/phase_seg.c). */
#ifndef NVB_BENCH_SEG_H
#define NVB_BENCH_SEG_H

#include <stdint.h>

#define SEG_MAXT	32
#define KV_MAXK		8	/* --kv-blocks: request sizes */

struct seg_opts {
	int nproc;		/* --segments N: processes, one segment each */
	uint64_t seg_size;	/* --seg-size */
	unsigned int batch;	/* --seg-batch: requests per batch */
	uint64_t block;		/* --seg-block: bytes per request */
	unsigned int threads;	/* --seg-threads: submitting threads of process 0 */
	unsigned int read_pct;	/* --seg-read-pct */
	unsigned int batches;	/* --seg-batches: per thread */
	int ngpus;		/* --gpus LIST: process i on gpus[i % ngpus]; 0: GPU 0 */
	int gpus[16];
	unsigned int sm_ctas;	/* --seg-sm-ctas: nvb_gpu_opts.sm_ctas (0: the library's) */
	int sm_yield;		/* --seg-sm-yield: NVB_GPU_OPEN_SM_YIELD */
	const char *socket;
	int json;
	const char *json_out;
	int timeout_s;
	/* --kv L,B,S: the KV-cache phase (bench/phase_kv.c); kv_layers 0: none */
	unsigned int kv_layers;	/* L arrays of [B, S] (K and V: two arrays a layer) */
	unsigned int kv_nblocks;	/* B blocks per array */
	uint64_t kv_block;	/* S bytes per block */
	unsigned int kv_k[KV_MAXK];	/* --kv-blocks: blocks per request */
	int kv_nk;
	unsigned int kv_threads;	/* --kv-threads: host threads = streams per method */
	unsigned int kv_requests;	/* --kv-requests: per trial */
	unsigned int trials;	/* --trials */
	int kv_only;		/* --kv without --segments: no transfer phase */
};

/* Runs the mode; prints its tables (and a JSON line with --json).  Exit status. */
int seg_main(const struct seg_opts *o);

#endif
