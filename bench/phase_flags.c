// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench: transfers with completion flags: ping-pong latency,
 * one-way transfers, the put proxy.
 */
#define _GNU_SOURCE
#include "bench.h"

/*
 * Ping-pong of `size` bytes with a completion flag, on-GPU only: the
 * importer puts and signals, the exporter's stream waits for the flag and
 * answers the same way.  One-way time = total / (2 * n).
 */
void pingpong(struct side *s, uint64_t size, int sm, const char *method)
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
void xfer_recv_side(struct side *s, uint32_t last_val)
{
	double t1;

	NV(s, nvb_gpu_wait(s->g, s->st[0], s->lflags + F_XFER, last_val));
	CK(s, cuEventRecord(s->e1, s->st[0]));
	barrier(s);	/* the sender starts now */
	CK(s, cuEventSynchronize(s->e1));
	t1 = now_s();
	ctl_send(s, &t1, sizeof(t1), -1);
}

void xfer_report(struct side *s, const char *method, uint64_t size, unsigned int n,
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

void xfer(struct side *s, uint64_t size, int mode, const char *method)
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

void proxy_phase(struct side *s, const uint64_t *sizes, int nsizes)
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
