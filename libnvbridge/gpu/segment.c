// SPDX-License-Identifier: MIT
/*
 * libnvbridge GPU layer: segments (published or opened regions with bounds,
 * lifetime and revocation) and the one library thread that serves them and
 * the batches of xfer.c.  The design and lock order: seg_priv.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "seg_priv.h"
#include "../nvbridge.h"
#include "../opts.h"

#define SEG_BLOB	512

static void wake(struct seg_engine *e)
{
	uint64_t one = 1;

	if (write(e->wake, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, the thread will wake anyway */
	}
}

void nvb_gpu__seg_wake(struct seg_engine *e)
{
	wake(e);
}

/* ---- handles ---- */

/* h's watch records, parked, are h's again (e->lock held). */
static void watches_take(struct seg_engine *e, struct seg_handle *hd)
{
	struct seg_watch *w;

	for (w = e->watches; w; w = w->next)	/* h's watches, still in force */
		if (!w->hd && w->reg == hd->reg)
			w->hd = hd;
}

/*
 * A reference on h's record (e->hlock held); NULL and *err on failure.
 * Records are found by registry (unique per handle), never by pointer: a
 * parked record's handle may have been closed and its memory reused by a
 * new one.
 */
static struct seg_handle *handle_get(struct seg_engine *e, struct nvb *h, int *err)
{
	uint64_t reg = nvb_gpu_registry(h);
	struct seg_handle *hd;
	int fd = nvb_event_fd(h);

	if (fd < 0) {
		/* the handle's own errno (-ECHILD inherited, -ENOTCONN...), not -ENOMEM */
		*err = seterr(fd, "segment: nvb_event_fd: %s", nvb_last_error(h));
		return NULL;
	}
	pthread_mutex_lock(&e->lock);
	for (hd = e->handles; hd; hd = hd->next)
		if (hd->reg == reg && (hd->refs || hd->evfd >= 0))	/* not a parked one going */
			break;
	if (hd && !hd->refs++) {	/* parked: h's again */
		hd->h = h;
		hd->evfd = fd;
		watches_take(e, hd);
	}
	pthread_mutex_unlock(&e->lock);
	if (hd)
		return hd;
	hd = calloc(1, sizeof(*hd));
	if (!hd) {
		*err = seterr(-ENOMEM, "segment: out of memory");
		return NULL;
	}
	hd->h = h;
	hd->refs = 1;
	hd->evfd = fd;
	hd->reg = reg;
	pthread_mutex_lock(&e->lock);
	hd->gen = ++e->next_gen;
	hd->next = e->handles;
	e->handles = hd;
	watches_take(e, hd);
	pthread_mutex_unlock(&e->lock);
	wake(e);	/* into the thread's poll set */
	return hd;
}

static void handle_unlink(struct seg_engine *e, struct seg_handle *hd)
{
	struct seg_handle **pp;

	for (pp = &e->handles; *pp; pp = &(*pp)->next)
		if (*pp == hd) {
			*pp = hd->next;
			break;
		}
	free(hd);
}

/*
 * Drops a reference (e->hlock and e->lock held); the last one parks h's
 * record: the application may close h from now on, so h is never used
 * again, but while h stays open the thread reads its events through its
 * serial (nvb_event_read_live): the watches stay in force at the broker,
 * and a revocation must reach the cached mappings of the closed segments
 * (their exporters' memory) now, not at h's next open.  A handle on which
 * none of this layer's watches stands (or whose connection ended) has
 * nothing to come: its record goes.
 * Its watch records are parked under h's registry, taken back when h opens
 * a segment again (so the name is not watched twice, and a full watch table
 * knows what it may unwatch).  None is forgotten while its handle is
 * open: a forgotten watch stays at the broker, and nobody could give it
 * back when the table is full (their number is bounded by the broker's
 * watches per connection).  Those of handles closed since the last look
 * go: their watches went with the connection.
 */
static void handle_put(struct seg_engine *e, struct seg_handle *hd)
{
	struct seg_watch **wp, *w;
	uint64_t closes = nvb_handle_closes();
	int sweep = closes != e->closes_seen, watched = 0;

	if (!hd || --hd->refs > 0)
		return;
	e->closes_seen = closes;
	for (wp = &e->watches; (w = *wp);) {
		if (w->hd == hd) {
			w->hd = NULL;
			watched = 1;
		}
		if (!w->hd && sweep && !nvb_serial_live(w->reg)) {
			*wp = w->next;
			free(w);
		} else {
			wp = &w->next;
		}
	}
	hd->h = NULL;
	if (!watched || hd->evfd < 0)
		handle_unlink(e, hd);
}

/* ---- the engine ---- */

static void *seg_thread(void *arg);

int seg_forked(const struct seg_engine *e)
{
	/* a syscall per call (glibc caches no pid): cheap next to a submission's own */
	return e->pid != getpid();
}

static struct seg_engine *forked(int *err)
{
	*err = seterr(-ECHILD, "segment: inherited through fork(): the library thread runs in "
		      "the parent, nothing would complete here");
	return NULL;
}

struct seg_engine *seg_engine_get(struct nvb_gpu *g, int *err)
{
	struct seg_engine *e = __atomic_load_n(&g->seg, __ATOMIC_ACQUIRE);
	pthread_condattr_t ca;
	sigset_t all, old;
	int rc;

	if (e)
		return seg_forked(e) ? forked(err) : e;
	pthread_mutex_lock(&g->lock);
	e = g->seg;
	if (e) {
		if (seg_forked(e))
			e = forked(err);
		goto out;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		*err = seterr(-ENOMEM, "segment: out of memory");
		goto out;
	}
	e->g = g;
	e->pid = getpid();
	e->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	e->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (e->wake < 0 || e->done_fd < 0) {
		*err = seterr(-errno, "segment: eventfd: %s", strerror(errno));
		goto fail;
	}
	pthread_mutex_init(&e->hlock, NULL);
	pthread_mutex_init(&e->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->cv, &ca);
	pthread_condattr_destroy(&ca);
	e->xs.sz = sizeof(e->xs);
	/* the application's signals are not for the library's thread */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&e->thr, NULL, seg_thread, e);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		*err = seterr(-EAGAIN, "segment: cannot start the library thread");
		pthread_cond_destroy(&e->cv);
		pthread_mutex_destroy(&e->lock);
		pthread_mutex_destroy(&e->hlock);
		goto fail;
	}
	e->thr_ok = 1;
	__atomic_store_n(&g->seg, e, __ATOMIC_RELEASE);
	goto out;
fail:
	if (e->wake >= 0)
		close(e->wake);
	if (e->done_fd >= 0)
		close(e->done_fd);
	free(e);
	e = NULL;
out:
	pthread_mutex_unlock(&g->lock);
	return e;
}

int seg_dead(const struct nvb_gpu_seg *s)
{
	return s->revoked || (s->map && nvb_gpu_map_revoked(s->map));
}

struct nvb_gpu_seg *seg_put(struct nvb_gpu_seg *s)
{
	struct nvb_gpu_seg **pp;

	if (--s->refs > 0)
		return NULL;
	for (pp = &s->e->segs; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	s->next = NULL;
	return s;
}

void nvb_gpu__seg_destroy(struct nvb_gpu_seg *s)
{
	if (s->map)
		nvb_gpu_unmap(s->map);
	free(s);
}

/* ---- events ---- */

static int fd_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}

/* Marks the open segments of entry id (or, id 0, every one on hd) revoked (e->lock). */
static void mark_revoked(struct seg_engine *e, struct seg_handle *hd, uint64_t id)
{
	struct nvb_gpu_seg *s;

	for (s = e->segs; s; s = s->next)
		if (!s->local && s->hd == hd && (!id || s->id == id))
			s->revoked = 1;
}

/*
 * Fetches name into small (SEG_BLOB bytes) or, when the entry's blob is
 * larger (a registered range over many allocations), into a malloc'd
 * buffer: *blob is where it is; the caller frees it when it is not small.
 */
static int fetch_w(struct nvb *h, const char *watch, int *wret, uint64_t *wid, unsigned int *rt,
		   const char *name, uint32_t flags, uint32_t owner_uid, int64_t timeout_ns,
		   unsigned char *small, unsigned char **blob, struct nvb_entry *ent, int *fd)
{
	struct nvb_fetch_opts fo;
	unsigned int n = 1;
	int err;

	memset(&fo, 0, sizeof(fo));
	fo.sz = sizeof(fo);
	if (!(flags & NVB_GPU_SEG_ANY_OWNER)) {
		fo.flags |= NVB_FETCH_EXPECT_UID;
		fo.expect_uid = (flags & NVB_GPU_SEG_OWNER_UID) ? owner_uid : (uint32_t)geteuid();
	}
	if (timeout_ns) {
		fo.flags |= NVB_FETCH_WAIT;
		fo.timeout_ns = timeout_ns;
	}
	memset(ent, 0, sizeof(*ent));
	*fd = -1;
	*blob = small;
	if (watch)	/* the watch in front, in the same round trip */
		err = nvb_watch_fetch(h, watch, 0, wret, wid, name, &fo, small, SEG_BLOB, ent, fd,
				      &n);
	else
		err = nvb_fetch(h, name, &fo, small, SEG_BLOB, ent, fd);
	*rt += n;
	if (err != -EMSGSIZE || ent->blob_len <= SEG_BLOB || (watch && *wret && *wret != -EEXIST))
		return err;
	*rt += 1;
	*blob = malloc(ent->blob_len);
	if (!*blob) {
		*blob = small;
		return -ENOMEM;
	}
	fo.flags &= ~NVB_FETCH_WAIT;	/* the entry is there now */
	fo.timeout_ns = 0;
	err = nvb_fetch(h, name, &fo, *blob, ent->blob_len, ent, fd);
	if (err) {
		free(*blob);
		*blob = small;
	}
	return err;
}

/* fetch_w() without a watch (the name is watched already). */
static int fetch(struct nvb *h, const char *name, uint32_t flags, uint32_t owner_uid,
		 int64_t timeout_ns, unsigned char *small, unsigned char **blob,
		 struct nvb_entry *ent, int *fd)
{
	unsigned int rt = 0;

	return fetch_w(h, NULL, NULL, NULL, &rt, name, flags, owner_uid, timeout_ns, small, blob,
		       ent, fd);
}

/* What verify() fetches again for one open segment. */
struct seg_check {
	uint64_t id;
	uint32_t flags, owner_uid;
	char name[64];
};

/*
 * Fetches c's name again: gone or replaced, its entry is revoked (its
 * segments marked, its mappings out of the cache).  Unknown errors keep it.
 */
static void check_gone(struct seg_engine *e, struct seg_handle *hd, const struct seg_check *c)
{
	unsigned char blob[SEG_BLOB], *b;
	struct nvb_entry ent;
	int fd, err;

	err = fetch(hd->h, c->name, c->flags, c->owner_uid, 0, blob, &b, &ent, &fd);
	if (b != blob)
		free(b);
	if (fd >= 0)
		close(fd);
	if ((err == 0 || err == -EMSGSIZE) && ent.id == c->id)
		return;
	if (err && err != -ENOENT && err != -EACCES && err != -EPERM &&
	    err != -ECONNRESET && err != -ECHILD)
		return;	/* unknown: keep it */
	nvb_gpu_revoke_in(e->g, hd->reg, c->id);
	pthread_mutex_lock(&e->lock);
	mark_revoked(e, hd, c->id);
	pthread_mutex_unlock(&e->lock);
}

/*
 * Events were lost (OVERFLOW): a revocation may be among them.  Each open
 * segment on hd (every one: an unchecked one would stay usable for ever)
 * is fetched again; gone or replaced means revoked (e->hlock held).
 */
static void verify(struct seg_engine *e, struct seg_handle *hd)
{
	struct seg_check *c = NULL;
	struct nvb_gpu_seg *s;
	size_t n = 0, cap = 0, i;

	pthread_mutex_lock(&e->lock);
	for (s = e->segs; s; s = s->next)
		cap += !s->local && s->hd == hd && !s->revoked;
	/* no lock across malloc: new segments after this one are fetched after the loss anyway */
	pthread_mutex_unlock(&e->lock);
	if (!cap)
		return;
	c = calloc(cap, sizeof(*c));
	pthread_mutex_lock(&e->lock);
	for (s = e->segs; s; s = s->next) {
		if (s->local || s->hd != hd || s->revoked)
			continue;
		if (!c || n == cap) {
			/* out of memory, or segments the count missed: unverifiable is revoked */
			s->revoked = 1;
			continue;
		}
		c[n].id = s->id;
		c[n].flags = s->flags;
		c[n].owner_uid = s->owner_uid;
		snprintf(c[n].name, sizeof(c[n].name), "%s", s->name);
		n++;
	}
	pthread_mutex_unlock(&e->lock);
	for (i = 0; i < n; i++)
		check_gone(e, hd, &c[i]);
	free(c);
}

/*
 * hd's connection is gone: no revocation can reach us any more and every
 * entry it carried is gone with it.  Their mappings leave the cache too:
 * entry ids are counted per broker from 1 again after a restart, and a
 * new publication with an old id must not be served the old mapping
 * (e->hlock held).
 */
static void connection_lost(struct seg_engine *e, struct seg_handle *hd)
{
	struct nvb_gpu_seg *s;
	struct seg_prefetch *p;
	uint64_t *ids;
	size_t n = 0, cap = 0, i;

	pthread_mutex_lock(&e->lock);
	mark_revoked(e, hd, 0);
	for (s = e->segs; s; s = s->next)
		cap += !s->local && s->hd == hd;
	for (p = e->prefetch; p; p = p->next)
		cap += p->hd == hd && p->id;
	ids = cap ? malloc(cap * sizeof(*ids)) : NULL;
	for (s = e->segs; ids && s; s = s->next)
		if (!s->local && s->hd == hd)
			ids[n++] = s->id;
	/* nor may a prefetch on it serve an open (open_prefetched) */
	for (p = e->prefetch; p; p = p->next)
		if (p->hd == hd) {
			if (ids && p->id)
				ids[n++] = p->id;
			p->id = 0;
			p->pending = 0;
		}
	hd->evfd = -1;
	pthread_mutex_unlock(&e->lock);
	/* outside e->lock: a revocation may write abort flags (CUDA copies) */
	for (i = 0; i < n; i++)
		nvb_gpu_revoke_in(e->g, hd->reg, ids[i]);
	free(ids);
	/* segments closed earlier left their mappings cached, unreferenced, by id */
	nvb_gpu_cache_trim(e->g);
}

/*
 * A revocation of (reg, id), read by this layer or another of the process
 * (nvb_gpu_revoked_all, live_lock held): e's segments of that entry are
 * revoked, and so is a prefetch's import of it (e->lock taken).
 */
void nvb_gpu__seg_revoked(struct seg_engine *e, uint64_t reg, uint64_t id)
{
	struct seg_prefetch *p;
	struct seg_handle *hd;
	unsigned int k;

	pthread_mutex_lock(&e->lock);
	for (hd = e->handles; hd; hd = hd->next) {
		if (hd->reg != reg)
			continue;
		k = e->revoked_next++ % 256;
		e->revoked_ids[k].gen = hd->gen;
		e->revoked_ids[k].id = id;
		mark_revoked(e, hd, id);
	}
	for (p = e->prefetch; p; p = p->next)
		if (p->id == id && p->hd->reg == reg)
			p->id = 0;	/* a republish brings a new one */
	pthread_mutex_unlock(&e->lock);
}

/* Another layer read an OVERFLOW on reg (live_lock held): e's thread verifies (e->lock taken). */
void nvb_gpu__seg_lost(struct seg_engine *e, uint64_t reg)
{
	struct seg_handle *hd;
	int any = 0;

	pthread_mutex_lock(&e->lock);
	for (hd = e->handles; hd; hd = hd->next)
		if (hd->reg == reg) {
			hd->lost = 1;
			any = 1;
		}
	pthread_mutex_unlock(&e->lock);
	if (any)
		wake(e);
}

/* Events of hd were lost (here or, hd->lost, read by another layer): trust nothing (e->hlock held). */
static void events_lost(struct seg_engine *e, struct seg_handle *hd)
{
	struct seg_prefetch *p;

	if (!hd->refs) {
		/* parked: no segment to fetch again; the cached mappings cannot be trusted */
		nvb_gpu_cache_trim(e->g);
		return;
	}
	pthread_mutex_lock(&e->lock);
	for (p = e->prefetch; p; p = p->next)
		if (p->hd == hd)
			p->pending = 1;
	pthread_mutex_unlock(&e->lock);
	verify(e, hd);
}

void seg_events(struct seg_engine *e, struct seg_handle *hd)
{
	struct nvb_event ev[32];
	struct seg_prefetch *p;
	int n, i, lost, own = 0;

	pthread_mutex_lock(&e->lock);
	lost = hd->lost;	/* another layer read them: its OVERFLOW is ours too */
	hd->lost = 0;
	pthread_mutex_unlock(&e->lock);
	while (fd_readable(hd->evfd)) {
		n = hd->refs ? nvb_event_read(hd->h, ev, 32, 0) :
		    nvb_event_read_live(hd->reg, ev, 32);
		if (n == -EAGAIN || n == -ETIMEDOUT || n == -EINTR || n == 0)
			break;
		if (n == -ESRCH && !hd->refs) {
			/* parked, and the application closed it: nothing more comes */
			hd->evfd = -1;
			return;
		}
		if (n < 0) {
			connection_lost(e, hd);
			return;
		}
		for (i = 0; i < n; i++) {
			if (ev[i].type == NVB_EVENT_REVOKED) {
				/*
				 * Every layer of the process on h's registry, this one
				 * included: the event is read once, and another layer
				 * importing through h waits for it too.
				 */
				nvb_gpu_revoked_all(hd->reg, ev[i].id);
			} else if (ev[i].type == NVB_EVENT_PUBLISHED) {
				pthread_mutex_lock(&e->lock);
				for (p = e->prefetch; p; p = p->next)
					if (p->hd == hd && !strcmp(p->name, ev[i].name))
						p->pending = 1;
				pthread_mutex_unlock(&e->lock);
			} else if (ev[i].type == NVB_EVENT_OVERFLOW) {
				if (!own)	/* the other layers' too (this one: below) */
					nvb_gpu_lost_all(e->g, hd->reg);
				own = lost = 1;
			}
		}
	}
	if (lost)
		events_lost(e, hd);
}

/* Imports pending prefetches into the mapping cache (thread, e->hlock held). */
static void prefetch_run(struct seg_engine *e)
{
	unsigned char blob[SEG_BLOB], *b;
	struct seg_prefetch *p;
	struct nvb_gpu_map *m;
	struct nvb_entry ent;
	int fd, err;

	for (;;) {
		pthread_mutex_lock(&e->lock);
		for (p = e->prefetch; p && !p->pending; p = p->next)
			;
		if (p)
			p->pending = 0;
		pthread_mutex_unlock(&e->lock);
		if (!p)
			return;
		/* p stays valid: only the holder of e->hlock unlinks prefetches */
		err = fetch(p->hd->h, p->name, p->flags, p->owner_uid, 0, blob, &b, &ent, &fd);
		if (!err && nvb_gpu_import_cached_in(e->g, p->hd->reg, ent.id, (p->flags & NVB_GPU_SEG_LOCAL_ONLY) ?
						     NVB_GPU_IMPORT_LOCAL_ONLY : 0, &m) &&
		    nvb_gpu_import_entry(e->g, p->hd->h, p->name, &ent, fd, b,
					 (p->flags & NVB_GPU_SEG_LOCAL_ONLY) ?
					 NVB_GPU_IMPORT_LOCAL_ONLY : 0, &m))
			err = -1;
		if (b != blob)
			free(b);
		if (!err) {
			nvb_gpu_unmap(m);	/* unreferenced, it stays in the cache, mapped */
			pthread_mutex_lock(&e->lock);
			p->id = ent.id;	/* what nvb_gpu_seg_open() may use without a request */
			p->uid = ent.uid;
			pthread_mutex_unlock(&e->lock);
		}
		if (fd >= 0)
			close(fd);
	}
}

/*
 * Parked records whose handles were closed (or whose connections ended)
 * go, and so do the cached mappings imported through closed handles: no
 * revocation can reach them any more (thread, e->hlock held).
 */
static void parked_sweep(struct seg_engine *e)
{
	struct seg_handle *hd, *next;
	uint64_t closes = nvb_handle_closes();

	pthread_mutex_lock(&e->lock);
	for (hd = e->handles; hd; hd = next) {
		next = hd->next;
		if (hd->refs)
			continue;
		if (hd->evfd >= 0 && closes != e->park_closes && !nvb_serial_live(hd->reg))
			hd->evfd = -1;
		if (hd->evfd < 0)
			handle_unlink(e, hd);
	}
	e->park_closes = closes;
	pthread_mutex_unlock(&e->lock);
	/*
	 * Also when no parked record went: a handle with no watch of this
	 * layer (the application's came first) has no record left once its
	 * segments closed, and its mappings must go with it too (nvb_close
	 * wakes us).  One atomic load when nothing closed.
	 */
	nvb_gpu_drop_closed(e->g, closes, nvb_serial_live);
}

/*
 * The thread's wait set: an epoll instance over the wake eventfd and the
 * records' event fds.  Not poll(2): a poll pins every file it waits on
 * (fs/select.c takes a reference per fd) for as long as it sleeps, so an
 * nvb_close() meanwhile would not drop the last reference.  With the kernel
 * backend the event fd is the /dev/nvbridge fd, whose release is what
 * revokes the handle's entries (nvb_open(3): revoked when nvb_close()
 * returns); a parked handle sleeps until the next event of any handle.
 * epoll holds no reference on the files it watches: their last close
 * releases them and removes them from the set.  The set is made anew
 * whenever the records' (fd, gen) list changed (one fresh instance: an fd
 * number reused by another file cannot leave a stale registration).
 */
struct seg_waitset {
	int ep;			/* -1: none (epoll_create1 failed): 10 ms naps */
	size_t n, cap;
	struct { int fd; uint64_t gen; } *have;
};

/*
 * 1 when the records' event fds differ from what ws waits on (ws then
 * lists them), 0 when not, -1 out of memory (e->lock held).
 */
static int waitset_changed(struct seg_engine *e, struct seg_waitset *ws)
{
	struct seg_handle *hd;
	size_t n = 0, want = 0;
	int changed = 0;
	void *p;

	for (hd = e->handles; hd; hd = hd->next)
		want += hd->evfd >= 0;
	if (want > ws->cap) {
		p = realloc(ws->have, want * sizeof(*ws->have));
		if (!p)
			return -1;
		ws->have = p;
		ws->cap = want;
	}
	for (hd = e->handles; hd; hd = hd->next) {
		if (hd->evfd < 0)
			continue;
		if (n >= ws->n || ws->have[n].fd != hd->evfd || ws->have[n].gen != hd->gen)
			changed = 1;
		ws->have[n].fd = hd->evfd;
		ws->have[n++].gen = hd->gen;
	}
	changed |= n != ws->n;
	ws->n = n;
	return changed;
}

/* A fresh epoll instance over the wake fd and ws's fds (thread). */
static void waitset_build(struct seg_engine *e, struct seg_waitset *ws)
{
	struct epoll_event ev = { .events = EPOLLIN };
	size_t i;

	if (ws->ep >= 0)
		close(ws->ep);
	ws->ep = epoll_create1(EPOLL_CLOEXEC);
	if (ws->ep < 0)
		return;
	ev.data.fd = e->wake;
	if (epoll_ctl(ws->ep, EPOLL_CTL_ADD, e->wake, &ev)) {
		close(ws->ep);
		ws->ep = -1;
		return;
	}
	for (i = 0; i < ws->n; i++) {
		ev.data.fd = ws->have[i].fd;
		/*
		 * Failures are harmless: EEXIST (two records, one fd number),
		 * EBADF (closed: its record goes at the sweep); every record is
		 * checked with fd_readable on every wake-up anyway.
		 */
		if (epoll_ctl(ws->ep, EPOLL_CTL_ADD, ws->have[i].fd, &ev)) {
			/* see above */
		}
	}
}

static void *seg_thread(void *arg)
{
	struct seg_engine *e = arg;
	struct seg_waitset ws = { .ep = -1 };
	struct epoll_event evs[16];
	struct seg_handle *hd;
	uint64_t v;
	int changed, first = 1;

	for (;;) {
		pthread_mutex_lock(&e->lock);
		if (e->stop) {
			pthread_mutex_unlock(&e->lock);
			break;
		}
		changed = waitset_changed(e, &ws);
		pthread_mutex_unlock(&e->lock);
		if (changed > 0 || first || (changed == 0 && ws.ep < 0))
			waitset_build(e, &ws);
		first = 0;
		if (changed < 0 || ws.ep < 0)
			usleep(10000);	/* out of memory or fds: look at every record every 10 ms */
		else if (epoll_wait(ws.ep, evs, 16, -1) < 0 && errno != EINTR)
			usleep(1000);
		if (read(e->wake, &v, sizeof(v)) < 0) {
			/* EAGAIN: not woken through it (non-blocking) */
		}
		pthread_mutex_lock(&e->hlock);
		/* the records may have gone meanwhile: use only those still listed */
		for (hd = e->handles; hd; hd = hd->next)
			if (hd->evfd >= 0 && (fd_readable(hd->evfd) ||
					      __atomic_load_n(&hd->lost, __ATOMIC_RELAXED)))
				seg_events(e, hd);
		prefetch_run(e);
		parked_sweep(e);
		pthread_mutex_unlock(&e->hlock);
		xfer_reap(e);
	}
	if (ws.ep >= 0)
		close(ws.ep);
	free(ws.have);
	return NULL;
}

/*
 * nvb_gpu_close() gave up waiting for batches in flight: their copies may
 * still run on the GPU.  Their peer mappings leave g's list, so that the
 * teardown that follows does not unmap them under the copies (a
 * use-after-unmap on the GPU); they are leaked with the engine.
 */
static void keep_inflight_maps(struct seg_engine *e)
{
	struct nvb_gpu *g = e->g;
	struct nvb_gpu_map **pp;
	struct nvb_gpu_batch *b;
	size_t i;

	pthread_mutex_lock(&g->lock);
	for (b = e->inflight; b; b = b->next)
		for (i = 0; i < b->n; i++) {
			struct nvb_gpu_map *m = b->segs[i] ? b->segs[i]->map : NULL;

			for (pp = &g->maps; m && *pp; pp = &(*pp)->next)
				if (*pp == m) {
					*pp = m->next;
					m->next = NULL;
					m->cached = 0;
					break;
				}
		}
	pthread_mutex_unlock(&g->lock);
}

void nvb_gpu__seg_shutdown(struct nvb_gpu *g)
{
	struct seg_engine *e = g->seg;
	struct nvb_gpu_batch *b;
	struct seg_prefetch *p;
	struct seg_watch *w;
	struct seg_handle *hd;
	struct nvb_gpu_seg *s;
	int i, leak = 0, child;

	if (!e)
		return;
	/*
	 * A child of fork() has the engine's memory, not its thread, and its
	 * locks as the parent's threads left them: free the child's copies
	 * without a lock, a join or a CUDA call on the parent's streams.
	 */
	child = seg_forked(e);
	if (!child) {
		leak = xfer_shutdown(e) != 0;
		pthread_mutex_lock(&e->lock);
		e->stop = 1;
		pthread_mutex_unlock(&e->lock);
		wake(e);
		if (e->thr_ok)
			pthread_join(e->thr, NULL);
	}
	g->seg = NULL;
	if (leak) {	/* host functions may still run: keep what they touch */
		keep_inflight_maps(e);
		return;
	}
	while ((b = e->inflight)) {	/* none should be left; free anyway */
		e->inflight = b->next;
		batch_free(b);
	}
	while ((b = e->done)) {	/* completed, never freed by the application */
		e->done = b->next;
		batch_free(b);
	}
	while ((s = e->segs)) {	/* the application's leftovers: no unpublish (h may be gone) */
		e->segs = s->next;
		nvb_gpu__seg_destroy(s);
	}
	while ((p = e->prefetch)) {
		e->prefetch = p->next;
		free(p);
	}
	while ((w = e->watches)) {
		e->watches = w->next;
		free(w);
	}
	while ((hd = e->handles)) {
		e->handles = hd->next;
		free(hd);
	}
	for (i = 0; i < g->ndev && !child; i++)
		if (e->st[i]) {
			CUcontext old = ctx_push(g, i);

			g->cu.cuStreamDestroy(e->st[i]);
			ctx_pop(g, old);
		}
	close(e->wake);
	close(e->done_fd);
	if (!child) {
		pthread_cond_destroy(&e->cv);
		pthread_mutex_destroy(&e->lock);
		pthread_mutex_destroy(&e->hlock);
	}
	free(e);
}

/* ---- publish, open, prefetch, close ---- */

static int name_ok(const char *fn, const char *name)
{
	if (!name || !*name || strlen(name) >= 64)
		return seterr(-EINVAL, "%s: name must be 1..63 bytes", fn);
	return 0;
}

int nvb_gpu_seg_publish(struct nvb_gpu *g, struct nvb *h, const char *name,
			struct nvb_gpu_buf *b, const struct nvb_gpu_seg_publish_opts *opts,
			struct nvb_gpu_seg **out)
{
	struct nvb_gpu_seg_publish_opts o = { .sz = sizeof(o) };
	struct nvb_publish_opts po;
	struct nvb_gpu_meta meta;
	struct nvb_gpu_seg *s;
	struct seg_engine *e;
	uint64_t t0, t1, id = 0;
	int err, fd, was;

	if (!out)
		return seterr(-EINVAL, "nvb_gpu_seg_publish: out is NULL");
	*out = NULL;
	if (!g || !h || !b)
		return seterr(-EINVAL, "nvb_gpu_seg_publish: NULL handle or buffer");
	if (opts) {
		err = nvb_gpu_opts_in("nvb_gpu_seg_publish", &o, sizeof(o), opts,
				      offsetof(struct nvb_gpu_seg_publish_opts, access) +
				      sizeof(uint32_t));
		if (err)
			return err;
	}
	if (o.flags)
		return seterr(-EINVAL, "nvb_gpu_seg_publish: unknown flags %#x", o.flags);
	err = name_ok("nvb_gpu_seg_publish", name);
	if (err)
		return err;
	e = seg_engine_get(g, &err);
	if (!e)
		return err;
	s = calloc(1, sizeof(*s));
	if (!s)
		return seterr(-ENOMEM, "nvb_gpu_seg_publish: out of memory");
	t0 = ns_now();
	was = b->fd >= 0;
	/*
	 * Once per buffer: the fd stays with it.  A registered range that
	 * does not fit struct nvb_gpu_meta (a sub-range, several allocations,
	 * a legacy handle) has its fds already; the publish below moves them.
	 */
	err = nvb_gpu_export(b, &fd, &meta);
	if (err && nvb_gpu_buf_kind(b) == NVB_GPU_KIND_ALLOC) {
		free(s);
		return err;
	}
	t1 = ns_now();
	s->stats.export_ns = was || err ? 0 : t1 - t0;
	memset(&po, 0, sizeof(po));
	po.sz = sizeof(po);
	po.access = o.access;
	po.uid = o.uid;
	po.gid = o.gid;
	err = nvb_gpu_publish_with(g, h, name, b, &po, &id);
	if (err) {
		free(s);
		return err;
	}
	s->stats.publish_ns = ns_now() - t1;
	s->stats.total_ns = ns_now() - t0;
	s->stats.sz = sizeof(s->stats);
	s->stats.local = 1;
	s->stats.round_trips = 1;
	s->stats.owner_uid = (uint32_t)geteuid();
	s->e = e;
	s->local = 1;
	s->refs = 1;
	s->id = id;
	s->ptr = nvb_gpu_buf_ptr(b);
	s->size = nvb_gpu_buf_size(b);
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->pub_h = h;
	pthread_mutex_lock(&e->lock);
	s->next = e->segs;
	e->segs = s;
	pthread_mutex_unlock(&e->lock);
	*out = s;
	return 0;
}

static int open_opts(const char *fn, const struct nvb_gpu_seg_open_opts *opts,
		     struct nvb_gpu_seg_open_opts *o)
{
	int err;

	memset(o, 0, sizeof(*o));
	o->sz = sizeof(*o);
	if (opts) {
		err = nvb_gpu_opts_in(fn, o, sizeof(*o), opts,
				      offsetof(struct nvb_gpu_seg_open_opts, flags) + sizeof(uint32_t));
		if (err)
			return err;
	}
	if (o->flags & ~(NVB_GPU_SEG_OWNER_UID | NVB_GPU_SEG_ANY_OWNER | NVB_GPU_SEG_LOCAL_ONLY))
		return seterr(-EINVAL, "%s: unknown flags %#x", fn, o->flags);
	if ((o->flags & NVB_GPU_SEG_OWNER_UID) && (o->flags & NVB_GPU_SEG_ANY_OWNER))
		return seterr(-EINVAL, "%s: OWNER_UID and ANY_OWNER exclude each other", fn);
	if (!(o->flags & NVB_GPU_SEG_OWNER_UID) && o->owner_uid)
		return seterr(-EINVAL, "%s: owner_uid without NVB_GPU_SEG_OWNER_UID", fn);
	/*
	 * The default owner is the caller's euid now, at the call: a prefetch
	 * run later, a prefetched open and a re-check after lost events must
	 * not read another euid the process switched to meanwhile.
	 */
	if (!(o->flags & (NVB_GPU_SEG_OWNER_UID | NVB_GPU_SEG_ANY_OWNER))) {
		o->flags |= NVB_GPU_SEG_OWNER_UID;
		o->owner_uid = (uint32_t)geteuid();
	}
	return 0;
}

/*
 * The record of this layer's watch covering name on hd, pinned (busy), or
 * NULL when there is none.  An open or prefetch relies on the watch from
 * its fetch until its segment or prefetch is listed (name_unused() then
 * says the name is used): until then the record is pinned, so that no
 * trade for the scope-wide watch (watch_drop_unused) gives it up under
 * the fetch, when a revocation could fall between the unwatch and the
 * scope-wide watch and never reach the open.  watch_unpin() ends it.
 */
static struct seg_watch *watch_pin(struct seg_engine *e, struct seg_handle *hd, const char *name)
{
	struct seg_watch *w;

	pthread_mutex_lock(&e->lock);
	for (w = e->watches; w; w = w->next)
		if (w->hd == hd && (!w->name[0] || !strcmp(w->name, name)))
			break;
	if (w)
		w->busy++;
	pthread_mutex_unlock(&e->lock);
	return w;
}

/* Ends watch_pin()'s or watch_note()'s pin (e->lock held; w may be NULL). */
static void watch_unpin(struct seg_watch *w)
{
	if (w)
		w->busy--;
}

static void watch_unpin_locked(struct seg_engine *e, struct seg_watch *w)
{
	pthread_mutex_lock(&e->lock);
	watch_unpin(w);
	pthread_mutex_unlock(&e->lock);
}

/*
 * Remembers that name ("": every name) is watched on hd by this layer
 * (out of memory: asked again later).  wid 0 (-EEXIST: the application's
 * own watch) is not remembered: the application may unwatch it at any
 * time, and a name taken for watched would then be fetched unwatched for
 * ever after; asking again costs nothing (it travels with the fetch).
 */
static struct seg_watch *watch_note(struct seg_engine *e, struct seg_handle *hd, const char *name,
				    uint64_t wid, int pin)
{
	struct seg_watch *w = wid ? calloc(1, sizeof(*w)) : NULL;

	if (w) {
		w->hd = hd;
		w->reg = hd->reg;
		w->wid = wid;
		w->busy = pin;	/* pinned from the start: see watch_pin() */
		snprintf(w->name, sizeof(w->name), "%s", name);
		pthread_mutex_lock(&e->lock);
		w->next = e->watches;
		e->watches = w;
		pthread_mutex_unlock(&e->lock);
	}
	return pin ? w : NULL;
}

/* No open segment or prefetch of name on hd (e->lock held). */
static int name_unused(struct seg_engine *e, struct seg_handle *hd, const char *name)
{
	struct nvb_gpu_seg *s;
	struct seg_prefetch *p;

	for (s = e->segs; s; s = s->next)
		if (!s->local && s->hd == hd && !strcmp(s->name, name))
			return 0;
	for (p = e->prefetch; p; p = p->next)
		if (p->hd == hd && !strcmp(p->name, name))
			return 0;
	return 1;
}

/*
 * Unwatches one name this layer watched on hd that nothing uses any more
 * (closed segments keep their watches) and no open or prefetch in flight
 * relies on (pinned): 0, or -ENOSPC when there is none.
 */
static int watch_drop_unused(struct seg_engine *e, struct seg_handle *hd)
{
	struct seg_watch **wp, *w;
	int err;

	pthread_mutex_lock(&e->lock);
	for (wp = &e->watches; (w = *wp); wp = &w->next)
		if (w->hd == hd && w->wid && w->name[0] && !w->busy && name_unused(e, hd, w->name)) {
			*wp = w->next;
			break;
		}
	pthread_mutex_unlock(&e->lock);
	if (!w)
		return -ENOSPC;
	err = nvb_unwatch(hd->h, w->wid);
	free(w);
	return err == -ENOENT ? 0 : err;
}

/*
 * The handle's watch table is full (-ENOSPC): one scope-wide watch covers
 * all.  When it has no room either, a watch of a name nothing uses any
 * more makes room.  Between that unwatch and the new watch a revocation of
 * the name's entry may go unseen: no segment has it open and no open in
 * flight fetched it under that watch (pinned records are never given up),
 * but its mapping may stay cached; the unreferenced cached mappings go
 * (prefetches import theirs again).
 */
static int watch_all(struct seg_engine *e, struct seg_handle *hd)
{
	struct seg_prefetch *p;
	uint64_t wid = 0;
	int err = nvb_watch(hd->h, "", NVB_WATCH_PREFIX, &wid), dropped = 0;

	if (err == -ENOSPC && !watch_drop_unused(e, hd)) {
		dropped = 1;
		err = nvb_watch(hd->h, "", NVB_WATCH_PREFIX, &wid);
	}
	if (err && err != -EEXIST)
		return seterr(err, "segment: nvb_watch: %s", nvb_last_error(hd->h));
	watch_note(e, hd, "", err ? 0 : wid, 0);
	if (dropped) {
		nvb_gpu_cache_trim(e->g);
		pthread_mutex_lock(&e->lock);
		for (p = e->prefetch; p; p = p->next)
			if (p->hd == hd)
				p->pending = 1;
		pthread_mutex_unlock(&e->lock);
		wake(e);
	}
	return 0;
}

/* Watches name on hd once; *pin: the record, pinned (watch_pin), or NULL. 0 or -errno. */
static int watch_once(struct seg_engine *e, struct seg_handle *hd, const char *name,
		      struct seg_watch **pin)
{
	uint64_t wid = 0;
	int err;

	*pin = watch_pin(e, hd, name);
	if (*pin)
		return 0;
	err = nvb_watch(hd->h, name, 0, &wid);
	if (err == -ENOSPC) {
		err = watch_all(e, hd);
		*pin = err ? NULL : watch_pin(e, hd, name);	/* the scope-wide one */
		return err;
	}
	if (err && err != -EEXIST)
		return seterr(err, "segment: nvb_watch: %s", nvb_last_error(hd->h));
	*pin = watch_note(e, hd, name, err ? 0 : wid, 1);
	return 0;
}

/* Ends the prefetch of (hd, name), if any (e->hlock and e->lock held). */
static void prefetch_claim(struct seg_engine *e, struct seg_handle *hd, const char *name)
{
	struct seg_prefetch **pp, *p;

	for (pp = &e->prefetch; (p = *pp); pp = &p->next)
		if (p->hd == hd && !strcmp(p->name, name)) {
			*pp = p->next;
			handle_put(e, hd);
			free(p);
			return;
		}
}

static void handle_drop(struct seg_engine *e, struct seg_handle *hd)
{
	pthread_mutex_lock(&e->hlock);
	pthread_mutex_lock(&e->lock);
	handle_put(e, hd);
	pthread_mutex_unlock(&e->lock);
	pthread_mutex_unlock(&e->hlock);
}

/* What open and prefetch begin with: options, name, the engine, a reference on h's record. */
static int seg_begin(const char *fn, struct nvb_gpu *g, struct nvb *h, const char *name,
		     const struct nvb_gpu_seg_open_opts *opts, struct nvb_gpu_seg_open_opts *o,
		     struct seg_engine **e, struct seg_handle **hd)
{
	int err;

	if (!g || !h)
		return seterr(-EINVAL, "%s: NULL handle", fn);
	err = open_opts(fn, opts, o);
	if (!err)
		err = name_ok(fn, name);
	if (err)
		return err;
	*e = seg_engine_get(g, &err);
	if (!*e)
		return err;
	pthread_mutex_lock(&(*e)->hlock);
	*hd = handle_get(*e, h, &err);
	pthread_mutex_unlock(&(*e)->hlock);
	return *hd ? 0 : err;
}

/*
 * A prefetch of (hd, name) with the same expectations already imported the
 * entry and still holds its watch: the open needs no request at all.  A
 * revocation the thread has not read yet is no worse than one that comes
 * right after a fetch: its event marks the segment when it is read.
 */
static int open_prefetched(struct seg_engine *e, struct seg_handle *hd, const char *name,
			   const struct nvb_gpu_seg_open_opts *o, struct nvb_entry *ent,
			   struct nvb_gpu_map **m)
{
	struct seg_prefetch *p;
	int hit = 0;

	pthread_mutex_lock(&e->hlock);
	pthread_mutex_lock(&e->lock);
	for (p = e->prefetch; p; p = p->next)
		if (p->hd == hd && !strcmp(p->name, name))
			break;
	/* a handle whose connection ended (evfd -1) carries no revocation any more */
	if (p && p->id && hd->evfd >= 0 && p->flags == o->flags && p->owner_uid == o->owner_uid &&
	    !nvb_gpu_import_cached_in(e->g, hd->reg, p->id, (o->flags & NVB_GPU_SEG_LOCAL_ONLY) ?
				      NVB_GPU_IMPORT_LOCAL_ONLY : 0, m)) {
		memset(ent, 0, sizeof(*ent));
		ent->id = p->id;
		ent->uid = p->uid;
		hit = 1;
	}
	pthread_mutex_unlock(&e->lock);
	pthread_mutex_unlock(&e->hlock);
	return hit;
}

/* Watch (once), fetch, import unless cached; the costs go into s->stats. */
static int open_fetch(struct seg_engine *e, struct seg_handle *hd, const char *name,
		      const struct nvb_gpu_seg_open_opts *o, struct nvb_gpu_seg *s,
		      struct nvb_entry *ent, struct nvb_gpu_map **m, struct seg_watch **pin)
{
	unsigned char blob[SEG_BLOB], *b;
	struct nvb_gpu_map_stats ms;
	unsigned int rt = 0;
	uint64_t t0 = ns_now(), t1, wid = 0;
	int err, fd = -1, k, wret = 0, w = !*pin;

	/*
	 * The watch comes first, so no revocation can fall between fetch and
	 * import: sent right in front of the fetch, without waiting for its
	 * answer (the broker answers in order), one round trip for both.
	 */
	err = fetch_w(hd->h, w ? name : NULL, &wret, &wid, &rt, name, o->flags, o->owner_uid,
		      o->timeout_ns, blob, &b, ent, &fd);
	if (w && wret == -ENOSPC) {
		/* the fetch went unwatched and was dropped: the scope-wide watch, then again */
		err = watch_all(e, hd);
		if (err)
			return err;	/* its own message */
		*pin = watch_pin(e, hd, name);	/* the scope-wide one */
		rt++;
		t1 = ns_now();
		s->stats.watch_ns = t1 - t0;
		err = fetch_w(hd->h, NULL, NULL, NULL, &rt, name, o->flags, o->owner_uid,
				      o->timeout_ns, blob, &b, ent, &fd);
		t0 = t1;
	} else if (w && wret && wret != -EEXIST) {
		return seterr(wret, "segment: nvb_watch: %s", nvb_last_error(hd->h));
	} else if (w) {
		/* in force even when the fetch failed */
		*pin = watch_note(e, hd, name, wret ? 0 : wid, 1);
	}
	s->stats.fetch_ns = ns_now() - t0;
	s->stats.round_trips = rt;
	if (err)
		return seterr(err, "nvb_gpu_seg_open: %s: %s", name, nvb_last_error(hd->h));
	s->stats.cached = nvb_gpu_import_cached_in(e->g, hd->reg, ent->id, (o->flags & NVB_GPU_SEG_LOCAL_ONLY) ?
						   NVB_GPU_IMPORT_LOCAL_ONLY : 0, m) == 0;
	if (!s->stats.cached) {
		/* chunk entries of a registered range: one more request each */
		err = nvb_gpu_import_entry(e->g, hd->h, name, ent, fd, b,
					   (o->flags & NVB_GPU_SEG_LOCAL_ONLY) ?
					   NVB_GPU_IMPORT_LOCAL_ONLY : 0, m);
		memset(&ms, 0, sizeof(ms));
		ms.sz = sizeof(ms);
		if (!err && !nvb_gpu_map_stats(*m, &ms)) {
			s->stats.import_ns = ms.import_ns;
			s->stats.reserve_ns = ms.reserve_ns;
			s->stats.map_ns = ms.map_ns;
			for (k = 0; k < (int)ms.naccess && k < 4; k++)
				s->stats.access_ns += ms.access_ns[k];
		}
	}
	if (b != blob)
		free(b);
	if (fd >= 0)
		close(fd);
	return err;
}

int nvb_gpu_seg_open(struct nvb_gpu *g, struct nvb *h, const char *name,
		     const struct nvb_gpu_seg_open_opts *opts, struct nvb_gpu_seg **out)
{
	struct nvb_gpu_seg_open_opts o;
	struct nvb_gpu_seg *s = NULL;
	struct nvb_gpu_map *m = NULL;
	struct seg_watch *pin;
	struct seg_handle *hd;
	struct seg_engine *e;
	struct nvb_entry ent;
	uint64_t start = ns_now();
	unsigned int ring0;
	int err, k, recheck;

	if (!out)
		return seterr(-EINVAL, "nvb_gpu_seg_open: out is NULL");
	*out = NULL;
	err = seg_begin("nvb_gpu_seg_open", g, h, name, opts, &o, &e, &hd);
	if (err)
		return err;
	s = calloc(1, sizeof(*s));
	if (!s) {
		handle_drop(e, hd);
		return seterr(-ENOMEM, "nvb_gpu_seg_open: out of memory");
	}
	pthread_mutex_lock(&e->lock);
	ring0 = e->revoked_next;	/* revocations the thread reads from now on */
	pthread_mutex_unlock(&e->lock);
	pin = watch_pin(e, hd, name);
	if (open_prefetched(e, hd, name, &o, &ent, &m)) {
		s->stats.cached = 1;	/* no request, no CUDA call */
	} else {
		err = open_fetch(e, hd, name, &o, s, &ent, &m, &pin);
		if (err) {
			watch_unpin_locked(e, pin);
			handle_drop(e, hd);
			free(s);
			return err;
		}
	}
	s->e = e;
	s->hd = hd;
	s->refs = 1;
	s->id = ent.id;
	s->map = m;
	s->ptr = nvb_gpu_map_ptr(m);
	s->size = nvb_gpu_map_size(m);
	s->flags = o.flags;
	s->owner_uid = o.owner_uid;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->stats.sz = sizeof(s->stats);
	s->stats.owner_uid = ent.uid;
	pthread_mutex_lock(&e->hlock);
	pthread_mutex_lock(&e->lock);
	prefetch_claim(e, hd, name);
	/*
	 * A revocation the thread applied between our fetch and our import
	 * found no mapping and no segment to mark: its id is in the ring.
	 * Later ones find the segment (same lock).
	 */
	for (k = 0; k < 256; k++)
		if (e->revoked_ids[k].id == ent.id && e->revoked_ids[k].gen == hd->gen)
			s->revoked = 1;
	/*
	 * More than the ring holds went by (a scope-wide watch sees every
	 * name's churn): ours may have been pushed out.  The segment is listed
	 * first, so a revocation after the fetch below marks it; one before
	 * shows as the name gone or replaced.
	 */
	recheck = !s->revoked && e->revoked_next - ring0 > 256;
	s->next = e->segs;
	e->segs = s;
	watch_unpin(pin);	/* listed: name_unused() keeps the watch from now on */
	pthread_mutex_unlock(&e->lock);
	pthread_mutex_unlock(&e->hlock);
	if (s->revoked)
		nvb_gpu_revoke_in(g, hd->reg, ent.id);	/* drop the stale cache entry */
	if (recheck) {
		struct seg_check c = { .id = s->id, .flags = s->flags, .owner_uid = s->owner_uid };

		snprintf(c.name, sizeof(c.name), "%s", name);
		check_gone(e, hd, &c);
	}
	s->stats.total_ns = ns_now() - start;
	*out = s;
	return 0;
}

int nvb_gpu_seg_prefetch(struct nvb_gpu *g, struct nvb *h, const char *name,
			 const struct nvb_gpu_seg_open_opts *opts)
{
	struct nvb_gpu_seg_open_opts o;
	struct seg_watch *pin;
	struct seg_prefetch *p;
	struct seg_handle *hd;
	struct seg_engine *e;
	int err;

	err = seg_begin("nvb_gpu_seg_prefetch", g, h, name, opts, &o, &e, &hd);
	if (err)
		return err;
	p = calloc(1, sizeof(*p));
	if (!p) {
		handle_drop(e, hd);
		return seterr(-ENOMEM, "nvb_gpu_seg_prefetch: out of memory");
	}
	err = watch_once(e, hd, name, &pin);
	pthread_mutex_lock(&e->hlock);
	pthread_mutex_lock(&e->lock);
	watch_unpin(pin);	/* listed below, or no watch needed any more */
	if (err < 0) {
		handle_put(e, hd);
		free(p);
	} else {
		prefetch_claim(e, hd, name);	/* a second call replaces the first */
		p->hd = hd;
		p->flags = o.flags;
		p->owner_uid = o.owner_uid;
		p->pending = 1;		/* maybe published already */
		snprintf(p->name, sizeof(p->name), "%s", name);
		p->next = e->prefetch;
		e->prefetch = p;
	}
	pthread_mutex_unlock(&e->lock);
	pthread_mutex_unlock(&e->hlock);
	if (!err)
		wake(e);
	return err;
}

void nvb_gpu_seg_close(struct nvb_gpu_seg *s)
{
	struct seg_engine *e;
	struct nvb_gpu_seg *d;

	if (!s)
		return;
	e = s->e;
	if (seg_forked(e))	/* the parent's: nvb_gpu_close() frees the child's copy */
		return;
	if (s->local)	/* the peers' segments are revoked now, not when batches end */
		nvb_gpu_unpublish(e->g, s->pub_h, s->id);
	pthread_mutex_lock(&e->hlock);
	pthread_mutex_lock(&e->lock);
	s->closed = 1;
	if (!s->local)
		handle_put(e, s->hd);
	s->hd = NULL;	/* the handle may be closed from now on */
	d = seg_put(s);
	pthread_mutex_unlock(&e->lock);
	pthread_mutex_unlock(&e->hlock);
	if (d)
		nvb_gpu__seg_destroy(d);
}

uint64_t nvb_gpu_seg_ptr(const struct nvb_gpu_seg *s)
{
	return s->ptr;
}

size_t nvb_gpu_seg_size(const struct nvb_gpu_seg *s)
{
	return s->size;
}

uint64_t nvb_gpu_seg_id(const struct nvb_gpu_seg *s)
{
	return s->id;
}

int nvb_gpu_seg_revoked(struct nvb_gpu_seg *s)
{
	int r;

	if (seg_forked(s->e))	/* no lock: the parent's threads may have held it */
		return seg_dead(s);
	pthread_mutex_lock(&s->e->lock);
	r = seg_dead(s);
	pthread_mutex_unlock(&s->e->lock);
	return r;
}

int nvb_gpu_seg_stats(const struct nvb_gpu_seg *s, struct nvb_gpu_seg_stats *out)
{
	size_t sz;

	if (!s || !out || out->sz < offsetof(struct nvb_gpu_seg_stats, export_ns) ||
	    out->sz > NVB_OPTS_MAX)
		return seterr(-EINVAL, "nvb_gpu_seg_stats: bad arguments");
	sz = out->sz < sizeof(s->stats) ? out->sz : sizeof(s->stats);
	memcpy(out, &s->stats, sz);
	out->sz = sz;
	return 0;
}
