// SPDX-License-Identifier: MIT
/*
 * nvbridged: entries, access, FETCH waiters.
 *
 * An entry's identity is (scope, publisher euid, name) (contract C3); an
 * entry the caller may not use does not exist for it (C2).  Entries sit in
 * their scope's list in id order (LIST, per-scope ids: C8) and in a hash
 * table by (scope, name); parked FETCH_WAITs sit in a hash table by (scope,
 * name), so a PUBLISH wakes only the waiters of its name, and in a heap by
 * deadline, so the loop never walks them.
 */
#include "nvbridged.h"
#include "nvb_name.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static struct scope *scopes;
static struct hnode *ebucket0[4096], *wbucket0[4096];
static struct htable etab = HTABLE(ebucket0), wtab = HTABLE(wbucket0);
static struct waiter **heap;
static size_t heap_len, heap_cap;
static unsigned int total_waiters;

/* ---- scopes ---- */
/*
 * A scope is an IPC namespace, named by its nsfs inode.  Inode numbers of
 * dead namespaces are handed out again, so the scope holds an fd of its
 * namespace for as long as it lives: otherwise a connection kept open
 * after its namespace died would share a scope with the next namespace to
 * get that number (another user's container).  Takes nsfd (an open ns/ipc
 * file) in every case.
 */
struct scope *scope_get(int nsfd)
{
	struct scope *s;
	struct stat st;

	if (fstat(nsfd, &st)) {
		close(nsfd);
		return NULL;
	}
	for (s = scopes; s; s = s->next)
		if (s->dev == st.st_dev && s->ino == st.st_ino) {
			s->refs++;
			close(nsfd);
			return s;
		}
	s = calloc(1, sizeof(*s));
	if (!s) {
		close(nsfd);
		return NULL;
	}
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->nsfd = nsfd;
	s->refs = 1;
	s->next_id = 1;
	s->tail = &s->entries;
	s->next = scopes;
	scopes = s;
	return s;
}

void scope_put(struct scope *s)
{
	struct scope **pp;

	if (!s || --s->refs)
		return;
	for (pp = &scopes; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	close(s->nsfd);
	free(s);
}

/*
 * Keyed (hash.c): which names share a bucket is nobody's to compute.  Its
 * low 32 bits, and the bucket from their low bits: a pseudorandom
 * function's bits are each as good as any.
 */
uint32_t name_hash(const struct scope *s, const char *name, size_t len)
{
	struct khash st;

	name_hash_start(&st, s);
	for (size_t i = 0; i < len; i++)
		khash_byte(&st, (uint8_t)name[i]);
	return (uint32_t)khash_end(&st);
}

/* ---- access ---- */
/*
 * Whether g is among c's supplementary gids, sorted and each once
 * (ident.c): a bisection, where a scan cost each may_use() 65,536 steps
 * for a caller holding NGROUPS_MAX gids (attack_many_gids).
 */
bool client_in_groups(const struct client *c, gid_t g)
{
	int lo = 0, hi = c->ngroups;

	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;

		if (c->groups[mid] == g)
			return true;
		if (c->groups[mid] < g)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

static bool in_groups(const struct client *c, gid_t g)
{
	return c->egid == g || client_in_groups(c, g);
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
	return c->override;
}

/*
 * The entries of f->name that c may use (and, with EXPECT_UID, that
 * expect_uid published): how many (0, 1, or 2 for "more"), *one = the one.
 */
static int resolve(const struct client *c, const struct nvbridge_fetch *f, struct entry **one)
{
	size_t len = strnlen(f->name, NVBRIDGE_NAME_MAX);
	uint32_t h = name_hash(c->scope, f->name, len);
	int64_t want = -1;
	int n = 0;

	if (f->flags & NVBRIDGE_FETCH_EXPECT_UID)
		want = map_from(&c->uidmap, f->expect_uid);
	*one = NULL;
	for (struct hnode *x = htable_chain(&etab, h); x; x = x->next) {
		struct entry *e = container_of(x, struct entry, hn);

		if (x->hash != h || e->scope != c->scope || strcmp(e->name, f->name))
			continue;
		if ((want >= 0 && e->euid != (uid_t)want) || !may_use(c, e))
			continue;
		*one = e;
		if (++n == 2)
			break;
	}
	return n;
}

static struct entry *find_own(const struct client *c, const char *name)
{
	uint32_t h = name_hash(c->scope, name, strlen(name));

	for (struct hnode *x = htable_chain(&etab, h); x; x = x->next) {
		struct entry *e = container_of(x, struct entry, hn);

		if (x->hash == h && e->scope == c->scope && e->euid == c->euid &&
		    !strcmp(e->name, name))
			return e;
	}
	return NULL;
}

/* ---- entries ---- */
void entry_put(struct entry *e)
{
	if (--e->refs)
		return;
	/*
	 * Its kind was found at PUBLISH: a small memory-backed file's close
	 * cannot block nor take long, so it is closed here, with no record
	 * looked up for it; any other goes to a closer, and its publisher's
	 * uid and tenant pay for that close, as they paid for the entry.
	 */
	if (e->fd >= 0 && e->fd_kind == FD_KIND_MEMORY && fd_cheap_close(e->fd, true))
		close(e->fd);
	else if (e->fd >= 0)
		closer_queue(e->fd, user_get(e->euid), tenant_get(e->tuid));
	free(e->blob);
	mem_uncharge(sizeof(*e) + e->blob_len);
	scope_put(e->scope);
	free(e);
}

static void entry_revoke(struct entry *e, uint16_t reason, const struct client *skip)
{
	struct client *o = e->owner;

	visible_del(e);
	*e->pprev = e->next;
	if (e->next)
		e->next->pprev = e->pprev;
	else
		e->scope->tail = e->pprev;
	htable_del(&etab, &e->hn);
	*e->opprev = e->onext;
	if (e->onext)
		e->onext->opprev = e->opprev;
	else
		o->owned_tail = e->opprev;
	e->owner->user->entries--;
	e->owner->user->bytes -= e->blob_len;
	e->owner->tenant->bytes -= e->blob_len;
	e->revoked = true;
	notify(e, NVBRIDGE_EVENT_REVOKED, reason, skip);
	entry_put(e);
}

/*
 * A memory-backed regular file (memfd, tmpfs/shmem, hugetlbfs: the only
 * regular files that may be published, and ones whose close never waits
 * for anybody, no ->flush) small enough to close on the loop; statx
 * (AT_STATX_DONT_SYNC) and F_GET_SEALS are both answered from the inode,
 * neither asks the file's file system.  Its close cannot block, but when
 * ours is the last reference it frees every page
 * (about 150 ms a GiB): a client that sends a large memfd and closes its
 * own copy would stall the loop at will (attack_memfd_last_close).  So
 * only files of at most LOOP_CLOSE_MAX allocated bytes are closed here;
 * larger ones go to a closer, charged to who sent them.  The size is
 * asked when the file is closed (it may have grown since PUBLISH), from
 * the inode (AT_STATX_DONT_SYNC: shmem and hugetlbfs answer without I/O).
 */
#define LOOP_CLOSE_MAX (4ull << 20)
bool fd_cheap_close(int fd, bool known_memory)
{
	struct statx stx;

	/* an entry's file: its kind is known, its size is all that is asked */
	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC,
		  known_memory ? STATX_BLOCKS : STATX_TYPE | STATX_BLOCKS, &stx) ||
	    !(stx.stx_mask & STATX_BLOCKS) || stx.stx_blocks * 512 > LOOP_CLOSE_MAX)
		return false;
	return known_memory || (S_ISREG(stx.stx_mode) && fcntl(fd, F_GET_SEALS) >= 0);
}

/*
 * What may be published (contract C7): memory-backed regular files (memfd,
 * MFD_HUGETLB memfd, files of tmpfs, devtmpfs and hugetlbfs), dma-bufs, and
 * character devices whose major is allowed.  Nothing here may ask the
 * file's file system anything: a FUSE server could sit on the request and
 * stall the loop (no fstat, no fstatfs: fuse_statfs asks the server).
 *
 * The type comes from statx with AT_STATX_DONT_SYNC, which answers from
 * the inode.  A regular file is memory-backed iff F_GET_SEALS succeeds on
 * it: memfd_fcntl() answers from the inode's seals for a shmem file
 * (shmem_mapping(), what the module tests) or a hugetlbfs file
 * (is_file_hugepages()) and fails with EINVAL for every other file, without
 * calling into the file system and whether or not the file was made with
 * MFD_ALLOW_SEALING (tmpfs files and unsealable memfds answer F_SEAL_SEAL).
 * So the kernel decides, by the file's address_space operations, which no
 * path or name can fake: not the /proc/self/fd link (a FUSE mount at
 * "/memfd:x" gives a FUSE file the link of a memfd), nor mountinfo (the
 * mount of a client in another mount namespace is not in ours, and
 * memfds' internal mount is in none).  The type check comes first: a
 * tmpfs directory, FIFO or devtmpfs device node has a shmem mapping too,
 * and F_GET_SEALS answers for it (the module tests S_ISREG first as well).
 * Every other regular file (FUSE,
 * NFS, 9p, overlayfs, ramfs, disk file systems) is refused: an importer
 * handed an attacker's FUSE file would hang, unkillable, on its last
 * close, waiting for a FLUSH answer the attacker never sends.
 *
 * An anonymous inode (statx type 0) is a dma-buf when its /proc/self/fd
 * link, which the kernel builds from the dentry name, says so.
 *
 * Returns the file's enum fd_kind, or -errno when it may not be published.
 */
static int classify_fd(int fd)
{
	struct statx stx;
	int fl = fcntl(fd, F_GETFL);
	char path[64], link[64];
	ssize_t n;

	if (fl < 0 || (fl & O_PATH))
		return -EBADF;	/* fget() does not take O_PATH files: the module says -EBADF */
	/*
	 * The fd is open: a file system that will not describe it (FUSE
	 * refuses a caller outside its mount's user namespace, -EACCES) has
	 * no memory-backed file, and the module would say -EINVAL.
	 */
	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE, &stx))
		return -EINVAL;
	switch (stx.stx_mode & S_IFMT) {
	case S_IFREG:
		return fcntl(fd, F_GET_SEALS) < 0 ? -EINVAL : FD_KIND_MEMORY;
	case S_IFCHR:
		for (uint32_t i = 0; i < cfg.nchrdev_majors; i++)
			if (stx.stx_rdev_major == cfg.chrdev_majors[i])
				return FD_KIND_CHRDEV;
		return -EINVAL;
	case 0:
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = 0;
			if (!strncmp(link, "/dmabuf:", 8))
				return FD_KIND_DMABUF;
		}
		return -EINVAL;
	default:
		return -EINVAL;
	}
}

static void wake_waiters(struct entry *e);

int do_publish(struct client *c, struct nvbridge_publish *p, const void *data,
	       uint32_t data_len, int *fdp)
{
	struct entry *e;
	int64_t puid = 0, pgid = 0;
	int ret, kind = FD_KIND_NONE;

	if (p->flags || p->__reserved)
		return -EINVAL;
	ret = nvb_name_valid(p->name, false);
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
		kind = classify_fd(*fdp);
		if (kind < 0)
			return kind;
	}
	if (find_own(c, p->name))
		return -EEXIST;
	if (c->user->entries >= cfg.max_entries_per_user ||
	    c->user->bytes + p->blob_len > cfg.max_bytes_per_user ||
	    c->tenant->bytes + p->blob_len > cfg.max_bytes_per_tenant)
		return -ENOSPC;
	if (!mem_charge(sizeof(*e) + p->blob_len))
		return -ENOMEM;
	e = calloc(1, sizeof(*e));
	if (e && p->blob_len) {
		e->blob = malloc(p->blob_len);
		if (!e->blob) {
			free(e);
			e = NULL;
		}
	}
	if (!e) {
		mem_uncharge(sizeof(*e) + p->blob_len);
		return -ENOMEM;
	}
	if (p->blob_len)
		memcpy(e->blob, data, p->blob_len);
	e->refs = 1;
	e->blob_len = p->blob_len;
	e->scope = c->scope;
	c->scope->refs++;
	e->id = c->scope->next_id++;
	memcpy(e->name, p->name, NVBRIDGE_NAME_MAX);
	e->hn.hash = name_hash(c->scope, e->name, strlen(e->name));
	e->owner = c;
	e->fd = p->fd == NVBRIDGE_NO_FD ? -1 : *fdp;
	if (e->fd >= 0)
		*fdp = -1;	/* the entry keeps it */
	e->fd_kind = (uint8_t)kind;
	e->access = p->access;
	e->puid = (uid_t)puid;
	e->pgid = (gid_t)pgid;
	e->euid = c->euid;
	e->egid = c->egid;
	e->tuid = c->tenant_uid;
	if (visible_add(e)) {
		if (e->fd >= 0)
			*fdp = e->fd;	/* the caller's again, closed with the message */
		scope_put(e->scope);
		free(e->blob);
		mem_uncharge(sizeof(*e) + p->blob_len);
		free(e);
		return -ENOMEM;
	}
	e->pprev = c->scope->tail;
	*c->scope->tail = e;
	c->scope->tail = &e->next;
	htable_add(&etab, &e->hn);
	if (!c->owned_tail)
		c->owned_tail = &c->owned;
	e->opprev = c->owned_tail;
	*c->owned_tail = e;
	c->owned_tail = &e->onext;
	c->user->entries++;
	c->user->bytes += e->blob_len;
	c->tenant->bytes += e->blob_len;
	p->id = e->id;
	notify(e, NVBRIDGE_EVENT_PUBLISHED, NVBRIDGE_REVOKE_NONE, NULL);
	wake_waiters(e);
	return 0;
}

static void fetch_reply(struct client *c, uint32_t seq, uint32_t size,
			struct nvbridge_fetch *f, struct entry *e)
{
	uint32_t asz = size < sizeof(*f) ? size : (uint32_t)sizeof(*f);

	f->blob_len = e->blob_len;
	f->id = e->id;
	f->pid = pid_for(c, e->owner);
	f->uid = map_to(&c->uidmap, e->euid, overflowuid);
	f->gid = map_to(&c->gidmap, e->egid, overflowgid);
	f->access = e->access;
	f->entry_flags = (e->fd >= 0 ? NVBRIDGE_ENTRY_HAS_FD : 0) |
			 (e->owner == c ? NVBRIDGE_ENTRY_OWN : 0);
	if (f->blob_cap < e->blob_len) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, seq, -EMSGSIZE, f, asz, NULL, 0, NULL);
		return;
	}
	reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, seq, 0, f, asz, e->blob, e->blob_len,
	      e->fd >= 0 ? e : NULL);
}

/* ---- waiters: by name, and by deadline in a binary heap ---- */
static bool heap_less(size_t a, size_t b)
{
	return heap[a]->deadline < heap[b]->deadline;
}

static void heap_swap(size_t a, size_t b)
{
	struct waiter *t = heap[a];

	heap[a] = heap[b];
	heap[b] = t;
	heap[a]->heap_idx = a;
	heap[b]->heap_idx = b;
}

static void heap_fix(size_t i)
{
	while (i && heap_less(i, (i - 1) / 2)) {
		heap_swap(i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < heap_len && heap_less(l, m))
			m = l;
		if (r < heap_len && heap_less(r, m))
			m = r;
		if (m == i)
			break;
		heap_swap(i, m);
		i = m;
	}
}

static int heap_add(struct waiter *w)
{
	if (heap_len == heap_cap) {
		size_t cap = heap_cap ? 2 * heap_cap : 256;
		struct waiter **n = realloc(heap, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		heap = n;
		heap_cap = cap;
	}
	w->heap_idx = heap_len;
	heap[heap_len++] = w;
	heap_fix(w->heap_idx);
	return 0;
}

static void heap_del(struct waiter *w)
{
	size_t i = w->heap_idx;

	if (i == SIZE_MAX)
		return;
	heap_len--;
	if (i != heap_len) {
		heap[i] = heap[heap_len];
		heap[i]->heap_idx = i;
		heap_fix(i);
	}
	w->heap_idx = SIZE_MAX;
}

static void waiter_free(struct waiter *w)
{
	struct client *c = w->c;
	struct waiter **pp;

	htable_del(&wtab, &w->hn);
	heap_del(w);
	for (pp = &c->waiters; *pp; pp = &(*pp)->cnext)
		if (*pp == w) {
			*pp = w->cnext;
			break;
		}
	c->nwaiters--;
	c->user->waiters--;
	c->tenant->waiters--;
	total_waiters--;
	mem_uncharge(sizeof(*w));
	free(w);
}

static void wake_waiters(struct entry *e)
{
	struct hnode *x, *nx;

	for (x = htable_chain(&wtab, e->hn.hash); x; x = nx) {
		struct waiter *w = container_of(x, struct waiter, hn);
		struct entry *one;
		int n;

		nx = x->next;
		if (x->hash != e->hn.hash || w->c->scope != e->scope || w->c->dead ||
		    strcmp(w->f.name, e->name))
			continue;
		n = resolve(w->c, &w->f, &one);
		if (n == 0)
			continue;	/* not one it may use: it keeps waiting (C2) */
		if (n == 1)
			fetch_reply(w->c, w->seq, w->size, &w->f, one);
		else
			reply(w->c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, w->seq, -ENOTUNIQ,
			      NULL, 0, NULL, 0, NULL);
		waiter_free(w);
	}
}

void waiter_cancel(struct client *c, uint32_t seq)
{
	for (struct waiter *w = c->waiters; w; w = w->cnext)
		if (w->seq == seq) {
			reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, w->seq, -EINTR,
			      NULL, 0, NULL, 0, NULL);
			waiter_free(w);
			return;
		}
}

void waiters_expire(int64_t now)
{
	while (heap_len && heap[0]->deadline <= now) {
		struct waiter *w = heap[0];

		reply(w->c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, w->seq, -ETIMEDOUT,
		      NULL, 0, NULL, 0, NULL);
		waiter_free(w);
	}
}

int64_t waiters_next_deadline(void)
{
	return heap_len ? heap[0]->deadline : -1;
}

static int park(struct client *c, uint32_t seq, uint32_t size, struct nvbridge_fetch *f)
{
	struct waiter *w;
	int64_t now = now_ns();

	if (c->nwaiters >= cfg.max_waiters) {
		drop_client(c, "more than %u waiting FETCHes (--max-waiters)", cfg.max_waiters);
		return 0;
	}
	if (c->user->waiters >= cfg.max_waiters_per_user) {
		drop_client(c, "its uid has %u waiting FETCHes (--max-waiters-per-user)",
			    c->user->waiters);
		return 0;
	}
	if (c->tenant->waiters >= cfg.max_waiters_per_tenant) {
		drop_client(c, "its tenant (uid %u) has %u waiting FETCHes "
			    "(--max-waiters-per-tenant)", c->tenant_uid, c->tenant->waiters);
		return 0;
	}
	if (total_waiters >= cfg.max_waiters_total || !mem_charge(sizeof(*w)))
		return -ENOSPC;
	w = calloc(1, sizeof(*w));
	if (!w) {
		mem_uncharge(sizeof(*w));
		return -ENOMEM;
	}
	w->c = c;
	w->seq = seq;
	w->size = size;
	w->f = *f;
	w->hn.hash = name_hash(c->scope, f->name, strlen(f->name));
	w->heap_idx = SIZE_MAX;
	/* as the module (ktime clamp): a huge timeout saturates, no overflow */
	w->deadline = f->timeout_ns < 0 ? -1 :
		      f->timeout_ns > INT64_MAX - now ? INT64_MAX : now + f->timeout_ns;
	if (w->deadline >= 0 && heap_add(w)) {
		free(w);
		mem_uncharge(sizeof(*w));
		return -ENOMEM;
	}
	htable_add(&wtab, &w->hn);
	w->cnext = c->waiters;
	c->waiters = w;
	c->nwaiters++;
	c->user->waiters++;
	c->tenant->waiters++;
	total_waiters++;
	return 0;
}

/* FETCH: every ignored or inconsistent input is refused before any lookup (C5) */
static int fetch_check(const struct client *c, const struct nvbridge_fetch *f)
{
	if (f->flags & ~NVBRIDGE_FETCH_FLAGS_ALL)
		return -EINVAL;
	if (!(f->flags & NVBRIDGE_FETCH_EXPECT_UID) && f->expect_uid)
		return -EINVAL;
	if ((f->flags & NVBRIDGE_FETCH_EXPECT_UID) && map_from(&c->uidmap, f->expect_uid) < 0)
		return -EINVAL;	/* not mapped in the caller's user ns */
	if (!(f->flags & NVBRIDGE_FETCH_WAIT) && f->timeout_ns)
		return -EINVAL;
	if (nvb_name_valid(f->name, false))
		return -EINVAL;
	if (f->blob && !f->blob_cap)
		return -EINVAL;
	if (!f->blob && f->blob_cap)
		return -EFAULT;
	return 0;
}

void do_fetch(struct client *c, uint32_t seq, uint32_t size, struct nvbridge_fetch *f)
{
	struct entry *e;
	int ret = fetch_check(c, f), n;

	if (!ret) {
		n = resolve(c, f, &e);
		if (n == 1) {
			fetch_reply(c, seq, size, f, e);
			return;
		}
		if (n > 1)
			ret = -ENOTUNIQ;
		else if (!(f->flags & NVBRIDGE_FETCH_WAIT))
			ret = -ENOENT;
		else if (f->timeout_ns == 0)
			ret = -ETIMEDOUT;
		else
			ret = park(c, seq, size, f);
		if (!ret)
			return;
	}
	reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, seq, ret, NULL, 0, NULL, 0, NULL);
}

int do_unpublish(struct client *c, struct nvbridge_unpublish *u)
{
	struct entry *e = NULL;

	if (u->flags)
		return -EINVAL;
	if (u->id) {
		for (int i = 0; i < NVBRIDGE_NAME_MAX; i++)
			if (u->name[i])
				return -EINVAL;
		e = visible_find_id(c->scope, u->id);
		if (e && e->owner != c && !may_use(c, e))
			e = NULL;	/* another's, and not visible: absent (C2) */
	} else {
		if (nvb_name_valid(u->name, false))
			return -EINVAL;
		e = find_own(c, u->name);
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
	static struct entry *found[NVBRIDGE_WIRE_DATA_MAX / NVBRIDGE_ENTRY_INFO_SIZE_VER0];
	uint32_t n = 0, max;
	int ret = 0;

	if (l->flags || l->entry_size < NVBRIDGE_ENTRY_INFO_SIZE_VER0)
		ret = -EINVAL;
	else if (l->entry_size > NVBRIDGE_WIRE_ARG_MAX)
		ret = -E2BIG;
	else if (l->count && !l->entries)
		ret = -EFAULT;
	if (ret) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_LIST, seq, ret, NULL, 0, NULL, 0, NULL);
		return;
	}
	max = (uint32_t)(sizeof(buf) / l->entry_size);
	if (max > l->count)
		max = l->count;
	/* visible.c: from the cursor on, only what c may use: no walk of the scope */
	ret = visible_list(c, l->cursor, found, max);
	if (ret < 0) {
		reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_LIST, seq, ret, NULL, 0, NULL, 0, NULL);
		return;
	}
	for (n = 0; n < (uint32_t)ret; n++) {
		struct entry *e = found[n];
		struct nvbridge_entry_info r;
		unsigned char *dst = buf + (size_t)n * l->entry_size;

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
	}
	l->count = n;
	reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_LIST, seq, (int32_t)n, l, asz, buf,
	      n * l->entry_size, NULL);
}

void fill_info(struct client *c, struct nvbridge_info *i)
{
	i->abi_version = NVBRIDGE_ABI_VERSION;
	i->name_max = NVBRIDGE_NAME_MAX;
	i->max_blob_size = cfg.max_blob_size;
	i->max_entries_per_user = cfg.max_entries_per_user;
	i->max_events = cfg.max_events;
	i->max_watches = cfg.max_watches;
	if (c) {
		/* only what the caller may fetch counts (C2): counted, not walked (visible.c) */
		i->entries = visible_count(c);
		i->user_entries = c->user->entries;
	}
}

/* The connection is going: its entries are revoked, its waiters dropped. */
void client_release_registry(struct client *c, uint16_t reason)
{
	while (c->waiters)
		waiter_free(c->waiters);
	if (!c->scope)
		return;
	while (c->owned)
		entry_revoke(c->owned, reason, c);
}

void registry_exit(void)
{
	free(heap);
	heap = NULL;
	heap_len = heap_cap = 0;
}
