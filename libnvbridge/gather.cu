// SPDX-License-Identifier: MIT
/*
 * nvbridge SM copy kernel: copies a list of (dst, src, len) blocks with
 * 16-byte loads and stores, several loads in flight per thread, one CTA per
 * block at a time.  Either pointer may be a peer mapping (NVLink); reads
 * from a peer are latency-bound, hence the unrolling.  Optionally the last
 * CTA to finish publishes a 32-bit flag with a system-scope release store,
 * so a peer waiting on the flag (cuStreamWaitValue32 or a spinning kernel)
 * sees every byte before the flag.
 *
 * Built by nvcc at build time into a fatbin (sm_90 SASS + compute_90 PTX),
 * embedded into libnvbridge and loaded with cuModuleLoadData.
 */
#include <stdint.h>

#include "gpu/proxy_layout.h"

struct nvb_blk {
	unsigned long long dst;
	unsigned long long src;
	unsigned long long len;
};

#define NVB_UNROLL 8

/*
 * Copies the bytes before d's next A-aligned address (one per thread) and
 * advances d, s and len past them.
 */
template <unsigned int A>
__device__ __forceinline__ void nvb_peel_head(char *&d, const char *&s, unsigned long long &len)
{
	unsigned long long head = (A - ((unsigned long long)d & (A - 1))) & (A - 1);

	if (head > len)
		head = len;
	for (unsigned int t = threadIdx.x; t < head; t += blockDim.x)
		d[t] = s[t];
	d += head;
	s += head;
	len -= head;
}

__device__ __forceinline__ void nvb_copy_one(const nvb_blk &b)
{
	char *d = (char *)b.dst;
	const char *s = (const char *)b.src;
	unsigned long long len = b.len;
	const unsigned int bd = blockDim.x;

	if (((b.dst ^ b.src) & 15) == 0) {
		nvb_peel_head<16>(d, s, len);

		unsigned long long nv = len / 16;
		uint4 *dv = (uint4 *)d;
		const uint4 *sv = (const uint4 *)s;
		unsigned long long v = threadIdx.x;

		for (; v + (unsigned long long)(NVB_UNROLL - 1) * bd < nv;
		     v += (unsigned long long)bd * NVB_UNROLL) {
			uint4 r[NVB_UNROLL];
#pragma unroll
			for (int k = 0; k < NVB_UNROLL; k++)
				r[k] = sv[v + (unsigned long long)k * bd];
#pragma unroll
			for (int k = 0; k < NVB_UNROLL; k++)
				dv[v + (unsigned long long)k * bd] = r[k];
		}
		for (; v < nv; v += bd)
			dv[v] = sv[v];
		for (unsigned long long t = nv * 16 + threadIdx.x; t < len; t += bd)
			d[t] = s[t];
	} else if (((b.dst ^ b.src) & 3) == 0) {
		nvb_peel_head<4>(d, s, len);

		unsigned long long nw = len / 4;
		for (unsigned long long v = threadIdx.x; v < nw; v += bd)
			((uint32_t *)d)[v] = ((const uint32_t *)s)[v];
		for (unsigned long long t = nw * 4 + threadIdx.x; t < len; t += bd)
			d[t] = s[t];
	} else {
		for (unsigned long long t = threadIdx.x; t < len; t += bd)
			d[t] = s[t];
	}
}

/*
 * blks != NULL: n blocks read from blks (host-pinned or device memory).
 * blks == NULL: one range [src, src + len) -> dst cut into chunk-sized
 * pieces, one piece per CTA iteration.
 */
extern "C" __global__ void __launch_bounds__(512)
nvb_gather(const nvb_blk *blks, unsigned int n, unsigned long long dst,
	   unsigned long long src, unsigned long long len,
	   unsigned long long chunk, unsigned int *ctr, unsigned int *flag,
	   unsigned int flag_val)
{
	__shared__ nvb_blk sb;

	if (!blks)
		n = (unsigned int)((len + chunk - 1) / chunk);
	for (unsigned int i = blockIdx.x; i < n; i += gridDim.x) {
		nvb_blk b;

		if (blks) {
			if (threadIdx.x == 0)
				sb = blks[i];
			__syncthreads();
			b = sb;
			__syncthreads();
		} else {
			unsigned long long off = (unsigned long long)i * chunk;

			b.dst = dst + off;
			b.src = src + off;
			b.len = len - off < chunk ? len - off : chunk;
		}
		nvb_copy_one(b);
	}
	if (!flag)
		return;
	__threadfence_system();
	__syncthreads();
	if (threadIdx.x == 0) {
		unsigned int prev = atomicAdd(ctr, 1u);

		if (prev == gridDim.x - 1) {
			*ctr = 0;
			__threadfence_system();
			asm volatile("st.release.sys.global.u32 [%0], %1;"
				     :: "l"(flag), "r"(flag_val) : "memory");
		}
	}
}

/*
 * Spins until *flag >= val (wrapping compare).  abort_word (host-pinned,
 * written by the CPU with a plain store, no GPU queue involved) ends the
 * wait early: the flag is then set to abort_val so the stream's later work
 * can tell.
 */
extern "C" __global__ void nvb_spin_wait(unsigned int *flag, unsigned int val,
					 const volatile unsigned int *abort_word,
					 unsigned int abort_val)
{
	unsigned int v;

	for (;;) {
		asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(flag) : "memory");
		if ((int)(v - val) >= 0)
			return;
		if (abort_word && *abort_word) {
			*flag = abort_val;
			__threadfence_system();
			return;
		}
	}
}

/* ------------------------------------------------------------------------
 * Persistent proxy: one launch serves any number of puts.  The host writes
 * descriptors into a ring in pinned host memory (a few stores per put, no
 * launch); CTA 0 (the leader) reads them in batches, performs their waits
 * (acquire polls on a flag, usually one a peer writes over NVLink), and
 * hands each op's chunks to the CTAs that copy them through per-CTA inboxes
 * (each CTA polls only its own line: no hot spot).  A small op that waited
 * is latency-bound: the leader copies it itself at once.  The CTA that
 * finishes an op's last chunk completes it in ticket order: its data is
 * fenced at system scope, then the op's flag is stored and the completion
 * count advanced.  The last CTA is the reporter: it mirrors the completion
 * count into host memory.
 *
 * Every loop checks a stop word (host-pinned, written by the library) so a
 * proxy can always be stopped, whatever it is waiting for.  The layout is
 * gpu/proxy_layout.h, shared with the library.
 * ---------------------------------------------------------------------- */

#define NVB_PSMALL	(64ull << 10)	/* up to this, one CTA does the op */
#define NVB_PMINCHUNK	(64ull << 10)	/* large ops: at least this per CTA */

__device__ __forceinline__ unsigned long long nvb_gtimer(void)
{
	unsigned long long t;

	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	return t;
}

__device__ __forceinline__ unsigned int ld_acq_sys32(const void *p)
{
	unsigned int v;

	asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
	return v;
}

__device__ __forceinline__ unsigned long long ld_acq_gpu64(const void *p)
{
	unsigned long long v;

	asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
	return v;
}

__device__ __forceinline__ void st_rel_gpu64(void *p, unsigned long long v)
{
	asm volatile("st.release.gpu.global.u64 [%0], %1;" :: "l"(p), "l"(v) : "memory");
}

__device__ __forceinline__ unsigned long long ld_vol64(const void *p)
{
	return *(volatile const unsigned long long *)p;
}

/*
 * Told to stop?  Only the leader (CTA 0) reads the host word, at most every
 * 20 us, and raises dstop for everyone else: host-memory reads from every
 * CTA swamp the PCIe path the leader needs for the descriptor ring (seen on
 * the lent H100 VM: ~2 us per CTA per op).
 */
__device__ __forceinline__ int nvb_stop_due(const struct nvb_proxy_host *ph, const struct nvb_proxy_dev *pd,
					    unsigned int epoch, unsigned long long *last)
{
	unsigned long long now;

	if (*(volatile const unsigned int *)&pd->dstop == epoch)
		return 1;
	if (blockIdx.x != 0)
		return 0;
	now = nvb_gtimer();
	if (now - *last < 20000)
		return 0;
	*last = now;
	return ld_acq_sys32(&ph->stop) != 0;
}

struct nvb_pctx {
	struct nvb_proxy_host *ph;
	struct nvb_proxy_dev *pd;
	struct nvb_proxy_op *dring;
	unsigned int *done_ctr;
	struct nvb_proxy_cta *pcta;
	unsigned long long *inbox;
	unsigned int R, G;
	unsigned int epoch;	/* this launch; pd->dstop == epoch ends it */
};

/*
 * Completes op i after this CTA copied `mine` of its nch chunks (thread 32
 * only).  Returns nonzero when told to stop while waiting for its turn.
 */
__device__ int nvb_op_done(const struct nvb_pctx &x, unsigned long long i, unsigned int mine,
			   unsigned int nch, unsigned long long flag, unsigned int flag_val,
			   int skip, unsigned long long *last)
{
	unsigned int ns = 0;

	__threadfence_system();		/* our chunks are visible everywhere */
	if (mine != nch) {
		unsigned int prev = atomicAdd(&x.done_ctr[i % x.R], mine);

		if (prev + mine != nch)
			return 0;	/* someone else completes it */
		x.done_ctr[i % x.R] = 0;
		__threadfence_system();	/* order the others' chunks before the flag */
	}
	/* complete in ticket order */
	while (ld_vol64(&x.pd->completed) != i) {
		if (nvb_stop_due(x.ph, x.pd, x.epoch, last))
			return 1;
		if (ns < 256)
			ns += 16;
		__nanosleep(ns);
	}
	(void)ld_acq_gpu64(&x.pd->completed);
	if (flag && !skip)
		*(volatile unsigned int *)flag = flag_val;
	st_rel_gpu64(&x.pd->completed, i + 1);
	return 0;
}

/*
 * Runs CTA b's inbox entries [*head, tail): copies its chunks of each op
 * and completes the ops it finishes.  All threads.  Nonzero: stop.
 */
__device__ int nvb_run_inbox(const struct nvb_pctx &x, unsigned int b, unsigned long long *head,
			     unsigned long long tail, unsigned long long *last)
{
	__shared__ struct nvb_proxy_op so;
	__shared__ unsigned long long si;
	__shared__ int s_stop;
	const unsigned int tid = threadIdx.x, G = x.G;

	while (*head < tail) {
		__syncthreads();
		if (tid == 0) {
			unsigned long long i = x.inbox[(unsigned long long)b * NVB_PROXY_INB + *head % NVB_PROXY_INB];
			const volatile struct nvb_proxy_op *e = &x.dring[i % x.R];

			si = i;
			so.dst = e->dst;
			so.src = e->src;
			so.len = e->len;
			so.flag = e->flag;
			so.chunk = e->chunk;
			so.flag_val = e->flag_val;
			so.nch = e->nch;
			so.start = e->start;
			so.skip = e->skip;
			s_stop = 0;
		}
		__syncthreads();
		{
			/* chunk c belongs to copy CTA 1 + (start + c) % Gw (CTA 0 when alone) */
			const unsigned int Gw = G > 1 ? G - 1 : 1, w = G > 1 ? b - 1 : 0;
			unsigned int c0 = (w + Gw - so.start % Gw) % Gw, mine;

			mine = c0 < so.nch ? (so.nch - 1 - c0) / Gw + 1 : 0;
			if (!so.skip) {
				for (unsigned int c = c0; c < so.nch; c += Gw) {
					unsigned long long off = (unsigned long long)c * so.chunk;
					nvb_blk bk;

					bk.dst = so.dst + off;
					bk.src = so.src + off;
					bk.len = so.len - off < so.chunk ? so.len - off : so.chunk;
					nvb_copy_one(bk);
				}
			}
			__syncthreads();
			if (tid == 32 && mine)
				s_stop = nvb_op_done(x, si, mine, so.nch, so.flag, so.flag_val,
						     so.skip, last);
		}
		__syncthreads();
		if (s_stop)
			return 1;
		*head += 1;
		if (tid == 0)
			*(volatile unsigned long long *)&x.pcta[b].head = *head;
	}
	return 0;
}

/* Drains the calling CTA's inbox as it stands now.  All threads. */
__device__ int nvb_drain_own(const struct nvb_pctx &x, unsigned int b, unsigned long long *head,
			     unsigned long long *last)
{
	__shared__ unsigned long long st;

	__syncthreads();
	if (threadIdx.x == 0)
		st = ld_acq_gpu64(&x.pcta[b].tail);
	__syncthreads();
	return nvb_run_inbox(x, b, head, st, last);
}

/*
 * The leader's wait for room: a device-ring slot for every ticket up to
 * t_last and a free inbox slot in each of the ntg copy CTAs from rotation
 * `first` on.  Runs the leader's own share of work meanwhile.  All threads;
 * nonzero when the proxy must stop.
 */
__device__ int nvb_wait_room(const struct nvb_pctx &x, const unsigned long long *s_tail,
			     unsigned long long t_last, unsigned int first, unsigned int ntg,
			     unsigned int W0, unsigned int Gw, unsigned long long *head,
			     unsigned long long *last)
{
	__shared__ int stop;

	for (;;) {
		int ok = 1;

		if (threadIdx.x == 0 && t_last - ld_vol64(&x.pd->completed) >= x.R)
			ok = 0;
		for (unsigned int c = threadIdx.x; c < ntg; c += blockDim.x) {
			unsigned int tg = W0 + (first + c) % Gw;

			if (s_tail[tg] - ld_vol64(&x.pcta[tg].head) >= NVB_PROXY_INB)
				ok = 0;
		}
		if (__syncthreads_and(ok))
			return 0;
		if (nvb_drain_own(x, 0, head, last))
			return 1;
		if (threadIdx.x == 0)
			stop = nvb_stop_due(x.ph, x.pd, x.epoch, last);
		__syncthreads();
		if (stop)
			return 1;
	}
}

extern "C" __global__ void __launch_bounds__(512, 2)
nvb_proxy(struct nvb_proxy_desc *hring, unsigned int H, struct nvb_proxy_host *ph,
	  struct nvb_proxy_dev *pd, struct nvb_proxy_op *dring, unsigned int *done_ctr,
	  unsigned int R, struct nvb_proxy_cta *pcta, unsigned long long *inbox,
	  unsigned int epoch, unsigned long long idle_ns)
{
	__shared__ struct nvb_proxy_desc sdesc[32];
	__shared__ unsigned long long s_tail[NVB_PROXY_MAXCTA];
	__shared__ unsigned long long s_seen, s_chunk;
	__shared__ unsigned int s_nch, s_start;
	__shared__ int s_k, s_stop, s_wait, s_exit;
	const unsigned int G = gridDim.x - 1, tid = threadIdx.x, b = blockIdx.x;
	/* the leader only publishes (and runs gated small ops): chunks go to 1..G-1 */
	const unsigned int Gw = G > 1 ? G - 1 : 1, W0 = G > 1 ? 1 : 0;
	/* a launch resumes where the last one ended: every count is in memory */
	unsigned long long head = b < G ? ld_vol64(&pcta[b].head) : 0, last = nvb_gtimer();
	struct nvb_pctx x;

	x.ph = ph;
	x.pd = pd;
	x.dring = dring;
	x.done_ctr = done_ctr;
	x.pcta = pcta;
	x.inbox = inbox;
	x.R = R;
	x.G = G;
	x.epoch = epoch;

	if (b == G) {	/* the reporter: completion count -> host, no fences */
		unsigned long long c = 0, a = 0, nc, na;
		unsigned int ns = 0;

		if (tid)
			return;
		for (;;) {
			int stop = *(volatile unsigned int *)&pd->dstop == epoch;

			__threadfence();	/* the leader saw its last completion before dstop */
			nc = ld_vol64(&pd->completed);
			na = ld_vol64(&pd->aborted);
			if (na != a) {
				a = na;
				*(volatile unsigned long long *)&ph->aborted = a;
			}
			if (nc != c) {
				c = nc;
				*(volatile unsigned long long *)&ph->done = c;
				ns = 0;
			}
			if (stop) {
				__threadfence_system();
				return;
			}
			/*
			 * Nothing new: back off (at most 256 ns of added
			 * completion latency) so that a busy-waiting SM does not
			 * take issue slots and power from the application's
			 * kernels.
			 */
			if (ns < 256)
				ns += 32;
			__nanosleep(ns);
		}
	}

	if (b == 0) {
		unsigned long long t = ld_vol64(&pd->completed);	/* next ticket */
		unsigned long long last_act = nvb_gtimer();
		unsigned int rot = 0, idle = 0, idle_ns_now = 0;

		for (unsigned int k = tid; k < G; k += blockDim.x)
			s_tail[k] = ld_vol64(&pcta[k].tail);
		if (tid == 0) {
			*(volatile unsigned int *)&ph->state = 1;
			*(volatile unsigned int *)&ph->launches += 1;
		}
		for (;;) {
			__syncthreads();
			if (tid < 32) {
				unsigned long long comp = ld_vol64(&pd->completed);
				unsigned long long space = R - (t - comp);
				/* idle: one host read a round, not 32 */
				unsigned int seq = idle && tid ? 0 : ld_acq_sys32(&hring[(t + tid) % H].seq);
				int ok = seq == (unsigned int)(t + tid + 1) && tid < space && tid < H;
				unsigned int mask = __ballot_sync(0xffffffffu, ok), inv = ~mask;
				unsigned int k = inv ? __ffs(inv) - 1 : 32;
				unsigned int stop = tid == 0 ? ld_acq_sys32(&ph->stop) : 0;

				if (tid < k) {
					const volatile struct nvb_proxy_desc *d = &hring[(t + tid) % H];
					struct nvb_proxy_desc v;

					v.dst = d->dst;
					v.src = d->src;
					v.len = d->len;
					v.flag = d->flag;
					v.wait_flag = d->wait_flag;
					v.abort_word = d->abort_word;
					v.flag_val = d->flag_val;
					v.wait_val = d->wait_val;
					sdesc[tid] = v;
				}
				if (tid == 0) {
					s_k = (int)k;
					s_stop = stop != 0;
					/*
					 * Nothing posted: back off, holding the other
					 * warps at the barrier instead of letting 16
					 * warps spin through it (issue slots and power
					 * taken from the application's kernels); adds
					 * at most 512 ns to a new op's start.
					 */
					idle_ns_now = k ? 0 : idle_ns_now < 512 ? idle_ns_now + 32 : idle_ns_now;
					if (idle_ns_now)
						__nanosleep(idle_ns_now);
				}
			}
			__syncthreads();
			idle = s_k == 0;
			if (s_stop)
				break;
			/*
			 * Nothing posted for idle_ns and nothing in flight: leave
			 * the GPU.  Handshake with the library's post (proxy.c):
			 * we store state = 0, fence, read the next slot; it stores
			 * the slot, fences, reads state.  One of us sees the
			 * other, so a posted op is never left without a launch.
			 */
			if (tid == 0) {
				unsigned long long now = nvb_gtimer();

				s_exit = 0;
				if (s_k) {
					last_act = now;
				} else if (idle_ns && now - last_act > idle_ns &&
					   ld_vol64(&pd->completed) == t) {
					*(volatile unsigned int *)&ph->state = 0;
					__threadfence_system();
					if (ld_acq_sys32(&hring[t % H].seq) == (unsigned int)(t + 1))
						*(volatile unsigned int *)&ph->state = 1;
					else
						s_exit = 1;
				}
			}
			__syncthreads();
			if (s_exit)
				break;
			for (int j = 0; j < s_k; j++) {
				const struct nvb_proxy_desc &d = sdesc[j];
				unsigned int ntg, m;

				if (!d.wait_flag && d.len <= NVB_PSMALL) {
					/*
					 * A run of small ungated ops: published together, one
					 * op per thread, each to its own CTA's inbox.
					 */
					for (m = 1; j + (int)m < s_k && m < Gw && !sdesc[j + m].wait_flag &&
					     sdesc[j + m].len <= NVB_PSMALL; m++)
						;
					if (nvb_wait_room(x, s_tail, t + m - 1, rot, m, W0, Gw, &head, &last))
						goto out;
					if (tid < m) {
						const struct nvb_proxy_desc &q = sdesc[j + tid];
						volatile struct nvb_proxy_op *e = &dring[(t + tid) % R];
						unsigned int tg = W0 + (rot + tid) % Gw;
						unsigned long long k = s_tail[tg];

						e->dst = q.dst;
						e->src = q.src;
						e->len = q.len;
						e->flag = q.flag;
						e->chunk = q.len ? q.len : 1;
						e->flag_val = q.flag_val;
						e->nch = 1;
						e->start = tg - W0;
						e->skip = 0;
						inbox[(unsigned long long)tg * NVB_PROXY_INB + k % NVB_PROXY_INB] = t + tid;
						st_rel_gpu64(&pcta[tg].tail, k + 1);	/* orders the entry */
						s_tail[tg] = k + 1;
					}
					rot += m;
					t += m;
					j += (int)m - 1;
					__syncthreads();
					continue;
				}
				if (tid == 0)
					s_wait = 0;
				if (d.wait_flag) {
					/* pay what we owe first: the peer may be waiting for it */
					if (nvb_drain_own(x, 0, &head, &last))
						goto out;
					if (tid == 0) {
						unsigned long long lc = nvb_gtimer(), w0 = lc;

						for (;;) {
							unsigned int v = ld_acq_sys32((const void *)d.wait_flag);

							if ((int)(v - d.wait_val) >= 0)
								break;
							if (nvb_gtimer() - lc < 5000)
								continue;
							lc = nvb_gtimer();
							if (ld_acq_sys32(&ph->stop)) {
								s_wait = 2;
								break;
							}
							if (d.abort_word &&
							    ld_acq_sys32((const void *)d.abort_word)) {
								*(volatile unsigned int *)d.wait_flag = 0x7fffffffu;
								__threadfence_system();
								s_wait = 1;
								break;
							}
							/*
							 * Waited idle_ns with nothing else in flight:
							 * park.  The op stays in the host ring
							 * (ticket t); the library relaunches when
							 * called (post, sync, kick) and we wait again.
							 */
							if (idle_ns && lc - w0 > idle_ns &&
							    ld_vol64(&pd->completed) == t) {
								*(volatile unsigned int *)&ph->state = 0;
								__threadfence_system();
								s_wait = 2;
								break;
							}
						}
					}
					__syncthreads();
					if (s_wait == 2)
						goto out;
				}
				if (tid == 0) {
					unsigned long long len = d.len, chunk;
					unsigned int nch;

					if (len <= NVB_PSMALL) {
						chunk = len ? len : 1;
						nch = 1;
					} else {
						/* at most half the CTAs per op: two ops overlap */
						unsigned int half = (Gw + 1) / 2;

						chunk = (len + half - 1) / half;
						if (chunk < NVB_PMINCHUNK)
							chunk = NVB_PMINCHUNK;
						chunk = (chunk + 4095) & ~4095ull;
						nch = (unsigned int)((len + chunk - 1) / chunk);
					}
					s_chunk = chunk;
					s_nch = nch;
					/* a small op that waited: the leader runs it right away */
					s_start = rot % Gw;	/* unused by inline ops */
					if (s_wait == 1)
						*(volatile unsigned long long *)&pd->aborted += 1;
				}
				__syncthreads();
				if (!(d.wait_flag && s_nch == 1))
					rot += s_nch;	/* every thread keeps the same rot */
				if (d.wait_flag && s_nch == 1) {
					/* inline: nothing earlier is ours (drained above) */
					if (s_wait != 1) {
						nvb_blk bk;

						bk.dst = d.dst;
						bk.src = d.src;
						bk.len = d.len;
						nvb_copy_one(bk);
					}
					__syncthreads();
					if (tid == 32)
						s_stop = nvb_op_done(x, t, 1, 1, d.flag, d.flag_val,
								     s_wait == 1, &last);
					__syncthreads();
					if (s_stop)
						goto out;
					t++;
					continue;
				}
				/* room in the device ring and in every target inbox? */
				ntg = s_nch < Gw ? s_nch : Gw;
				if (nvb_wait_room(x, s_tail, t, s_start, ntg, W0, Gw, &head, &last))
					goto out;
				if (tid == 0) {
					volatile struct nvb_proxy_op *e = &dring[t % R];

					e->dst = d.dst;
					e->src = d.src;
					e->len = d.len;
					e->flag = d.flag;
					e->chunk = s_chunk;
					e->flag_val = d.flag_val;
					e->nch = s_nch;
					e->start = s_start;
					e->skip = s_wait == 1;
					__threadfence();
				}
				__syncthreads();
				for (unsigned int c = tid; c < ntg; c += blockDim.x) {
					unsigned int tg = W0 + (s_start + c) % Gw;
					unsigned long long k = s_tail[tg];

					inbox[(unsigned long long)tg * NVB_PROXY_INB + k % NVB_PROXY_INB] = t;
					st_rel_gpu64(&pcta[tg].tail, k + 1);
					s_tail[tg] = k + 1;
				}
				t++;
				__syncthreads();
			}
			if (nvb_drain_own(x, 0, &head, &last))
				break;
		}
out:
		if (tid == 0) {
			*(volatile unsigned int *)&pd->dstop = epoch;
			__threadfence();
		}
		return;
	}

	/* copy CTAs: wait for their own inbox, run it */
	for (;;) {
		__syncthreads();
		if (tid == 0) {
			unsigned long long tl;
			unsigned int ns = 0, idle = 0;

			s_stop = 0;
			for (;;) {
				tl = ld_vol64(&pcta[b].tail);
				if (tl > head)
					break;
				if (nvb_stop_due(ph, pd, epoch, &last)) {
					s_stop = 1;
					break;
				}
				if (++idle > 64) {	/* idle for a while: back off */
					ns = ns < 512 ? ns + 32 : ns;
					__nanosleep(ns);
				}
			}
			s_seen = ld_acq_gpu64(&pcta[b].tail);
		}
		__syncthreads();
		if (s_stop)
			return;
		if (nvb_run_inbox(x, b, &head, s_seen, &last))
			return;
	}
}
