/* SPDX-License-Identifier: MIT */
/*
 * nvbridge-bench's shared declarations: the options, the result records,
 * one child process's state, and the functions the phase files share.
 *
 *   nvbridge-bench.c  options, the parent's loop (main)
 *   report.c          medians and spreads, goals, tables, JSON
 *   child.c           one child process: set-up and the phases in order
 *   side.c            the child's plumbing: records, control socket, rendezvous
 *   phase_copy.c      bulk copies, small puts, scattered blocks, same-process
 *   phase_flags.c     completion flags, transfers, the put proxy
 *   phase_import.c    import cost, legacy CUDA IPC
 *   phase_nccl.c      NCCL send/recv
 *   phase_seg.c       segments and transfer batches vs legacy IPC (--segments; seg.h)
 *   phase_kv.c        a KV-cache layout moved by request (--kv; seg_priv.h)
 *   corun.c           a GEMM beside each transfer method
 *   multi.c           the modes for any number of GPUs
 */
#ifndef NVB_BENCH_H
#define NVB_BENCH_H

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../libnvbridge/cuda_api.h"
#include "../libnvbridge/nvbridge_gpu.h"
#include "bench_util.h"
#include "multi.h"
#include "corun.h"
#ifdef NVB_BENCH_LIB
#include "../libnvbridge/nvbridge.h"
#endif

#define FLAGS_BYTES (2 * MiB)
#define NSTREAMS 4

/* flag words (byte offsets) at the start of each side's buffer */
#define F_PP	0
#define F_XFER	64
#define F_BLK	128

struct bench_opt {
	int gpu_a, gpu_b;
	int use_lib;
	uint64_t min_size, max_size;
	uint64_t blk_size;
	unsigned int blk_count;
	int json;
	const char *json_out;
	const char *nccl;
	int no_nccl;
	int quick;
	int timeout_s;
	const char *socket;
	unsigned int proxy_ctas;
	int gpus_given;		/* --gpus / --same-gpu: no automatic choice */
	unsigned int trials;	/* samples of every figure (median and spread) */
	int no_corun;
	const char *cublas;
	unsigned int vmm_parts;	/* --vmm-parts K (phase_vmm.c) */
};
extern struct bench_opt opt;

#define MAX_SAMPLES 64
struct result {
	char key[48];		/* metric */
	char method[40];	/* nvbridge-ce, same-process, nccl, ... */
	uint64_t size;
	double value;		/* the median of the samples */
	char unit[8];
	int n;			/* samples: one per trial */
	double min, max;
	double v[MAX_SAMPLES];
};
extern struct result results[2048];
extern int nresults;
/* more top-level JSON members for print_json ("  \"k\": v,\n" lines), or NULL */
extern const char *json_extra;

struct side {
	int role;		/* 0: exporter (A), 1: importer (B) */
	int dev, peer_dev;
	int ctl;		/* SEQPACKET to the other child */
	int res;		/* pipe to the parent */
	struct nvb_gpu *g;
	struct nvb_cuda cu;
	CUstream st[NSTREAMS];
	CUevent e0, e1;
	struct nvb_gpu_buf *buf;	/* own buffer: flags + data */
	struct nvb_gpu_map *map;	/* the other side's buffer */
	uint64_t lflags, ldata, rflags, rdata;
	/* legacy IPC, kept for the co-run phase: exporter's cuMemAlloc, importer's mapping */
	CUdeviceptr ipc_buf, ipc_map;
	uint64_t data_size;
#ifdef NVB_BENCH_LIB
	struct nvb *h;
#endif
	char name_self[64], name_peer[64];
};

/* call must succeed, else die_fn(s, "what: why") (s: anything with a .cu) */
#define CK_OR(die_fn, s, call) do {					\
	CUresult r_ = (s)->cu.call;					\
	if (r_ != CUDA_SUCCESS)						\
		die_fn((s), "%s: %s", #call, nvb_cuda_errname(&(s)->cu, r_)); \
} while (0)
#define NV_OR(die_fn, s, call) do {					\
	int e_ = (call);						\
	if (e_ < 0)							\
		die_fn((s), "%s: %s (%s)", #call, strerror(-e_), nvb_gpu_last_error()); \
} while (0)
#define CK(s, call) CK_OR(die, s, call)
#define NV(s, call) NV_OR(die, s, call)

struct bench_info {
	char device[128];
	char backend[32];
	char alloc[128];
	char import[16];
	char nccl_note[256];
	char corun_note[256];
	int driver, kernel;
};
extern struct bench_info info;

struct goal_row {
	const char *metric;
	const struct result *nvb;
	const struct result *base;
	const char *base_name;
	double ratio;		/* nvb / base, or base / nvb for times */
	const char *goal;
	int met;		/* -1 unknown */
};

extern char invalid_note[512];

/* side.c */
void die(struct side *s, const char *fmt, ...);
void report(struct side *s, const char *key, const char *method, uint64_t size,
		   double value, const char *unit);
void progress(struct side *s, const char *what);
void ctl_send(struct side *s, const void *p, size_t n, int fd);
int ctl_recv(struct side *s, void *p, size_t n, int *fd);
void barrier(struct side *s);
void sync_all(struct side *s);
double ev_ms(struct side *s);
void set_flag(struct side *s, uint64_t addr, uint32_t v);
unsigned int iters_for(uint64_t size);
void rdv_publish(struct side *s);
double rdv_import(struct side *s, struct nvb_gpu_map **m, uint32_t flags);
double rdv_reimport(struct side *s, struct nvb_gpu_map **m);

/* phase_copy.c */
void bw_one_side(struct side *s, const char *key, uint64_t dst, uint64_t src,
			uint64_t size, uint32_t mode, unsigned int nst, const char *method);
void bw_bidir(struct side *s, uint64_t size, const char *method, uint32_t mode);
void pipelined_puts(struct side *s);
void blocks(struct side *s, uint64_t bsize, unsigned int count, int write);
void same_process(struct side *s, const uint64_t *sizes, int nsizes);

/* phase_flags.c */
void pingpong(struct side *s, uint64_t size, int sm, const char *method);
void xfer_recv_side(struct side *s, uint32_t last_val);
void xfer_report(struct side *s, const char *method, uint64_t size, unsigned int n,
			double t0);
void xfer(struct side *s, uint64_t size, int mode, const char *method);
void proxy_phase(struct side *s, const uint64_t *sizes, int nsizes);

/* phase_import.c */
void report_import_stages(struct side *s, struct nvb_gpu_map *m, double total_s,
				 const char *method);
void late_import(struct side *s);
void legacy_ipc(struct side *s);
void legacy_ipc_release(struct side *s);

/* phase_vmm.c */
#define VMM_MAXK 8
void vmm_parts(struct side *s, unsigned int k, uint64_t size);
void print_vmm(FILE *f);

/* phase_nccl.c */
void nccl_bench(struct side *s, const uint64_t *sizes, int nsizes);

/* child.c */
void child(int role, int ctl, int res, const char *tag);

/* report.c */
void scopy(char *d, size_t n, const char *s);
void add_sample(struct result *r);
void finish_samples(void);
const struct result *find(const char *key, const char *method, uint64_t size);
void invalidate_impossible(void);
void print_goals(FILE *f, struct goal_row *rows, int n);
int build_goals(struct goal_row *rows);
void print_sweep(FILE *f);
void print_blocks(FILE *f);
void print_corun(FILE *f);
void print_json(FILE *f, struct goal_row *rows, int n);

#endif
