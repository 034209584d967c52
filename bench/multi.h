/* SPDX-License-Identifier: MIT */
/* nvbridge-bench's modes for any number of GPUs (bench/multi.c). */
#ifndef NVB_BENCH_MULTI_H
#define NVB_BENCH_MULTI_H

#include <stdint.h>

#define MULTI_MAXG	16
#define MULTI_MAXPUB	256

struct multi_opts {
	int all_pairs;			/* --all-pairs */
	int nfan;			/* --fan-out: number of K values */
	int fan[MULTI_MAXG];		/* K values; 0 = "all": 1, 2, 4, ... and N-1 */
	unsigned int npub;		/* --many-publishers N (0: not run) */
	uint64_t size;			/* --pair-size: bytes per transfer (all-pairs, fan-out) */
	uint64_t pub_size;		/* --pub-size: bytes per buffer (many publishers) */
	int ngpus;			/* --gpus LIST; 0 = every GPU */
	int gpus[MULTI_MAXG];
	const char *socket;
	const char *json_out;
	int json;
	int quick;
	int timeout_s;
};

/* Runs the selected modes; prints the tables (or JSON).  Exit status. */
int multi_main(const struct multi_opts *o);

#endif
