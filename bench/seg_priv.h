/* SPDX-License-Identifier: MIT */
/*
 * nvbridge-bench --segments: what its phases share (bench/phase_seg.c,
 * bench/phase_kv.c): the page every process maps, one process's state, and
 * the error exits.  A process that fails writes why into the shared page
 * and exits 1; the parent then kills the others.
 */
#ifndef NVB_BENCH_SEG_PRIV_H
#define NVB_BENCH_SEG_PRIV_H

#include <pthread.h>

#include "bench.h"
#include "seg.h"

#ifdef NVB_BENCH_LIB

#define SEG_MAXP	16

struct kv_shared;

/* The setup's figures, per trial and process (phase_seg.c). */
enum {
	SF_PUB,		/* nvb_gpu_seg_publish */
	SF_EXPORT,	/* of it: export_ns (nvb_gpu_seg_stats) */
	SF_PUBLISH,	/* of it: publish_ns */
	SF_GET,		/* cuIpcGetMemHandle */
	SF_OPEN,	/* nvb_gpu_seg_open, every peer's, summed */
	SF_WATCH, SF_FETCH, SF_IMPORT, SF_ACCESS,	/* of them (import: + reserve + map) */
	SF_RT,		/* of them: round trips (requests) */
	SF_PRE,		/* the opens after nvb_gpu_seg_prefetch */
	SF_IPCOPEN,	/* cuIpcOpenMemHandle, every peer's, summed */
	SF_MANY,	/* nvb_gpu_seg_open_many of every peer's, fresh names */
	SF_N
};
#define SEG_MAXTR	(MAX_SAMPLES + 1)	/* the warm-up and --trials */

struct seg_shared {
	pthread_barrier_t bar;
	CUipcMemHandle ipc[SEG_MAXP];
	int failed;
	char why[256];
	/*
	 * The setup: per figure (SF_*), trial (0: the untimed warm-up, the
	 * first segment and IPC calls of each process; 1..trials) and process,
	 * in microseconds (SF_RT: broker / device requests, summed over opens).
	 */
	double v[SF_N][SEG_MAXTR][SEG_MAXP];
	uint32_t htypes;	/* process 0's segment buffer: nvb_gpu_buf_handle_types */
	int fabric_err;		/* its FABRIC trial's CUresult (0: none or it worked) */
	/* process 0's transfers */
	double xfer_gbs, legacy_gbs, large_gbs;	/* large: split over the same threads */
	double large1_gbs;			/* the large copy by 1 thread, 1 stream */
	uint32_t method;
	int dev[SEG_MAXP];	/* each process's GPU */
	struct kv_shared *kv;	/* --kv: phase_kv.c's own shared mapping, else NULL */
};

struct seg_ctx {
	const struct seg_opts *o;
	struct seg_shared *sh;
	int idx, dev;
	struct nvb_cuda cu;
	struct nvb_gpu *g;
	struct nvb *h;
	struct nvb_gpu_buf *buf;
	struct nvb_gpu_seg *peer;	/* process 1's segment (process 0) */
	CUdeviceptr ipc_peer;
};

__attribute__((noreturn, format(printf, 2, 3)))
void seg_die(struct seg_ctx *c, const char *fmt, ...);
/* All n processes of the mode; exits if another one failed meanwhile. */
void seg_bar(struct seg_ctx *c);

#define SCK(c, call) CK_OR(seg_die, c, call)
#define SNV(c, call) NV_OR(seg_die, c, call)

/* phase_kv.c: the shared mapping (parent, before the fork; NULL: failed) */
struct kv_shared *kv_shared_new(const struct seg_opts *o);
/* the phase in processes 0 (importer) and 1 (exporter); the others return */
void kv_phase(struct seg_ctx *c);
/* the parent, after every process exited 0: table, JSON; exit status */
int kv_report(const struct seg_opts *o, struct seg_shared *sh, const char *seg_json);

#endif
#endif
