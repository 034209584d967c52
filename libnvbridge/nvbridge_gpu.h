/* SPDX-License-Identifier: MIT */
/*
 * libnvbridge GPU layer: CUDA VMM buffers shared between processes through
 * nvbridge, and NVLink copies between them.
 *
 * libcuda is loaded at run time; on a host without a GPU nvb_gpu_open()
 * fails with -ENODEV / -ENOENT and nothing else is touched.
 *
 * The CUDA half only ever sees an fd and a metadata blob: nvb_gpu_export()
 * produces them, nvb_gpu_import_fd() consumes them.  The rendezvous
 * (publish, fetch, revoke events) is the caller's, or nvb_gpu_publish() /
 * nvb_gpu_import() which go through a struct nvb handle.
 *
 * Threads: a struct nvb_gpu may be used from several threads.  Calls that
 * enqueue work use the calling thread's current CUDA context (the primary
 * context of the device the streams belong to); nvb_gpu_set_device() sets it.
 * Streams are CUstream / cudaStream_t values passed as void *.
 *
 * Every call returns 0 (or a documented value) or a negative errno;
 * nvb_gpu_last_error() describes the last failure of the calling thread
 * (with the CUDA error name when CUDA failed).
 */
#ifndef NVBRIDGE_GPU_H
#define NVBRIDGE_GPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct nvb;
struct nvb_gpu;
struct nvb_gpu_buf;
struct nvb_gpu_map;

/* Options structs start with size_t sz = sizeof(the struct), as nvbridge.h's. */
struct nvb_gpu_opts {
	size_t sz;		/* sizeof(struct nvb_gpu_opts) */
	uint32_t flags;		/* NVB_GPU_OPEN_* */
	/*
	 * SM budget of the library's transient kernels (SM copies, gathers,
	 * put_signal): at most this many CTAs of 512 threads per launch.
	 * 0: NVB_GPU_SM_CTAS_DEFAULT (NVB_GPU_OPEN_SM_YIELD: no cap).  The
	 * proxy has its own (nctas).
	 */
	uint32_t sm_ctas;
	const char *libcuda;	/* NULL: "libcuda.so.1" */
};

/*
 * What the library puts on the application's SMs, by default:
 *  - copies (nvb_gpu_copy AUTO/CE, nvb_gpu_copy_signal), flags and waits
 *    (nvb_gpu_signal, nvb_gpu_wait): copy engines and stream memory
 *    operations, no SM.
 *  - SM copies (NVB_GPU_COPY_SM, hybrid, nvb_gpu_put_signal, small
 *    scattered blocks): at most sm_ctas CTAs, only while the copy runs.
 *  - nvb_gpu_wait_spin / nvb_gpu_wait_abortable: one CTA of one thread on
 *    the caller's stream while it waits (a wait the caller queued: stream
 *    and device synchronization wait for it like for any queued work).
 *  - the put proxy: see below.
 * Nothing runs when nothing was asked for; nothing stays resident.
 */
#define NVB_GPU_SM_CTAS_DEFAULT	4

/*
 * NVB_GPU_OPEN_SM_YIELD (experimental, opt-in): the transient SM kernels
 * run on a stream of the lowest priority that the library makes per
 * device, ordered after the caller's stream and before its later work by
 * events, one short CTA per piece (a block, or a slice of a range) and no
 * cap unless sm_ctas sets one.  The block scheduler starts pending CTAs of
 * higher-priority streams (the application's kernels at the default
 * priority) first, so such a copy takes the SMs that the application
 * leaves idle and may wait while they are all busy.  All SM copies of the
 * handle on one device share that stream: they run one after the other.
 * On a stream being captured into a CUDA graph they stay on that stream,
 * at its priority, one CTA a piece.
 */
#define NVB_GPU_OPEN_SM_YIELD	(1U << 0)

/*
 * opts may be NULL (the defaults).  -ENOENT: no libcuda; -ENODEV: no usable
 * GPU; -ENOSYS: driver too old; -EINVAL / -E2BIG: bad options.
 * Both leave the calling thread's current CUDA context as they found it
 * (close: unless that was a primary context only this handle retained).
 */
int nvb_gpu_open(const struct nvb_gpu_opts *opts, struct nvb_gpu **out);
void nvb_gpu_close(struct nvb_gpu *g);
const char *nvb_gpu_last_error(void);

int nvb_gpu_device_count(struct nvb_gpu *g);
/* Makes dev's primary context current in the calling thread. */
int nvb_gpu_set_device(struct nvb_gpu *g, int dev);
int nvb_gpu_driver_version(struct nvb_gpu *g);
/* Name of device dev ("NVIDIA H100 80GB HBM3"). */
int nvb_gpu_device_name(struct nvb_gpu *g, int dev, char *buf, size_t len);
/* 1 when the SM copy kernel is embedded and loaded. */
int nvb_gpu_has_kernel(struct nvb_gpu *g);

/* ---- local, exportable buffers ---- */

#define NVB_GPU_ALLOC_NO_FABRIC	(1U << 0)	/* do not try FABRIC|POSIX_FD */

/* Handle types (nvb_gpu_buf_handle_types, metadata). */
#define NVB_GPU_HANDLE_POSIX_FD	(1U << 0)
#define NVB_GPU_HANDLE_FABRIC	(1U << 3)
#define NVB_GPU_HANDLE_LEGACY_IPC	(1U << 8)	/* cuIpcGetMemHandle (registered cuMemAlloc memory) */

/*
 * cuMemCreate on device dev, size rounded up to the granularity, trying
 * FABRIC|POSIX_FD first and falling back to POSIX_FD alone when the driver
 * answers NOT_PERMITTED / NOT_SUPPORTED.  Mapped in this process with
 * access for every device that can reach it.
 */
int nvb_gpu_alloc(struct nvb_gpu *g, int dev, size_t size, uint32_t flags,
		  struct nvb_gpu_buf **out);
/* GPU work that uses the buffer must be complete. */
void nvb_gpu_free(struct nvb_gpu_buf *b);
uint64_t nvb_gpu_buf_ptr(const struct nvb_gpu_buf *b);
size_t nvb_gpu_buf_size(const struct nvb_gpu_buf *b);
uint32_t nvb_gpu_buf_handle_types(const struct nvb_gpu_buf *b);
/* The CUDA result of the FABRIC trial (0 when it worked or was skipped). */
int nvb_gpu_buf_fabric_error(const struct nvb_gpu_buf *b);

/*
 * The metadata blob published with the fd.  Little-endian host layout,
 * versioned by magic + size.
 */
#define NVB_GPU_META_MAGIC	0x4e564247u	/* "NVBG" */
struct nvb_gpu_meta {
	uint32_t magic;
	uint32_t size;		/* sizeof(struct nvb_gpu_meta) */
	uint64_t alloc_size;	/* bytes of the allocation */
	uint64_t granularity;
	uint32_t handle_types;	/* NVB_GPU_HANDLE_* exported */
	uint32_t flags;		/* 0 */
	uint8_t uuid[16];	/* owning device's UUID */
	uint8_t fabric[64];	/* CUmemFabricHandle when HANDLE_FABRIC */
	uint32_t owner_pid;	/* informational */
	uint32_t __reserved;
};

/*
 * Exports the buffer: *fd gets the POSIX fd (owned by the buffer: do not
 * close it; it stays valid until nvb_gpu_free), meta is filled.  A
 * registered buffer other than a whole single VMM allocation does not fit
 * struct nvb_gpu_meta: -EOPNOTSUPP (publish it with nvb_gpu_publish).
 */
int nvb_gpu_export(struct nvb_gpu_buf *b, int *fd, struct nvb_gpu_meta *meta);

/* ---- registering memory the application already has ----
 *
 * nvb_gpu_register() makes [ptr, ptr + len) of this process's device memory
 * publishable without copying it: the returned buffer works with
 * nvb_gpu_publish(), nvb_gpu_buf_ptr() (= ptr), nvb_gpu_buf_size() (= len)
 * and everything else that takes a struct nvb_gpu_buf; nvb_gpu_free()
 * unregisters it and never frees the application's memory.  ptr may lie
 * inside an allocation (a tensor in a caching allocator's segment): the
 * importer's nvb_gpu_map_ptr() is ptr's counterpart, nvb_gpu_map_size() len.
 *
 *  - VMM memory (cuMemCreate, POSIX_FD and/or FABRIC requested), also a
 *    range over several physical allocations mapped back to back (PyTorch's
 *    expandable segments): at most NVB_GPU_REGISTER_MAX_CHUNKS of them.
 *  - cudaMalloc / cuMemAlloc memory: a legacy CUDA IPC handle, a bearer
 *    token (see nvb_gpu_register(3)); NVB_GPU_REGISTER_NO_LEGACY refuses it.
 *  - anything else: -EFAULT (not CUDA device memory, or the range runs
 *    into unmapped addresses or past its allocation) or -EOPNOTSUPP (host,
 *    managed or pool memory, an allocation without an exportable handle
 *    type, a range mixing kinds); nvb_gpu_last_error() says which.
 * Also -EINVAL (ptr 0, len 0, unknown flags), -EOVERFLOW (ptr + len wraps),
 * -E2BIG (more allocations than NVB_GPU_REGISTER_MAX_CHUNKS).
 */
#define NVB_GPU_REGISTER_NO_LEGACY	(1U << 0)	/* VMM only: no legacy IPC handle */
#define NVB_GPU_REGISTER_NO_FABRIC	(1U << 1)	/* do not export fabric handles */
#define NVB_GPU_REGISTER_MAX_CHUNKS	512

int nvb_gpu_register(struct nvb_gpu *g, uint64_t ptr, size_t len, uint32_t flags,
		     struct nvb_gpu_buf **out);

/* What backs a buffer (nvb_gpu_buf_kind). */
#define NVB_GPU_KIND_ALLOC	1	/* nvb_gpu_alloc() */
#define NVB_GPU_KIND_VMM	2	/* registered cuMemCreate memory */
#define NVB_GPU_KIND_LEGACY_IPC	3	/* registered cuMemAlloc memory */
uint32_t nvb_gpu_buf_kind(const struct nvb_gpu_buf *b);
/* Physical allocations a buffer spans (1 for ALLOC, 0 for LEGACY_IPC). */
uint32_t nvb_gpu_buf_chunks(const struct nvb_gpu_buf *b);
/*
 * 1 once b's memory has been exported in this process through this
 * library: b itself (nvb_gpu_export, nvb_gpu_publish, nvb_gpu_seg_publish),
 * or an nvb_gpu_register() of memory inside it through any struct nvb_gpu
 * (a registered buffer answers 1: registering exports).  0 otherwise; a
 * registration that failed after its export call still counts.  An
 * importer may keep what it mapped for as long as it likes: memory that
 * answers 1 must not be given to other data (an allocator releases it
 * instead of caching it).  Exports made around the library (the
 * application's own cuMemExportToShareableHandle) are not seen.
 * -EINVAL: b is NULL.
 */
int nvb_gpu_buf_exported(const struct nvb_gpu_buf *b);

/*
 * The metadata of a registered range, published instead of struct
 * nvb_gpu_meta when that cannot describe it (a sub-range, several
 * allocations, a legacy handle; a whole single VMM allocation is published
 * as struct nvb_gpu_meta, so older importers take it).  A different magic,
 * so importers that predate it refuse it (-EINVAL) instead of mapping the
 * wrong bytes.  Layout: this header (size bytes, the writer's sizeof), then
 * nchunks records of chunk_size bytes each, at offset size.  Readers use the
 * fields they know and skip the rest; a writer never gives an old field a
 * new meaning (it would change the magic).
 */
#define NVB_GPU_RANGE_MAGIC	0x4e564252u	/* "NVBR" */
struct nvb_gpu_meta_range {
	uint32_t magic;		/* NVB_GPU_RANGE_MAGIC */
	uint32_t size;		/* sizeof(struct nvb_gpu_meta_range) */
	uint32_t kind;		/* NVB_GPU_KIND_VMM or _LEGACY_IPC */
	uint32_t flags;		/* 0 */
	uint64_t offset;	/* registered range's start from the first chunk's (IPC: the allocation's) */
	uint64_t len;		/* registered bytes */
	uint64_t granularity;	/* VMM: chunk sizes are multiples; 0 for IPC */
	uint32_t nchunks;	/* VMM: 1..NVB_GPU_REGISTER_MAX_CHUNKS; IPC: 0 */
	uint32_t chunk_size;	/* sizeof(struct nvb_gpu_meta_chunk) */
	uint8_t uuid[16];	/* owning device's UUID */
	uint32_t owner_pid;	/* informational */
	uint32_t __reserved;
	uint64_t ipc_size;	/* IPC: bytes of the cuMemAlloc allocation */
	uint8_t ipc[64];	/* IPC: the CUipcMemHandle */
};

/*
 * One physical allocation of a VMM range, mapped from its offset 0 at
 * offset of the importer's reservation.  Chunks are back to back: chunk 0
 * at offset 0, each next one where the previous ends; the registered range
 * starts in the first and ends in the last.  Chunk 0's descriptor is the
 * entry's own fd; chunk i >= 1 travels as the fd of the entry
 * "<name>:c<i>" that the same user published, whose entry id is entry_id
 * (nvb_gpu_import() checks both; see nvb_gpu_register(3)).
 */
struct nvb_gpu_meta_chunk {
	uint64_t offset;
	uint64_t size;
	uint64_t entry_id;	/* chunk 0 and nvb_gpu_import_fd(): 0 */
	uint32_t handle_types;	/* NVB_GPU_HANDLE_* exported */
	uint32_t flags;		/* 0 */
	uint8_t fabric[64];	/* CUmemFabricHandle when HANDLE_FABRIC */
};

/* ---- imports ---- */

#define NVB_GPU_IMPORT_NO_FABRIC	(1U << 0)	/* use the fd even if a fabric handle is there */
#define NVB_GPU_IMPORT_LOCAL_ONLY	(1U << 1)	/* grant access to the current device only */

/*
 * Imports an allocation from its fd (not consumed: the caller closes it)
 * and metadata.  entry_id != 0 keys the mapping cache: a second import of
 * the same id returns the same mapping with its reference count raised,
 * without touching CUDA.  fd may be -1 for a cache hit.  The ids are the
 * caller's own: never matched with an entry that nvb_gpu_import(),
 * nvb_gpu_seg_open() or nvb_gpu_import_fd_on() imported through a handle
 * (entry ids are counted per registry: two registries' ids coincide),
 * though a revocation read through a handle reaches them (nvb_gpu_revoke_on).  A
 * cached mapping serves an import only if it has the access the import
 * asks for (NVB_GPU_IMPORT_LOCAL_ONLY: the current device's).  The blob is a
 * struct nvb_gpu_meta, or a struct nvb_gpu_meta_range of one allocation
 * (fd: its fd) or of a legacy IPC handle (fd: -1); a range over several
 * allocations needs nvb_gpu_import() (-EOPNOTSUPP here).
 * -EINVAL: bad blob; -EMSGSIZE: blob too short; -ENODEV: owner GPU not
 * visible; -EIO: CUDA refused (see last error).
 */
int nvb_gpu_import_fd(struct nvb_gpu *g, uint64_t entry_id, int fd,
		      const void *blob, size_t blob_len, uint32_t flags,
		      struct nvb_gpu_map **out);
/*
 * Cache lookup only (ids of nvb_gpu_import_fd, a mapping the current
 * device can use): 0 and a new reference, or -ENOENT.
 */
int nvb_gpu_import_cached(struct nvb_gpu *g, uint64_t entry_id, struct nvb_gpu_map **out);
/*
 * Drops a reference; a revoked mapping is unmapped with its last one.  GPU
 * work that uses the mapping must be complete (synchronize your streams).
 */
void nvb_gpu_unmap(struct nvb_gpu_map *m);
uint64_t nvb_gpu_map_ptr(const struct nvb_gpu_map *m);
size_t nvb_gpu_map_size(const struct nvb_gpu_map *m);
uint64_t nvb_gpu_map_id(const struct nvb_gpu_map *m);
/* Handle type the import used (NVB_GPU_HANDLE_POSIX_FD, _FABRIC or _LEGACY_IPC). */
uint32_t nvb_gpu_map_handle_type(const struct nvb_gpu_map *m);
int nvb_gpu_map_revoked(const struct nvb_gpu_map *m);
/*
 * The publisher revoked entry_id: drop it from the cache, mark its mapping
 * revoked, release flag waiters registered with nvb_gpu_wait_abortable()
 * and unmap once the application's references are gone.  1 if a mapping
 * was found, else 0.  Told no registry, it revokes entry_id of every one
 * (the caller's ids and those of every handle); a process that imports
 * from several registries applies a revocation read through h with
 * nvb_gpu_revoke_on() (nvb_gpu_poll_events does).
 */
int nvb_gpu_revoke(struct nvb_gpu *g, uint64_t entry_id);

/*
 * nvb_gpu_import_fd() and nvb_gpu_revoke() for an entry fetched through h
 * (nvb_fetch): entry_id is an id of h's registry, keyed with it in the
 * cache, which nvb_gpu_import() of the same entry through h shares; an
 * entry of another registry with the same id is another mapping.
 * nvb_gpu_revoke_on() (and nvb_gpu_poll_events) also revokes the caller's
 * own entry_id (nvb_gpu_import_fd), which a 1.0 program uses for entries
 * fetched through h: imports never cross the id spaces, a revocation may
 * (revoking too much is the safe error).  h is only read (not kept).
 * -EINVAL: g or h NULL; else as those.
 */
int nvb_gpu_import_fd_on(struct nvb_gpu *g, struct nvb *h, uint64_t entry_id, int fd,
			 const void *blob, size_t blob_len, uint32_t flags, struct nvb_gpu_map **out);
int nvb_gpu_revoke_on(struct nvb_gpu *g, struct nvb *h, uint64_t entry_id);
/* Unmaps every cached mapping nobody references.  Returns how many. */
int nvb_gpu_cache_trim(struct nvb_gpu *g);

/* ---- copies (all asynchronous, on caller-supplied streams) ---- */

#define NVB_GPU_COPY_AUTO	0
#define NVB_GPU_COPY_CE		(1U << 0)	/* copy engines only */
#define NVB_GPU_COPY_SM		(1U << 1)	/* SM kernel only */
#define NVB_GPU_COPY_BATCH	(1U << 2)	/* cuMemcpyBatchAsync (blocks) */
#define NVB_GPU_COPY_LOOP	(1U << 3)	/* one cuMemcpyDtoDAsync per block */
/*
 * CE|SM on nvb_gpu_copy with >= 2 streams: hybrid, the copy engines take
 * most of the range and an SM kernel on the last stream the rest, at the
 * same time (default 20 %; NVB_GPU_COPY_SM_PCT(p) sets p, 1..90).
 */
#define NVB_GPU_COPY_SM_PCT(p)	(((uint32_t)(p) & 0xffU) << 8)

/*
 * len bytes from src to dst (device or peer-mapped addresses).  With
 * nstreams > 1 the range is split across the streams: streams[1..] wait for
 * streams[0]'s prior work and streams[0] waits for theirs at the end, so
 * the copy is ordered on streams[0] as a whole.
 */
int nvb_gpu_copy(struct nvb_gpu *g, uint64_t dst, uint64_t src, size_t len,
		 void *const *streams, unsigned int nstreams, uint32_t flags);

struct nvb_gpu_block {
	uint64_t dst;
	uint64_t src;
	uint64_t len;
};

/*
 * Many scattered blocks in one call.  AUTO picks the SM kernel (within the
 * sm_ctas budget) when it is loaded and the blocks are small (<= 128 KiB on
 * average), else cuMemcpyBatchAsync (copy engines), else a loop.  When flag is non-zero the 32-bit word
 * at flag is set to flag_val after every byte is visible (system scope).
 */
int nvb_gpu_copy_blocks(struct nvb_gpu *g, const struct nvb_gpu_block *blocks,
			size_t n, void *stream, uint32_t flags, uint64_t flag,
			uint32_t flag_val);

/* Completion flags: a 32-bit word in (shared) device memory. */
/* After the stream's prior work: *flag = val, visible to peers. */
int nvb_gpu_signal(struct nvb_gpu *g, void *stream, uint64_t flag, uint32_t val);
/* The stream waits until (int32_t)(*flag - val) >= 0; no CPU involved. */
int nvb_gpu_wait(struct nvb_gpu *g, void *stream, uint64_t flag, uint32_t val);
/*
 * As nvb_gpu_wait but an SM kernel (one thread) spins on the flag with
 * system-scope acquire loads: lower wake-up latency, costs one SM slot
 * while waiting.  Falls back to nvb_gpu_wait without the kernel.
 */
int nvb_gpu_wait_spin(struct nvb_gpu *g, void *stream, uint64_t flag, uint32_t val);
/*
 * The wait to use for a flag that peer's process writes: a spinning kernel
 * that also watches a host-pinned word the library sets (a plain CPU store,
 * no GPU queue) when peer is revoked; the wait then ends with
 * NVB_GPU_FLAG_ABORTED written into the flag.  Never hangs on a dead peer,
 * provided revocations reach the library (nvb_gpu_poll_events()).
 */
int nvb_gpu_wait_abortable(struct nvb_gpu *g, void *stream, uint64_t flag, uint32_t val,
			   struct nvb_gpu_map *peer);
/*
 * Host-side variant of the above for nvb_gpu_wait() (stream memop) waits:
 * on revocation the library writes NVB_GPU_FLAG_ABORTED into each
 * registered local flag with a synchronous host-to-device copy.  CAUTION,
 * seen on H100 / driver 580: that copy can sit in the same hardware queue
 * as the blocked cuStreamWaitValue32 and never run, so it does not
 * reliably release the wait.  Use nvb_gpu_wait_abortable() for flags a
 * peer process writes; this is kept for waits on other devices' queues.
 */
#define NVB_GPU_FLAG_ABORTED	0x7fffffffu
int nvb_gpu_map_abort_on_revoke(struct nvb_gpu_map *m, uint64_t local_flag);
/* Writes NVB_GPU_FLAG_ABORTED into local_flag now (current context). */
int nvb_gpu_abort_flag(struct nvb_gpu *g, uint64_t local_flag);

/* Put + signal in one SM kernel launch (small, latency-critical puts). */
int nvb_gpu_put_signal(struct nvb_gpu *g, uint64_t dst, uint64_t src, size_t len,
		       void *stream, uint64_t flag, uint32_t flag_val);

/*
 * Pipelined transfers with a completion flag on the copy engines, for
 * large transfers issued back to back.  streams[0 .. n-2] carry the copies
 * in turn (consecutive calls run on different streams, so one copy's setup
 * overlaps the previous copy instead of leaving the link idle); the last
 * stream writes the flags, each after its own copy, in call order, so
 * (int32_t)(*flag - val) >= 0 still means "this and every earlier transfer
 * of this sequence is visible".  The copy starts after the prior work of
 * the stream it lands on: order producers on all copy streams (or make them
 * wait for your stream).  nstreams == 1: copy and flag on that stream.
 */
int nvb_gpu_copy_signal(struct nvb_gpu *g, uint64_t dst, uint64_t src, size_t len,
			void *const *streams, unsigned int nstreams, uint64_t flag, uint32_t val);

/* ---- the put proxy ----
 *
 * A kernel that serves puts the host posts into a ring in pinned memory:
 * while it runs, one put costs a few host stores instead of a kernel launch
 * or a copy-engine submission.  Each op may first wait for a flag
 * ((int32_t)(*wait_flag - wait_val) >= 0, acquire loads at system scope,
 * typically a flag a peer process writes over NVLink or one your stream
 * sets with nvb_gpu_signal), then copies len bytes with SM loads and
 * stores (spread over the proxy's CTAs when large), then publishes flag =
 * flag_val with a system-scope release store.  Ops complete in post order:
 * an op's flag, and the completion count, imply every earlier op's data is
 * visible.  Copies of different ops may overlap.
 *
 * A guest on the application's GPU (SM budget and residency):
 *  - the proxy is launched by the first post after it went idle and EXITS
 *    once nothing was posted for its idle time (default 100 us) and every
 *    op is complete.  An op whose wait is not satisfied within the idle time
 *    (and has nothing before it in flight) is parked: the kernel exits and
 *    the next nvb_gpu_proxy_post/_sync/_kick relaunches it.  So the
 *    application's cuCtxSynchronize / cudaDeviceSynchronize, cuMemFree /
 *    cudaFree and torch.cuda.empty_cache() wait at most for the ops posted
 *    so far plus the idle time, never for an idle or parked proxy.
 *  - it uses nctas + 1 CTAs of 512 threads (the leader and nctas - 1 copy
 *    CTAs, plus one reporter), only while running.  The default (nctas 0)
 *    is NVB_GPU_PROXY_CTAS_DEFAULT: 4 CTAs in all, about 3 % of an H100's
 *    SMs.  While ops keep coming those SMs are the proxy's, and a kernel
 *    sized to the whole GPU pays more than 3 %: a co-running bf16 GEMM
 *    ran at 0.89x on one H100 with the proxy busy, 1.0x with it idle
 *    (bench/RESULTS.md).  Beside compute, put + flag with
 *    nvb_gpu_copy_signal (copy engines, about 1.0x) instead.
 *  - NVB_GPU_PROXY_PERSISTENT keeps the kernel resident between ops (lowest
 *    latency, for a GPU dedicated to transfers).  Then cuCtxSynchronize()
 *    and the frees that synchronize BLOCK until nvb_gpu_proxy_stop().
 *
 * Do not free or unmap memory an unfinished op uses.  nvb_gpu_proxy_stop()
 * always ends the kernel: every loop in it, waits included, watches the
 * stop word.  A wait with wait_peer set also ends when that mapping is
 * revoked: NVB_GPU_FLAG_ABORTED is written into wait_flag, the op's copy
 * and flag are skipped, and nvb_gpu_proxy_aborted() counts it.
 */
struct nvb_gpu_proxy;

struct nvb_gpu_put {
	uint64_t dst;
	uint64_t src;
	uint64_t len;		/* 0: no copy (a pure wait and/or flag) */
	uint64_t flag;		/* 0: none */
	uint32_t flag_val;
	uint32_t wait_val;
	uint64_t wait_flag;	/* 0: no wait */
	struct nvb_gpu_map *wait_peer;	/* NULL, or abort the wait on its revocation */
};

#define NVB_GPU_PROXY_CTAS_DEFAULT	3	/* + the reporter: 4 CTAs */
#define NVB_GPU_PROXY_IDLE_US_DEFAULT	100
/* Flags of nvb_gpu_proxy_start(). */
#define NVB_GPU_PROXY_IDLE_US(us)	((uint32_t)(us) & 0xffffU)	/* 1..65535; 0: default */
#define NVB_GPU_PROXY_PERSISTENT	(1U << 16)	/* never exit on idle (blocks synchronize) */

/*
 * Prepares a proxy on device dev (memory only: nothing runs until the first
 * post) with nctas CTAs of 512 threads plus one that reports completions
 * (0: NVB_GPU_PROXY_CTAS_DEFAULT; -EINVAL beyond what can be resident at
 * once).  At most 4 per device.  The caller's current context is left as
 * it was.
 */
int nvb_gpu_proxy_start(struct nvb_gpu *g, int dev, unsigned int nctas, uint32_t flags,
			struct nvb_gpu_proxy **out);
/*
 * Relaunches the kernel if it exited while ops are pending (a parked wait):
 * for callers that poll nvb_gpu_proxy_done() instead of calling
 * nvb_gpu_proxy_sync().  0 or -errno.
 */
int nvb_gpu_proxy_kick(struct nvb_gpu_proxy *p);
/* Launches so far (each ends on idle): how often the proxy came and went. */
uint64_t nvb_gpu_proxy_launches(const struct nvb_gpu_proxy *p);
/*
 * Posts an op; *ticket (1, 2, ...) completes when nvb_gpu_proxy_done() >=
 * it.  Thread-safe.  -EAGAIN when the ring (4096 ops) stays full.
 */
int nvb_gpu_proxy_post(struct nvb_gpu_proxy *p, const struct nvb_gpu_put *op, uint64_t *ticket);
/* Shorthand: a put with an optional completion flag, no wait. */
int nvb_gpu_proxy_put(struct nvb_gpu_proxy *p, uint64_t dst, uint64_t src, size_t len,
		      uint64_t flag, uint32_t flag_val);
/* Ops completed so far (reads a host word: no CUDA call). */
uint64_t nvb_gpu_proxy_done(const struct nvb_gpu_proxy *p);
uint64_t nvb_gpu_proxy_aborted(const struct nvb_gpu_proxy *p);
/*
 * Spins until ticket (0: everything posted) completed, relaunching a
 * parked proxy.  -ETIMEDOUT after timeout_ns (< 0: no limit), -ECANCELED if
 * the proxy was stopped or its kernel failed.
 */
int nvb_gpu_proxy_sync(struct nvb_gpu_proxy *p, uint64_t ticket, int64_t timeout_ns);
/*
 * Stops the kernel (ops not yet complete are dropped) and frees p.
 * -ETIMEDOUT (p still valid, call again) if it did not end in timeout_ns.
 */
int nvb_gpu_proxy_stop(struct nvb_gpu_proxy *p, int64_t timeout_ns);

/* Where a first import's time went (nvb_gpu_map_stats). */
struct nvb_gpu_map_stats {
	size_t sz;		/* in: sizeof(struct nvb_gpu_map_stats); out: bytes filled */
	uint32_t naccess;	/* devices granted access */
	uint32_t __pad;
	uint64_t import_ns;	/* cuMemImportFromShareableHandle */
	uint64_t reserve_ns;	/* cuMemAddressReserve */
	uint64_t map_ns;	/* cuMemMap */
	uint64_t access_ns[4];	/* cuMemSetAccess, one device each, current device first */
	int32_t access_dev[4];
};
int nvb_gpu_map_stats(const struct nvb_gpu_map *m, struct nvb_gpu_map_stats *out);

/* Device memory free/total of the current device (leak checks). */
int nvb_gpu_mem_info(struct nvb_gpu *g, size_t *free_b, size_t *total_b);

/* ---- rendezvous through libnvbridge (struct nvb from nvbridge.h) ---- */
struct nvb;

/*
 * Exports b and publishes fd + metadata under name with an access policy.
 * A registered range over n > 1 allocations first publishes one entry per
 * extra allocation, "<name>:c1" .. "<name>:c<n-1>" (same policy, each
 * holding that allocation's fd; -ENAMETOOLONG when name leaves no room),
 * then name itself, whose metadata lists their entry ids.  A registered
 * cuMemAlloc range publishes no fd, only the metadata with its handle.
 */
int nvb_gpu_publish(struct nvb_gpu *g, struct nvb *h, const char *name,
		    struct nvb_gpu_buf *b, uint32_t access, uint64_t *id);
/*
 * Withdraws entry id that nvb_gpu_publish() published through h, and the
 * extra entries published with it (nvb_unpublish() would leave those).
 */
int nvb_gpu_unpublish(struct nvb_gpu *g, struct nvb *h, uint64_t id);
/*
 * Fetches name (waiting up to timeout_ns, < 0 forever), imports it (cache
 * keyed by h's registry and the entry id; by name in h's registry while
 * no revoke event for it was seen), and watches the name so a revocation
 * read through h reaches the mapping (nvb_gpu_poll_events).  It takes the
 * entry of whoever published name and the policy lets in: another user
 * who published the name first is imported.  nvb_gpu_import_with() names
 * the publisher it expects.
 */
int nvb_gpu_import(struct nvb_gpu *g, struct nvb *h, const char *name,
		   int64_t timeout_ns, uint32_t flags, struct nvb_gpu_map **out);

/* Flags of nvb_gpu_import_opts besides NVB_GPU_IMPORT_NO_FABRIC / _LOCAL_ONLY. */
#define NVB_GPU_IMPORT_OWNER_UID	(1U << 2)	/* the publisher must be .owner_uid */
#define NVB_GPU_IMPORT_ANY_OWNER	(1U << 3)	/* any publisher (nvb_gpu_import's rule) */

struct nvb_gpu_import_opts {
	size_t sz;		/* sizeof(struct nvb_gpu_import_opts) */
	uint32_t flags;		/* NVB_GPU_IMPORT_* */
	uint32_t owner_uid;	/* with NVB_GPU_IMPORT_OWNER_UID, else 0 */
	int64_t timeout_ns;	/* wait for the name: 0 no, < 0 forever */
};

/*
 * nvb_gpu_import() that says whose entry it wants.  By default (opts NULL,
 * or neither owner flag) the publisher must be the caller's euid; with
 * NVB_GPU_IMPORT_OWNER_UID, owner_uid (as the caller's user namespace sees
 * it).  The backend applies it before any file is handed over: entries of
 * anybody else under the name are invisible to the call (-ENOENT, or with
 * a timeout it waits for the expected publisher's), so a squatter can
 * neither hand over its memory nor make the import fail; a mapping the
 * cache holds for the name is used only when its publisher is the one
 * expected.  -EINVAL: owner_uid without NVB_GPU_IMPORT_OWNER_UID, both
 * owner flags, an owner_uid the caller's user namespace does not map.
 */
int nvb_gpu_import_with(struct nvb_gpu *g, struct nvb *h, const char *name,
			const struct nvb_gpu_import_opts *opts, struct nvb_gpu_map **out);
/* Reads pending nvbridge events without blocking and applies revocations. */
int nvb_gpu_poll_events(struct nvb_gpu *g, struct nvb *h);

/* ---- segments and transfers (a transfer engine: Mooncake's shape) ----
 *
 * A segment is a region published once under a name (nvb_gpu_seg_publish:
 * any struct nvb_gpu_buf, allocated or registered) or a peer's region opened
 * by name and expected owner (nvb_gpu_seg_open).  Transfers are batches of
 * requests {READ or WRITE, local address, segment, offset, length}; the
 * segment owns bounds, lifetime and revocation:
 *
 *   -ERANGE   a request reaches outside its segment (offset + len beyond
 *             the segment's size, or the sum wraps);
 *   -ENOLINK  the segment's entry was revoked (unpublished, its publisher's
 *             handle closed or its process died);
 *   -EINVAL   zero length, unknown opcode, NULL segment or local address,
 *             a segment of another struct nvb_gpu.
 *
 * Every request of a batch is checked before anything is queued: a batch
 * with one bad request is refused whole (nvb_gpu_last_error() names the
 * request) and no GPU work is queued for it.
 *
 * Completion without a thread per batch: the copies are followed on the
 * stream by a callback (cuStreamAddCallback: it also runs after a CUDA
 * context error, the batch then completes with -EIO; a stream being
 * captured into a CUDA graph is refused with -EBUSY before anything is
 * queued, the capture left intact) that wakes ONE library
 * thread per struct nvb_gpu; that thread also reads the revocation events
 * of the handles segments were opened through, so a peer that dies while a
 * batch is in flight makes that batch complete with -ENOLINK for its
 * requests on the dead peer's segment.  The batch's own completion is then
 * observable in three ways, none of which needs the caller to poll CUDA:
 *   - nvb_gpu_xfer_fd(g): an eventfd the thread adds 1 to per completed
 *     batch (poll it, or read it on your own io_uring:
 *     nvb_gpu_prep_xfer_read() in <nvbridge_uring.h>);
 *   - .efd of the submit options: your own eventfd, +1 for this batch;
 *   - .flag: a 32-bit word in device memory (e.g. in a peer's segment) set
 *     to .flag_val on the stream after the batch's copies (the
 *     nvb_gpu_signal machinery), for a peer or a kernel waiting on it.
 * The thread is started by the first segment call and stopped by
 * nvb_gpu_close().  In a child of fork() the inherited g has no thread:
 * its segment and transfer calls fail with -ECHILD.
 *
 * The library reads the events of a handle from the first segment opened
 * (or prefetch registered) through it until nvb_close() of the handle
 * (after its segments closed, through its serial, never its pointer: a
 * revocation then releases the cached mapping of a closed segment at
 * once): keep another handle for events of your own.  Close those
 * segments before nvb_close() of the handle.
 */
struct nvb_gpu_seg;
struct nvb_gpu_batch;

struct nvb_gpu_seg_publish_opts {
	size_t sz;		/* sizeof(struct nvb_gpu_seg_publish_opts) */
	uint32_t access;	/* enum nvb_access (default NVB_ACCESS_OWNER) */
	uint32_t uid;		/* with NVB_ACCESS_UID */
	uint32_t gid;		/* with NVB_ACCESS_GID */
	uint32_t flags;		/* none yet: 0 */
};

/*
 * Exports b (once: the fd is kept with the buffer) and publishes it under
 * name on h.  b must outlive the segment.  opts may be NULL.
 * nvb_gpu_seg_close() unpublishes it (the peers' segments are revoked).
 */
int nvb_gpu_seg_publish(struct nvb_gpu *g, struct nvb *h, const char *name,
			struct nvb_gpu_buf *b, const struct nvb_gpu_seg_publish_opts *opts,
			struct nvb_gpu_seg **out);

/* Flags of nvb_gpu_seg_open_opts / nvb_gpu_seg_prefetch. */
#define NVB_GPU_SEG_OWNER_UID	(1U << 0)	/* the publisher must be .owner_uid */
#define NVB_GPU_SEG_ANY_OWNER	(1U << 1)	/* any publisher the policy lets in */
#define NVB_GPU_SEG_LOCAL_ONLY	(1U << 2)	/* NVB_GPU_IMPORT_LOCAL_ONLY */

/*
 * Without NVB_GPU_SEG_OWNER_UID or _ANY_OWNER the publisher must be the
 * caller's own euid (at the call: a prefetch keeps the one it was made
 * with): nobody else can hand a segment of that name to the caller.
 */
struct nvb_gpu_seg_open_opts {
	size_t sz;		/* sizeof(struct nvb_gpu_seg_open_opts) */
	uint32_t flags;		/* NVB_GPU_SEG_* */
	uint32_t owner_uid;	/* with NVB_GPU_SEG_OWNER_UID */
	int64_t timeout_ns;	/* 0: fail at once if unpublished; < 0: wait forever */
};

/*
 * Opens a peer's segment: watches name on h (once per handle and name),
 * fetches it (one broker round trip), imports it unless the mapping cache
 * has it (an earlier open).  After nvb_gpu_seg_prefetch() of the name with
 * the same opts flags and owner, once its import is done: no request and
 * no CUDA call at all (the prefetch's watch carries the revocation).
 * opts may be NULL.
 * -ENOENT / -ETIMEDOUT (not published by that owner), -EINVAL, and the
 * errors of nvb_fetch() and nvb_gpu_import_fd().
 */
int nvb_gpu_seg_open(struct nvb_gpu *g, struct nvb *h, const char *name,
		     const struct nvb_gpu_seg_open_opts *opts, struct nvb_gpu_seg **out);

/*
 * Import ahead: watches name on h now and, whenever the library thread
 * sees it published (already, or a PUBLISHED event later), imports it into
 * the mapping cache in the background, so that nvb_gpu_seg_open() of that
 * name with the same expectations costs no request and no CUDA call
 * (round_trips 0 in its stats).  The registration
 * ends when nvb_gpu_seg_open() opens the name (or at nvb_gpu_close()); h
 * must stay open until then.  opts->timeout_ns is ignored.
 */
int nvb_gpu_seg_prefetch(struct nvb_gpu *g, struct nvb *h, const char *name,
			 const struct nvb_gpu_seg_open_opts *opts);

/*
 * Closes a segment: a published one is unpublished at once; the mapping of
 * an opened one is released once no batch in flight uses it.
 */
void nvb_gpu_seg_close(struct nvb_gpu_seg *s);
/* Address in this process (the buffer, or the peer mapping) and size. */
uint64_t nvb_gpu_seg_ptr(const struct nvb_gpu_seg *s);
size_t nvb_gpu_seg_size(const struct nvb_gpu_seg *s);
/* Entry id of the published segment. */
uint64_t nvb_gpu_seg_id(const struct nvb_gpu_seg *s);
/* 1 once a revocation of the segment has been seen (transfers: -ENOLINK). */
int nvb_gpu_seg_revoked(struct nvb_gpu_seg *s);

/* Where the setup of one segment went (nvb_gpu_seg_stats). */
struct nvb_gpu_seg_stats {
	size_t sz;		/* in: sizeof(struct nvb_gpu_seg_stats); out: bytes filled */
	uint32_t local;		/* 1: published here, 0: opened */
	uint32_t cached;	/* opened: the mapping came from the cache (no CUDA call) */
	/*
	 * Answers from the broker / device this setup waited for: a first
	 * open's watch and fetch go together on the broker (1), one after the
	 * other on the kernel module (2).
	 */
	uint32_t round_trips;
	uint32_t owner_uid;	/* publisher's euid (opened) */
	uint64_t export_ns;	/* published: cuMemExportToShareableHandle (0 when done before) */
	uint64_t publish_ns;	/* published: nvb_publish */
	/* opened: a watch on its own (0: watched already, or sent with the fetch) */
	uint64_t watch_ns;
	uint64_t fetch_ns;	/* opened: nvb_fetch, with the watch sent along */
	uint64_t import_ns;	/* opened: cuMemImportFromShareableHandle (0 when cached) */
	uint64_t reserve_ns;	/* cuMemAddressReserve */
	uint64_t map_ns;	/* cuMemMap */
	uint64_t access_ns;	/* cuMemSetAccess, every device together */
	uint64_t total_ns;	/* the whole call */
};
int nvb_gpu_seg_stats(const struct nvb_gpu_seg *s, struct nvb_gpu_seg_stats *out);

#define NVB_GPU_XFER_READ	0	/* segment -> local */
#define NVB_GPU_XFER_WRITE	1	/* local -> segment */

/* One request of a batch (an array element, not an options struct). */
struct nvb_gpu_xfer_req {
	uint32_t opcode;	/* NVB_GPU_XFER_READ / _WRITE */
	uint32_t __pad;		/* 0 */
	uint64_t local;		/* device address in this process (not checked) */
	struct nvb_gpu_seg *seg;
	uint64_t offset;	/* into seg */
	uint64_t len;
};

/* Flags of nvb_gpu_xfer_opts. */
#define NVB_GPU_XFER_EVENTFD	(1U << 0)	/* add 1 to .efd when the batch completes */

struct nvb_gpu_xfer_opts {
	size_t sz;		/* sizeof(struct nvb_gpu_xfer_opts) */
	uint32_t flags;		/* NVB_GPU_XFER_* */
	/*
	 * 0: the library picks per batch (the SM gather kernel within the
	 * sm_ctas budget for many blocks of <= 128 KiB on average,
	 * cuMemcpyBatchAsync for other multi-block batches below 1 MiB a
	 * block, one copy-engine copy per request otherwise); or force one of
	 * NVB_GPU_COPY_SM / _BATCH / _LOOP.
	 */
	uint32_t method;
	/*
	 * NULL: the library's own stream on the device (one per device, waits
	 * for nothing of yours).  Else your stream: the batch starts after its
	 * prior work (which then must not wait forever on a peer).
	 */
	void *stream;
	uint64_t flag;		/* 0, or a 4-byte aligned device word set to flag_val */
	uint32_t flag_val;
	int32_t efd;		/* with NVB_GPU_XFER_EVENTFD (the library writes to its own dup) */
	uint64_t user_data;	/* nvb_gpu_batch_user_data() gives it back */
};

/*
 * Checks every request, then queues the batch on the current context's
 * device (device 0 when the calling thread has none; the caller's context
 * is left as found) and returns its handle in *out.  Thread-safe.
 * Errors: -ERANGE, -ENOLINK, -EINVAL (see above), -EOPNOTSUPP (a forced
 * method this driver / build lacks), -EBUSY (.stream is being captured into
 * a CUDA graph, or its capture was invalidated: nothing queued), -ENOMEM,
 * -EIO (CUDA refused; nothing the batch queued is left running when submit
 * returns).
 */
int nvb_gpu_xfer_submit(struct nvb_gpu *g, const struct nvb_gpu_xfer_req *reqs, size_t n,
			const struct nvb_gpu_xfer_opts *opts, struct nvb_gpu_batch **out);
/*
 * Per-request status into status[0 .. min(n, batch size)) (status may be
 * NULL): 0 done, -EINPROGRESS, -ENOLINK (its segment was revoked before
 * the batch completed: the data is not to be trusted), -EIO (a CUDA
 * failure).  Returns -EINPROGRESS while the batch runs, then 0 or the
 * first request's error.  Reads memory only: no CUDA call.
 */
int nvb_gpu_batch_status(const struct nvb_gpu_batch *b, int *status, size_t n);
/* Waits up to timeout_ns (< 0: forever); the batch's result, or -ETIMEDOUT. */
int nvb_gpu_batch_wait(struct nvb_gpu_batch *b, int64_t timeout_ns);
/* NVB_GPU_COPY_SM / _BATCH / _LOOP: what the batch ran on. */
uint32_t nvb_gpu_batch_method(const struct nvb_gpu_batch *b);
uint64_t nvb_gpu_batch_user_data(const struct nvb_gpu_batch *b);
/* Frees the handle; a batch still running is freed when it completes. */
void nvb_gpu_batch_free(struct nvb_gpu_batch *b);

/* The eventfd counting completed batches (non-blocking, owned by g), or -errno. */
int nvb_gpu_xfer_fd(struct nvb_gpu *g);

/* Counters of the transfer engine since nvb_gpu_open (nvb_gpu_xfer_stats). */
struct nvb_gpu_xfer_stats {
	size_t sz;		/* in: sizeof(struct nvb_gpu_xfer_stats); out: bytes filled */
	uint64_t batches;	/* submitted */
	uint64_t requests;
	uint64_t bytes;
	uint64_t rejected;	/* batches refused before queueing */
	uint64_t completed;	/* batches completed */
	uint64_t failed;	/* of which with an error status */
	uint64_t sm_batches;	/* per method */
	uint64_t batch_batches;
	uint64_t loop_batches;
	uint32_t last_method;	/* NVB_GPU_COPY_* of the latest batch */
	uint32_t inflight;	/* batches not completed */
	uint64_t busy_ns;	/* sum over batches of submit -> completion seen */
};
int nvb_gpu_xfer_stats(struct nvb_gpu *g, struct nvb_gpu_xfer_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* NVBRIDGE_GPU_H */
