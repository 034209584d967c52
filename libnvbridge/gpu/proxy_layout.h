/* SPDX-License-Identifier: MIT */
/*
 * The put proxy's shared memory layout: what the host library (proxy.c)
 * and the proxy kernel (gather.cu) both read and write.  The one
 * definition; included by C and by CUDA.  Fixed-width fields, explicit
 * padding, sizes asserted below: a change on one side that the other does
 * not see fails the build.
 */
#ifndef NVB_PROXY_LAYOUT_H
#define NVB_PROXY_LAYOUT_H

#ifdef __CUDACC__
typedef unsigned long long nvb_u64;
typedef unsigned int nvb_u32;
#define NVB_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#include <assert.h>
#include <stdint.h>
typedef uint64_t nvb_u64;
typedef uint32_t nvb_u32;
#define NVB_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

#define NVB_PROXY_H		4096	/* host ring slots */
#define NVB_PROXY_R		1024	/* device ring slots */
#define NVB_PROXY_INB		256	/* inbox slots per CTA (op indices) */
#define NVB_PROXY_MAXCTA	1024	/* CTAs a proxy grid may have */

/* Host ring slot (pinned host memory), written by the library. */
struct nvb_proxy_desc {
	nvb_u64 dst, src, len, flag, wait_flag, abort_word;
	nvb_u32 flag_val, wait_val, rsv;
	nvb_u32 seq;		/* ticket: written last, with release */
};

/*
 * Host-pinned control block.  stop: the library asks the kernel to end.
 * state: 1 while a launch serves the ring, 0 once it decided to exit
 * (idle); see proxy.c for the handshake.  done / aborted mirror the device
 * counters.
 */
struct nvb_proxy_host {
	nvb_u32 stop;
	nvb_u32 state;
	nvb_u32 launches;	/* launches that started (statistics) */
	nvb_u32 pad0[13];
	nvb_u64 done;		/* ops completed, in ticket order */
	nvb_u64 aborted;	/* ops whose wait was aborted */
	nvb_u64 pad1[6];
};

/* Device ring entry: one op as the leader hands it to the copy CTAs. */
struct nvb_proxy_op {
	nvb_u64 dst, src, len, flag, chunk;
	nvb_u32 flag_val, nch, start, skip;
	nvb_u64 pad;
};

/* Device control block; survives launches (the proxy resumes from it). */
struct nvb_proxy_dev {
	nvb_u64 pad0[16];
	nvb_u64 completed;	/* ops completed, in order */
	nvb_u64 aborted;	/* ops whose wait was aborted */
	nvb_u64 pad1[14];
	nvb_u32 dstop;		/* this launch is ending: every CTA leaves */
	nvb_u32 pad2[31];
};

/* One CTA's inbox counters, each on its own 128-byte line. */
struct nvb_proxy_cta {
	nvb_u64 tail;		/* written by the leader */
	nvb_u64 pad0[15];
	nvb_u64 head;		/* written by the CTA */
	nvb_u64 pad1[15];
};

NVB_STATIC_ASSERT(sizeof(struct nvb_proxy_desc) == 64, "host ring slot is 64 bytes");
NVB_STATIC_ASSERT(sizeof(struct nvb_proxy_host) == 128, "host control block is 128 bytes");
NVB_STATIC_ASSERT(sizeof(struct nvb_proxy_op) == 64, "device ring entry is 64 bytes");
NVB_STATIC_ASSERT(sizeof(struct nvb_proxy_dev) == 384, "device control block is 384 bytes");
NVB_STATIC_ASSERT(sizeof(struct nvb_proxy_cta) == 256, "inbox counters are 256 bytes");
NVB_STATIC_ASSERT((NVB_PROXY_H & (NVB_PROXY_H - 1)) == 0, "host ring is a power of two");
NVB_STATIC_ASSERT((NVB_PROXY_R & (NVB_PROXY_R - 1)) == 0, "device ring is a power of two");

/* Device memory of one proxy: control block, ring, done counters, inbox counters, inboxes. */
#define NVB_PROXY_OFF_RING	sizeof(struct nvb_proxy_dev)
#define NVB_PROXY_OFF_CTR	(NVB_PROXY_OFF_RING + NVB_PROXY_R * sizeof(struct nvb_proxy_op))
#define NVB_PROXY_OFF_CTA	(NVB_PROXY_OFF_CTR + NVB_PROXY_R * 4)
#define NVB_PROXY_OFF_INBOX(n)	(NVB_PROXY_OFF_CTA + (size_t)(n) * sizeof(struct nvb_proxy_cta))
#define NVB_PROXY_DEV_BYTES(n)	(NVB_PROXY_OFF_INBOX(n) + (size_t)(n) * NVB_PROXY_INB * 8)

#endif
