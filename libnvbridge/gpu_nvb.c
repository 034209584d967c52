// SPDX-License-Identifier: MIT
/*
 * The GPU layer's rendezvous through libnvbridge: publish a buffer's fd and
 * metadata under a name, import by name with a name -> entry-id cache that
 * revocation events keep honest.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu_internal.h"
#include "nvb_internal.h"
#include "nvbridge.h"
#include "nvbridge_gpu.h"

static uint64_t names_lookup(struct nvb_gpu *g, const char *name)
{
	struct nvb_gpu_name *n;
	uint64_t id = 0;

	pthread_mutex_lock(nvb_gpu_lock(g));
	for (n = *nvb_gpu_names_head(g); n; n = n->next)
		if (!strcmp(n->name, name)) {
			id = n->id;
			break;
		}
	pthread_mutex_unlock(nvb_gpu_lock(g));
	return id;
}

/*
 * Records what an import learnt about name: its entry id (0: none, e.g.
 * when the fetch failed) and, when wid is not 0, the watch that handle h
 * (by serial: a pointer may be reused after nvb_close) now holds on it.
 */
static void names_set(struct nvb_gpu *g, const char *name, uint64_t id, struct nvb *h,
		      uint64_t wid)
{
	struct nvb_gpu_name *n, **pp;

	pthread_mutex_lock(nvb_gpu_lock(g));
	for (pp = nvb_gpu_names_head(g); (n = *pp); pp = &n->next)
		if (!strcmp(n->name, name))
			break;
	if (!n && (id || wid)) {
		n = calloc(1, sizeof(*n));
		if (n) {
			snprintf(n->name, sizeof(n->name), "%s", name);
			n->next = *nvb_gpu_names_head(g);
			*nvb_gpu_names_head(g) = n;
		}
	}
	if (n) {
		n->id = id;
		if (wid) {
			n->wserial = h->serial;
			n->wid = wid;
		}
	}
	pthread_mutex_unlock(nvb_gpu_lock(g));
}

/*
 * The handle's watch table is full (max_watches): give back one slot that
 * an earlier import's name watch holds and cover every name with a single
 * scope-wide prefix watch.  A revocation of that earlier name between the
 * two calls would be lost, so its entry is looked up again afterwards.
 */
static int watch_all(struct nvb_gpu *g, struct nvb *h)
{
	struct nvb_fetch_opts fo;
	struct nvb_gpu_name *n;
	struct nvb_entry ent;
	char name[64];
	uint64_t id = 0, wid = 0, all;
	int err, err2;

	pthread_mutex_lock(nvb_gpu_lock(g));
	for (n = *nvb_gpu_names_head(g); n; n = n->next)
		if (n->wid && n->wserial == h->serial) {
			snprintf(name, sizeof(name), "%s", n->name);
			id = n->id;
			wid = n->wid;
			n->wid = 0;
			break;
		}
	pthread_mutex_unlock(nvb_gpu_lock(g));
	if (!wid)
		return nvb_gpu_seterr(-ENOSPC, "every watch of the handle is taken (max_watches), "
				      "none by nvb_gpu_import()");
	err = nvb_unwatch(h, wid);
	if (err)
		return nvb_gpu_seterr(err, nvb_last_error(h));
	err = nvb_watch(h, "", NVB_WATCH_PREFIX, &all);
	if (err && err != -EEXIST) {
		/* as it was, if the slot is still free; the name is looked up again below */
		err2 = nvb_watch(h, name, 0, &wid);
		names_set(g, name, id, h, err2 ? 0 : wid);
		nvb_gpu_seterr(err, nvb_last_error(h));
	} else {
		err = 0;
		__atomic_store_n(&h->gpu_watch_all, true, __ATOMIC_RELEASE);
	}
	if (!id)	/* the name was forgotten already: nothing to look up again */
		return err;
	memset(&fo, 0, sizeof(fo));
	fo.sz = sizeof(fo);
	memset(&ent, 0, sizeof(ent));
	err2 = nvb_fetch(h, name, &fo, NULL, 0, &ent, NULL);
	if (((err2 == 0 || err2 == -EMSGSIZE) && ent.id != id) ||
	    err2 == -ENOENT || err2 == -EACCES || err2 == -EPERM)
		nvb_gpu_revoke(g, id);	/* gone (or replaced) meanwhile */
	else if (err2 < 0 && err2 != -EMSGSIZE)
		nvb_gpu_names_forget(g, id);	/* unknown: ask again next time */
	return err;
}

/* Watch name on h so that its revocation reaches the cache. */
static int watch_name(struct nvb_gpu *g, struct nvb *h, const char *name, uint64_t *wid)
{
	int err;

	*wid = 0;
	if (__atomic_load_n(&h->gpu_watch_all, __ATOMIC_ACQUIRE))
		return 0;
	err = nvb_watch(h, name, 0, wid);
	if (err == -EEXIST) {
		*wid = 0;
		return 0;
	}
	if (err == -ENOSPC)
		return watch_all(g, h);
	return err ? nvb_gpu_seterr(err, nvb_last_error(h)) : 0;
}

int nvb_gpu_publish(struct nvb_gpu *g, struct nvb *h, const char *name,
		    struct nvb_gpu_buf *b, uint32_t access, uint64_t *id)
{
	struct nvb_publish_opts po;
	struct nvb_gpu_meta meta;
	int fd, err;

	(void)g;
	err = nvb_gpu_export(b, &fd, &meta);
	if (err)
		return err;
	memset(&po, 0, sizeof(po));
	po.sz = sizeof(po);
	po.access = access;
	err = nvb_publish(h, name, fd, &meta, sizeof(meta), &po, id);
	if (err)
		return nvb_gpu_seterr(err, nvb_last_error(h));
	return 0;
}

/* Cheap check for pending events: one poll() with a zero timeout. */
static int events_pending(struct nvb *h)
{
	struct pollfd p;
	int fd = nvb_event_fd(h);

	if (fd < 0)
		return 0;
	p.fd = fd;
	p.events = POLLIN;
	p.revents = 0;
	return poll(&p, 1, 0) != 0;
}

int nvb_gpu_poll_events(struct nvb_gpu *g, struct nvb *h)
{
	struct nvb_event ev[64];
	int n, i, total = 0;

	/* only read when the fd says so: never blocks, whatever the backend */
	while (events_pending(h)) {
		n = nvb_event_read(h, ev, 64, 0);
		if (n == -EAGAIN || n == -ETIMEDOUT || n == 0)
			return total;
		if (n < 0)
			return nvb_gpu_seterr(n, nvb_last_error(h));
		for (i = 0; i < n; i++) {
			if (ev[i].type == NVB_EVENT_REVOKED)
				nvb_gpu_revoke(g, ev[i].id);
			else if (ev[i].type == NVB_EVENT_OVERFLOW)
				nvb_gpu_names_forget(g, 0);	/* lost events: trust nothing */
		}
		total += n;
	}
	return total;
}

int nvb_gpu_import(struct nvb_gpu *g, struct nvb *h, const char *name,
		   int64_t timeout_ns, uint32_t flags, struct nvb_gpu_map **out)
{
	unsigned char blob[512];
	struct nvb_fetch_opts fo;
	struct nvb_entry ent;
	uint64_t id, wid;
	int fd = -1, err;

	*out = NULL;
	if (!name)
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_import: name is NULL");
	if (events_pending(h)) {
		err = nvb_gpu_poll_events(g, h);
		if (err < 0)
			return err;
	}
	id = names_lookup(g, name);
	if (id && nvb_gpu_import_cached(g, id, out) == 0)
		return 0;

	/* Watch before fetching so that no revocation can slip between. */
	err = watch_name(g, h, name, &wid);
	if (err)
		return err;
	memset(&fo, 0, sizeof(fo));
	fo.sz = sizeof(fo);
	if (timeout_ns) {
		fo.flags = NVB_FETCH_WAIT;
		fo.timeout_ns = timeout_ns;
	}
	memset(&ent, 0, sizeof(ent));
	err = nvb_fetch(h, name, &fo, blob, sizeof(blob), &ent, &fd);
	if (err < 0) {
		if (wid)
			names_set(g, name, 0, h, wid);	/* keep the watch known */
		return nvb_gpu_seterr(err, nvb_last_error(h));
	}
	err = nvb_gpu_import_fd(g, ent.id, fd, blob, ent.blob_len, flags, out);
	if (fd >= 0)
		close(fd);
	names_set(g, name, err ? 0 : ent.id, h, wid);
	return err;
}
