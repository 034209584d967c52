// SPDX-License-Identifier: MIT
#include "nvbridged.h"

/* ---- access ---- */
bool in_groups(const struct client *c, gid_t g)
{
	if (c->egid == g)
		return true;
	for (int i = 0; i < c->ngroups; i++)
		if (c->groups[i] == g)
			return true;
	return false;
}

bool may_use(const struct client *c, const struct entry *e)
{
	if (c->euid == e->euid)
		return true;
	switch (e->access) {
	case NVBRIDGE_ACCESS_SCOPE:
		return true;
	case NVBRIDGE_ACCESS_GROUP:
		if (in_groups(c, e->egid))
			return true;
		break;
	case NVBRIDGE_ACCESS_UID:
		if (c->euid == e->puid)
			return true;
		break;
	case NVBRIDGE_ACCESS_GID:
		if (in_groups(c, e->pgid))
			return true;
		break;
	}
	return c->cap_ipc_owner;
}

bool same_scope(const struct client *c, const struct entry *e)
{
	return c->ipc_dev == e->ipc_dev && c->ipc_ino == e->ipc_ino;
}

struct entry *find_entry(const struct client *c, const char *name)
{
	for (struct entry *e = entries; e; e = e->next)
		if (same_scope(c, e) && !strcmp(e->name, name))
			return e;
	return NULL;
}


/* ---- entries ---- */
void entry_free(struct entry *e)
{
	if (e->fd >= 0)
		close(e->fd);
	free(e->blob);
	free(e);
}

void entry_revoke(struct entry *e, uint16_t reason, const struct client *skip)
{
	struct entry **pp;

	for (pp = &entries; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			if (entries_tail == &e->next)
				entries_tail = pp;
			break;
		}
	notify(e, NVBRIDGE_EVENT_REVOKED, reason, skip);
	entry_free(e);
}

/* ---- argument handling ---- */
/* copy_struct_from_user semantics on a received struct */
int get_struct(void *dst, size_t ksize, size_t ver0, const void *src, uint32_t usize)
{
	if (usize < ver0)
		return -EINVAL;
	if (usize > NVBRIDGE_WIRE_ARG_MAX)
		return -E2BIG;
	memset(dst, 0, ksize);
	memcpy(dst, src, usize < ksize ? usize : ksize);
	for (size_t i = ksize; i < usize; i++)
		if (((const unsigned char *)src)[i])
			return -E2BIG;
	return 0;
}

int check_name(const char *n, bool prefix)
{
	size_t len = strnlen(n, NVBRIDGE_NAME_MAX);

	if (len == NVBRIDGE_NAME_MAX)
		return -EINVAL;
	if (len == 0 && !prefix)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = n[i];

		if (!isalnum(ch) && ch != '.' && ch != '_' && ch != ':' && ch != '/' && ch != '-')
			return -EINVAL;
	}
	return 0;
}

uint32_t user_entries(uid_t euid)
{
	uint32_t n = 0;

	for (struct entry *e = entries; e; e = e->next)
		n += e->euid == euid;
	return n;
}

/*
 * Is fd a file whose publication could make a reference cycle?  An
 * nvbridge device file, an io_uring (it can hold registered files), or any
 * AF_UNIX socket: one could carry a broker connection (or the entry's own
 * file) in flight, so the module refuses them all and so do we.
 */
bool refused_file(int fd)
{
	char link[64], path[64];
	struct stat st;
	ssize_t n;

	if (fstat(fd, &st))
		return true;
	if (st.st_dev == anon_dev) {
		/* an anonymous-inode file: is it an io_uring? */
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = 0;
			if (!strcmp(link, "anon_inode:[io_uring]"))
				return true;
		}
	}
	if (S_ISCHR(st.st_mode) && nvbridge_rdev && st.st_rdev == nvbridge_rdev)
		return true;
	if (S_ISSOCK(st.st_mode)) {
		int dom = -1;
		socklen_t dl = sizeof(dom);

		if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &dl) || dom == AF_UNIX)
			return true;
	}
	return false;
}

/* ---- commands ---- */
int do_publish(struct client *c, struct nvbridge_publish *p, const void *data,
		      uint32_t data_len, int *fdp)
{
	struct entry *e;
	int64_t puid = 0, pgid = 0;
	int ret;

	if (p->flags || p->__reserved)
		return -EINVAL;
	ret = check_name(p->name, false);
	if (ret)
		return ret;
	if (p->access > NVBRIDGE_ACCESS_MAX)
		return -EINVAL;
	if (p->access == NVBRIDGE_ACCESS_UID) {
		puid = map_from(&c->uidmap, p->uid);
		if (puid < 0 || p->gid)
			return -EINVAL;
	} else if (p->access == NVBRIDGE_ACCESS_GID) {
		pgid = map_from(&c->gidmap, p->gid);
		if (pgid < 0 || p->uid)
			return -EINVAL;
	} else if (p->uid || p->gid) {
		return -EINVAL;
	}
	if (p->blob_len > cfg.max_blob_size)
		return -EMSGSIZE;
	if (p->blob_len && !p->blob)
		return -EFAULT;
	if (data_len != p->blob_len)
		return -EFAULT;	/* the bytes did not come: like an unreadable pointer */
	if (p->fd != NVBRIDGE_NO_FD) {
		if (p->fd < 0 || *fdp < 0)
			return -EBADF;
		/* fget() does not take O_PATH files: the module says -EBADF */
		if (fcntl(*fdp, F_GETFL) & O_PATH)
			return -EBADF;
		if (refused_file(*fdp))
			return -EINVAL;
	}
	if (find_entry(c, p->name))
		return -EEXIST;
	if (user_entries(c->euid) >= cfg.max_entries_per_user)
		return -EDQUOT;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	if (p->blob_len) {
		e->blob = malloc(p->blob_len);
		if (!e->blob) {
			free(e);
			return -ENOMEM;
		}
		memcpy(e->blob, data, p->blob_len);
	}
	e->blob_len = p->blob_len;
	e->id = next_entry_id++;
	memcpy(e->name, p->name, NVBRIDGE_NAME_MAX);
	e->ipc_dev = c->ipc_dev;
	e->ipc_ino = c->ipc_ino;
	e->owner = c;
	e->fd = p->fd == NVBRIDGE_NO_FD ? -1 : *fdp;
	if (e->fd >= 0)
		*fdp = -1;	/* the entry keeps it */
	e->access = p->access;
	e->puid = (uid_t)puid;
	e->pgid = (gid_t)pgid;
	e->euid = c->euid;
	e->egid = c->egid;
	e->next = NULL;
	*entries_tail = e;
	entries_tail = &e->next;
	p->id = e->id;
	notify(e, NVBRIDGE_EVENT_PUBLISHED, NVBRIDGE_REVOKE_NONE, NULL);
	return 0;
}

void fetch_reply(struct client *c, uint32_t seq, uint32_t size,
			struct nvbridge_fetch *f, struct entry *e)
{
	uint32_t asz = size < sizeof(*f) ? size : (uint32_t)sizeof(*f);

	if (!may_use(c, e)) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, seq, -EACCES, NULL, 0, NULL, 0, -1);
		return;
	}
	/* FETCH_EXPECT_UID (validated in do_fetch): after -EACCES, with or without WAIT */
	if ((f->flags & NVBRIDGE_FETCH_EXPECT_UID) &&
	    map_from(&c->uidmap, f->expect_uid) != (int64_t)e->euid) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, seq, -EPERM, NULL, 0, NULL, 0, -1);
		return;
	}
	f->blob_len = e->blob_len;
	f->id = e->id;
	f->pid = pid_for(c, e->owner);
	f->uid = map_to(&c->uidmap, e->euid, overflowuid);
	f->gid = map_to(&c->gidmap, e->egid, overflowgid);
	f->access = e->access;
	f->entry_flags = (e->fd >= 0 ? NVBRIDGE_ENTRY_HAS_FD : 0) |
			 (e->owner == c ? NVBRIDGE_ENTRY_OWN : 0);
	if (f->blob_cap < e->blob_len) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, seq, -EMSGSIZE, f, asz, NULL, 0, -1);
		return;
	}
	reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, seq, 0, f, asz, e->blob, e->blob_len, e->fd);
}

void waiter_free(struct client *c, struct waiter *w)
{
	struct waiter **pp;

	for (pp = &c->waiters; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	c->nwaiters--;
	total_waiters--;
	free(w);
}

void wake_waiters(struct entry *e)
{
	for (struct client *c = clients; c; c = c->next) {
		struct waiter *w, *nx;

		if (!c->hello || c->dead || !same_scope(c, e))
			continue;
		for (w = c->waiters; w; w = nx) {
			nx = w->next;
			if (strcmp(w->f.name, e->name))
				continue;
			fetch_reply(c, w->seq, w->size, &w->f, e);
			waiter_free(c, w);
		}
	}
}

void do_fetch(struct client *c, uint32_t seq, uint32_t size, struct nvbridge_fetch *f)
{
	struct entry *e;
	int ret = 0;

	if (f->flags & ~NVBRIDGE_FETCH_FLAGS_ALL)
		ret = -EINVAL;
	else if (!(f->flags & NVBRIDGE_FETCH_EXPECT_UID) && f->expect_uid)
		ret = -EINVAL;
	else if ((f->flags & NVBRIDGE_FETCH_EXPECT_UID) && map_from(&c->uidmap, f->expect_uid) < 0)
		ret = -EINVAL;	/* not mapped in the caller's user ns */
	else
		ret = check_name(f->name, false);
	if (!ret && f->blob_cap && !f->blob)
		ret = -EFAULT;
	if (ret) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, seq, ret, NULL, 0, NULL, 0, -1);
		return;
	}
	e = find_entry(c, f->name);
	if (e) {
		fetch_reply(c, seq, size, f, e);
		return;
	}
	if (!(f->flags & NVBRIDGE_FETCH_WAIT)) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, seq, -ENOENT, NULL, 0, NULL, 0, -1);
		return;
	}
	if (f->timeout_ns == 0) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, seq, -ETIMEDOUT, NULL, 0, NULL, 0, -1);
		return;
	}
	if (c->nwaiters >= MAX_WAITERS) {
		drop_client(c, "more than %d waiting FETCHes", MAX_WAITERS);
		return;
	}
	struct waiter *w = calloc(1, sizeof(*w));

	if (!w) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, seq, -ENOMEM, NULL, 0, NULL, 0, -1);
		return;
	}
	w->seq = seq;
	w->size = size;
	w->f = *f;
	{
		/* as the module (ktime clamp): a huge timeout saturates, no overflow */
		int64_t now = now_ns();

		w->deadline = f->timeout_ns < 0 ? -1 :
			      f->timeout_ns > INT64_MAX - now ? INT64_MAX : now + f->timeout_ns;
	}
	w->next = c->waiters;
	c->waiters = w;
	c->nwaiters++;
	total_waiters++;
}

int do_unpublish(struct client *c, struct nvbridge_unpublish *u)
{
	struct entry *e = NULL;

	if (u->flags)
		return -EINVAL;
	if (u->id) {
		for (e = entries; e; e = e->next)
			if (e->id == u->id && same_scope(c, e))
				break;
	} else {
		int ret = check_name(u->name, false);

		if (ret)
			return ret;
		e = find_entry(c, u->name);
	}
	if (!e)
		return -ENOENT;
	if (e->owner != c)
		return -EPERM;
	entry_revoke(e, NVBRIDGE_REVOKE_UNPUBLISHED, NULL);
	return 0;
}


void do_list(struct client *c, uint32_t seq, uint32_t size, struct nvbridge_list *l)
{
	uint32_t asz = size < sizeof(*l) ? size : (uint32_t)sizeof(*l);
	static unsigned char buf[NVBRIDGE_WIRE_DATA_MAX];
	uint32_t n = 0, max;

	if (l->flags) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_LIST, seq, -EINVAL, NULL, 0, NULL, 0, -1);
		return;
	}
	if (l->entry_size < NVBRIDGE_ENTRY_INFO_SIZE_VER0) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_LIST, seq, -EINVAL, NULL, 0, NULL, 0, -1);
		return;
	}
	if (l->count && !l->entries) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_LIST, seq, -EFAULT, NULL, 0, NULL, 0, -1);
		return;
	}
	max = l->entry_size > sizeof(buf) ? 0 : (uint32_t)(sizeof(buf) / l->entry_size);
	if (max > l->count)
		max = l->count;
	for (struct entry *e = entries; e && n < max; e = e->next) {
		struct nvbridge_entry_info r;
		unsigned char *dst = buf + (size_t)n * l->entry_size;

		if (e->id <= l->cursor || !same_scope(c, e) || !may_use(c, e))
			continue;
		memset(&r, 0, sizeof(r));
		r.id = e->id;
		r.pid = pid_for(c, e->owner);
		r.uid = map_to(&c->uidmap, e->euid, overflowuid);
		r.gid = map_to(&c->gidmap, e->egid, overflowgid);
		r.access = e->access;
		r.blob_len = e->blob_len;
		r.flags = (e->fd >= 0 ? NVBRIDGE_ENTRY_HAS_FD : 0) |
			  (e->owner == c ? NVBRIDGE_ENTRY_OWN : 0);
		memcpy(r.name, e->name, NVBRIDGE_NAME_MAX);
		memset(dst, 0, l->entry_size);
		memcpy(dst, &r, l->entry_size < sizeof(r) ? l->entry_size : sizeof(r));
		l->cursor = e->id;
		n++;
	}
	l->count = n;
	reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_LIST, seq, (int32_t)n, l, asz, buf,
	      n * l->entry_size, -1);
}

void fill_info(struct client *c, struct nvbridge_info *i)
{
	uint32_t n = 0;

	i->abi_version = NVBRIDGE_ABI_VERSION;
	i->name_max = NVBRIDGE_NAME_MAX;
	i->max_blob_size = cfg.max_blob_size;
	i->max_entries_per_user = cfg.max_entries_per_user;
	i->max_events = cfg.max_events;
	i->max_watches = cfg.max_watches;
	if (c) {
		for (struct entry *e = entries; e; e = e->next)
			n += same_scope(c, e);
		i->entries = n;
		i->user_entries = user_entries(c->euid);
	}
}
