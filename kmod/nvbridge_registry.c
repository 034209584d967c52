// SPDX-License-Identifier: GPL-2.0
/*
 * nvbridge: the registry.  Scopes (one per IPC namespace), their entries,
 * name, id and watch indexes, per-user quota records, event queues, and
 * the state of an open file.  nvbridge_main.c has the device, the
 * argument checks and the ioctls; nvbridge_internal.h the locking rules.
 */

#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/file.h>
#include <linux/hash.h>
#include <linux/hrtimer.h>
#include <linux/ipc_namespace.h>
#include <linux/memcontrol.h>
#include <linux/nsproxy.h>
#include <linux/pid_namespace.h>
#include <linux/proc_ns.h>
#include <linux/random.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/stringhash.h>
#include <linux/uidgid.h>

#include "nvbridge_internal.h"
#include "nvbridge_trace.h"

/* ------------------------------------------------------------------ */
/* Global state: only open() and release() take these locks            */

static DEFINE_MUTEX(nvb_scopes_lock);
static DEFINE_HASHTABLE(nvb_scopes, 6);
VISIBLE_IF_KUNIT spinlock_t nvb_users_lock = __SPIN_LOCK_UNLOCKED(nvb_users_lock);
static DEFINE_HASHTABLE(nvb_users, 6);
atomic_t nvb_nr_entries = ATOMIC_INIT(0);	/* sysfs, root only */

/* ------------------------------------------------------------------ */
/* Names and policies                                                 */

/* [A-Za-z0-9._:/-]; not isalnum(), whose table is Latin-1. */
static bool nvb_name_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
	       c == '/' || c == '-';
}

/*
 * Returns the length of a valid name (or, with @prefix, of a valid prefix,
 * which may be empty), or -EINVAL: unterminated within NVBRIDGE_NAME_MAX
 * bytes, empty, or a byte outside [A-Za-z0-9._:/-].
 */
int nvb_name_check(const char *name, bool prefix)
{
	size_t len = strnlen(name, NVBRIDGE_NAME_MAX);
	size_t i;

	if (len == NVBRIDGE_NAME_MAX)
		return -EINVAL;
	if (!len && !prefix)
		return -EINVAL;
	for (i = 0; i < len; i++)
		if (!nvb_name_char_ok(name[i]))
			return -EINVAL;
	return len;
}

/*
 * Name hashes are salted per scope, so that nobody can compute in advance
 * which names (or watch prefixes) share an index bucket with someone
 * else's, to make that bucket long.  full_name_hash() mixes every bit of
 * the salt into every bit it returns (rotations, then a multiply whose
 * top bits hash_32() takes): no page offset decides the bucket, as it did
 * for the broker's former FNV.  The salt is random, not the scope's
 * address (as it was), which a kernel pointer leak would tell.
 */
static u32 nvb_hash(const struct nvb_scope *s, const char *name, size_t len)
{
	return full_name_hash((const void *)s->nsalt, name, len);
}

static u32 nvb_name_hash(const struct nvb_scope *s, const char *name)
{
	return nvb_hash(s, name, strlen(name));
}

/*
 * @gid is @cred's egid or one of its supplementary groups: in_group_p()
 * for a credential that is not current's (the file's, judged when another
 * task uses the file).  groups_search() is not exported, so the sorted
 * group_info is searched here the same way.
 */
bool nvb_cred_has_gid(const struct cred *cred, kgid_t gid)
{
	const struct group_info *gi = cred->group_info;
	unsigned int lo = 0, hi;

	if (gid_eq(cred->egid, gid))
		return true;
	if (!gi)
		return false;
	hi = gi->ngroups;
	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (gid_gt(gid, gi->gid[mid]))
			lo = mid + 1;
		else if (gid_lt(gid, gi->gid[mid]))
			hi = mid;
		else
			return true;
	}
	return false;
}

/* The entry's policy admits @cred (capabilities are not considered). */
static bool nvb_policy_allows(const struct cred *cred,
			      const struct nvb_entry *e)
{
	if (uid_eq(cred->euid, e->pub_uid))
		return true;
	switch (e->access) {
	case NVBRIDGE_ACCESS_SCOPE:
		return true;
	case NVBRIDGE_ACCESS_GROUP:
		return nvb_cred_has_gid(cred, e->pub_gid);
	case NVBRIDGE_ACCESS_UID:
		return uid_eq(cred->euid, e->acl_uid);
	case NVBRIDGE_ACCESS_GID:
		return nvb_cred_has_gid(cred, e->acl_gid);
	default:
		return false;
	}
}

/*
 * May the opener of @f use @e?  The policy, or CAP_IPC_OWNER in the user
 * namespace owning the scope's IPC namespace, as for SysV IPC.  Both are
 * judged on what the opener proved at open (f->ipc_owner).  An entry the
 * opener may not use does not exist for it: no errno, event, count or
 * timing tells it apart from an absent one.
 */
static bool nvb_may_access(const struct nvb_file *f, const struct nvb_entry *e)
{
	return e->live && (f->ipc_owner || nvb_policy_allows(f->cred, e));
}

static void nvb_peer_ids(const struct nvb_file *f, const struct nvb_entry *e,
			 u32 *pid, u32 *uid, u32 *gid)
{
	/* A dead opener's number may belong to someone else by now. */
	*pid = pid_has_task(e->pub_pid, PIDTYPE_TGID) ?
	       pid_nr_ns(e->pub_pid, f->pid_ns) : 0;
	*uid = from_kuid_munged(f->cred->user_ns, e->pub_uid);
	*gid = from_kgid_munged(f->cred->user_ns, e->pub_gid);
}

/* ------------------------------------------------------------------ */
/* Scopes and users: open() and release() only                         */

static void nvb_put_ipc_ns(struct ipc_namespace *ns)
{
#ifdef CONFIG_IPC_NS
	/* put_ipc_ns() is not exported; its ns_common operation is. */
	ns->ns.ops->put(&ns->ns);
#endif
}

/* @ns's scope with one more file counted, or NULL.  nvb_scopes_lock. */
static struct nvb_scope *nvb_scope_find(struct ipc_namespace *ns)
{
	struct nvb_scope *s;

	lockdep_assert_held(&nvb_scopes_lock);
	hash_for_each_possible(nvb_scopes, s, node, hash_ptr(ns, 32)) {
		if (s->ipc_ns == ns) {
			s->nr_files++;
			return s;
		}
	}
	return NULL;
}

/* A counted scope for @ns, or NULL. */
static struct nvb_scope *nvb_scope_get(struct ipc_namespace *ns)
{
	struct nvb_scope *s, *new;
	int i;

	mutex_lock(&nvb_scopes_lock);
	s = nvb_scope_find(ns);
	mutex_unlock(&nvb_scopes_lock);
	if (s)
		return s;

	new = kvzalloc(sizeof(*new), GFP_KERNEL_ACCOUNT);
	if (!new)
		return NULL;
	mutex_lock(&nvb_scopes_lock);
	s = nvb_scope_find(ns);
	if (s) {
		mutex_unlock(&nvb_scopes_lock);
		kvfree(new);
		return s;
	}
	s = new;
	s->ipc_ns = get_ipc_ns(ns);
	s->nr_files = 1;
	mutex_init(&s->lock);
	xa_init(&s->ids);
	hash_init(s->names);
	hash_init(s->vcounts);
	s->vgacl = RB_ROOT;
	s->vgown = RB_ROOT;
	s->vseed = get_random_u32();
	s->nsalt = get_random_long();
	hash_init(s->exact);
	hash_init(s->prefix);
	for (i = 0; i < NVB_PUBLISH_BUCKETS; i++)
		init_waitqueue_head(&s->publish[i].wq);
	hash_add(nvb_scopes, &s->node, hash_ptr(ns, 32));
	mutex_unlock(&nvb_scopes_lock);
	return s;
}

/* After the file's entries and watches are gone. */
static void nvb_scope_put(struct nvb_scope *s)
{
	mutex_lock(&nvb_scopes_lock);
	if (--s->nr_files) {
		mutex_unlock(&nvb_scopes_lock);
		return;
	}
	hash_del(&s->node);
	mutex_unlock(&nvb_scopes_lock);
	WARN_ON(s->nr_entries || !xa_empty(&s->ids) || !hash_empty(s->vcounts) ||
		!RB_EMPTY_ROOT(&s->vgacl) || !RB_EMPTY_ROOT(&s->vgown) || s->nvgacl);
	xa_destroy(&s->ids);
	mutex_destroy(&s->lock);
	nvb_put_ipc_ns(s->ipc_ns);
	kvfree(s);
}

VISIBLE_IF_KUNIT struct nvb_user *nvb_user_find(kuid_t uid)
{
	struct nvb_user *u;

	hash_for_each_possible(nvb_users, u, node, __kuid_val(uid))
		if (uid_eq(u->uid, uid))
			return u;
	return NULL;
}

static struct nvb_user *nvb_user_get(kuid_t uid)
{
	struct nvb_user *u, *new;

	new = kzalloc(sizeof(*new), GFP_KERNEL_ACCOUNT);
	if (!new)
		return NULL;
	spin_lock(&nvb_users_lock);
	u = nvb_user_find(uid);
	if (!u) {
		u = new;
		new = NULL;
		u->uid = uid;
		hash_add(nvb_users, &u->node, __kuid_val(uid));
	}
	u->nr_files++;
	spin_unlock(&nvb_users_lock);
	kfree(new);
	return u;
}

/* After the file's entries are gone: they were charged to @u. */
static void nvb_user_put(struct nvb_user *u)
{
	spin_lock(&nvb_users_lock);
	if (--u->nr_files) {
		spin_unlock(&nvb_users_lock);
		return;
	}
	hash_del(&u->node);
	spin_unlock(&nvb_users_lock);
	WARN_ON(atomic_read(&u->entries) || atomic_long_read(&u->bytes) ||
		atomic_read(&u->watches));
	kfree(u);
}

/* Charge one entry of @bytes blob bytes to @u, or -ENOSPC. */
static int nvb_quota_charge(struct nvb_user *u, u32 bytes)
{
	if (atomic_inc_return(&u->entries) >
	    nvb_limit(&nvb_max_entries_per_user))
		goto err_entries;
	if (atomic_long_add_return(bytes, &u->bytes) >
	    nvb_limit(&nvb_max_bytes_per_user))
		goto err_bytes;
	return 0;

err_bytes:
	atomic_long_sub(bytes, &u->bytes);
err_entries:
	atomic_dec(&u->entries);
	return -ENOSPC;
}

static void nvb_quota_uncharge(struct nvb_user *u, u32 bytes)
{
	atomic_long_sub(bytes, &u->bytes);
	atomic_dec(&u->entries);
}

/* ------------------------------------------------------------------ */
/* Events                                                             */

bool nvb_events_ready(struct nvb_file *f)
{
	return READ_ONCE(f->nr_events) || READ_ONCE(f->lost);
}

/*
 * Queue one record for @f.  When the queue is full, or a loss is still
 * unreported, the record is dropped and counted; the reader gets an
 * OVERFLOW record after the queued ones.
 */
static void nvb_event_queue(struct nvb_file *f, const struct nvb_entry *e,
			    u64 watch_id, u16 type, u16 reason)
{
	struct nvb_event_node *n = NULL;
	struct mem_cgroup *old_memcg;

	/*
	 * Charged to the watcher, who decides how much it queues.  Called
	 * under the scope's lock: no reclaim there; a failed allocation is
	 * a lost event, reported as such.
	 */
	if (!READ_ONCE(f->lost) &&
	    READ_ONCE(f->nr_events) < nvb_limit(&nvb_max_events)) {
		old_memcg = set_active_memcg(f->memcg);
		n = kzalloc(sizeof(*n), GFP_NOWAIT | __GFP_ACCOUNT | __GFP_NOWARN);
		set_active_memcg(old_memcg);
	}
	if (n) {
		n->ev.size = sizeof(n->ev);
		n->ev.type = type;
		n->ev.reason = reason;
		n->ev.id = e->id;
		n->ev.watch_id = watch_id;
		nvb_peer_ids(f, e, &n->ev.pid, &n->ev.uid, &n->ev.gid);
		strscpy(n->ev.name, e->name, sizeof(n->ev.name));
	}

	spin_lock(&f->ev_lock);
	f->ev_seq++;
	if (!n || f->lost || f->nr_events >= nvb_limit(&nvb_max_events)) {
		if (f->lost < U32_MAX)
			WRITE_ONCE(f->lost, f->lost + 1);
		spin_unlock(&f->ev_lock);
		kfree(n);
	} else {
		n->ev.seq = f->ev_seq;
		list_add_tail(&n->node, &f->events);
		WRITE_ONCE(f->nr_events, f->nr_events + 1);
		spin_unlock(&f->ev_lock);
	}
	wake_up_interruptible_poll(&f->read_wq, EPOLLIN | EPOLLRDNORM);
}

/*
 * Take the next record into @ev.  Returns the node it came from (to be
 * freed, or put back if the copy fails), NULL for a synthesized OVERFLOW
 * record (committed by nvb_event_commit_overflow() once copied: until
 * then later events keep being dropped, so none overtakes it), or
 * ERR_PTR(-EAGAIN) when there is nothing to read.  Readers are serialised
 * by read_mutex.
 */
struct nvb_event_node *nvb_event_take(struct nvb_file *f,
				      struct nvbridge_event *ev)
{
	struct nvb_event_node *n;

	spin_lock(&f->ev_lock);
	n = list_first_entry_or_null(&f->events, struct nvb_event_node, node);
	if (n) {
		list_del(&n->node);
		WRITE_ONCE(f->nr_events, f->nr_events - 1);
		*ev = n->ev;
	} else if (f->lost) {
		memset(ev, 0, sizeof(*ev));
		ev->size = sizeof(*ev);
		ev->type = NVBRIDGE_EVENT_OVERFLOW;
		ev->seq = f->ev_seq;
		ev->lost = f->lost;
	} else {
		n = ERR_PTR(-EAGAIN);
	}
	spin_unlock(&f->ev_lock);
	return n;
}

/* Undo nvb_event_take() of a queued record after a failed copy. */
void nvb_event_put_back(struct nvb_file *f, struct nvb_event_node *n)
{
	spin_lock(&f->ev_lock);
	list_add(&n->node, &f->events);
	WRITE_ONCE(f->nr_events, f->nr_events + 1);
	spin_unlock(&f->ev_lock);
}

/* An OVERFLOW record reporting @lost losses reached the reader. */
void nvb_event_commit_overflow(struct nvb_file *f, u32 lost)
{
	spin_lock(&f->ev_lock);
	WRITE_ONCE(f->lost, f->lost - lost);
	spin_unlock(&f->ev_lock);
}

static void nvb_events_free(struct nvb_file *f)
{
	struct nvb_event_node *n, *tmp;

	list_for_each_entry_safe(n, tmp, &f->events, node) {
		list_del(&n->node);
		kfree(n);
	}
	f->nr_events = 0;
}

/* ------------------------------------------------------------------ */
/* Watches: indexed by exact name, and by prefix length and hash       */

VISIBLE_IF_KUNIT bool nvb_watch_matches(const struct nvb_watch *w, const char *name)
{
	if (w->flags & NVBRIDGE_WATCH_PREFIX)
		return !strncmp(w->name, name, w->len);
	return !strcmp(w->name, name);
}

/* The bucket key: a prefix's length is part of its identity. */
static u32 nvb_watch_key(u32 hash, u32 len, u32 flags)
{
	return (flags & NVBRIDGE_WATCH_PREFIX) ? hash + len * GOLDEN_RATIO_32 :
						 hash;
}

static void nvb_notify_one(struct nvb_watch *w, const struct nvb_entry *e,
			   u16 type, u16 reason)
{
	if (nvb_may_access(w->file, e))
		nvb_event_queue(w->file, e, w->id, type, reason);
}

/*
 * Tell every watcher that may see @e.  Visits, for each prefix of @e's
 * name ("" included, shortest first), that prefix's bucket, then the
 * exact-name bucket: work in proportion to the matching watches, not to
 * all of them.
 */
static void nvb_notify(struct nvb_scope *s, const struct nvb_entry *e,
		       u16 type, u16 reason)
{
	size_t len = strlen(e->name), l;
	struct nvb_watch *w;
	u32 key;

	lockdep_assert_held(&s->lock);
	for (l = 0; l <= len; l++) {
		u32 h = nvb_hash(s, e->name, l);

		key = nvb_watch_key(h, l, NVBRIDGE_WATCH_PREFIX);
		hash_for_each_possible(s->prefix, w, index_node, key)
			if (w->len == l && w->hash == h &&
			    nvb_watch_matches(w, e->name))
				nvb_notify_one(w, e, type, reason);
	}
	hash_for_each_possible(s->exact, w, index_node, e->hash)
		if (w->hash == e->hash && nvb_watch_matches(w, e->name))
			nvb_notify_one(w, e, type, reason);
}

int nvb_watch_add(struct nvb_file *f, u32 flags, const char *name,
		  u64 *id)
{
	struct nvb_scope *s = f->scope;
	struct nvb_watch *w, *new;
	int ret = 0;

	new = kzalloc(sizeof(*new), GFP_KERNEL_ACCOUNT);
	if (!new)
		return -ENOMEM;
	new->file = f;
	new->flags = flags;
	new->len = strscpy(new->name, name, sizeof(new->name));
	new->hash = nvb_hash(s, new->name, new->len);

	mutex_lock(&s->lock);
	/* at most max_watches of this file's own */
	list_for_each_entry(w, &f->watches, node) {
		if (w->flags == flags && !strcmp(w->name, name)) {
			ret = -EEXIST;
			goto out_unlock;
		}
	}
	if (f->nr_watches >= nvb_limit(&nvb_max_watches)) {
		ret = -ENOSPC;
		goto out_unlock;
	}
	/*
	 * Every publish in the scope visits the watches that match it, under
	 * the scope's lock: what one user can add to that is bounded per user
	 * (as inotify's max_user_watches), not only per file.
	 */
	if (atomic_inc_return(&f->user->watches) >
	    nvb_limit(&nvb_max_watches_per_user)) {
		atomic_dec(&f->user->watches);
		ret = -ENOSPC;
		goto out_unlock;
	}
	new->id = ++f->next_watch_id;
	*id = new->id;
	f->nr_watches++;
	list_add_tail(&new->node, &f->watches);
	if (flags & NVBRIDGE_WATCH_PREFIX)
		hash_add(s->prefix, &new->index_node,
			 nvb_watch_key(new->hash, new->len, flags));
	else
		hash_add(s->exact, &new->index_node, new->hash);
	new = NULL;
out_unlock:
	mutex_unlock(&s->lock);
	kfree(new);
	return ret;
}

static void nvb_watch_unlink(struct nvb_file *f, struct nvb_watch *w)
{
	lockdep_assert_held(&f->scope->lock);
	list_del(&w->node);
	hash_del(&w->index_node);
	f->nr_watches--;
	atomic_dec(&f->user->watches);
}

int nvb_watch_del(struct nvb_file *f, u64 id)
{
	struct nvb_watch *w, *found = NULL;

	mutex_lock(&f->scope->lock);
	list_for_each_entry(w, &f->watches, node) {
		if (w->id == id) {
			found = w;
			nvb_watch_unlink(f, w);
			break;
		}
	}
	mutex_unlock(&f->scope->lock);
	if (!found)
		return -ENOENT;
	kfree(found);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Entries                                                            */

void nvb_entry_put(struct nvb_entry *e)
{
	if (!refcount_dec_and_test(&e->ref))
		return;
	if (e->file)
		fput(e->file);
	put_pid(e->pub_pid);
	kvfree(e->blob);
	kfree(e);
}

/*
 * A new entry published through @f, not yet linked.  Takes over @file
 * (a reference) and @blob (kvmalloc'ed, @blob_len bytes), each may be
 * NULL, only on success.  The publisher's identity is the opener's.
 */
struct nvb_entry *nvb_entry_new(struct nvb_file *f, const char *name,
				struct file *file, void *blob,
				u32 blob_len, u32 access,
				kuid_t acl_uid, kgid_t acl_gid)
{
	struct nvb_entry *e;

	e = kzalloc(sizeof(*e), GFP_KERNEL_ACCOUNT);
	if (!e)
		return NULL;
	refcount_set(&e->ref, 1);
	INIT_HLIST_NODE(&e->name_node);
	INIT_LIST_HEAD(&e->owner_node);
	strscpy(e->name, name, sizeof(e->name));
	e->hash = nvb_name_hash(f->scope, e->name);
	e->file = file;
	e->blob = blob;
	e->blob_len = blob_len;
	e->access = access;
	e->acl_uid = acl_uid;
	e->acl_gid = acl_gid;
	e->pub_uid = f->cred->euid;
	e->pub_gid = f->cred->egid;
	e->pub_pid = get_pid(f->pid);
	return e;
}

VISIBLE_IF_KUNIT struct nvb_publish_bucket *nvb_publish_bucket(struct nvb_scope *s,
							       const char *name)
{
	return &s->publish[hash_32(nvb_name_hash(s, name),
				   NVB_PUBLISH_BUCKETS_BITS)];
}

/* @owner's entry called @name, live or pending, or NULL. */
static struct nvb_entry *nvb_find_owned(struct nvb_scope *s, const char *name,
					kuid_t owner)
{
	u32 hash = nvb_name_hash(s, name);
	struct nvb_entry *e;

	lockdep_assert_held(&s->lock);
	hash_for_each_possible(s->names, e, name_node, hash)
		if (e->hash == hash && uid_eq(e->pub_uid, owner) &&
		    !strcmp(e->name, name))
			return e;
	return NULL;
}

/*
 * The entry called @name that @f may use: owned by @expect when that is
 * a valid uid, else the only one (-ENOTUNIQ when several).  -ENOENT when
 * none: denied and absent are the same answer.
 */
static struct nvb_entry *nvb_lookup(struct nvb_file *f, const char *name,
				    kuid_t expect)
{
	struct nvb_scope *s = f->scope;
	u32 hash = nvb_name_hash(s, name);
	struct nvb_entry *e, *found = NULL;

	lockdep_assert_held(&s->lock);
	if (uid_valid(expect)) {
		e = nvb_find_owned(s, name, expect);
		if (!e || !e->live)
			return ERR_PTR(-ENOENT);
		if (!nvb_may_access(f, e)) {
			nvb_trace(denial, f, e, e->access);
			return ERR_PTR(-ENOENT);
		}
		return e;
	}
	hash_for_each_possible(s->names, e, name_node, hash) {
		if (e->hash != hash || strcmp(e->name, name) || !e->live)
			continue;
		if (!nvb_may_access(f, e)) {
			nvb_trace(denial, f, e, e->access);
			continue;
		}
		if (found)
			return ERR_PTR(-ENOTUNIQ);
		found = e;
	}
	return found ?: ERR_PTR(-ENOENT);
}

/* Remove @e from its scope's indexes.  The caller drops the index's ref. */
static void nvb_entry_unlink(struct nvb_scope *s, struct nvb_entry *e)
{
	lockdep_assert_held(&s->lock);
	xa_erase(&s->ids, e->id);
	hash_del(&e->name_node);
	list_del_init(&e->owner_node);
	nvb_visible_unlink(s, e);
	nvb_quota_uncharge(e->owner->user, e->blob_len);
}

/*
 * Step one of a publish: link @e into @f's scope under a fresh id, still
 * invisible (pending), so that the id can be copied out before anyone
 * can see the entry.  -EEXIST if the opener's euid already has the name
 * in the scope, -ENOSPC at the quota or out of ids.  On failure the
 * caller still owns @e.
 */
int nvb_entry_reserve(struct nvb_file *f, struct nvb_entry *e)
{
	struct nvb_scope *s = f->scope;
	int ret;

	ret = nvb_quota_charge(f->user, e->blob_len);
	if (ret)
		return ret;
	mutex_lock(&s->lock);
	if (nvb_find_owned(s, e->name, e->pub_uid)) {
		ret = -EEXIST;
		goto err_unlock;
	}
	if (s->last_id >= ULONG_MAX) {
		ret = -ENOSPC;
		goto err_unlock;
	}
	e->id = s->last_id + 1;		/* the counters index it by id */
	ret = nvb_visible_link(s, e);
	if (ret) {
		e->id = 0;
		goto err_unlock;
	}
	ret = xa_insert(&s->ids, e->id, e, GFP_KERNEL_ACCOUNT);
	if (ret) {
		nvb_visible_unlink(s, e);
		goto err_unlock;
	}
	s->last_id = e->id;
	e->owner = f;
	hash_add(s->names, &e->name_node, e->hash);
	list_add_tail(&e->owner_node, &f->entries);
	mutex_unlock(&s->lock);
	return 0;

err_unlock:
	mutex_unlock(&s->lock);
	nvb_quota_uncharge(f->user, e->blob_len);
	return ret;
}

/* Step two: make a reserved entry visible, tell watchers and waiters. */
void nvb_entry_commit(struct nvb_file *f, struct nvb_entry *e)
{
	struct nvb_scope *s = f->scope;
	struct nvb_publish_bucket *b;

	mutex_lock(&s->lock);
	e->live = true;
	nvb_visible_set(e, true);
	nvb_trace(publish, f, e, e->access);
	s->nr_entries++;
	atomic_inc(&nvb_nr_entries);
	nvb_notify(s, e, NVBRIDGE_EVENT_PUBLISHED, NVBRIDGE_REVOKE_NONE);
	b = nvb_publish_bucket(s, e->name);
	WRITE_ONCE(b->seq, b->seq + 1);
	wake_up_all(&b->wq);
	mutex_unlock(&s->lock);
}

/* Undo nvb_entry_reserve(): nobody saw it. */
void nvb_entry_abort(struct nvb_file *f, struct nvb_entry *e)
{
	mutex_lock(&f->scope->lock);
	nvb_entry_unlink(f->scope, e);
	mutex_unlock(&f->scope->lock);
	nvb_entry_put(e);
}

/* Unlink a live @e and tell watchers why.  The caller puts @e. */
static void nvb_entry_revoke(struct nvb_scope *s, struct nvb_entry *e,
			     u16 reason)
{
	if (e->live)
		nvb_visible_set(e, false);	/* before the unlink that may free counters */
	nvb_entry_unlink(s, e);
	if (!e->live)
		return;
	s->nr_entries--;
	atomic_dec(&nvb_nr_entries);
	nvb_trace(revoke, e->owner, e, reason);
	nvb_notify(s, e, NVBRIDGE_EVENT_REVOKED, reason);
	e->live = false;
}

/*
 * Withdraw an entry published through @f: by @id, or else by @name, which
 * addresses the opener's own (euid, name).  -ENOENT for what @f cannot
 * see, -EPERM for a visible entry published through another file.
 */
int nvb_unpublish(struct nvb_file *f, u64 id, const char *name)
{
	struct nvb_scope *s = f->scope;
	struct nvb_entry *e;
	int ret = 0;

	mutex_lock(&s->lock);
	if (id)
		e = id <= ULONG_MAX ? xa_load(&s->ids, id) : NULL;
	else
		e = nvb_find_owned(s, name, f->cred->euid);
	if (!e || !e->live)
		ret = -ENOENT;
	else if (e->owner == f)
		nvb_entry_revoke(s, e, NVBRIDGE_REVOKE_UNPUBLISHED);
	else if (uid_eq(e->pub_uid, f->cred->euid) || nvb_may_access(f, e))
		ret = -EPERM;
	else
		ret = -ENOENT;
	mutex_unlock(&s->lock);
	if (!ret)
		nvb_entry_put(e);
	return ret;
}

void nvb_fetched_release(struct nvb_fetched *r)
{
	if (r->e)
		nvb_entry_put(r->e);
	memset(r, 0, sizeof(*r));
}

/*
 * Look @name up for @f.  -ENOENT, -ENOTUNIQ, or -EMSGSIZE when the blob
 * is larger than @blob_cap (with @r filled but holding nothing); 0 with
 * @r filled.  @seq receives the publish counter of @name's bucket as seen
 * under the lock.
 */
static int nvb_fetch_once(struct nvb_file *f, const char *name, u32 blob_cap,
			  kuid_t expect, struct nvb_fetched *r,
			  unsigned long *seq)
{
	struct nvb_scope *s = f->scope;
	struct nvb_entry *e;
	int ret = 0;

	mutex_lock(&s->lock);
	*seq = nvb_publish_bucket(s, name)->seq;
	e = nvb_lookup(f, name, expect);
	if (IS_ERR(e)) {
		ret = PTR_ERR(e);
		goto out_unlock;
	}
	r->id = e->id;
	r->access = e->access;
	r->blob_len = e->blob_len;
	r->entry_flags = (e->file ? NVBRIDGE_ENTRY_HAS_FD : 0) |
			 (e->owner == f ? NVBRIDGE_ENTRY_OWN : 0);
	nvb_peer_ids(f, e, &r->pid, &r->uid, &r->gid);
	if (r->blob_len > blob_cap) {
		ret = -EMSGSIZE;
		goto out_unlock;
	}
	/* file and blob never change: a reference, no copy under the lock */
	refcount_inc(&e->ref);
	r->e = e;
	r->file = e->file;
	r->blob = e->blob;
out_unlock:
	mutex_unlock(&s->lock);
	return ret;
}

static bool nvb_published_since(struct nvb_publish_bucket *b,
				unsigned long seq)
{
	return READ_ONCE(b->seq) != seq;
}

/*
 * nvb_fetch_once(), waiting for the name to appear when @wait is set:
 * until *@timeout_ns has passed, or forever when it is negative.
 * -ETIMEDOUT; -ERESTARTSYS on a signal, with *@timeout_ns lowered to
 * what is left, so that a restarted call waits no longer in total.
 * @expect: the publisher's required euid, or INVALID_UID for any.
 */
int nvb_fetch_expect(struct nvb_file *f, const char *name,
		     u32 blob_cap, kuid_t expect, bool wait,
		     s64 *timeout_ns, struct nvb_fetched *r)
{
	struct nvb_publish_bucket *b = nvb_publish_bucket(f->scope, name);
	ktime_t deadline = 0, left = 0;
	unsigned long seq;
	int ret;

	if (wait && *timeout_ns >= 0) {
		ktime_t now = ktime_get();

		deadline = *timeout_ns > KTIME_MAX - now ? KTIME_MAX :
			   ktime_add_ns(now, *timeout_ns);
	}
	for (;;) {
		ret = nvb_fetch_once(f, name, blob_cap, expect, r, &seq);
		if (ret != -ENOENT || !wait)
			return ret;
		if (*timeout_ns >= 0) {
			left = ktime_sub(deadline, ktime_get());
			if (left <= 0)
				return -ETIMEDOUT;
			ret = wait_event_interruptible_hrtimeout(b->wq,
								 nvb_published_since(b, seq),
								 left);
			if (ret == -ETIME)
				return -ETIMEDOUT;
		} else {
			ret = wait_event_interruptible(b->wq,
						       nvb_published_since(b, seq));
		}
		if (ret)
			break;
	}
	if (*timeout_ns >= 0)
		*timeout_ns = max_t(s64, ktime_sub(deadline, ktime_get()), 0);
	return -ERESTARTSYS;
}

static void nvb_list_fill(struct nvb_file *f, struct nvb_entry *e,
			  struct nvbridge_entry_info *i)
{
	memset(i, 0, sizeof(*i));
	i->id = e->id;
	nvb_peer_ids(f, e, &i->pid, &i->uid, &i->gid);
	i->access = e->access;
	i->blob_len = e->blob_len;
	i->flags = (e->file ? NVBRIDGE_ENTRY_HAS_FD : 0) |
		   (e->owner == f ? NVBRIDGE_ENTRY_OWN : 0);
	strscpy(i->name, e->name, sizeof(i->name));
}

/*
 * Fill @out with up to @max entries @f may see, with ids above @cursor.
 * Only the entries the opener's policy admits are visited (the merge of
 * INFO's counters, nvbridge_visible.c); the override sees every entry,
 * and so walks the scope's ids, as does anyone when the merge's memory
 * cannot be had (the same answer, slower).  The merge's room is sized
 * before the lock is taken, from the scope's GACL counters then: if more
 * came meanwhile, it is sized again, the last of NVB_VLIST_TRIES times for
 * every gid the opener holds, which no publisher can outgrow (else one
 * that keeps adding counters could push every LIST of an opener with many
 * gids into the walk, under the lock every scope's users share).
 */
#define NVB_VLIST_TRIES 3

unsigned int nvb_list_collect(struct nvb_file *f, u64 cursor,
			      struct nvbridge_entry_info *out,
			      unsigned int max)
{
	struct nvb_scope *s = f->scope;
	struct nvb_vlist *l = NULL;
	struct nvb_entry *e;
	unsigned long idx;
	unsigned int n = 0;
	int tries = 0;

	if (cursor >= ULONG_MAX || !max)
		return 0;
again:
	if (!f->ipc_owner && tries++ < NVB_VLIST_TRIES)
		l = nvb_vlist_alloc(s, f->cred, tries == NVB_VLIST_TRIES);
	mutex_lock(&s->lock);
	if (l && nvb_vlist_start(l, s, f->cred, (unsigned long)cursor)) {
		mutex_unlock(&s->lock);
		kvfree(l);
		l = NULL;
		goto again;
	}
	if (l) {
		while (n < max && (e = nvb_vlist_next(l)))
			if (nvb_may_access(f, e))	/* not one still pending */
				nvb_list_fill(f, e, &out[n++]);
	} else {
		xa_for_each_start(&s->ids, idx, e, (unsigned long)cursor + 1) {
			if (!nvb_may_access(f, e))
				continue;
			nvb_list_fill(f, e, &out[n]);
			if (++n == max)
				break;
		}
	}
	mutex_unlock(&s->lock);
	kvfree(l);
	return n;
}

/* Entries of @f's scope that @f may fetch: what it may know of. */
unsigned int nvb_visible_entries(struct nvb_file *f)
{
	struct nvb_scope *s = f->scope;
	unsigned int n;

	/* counted, not walked (nvbridge_visible.c) */
	mutex_lock(&s->lock);
	n = f->ipc_owner ? s->nr_entries : nvb_visible_count(s, f->cred);
	mutex_unlock(&s->lock);
	return n;
}

/*
 * CAP_IPC_OWNER over @s, for the opener: called from ->open(), where the
 * file's f_cred is the calling task's own credential, and not audited
 * (a check, not a request).  A file opened on someone else's behalf
 * (f_cred not current's) gets no override.
 */
static bool nvb_opener_ipc_owner(struct file *filp, struct nvb_scope *s)
{
	if (filp->f_cred != current_cred())
		return false;
	return ns_capable_noaudit(s->ipc_ns->user_ns, CAP_IPC_OWNER);
}

/* The state of an open file: everything about its opener, now. */
struct nvb_file *nvb_file_create(struct file *filp)
{
	struct nvb_file *f;

	f = kzalloc(sizeof(*f), GFP_KERNEL_ACCOUNT);
	if (!f)
		return NULL;
	f->cred = filp->f_cred;
	INIT_LIST_HEAD(&f->entries);
	INIT_LIST_HEAD(&f->watches);
	INIT_LIST_HEAD(&f->events);
	mutex_init(&f->read_mutex);
	spin_lock_init(&f->ev_lock);
	init_waitqueue_head(&f->read_wq);

	f->scope = nvb_scope_get(current->nsproxy->ipc_ns);
	if (!f->scope)
		goto err_free;
	f->user = nvb_user_get(f->cred->euid);
	if (!f->user)
		goto err_scope;
	f->pid = get_pid(task_tgid(current));
	f->pid_ns = get_pid_ns(task_active_pid_ns(current));
	f->memcg = get_mem_cgroup_from_mm(current->mm);
	f->ipc_owner = nvb_opener_ipc_owner(filp, f->scope);
	return f;

err_scope:
	nvb_scope_put(f->scope);
err_free:
	mutex_destroy(&f->read_mutex);
	kfree(f);
	return NULL;
}

/*
 * Revoke everything @f owns, drop its watches, events and scope.  The
 * reason is EXITED when the task dropping the last reference is exiting
 * (the usual end of a publisher killed or exiting with the file open),
 * else CLOSED; see Documentation/abi.rst for what that can and cannot
 * tell.
 */
void nvb_file_destroy(struct nvb_file *f)
{
	u16 reason = (current->flags & PF_EXITING) ? NVBRIDGE_REVOKE_EXITED :
						     NVBRIDGE_REVOKE_CLOSED;
	struct nvb_scope *s = f->scope;
	struct nvb_entry *e, *etmp;
	struct nvb_watch *w, *wtmp;
	LIST_HEAD(dead);

	mutex_lock(&s->lock);
	list_for_each_entry_safe(w, wtmp, &f->watches, node) {
		nvb_watch_unlink(f, w);
		kfree(w);
	}
	list_for_each_entry_safe(e, etmp, &f->entries, owner_node) {
		nvb_entry_revoke(s, e, reason);
		list_add_tail(&e->owner_node, &dead);
	}
	mutex_unlock(&s->lock);

	list_for_each_entry_safe(e, etmp, &dead, owner_node) {
		list_del(&e->owner_node);
		nvb_entry_put(e);
	}
	nvb_events_free(f);
	nvb_user_put(f->user);
	nvb_scope_put(s);
	mem_cgroup_put(f->memcg);
	put_pid_ns(f->pid_ns);
	put_pid(f->pid);
	mutex_destroy(&f->read_mutex);
	kfree(f);
}
