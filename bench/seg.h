/* SPDX-License-Identifier: MIT */
/* nvbridge-bench --segments: segments and transfer batches (bench/phase_seg.c). */
#ifndef NVB_BENCH_SEG_H
#define NVB_BENCH_SEG_H

#include <stdint.h>

#define SEG_MAXT	32

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
	const char *socket;
	int json;
	int timeout_s;
};

/* Runs the mode; prints its tables (and a JSON line with --json).  Exit status. */
int seg_main(const struct seg_opts *o);

#endif
