/* SPDX-License-Identifier: MIT */
/* Internal glue between the gpu/ files and gpu_nvb.c.  Not installed. */
#ifndef NVB_GPU_INTERNAL_H
#define NVB_GPU_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nvb_gpu;
struct nvb_gpu_map;

/*
 * The import cache is keyed by (registry, entry id): entry ids are counted
 * per registry (a broker, the kernel module's scope), so one struct
 * nvb_gpu used through handles on two registries sees the same ids, and
 * the same names, for different memory.  A registry is named by the
 * serial of the struct nvb the entry came through (unique in the process,
 * never reused); 0 is the caller's own id space (nvb_gpu_import_fd).
 * NVB_GPU_REG_ANY matches every registry (nvb_gpu_revoke, which is not
 * told one).
 */
#define NVB_GPU_REG_ANY	UINT64_MAX
struct nvb;
uint64_t nvb_gpu_registry(const struct nvb *h);

/*
 * nvb_watch(h, wname, wflags) and nvb_fetch(h, name, opts, ...) in one
 * round trip on the broker backend: the fetch is sent right behind the
 * watch, before its answer; the broker answers a connection's requests in
 * order, so the watch is in force before the fetch looks the name up, as
 * when the two wait for each other (no revocation falls between them).
 * The kernel backend makes the two ioctls one after the other.
 * *wret: the watch's result (0, or -errno: any but -EEXIST fails the call
 * with it, the fetch's result dropped, its fd closed, the watch's error as
 * the handle's last); otherwise returns nvb_fetch()'s result.
 * *wid (may be NULL): the new watch's id, 0 unless *wret is 0.
 * *round_trips: the answers waited for (1 broker; 2 kernel, 1 when its
 * watch failed and no fetch followed; 0 when nothing was sent).  fdp is
 * required.
 */
struct nvb_fetch_opts;
struct nvb_entry;
int nvb_watch_fetch(struct nvb *h, const char *wname, uint32_t wflags, int *wret,
		    uint64_t *wid, const char *name, const struct nvb_fetch_opts *opts, void *blob,
		    size_t blob_cap, struct nvb_entry *entry, int *fdp, unsigned int *round_trips);
/*
 * A cached mapping of (reg, entry_id) that the import would have made:
 * with NVB_GPU_IMPORT_LOCAL_ONLY in flags, one the current device can use
 * (its own local mapping or an every-device one); without, an every-device
 * one only (a LOCAL_ONLY mapping of another import lacks the access).
 */
int nvb_gpu_import_cached_in(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id, uint32_t flags,
			     struct nvb_gpu_map **out);
int nvb_gpu_import_fd_in(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id, int fd,
			 const void *blob, size_t blob_len, uint32_t flags, struct nvb_gpu_map **out);
/*
 * Revokes entry_id of registry reg (NVB_GPU_REG_ANY: of every one) and,
 * for a handle's registry, the caller's id of that number (registry 0:
 * 1.0 programs import fetched entries with nvb_gpu_import_fd); mappings found.
 */
int nvb_gpu_revoke_in(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id);
/*
 * A revocation of entry id of registry reg read through a handle (by any
 * layer: the engine's thread, nvb_gpu_poll_events, an import): applied to
 * EVERY open struct nvb_gpu of the process (nvb_gpu_revoke_in, and the
 * segments of its engine), since a handle's event is read once, by
 * whichever reader comes first, and two layers (a library and a plugin)
 * may import through one handle.  nvb_gpu_lost_all: the same for lost
 * events (OVERFLOW): every layer forgets reg's names, and every engine but
 * self's (self does it itself) verifies its segments on reg.
 * Lock order: an engine's hlock, then dev.c's live_lock, then an engine's
 * lock, then g->lock; nothing takes live_lock holding any of the latter.
 */
void nvb_gpu_revoked_all(uint64_t reg, uint64_t entry_id);
void nvb_gpu_lost_all(struct nvb_gpu *self, uint64_t reg);
/*
 * Forgets the registries of handles closed since the last call (closes:
 * nvb_handle_closes(); live: nvb_serial_live): their cached mappings are
 * unmapped (or, still referenced, no longer cached) and their names
 * dropped, since no import can name those registries again.
 */
void nvb_gpu_drop_closed(struct nvb_gpu *g, uint64_t closes, bool (*live)(uint64_t serial));
/* core.c (as in nvb_internal.h): nvb_close() calls so far; whether the handle of serial is open. */
uint64_t nvb_handle_closes(void);
bool nvb_serial_live(uint64_t serial);
/* core.c: fn is called by every nvb_close(), after the handle left the list (no lock held). */
void nvb_set_close_hook(void (*fn)(void));
/* core.c: nvb_event_read(h, ev, max, 0) on the handle of serial while it is open; -ESRCH: closed. */
struct nvb_event;
int nvb_event_read_live(uint64_t serial, struct nvb_event *ev, unsigned int max);
/* dev.c: nvb_gpu_drop_closed's half for the name cache. */
void nvb_gpu_names_drop(struct nvb_gpu *g, bool (*live)(uint64_t serial));

/* Name cache entry: a name imported through nvb_gpu_import(). */
struct nvb_gpu_name {
	struct nvb_gpu_name *next;
	uint64_t reg;		/* the registry the name was looked up in (handle serial) */
	uint64_t id;
	uint64_t wserial;	/* serial of the handle holding a watch on it */
	uint64_t wid;		/* its watch id (0: none) */
	uint32_t uid;		/* the publisher of id, as the fetch reported it */
	char name[64];
};

struct nvb_gpu_name **nvb_gpu_names_head(struct nvb_gpu *g);
pthread_mutex_t *nvb_gpu_lock(struct nvb_gpu *g);
int nvb_gpu_seterr(int err, const char *msg);
/*
 * nvb_opts_in for the GPU layer's public calls: copies opts (non-NULL,
 * `size_t sz` first) over dst and, on -EINVAL/-E2BIG, sets the per-thread
 * error "fn: opts->sz N ..." so each call states its rule once.
 */
int nvb_gpu_opts_in(const char *fn, void *dst, size_t dst_sz, const void *opts, size_t min_sz);
void nvb_gpu_names_free(struct nvb_gpu *g);
/* Forgets the name(s) of entry id of registry reg (id 0: every name of reg). */
void nvb_gpu_names_forget(struct nvb_gpu *g, uint64_t reg, uint64_t id);

/*
 * Registered ranges (gpu/register.c, gpu/range.c) as nvb_gpu_publish() and
 * nvb_gpu_import() move them: one entry per extra allocation.
 */
struct nvb_gpu_buf;
/* The chunks' fds (up to max) and their number (0: a legacy handle, no fd); -1: publish struct nvb_gpu_meta. */
int nvb_gpu_range_fds(struct nvb_gpu_buf *b, int *fds, unsigned int max);
/* The range metadata naming ids[i] as chunk i's entry (i >= 1); *blob is malloc'd. */
int nvb_gpu_range_blob(struct nvb_gpu_buf *b, const uint64_t *ids, void **blob, size_t *len);
/* A checked range blob's chunk count (0 for a legacy handle or another blob) and entry ids; or -errno. */
int nvb_gpu_range_ids(const void *blob, size_t len, uint64_t *ids, unsigned int max);
/* nvb_gpu_import_fd_in() with fds[i] for chunk i. */
int nvb_gpu_import_fds(struct nvb_gpu *g, uint64_t reg, uint64_t entry_id, const int *fds, unsigned int nfds,
		       const void *blob, size_t blob_len, uint32_t flags, struct nvb_gpu_map **out);

/*
 * nvb_gpu_publish() with a whole publish policy (segments pass uid/gid),
 * and nvb_gpu_import()'s import of an entry already fetched under name
 * (fd: its file, or -1; blob: ent->blob_len bytes): chunk entries are
 * fetched through h.  Both set the GPU layer's last error.
 */
struct nvb;
struct nvb_entry;
struct nvb_publish_opts;
int nvb_gpu_publish_with(struct nvb_gpu *g, struct nvb *h, const char *name,
			 struct nvb_gpu_buf *b, const struct nvb_publish_opts *po, uint64_t *id);
int nvb_gpu_import_entry(struct nvb_gpu *g, struct nvb *h, const char *name,
			 const struct nvb_entry *ent, int fd, const void *blob, uint32_t flags,
			 struct nvb_gpu_map **out);

/* What nvb_gpu_unpublish() withdraws besides the entry itself (gpu_nvb.c). */
struct nvb_gpu_pub {
	struct nvb_gpu_pub *next;
	uint64_t serial;	/* of the handle it was published through */
	uint64_t id;		/* the range's entry */
	uint32_t n;
	uint64_t ids[];		/* its chunk entries */
};
struct nvb_gpu_pub **nvb_gpu_pubs_head(struct nvb_gpu *g);
void nvb_gpu_pubs_free(struct nvb_gpu *g);

#endif
