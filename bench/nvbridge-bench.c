// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench: GPU-to-GPU throughput and latency between two processes
 * that share memory through nvbridge, against the baselines a user would
 * otherwise use, all measured in the same run:
 *   same-process peer copy, legacy CUDA IPC, NCCL send/recv (dlopen of
 *   libnccl.so.2), cuMemcpyBatchAsync for scattered blocks.
 *
 * The parent spawns an exporter (GPU A) and an importer (GPU B); both
 * publish a buffer and import the other's (rendezvous through libnvbridge,
 * or --rdv socketpair for a stand-in).  The importer drives, the exporter
 * follows a fixed script; results stream to the parent as text records.
 */
#define _GNU_SOURCE
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

static struct {
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
} opt = { .gpu_a = 0, .gpu_b = 1, .use_lib = 1, .min_size = 4096, .max_size = GiB,
	.blk_size = 64 * 1024, .blk_count = 1024, .timeout_s = 600 };

/* ------------------------------------------------------------ results */

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

static struct result results[2048];
static int nresults;


/* ------------------------------------------------------------ child side */

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
	uint64_t data_size;
#ifdef NVB_BENCH_LIB
	struct nvb *h;
#endif
	char name_self[64], name_peer[64];
};

static void die(struct side *s, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = snprintf(buf, sizeof(buf), "E %s: ", s->role ? "importer" : "exporter");
	vsnprintf(buf + n, sizeof(buf) - n - 2, fmt, ap);
	va_end(ap);
	strcat(buf, "\n");
	if (write(s->res, buf, strlen(buf)) < 0)
		fputs(buf, stderr);
	_exit(1);
}

#define CK(s, call) do {						\
	CUresult r_ = (s)->cu.call;					\
	if (r_ != CUDA_SUCCESS)						\
		die((s), "%s: %s", #call, nvb_cuda_errname(&(s)->cu, r_)); \
} while (0)

#define NV(s, call) do {						\
	int e_ = (call);						\
	if (e_ < 0)							\
		die((s), "%s: %s (%s)", #call, strerror(-e_), nvb_gpu_last_error()); \
} while (0)

static void report(struct side *s, const char *key, const char *method, uint64_t size,
		   double value, const char *unit)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "R %s %s %llu %.6g %s\n", key, method,
		 (unsigned long long)size, value, unit);
	if (write(s->res, buf, strlen(buf)) < 0)
		_exit(1);
}

static void progress(struct side *s, const char *what)
{
	char buf[160];

	snprintf(buf, sizeof(buf), "P %s\n", what);
	if (write(s->res, buf, strlen(buf)) < 0)
		_exit(1);
}

static void ctl_send(struct side *s, const void *p, size_t n, int fd)
{
	struct msghdr mh;
	struct iovec iov = { (void *)p, n };
	char cbuf[CMSG_SPACE(sizeof(int))];

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (fd >= 0) {
		struct cmsghdr *c;

		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	if (sendmsg(s->ctl, &mh, 0) != (ssize_t)n)
		die(s, "ctl send: %s", strerror(errno));
}

static int ctl_recv(struct side *s, void *p, size_t n, int *fd)
{
	struct msghdr mh;
	struct iovec iov = { p, n };
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct cmsghdr *c;
	ssize_t r;

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	r = recvmsg(s->ctl, &mh, MSG_CMSG_CLOEXEC);
	if (r <= 0)
		die(s, "ctl recv: %s", r ? strerror(errno) : "peer gone");
	if (fd) {
		*fd = -1;
		c = CMSG_FIRSTHDR(&mh);
		if (c && c->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	}
	return (int)r;
}

static void barrier(struct side *s)
{
	char c = 'b';

	ctl_send(s, &c, 1, -1);
	ctl_recv(s, &c, 1, NULL);
}

static void sync_all(struct side *s)
{
	CK(s, cuCtxSynchronize());
}

static double ev_ms(struct side *s)
{
	float ms = 0;

	CK(s, cuEventSynchronize(s->e1));
	CK(s, cuEventElapsedTime(&ms, s->e0, s->e1));
	return ms;
}

static void set_flag(struct side *s, uint64_t addr, uint32_t v)
{
	CK(s, cuMemcpyHtoD(addr, &v, sizeof(v)));
}

static unsigned int iters_for(uint64_t size)
{
	uint64_t it = (opt.quick ? 2 * GiB : 8 * GiB) / size;

	if (it < 5)
		it = 5;
	if (it > (opt.quick ? 300 : 1000))
		it = opt.quick ? 300 : 1000;
	return (unsigned int)it;
}

/* ---- rendezvous: through libnvbridge or a socketpair stand-in ---- */

static void rdv_publish(struct side *s)
{
#ifdef NVB_BENCH_LIB
	if (opt.use_lib) {
		NV(s, nvb_gpu_publish(s->g, s->h, s->name_self, s->buf, NVB_ACCESS_OWNER, NULL));
		return;
	}
#endif
	{
		struct nvb_gpu_meta meta;
		int fd;

		NV(s, nvb_gpu_export(s->buf, &fd, &meta));
		ctl_send(s, &meta, sizeof(meta), fd);
	}
}

/* Import of the peer's buffer; returns seconds spent. */
static double rdv_import(struct side *s, struct nvb_gpu_map **m, uint32_t flags)
{
	double t0, t1;

#ifdef NVB_BENCH_LIB
	if (opt.use_lib) {
		t0 = now_s();
		NV(s, nvb_gpu_import(s->g, s->h, s->name_peer, 10 * 1000000000LL, flags, m));
		t1 = now_s();
		return t1 - t0;
	}
#endif
	{
		struct nvb_gpu_meta meta;
		int fd, n;

		n = ctl_recv(s, &meta, sizeof(meta), &fd);
		t0 = now_s();
		NV(s, nvb_gpu_import_fd(s->g, 1000 + (uint64_t)s->role, fd, &meta, (size_t)n,
					flags, m));
		t1 = now_s();
		close(fd);
		return t1 - t0;
	}
}

static double rdv_reimport(struct side *s, struct nvb_gpu_map **m)
{
	double t0 = now_s();

#ifdef NVB_BENCH_LIB
	if (opt.use_lib) {
		NV(s, nvb_gpu_import(s->g, s->h, s->name_peer, 0, 0, m));
		return now_s() - t0;
	}
#endif
	NV(s, nvb_gpu_import_cached(s->g, 1000 + (uint64_t)s->role, m));
	return now_s() - t0;
}

/* ---- measurements ---- */

/* Bulk write/read by the importer through the mapping. */
static void bw_one_side(struct side *s, const char *key, uint64_t dst, uint64_t src,
			uint64_t size, uint32_t mode, unsigned int nst, const char *method)
{
	unsigned int it = iters_for(size), i;
	void *st[NSTREAMS];

	for (i = 0; i < NSTREAMS; i++)
		st[i] = s->st[i];
	NV(s, nvb_gpu_copy(s->g, dst, src, size, st, nst, mode));	/* warm-up */
	CK(s, cuEventRecord(s->e0, s->st[0]));
	for (i = 0; i < it; i++)
		NV(s, nvb_gpu_copy(s->g, dst, src, size, st, nst, mode));
	CK(s, cuEventRecord(s->e1, s->st[0]));
	report(s, key, method, size, (double)size * it / (ev_ms(s) * 1e-3) / 1e9, "GB/s");
}

/* Both processes push size bytes into the other's buffer at once. */
static void bw_bidir(struct side *s, uint64_t size, const char *method, uint32_t mode)
{
	unsigned int it = iters_for(size), i;
	void *st[NSTREAMS];
	double t[2], peer[2];

	for (i = 0; i < NSTREAMS; i++)
		st[i] = s->st[i];
	NV(s, nvb_gpu_copy(s->g, s->rdata, s->ldata, size, st, NSTREAMS, mode));
	sync_all(s);
	barrier(s);
	t[0] = now_s();
	for (i = 0; i < it; i++)
		NV(s, nvb_gpu_copy(s->g, s->rdata, s->ldata, size, st, NSTREAMS, mode));
	sync_all(s);
	t[1] = now_s();
	ctl_send(s, t, sizeof(t), -1);
	ctl_recv(s, peer, sizeof(peer), NULL);
	if (s->role == 1) {
		double start = fmin(t[0], peer[0]), end = fmax(t[1], peer[1]);

		report(s, "bidir", method, size, 2.0 * size * it / (end - start) / 1e9, "GB/s");
	}
}

/*
 * Ping-pong of `size` bytes with a completion flag, on-GPU only: the
 * importer puts and signals, the exporter's stream waits for the flag and
 * answers the same way.  One-way time = total / (2 * n).
 */
static void pingpong(struct side *s, uint64_t size, int sm, const char *method)
{
	unsigned int n = opt.quick ? 200 : 1000, i;
	void *st0 = s->st[0];

	set_flag(s, s->lflags + F_PP, 0);
	sync_all(s);
	barrier(s);
	if (s->role == 1)
		CK(s, cuEventRecord(s->e0, s->st[0]));
	for (i = 1; i <= n; i++) {
		if (s->role == 0)
			NV(s, sm == 2 ? nvb_gpu_wait_spin(s->g, st0, s->lflags + F_PP, i) :
			   nvb_gpu_wait(s->g, st0, s->lflags + F_PP, i));
		if (sm) {
			NV(s, nvb_gpu_put_signal(s->g, s->rdata, s->ldata, size, st0,
						 s->rflags + F_PP, i));
		} else {
			CK(s, cuMemcpyDtoDAsync(s->rdata, s->ldata, size, s->st[0]));
			NV(s, nvb_gpu_signal(s->g, st0, s->rflags + F_PP, i));
		}
		if (s->role == 1)
			NV(s, sm == 2 ? nvb_gpu_wait_spin(s->g, st0, s->lflags + F_PP, i) :
			   nvb_gpu_wait(s->g, st0, s->lflags + F_PP, i));
	}
	if (s->role == 1) {
		CK(s, cuEventRecord(s->e1, s->st[0]));
		report(s, "put_signal_us", method, size, ev_ms(s) * 1e3 / (2.0 * n), "us");
	}
	sync_all(s);
	barrier(s);
}

/*
 * Pipelined one-way transfers of `size` bytes from the importer into the
 * exporter, each followed by a completion flag (timing: xfer_recv_side).
 */
/*
 * Flag values of the transfer tests: every run counts on from a fresh base
 * (both processes make the same calls in the same order), so a late write
 * of an earlier run can never satisfy a later run's wait.
 */
static uint32_t xfer_base;

static uint32_t next_base(void)
{
	xfer_base += 1000000;
	return xfer_base;
}

/*
 * Transfer rate = n transfers / (last completion seen by the receiver -
 * first transfer issued by the sender), both on the host's monotonic clock
 * (same host, two processes).  The receiver's stream waits for the last
 * flag; its host notes when that wait ended.  Nothing assumes transfers
 * complete in order, so pipelines that overlap transfers are timed right.
 */
static void xfer_recv_side(struct side *s, uint32_t last_val)
{
	double t1;

	NV(s, nvb_gpu_wait(s->g, s->st[0], s->lflags + F_XFER, last_val));
	CK(s, cuEventRecord(s->e1, s->st[0]));
	barrier(s);	/* the sender starts now */
	CK(s, cuEventSynchronize(s->e1));
	t1 = now_s();
	ctl_send(s, &t1, sizeof(t1), -1);
}

static void xfer_report(struct side *s, const char *method, uint64_t size, unsigned int n,
			double t0)
{
	double t1;

	ctl_recv(s, &t1, sizeof(t1), NULL);
	report(s, "xfer", method, size, (double)size * n / (t1 - t0) / 1e9, "GB/s");
	report(s, "xfer_us", method, size, (t1 - t0) * 1e6 / n, "us");
}

/* Transfers per xfer()/xfer_proxy() measurement of this size. */
static unsigned int xfer_count(uint64_t size)
{
	return size <= 16 * MiB ? (opt.quick ? 100 : 400) : iters_for(size) + 1;
}

static void xfer(struct side *s, uint64_t size, int mode, const char *method)
{
	unsigned int n = xfer_count(size), i;
	void *st[NSTREAMS];
	double t0;

	uint32_t base = next_base();

	for (i = 0; i < NSTREAMS; i++)
		st[i] = s->st[i];
	sync_all(s);
	barrier(s);
	if (s->role == 0) {
		xfer_recv_side(s, base + n);
	} else {
		barrier(s);
		t0 = now_s();
		for (i = 1; i <= n; i++) {
			if (mode == 4) {	/* copies alternate on st[1], st[2]; flags on st[3] */
				NV(s, nvb_gpu_copy_signal(s->g, s->rdata, s->ldata, size, st + 1, 3,
							  s->rflags + F_XFER, base + i));
				continue;
			}
			if (mode == 1) {
				NV(s, nvb_gpu_put_signal(s->g, s->rdata, s->ldata, size, st[0],
							 s->rflags + F_XFER, base + i));
				continue;
			}
			NV(s, nvb_gpu_copy(s->g, s->rdata, s->ldata, size, st,
					   mode == 2 ? NSTREAMS : (size >= 64 * MiB ? NSTREAMS : 1),
					   mode == 2 ? NVB_GPU_COPY_CE | NVB_GPU_COPY_SM |
					   NVB_GPU_COPY_SM_PCT(20) : 0));
			NV(s, nvb_gpu_signal(s->g, st[0], s->rflags + F_XFER, base + i));
		}
		xfer_report(s, method, size, n, t0);
	}
	sync_all(s);
	barrier(s);
}


/* ---- the persistent proxy (both processes run one; no cuCtxSynchronize meanwhile) ---- */

static void sync_streams(struct side *s)
{
	int i;

	for (i = 0; i < NSTREAMS; i++)
		CK(s, cuStreamSynchronize(s->st[i]));
}

/*
 * Ping-pong of 4 KiB puts, every op posted ahead: op i of each side waits
 * (in its proxy) for the peer's flag i, then puts and raises the peer's
 * flag.  One-way = host wall time of the whole exchange / (2 n): the peer
 * sees each completion by an acquire load in its own proxy and answers
 * from there.
 */
static void pingpong_proxy(struct side *s, struct nvb_gpu_proxy *p, uint64_t size, uint32_t base)
{
	unsigned int n = opt.quick ? 200 : 1000, i;
	struct nvb_gpu_put op;
	uint64_t last = 0;
	double t0, t1;

	memset(&op, 0, sizeof(op));
	op.dst = s->rdata;
	op.src = s->ldata;
	op.len = size;
	op.flag = s->rflags + F_PP;
	if (s->role == 0) {
		for (i = 1; i <= n; i++) {
			op.wait_flag = s->lflags + F_PP;
			op.wait_val = base + i;
			op.flag_val = base + i;
			NV(s, nvb_gpu_proxy_post(p, &op, &last));
		}
		barrier(s);
		NV(s, nvb_gpu_proxy_sync(p, last, 10000000000LL));
		barrier(s);
		return;
	}
	barrier(s);
	t0 = now_s();
	for (i = 1; i <= n; i++) {
		op.wait_flag = i > 1 ? s->lflags + F_PP : 0;
		op.wait_val = base + i - 1;
		op.flag_val = base + i;
		NV(s, nvb_gpu_proxy_post(p, &op, NULL));
	}
	memset(&op, 0, sizeof(op));	/* the last answer */
	op.wait_flag = s->lflags + F_PP;
	op.wait_val = base + n;
	NV(s, nvb_gpu_proxy_post(p, &op, &last));
	NV(s, nvb_gpu_proxy_sync(p, last, 10000000000LL));
	t1 = now_s();
	report(s, "put_signal_us", "nvbridge-proxy", size, (t1 - t0) * 1e6 / (2.0 * n), "us");
	barrier(s);
}

/* Pipelined puts through the proxy: host clock from the first post to the last completion. */
static void pipelined_puts_proxy(struct side *s, struct nvb_gpu_proxy *p)
{
	unsigned int n = opt.quick ? 500 : 4000, i;
	double t0, t1;

	NV(s, nvb_gpu_proxy_put(p, s->rdata, s->ldata, 4096, 0, 0));	/* warm-up */
	NV(s, nvb_gpu_proxy_sync(p, 0, 10000000000LL));
	t0 = now_s();
	for (i = 0; i < n; i++)
		NV(s, nvb_gpu_proxy_put(p, s->rdata + (i % 64) * 4096, s->ldata + (i % 64) * 4096,
					4096, 0, 0));
	NV(s, nvb_gpu_proxy_sync(p, 0, 10000000000LL));
	t1 = now_s();
	report(s, "put4k_us", "nvbridge-proxy", 4096, (t1 - t0) * 1e6 / n, "us");
}

/* As xfer(), the importer's transfers posted to its proxy; flags count on from base. */
static void xfer_proxy(struct side *s, struct nvb_gpu_proxy *p, uint64_t size,
		       const char *method)
{
	uint32_t base = next_base();
	unsigned int n = xfer_count(size), i;
	double t0;

	barrier(s);
	if (s->role == 0) {
		xfer_recv_side(s, base + n);
	} else {
		barrier(s);
		t0 = now_s();
		for (i = 1; i <= n; i++)
			NV(s, nvb_gpu_proxy_put(p, s->rdata, s->ldata, size, s->rflags + F_XFER,
						base + i));
		xfer_report(s, method, size, n, t0);
		NV(s, nvb_gpu_proxy_sync(p, 0, 60000000000LL));
	}
	sync_streams(s);
}

static void proxy_phase(struct side *s, const uint64_t *sizes, int nsizes)
{
	struct nvb_gpu_proxy *p = NULL;
	char ok = 1, peer_ok = 0;
	int i, err;

	if (!nvb_gpu_has_kernel(s->g))
		ok = 0;
	sync_all(s);
	set_flag(s, s->lflags + F_PP, 0);
	if (ok) {
		err = nvb_gpu_proxy_start(s->g, s->dev, opt.proxy_ctas, 0, &p);
		if (err) {
			char msg[300];

			snprintf(msg, sizeof(msg), "N proxy skipped: %s\n", nvb_gpu_last_error());
			if (write(s->res, msg, strlen(msg)) < 0)
				_exit(1);
			ok = 0;
		}
	}
	ctl_send(s, &ok, 1, -1);
	ctl_recv(s, &peer_ok, 1, NULL);
	if (ok && peer_ok) {
		progress(s, "proxy: put + completion latency");
		pingpong_proxy(s, p, 4096, 0);
		if (s->role == 1) {
			progress(s, "proxy: pipelined 4 KiB puts");
			pipelined_puts_proxy(s, p);
		}
		barrier(s);
		for (i = 0; i < nsizes; i++) {
			progress(s, "proxy: transfers with completion");
			xfer_proxy(s, p, sizes[i], "nvbridge-proxy");
		}
	}
	if (p)
		NV(s, nvb_gpu_proxy_stop(p, 10000000000LL));
	barrier(s);
	sync_all(s);
}

static void pipelined_puts(struct side *s)
{
	unsigned int n = opt.quick ? 500 : 4000, i;
	void *st0 = s->st[0];

	CK(s, cuEventRecord(s->e0, s->st[0]));
	for (i = 0; i < n; i++)
		CK(s, cuMemcpyDtoDAsync(s->rdata + (i % 64) * 4096, s->ldata, 4096, s->st[0]));
	CK(s, cuEventRecord(s->e1, s->st[0]));
	report(s, "put4k_us", "nvbridge-ce", 4096, ev_ms(s) * 1e3 / n, "us");

	if (nvb_gpu_has_kernel(s->g)) {
		CK(s, cuEventRecord(s->e0, s->st[0]));
		for (i = 0; i < n; i++)
			NV(s, nvb_gpu_put_signal(s->g, s->rdata + (i % 64) * 4096, s->ldata, 4096,
						 st0, 0, 0));
		CK(s, cuEventRecord(s->e1, s->st[0]));
		report(s, "put4k_us", "nvbridge-sm", 4096, ev_ms(s) * 1e3 / n, "us");
	}
	/* independent puts spread over the streams (copy engines in parallel) */
	CK(s, cuEventRecord(s->e0, s->st[0]));
	for (i = 1; i < NSTREAMS; i++)
		CK(s, cuStreamWaitEvent(s->st[i], s->e0, 0));
	for (i = 0; i < n; i++)
		CK(s, cuMemcpyDtoDAsync(s->rdata + (i % 64) * 4096, s->ldata + (i % 64) * 4096,
					4096, s->st[i % NSTREAMS]));
	for (i = 1; i < NSTREAMS; i++) {
		CUevent e;

		CK(s, cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
		CK(s, cuEventRecord(e, s->st[i]));
		CK(s, cuStreamWaitEvent(s->st[0], e, 0));
		CK(s, cuEventDestroy(e));
	}
	CK(s, cuEventRecord(s->e1, s->st[0]));
	report(s, "put4k_us", "nvbridge-ce-4streams", 4096, ev_ms(s) * 1e3 / n, "us");
}

static uint64_t xs_state = 0x9e3779b97f4a7c15ull;

static uint64_t xs(void)
{
	xs_state ^= xs_state << 13;
	xs_state ^= xs_state >> 7;
	xs_state ^= xs_state << 17;
	return xs_state;
}

/* Scattered blocks: the importer scatters its local blocks into the peer. */
static void blocks(struct side *s, uint64_t bsize, unsigned int count, int write)
{
	struct nvb_gpu_block *b = calloc(count, sizeof(*b));
	uint64_t slots = s->data_size / bsize, *perm, i, j, t;
	static const struct {
		uint32_t flag;
		const char *name;
	} modes[] = {
		{ NVB_GPU_COPY_SM, "nvbridge-sm" },
		{ NVB_GPU_COPY_BATCH, "cuMemcpyBatchAsync" },
		{ NVB_GPU_COPY_LOOP, "memcpy-loop" },
		{ 0, "nvbridge-auto" },
	};
	unsigned int it = opt.quick ? 5 : 20, k, m;
	char key[48];

	if (!b || count > slots)
		die(s, "blocks: %u x %llu do not fit", count, (unsigned long long)bsize);
	perm = malloc(slots * sizeof(*perm));
	for (i = 0; i < slots; i++)
		perm[i] = i;
	for (i = slots - 1; i > 0; i--) {
		j = xs() % (i + 1);
		t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (k = 0; k < count; k++) {
		uint64_t loc = s->ldata + perm[k] * bsize;
		uint64_t rem = s->rdata + perm[(k + count) % slots] * bsize;

		b[k].len = bsize;
		b[k].dst = write ? rem : loc;
		b[k].src = write ? loc : rem;
	}
	free(perm);
	snprintf(key, sizeof(key), "blocks_%s_%u", write ? "write" : "read", count);
	for (m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		if (modes[m].flag == NVB_GPU_COPY_SM && !nvb_gpu_has_kernel(s->g))
			continue;
		int err = nvb_gpu_copy_blocks(s->g, b, count, s->st[0], modes[m].flag, 0, 0);

		if (err == -EOPNOTSUPP)
			continue;	/* e.g. no batch API: that row is left out */
		NV(s, err);
		CK(s, cuEventRecord(s->e0, s->st[0]));
		for (k = 0; k < it; k++)
			NV(s, nvb_gpu_copy_blocks(s->g, b, count, s->st[0], modes[m].flag, 0, 0));
		CK(s, cuEventRecord(s->e1, s->st[0]));
		report(s, key, modes[m].name, bsize,
		       (double)bsize * count * it / (ev_ms(s) * 1e-3) / 1e9, "GB/s");
	}
	free(b);
}

/* Same-process baselines, in the importer (contexts on both GPUs). */
static void same_process(struct side *s, const uint64_t *sizes, int nsizes)
{
	CUdeviceptr pa, pb;
	CUstream sa, sb;
	int i, r;

	CK(s, cuCtxSetCurrent(NULL));
	NV(s, nvb_gpu_set_device(s->g, s->peer_dev));
	CK(s, cuMemAlloc(&pa, GiB));
	CK(s, cuStreamCreate(&sa, CU_STREAM_NON_BLOCKING));
	NV(s, nvb_gpu_set_device(s->g, s->dev));
	CK(s, cuMemAlloc(&pb, GiB));
	CK(s, cuStreamCreate(&sb, CU_STREAM_NON_BLOCKING));
	if (s->dev != s->peer_dev) {
		CUcontext ca, cb;

		NV(s, nvb_gpu_set_device(s->g, s->peer_dev));
		CK(s, cuCtxGetCurrent(&ca));
		NV(s, nvb_gpu_set_device(s->g, s->dev));
		CK(s, cuCtxGetCurrent(&cb));
		r = s->cu.cuCtxEnablePeerAccess(ca, 0);
		if (r && r != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)
			die(s, "cuCtxEnablePeerAccess: %s", nvb_cuda_errname(&s->cu, r));
		NV(s, nvb_gpu_set_device(s->g, s->peer_dev));
		r = s->cu.cuCtxEnablePeerAccess(cb, 0);
		if (r && r != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)
			die(s, "cuCtxEnablePeerAccess: %s", nvb_cuda_errname(&s->cu, r));
		NV(s, nvb_gpu_set_device(s->g, s->dev));
	}
	CK(s, cuMemsetD32Async(pb, 0x5a5a5a5a, GiB / 4, sb));
	for (i = 0; i < nsizes; i++) {
		uint64_t size = sizes[i];
		unsigned int it = iters_for(size), k;
		double t0, t1;

		CK(s, cuMemcpyDtoDAsync(pa, pb, size, sb));
		CK(s, cuEventRecord(s->e0, sb));
		for (k = 0; k < it; k++)
			CK(s, cuMemcpyDtoDAsync(pa, pb, size, sb));
		CK(s, cuEventRecord(s->e1, sb));
		report(s, "write", "same-process", size, (double)size * it / (ev_ms(s) * 1e-3) / 1e9, "GB/s");
		CK(s, cuEventRecord(s->e0, sb));
		for (k = 0; k < it; k++)
			CK(s, cuMemcpyDtoDAsync(pb, pa, size, sb));
		CK(s, cuEventRecord(s->e1, sb));
		report(s, "read", "same-process", size, (double)size * it / (ev_ms(s) * 1e-3) / 1e9, "GB/s");
		/* both GPUs pushing, each on its own engines */
		sync_all(s);
		t0 = now_s();
		for (k = 0; k < it; k++)
			CK(s, cuMemcpyDtoDAsync(pa, pb, size, sb));
		NV(s, nvb_gpu_set_device(s->g, s->peer_dev));
		for (k = 0; k < it; k++)
			CK(s, cuMemcpyDtoDAsync(pb, pa, size, sa));
		CK(s, cuStreamSynchronize(sa));
		NV(s, nvb_gpu_set_device(s->g, s->dev));
		CK(s, cuStreamSynchronize(sb));
		t1 = now_s();
		report(s, "bidir", "same-process", size, 2.0 * size * it / (t1 - t0) / 1e9, "GB/s");
	}
	CK(s, cuStreamDestroy(sb));
	CK(s, cuMemFree(pb));
	NV(s, nvb_gpu_set_device(s->g, s->peer_dev));
	CK(s, cuStreamDestroy(sa));
	CK(s, cuMemFree(pa));
	NV(s, nvb_gpu_set_device(s->g, s->dev));
}


/* Where an import's time went: fetch/rendezvous (the rest) and each CUDA step. */
static void report_import_stages(struct side *s, struct nvb_gpu_map *m, double total_s,
				 const char *method)
{
	struct nvb_gpu_map_stats st;
	double cuda_us = 0;
	char key[48];
	unsigned int k;

	memset(&st, 0, sizeof(st));
	st.size = sizeof(st);
	if (nvb_gpu_map_stats(m, &st))
		return;
	report(s, "import_import_us", method, nvb_gpu_map_size(m), st.import_ns / 1e3, "us");
	report(s, "import_reserve_us", method, nvb_gpu_map_size(m), st.reserve_ns / 1e3, "us");
	report(s, "import_map_us", method, nvb_gpu_map_size(m), st.map_ns / 1e3, "us");
	cuda_us = (st.import_ns + st.reserve_ns + st.map_ns) / 1e3;
	for (k = 0; k < st.naccess && k < 4; k++) {
		snprintf(key, sizeof(key), "import_access_gpu%d_us", st.access_dev[k]);
		report(s, key, method, nvb_gpu_map_size(m), st.access_ns[k] / 1e3, "us");
		cuda_us += st.access_ns[k] / 1e3;
	}
	report(s, "import_rest_us", method, nvb_gpu_map_size(m), total_s * 1e6 - cuda_us, "us");
}

/*
 * A first import of a fresh 1 GiB entry at the same point of the run as the
 * legacy IPC baseline (contexts and peer paths equally warm for both).
 */
static unsigned int late_seq;	/* one name per call: no revocation of the last in the way */

static void late_import(struct side *s)
{
	unsigned int seq = late_seq++;
	struct nvb_gpu_buf *b = NULL;
	struct nvb_gpu_map *m = NULL;
	char name[80];
	double t0, t1;
	uint64_t id = 0;

	if (s->role == 0) {
		NV(s, nvb_gpu_alloc(s->g, s->dev, GiB, 0, &b));
#ifdef NVB_BENCH_LIB
		if (opt.use_lib) {
			snprintf(name, sizeof(name), "%s.late%u", s->name_self, seq);
			NV(s, nvb_gpu_publish(s->g, s->h, name, b, NVB_ACCESS_OWNER, &id));
			barrier(s);	/* published: the importer's clock starts now */
		} else
#endif
		{
			struct nvb_gpu_meta meta;
			int fd;

			NV(s, nvb_gpu_export(b, &fd, &meta));
			barrier(s);
			ctl_send(s, &meta, sizeof(meta), fd);
		}
		barrier(s);
#ifdef NVB_BENCH_LIB
		if (opt.use_lib)
			nvb_unpublish(s->h, id, NULL);
#endif
		nvb_gpu_free(b);
		return;
	}
	barrier(s);
#ifdef NVB_BENCH_LIB
	if (opt.use_lib) {
		snprintf(name, sizeof(name), "%s.late%u", s->name_peer, seq);
		/*
		 * Handle revocations left by earlier phases first: releasing
		 * those mappings is real work, but not this import's.
		 */
		nvb_gpu_poll_events(s->g, s->h);
		t0 = now_s();
		{
			/* nvb_gpu_import()'s steps, each timed */
			struct nvb_fetch_opts fo = { .sz = sizeof(fo),
				.flags = NVB_FETCH_WAIT, .timeout_ns = 10 * 1000000000LL };
			unsigned char blob[512];
			struct nvb_entry ent;
			double ta, tb;
			uint64_t wid;
			int fd = -1, err;

			err = nvb_watch(s->h, name, 0, &wid);
			ta = now_s();
			if (err && err != -EEXIST)
				NV(s, err);
			NV(s, nvb_fetch(s->h, name, &fo, blob, sizeof(blob), &ent, &fd));
			tb = now_s();
			NV(s, nvb_gpu_import_fd(s->g, ent.id, fd, blob, ent.blob_len, 0, &m));
			if (fd >= 0)
				close(fd);
			report(s, "import_watch_us", "nvbridge-late", GiB, (ta - t0) * 1e6, "us");
			report(s, "import_fetch_us", "nvbridge-late", GiB, (tb - ta) * 1e6, "us");
			report(s, "import_fd_us", "nvbridge-late", GiB, (now_s() - tb) * 1e6, "us");
		}
		t1 = now_s();
	} else
#endif
	{
		struct nvb_gpu_meta meta;
		int fd, n;

		n = ctl_recv(s, &meta, sizeof(meta), &fd);
		t0 = now_s();
		NV(s, nvb_gpu_import_fd(s->g, 0, fd, &meta, (size_t)n, 0, &m));
		t1 = now_s();
		close(fd);
	}
	(void)id;
	(void)name;
	(void)seq;
	report(s, "import_ms", "nvbridge-late", nvb_gpu_map_size(m), (t1 - t0) * 1e3, "ms");
	report_import_stages(s, m, t1 - t0, "nvbridge-late");
	nvb_gpu_unmap(m);
	nvb_gpu_cache_trim(s->g);
	barrier(s);
}

/* Legacy CUDA IPC: exporter cuMemAlloc + cuIpcGetMemHandle, importer opens. */
static void legacy_ipc(struct side *s)
{
	CUipcMemHandle ih;
	CUdeviceptr p;
	double t0, t1;

	if (s->role == 0) {
		CK(s, cuMemAlloc(&p, GiB));
		t0 = now_s();
		CK(s, cuIpcGetMemHandle(&ih, p));
		t1 = now_s();
		ctl_send(s, &ih, sizeof(ih), -1);
		ctl_send(s, &t1, sizeof(t1), -1);
		(void)t0;
		barrier(s);
		CK(s, cuMemFree(p));
		return;
	}
	ctl_recv(s, &ih, sizeof(ih), NULL);
	ctl_recv(s, &t1, sizeof(t1), NULL);
	t0 = now_s();
	CK(s, cuIpcOpenMemHandle(&p, ih, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
	t1 = now_s();
	report(s, "import_ms", "legacy-ipc", GiB, (t1 - t0) * 1e3, "ms");
	{
		unsigned int it = iters_for(GiB), k;

		CK(s, cuMemcpyDtoDAsync(p, s->ldata, GiB, s->st[0]));
		CK(s, cuEventRecord(s->e0, s->st[0]));
		for (k = 0; k < it; k++)
			CK(s, cuMemcpyDtoDAsync(p, s->ldata, GiB, s->st[0]));
		CK(s, cuEventRecord(s->e1, s->st[0]));
		report(s, "write", "legacy-ipc", GiB, (double)GiB * it / (ev_ms(s) * 1e-3) / 1e9, "GB/s");
	}
	t0 = now_s();
	CK(s, cuIpcCloseMemHandle(p));
	t1 = now_s();
	report(s, "ipc_close_ms", "legacy-ipc", GiB, (t1 - t0) * 1e3, "ms");
	barrier(s);
}

/* ---- NCCL through dlopen ---- */

typedef struct {
	char internal[128];
} ncclUniqueId;
typedef struct ncclComm *ncclComm_t;
struct nccl_api {
	void *lib;
	int (*GetVersion)(int *);
	int (*GetUniqueId)(ncclUniqueId *);
	int (*CommInitRank)(ncclComm_t *, int, ncclUniqueId, int);
	int (*CommDestroy)(ncclComm_t);
	int (*Send)(const void *, size_t, int, int, ncclComm_t, CUstream);
	int (*Recv)(void *, size_t, int, int, ncclComm_t, CUstream);
	const char *(*GetErrorString)(int);
};

static int nccl_load(struct nccl_api *n, char *why, size_t len)
{
	const char *path = opt.nccl ? opt.nccl : getenv("NVB_NCCL_LIB");

	setenv("NCCL_NVLS_ENABLE", "0", 1);	/* never NVLink multicast */
	n->lib = dlopen(path ? path : "libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
	if (!n->lib) {
		snprintf(why, len, "%s", dlerror());
		return -1;
	}
#define NS(f) do { void *p_ = dlsym(n->lib, "nccl" #f); if (!p_) { \
		snprintf(why, len, "nccl" #f " missing"); return -1; } \
		memcpy(&n->f, &p_, sizeof(p_)); } while (0)
	NS(GetVersion);
	NS(GetUniqueId);
	NS(CommInitRank);
	NS(CommDestroy);
	NS(Send);
	NS(Recv);
	NS(GetErrorString);
#undef NS
	return 0;
}

static void nccl_bench(struct side *s, const uint64_t *sizes, int nsizes)
{
	struct nccl_api n;
	ncclUniqueId id;
	ncclComm_t comm;
	char why[256] = "", ok, peer_ok;
	int i, r, v = 0;
	int rank = s->role == 0 ? 0 : 1;

	memset(&n, 0, sizeof(n));
	if (s->dev == s->peer_dev)
		snprintf(why, sizeof(why), "both processes are on GPU %d and NCCL runs one rank "
			 "per GPU", s->dev);
	else if (opt.no_nccl)
		snprintf(why, sizeof(why), "--no-nccl");
	ok = !why[0] && nccl_load(&n, why, sizeof(why)) == 0;
	ctl_send(s, &ok, 1, -1);
	ctl_recv(s, &peer_ok, 1, NULL);
	if (!ok || !peer_ok) {
		if (s->role == 1) {
			char msg[300];

			snprintf(msg, sizeof(msg), "N NCCL skipped: %s\n", why[0] ? why : "peer could not load it");
			if (write(s->res, msg, strlen(msg)) < 0)
				_exit(1);
		}
		return;
	}
	progress(s, "NCCL init");
	if (s->role == 0) {
		r = n.GetUniqueId(&id);
		if (r)
			die(s, "ncclGetUniqueId: %s", n.GetErrorString(r));
		ctl_send(s, &id, sizeof(id), -1);
	} else {
		ctl_recv(s, &id, sizeof(id), NULL);
	}
	r = n.CommInitRank(&comm, 2, id, rank);
	if (r)
		die(s, "ncclCommInitRank: %s", n.GetErrorString(r));
	n.GetVersion(&v);
	if (s->role == 1)
		report(s, "nccl_version", "nccl", 0, v, "");
	/*
	 * One-way transfers importer -> exporter, timed from the first send
	 * issued to the last receive complete (same method as xfer()).
	 */
	for (i = 0; i < nsizes; i++) {
		uint64_t size = sizes[i];
		unsigned int cnt = size <= 16 * MiB ? (opt.quick ? 100 : 400) : iters_for(size) + 1, k;
		double t0, t1;

		progress(s, "NCCL send/recv");
		sync_all(s);
		barrier(s);
		if (s->role == 0) {	/* same clocks as xfer_recv_side / xfer_report */
			barrier(s);
			for (k = 0, r = 0; k < cnt && !r; k++)
				r = n.Recv((void *)(uintptr_t)s->ldata, size, 0, 1, comm, s->st[0]);
			if (r)
				die(s, "ncclRecv: %s", n.GetErrorString(r));
			CK(s, cuEventRecord(s->e1, s->st[0]));
			CK(s, cuEventSynchronize(s->e1));
			t1 = now_s();
			ctl_send(s, &t1, sizeof(t1), -1);
		} else {
			barrier(s);
			t0 = now_s();
			for (k = 0, r = 0; k < cnt && !r; k++)
				r = n.Send((const void *)(uintptr_t)s->ldata, size, 0, 0, comm, s->st[0]);
			if (r)
				die(s, "ncclSend: %s", n.GetErrorString(r));
			ctl_recv(s, &t1, sizeof(t1), NULL);
			report(s, "xfer", "nccl", size, (double)size * cnt / (t1 - t0) / 1e9, "GB/s");
			report(s, "xfer_us", "nccl", size, (t1 - t0) * 1e6 / cnt, "us");
		}
		sync_all(s);
	}
	/* ping-pong 4 KiB: one-way latency */
	{
		unsigned int cnt = opt.quick ? 200 : 1000, k;

		sync_all(s);
		barrier(s);
		if (s->role == 1)
			CK(s, cuEventRecord(s->e0, s->st[0]));
		for (k = 0, r = 0; k < cnt && !r; k++) {
			if (s->role == 1) {
				r = n.Send((const void *)(uintptr_t)s->ldata, 4096, 0, 0, comm, s->st[0]);
				if (!r)
					r = n.Recv((void *)(uintptr_t)s->ldata, 4096, 0, 0, comm, s->st[0]);
			} else {
				r = n.Recv((void *)(uintptr_t)s->ldata, 4096, 0, 1, comm, s->st[0]);
				if (!r)
					r = n.Send((const void *)(uintptr_t)s->ldata, 4096, 0, 1, comm, s->st[0]);
			}
		}
		if (r)
			die(s, "nccl ping-pong: %s", n.GetErrorString(r));
		if (s->role == 1) {
			CK(s, cuEventRecord(s->e1, s->st[0]));
			report(s, "put_signal_us", "nccl", 4096, ev_ms(s) * 1e3 / (2.0 * cnt), "us");
		}
		sync_all(s);
	}
	barrier(s);
	n.CommDestroy(comm);
}

static void corun_report(void *ctx, const char *key, const char *method, uint64_t size,
			 double value, const char *unit)
{
	report(ctx, key, method, size, value, unit);
}

static void corun_progress(void *ctx, const char *what)
{
	progress(ctx, what);
}

/* The co-run phase (corun.c) on the importer's GPU; why it could not run goes to the parent. */
static void corun_run(struct side *s)
{
	struct corun_env e;
	char why[300], msg[320];

	memset(&e, 0, sizeof(e));
	e.cu = &s->cu;
	e.g = s->g;
	e.dev = s->dev;
	e.local = s->ldata;
	e.remote = s->rdata;
	e.quick = opt.quick;
	e.trials = opt.trials;
	e.proxy_ctas = opt.proxy_ctas;
	e.cublas = opt.cublas;
	e.ctx = s;
	e.report = corun_report;
	e.progress = corun_progress;
	if (corun_phase(&e, why, sizeof(why))) {
		snprintf(msg, sizeof(msg), "C %s\n", why);
		if (write(s->res, msg, strlen(msg)) < 0)
			_exit(1);
	}
	NV(s, nvb_gpu_set_device(s->g, s->dev));
}

static void child(int role, int ctl, int res, const char *tag)
{
	struct side S, *s = &S;
	uint64_t sizes[16], size;
	int nsizes = 0, i;
	unsigned int trial;
	double t;
	char dname[128];

	memset(s, 0, sizeof(*s));
	s->role = role;
	s->ctl = ctl;
	s->res = res;
	s->dev = role ? opt.gpu_b : opt.gpu_a;
	s->peer_dev = role ? opt.gpu_a : opt.gpu_b;
	snprintf(s->name_self, sizeof(s->name_self), "nvbench.%s.%c", tag, role ? 'B' : 'A');
	snprintf(s->name_peer, sizeof(s->name_peer), "nvbench.%s.%c", tag, role ? 'A' : 'B');
	for (size = opt.min_size; size <= opt.max_size; size *= 4)
		sizes[nsizes++] = size;

	{
		char msg[256];

		if (nvb_cuda_load(&s->cu, NULL, msg, sizeof(msg)))
			die(s, "%s", msg);
	}
	{
		double t0 = now_s();

		NV(s, nvb_gpu_open(&s->g, NULL));
		if (role == 1)
			report(s, "gpu_open_ms", "nvbridge", 0, (now_s() - t0) * 1e3, "ms");
	}
	if (!opt.gpus_given && nvb_gpu_device_count(s->g) == 1)
		s->dev = s->peer_dev = 0;	/* one GPU: both processes on it */
	if (s->dev >= nvb_gpu_device_count(s->g) || s->peer_dev >= nvb_gpu_device_count(s->g))
		die(s, "need GPUs %d and %d, have %d", opt.gpu_a, opt.gpu_b,
		    nvb_gpu_device_count(s->g));
	if (role == 1) {
		char msg[64];

		snprintf(msg, sizeof(msg), "I gpus %d %d\n", s->peer_dev, s->dev);
		if (write(res, msg, strlen(msg)) < 0)
			_exit(1);
	}
	NV(s, nvb_gpu_set_device(s->g, s->dev));
	for (i = 0; i < NSTREAMS; i++)
		CK(s, cuStreamCreate(&s->st[i], CU_STREAM_NON_BLOCKING));
	CK(s, cuEventCreate(&s->e0, CU_EVENT_DEFAULT));
	CK(s, cuEventCreate(&s->e1, CU_EVENT_DEFAULT));
	if (role == 1) {
		char msg[200];

		nvb_gpu_device_name(s->g, s->dev, dname, sizeof(dname));
		snprintf(msg, sizeof(msg), "I device %s\nI driver %d\nI kernel %d\n", dname,
			 nvb_gpu_driver_version(s->g), nvb_gpu_has_kernel(s->g));
		if (write(res, msg, strlen(msg)) < 0)
			_exit(1);
	}
#ifdef NVB_BENCH_LIB
	if (opt.use_lib) {
		struct nvb_opts o;

		memset(&o, 0, sizeof(o));
		o.sz = sizeof(o);
		o.socket_path = opt.socket;
		NV(s, nvb_open(&o, &s->h));
		if (role == 1) {
			char msg[100];

			snprintf(msg, sizeof(msg), "I backend %s\n", nvb_backend_name(nvb_backend(s->h)));
			if (write(res, msg, strlen(msg)) < 0)
				_exit(1);
		}
	}
#endif
	s->data_size = opt.max_size < GiB ? GiB : opt.max_size;
	progress(s, "allocate + publish");
	NV(s, nvb_gpu_alloc(s->g, s->dev, FLAGS_BYTES + s->data_size, 0, &s->buf));
	if (role == 1) {
		char msg[160];

		snprintf(msg, sizeof(msg), "I alloc %s%s\n",
			 nvb_gpu_buf_handle_types(s->buf) & NVB_GPU_HANDLE_FABRIC ?
			 "FABRIC|POSIX_FD" : "POSIX_FD (FABRIC trial: ",
			 nvb_gpu_buf_handle_types(s->buf) & NVB_GPU_HANDLE_FABRIC ? "" :
			 nvb_cuda_errname(&s->cu, nvb_gpu_buf_fabric_error(s->buf)));
		if (!(nvb_gpu_buf_handle_types(s->buf) & NVB_GPU_HANDLE_FABRIC))
			strcat(msg + strlen(msg) - 1, ")\n");
		if (write(res, msg, strlen(msg)) < 0)
			_exit(1);
	}
	s->lflags = nvb_gpu_buf_ptr(s->buf);
	s->ldata = s->lflags + FLAGS_BYTES;
	CK(s, cuMemsetD32Async(s->lflags, 0, FLAGS_BYTES / 4, s->st[0]));
	CK(s, cuMemsetD32Async(s->ldata, role ? 0xb0b0b0b0 : 0xa0a0a0a0, s->data_size / 4, s->st[0]));
	sync_all(s);

	/*
	 * Exporter publishes first, importer imports, then the other way.  The
	 * first barrier keeps the importer's clock from running while the
	 * exporter is still allocating: a FETCH that waits for the name would
	 * count the other process's set-up (13-35 ms in some runs before).  The
	 * socketpair stand-in starts its clock once the descriptor is in.
	 */
	if (role == 0) {
		rdv_publish(s);
		if (opt.use_lib)
			barrier(s);
		barrier(s);
		rdv_import(s, &s->map, 0);
	} else {
		if (opt.use_lib)
			barrier(s);
		t = rdv_import(s, &s->map, 0);
		report(s, "import_ms", "nvbridge", nvb_gpu_map_size(s->map), t * 1e3, "ms");
		report_import_stages(s, s->map, t, "nvbridge");
		{
			struct nvb_gpu_map *m2;
			unsigned int k, n = 1000;
			double tot = 0;

			for (k = 0; k < n; k++) {
				tot += rdv_reimport(s, &m2);
				nvb_gpu_unmap(m2);
			}
			report(s, "reimport_us", "nvbridge", nvb_gpu_map_size(s->map), tot / n * 1e6, "us");
		}
		barrier(s);
		rdv_publish(s);
	}
	s->rflags = nvb_gpu_map_ptr(s->map);
	s->rdata = s->rflags + FLAGS_BYTES;
	if (role == 1) {
		char msg[80];

		snprintf(msg, sizeof(msg), "I import %s\n",
			 nvb_gpu_map_handle_type(s->map) == NVB_GPU_HANDLE_FABRIC ? "fabric" : "fd");
		if (write(res, msg, strlen(msg)) < 0)
			_exit(1);
	}
	barrier(s);

	/*
	 * Every phase runs opt.trials times, the cheap ones and the costly
	 * ones alike: the parent reports the median and the spread.
	 */
	for (trial = 0; trial < opt.trials; trial++) {
		char tp[48];

		snprintf(tp, sizeof(tp), "trial %u of %u", trial + 1, opt.trials);
		progress(s, tp);
		/* bulk write / read, importer only; the exporter idles */
		if (role == 1) {
			for (i = 0; i < nsizes; i++) {
				char p[64];

				snprintf(p, sizeof(p), "write/read %llu KiB", (unsigned long long)sizes[i] >> 10);
				progress(s, p);
				bw_one_side(s, "write", s->rdata, s->ldata, sizes[i], NVB_GPU_COPY_CE, 1, "nvbridge-ce");
				bw_one_side(s, "read", s->ldata, s->rdata, sizes[i], NVB_GPU_COPY_CE, 1, "nvbridge-ce");
				if (sizes[i] >= 8 * MiB) {
					bw_one_side(s, "write", s->rdata, s->ldata, sizes[i], NVB_GPU_COPY_CE,
						    NSTREAMS, "nvbridge-ce-4streams");
					bw_one_side(s, "read", s->ldata, s->rdata, sizes[i], NVB_GPU_COPY_CE,
						    NSTREAMS, "nvbridge-ce-4streams");
				}
				if (nvb_gpu_has_kernel(s->g) && sizes[i] >= 16 * MiB) {
					static const unsigned int pcts[] = { 10, 20, 30 };
					unsigned int q;

					for (q = 0; q < 3; q++) {
						char mname[40];
						uint32_t fl = NVB_GPU_COPY_CE | NVB_GPU_COPY_SM |
							      NVB_GPU_COPY_SM_PCT(pcts[q]);

						snprintf(mname, sizeof(mname), "nvbridge-hybrid%u", pcts[q]);
						bw_one_side(s, "write", s->rdata, s->ldata, sizes[i], fl, NSTREAMS, mname);
						bw_one_side(s, "read", s->ldata, s->rdata, sizes[i], fl, NSTREAMS, mname);
					}
				}
				if (nvb_gpu_has_kernel(s->g)) {
					bw_one_side(s, "write", s->rdata, s->ldata, sizes[i], NVB_GPU_COPY_SM, 1, "nvbridge-sm");
					bw_one_side(s, "read", s->ldata, s->rdata, sizes[i], NVB_GPU_COPY_SM, 1, "nvbridge-sm");
				}
			}
			progress(s, "pipelined 4 KiB puts");
			pipelined_puts(s);
			progress(s, "scattered blocks");
			{
				static const uint64_t bs[] = { 4096, 16384, 65536, 262144, 1048576 };
				unsigned int k;

				for (k = 0; k < sizeof(bs) / sizeof(bs[0]); k++) {
					if (bs[k] * opt.blk_count * 2 > s->data_size)
						continue;
					blocks(s, bs[k], opt.blk_count, 1);
					blocks(s, bs[k], opt.blk_count, 0);
				}
				if (opt.blk_size != 65536 && opt.blk_size * opt.blk_count * 2 <= s->data_size) {
					blocks(s, opt.blk_size, opt.blk_count, 1);
					blocks(s, opt.blk_size, opt.blk_count, 0);
				}
			}
			progress(s, "same-process baseline");
			same_process(s, sizes, nsizes);
		}
		barrier(s);
		/* bidirectional: both push */
		for (i = 0; i < nsizes; i++) {
			if (sizes[i] < MiB)
				continue;
			progress(s, "bidirectional");
			bw_bidir(s, sizes[i], "nvbridge-ce", NVB_GPU_COPY_CE);
			if (nvb_gpu_has_kernel(s->g) && sizes[i] >= 64 * MiB)
				bw_bidir(s, sizes[i], "nvbridge-hybrid20", NVB_GPU_COPY_CE | NVB_GPU_COPY_SM |
					 NVB_GPU_COPY_SM_PCT(20));
		}
		progress(s, "put + completion latency");
		pingpong(s, 4096, 0, "nvbridge-ce+memop");
		if (nvb_gpu_has_kernel(s->g)) {
			pingpong(s, 4096, 1, "nvbridge-sm+memop");
			pingpong(s, 4096, 2, "nvbridge-sm+spin");
		}
		for (i = 0; i < nsizes; i++) {
			progress(s, "transfers with completion");
			xfer(s, sizes[i], 0, "nvbridge-ce");
			if (sizes[i] >= 64 * 1024)
				xfer(s, sizes[i], 4, "nvbridge-ce-pipe");
			if (nvb_gpu_has_kernel(s->g)) {
				if (sizes[i] <= 16 * MiB)
					xfer(s, sizes[i], 1, "nvbridge-sm");
				if (sizes[i] >= 16 * MiB)
					xfer(s, sizes[i], 2, "nvbridge-hybrid20");
			}
		}
		proxy_phase(s, sizes, nsizes);
		progress(s, "legacy CUDA IPC");
		late_import(s);
		legacy_ipc(s);
	}
	if (role == 1 && !opt.no_corun)
		corun_run(s);
	nccl_bench(s, sizes, nsizes);
	barrier(s);
	nvb_gpu_unmap(s->map);
	sync_all(s);
	nvb_gpu_free(s->buf);
#ifdef NVB_BENCH_LIB
	if (s->h)
		nvb_close(s->h);
#endif
	nvb_gpu_close(s->g);
	if (write(res, "D\n", 2) < 0)
		_exit(1);
	_exit(0);
}

/* ------------------------------------------------------------ parent */

static struct {
	char device[128];
	char backend[32];
	char alloc[128];
	char import[16];
	char nccl_note[256];
	char corun_note[256];
	int driver, kernel;
} info;

static void scopy(char *d, size_t n, const char *s)
{
	size_t l = strlen(s);

	if (l >= n)
		l = n - 1;
	memcpy(d, s, l);
	d[l] = 0;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* r (in the free slot) is one sample: a new figure or one more sample of one. */
static void add_sample(struct result *r)
{
	struct result *e = NULL;
	int i;

	for (i = 0; i < nresults; i++)
		if (!strcmp(results[i].key, r->key) && !strcmp(results[i].method, r->method) &&
		    results[i].size == r->size) {
			e = &results[i];
			break;
		}
	if (!e) {
		e = r;
		e->n = 0;
		nresults++;
	}
	if (e->n < MAX_SAMPLES)
		e->v[e->n++] = r->value;
}

/* value = median of the samples; min and max kept for the spread. */
static void finish_samples(void)
{
	int i;

	for (i = 0; i < nresults; i++) {
		struct result *r = &results[i];
		double t[MAX_SAMPLES];

		memcpy(t, r->v, sizeof(double) * (size_t)r->n);
		qsort(t, (size_t)r->n, sizeof(double), cmp_dbl);
		r->min = t[0];
		r->max = t[r->n - 1];
		r->value = r->n % 2 ? t[r->n / 2] : (t[r->n / 2 - 1] + t[r->n / 2]) / 2;
	}
}

/* "1.23 (1.1-1.4)": median and the range of the samples. */
static const char *med_spread(const struct result *r, char *buf, size_t n)
{
	if (r->n > 1)
		snprintf(buf, n, "%.3g (%.3g-%.3g)", r->value, r->min, r->max);
	else
		snprintf(buf, n, "%.3g", r->value);
	return buf;
}

static const struct result *find(const char *key, const char *method, uint64_t size)
{
	int i;

	for (i = 0; i < nresults; i++)
		if (!strcmp(results[i].key, key) && !strcmp(results[i].method, method) &&
		    (size == 0 || results[i].size == size))
			return &results[i];
	return NULL;
}

/* Best nvbridge-* value for key/size (max for GB/s, min for times). */
static const struct result *best(const char *key, uint64_t size, int lower_is_better)
{
	const struct result *b = NULL;
	int i;

	for (i = 0; i < nresults; i++) {
		const struct result *r = &results[i];

		if (strcmp(r->key, key) || r->size != size || strncmp(r->method, "nvbridge", 8) ||
		    strchr(r->method, '!'))
			continue;
		if (!b || (lower_is_better ? r->value < b->value : r->value > b->value))
			b = r;
	}
	return b;
}

/*
 * A one-way transfer rate above what the link carries (a 1 GiB
 * same-process copy, same run) is a broken measurement, not a result: mark
 * it ('!' suffix), keep it out of the goals, and say so.
 */
static char invalid_note[512];

static void invalidate_impossible(void)
{
	int i;

	for (i = 0; i < nresults; i++) {
		struct result *r = &results[i];
		const struct result *w;

		if (strcmp(r->key, "xfer") || strncmp(r->method, "nvbridge", 8))
			continue;
		w = find("write", "same-process", GiB);
		if (w && r->value > 1.02 * w->value && strlen(r->method) + 2 < sizeof(r->method)) {
			size_t n = strlen(invalid_note);

			snprintf(invalid_note + n, sizeof(invalid_note) - n, "%s%s@%lluB %.0f GB/s",
				 n ? ", " : "", r->method, (unsigned long long)r->size, r->value);
			strcat(r->method, "!");
		}
	}
}

struct goal_row {
	const char *metric;
	const struct result *nvb;
	const struct result *base;
	const char *base_name;
	double ratio;		/* nvb / base, or base / nvb for times */
	const char *goal;
	int met;		/* -1 unknown */
};

static void print_goals(FILE *f, struct goal_row *rows, int n)
{
	int i;

	fprintf(f, "values: median (min-max) of %u trials\n", opt.trials);
	fprintf(f, "%-40s %-28s %26s  %-22s %26s %8s  %-22s %s\n", "metric", "nvbridge (method)",
		"value", "baseline", "value", "ratio", "goal", "met");
	for (i = 0; i < n; i++) {
		struct goal_row *r = &rows[i];
		char nv[56] = "-", bv[56] = "-", ra[16] = "-";

		char t[40];

		if (r->nvb)
			snprintf(nv, sizeof(nv), "%s %s", med_spread(r->nvb, t, sizeof(t)), r->nvb->unit);
		if (r->base)
			snprintf(bv, sizeof(bv), "%s %s", med_spread(r->base, t, sizeof(t)), r->base->unit);
		if (r->ratio > 0)
			snprintf(ra, sizeof(ra), "%.2fx", r->ratio);
		fprintf(f, "%-40s %-28s %26s  %-22s %26s %8s  %-22s %s\n", r->metric,
			r->nvb ? r->nvb->method : "-", nv, r->base_name, bv, ra, r->goal,
			r->met < 0 ? "n/a" : r->met ? "yes" : "NO");
	}
}

static int build_goals(struct goal_row *rows)
{
	const struct result *n, *b;
	int k = 0;
	char key[48];

#define ROW(m, nv, bs, bn, rt, g, mt) do { rows[k].metric = (m); rows[k].nvb = (nv); \
	rows[k].base = (bs); rows[k].base_name = (bn); rows[k].ratio = (rt); \
	rows[k].goal = (g); rows[k].met = (mt); k++; } while (0)
	n = best("write", GiB, 0);
	b = find("write", "same-process", GiB);
	ROW("cross-process write, 1 GiB", n, b, "same-process copy",
	    n && b ? n->value / b->value : 0, ">= 0.99x", n && b ? n->value >= 0.99 * b->value : -1);
	n = best("read", GiB, 0);
	b = find("read", "same-process", GiB);
	ROW("cross-process read, 1 GiB", n, b, "same-process copy",
	    n && b ? n->value / b->value : 0, ">= 0.99x", n && b ? n->value >= 0.99 * b->value : -1);
	n = best("bidir", GiB, 0);
	b = find("bidir", "same-process", GiB);
	ROW("bidirectional, 1 GiB each way (total)", n, b, "same-process both push",
	    n && b ? n->value / b->value : 0, ">= 0.99x", n && b ? n->value >= 0.99 * b->value : -1);
	snprintf(key, sizeof(key), "blocks_write_%u", opt.blk_count);
	n = find(key, "nvbridge-auto", 65536);
	b = find("write", "same-process", GiB);
	/* against the same run's link rate: the batch baseline swings 2x between runs */
	ROW("1024 x 64 KiB scattered blocks, one call", n, b, "1 GiB same-process copy",
	    n && b ? n->value / b->value : 0, ">= 0.95x", n && b ? n->value >= 0.95 * b->value : -1);
	n = best("put4k_us", 4096, 1);
	ROW("4 KiB put, pipelined", n, NULL, "-", 0, "<= 1.9 us", n ? n->value <= 1.9 : -1);
	n = best("put_signal_us", 4096, 1);
	b = find("put_signal_us", "nccl", 4096);
	ROW("4 KiB put + completion seen by peer", n, b, "NCCL send/recv",
	    n && b ? b->value / n->value : 0, "<= 6 us", n ? n->value <= 6 : -1);
	n = best("xfer", MiB, 0);
	b = find("xfer", "nccl", MiB);
	ROW("1 MiB transfer + completion", n, b, "NCCL send/recv",
	    n && b ? n->value / b->value : 0, ">= 4x NCCL", n && b ? n->value >= 4 * b->value : -1);
	n = best("xfer", 16 * MiB, 0);
	b = find("xfer", "nccl", 16 * MiB);
	ROW("16 MiB transfer + completion", n, b, "NCCL send/recv",
	    n && b ? n->value / b->value : 0, ">= 1.25x NCCL", n && b ? n->value >= 1.25 * b->value : -1);
	n = find("import_ms", "nvbridge-late", 0);
	b = find("import_ms", "legacy-ipc", 0);
	ROW("first import + map, 1 GiB (same point)", n, b, "cuIpcOpenMemHandle",
	    n && b ? b->value / n->value : 0, "<= legacy IPC", n && b ? n->value <= b->value : -1);
	n = find("import_ms", "nvbridge", 0);
	ROW("first import, first thing in the process", n, b, "cuIpcOpenMemHandle",
	    n && b ? b->value / n->value : 0, "(information)", -1);
	n = find("reimport_us", "nvbridge", 0);
	ROW("cached re-import", n, NULL, "-", 0, "<= 5 us", n ? n->value <= 5 : -1);
#undef ROW
	return k;
}

static void print_sweep(FILE *f)
{
	static const char *cols[][2] = {
		{ "write", "nvbridge-ce" }, { "write", "nvbridge-ce-4streams" }, { "write", "nvbridge-sm" },
		{ "write", "nvbridge-hybrid20" }, { "write", "same-process" }, { "read", "nvbridge-ce" },
		{ "read", "nvbridge-sm" }, { "read", "nvbridge-hybrid20" },
		{ "read", "same-process" }, { "bidir", "nvbridge-ce" }, { "bidir", "nvbridge-hybrid20" }, { "bidir", "same-process" },
		{ "xfer", "nvbridge-ce" }, { "xfer", "nvbridge-ce-pipe" }, { "xfer", "nvbridge-sm" },
		{ "xfer", "nvbridge-proxy" }, { "xfer", "nccl" },
	};
	uint64_t s;
	size_t c;
	char buf[32];

	fprintf(f, "\nGB/s by size (xfer = n one-way transfers, each with a completion flag: first issue by the\n"
		"sender to the last flag seen by the receiver, host monotonic clock)\n");
	fprintf(f, "%-9s", "size");
	for (c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
		snprintf(buf, sizeof(buf), "%s/%s", cols[c][0], cols[c][1]);
		fprintf(f, " %*s", (int)(strlen(buf) > 10 ? strlen(buf) : 10), buf);
	}
	fprintf(f, "\n");
	for (s = opt.min_size; s <= opt.max_size; s *= 4) {
		fmt_size(buf, sizeof(buf), s);
		fprintf(f, "%-9s", buf);
		for (c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
			const struct result *r = find(cols[c][0], cols[c][1], s);
			char h[48];
			int w;

			snprintf(h, sizeof(h), "%s/%s", cols[c][0], cols[c][1]);
			w = (int)(strlen(h) > 10 ? strlen(h) : 10);
			if (r)
				fprintf(f, " %*.1f", w, r->value);
			else
				fprintf(f, " %*s", w, "-");
		}
		fprintf(f, "\n");
	}
}

static void print_blocks(FILE *f)
{
	int i;

	char t[40];

	fprintf(f, "\nscattered blocks (%u per call), GB/s, median (min-max)\n", opt.blk_count);
	fprintf(f, "%-22s %-10s %-22s %10s\n", "direction", "block", "method", "GB/s");
	for (i = 0; i < nresults; i++) {
		char b[32];

		if (strncmp(results[i].key, "blocks_", 7))
			continue;
		fmt_size(b, sizeof(b), results[i].size);
		fprintf(f, "%-22s %-10s %-22s %24s\n", results[i].key + 7, b, results[i].method,
			med_spread(&results[i], t, sizeof(t)));
	}
	fprintf(f, "\nlatencies\n");
	for (i = 0; i < nresults; i++)
		if (!strcmp(results[i].unit, "us") || !strcmp(results[i].unit, "ms"))
			if (strcmp(results[i].key, "xfer_us"))
				fprintf(f, "%-22s %-24s %24s %s\n", results[i].key,
					results[i].method, med_spread(&results[i], t, sizeof(t)),
					results[i].unit);
}

/* Both sides of the co-run phase: what the transfer gets, what it costs the GEMM. */
static void print_corun(FILE *f)
{
	const struct result *solo = find("corun_gemm_tflops", "solo", 0);
	char a[40], b[56], c[56];
	int i;

	if (!solo)
		return;
	fprintf(f, "\nco-run: a bf16 GEMM (8192^3, cuBLAS) on the importer's GPU beside each method\n"
		"GEMM alone: %s TFLOP/s; median (min-max) of %u trials\n",
		med_spread(solo, a, sizeof(a)), opt.trials);
	fprintf(f, "%-34s %24s %24s %24s %s\n", "method", "GEMM vs alone", "transfer alone",
		"transfer beside GEMM", "goal GEMM >= 0.95x");
	for (i = 0; i < nresults; i++) {
		const struct result *r = &results[i], *x, *y;
		int lat;

		if (strcmp(r->key, "corun_gemm_ratio"))
			continue;
		lat = find("solo_lat_us", r->method, 0) != NULL;
		x = find(lat ? "solo_lat_us" : "solo_xfer_GBs", r->method, 0);
		y = find(lat ? "corun_lat_us" : "corun_xfer_GBs", r->method, 0);
		strcpy(b, "-");
		strcpy(c, "-");
		if (x)
			snprintf(b, sizeof(b), "%s %s", med_spread(x, a, sizeof(a)), x->unit);
		if (y)
			snprintf(c, sizeof(c), "%s %s", med_spread(y, a, sizeof(a)), y->unit);
		fprintf(f, "%-34s %24s %24s %24s %s\n", r->method, med_spread(r, a, sizeof(a)), b, c,
			r->value >= 0.95 ? "yes" : "NO");
	}
}

static void print_json(FILE *f, struct goal_row *rows, int n)
{
	char date[64];
	time_t t = time(NULL);
	int i;

	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
	fprintf(f, "{\n  \"device\": \"%s\",\n  \"driver\": %d,\n  \"date\": \"%s\",\n"
		"  \"backend\": \"%s\",\n  \"alloc\": \"%s\",\n  \"import\": \"%s\",\n"
		"  \"gpus\": [%d, %d],\n  \"sm_kernel\": %d,\n  \"nccl_note\": \"%s\",\n"
		"  \"trials\": %u,\n  \"corun_note\": \"%s\",\n"
		"  \"goals\": [\n", info.device, info.driver, date, info.backend, info.alloc,
		info.import, opt.gpu_a, opt.gpu_b, info.kernel, info.nccl_note, opt.trials,
		info.corun_note);
	for (i = 0; i < n; i++)
		fprintf(f, "    {\"metric\": \"%s\", \"method\": \"%s\", \"value\": %.6g, "
			"\"baseline\": \"%s\", \"baseline_value\": %.6g, \"ratio\": %.4g, "
			"\"goal\": \"%s\", \"met\": %s}%s\n", rows[i].metric,
			rows[i].nvb ? rows[i].nvb->method : "", rows[i].nvb ? rows[i].nvb->value : 0,
			rows[i].base_name, rows[i].base ? rows[i].base->value : 0, rows[i].ratio,
			rows[i].goal, rows[i].met < 0 ? "null" : rows[i].met ? "true" : "false",
			i + 1 < n ? "," : "");
	fprintf(f, "  ],\n  \"results\": [\n");
	for (i = 0; i < nresults; i++)
		fprintf(f, "    {\"metric\": \"%s\", \"method\": \"%s\", \"size\": %llu, "
			"\"value\": %.6g, \"min\": %.6g, \"max\": %.6g, \"n\": %d, \"unit\": \"%s\"}%s\n",
			results[i].key, results[i].method,
			(unsigned long long)results[i].size, results[i].value, results[i].min,
			results[i].max, results[i].n, results[i].unit, i + 1 < nresults ? "," : "");
	fprintf(f, "  ]\n}\n");
}

static void usage(void)
{
	printf("usage: nvbridge-bench [options]\n"
	       "  --gpus A,B          exporter and importer GPUs (default 0,1); with the\n"
	       "                      modes below, the GPUs to use (default: all)\n"
	       "  --rdv nvb|socketpair  rendezvous through libnvbridge (default) or a socketpair stand-in\n"
	       "  --socket PATH       nvbridged socket (default: library default / NVBRIDGE_SOCKET)\n"
	       "  --min-size N --max-size N   sweep bounds in bytes (default 4096 .. 1 GiB, x4 steps)\n"
	       "  --block-size N --block-count N   scattered blocks (default 65536 x 1024)\n"
	       "  --nccl PATH | --no-nccl   libnccl.so.2 to dlopen (default: libnccl.so.2, NVB_NCCL_LIB)\n"
	       "  --json              JSON on stdout instead of the table\n"
	       "  --json-out FILE     also write the JSON to FILE\n"
	       "  (plots: bench/plot FILE.json PREFIX, from --json-out)\n"
	       "  --quick             fewer iterations\n"
	       "  --proxy-ctas N      CTAs of the put proxy (default 0: the library's default)\n"
	       "  --trials N          samples of every figure: median and spread (default 5, --quick 3)\n"
	       "  --same-gpu G        both processes on GPU G (the default on a one-GPU host)\n"
	       "  --no-corun          skip the co-run phase (a bf16 GEMM beside each transfer method)\n"
	       "  --cublas PATH       libcublas to dlopen for the co-run GEMM (default: NVB_CUBLAS_LIB,\n"
	       "                      libcublas.so.13, libcublas.so.12)\n"
	       "  --timeout S         kill the run after S seconds (default 600)\n"

	       "any number of GPUs (one process per GPU; combine freely):\n"
	       "  --all-pairs         every ordered pair: write, read, bidirectional matrices\n"
	       "  --fan-out K,...|all one exporter, K importers reading it at once (all: 1,2,4,..,N-1)\n"
	       "  --many-publishers N each process publishes N buffers, all others import them all\n"
	       "  --pair-size N       bytes per copy for --all-pairs/--fan-out (default 1 GiB)\n"
	       "  --pub-size N        bytes per buffer for --many-publishers (default 16 MiB)\n");
}

/* "a,b,c" into v (at most MULTI_MAXG), each >= min, distinct if asked. */
static int parse_list(const char *s, int *v, int *n, int min, int distinct)
{
	char *e;
	int i;

	*n = 0;
	for (;;) {
		long x = strtol(s, &e, 10);

		if (e == s || x < min || x > 1023 || *n == MULTI_MAXG)
			return -1;
		for (i = 0; distinct && i < *n; i++)
			if (v[i] == x)
				return -1;
		v[(*n)++] = (int)x;
		if (!*e)
			return 0;
		if (*e != ',')
			return -1;
		s = e + 1;
	}
}

static uint64_t parse_size(const char *s)
{
	char *e;
	double v = strtod(s, &e);

	if (*e == 'K' || *e == 'k')
		v *= 1024;
	else if (*e == 'M' || *e == 'm')
		v *= MiB;
	else if (*e == 'G' || *e == 'g')
		v *= GiB;
	return (uint64_t)v;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "gpus", 1, 0, 'g' }, { "rdv", 1, 0, 'r' }, { "socket", 1, 0, 'S' },
		{ "min-size", 1, 0, 'm' }, { "max-size", 1, 0, 'M' }, { "block-size", 1, 0, 'b' },
		{ "block-count", 1, 0, 'c' }, { "nccl", 1, 0, 'n' }, { "no-nccl", 0, 0, 'N' },
		{ "json", 0, 0, 'j' }, { "png", 1, 0, 'p' }, { "quick", 0, 0, 'q' },
		{ "timeout", 1, 0, 't' }, { "json-out", 1, 0, 'J' }, { "help", 0, 0, 'h' },
		{ "proxy-ctas", 1, 0, 'P' }, { "all-pairs", 0, 0, 'A' }, { "fan-out", 1, 0, 'F' },
		{ "many-publishers", 1, 0, 'Y' }, { "pair-size", 1, 0, 'Z' }, { "pub-size", 1, 0, 'U' },
		{ "trials", 1, 0, 'T' }, { "same-gpu", 1, 0, 'G' }, { "no-corun", 0, 0, 'C' },
		{ "cublas", 1, 0, 'B' },
		{ 0, 0, 0, 0 },
	};
	int c, ctl[2], resp[2], st, failed = 0, nrows;
	pid_t pa, pb;
	char tag[32], line[512];
	struct goal_row rows[24];
	double t0 = now_s(), deadline;
	FILE *rf;
	struct multi_opts mo;
	int multi = 0;

	memset(&mo, 0, sizeof(mo));
	mo.size = GiB;
	mo.pub_size = 16 * MiB;
#ifndef NVB_BENCH_LIB
	opt.use_lib = 0;
#endif
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'g':
			if (parse_list(optarg, mo.gpus, &mo.ngpus, 0, 1)) {
				fprintf(stderr, "--gpus: a list of distinct GPU numbers, e.g. 0,1 or 0,2,3\n");
				return 2;
			}
			break;
		case 'A': mo.all_pairs = multi = 1; break;
		case 'F':
			multi = 1;
			if (!strcmp(optarg, "all")) {
				mo.nfan = 1;
				mo.fan[0] = 0;
			} else if (parse_list(optarg, mo.fan, &mo.nfan, 1, 0)) {
				fprintf(stderr, "--fan-out: 'all' or a list of importer counts >= 1, "
					"e.g. 1,2,4,7\n");
				return 2;
			}
			break;
		case 'Y':
			multi = 1;
			mo.npub = (unsigned int)atoi(optarg);
			if (mo.npub < 1 || mo.npub > MULTI_MAXPUB) {
				fprintf(stderr, "--many-publishers: 1 to %d buffers per process\n",
					MULTI_MAXPUB);
				return 2;
			}
			break;
		case 'Z': mo.size = parse_size(optarg); break;
		case 'U': mo.pub_size = parse_size(optarg); break;
		case 'r':
			opt.use_lib = !strcmp(optarg, "nvb");
#ifndef NVB_BENCH_LIB
			if (opt.use_lib) {
				fprintf(stderr, "built without libnvbridge: only --rdv socketpair\n");
				return 2;
			}
#endif
			break;
		case 'S': opt.socket = optarg; break;
		case 'm': opt.min_size = parse_size(optarg); break;
		case 'M': opt.max_size = parse_size(optarg); break;
		case 'b': opt.blk_size = parse_size(optarg); break;
		case 'c': opt.blk_count = (unsigned int)atoi(optarg); break;
		case 'n': opt.nccl = optarg; break;
		case 'N': opt.no_nccl = 1; break;
		case 'j': opt.json = 1; break;
		case 'J': opt.json_out = optarg; break;
		case 'p':
			fprintf(stderr, "--png: gone; write --json-out FILE and draw it with bench/plot "
				"(matplotlib)\n");
			return 2;
		case 'q': opt.quick = 1; break;
		case 't': opt.timeout_s = atoi(optarg); break;
		case 'P': opt.proxy_ctas = (unsigned int)atoi(optarg); break;
		case 'T':
			opt.trials = (unsigned int)atoi(optarg);
			if (opt.trials < 1 || opt.trials > MAX_SAMPLES) {
				fprintf(stderr, "--trials: 1 to %d\n", MAX_SAMPLES);
				return 2;
			}
			break;
		case 'G':
			opt.gpu_a = opt.gpu_b = atoi(optarg);
			opt.gpus_given = 1;
			break;
		case 'C': opt.no_corun = 1; break;
		case 'B': opt.cublas = optarg; break;
		default:
			usage();
			return c == 'h' ? 0 : 2;
		}
	}
	if (multi) {
		if (!opt.use_lib) {
			fprintf(stderr, "the multi-GPU modes rendezvous through libnvbridge only\n");
			return 2;
		}
		/* a GPU holds 3 x pair-size, 5 x while a same-process baseline runs */
		if (mo.size < 4096 || mo.size % 4096 || mo.size > 8 * GiB ||
		    mo.pub_size < 4096 || mo.pub_size % 4096 || mo.pub_size > GiB) {
			fprintf(stderr, "--pair-size and --pub-size: multiples of 4 KiB, "
				"at most 8 GiB and 1 GiB\n");
			return 2;
		}
		if (mo.npub && mo.npub * mo.pub_size > 16 * GiB) {
			fprintf(stderr, "--many-publishers x --pub-size: at most 16 GiB per GPU "
				"(twice that with the legacy IPC copies)\n");
			return 2;
		}
		if (mo.ngpus == 1) {
			fprintf(stderr, "--gpus: the multi-GPU modes need two GPUs or more\n");
			return 2;
		}
		mo.socket = opt.socket;
		mo.json = opt.json;
		mo.json_out = opt.json_out;
		mo.quick = opt.quick;
		mo.timeout_s = opt.timeout_s;
#ifdef NVB_BENCH_LIB
		return multi_main(&mo);
#endif
	}
	if (mo.ngpus) {
		if (mo.ngpus != 2) {
			fprintf(stderr, "--gpus A,B: two GPUs (more only with --all-pairs, "
				"--fan-out, --many-publishers)\n");
			return 2;
		}
		opt.gpu_a = mo.gpus[0];
		opt.gpu_b = mo.gpus[1];
		opt.gpus_given = 1;
	}
	if (!opt.trials)
		opt.trials = opt.quick ? 3 : 5;
	if (opt.min_size < 4 || opt.max_size < opt.min_size || opt.max_size > 4 * GiB ||
	    !opt.blk_size || !opt.blk_count) {
		fprintf(stderr, "bad sizes\n");
		return 2;
	}
	setenv("NCCL_NVLS_ENABLE", "0", 1);
	signal(SIGPIPE, SIG_IGN);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) || pipe2(resp, O_CLOEXEC)) {
		perror("socketpair");
		return 1;
	}
	snprintf(tag, sizeof(tag), "%d", (int)getpid());
	pa = fork();
	if (pa == 0) {
		close(ctl[1]);
		close(resp[0]);
		child(0, ctl[0], resp[1], tag);
	}
	pb = fork();
	if (pb == 0) {
		close(ctl[0]);
		close(resp[0]);
		child(1, ctl[1], resp[1], tag);
	}
	close(ctl[0]);
	close(ctl[1]);
	close(resp[1]);
	rf = fdopen(resp[0], "r");
	deadline = t0 + opt.timeout_s;
	alarm((unsigned int)opt.timeout_s);
	while (fgets(line, sizeof(line), rf)) {
		struct result *r = &results[nresults];
		unsigned long long sz;

		line[strcspn(line, "\n")] = 0;
		if (line[0] == 'R' && nresults < (int)(sizeof(results) / sizeof(results[0])) &&
		    sscanf(line, "R %47s %39s %llu %lf %7s", r->key, r->method, &sz, &r->value, r->unit) >= 4) {
			r->size = sz;
			add_sample(r);
		} else if (!strncmp(line, "I gpus ", 7)) {
			sscanf(line + 7, "%d %d", &opt.gpu_a, &opt.gpu_b);
		} else if (line[0] == 'P') {
			fprintf(stderr, "\r[%5.1fs] %-40s results: %d   ", now_s() - t0, line + 2, nresults);
		} else if (line[0] == 'I') {
			if (!strncmp(line, "I device ", 9))
				scopy(info.device, sizeof(info.device), line + 9);
			else if (!strncmp(line, "I driver ", 9))
				info.driver = atoi(line + 9);
			else if (!strncmp(line, "I kernel ", 9))
				info.kernel = atoi(line + 9);
			else if (!strncmp(line, "I backend ", 10))
				scopy(info.backend, sizeof(info.backend), line + 10);
			else if (!strncmp(line, "I alloc ", 8))
				scopy(info.alloc, sizeof(info.alloc), line + 8);
			else if (!strncmp(line, "I import ", 9))
				scopy(info.import, sizeof(info.import), line + 9);
		} else if (line[0] == 'N') {
			scopy(info.nccl_note, sizeof(info.nccl_note), line + 2);
		} else if (line[0] == 'C') {
			scopy(info.corun_note, sizeof(info.corun_note), line + 2);
		} else if (line[0] == 'E') {
			fprintf(stderr, "\nnvbridge-bench: %s\n", line + 2);
			failed = 1;
			kill(pa, SIGKILL);
			kill(pb, SIGKILL);
		}
		if (now_s() > deadline)
			break;
	}
	alarm(0);
	fprintf(stderr, "\r[%5.1fs] done, %d results%40s\n", now_s() - t0, nresults, "");
	kill(pa, SIGKILL);	/* no-op when they exited */
	kill(pb, SIGKILL);
	waitpid(pa, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		failed = 1;
	waitpid(pb, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		failed = 1;
	if (!info.backend[0])
		snprintf(info.backend, sizeof(info.backend), "socketpair stand-in");
	finish_samples();
	invalidate_impossible();
	nrows = build_goals(rows);
	if (opt.json) {
		print_json(stdout, rows, nrows);
	} else {
		char date[64];
		time_t t = time(NULL);

		strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&t));
		printf("nvbridge-bench: %s, GPU %d (exporter) <-> GPU %d (importer)%s, driver %d.%d, %s\n",
		       info.device, opt.gpu_a, opt.gpu_b,
		       opt.gpu_a == opt.gpu_b ? " (two processes on one GPU)" : "",
		       info.driver / 1000, (info.driver % 1000) / 10, date);
		printf("rendezvous: %s; allocation: %s; import via %s; SM kernel: %s\n",
		       info.backend, info.alloc, info.import, info.kernel ? "yes" : "no");
		if (info.nccl_note[0])
			printf("%s\n", info.nccl_note);
		if (info.corun_note[0])
			printf("%s\n", info.corun_note);
		if (invalid_note[0])
			printf("INVALID (above the link's copy rate, excluded): %s\n", invalid_note);
		printf("\n");
		print_goals(stdout, rows, nrows);
		print_sweep(stdout);
		print_blocks(stdout);
		print_corun(stdout);
	}
	if (opt.json_out) {
		FILE *jf = fopen(opt.json_out, "w");

		if (jf) {
			print_json(jf, rows, nrows);
			fclose(jf);
		} else {
			perror(opt.json_out);
		}
	}
	if (!opt.no_corun && !failed && !find("corun_gemm_tflops", "solo", 0)) {
		fprintf(stderr, "nvbridge-bench: the co-run phase did not run: %s\n",
			info.corun_note[0] ? info.corun_note : "no reason reported");
		failed = 1;
	}
	if (!nresults && !failed) {
		fprintf(stderr, "nvbridge-bench: no results\n");
		failed = 1;
	}
	return failed;
}
