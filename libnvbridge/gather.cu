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

struct nvb_blk {
	unsigned long long dst;
	unsigned long long src;
	unsigned long long len;
};

#define NVB_UNROLL 8

__device__ __forceinline__ void nvb_copy_one(const nvb_blk &b)
{
	char *d = (char *)b.dst;
	const char *s = (const char *)b.src;
	unsigned long long len = b.len;
	const unsigned int bd = blockDim.x;

	if (((b.dst ^ b.src) & 15) == 0) {
		unsigned long long head = (16 - (b.dst & 15)) & 15;

		if (head > len)
			head = len;
		for (unsigned int t = threadIdx.x; t < head; t += bd)
			d[t] = s[t];
		d += head;
		s += head;
		len -= head;

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
		unsigned long long head = (4 - (b.dst & 3)) & 3;

		if (head > len)
			head = len;
		for (unsigned int t = threadIdx.x; t < head; t += bd)
			d[t] = s[t];
		d += head;
		s += head;
		len -= head;
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
