// SPDX-License-Identifier: MIT
/*
 * The GPU layer's rendezvous through libnvbridge: publish a buffer's fd and
 * metadata under a name, import by name with a name -> entry-id cache that
 * revocation events keep honest.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stddef.h>

#include "gpu_internal.h"
#include "nvb_internal.h"
#include "nvbridge.h"
#include "nvbridge_gpu.h"

uint64_t nvb_gpu_registry(const struct nvb *h)
{
	return h->serial;
}

int nvb_gpu_import_fd_on(struct nvb_gpu *g, struct nvb *h, uint64_t entry_id, int fd,
			 const void *blob, size_t blob_len, uint32_t flags, struct nvb_gpu_map **out)
{
	if (!out)
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_import_fd_on: out is NULL");
	*out = NULL;
	if (!g || !h)
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_import_fd_on: NULL handle");
	nvb_gpu_drop_closed(g, nvb_handle_closes(), nvb_serial_live);
	return nvb_gpu_import_fd_in(g, h->serial, entry_id, fd, blob, blob_len, flags, out);
}

int nvb_gpu_revoke_on(struct nvb_gpu *g, struct nvb *h, uint64_t entry_id)
{
	if (!g || !h)
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_revoke_on: NULL handle");
	return nvb_gpu_revoke_in(g, h->serial, entry_id) > 0;
}

/* The entry id an earlier import of name through h's registry found, and its publisher's uid. */
static uint64_t names_lookup(struct nvb_gpu *g, struct nvb *h, const char *name, uint32_t *uid)
{
	struct nvb_gpu_name *n;
	uint64_t id = 0;

	pthread_mutex_lock(nvb_gpu_lock(g));
	for (n = *nvb_gpu_names_head(g); n; n = n->next)
		if (n->reg == h->serial && !strcmp(n->name, name)) {
			id = n->id;
			*uid = n->uid;
			break;
		}
	pthread_mutex_unlock(nvb_gpu_lock(g));
	return id;
}

/*
 * Records what an import through h learnt about name in h's registry: its
 * entry id (0: none, e.g. when the fetch failed) and, when wid is not 0,
 * the watch that h (by serial: a pointer may be reused after nvb_close)
 * now holds on it.
 */
static void names_set(struct nvb_gpu *g, const char *name, uint64_t id, uint32_t uid,
		      struct nvb *h, uint64_t wid)
{
	struct nvb_gpu_name *n, **pp;

	pthread_mutex_lock(nvb_gpu_lock(g));
	for (pp = nvb_gpu_names_head(g); (n = *pp); pp = &n->next)
		if (n->reg == h->serial && !strcmp(n->name, name))
			break;
	if (!n && (id || wid)) {
		n = calloc(1, sizeof(*n));
		if (n) {
			n->reg = h->serial;
			snprintf(n->name, sizeof(n->name), "%s", name);
			n->next = *nvb_gpu_names_head(g);
			*nvb_gpu_names_head(g) = n;
		}
	}
	if (n) {
		n->id = id;
		n->uid = uid;
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
	uint32_t uid = 0;
	int err, err2;

	pthread_mutex_lock(nvb_gpu_lock(g));
	for (n = *nvb_gpu_names_head(g); n; n = n->next)
		if (n->wid && n->wserial == h->serial) {
			snprintf(name, sizeof(name), "%s", n->name);
			id = n->id;
			uid = n->uid;
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
		names_set(g, name, id, uid, h, err2 ? 0 : wid);
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
		nvb_gpu_revoke_in(g, h->serial, id);	/* gone (or replaced) meanwhile */
	else if (err2 < 0 && err2 != -EMSGSIZE)
		nvb_gpu_names_forget(g, h->serial, id);	/* unknown: ask again next time */
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

/* "<name>:c<i>": where chunk i >= 1 of a registered range travels. */
static int chunk_name(char *out, const char *name, unsigned int i)
{
	int n = snprintf(out, NVB_NAME_MAX, "%s:c%u", name, i);

	if (n < 0 || n >= NVB_NAME_MAX)
		return nvb_gpu_seterr(-ENAMETOOLONG, "nvb_gpu_publish: the name leaves no room for the "
				      "entries of the range's other allocations (\"<name>:c<i>\", 63 bytes at most)");
	return 0;
}

/*
 * A registered range: chunks 1..n-1 first, each under its derived name,
 * then name with the metadata that lists their entry ids, so that an
 * importer who sees name finds every chunk already there.
 */
static int publish_range(struct nvb_gpu *g, struct nvb *h, const char *name, struct nvb_gpu_buf *b,
			 const struct nvb_publish_opts *po, int n, const int *fds, uint64_t *id)
{
	struct nvb_gpu_pub *pub;
	char cname[NVB_NAME_MAX];
	size_t len = 0;
	void *blob = NULL;
	uint64_t mid = 0;
	int i, err = 0;

	pub = calloc(1, sizeof(*pub) + (size_t)(n > 0 ? n : 1) * sizeof(uint64_t));
	if (!pub)
		return nvb_gpu_seterr(-ENOMEM, "nvb_gpu_publish: out of memory");
	for (i = 1; i < n && !err; i++) {
		err = chunk_name(cname, name, (unsigned int)i);
		if (!err) {
			err = nvb_publish(h, cname, fds[i], NULL, 0, po, &pub->ids[i]);
			if (err)
				nvb_gpu_seterr(err, nvb_last_error(h));
			else
				pub->n = (uint32_t)i + 1;
		}
	}
	if (!err)
		err = nvb_gpu_range_blob(b, pub->ids, &blob, &len);
	if (!err) {
		err = nvb_publish(h, name, n ? fds[0] : -1, blob, len, po, &mid);
		if (err)
			nvb_gpu_seterr(err, nvb_last_error(h));
	}
	if (blob)	/* a legacy range's holds a bearer token */
		explicit_bzero(blob, len);
	free(blob);
	if (err || n <= 1) {
		for (i = 1; i < (int)pub->n; i++)
			nvb_unpublish(h, pub->ids[i], NULL);
		free(pub);
		if (!err && id)
			*id = mid;
		return err;
	}
	pub->serial = h->serial;
	pub->id = mid;
	pthread_mutex_lock(nvb_gpu_lock(g));
	pub->next = *nvb_gpu_pubs_head(g);
	*nvb_gpu_pubs_head(g) = pub;
	pthread_mutex_unlock(nvb_gpu_lock(g));
	if (id)
		*id = mid;
	return 0;
}

int nvb_gpu_publish_with(struct nvb_gpu *g, struct nvb *h, const char *name,
			 struct nvb_gpu_buf *b, const struct nvb_publish_opts *po, uint64_t *id)
{
	int fds[NVB_GPU_REGISTER_MAX_CHUNKS];
	struct nvb_gpu_meta meta;
	int fd, n, err;

	n = nvb_gpu_range_fds(b, fds, NVB_GPU_REGISTER_MAX_CHUNKS);
	if (n >= 0)
		return publish_range(g, h, name, b, po, n, fds, id);
	err = nvb_gpu_export(b, &fd, &meta);
	if (err)
		return err;
	err = nvb_publish(h, name, fd, &meta, sizeof(meta), po, id);
	if (err)
		return nvb_gpu_seterr(err, nvb_last_error(h));
	return 0;
}

int nvb_gpu_publish(struct nvb_gpu *g, struct nvb *h, const char *name,
		    struct nvb_gpu_buf *b, uint32_t access, uint64_t *id)
{
	struct nvb_publish_opts po;

	if (!g || !h || !name || !b)
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_publish: NULL argument");
	memset(&po, 0, sizeof(po));
	po.sz = sizeof(po);
	po.access = access;
	return nvb_gpu_publish_with(g, h, name, b, &po, id);
}

int nvb_gpu_unpublish(struct nvb_gpu *g, struct nvb *h, uint64_t id)
{
	struct nvb_gpu_pub *pub, **pp;
	uint32_t i;
	int err;

	if (!g || !h || !id)
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_unpublish: NULL handle or id 0");
	pthread_mutex_lock(nvb_gpu_lock(g));
	for (pp = nvb_gpu_pubs_head(g); (pub = *pp); pp = &pub->next)
		if (pub->id == id && pub->serial == h->serial) {
			*pp = pub->next;
			break;
		}
	pthread_mutex_unlock(nvb_gpu_lock(g));
	/* the range's own entry first: importers see its revocation, not a missing chunk */
	err = nvb_unpublish(h, id, NULL);
	if (err)
		nvb_gpu_seterr(err, nvb_last_error(h));
	for (i = 1; pub && i < pub->n; i++)
		nvb_unpublish(h, pub->ids[i], NULL);
	free(pub);
	return err;
}

void nvb_gpu_pubs_free(struct nvb_gpu *g)
{
	struct nvb_gpu_pub **head = nvb_gpu_pubs_head(g), *p;

	while ((p = *head)) {
		*head = p->next;
		free(p);
	}
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

	if (!g)	/* unused below (every open layer is told), but the call names one */
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_poll_events: NULL context");
	/* only read when the fd says so: never blocks, whatever the backend */
	while (events_pending(h)) {
		n = nvb_event_read(h, ev, 64, 0);
		if (n == -EAGAIN || n == -ETIMEDOUT || n == 0)
			return total;
		if (n < 0)
			return nvb_gpu_seterr(n, nvb_last_error(h));
		for (i = 0; i < n; i++) {
			/* ids of h's registry: another registry's entry of that id is not this one */
			/*
			 * and every other layer of the process on h's registry:
			 * read here, the event never reaches their readers
			 */
			if (ev[i].type == NVB_EVENT_REVOKED)
				nvb_gpu_revoked_all(h->serial, ev[i].id);
			else if (ev[i].type == NVB_EVENT_OVERFLOW)
				nvb_gpu_lost_all(NULL, h->serial);	/* lost events: trust nothing */
		}
		total += n;
	}
	return total;
}

/*
 * The uid both backends report for a publisher whose uid this process's
 * user namespace does not map (the kernel's overflowuid, which nvbridged
 * reads too).
 */
static unsigned int overflow_uid_v = 65534;

static void overflow_uid_read(void)
{
	unsigned int v;
	FILE *f = fopen("/proc/sys/kernel/overflowuid", "re");

	if (f) {
		if (fscanf(f, "%u", &v) == 1)
			overflow_uid_v = v;
		fclose(f);
	}
}

/* Read once per process, as nvbridged reads it once at start: no file I/O per import. */
static uint32_t overflow_uid(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, overflow_uid_read);
	return overflow_uid_v;
}

/*
 * Chunks 1..n-1 of a registered range: each from its derived name, from the
 * user who published the range (nobody else can slip an entry in), and the
 * very entry the range's metadata names (not an older or newer one).
 *
 * The entry id is what binds a chunk to the range: ids are never reused in
 * a scope, and only the range's publisher got these.  NVB_FETCH_EXPECT_UID
 * only keeps other users' entries of the name out of the way.  An importer
 * in a user namespace that does not map the publisher (a container sharing
 * the IPC namespace) sees its uid as the overflow uid, which names nobody
 * (-EINVAL) or somebody else: it fetches without the flag, as it fetched
 * name itself, and the id check alone decides (a squatter visible to it can
 * make the import fail, -ENOTUNIQ or -ESTALE, never hand it a file).
 */
static int fetch_chunks(struct nvb *h, const char *name, const struct nvb_entry *ent,
			const uint64_t *ids, int n, int *fds)
{
	char cname[NVB_NAME_MAX];
	struct nvb_fetch_opts fo;
	struct nvb_entry ce;
	int i, err;

	memset(&fo, 0, sizeof(fo));
	fo.sz = sizeof(fo);
	if (ent->uid != overflow_uid()) {
		fo.flags = NVB_FETCH_EXPECT_UID;
		fo.expect_uid = ent->uid;
	}
	for (i = 1; i < n; i++) {
		err = chunk_name(cname, name, (unsigned int)i);
		if (err)
			return nvb_gpu_seterr(-EINVAL, "range metadata names more chunks than a name can carry");
		if (!ids[i])
			return nvb_gpu_seterr(-EINVAL, "range metadata: chunk without an entry id");
		memset(&ce, 0, sizeof(ce));
		err = nvb_fetch(h, cname, &fo, NULL, 0, &ce, &fds[i]);
		if (err < 0)
			return nvb_gpu_seterr(err, nvb_last_error(h));
		if (ce.id != ids[i] || fds[i] < 0) {
			char msg[160];

			if (ce.id != ids[i])
				snprintf(msg, sizeof(msg), "%s is entry %llu, not the %llu that %s names (republished?)",
					 cname, (unsigned long long)ce.id, (unsigned long long)ids[i], name);
			else
				snprintf(msg, sizeof(msg), "%s (entry %llu) holds no file: it is no allocation of %s",
					 cname, (unsigned long long)ce.id, name);
			return nvb_gpu_seterr(-ESTALE, msg);
		}
	}
	return 0;
}

/* A fetched entry's import: its own fd for chunk 0, its chunk entries' for the rest. */
int nvb_gpu_import_entry(struct nvb_gpu *g, struct nvb *h, const char *name, const struct nvb_entry *ent,
			int fd, const void *blob, uint32_t flags, struct nvb_gpu_map **out)
{
	uint64_t *ids;
	int *fds, n, i, err;

	n = nvb_gpu_range_ids(blob, ent->blob_len, NULL, 0);
	if (n <= 1)	/* one fd (or none): the entry is all there is; bad blobs fail in the import */
		return nvb_gpu_import_fd_in(g, h->serial, ent->id, fd, blob, ent->blob_len, flags, out);
	ids = calloc((size_t)n, sizeof(*ids));
	fds = malloc((size_t)n * sizeof(*fds));
	if (!ids || !fds) {
		free(ids);
		free(fds);
		return nvb_gpu_seterr(-ENOMEM, "nvb_gpu_import: out of memory");
	}
	for (i = 0; i < n; i++)
		fds[i] = -1;
	fds[0] = fd;
	nvb_gpu_range_ids(blob, ent->blob_len, ids, (unsigned int)n);
	err = fetch_chunks(h, name, ent, ids, n, fds);
	if (!err)
		err = nvb_gpu_import_fds(g, h->serial, ent->id, fds, (unsigned int)n, blob, ent->blob_len,
					 flags, out);
	for (i = 1; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(ids);
	free(fds);
	return err;
}

/*
 * The import of name through h: from the cache when an earlier import of
 * name found a live entry of a publisher this one accepts (owner: when
 * expect), else watch, fetch (owner-checked by the backend when expect)
 * and import.
 */
static int import_name(struct nvb_gpu *g, struct nvb *h, const char *name, int64_t timeout_ns,
		       uint32_t flags, bool expect, uint32_t owner, struct nvb_gpu_map **out)
{
	unsigned char small[512], *blob = small;
	struct nvb_fetch_opts fo;
	struct nvb_entry ent;
	uint64_t id, wid;
	uint32_t uid = 0;
	int fd = -1, err;

	/* a handle per job must not leave a mapping per job behind */
	nvb_gpu_drop_closed(g, nvb_handle_closes(), nvb_serial_live);
	if (events_pending(h)) {
		err = nvb_gpu_poll_events(g, h);
		if (err < 0)
			return err;
	}
	id = names_lookup(g, h, name, &uid);
	if (id && (!expect || uid == owner) && nvb_gpu_import_cached_in(g, h->serial, id, flags, out) == 0)
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
	if (expect) {
		fo.flags |= NVB_FETCH_EXPECT_UID;
		fo.expect_uid = owner;
	}
	memset(&ent, 0, sizeof(ent));
	err = nvb_fetch(h, name, &fo, blob, sizeof(small), &ent, &fd);
	if (err == -EMSGSIZE && ent.blob_len > sizeof(small)) {
		/* a range over many allocations: fetch again with room (the entry is there now) */
		size_t cap = ent.blob_len;

		blob = malloc(cap);
		if (!blob) {
			err = -ENOMEM;
			blob = small;
		} else {
			fo.flags &= ~NVB_FETCH_WAIT;
			fo.timeout_ns = 0;
			err = nvb_fetch(h, name, &fo, blob, cap, &ent, &fd);
		}
	}
	if (err < 0) {
		if (wid)
			names_set(g, name, 0, 0, h, wid);	/* keep the watch known */
		if (blob != small)
			free(blob);
		return nvb_gpu_seterr(err, err == -ENOMEM ? "nvb_gpu_import: out of memory" :
				      nvb_last_error(h));
	}
	err = nvb_gpu_import_entry(g, h, name, &ent, fd, blob, flags, out);
	if (fd >= 0)
		close(fd);
	if (blob != small)
		free(blob);
	names_set(g, name, err ? 0 : ent.id, ent.uid, h, wid);
	return err;
}

int nvb_gpu_import(struct nvb_gpu *g, struct nvb *h, const char *name,
		   int64_t timeout_ns, uint32_t flags, struct nvb_gpu_map **out)
{
	*out = NULL;
	if (!name)
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_import: name is NULL");
	return import_name(g, h, name, timeout_ns, flags, false, 0, out);
}

int nvb_gpu_import_with(struct nvb_gpu *g, struct nvb *h, const char *name,
			const struct nvb_gpu_import_opts *opts, struct nvb_gpu_map **out)
{
	struct nvb_gpu_import_opts o = { .sz = sizeof(o) };
	const uint32_t owner_flags = NVB_GPU_IMPORT_OWNER_UID | NVB_GPU_IMPORT_ANY_OWNER;
	int err;

	if (!out)
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_import_with: out is NULL");
	*out = NULL;
	if (!g || !h || !name)
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_import_with: NULL handle or name");
	if (opts) {
		err = nvb_gpu_opts_in("nvb_gpu_import_with", &o, sizeof(o), opts,
				      offsetof(struct nvb_gpu_import_opts, flags) + sizeof(uint32_t));
		if (err)
			return err;
	}
	if (o.flags & ~(owner_flags | NVB_GPU_IMPORT_NO_FABRIC | NVB_GPU_IMPORT_LOCAL_ONLY))
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_import_with: unknown flags");
	if ((o.flags & owner_flags) == owner_flags)
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_import_with: OWNER_UID and ANY_OWNER together");
	if (!(o.flags & NVB_GPU_IMPORT_OWNER_UID) && o.owner_uid)
		return nvb_gpu_seterr(-EINVAL, "nvb_gpu_import_with: owner_uid without OWNER_UID");
	return import_name(g, h, name, o.timeout_ns, o.flags & ~owner_flags,
			   !(o.flags & NVB_GPU_IMPORT_ANY_OWNER),
			   (o.flags & NVB_GPU_IMPORT_OWNER_UID) ? o.owner_uid : (uint32_t)geteuid(), out);
}
