/* SPDX-License-Identifier: MIT */
/*
 * Internal to the GPU layer (the files of libnvbridge/gpu/): the handle, device,
 * buffer, mapping and proxy structures and the helpers the files share.
 * Not installed.
 *
 *   dev.c    open/close, devices and their contexts, lazy per-device setup
 *   mem.c    allocation, export, import, the mapping cache, revocation
 *   vagroup.c  several imports in one reservation (nvb_gpu_seg_open_many)
 *   register.c  registering existing memory: what backs a range, its metadata
 *   range.c  importing registered ranges: the metadata parser, mapping, IPC opens
 *   exported.c  which allocated buffers were exported (nvb_gpu_buf_exported)
 *   copy.c   copies, scattered blocks, completion flags, waits
 *   proxy.c  the put proxy (ring layout: proxy_layout.h)
 *   segment.c, xfer.c  segments and transfer batches (seg_priv.h)
 */
#ifndef NVB_GPU_PRIV_H
#define NVB_GPU_PRIV_H

#include <pthread.h>
#include <stdint.h>

#include "../cuda_api.h"
#include "../gpu_internal.h"
#include "../nvbridge_gpu.h"
#include "proxy_layout.h"

#define NVB_HIDDEN __attribute__((visibility("hidden")))

#define NVB_GPU_MAX_DEV		32
#define NVB_RING_SLOTS		16
#define NVB_SLOT_BLOCKS		8192
#define NVB_COUNTERS		1024
#define NVB_SM_CHUNK		(256u << 10)
#define NVB_SPLIT_MIN		(8u << 20)
#define NVB_MAX_ABORT_FLAGS	8
#define NVB_EVPOOL		64	/* events for nvb_gpu_copy_signal */
#define NVB_SM_YIELD_MAX_GRID	(1u << 20)	/* CTAs a launch, NVB_GPU_OPEN_SM_YIELD */
#define NVB_YIELD_STREAMS	64	/* lowest-priority streams a device, at most */
#define NVB_MAX_PROXIES		4	/* per device */

/* Memory of one proxy slot: allocated once, reused, freed by nvb_gpu_close. */
struct nvb_proxy_mem {
	int in_use;
	struct nvb_proxy_desc *ring;	/* pinned host */
	struct nvb_proxy_host *ph;	/* pinned host */
	CUdeviceptr dmem;		/* control block, device ring, counters */
	CUstream st;
};

struct nvb_gpu_dev {
	CUdevice dev;
	CUcontext ctx;
	CUuuid uuid;
	int sm_count;
	int cc_major;
	int ready;		/* module/ring initialised */
	CUmodule mod;
	CUfunction fn_gather;
	CUfunction fn_spin;
	CUfunction fn_proxy;	/* NULL: not in the embedded image */
	int proxy_max_ctas;	/* co-resident proxy CTAs on this device */
	CUevent evpool[NVB_EVPOOL];
	unsigned int ev_next;
	/*
	 * NVB_GPU_OPEN_SM_YIELD: streams of the lowest priority (yield_prio),
	 * made as needed, at most NVB_YIELD_STREAMS; a launch takes one with
	 * no work left, so that unrelated caller streams are never ordered
	 * behind each other (under yield_lock)
	 */
	CUstream yield_st[NVB_YIELD_STREAMS];
	unsigned int nyield;
	int yield_prio;
	pthread_mutex_t yield_lock;
	unsigned int rot;
	struct nvb_proxy_mem pmem[NVB_MAX_PROXIES];
	struct nvb_gpu_block *ring;	/* pinned host: NVB_RING_SLOTS * NVB_SLOT_BLOCKS */
	CUevent ring_ev[NVB_RING_SLOTS];
	int ring_used[NVB_RING_SLOTS];
	unsigned int ring_next;
	CUdeviceptr counters;	/* NVB_COUNTERS words, zeroed */
	unsigned int counter_next;
	pthread_mutex_t ring_lock;	/* ring_next, ring_used, ring_ev */
};

#define NVB_GPU_REVOKED_RING	256	/* revocations remembered for imports in flight */

struct nvb_gpu {
	struct nvb_cuda cu;
	int ndev;
	struct nvb_gpu_dev d[NVB_GPU_MAX_DEV];
	unsigned char peer[NVB_GPU_MAX_DEV][NVB_GPU_MAX_DEV];	/* i can access j */
	pthread_mutex_t lock;
	struct nvb_gpu_map *maps;	/* all live mappings */
	struct nvb_gpu_name *names;	/* name cache (gpu_nvb.c) */
	struct nvb_gpu_proxy *proxies;	/* running proxies */
	int kernel_ok;
	unsigned int sm_ctas;	/* SM budget of transient kernels */
	int sm_yield;		/* NVB_GPU_OPEN_SM_YIELD */
	struct nvb_gpu_pub *pubs;	/* multi-allocation publications (gpu_nvb.c) */
	struct nvb_gpu_ipc *ipcs;	/* legacy IPC handles open here (range.c), under lock */
	struct seg_engine *seg;	/* segments and transfers (segment.c), or NULL */
	/*
	 * The last revocations of handles' entries (registry, id: through
	 * a handle, never nvb_gpu_revoke's every-registry ones; mem.c),
	 * under lock: an import still in its CUDA calls when its entry was
	 * revoked finds nothing in the cache to revoke, so map_insert looks
	 * here and hands it back revoked instead of caching it as live.
	 */
	struct { uint64_t reg, id; } revoked[NVB_GPU_REVOKED_RING];
	unsigned int revoked_next;
	uint64_t closes_seen;	/* nvb_handle_closes() at the last nvb_gpu_drop_closed */
	struct nvb_gpu *live_next;	/* the process's open contexts (dev.c, under its live_lock) */
};

/*
 * One legacy IPC handle opened in this process, in device dev's context:
 * several entries (two tensors of one cudaMalloc segment) share it, as
 * CUDA wants a handle opened once per device's context, and it is closed
 * in that context (the mapping belongs to it).  Keyed by (handle, dev): a
 * handle names one allocation, so no other memory can hide behind it; an
 * import whose metadata names another device opens it there.
 */
struct nvb_gpu_ipc {
	struct nvb_gpu_ipc *next;
	CUipcMemHandle handle;
	CUdeviceptr base;
	int dev;
	int refs;
};

struct nvb_gpu_buf {
	struct nvb_gpu *g;
	int dev;
	CUmemGenericAllocationHandle h;	/* nvb_gpu_alloc only */
	CUdeviceptr ptr;
	size_t size;
	size_t gran;
	uint32_t types;
	int fabric_err;
	int fd;
	int fabric_ok;
	CUmemFabricHandle fabric;
	struct nvb_gpu_reg *reg;	/* nvb_gpu_register (register.c); NULL: nvb_gpu_alloc */
	int exported;			/* nvb_gpu_alloc: its memory was exported (exported.c) */
	struct nvb_gpu_buf *live_next;	/* nvb_gpu_alloc: exported.c's table of live buffers */
};

/* One physical allocation behind a registered VMM range. */
struct nvb_gpu_chunk {
	CUmemGenericAllocationHandle h;	/* retained: released on unregister */
	CUdeviceptr base;		/* where it is mapped here (from its offset 0) */
	size_t size;			/* bytes of that mapping */
	uint32_t types;			/* NVB_GPU_HANDLE_* exported */
	int fd;				/* its POSIX fd, owned */
	CUmemFabricHandle fabric;	/* when types has FABRIC */
};

/* What nvb_gpu_register() found behind [ptr, ptr + len). */
struct nvb_gpu_reg {
	uint32_t kind;			/* NVB_GPU_KIND_VMM or _LEGACY_IPC */
	uint32_t n;			/* chunks (VMM) */
	uint64_t offset;		/* ptr - c[0].base, or ptr - ipc_base */
	CUdeviceptr ipc_base;		/* LEGACY_IPC: the cuMemAlloc allocation */
	size_t ipc_size;
	CUipcMemHandle ipc;
	struct nvb_gpu_chunk c[];
};

struct nvb_gpu_map {
	struct nvb_gpu *g;
	struct nvb_gpu_map *next;
	uint64_t reg;		/* the registry of id (gpu_internal.h): the cache's key is (reg, id) */
	uint64_t id;
	int refs;
	int cached;		/* findable by id */
	int revoked;
	int owner_dev;		/* -1: not visible here */
	int local_dev;		/* NVB_GPU_IMPORT_LOCAL_ONLY: the one device with access; -1: every device */
	CUmemGenericAllocationHandle h;
	CUdeviceptr ptr;
	size_t size;
	uint32_t type;
	volatile uint32_t *abort_word;	/* pinned host word, set on revoke */
	int nabort;
	struct {
		int dev;
		CUdeviceptr addr;
	} abort[NVB_MAX_ABORT_FLAGS];
	struct nvb_gpu_map_stats stats;
	/*
	 * An imported registered range (register.c): ptr/size are the range
	 * inside the reservation [rbase, rbase + rsize) holding nh chunks back
	 * to back, or inside ipc_base, the legacy IPC mapping.
	 */
	CUdeviceptr rbase;
	size_t rsize;
	uint32_t nh;		/* chunks imported */
	struct nvb_gpu_map_chunk {
		CUmemGenericAllocationHandle h;
		uint64_t off, size;
		int mapped;
	} *hs;
	CUdeviceptr ipc_base;
	/* one of several imports in one reservation (nvb_gpu_seg_open_many; vagroup.c) */
	struct nvb_gpu_vagroup *grp;
};

/*
 * A reservation holding several imports back to back (vagroup.c): freed
 * when the last of them is unmapped, each unmapping only its own range.
 */
struct nvb_gpu_vagroup {
	CUdeviceptr base;
	size_t size;
	int refs;		/* mappings in it (atomic) */
};

/* One entry of vagroup_import(). */
struct nvb_gpu_vaimp {
	uint64_t id;		/* entry id (registry: the call's) */
	int fd;			/* its file, or -1 */
	const void *blob;	/* its struct nvb_gpu_meta (not a range's) */
	size_t blob_len;
	struct nvb_gpu_map *m;	/* out: a reference */
};

struct nvb_gpu_proxy {
	struct nvb_gpu *g;
	struct nvb_gpu_proxy *next;
	int dev;
	unsigned int nctas;
	struct nvb_proxy_mem *mem;
	pthread_mutex_t lock;	/* tail, launches */
	uint64_t tail;		/* next ticket - 1 */
	uint64_t idle_ns;	/* 0: persistent */
	uint32_t epoch;		/* last launch's number */
};


/* The embedded fatbin (gpu_fatbin.S); empty when nvcc was not available. */
extern const unsigned char nvb_gpu_fatbin[];
extern const unsigned char nvb_gpu_fatbin_end[];

/* Shared helpers; the names are prefixed so a static link cannot clash. */
#define seterr		nvb_gpu__seterr
#define cuerr		nvb_gpu__cuerr
#define ns_now		nvb_gpu__ns_now
#define cur_dev		nvb_gpu__cur_dev
#define dev_ready	nvb_gpu__dev_ready
#define pool_event	nvb_gpu__pool_event
#define stream_capture	nvb_gpu__stream_capture
#define map_destroy	nvb_gpu__map_destroy
#define map_abort_word	nvb_gpu__map_abort_word
#define ctx_push	nvb_gpu__ctx_push
#define ctx_pop		nvb_gpu__ctx_pop
#define access_descs	nvb_gpu__access_descs
#define map_insert	nvb_gpu__map_insert
#define range_import	nvb_gpu__range_import
#define range_unmap	nvb_gpu__range_unmap
#define reg_free	nvb_gpu__reg_free
#define reg_export_v1	nvb_gpu__reg_export_v1
#define alloc_track	nvb_gpu__alloc_track
#define meta_read	nvb_gpu__meta_read
#define import_handle	nvb_gpu__import_handle
#define access_cur_first	nvb_gpu__access_cur_first
#define vagroup_import	nvb_gpu__vagroup_import
#define vagroup_unmap	nvb_gpu__vagroup_unmap
#define alloc_untrack	nvb_gpu__alloc_untrack
#define alloc_mark_exported	nvb_gpu__alloc_mark_exported

NVB_HIDDEN __attribute__((format(printf, 2, 3))) int seterr(int err, const char *fmt, ...);
/*
 * segment.c: a revocation of (reg, id) that another layer read (or this
 * one), applied to e's segments and prefetches; and events of reg lost
 * (OVERFLOW) elsewhere: e's thread verifies its segments on reg.  Both
 * take e->lock only (called under dev.c's live_lock).
 */
struct seg_engine;
NVB_HIDDEN void nvb_gpu__seg_revoked(struct seg_engine *e, uint64_t reg, uint64_t id);
NVB_HIDDEN void nvb_gpu__seg_lost(struct seg_engine *e, uint64_t reg);
/* Wakes e's thread (a handle closed: its sweep drops what is cached through it). */
NVB_HIDDEN void nvb_gpu__seg_wake(struct seg_engine *e);
/* A CUDA failure: -EIO (-ENOMEM for OUT_OF_MEMORY, ...) and a message. */
NVB_HIDDEN int cuerr(struct nvb_gpu *g, CUresult r, const char *what);
NVB_HIDDEN uint64_t ns_now(void);
/* Ordinal of the current context's device, or -errno. */
NVB_HIDDEN int cur_dev(struct nvb_gpu *g);
NVB_HIDDEN int dev_ready(struct nvb_gpu *g, int i);
NVB_HIDDEN CUevent pool_event(struct nvb_gpu_dev *d);
/* st's CU_STREAM_CAPTURE_STATUS_* into *cs (NONE where the driver has no graphs) */
NVB_HIDDEN CUresult stream_capture(struct nvb_gpu *g, CUstream st, int *cs);
NVB_HIDDEN void map_destroy(struct nvb_gpu_map *m);
NVB_HIDDEN volatile uint32_t *map_abort_word(struct nvb_gpu *g, struct nvb_gpu_map *m);
/* Makes dev's context current, remembering the caller's; ctx_pop gives it back. */
NVB_HIDDEN CUcontext ctx_push(struct nvb_gpu *g, int dev);
NVB_HIDDEN void ctx_pop(struct nvb_gpu *g, CUcontext old);
/* Access descriptors for every device that can reach owner (or only device only). */
NVB_HIDDEN size_t access_descs(struct nvb_gpu *g, int owner, int only, CUmemAccessDesc *desc);
/*
 * Makes a new mapping findable (cached under (m->reg, m->id) when id is not 0)
 * and returns it in *out; when another thread cached the same first, m is destroyed
 * and *out is that mapping, with a new reference.
 */
NVB_HIDDEN void map_insert(struct nvb_gpu *g, struct nvb_gpu_map *m, struct nvb_gpu_map **out);
/* mem.c: the checked metadata of an import's blob (not a range's); 0 or -errno. */
NVB_HIDDEN int meta_read(const void *blob, size_t blob_len, struct nvb_gpu_meta *meta);
/*
 * mem.c: a new mapping record (refs 1, uncached) holding the imported
 * handle of meta's allocation (fabric first unless NO_FABRIC, else fd),
 * nothing reserved or mapped yet; cur: the device a LOCAL_ONLY import is for.
 */
NVB_HIDDEN int import_handle(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id, int fd,
			     const struct nvb_gpu_meta *meta, uint32_t flags, int cur,
			     struct nvb_gpu_map **out);
/* mem.c: the current device's descriptor first (its access is timed first). */
NVB_HIDDEN void access_cur_first(struct nvb_gpu *g, int cur, CUmemAccessDesc *desc, size_t n);
/*
 * vagroup.c: imports n entries of registry reg (none of them cached: the
 * caller looked) into ONE cuMemAddressReserve, each at an offset aligned
 * to its granularity, with one cuMemSetAccess per device over each
 * contiguous run of them that device needs (all of them, usually: one
 * call per device).  All or nothing: 0 and every im[i].m set (cached as
 * map_insert caches), or -errno and none.
 */
NVB_HIDDEN int vagroup_import(struct nvb_gpu *g, uint64_t reg, struct nvb_gpu_vaimp *im, unsigned int n,
			      uint32_t flags);
/* vagroup.c: map_destroy's half for a mapping in a group. */
NVB_HIDDEN void vagroup_unmap(struct nvb_gpu_map *m);
/* register.c: import a range blob (fds[i]: chunk i's fd, -1 if none). */
NVB_HIDDEN int range_import(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id, const int *fds, unsigned int nfds,
			    const void *blob, size_t blob_len, uint32_t flags,
			    struct nvb_gpu_map **out);
/* register.c: map_destroy's half for an imported range. */
NVB_HIDDEN void range_unmap(struct nvb_gpu_map *m);
/* register.c: nvb_gpu_free's half for a registered buffer. */
NVB_HIDDEN void reg_free(struct nvb_gpu_buf *b);
/* register.c: nvb_gpu_export of a registered buffer (a whole single allocation only). */
NVB_HIDDEN int reg_export_v1(struct nvb_gpu_buf *b, int *fd, struct nvb_gpu_meta *meta);

/*
 * exported.c: the process's live nvb_gpu_alloc() buffers (added once
 * mapped, removed before release), and the mark a registration leaves on
 * the one whose mapping starts at base.
 */
NVB_HIDDEN void alloc_track(struct nvb_gpu_buf *b);
NVB_HIDDEN void alloc_untrack(struct nvb_gpu_buf *b);
NVB_HIDDEN void alloc_mark_exported(CUdeviceptr base);

/* nvb_gpu_close(): ends the segment engine first (segment.c). */
NVB_HIDDEN void nvb_gpu__seg_shutdown(struct nvb_gpu *g);

#define CU(g, call, what) do {					\
	CUresult r_ = (g)->cu.call;				\
	if (r_ != CUDA_SUCCESS)					\
		return cuerr((g), r_, (what));			\
} while (0)

#endif
