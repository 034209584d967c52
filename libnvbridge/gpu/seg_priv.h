/* SPDX-License-Identifier: MIT */
/*
 * Internal to segment.c and xfer.c: the segment engine hung off a struct
 * nvb_gpu (created by the first segment call, ended by nvb_gpu_close()).
 *
 * One library thread per struct nvb_gpu (never one per batch) waits in
 * epoll(7) (never poll(2): see seg_thread) on a wake eventfd and on the event fds of the handles that open
 * segments came through (and, parked, of those whose segments all closed,
 * while they stay open).  It applies revocations, imports ahead
 * (nvb_gpu_seg_prefetch), and completes batches: the GPU tells it that a
 * batch's copies are done through a stream callback (cuStreamAddCallback,
 * also called after a context error; cuLaunchHostFunc on a driver without
 * it; a stream being captured into a graph is refused first) queued after them, which only sets a word and writes the wake
 * eventfd (no CUDA call, no lock: it runs on the driver's thread).
 *
 * Locks, in this order: e->hlock (any use of a struct nvb *), dev.c's
 * live_lock (the process's contexts: a revocation read here is applied to
 * every one, nvb_gpu_revoked_all, which takes each engine's e->lock and
 * g->lock under it), e->lock (lists, batches, counters), g->lock (the GPU
 * layer's; taken inside nvb_gpu_revoke / nvb_gpu_unmap / import).  Nothing
 * takes e->hlock or e->lock while holding g->lock, nor live_lock while
 * holding e->lock or g->lock; no engine's hlock is taken under live_lock.
 */
#ifndef NVB_SEG_PRIV_H
#define NVB_SEG_PRIV_H

#include <pthread.h>
#include <sys/types.h>
#include <stdint.h>

#include "gpu_priv.h"

/*
 * A struct nvb that segments (or prefetches) use: its events are read here.
 * When the last goes, a handle on which this layer's watches stand is
 * parked (h NULL: the application may close it at any time) and its events
 * are still read, through its serial (nvb_event_read_live), so that a
 * revocation reaches the cached mapping of a closed segment at once.
 */
struct seg_handle {
	struct seg_handle *next;
	struct nvb *h;		/* NULL while parked */
	int refs;		/* segments + prefetches on it (0: parked) */
	int evfd;		/* nvb_event_fd(h) */
	uint64_t gen;		/* which handle: entry ids are per broker (and restart), not global */
	uint64_t reg;		/* h's registry in the import cache (nvb_gpu_registry) */
	int lost;		/* another layer read an OVERFLOW on reg: verify (e->lock) */
};

/* A name watched on a handle by this layer (one nvb_watch per name and handle). */
struct seg_watch {
	struct seg_watch *next;
	struct seg_handle *hd;	/* NULL: parked, its handle has no segment now (handle_put) */
	uint64_t reg;		/* the handle's registry (nvb_gpu_registry: unique per handle) */
	uint64_t wid;		/* its watch id (never 0: -EEXIST, a watch not ours, is not noted) */
	int busy;		/* opens and prefetches relying on it, not listed yet (e->lock) */
	char name[64];		/* "": the scope-wide watch */
};

/* nvb_gpu_seg_prefetch(): import name as soon as it is published. */
struct seg_prefetch {
	struct seg_prefetch *next;
	struct seg_handle *hd;
	uint32_t flags;		/* NVB_GPU_SEG_* */
	uint32_t owner_uid;
	int pending;		/* try a fetch at the next wake-up */
	uint64_t id;		/* entry imported into the cache (0: none yet) */
	uint32_t uid;		/* its publisher */
	char name[64];
};

struct nvb_gpu_seg {
	struct nvb_gpu_seg *next;	/* e->segs */
	struct seg_engine *e;
	struct seg_handle *hd;
	int local;		/* published here (nvb_gpu_seg_publish) */
	int refs;		/* the application's + one per request in flight (e->lock) */
	int closed;		/* the application closed it */
	int revoked;		/* a revocation of its entry was seen (e->lock) */
	uint64_t id;		/* entry id */
	uint64_t ptr;
	size_t size;
	uint32_t flags, owner_uid;	/* how it was opened (re-checked after lost events) */
	struct nvb_gpu_map *map;	/* peer segment */
	struct nvb *pub_h;		/* local: the handle it was published on */
	char name[64];
	struct nvb_gpu_seg_stats stats;
};

struct nvb_gpu_batch {
	struct nvb_gpu_batch *next;	/* e->inflight, then e->done until freed */
	struct seg_engine *e;
	size_t n;
	struct nvb_gpu_seg **segs;	/* per request, each holding a reference */
	int *status;
	int gpu_done;		/* set by the host function (atomic) */
	int done;		/* statuses final (e->lock) */
	int freed;		/* nvb_gpu_batch_free() came first: free when done */
	int err;		/* a CUDA failure after queueing began, else 0 */
	int efd;		/* our duplicate of the caller's eventfd, or -1 */
	uint32_t method;
	uint64_t user_data;
	uint64_t bytes;
	uint64_t t_submit, t_done;
};

struct seg_engine {
	struct nvb_gpu *g;
	pthread_mutex_t hlock;
	pthread_mutex_t lock;
	uint64_t closes_seen;	/* nvb_handle_closes() at the last sweep of parked watch records */
	uint64_t park_closes;	/* nvb_handle_closes() at the thread's last sweep of parked handles */
	pthread_cond_t cv;		/* a batch completed */
	pthread_t thr;
	int thr_ok;
	pid_t pid;			/* the process its thread runs in */
	int stop;
	int wake;			/* eventfd: host functions, new handles, stop */
	int done_fd;			/* eventfd for the application: +1 per batch */
	int inflight_gpu;		/* host functions not run yet (atomic) */
	struct seg_handle *handles;
	struct seg_watch *watches;
	struct seg_prefetch *prefetch;
	struct nvb_gpu_seg *segs;
	struct nvb_gpu_batch *inflight;
	struct nvb_gpu_batch *done;	/* completed, not freed by the application */
	struct {
		uint64_t gen;		/* the handle it came through (seg_handle.gen) */
		uint64_t id;
	} revoked_ids[256];		/* the latest revocations seen (see seg_open) */
	unsigned int revoked_next;
	uint64_t next_gen;		/* handle records created so far */
	CUstream st[NVB_GPU_MAX_DEV];	/* the library's own, one per device */
	struct nvb_gpu_xfer_stats xs;	/* e->lock */
};

#define seg_engine_get	nvb_gpu__seg_engine_get
#define seg_forked	nvb_gpu__seg_forked
#define seg_put		nvb_gpu__seg_put
#define seg_dead	nvb_gpu__seg_dead
#define seg_events	nvb_gpu__seg_events
#define xfer_reap	nvb_gpu__xfer_reap
#define xfer_shutdown	nvb_gpu__xfer_shutdown
#define batch_free	nvb_gpu__batch_free

/*
 * The engine of g, created (thread started) on first use; NULL and *err
 * (also seterr) on failure: -ECHILD in a child of fork() (the thread stayed
 * in the parent: nothing would ever complete here), -ENOMEM, -EAGAIN.
 */
NVB_HIDDEN struct seg_engine *seg_engine_get(struct nvb_gpu *g, int *err);
/* 1 in a child of fork() of the engine's process: its thread and locks are the parent's. */
NVB_HIDDEN int seg_forked(const struct seg_engine *e);
/* Drops a reference (e->lock held); returns s when it must be destroyed (after unlock). */
NVB_HIDDEN struct nvb_gpu_seg *seg_put(struct nvb_gpu_seg *s);
NVB_HIDDEN void nvb_gpu__seg_destroy(struct nvb_gpu_seg *s);
/* Revoked (e->lock held). */
NVB_HIDDEN int seg_dead(const struct nvb_gpu_seg *s);
/* Reads hd's pending events without blocking and applies them (e->hlock held). */
NVB_HIDDEN void seg_events(struct seg_engine *e, struct seg_handle *hd);
/* Completes every batch whose GPU work is done (thread; takes e->lock). */
NVB_HIDDEN void xfer_reap(struct seg_engine *e);
NVB_HIDDEN void batch_free(struct nvb_gpu_batch *b);
/* nvb_gpu_close(): waits (bounded) for GPU work of batches in flight; 0 or -ETIMEDOUT. */
NVB_HIDDEN int xfer_shutdown(struct seg_engine *e);

#endif
