// SPDX-License-Identifier: GPL-2.0
/*
 * nvbridge: /dev/nvbridge, a credential-checked, namespace-aware
 * rendezvous for file descriptors and small opaque blobs.
 *
 * A process publishes a file and/or a blob under a name with an access
 * policy; others in the same IPC namespace fetch it by name and owner.
 * An entry belongs to the open file that published it and is revoked when
 * that file is released.  Watchers read fixed-size event records.
 *
 * See Documentation/abi.rst, Documentation/security-model.rst and
 * include/uapi/linux/nvbridge.h; nvbridge_internal.h has the locking.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/device.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/hash.h>
#include <linux/hrtimer.h>
#include <linux/ipc_namespace.h>
#include <linux/kdev_t.h>
#include <linux/memcontrol.h>
#include <linux/kernel.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/nsproxy.h>
#include <linux/pid_namespace.h>
#include <linux/poll.h>
#include <linux/proc_ns.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/stringhash.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <uapi/linux/magic.h>

#include "nvbridge_internal.h"

#define CREATE_TRACE_POINTS
#include "nvbridge_trace.h"

/* Largest argument struct accepted, on every architecture and backend. */
#define NVB_ARG_MAX	4096

/* ------------------------------------------------------------------ */
/* Limits                                                             */

static int nvb_limit_set(const char *val, const struct kernel_param *kp)
{
	struct nvb_limit *l = kp->arg;
	unsigned int v;
	int ret;

	ret = kstrtouint(val, 0, &v);
	if (ret)
		return ret;
	if (v < l->min || v > l->max)
		return -ERANGE;
	WRITE_ONCE(l->val, v);
	return 0;
}

static int nvb_limit_get(char *buf, const struct kernel_param *kp)
{
	const struct nvb_limit *l = kp->arg;

	return scnprintf(buf, PAGE_SIZE, "%u\n", READ_ONCE(l->val));
}

static const struct kernel_param_ops nvb_limit_ops = {
	.set = nvb_limit_set,
	.get = nvb_limit_get,
};

VISIBLE_IF_KUNIT struct nvb_limit nvb_max_entries_per_user = { 1024, 1, 1048576 };
VISIBLE_IF_KUNIT struct nvb_limit nvb_max_bytes_per_user = { 1048576, 0, 1073741824 };
VISIBLE_IF_KUNIT struct nvb_limit nvb_max_blob_size = { 4096, 0, NVBRIDGE_BLOB_MAX };
VISIBLE_IF_KUNIT struct nvb_limit nvb_max_events = { 1024, 1, 65536 };
VISIBLE_IF_KUNIT struct nvb_limit nvb_max_watches = { 64, 1, 4096 };

module_param_cb(max_entries_per_user, &nvb_limit_ops,
		&nvb_max_entries_per_user, 0644);
MODULE_PARM_DESC(max_entries_per_user,
		 "Entries one user may own, over all scopes (default 1024)");
module_param_cb(max_bytes_per_user, &nvb_limit_ops,
		&nvb_max_bytes_per_user, 0644);
MODULE_PARM_DESC(max_bytes_per_user,
		 "Blob bytes one user may own, over all scopes (default 1 MiB)");
module_param_cb(max_blob_size, &nvb_limit_ops, &nvb_max_blob_size, 0644);
MODULE_PARM_DESC(max_blob_size, "Largest blob in bytes (default 4096, max 65536)");
module_param_cb(max_events, &nvb_limit_ops, &nvb_max_events, 0644);
MODULE_PARM_DESC(max_events, "Event queue depth per open file (default 1024)");
module_param_cb(max_watches, &nvb_limit_ops, &nvb_max_watches, 0644);
MODULE_PARM_DESC(max_watches, "Watches per open file (default 64)");

VISIBLE_IF_KUNIT unsigned int nvb_limit(const struct nvb_limit *l)
{
	return READ_ONCE(l->val);
}

/*
 * Character-device majors whose files may be published.  Readers test
 * single bits without a lock; a write replaces the set bit by bit, so a
 * publish racing it sees each major either before or after the change.
 */
#define NVB_MAJORS	4096	/* MAJOR() of a 32-bit dev_t is 12 bits */
#define NVB_NVIDIA_MAJOR	195
static unsigned long nvb_chrdev_majors[BITS_TO_LONGS(NVB_MAJORS)] = {
	[NVB_NVIDIA_MAJOR / BITS_PER_LONG] = BIT(NVB_NVIDIA_MAJOR % BITS_PER_LONG),
};

static DEFINE_MUTEX(nvb_majors_lock);

static int nvb_majors_set(const char *val, const struct kernel_param *kp)
{
	DECLARE_BITMAP(set, NVB_MAJORS);
	char *buf, *p, *tok;
	unsigned int m;
	int ret = 0;

	buf = kstrdup(val, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	bitmap_zero(set, NVB_MAJORS);
	p = strim(buf);
	while ((tok = strsep(&p, ",")) != NULL) {
		if (!*tok)
			continue;
		ret = kstrtouint(tok, 10, &m);
		if (!ret && m >= NVB_MAJORS)
			ret = -ERANGE;
		if (ret)
			break;
		__set_bit(m, set);
	}
	kfree(buf);
	if (ret)
		return ret;
	mutex_lock(&nvb_majors_lock);
	for (m = 0; m < NVB_MAJORS; m++)
		assign_bit(m, nvb_chrdev_majors, test_bit(m, set));
	mutex_unlock(&nvb_majors_lock);
	return 0;
}

static int nvb_majors_get(char *buf, const struct kernel_param *kp)
{
	unsigned int m;
	int n = 0;

	mutex_lock(&nvb_majors_lock);
	for_each_set_bit(m, nvb_chrdev_majors, NVB_MAJORS)
		n += scnprintf(buf + n, PAGE_SIZE - n, "%s%u", n ? "," : "", m);
	mutex_unlock(&nvb_majors_lock);
	n += scnprintf(buf + n, PAGE_SIZE - n, "\n");
	return n;
}

static const struct kernel_param_ops nvb_majors_ops = {
	.set = nvb_majors_set,
	.get = nvb_majors_get,
};

module_param_cb(publish_chrdev_majors, &nvb_majors_ops, NULL, 0644);
MODULE_PARM_DESC(publish_chrdev_majors,
		 "Character-device majors whose files may be published, comma-separated (default 195: NVIDIA)");

/* ------------------------------------------------------------------ */
/* Global state: only open() and release() take these locks            */

static DEFINE_MUTEX(nvb_scopes_lock);
static DEFINE_HASHTABLE(nvb_scopes, 6);
VISIBLE_IF_KUNIT DEFINE_SPINLOCK(nvb_users_lock);
static DEFINE_HASHTABLE(nvb_users, 6);
VISIBLE_IF_KUNIT atomic_t nvb_nr_entries = ATOMIC_INIT(0);	/* sysfs, root only */

VISIBLE_IF_KUNIT const struct file_operations nvb_fops;

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
VISIBLE_IF_KUNIT int nvb_name_check(const char *name, bool prefix)
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

static u32 nvb_hash(const char *name, size_t len)
{
	return full_name_hash(NULL, name, len);
}

static u32 nvb_name_hash(const char *name)
{
	return nvb_hash(name, strlen(name));
}

/*
 * @gid is @cred's egid or one of its supplementary groups: in_group_p()
 * for a credential that is not current's (the file's, judged when another
 * task uses the file).  groups_search() is not exported, so the sorted
 * group_info is searched here the same way.
 */
static bool nvb_cred_has_gid(const struct cred *cred, kgid_t gid)
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

/* Tracepoint arguments: what @f did to @e, ids in the initial namespaces. */
#define nvb_trace(event, f, e, arg) do {				\
	const struct nvb_file *__f = (f);				\
	const struct nvb_entry *__e = (e);				\
									\
	trace_nvbridge_##event(__e->owner->scope->ipc_ns->ns.inum,	\
			       __e->id, __e->name,			\
			       from_kuid(&init_user_ns, __e->pub_uid),	\
			       from_kuid(&init_user_ns, __f->cred->euid), \
			       pid_nr(__f->pid), (arg));		\
} while (0)

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
	WARN_ON(s->nr_entries || !xa_empty(&s->ids));
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
	WARN_ON(atomic_read(&u->entries) || atomic_long_read(&u->bytes));
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

static bool nvb_events_ready(struct nvb_file *f)
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
static struct nvb_event_node *nvb_event_take(struct nvb_file *f,
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
static void nvb_event_put_back(struct nvb_file *f, struct nvb_event_node *n)
{
	spin_lock(&f->ev_lock);
	list_add(&n->node, &f->events);
	WRITE_ONCE(f->nr_events, f->nr_events + 1);
	spin_unlock(&f->ev_lock);
}

/* An OVERFLOW record reporting @lost losses reached the reader. */
static void nvb_event_commit_overflow(struct nvb_file *f, u32 lost)
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
		u32 h = nvb_hash(e->name, l);

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

VISIBLE_IF_KUNIT int nvb_watch_add(struct nvb_file *f, u32 flags, const char *name,
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
	new->hash = nvb_hash(new->name, new->len);

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
}

VISIBLE_IF_KUNIT int nvb_watch_del(struct nvb_file *f, u64 id)
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

VISIBLE_IF_KUNIT void nvb_entry_put(struct nvb_entry *e)
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
VISIBLE_IF_KUNIT struct nvb_entry *nvb_entry_new(struct nvb_file *f, const char *name,
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
	e->hash = nvb_name_hash(e->name);
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
	return &s->publish[hash_32(nvb_name_hash(name),
				   NVB_PUBLISH_BUCKETS_BITS)];
}

/* @owner's entry called @name, live or pending, or NULL. */
static struct nvb_entry *nvb_find_owned(struct nvb_scope *s, const char *name,
					kuid_t owner)
{
	u32 hash = nvb_name_hash(name);
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
	u32 hash = nvb_name_hash(name);
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
	nvb_quota_uncharge(e->owner->user, e->blob_len);
}

/*
 * Step one of a publish: link @e into @f's scope under a fresh id, still
 * invisible (pending), so that the id can be copied out before anyone
 * can see the entry.  -EEXIST if the opener's euid already has the name
 * in the scope, -ENOSPC at the quota or out of ids.  On failure the
 * caller still owns @e.
 */
VISIBLE_IF_KUNIT int nvb_entry_reserve(struct nvb_file *f, struct nvb_entry *e)
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
	e->id = s->last_id + 1;
	ret = xa_insert(&s->ids, e->id, e, GFP_KERNEL_ACCOUNT);
	if (ret)
		goto err_unlock;
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
VISIBLE_IF_KUNIT void nvb_entry_commit(struct nvb_file *f, struct nvb_entry *e)
{
	struct nvb_scope *s = f->scope;
	struct nvb_publish_bucket *b;

	mutex_lock(&s->lock);
	e->live = true;
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
static void nvb_entry_abort(struct nvb_file *f, struct nvb_entry *e)
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
VISIBLE_IF_KUNIT int nvb_unpublish(struct nvb_file *f, u64 id, const char *name)
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

VISIBLE_IF_KUNIT void nvb_fetched_release(struct nvb_fetched *r)
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
VISIBLE_IF_KUNIT int nvb_fetch_expect(struct nvb_file *f, const char *name,
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

/* ------------------------------------------------------------------ */
/* Argument copying and file checks                                   */

/*
 * Read an extensible argument: its leading size must be at least @ver0
 * and at most NVB_ARG_MAX; bytes beyond @ksize must be zero (-E2BIG).
 */
static int nvb_copy_in(void *karg, size_t ksize, size_t ver0,
		       const void __user *uarg, u32 *usize)
{
	u32 size;
	int ret;

	if (get_user(size, (const u32 __user *)uarg))
		return -EFAULT;
	if (size < ver0)
		return -EINVAL;
	if (size > NVB_ARG_MAX)
		return -E2BIG;
	ret = copy_struct_from_user(karg, ksize, uarg, size);
	if (ret)
		return ret;
	*usize = size;
	return 0;
}

/* Write back no more than the caller's struct holds. */
static int nvb_copy_out(void __user *uarg, const void *karg, size_t ksize,
			u32 usize)
{
	if (copy_to_user(uarg, karg, min_t(size_t, ksize, usize)))
		return -EFAULT;
	return 0;
}

/*
 * May @file be published?  An allowlist of what exporters hand out, none
 * of which can hold an nvbridge file (so no reference cycle can form):
 * regular files (memfd, shmem and tmpfs files included), dma-bufs (found
 * by their pseudo filesystem, since is_dma_buf_file() is not exported),
 * and character devices whose major is in publish_chrdev_majors.  An
 * nvbridge file is refused even if an admin lists the misc major.
 */
static bool nvb_file_publishable(struct file *file)
{
	struct inode *inode = file_inode(file);

	if (file->f_op == &nvb_fops)
		return false;
	if (S_ISREG(inode->i_mode))
		return true;
	if (S_ISCHR(inode->i_mode))
		return test_bit(imajor(inode), nvb_chrdev_majors);
	return inode->i_sb->s_magic == DMA_BUF_MAGIC;
}

static int nvb_receive_fd(struct file *file, unsigned int o_flags)
{
#ifdef NVB_HAVE_RECEIVE_FD_UFD
	return receive_fd(file, NULL, o_flags);
#else
	return receive_fd(file, o_flags);
#endif
}

/* ------------------------------------------------------------------ */
/* ioctls                                                             */

VISIBLE_IF_KUNIT int nvb_policy_ids(const struct nvb_file *f,
				    const struct nvbridge_publish *arg,
				    kuid_t *uid, kgid_t *gid)
{
	*uid = INVALID_UID;
	*gid = INVALID_GID;
	switch (arg->access) {
	case NVBRIDGE_ACCESS_UID:
		*uid = make_kuid(f->cred->user_ns, arg->uid);
		if (!uid_valid(*uid) || arg->gid)
			return -EINVAL;
		return 0;
	case NVBRIDGE_ACCESS_GID:
		*gid = make_kgid(f->cred->user_ns, arg->gid);
		if (!gid_valid(*gid) || arg->uid)
			return -EINVAL;
		return 0;
	case NVBRIDGE_ACCESS_OWNER:
	case NVBRIDGE_ACCESS_GROUP:
	case NVBRIDGE_ACCESS_SCOPE:
		return (arg->uid || arg->gid) ? -EINVAL : 0;
	default:
		return -EINVAL;
	}
}

/* The blob of a PUBLISH, exactly @len bytes, or NULL/ERR_PTR. */
static void *nvb_blob_copy_in(u64 uptr, u32 len)
{
	void *blob;

	if (!len)
		return NULL;
	blob = kvmalloc(len, GFP_KERNEL_ACCOUNT);
	if (!blob)
		return ERR_PTR(-ENOMEM);
	if (copy_from_user(blob, u64_to_user_ptr(uptr), len)) {
		kvfree(blob);
		return ERR_PTR(-EFAULT);
	}
	return blob;
}

static long nvb_ioctl_publish(struct nvb_file *f,
			      struct nvbridge_publish __user *uarg)
{
	struct nvbridge_publish arg;
	struct file *file = NULL;
	struct nvb_entry *e;
	kuid_t acl_uid;
	kgid_t acl_gid;
	void *blob;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_PUBLISH_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	/* .id is 0 unless the publish succeeds; a read-only struct fails here. */
	if (put_user(0, &uarg->id))
		return -EFAULT;
	if (arg.flags || arg.__reserved)
		return -EINVAL;
	ret = nvb_name_check(arg.name, false);
	if (ret < 0)
		return ret;
	ret = nvb_policy_ids(f, &arg, &acl_uid, &acl_gid);
	if (ret)
		return ret;
	if (arg.blob_len > nvb_limit(&nvb_max_blob_size))
		return -EMSGSIZE;

	blob = nvb_blob_copy_in(arg.blob, arg.blob_len);
	if (IS_ERR(blob))
		return PTR_ERR(blob);
	if (arg.fd != NVBRIDGE_NO_FD) {
		file = arg.fd >= 0 ? fget(arg.fd) : NULL;
		if (!file) {
			ret = -EBADF;
			goto err_free_blob;
		}
		if (!nvb_file_publishable(file)) {
			ret = -EINVAL;
			goto err_put_file;
		}
	}
	e = nvb_entry_new(f, arg.name, file, blob, arg.blob_len, arg.access,
			  acl_uid, acl_gid);
	if (!e) {
		ret = -ENOMEM;
		goto err_put_file;
	}
	ret = nvb_entry_reserve(f, e);
	if (ret) {
		nvb_entry_put(e);	/* drops @file and @blob too */
		return ret;
	}
	/* Every copy-out before the entry becomes visible. */
	if (put_user(e->id, &uarg->id)) {
		nvb_entry_abort(f, e);
		return -EFAULT;
	}
	nvb_entry_commit(f, e);
	return 0;

err_put_file:
	if (file)
		fput(file);
err_free_blob:
	kvfree(blob);
	return ret;
}

static long nvb_ioctl_fetch(struct nvb_file *f,
			    struct nvbridge_fetch __user *uarg)
{
	struct nvbridge_fetch arg;
	struct nvb_fetched r = {};
	kuid_t expect = INVALID_UID;
	unsigned int o_flags;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_FETCH_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags & ~NVBRIDGE_FETCH_FLAGS_ALL)
		return -EINVAL;
	if (!(arg.flags & NVBRIDGE_FETCH_WAIT) && arg.timeout_ns)
		return -EINVAL;
	if (!arg.blob && arg.blob_cap)
		return -EFAULT;
	if (arg.blob && !arg.blob_cap)
		return -EINVAL;
	if (arg.flags & NVBRIDGE_FETCH_EXPECT_UID) {
		expect = make_kuid(f->cred->user_ns, arg.expect_uid);
		if (!uid_valid(expect))
			return -EINVAL;
	} else if (arg.expect_uid) {
		return -EINVAL;
	}
	ret = nvb_name_check(arg.name, false);
	if (ret < 0)
		return ret;

	ret = nvb_fetch_expect(f, arg.name, arg.blob_cap, expect,
			       arg.flags & NVBRIDGE_FETCH_WAIT, &arg.timeout_ns,
			       &r);
	if (ret == -ERESTARTSYS) {
		/*
		 * Restarted only when no handler ran (SIGSTOP, SIGCONT...),
		 * with the time left; a handled signal gives -EINTR.
		 */
		if (put_user(arg.timeout_ns, &uarg->timeout_ns))
			return -EINTR;
		return -ERESTARTNOHAND;
	}
	if (ret && ret != -EMSGSIZE)
		return ret;

	arg.blob_len = r.blob_len;
	arg.id = r.id;
	arg.pid = r.pid;
	arg.uid = r.uid;
	arg.gid = r.gid;
	arg.access = r.access;
	arg.entry_flags = r.entry_flags;
	if (!ret && r.blob &&
	    copy_to_user(u64_to_user_ptr(arg.blob), r.blob, r.blob_len))
		ret = -EFAULT;
	if (ret != -EFAULT && nvb_copy_out(uarg, &arg, sizeof(arg), usize))
		ret = -EFAULT;
	if (ret || !r.file)
		goto out_release;

	/* The last step: nothing can fail after the fd is installed. */
	o_flags = (arg.flags & NVBRIDGE_FETCH_NO_CLOEXEC) ? 0 : O_CLOEXEC;
	ret = nvb_receive_fd(r.file, o_flags);
out_release:
	if (ret >= 0)
		nvb_trace(fetch, f, r.e, ret > 0);
	nvb_fetched_release(&r);
	return ret;
}

static long nvb_ioctl_unpublish(struct nvb_file *f,
				struct nvbridge_unpublish __user *uarg)
{
	struct nvbridge_unpublish arg;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_UNPUBLISH_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags)
		return -EINVAL;
	if (arg.id) {
		if (memchr_inv(arg.name, 0, sizeof(arg.name)))
			return -EINVAL;
	} else {
		ret = nvb_name_check(arg.name, false);
		if (ret < 0)
			return ret;
	}
	return nvb_unpublish(f, arg.id, arg.name);
}

static long nvb_ioctl_watch(struct nvb_file *f,
			    struct nvbridge_watch __user *uarg)
{
	struct nvbridge_watch arg;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_WATCH_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags & ~NVBRIDGE_WATCH_FLAGS_ALL)
		return -EINVAL;
	ret = nvb_name_check(arg.name, arg.flags & NVBRIDGE_WATCH_PREFIX);
	if (ret < 0)
		return ret;
	ret = nvb_watch_add(f, arg.flags, arg.name, &arg.id);
	if (ret)
		return ret;
	if (nvb_copy_out(uarg, &arg, sizeof(arg), usize)) {
		nvb_watch_del(f, arg.id);
		return -EFAULT;
	}
	return 0;
}

static long nvb_ioctl_unwatch(struct nvb_file *f,
			      struct nvbridge_watch __user *uarg)
{
	struct nvbridge_watch arg;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_WATCH_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags || memchr_inv(arg.name, 0, sizeof(arg.name)))
		return -EINVAL;
	return nvb_watch_del(f, arg.id);
}

#define NVB_LIST_BATCH	64

/* Fill @out with up to @max entries @f may see, with ids above @cursor. */
VISIBLE_IF_KUNIT unsigned int nvb_list_collect(struct nvb_file *f, u64 cursor,
					       struct nvbridge_entry_info *out,
					       unsigned int max)
{
	struct nvb_scope *s = f->scope;
	struct nvb_entry *e;
	unsigned long idx;
	unsigned int n = 0;

	if (cursor >= ULONG_MAX || !max)
		return 0;
	mutex_lock(&s->lock);
	xa_for_each_start(&s->ids, idx, e, (unsigned long)cursor + 1) {
		struct nvbridge_entry_info *i;

		if (!nvb_may_access(f, e))
			continue;
		i = &out[n];
		memset(i, 0, sizeof(*i));
		i->id = e->id;
		nvb_peer_ids(f, e, &i->pid, &i->uid, &i->gid);
		i->access = e->access;
		i->blob_len = e->blob_len;
		i->flags = (e->file ? NVBRIDGE_ENTRY_HAS_FD : 0) |
			   (e->owner == f ? NVBRIDGE_ENTRY_OWN : 0);
		strscpy(i->name, e->name, sizeof(i->name));
		if (++n == max)
			break;
	}
	mutex_unlock(&s->lock);
	return n;
}

static long nvb_ioctl_list(struct nvb_file *f,
			   struct nvbridge_list __user *uarg)
{
	struct nvbridge_entry_info *buf;
	struct nvbridge_list arg;
	unsigned int n, i;
	size_t rec;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_LIST_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags)
		return -EINVAL;
	if (arg.entry_size < NVBRIDGE_ENTRY_INFO_SIZE_VER0)
		return -EINVAL;
	if (arg.entry_size > NVB_ARG_MAX)
		return -E2BIG;
	if (!arg.entries && arg.count)
		return -EFAULT;
	if (!arg.count)
		return 0;

	buf = kcalloc(NVB_LIST_BATCH, sizeof(*buf), GFP_KERNEL_ACCOUNT);
	if (!buf)
		return -ENOMEM;
	n = nvb_list_collect(f, arg.cursor, buf,
			     min_t(u32, arg.count, NVB_LIST_BATCH));
	rec = min_t(size_t, arg.entry_size, sizeof(*buf));
	for (i = 0; i < n; i++) {
		void __user *dst = u64_to_user_ptr(arg.entries +
						   (u64)i * arg.entry_size);

		if (copy_to_user(dst, &buf[i], rec) ||
		    clear_user(dst + rec, arg.entry_size - rec)) {
			ret = -EFAULT;
			goto out_free;
		}
	}
	if (n)
		arg.cursor = buf[n - 1].id;
	arg.count = n;
	ret = nvb_copy_out(uarg, &arg, sizeof(arg), usize);
	if (!ret)
		ret = n;
out_free:
	kfree(buf);
	return ret;
}

/* Entries of @f's scope that @f may fetch: what it may know of. */
static unsigned int nvb_visible_entries(struct nvb_file *f)
{
	struct nvb_scope *s = f->scope;
	struct nvb_entry *e;
	unsigned long idx;
	unsigned int n = 0;

	mutex_lock(&s->lock);
	if (f->ipc_owner) {
		n = s->nr_entries;
	} else {
		xa_for_each(&s->ids, idx, e)
			n += nvb_may_access(f, e);
	}
	mutex_unlock(&s->lock);
	return n;
}

static long nvb_ioctl_info(struct nvb_file *f,
			   struct nvbridge_info __user *uarg)
{
	struct nvbridge_info arg;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_INFO_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags)
		return -EINVAL;
	arg.abi_version = NVBRIDGE_ABI_VERSION;
	arg.name_max = NVBRIDGE_NAME_MAX;
	arg.max_blob_size = nvb_limit(&nvb_max_blob_size);
	arg.max_entries_per_user = nvb_limit(&nvb_max_entries_per_user);
	arg.max_events = nvb_limit(&nvb_max_events);
	arg.max_watches = nvb_limit(&nvb_max_watches);
	arg.entries = nvb_visible_entries(f);
	arg.user_entries = atomic_read(&f->user->entries);
	return nvb_copy_out(uarg, &arg, sizeof(arg), usize);
}

/*
 * The whole command number is matched, size and direction included; the
 * struct's own .size field is the extension mechanism.  Changing the
 * registry needs a file opened for writing.
 */
VISIBLE_IF_KUNIT long nvb_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
	struct nvb_file *f = filp->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case NVBRIDGE_IOC_PUBLISH:
		if (!(filp->f_mode & FMODE_WRITE))
			return -EBADF;
		return nvb_ioctl_publish(f, uarg);
	case NVBRIDGE_IOC_FETCH:
		return nvb_ioctl_fetch(f, uarg);
	case NVBRIDGE_IOC_UNPUBLISH:
		if (!(filp->f_mode & FMODE_WRITE))
			return -EBADF;
		return nvb_ioctl_unpublish(f, uarg);
	case NVBRIDGE_IOC_WATCH:
		return nvb_ioctl_watch(f, uarg);
	case NVBRIDGE_IOC_UNWATCH:
		return nvb_ioctl_unwatch(f, uarg);
	case NVBRIDGE_IOC_LIST:
		return nvb_ioctl_list(f, uarg);
	case NVBRIDGE_IOC_INFO:
		return nvb_ioctl_info(f, uarg);
	default:
		return -ENOTTY;
	}
}

/* ------------------------------------------------------------------ */
/* File operations                                                    */

static ssize_t nvb_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	struct nvb_file *f = iocb->ki_filp->private_data;
	bool nonblock = (iocb->ki_flags & IOCB_NOWAIT) ||
			(iocb->ki_filp->f_flags & O_NONBLOCK);
	struct nvbridge_event ev;
	struct nvb_event_node *n;
	ssize_t done = 0;
	int ret = 0;

	if (iov_iter_count(to) < sizeof(ev))
		return -EINVAL;
	if (nonblock) {
		if (!mutex_trylock(&f->read_mutex))
			return -EAGAIN;
	} else if (mutex_lock_interruptible(&f->read_mutex)) {
		return -ERESTARTSYS;
	}
	while (iov_iter_count(to) >= sizeof(ev)) {
		n = nvb_event_take(f, &ev);
		if (IS_ERR(n)) {
			if (done)
				break;
			if (nonblock) {
				ret = -EAGAIN;
				break;
			}
			ret = wait_event_interruptible(f->read_wq,
						       nvb_events_ready(f));
			if (ret)
				break;
			continue;
		}
		if (copy_to_iter(&ev, sizeof(ev), to) != sizeof(ev)) {
			if (n)
				nvb_event_put_back(f, n);
			ret = -EFAULT;
			break;
		}
		if (!n)
			nvb_event_commit_overflow(f, ev.lost);
		kfree(n);
		done += sizeof(ev);
	}
	mutex_unlock(&f->read_mutex);
	return done ? done : ret;
}

VISIBLE_IF_KUNIT __poll_t nvb_poll(struct file *filp, poll_table *wait)
{
	struct nvb_file *f = filp->private_data;

	poll_wait(filp, &f->read_wq, wait);
	return nvb_events_ready(f) ? EPOLLIN | EPOLLRDNORM : 0;
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
static struct nvb_file *nvb_file_create(struct file *filp)
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
static void nvb_file_destroy(struct nvb_file *f)
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

VISIBLE_IF_KUNIT int nvb_open(struct inode *inode, struct file *filp)
{
	struct nvb_file *f;
	int ret;

	ret = stream_open(inode, filp);
	if (ret)
		return ret;
	f = nvb_file_create(filp);
	if (!f)
		return -ENOMEM;
	filp->private_data = f;
	filp->f_mode |= FMODE_NOWAIT;
	return 0;
}

static int nvb_release(struct inode *inode, struct file *filp)
{
	nvb_file_destroy(filp->private_data);
	return 0;
}

VISIBLE_IF_KUNIT const struct file_operations nvb_fops = {
	.owner		= THIS_MODULE,
	.open		= nvb_open,
	.release	= nvb_release,
	.read_iter	= nvb_read_iter,
	.poll		= nvb_poll,
	.unlocked_ioctl	= nvb_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
};

/* ------------------------------------------------------------------ */
/* sysfs: /sys/class/misc/nvbridge/ (Documentation/ABI/testing/)       */

static ssize_t abi_version_show(struct device *dev,
				struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", NVBRIDGE_ABI_VERSION);
}
static DEVICE_ATTR_RO(abi_version);

/* Every scope's entries: root only, it would tell of other containers. */
static ssize_t entries_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	return sysfs_emit(buf, "%d\n", atomic_read(&nvb_nr_entries));
}
static DEVICE_ATTR_ADMIN_RO(entries);

#define NVB_LIMIT_ATTR(name)						\
static ssize_t name##_show(struct device *dev,				\
			   struct device_attribute *attr, char *buf)	\
{									\
	return sysfs_emit(buf, "%u\n", nvb_limit(&nvb_##name));		\
}									\
static DEVICE_ATTR_RO(name)

NVB_LIMIT_ATTR(max_entries_per_user);
NVB_LIMIT_ATTR(max_bytes_per_user);
NVB_LIMIT_ATTR(max_blob_size);
NVB_LIMIT_ATTR(max_events);
NVB_LIMIT_ATTR(max_watches);

static struct attribute *nvb_attrs[] = {
	&dev_attr_abi_version.attr,
	&dev_attr_entries.attr,
	&dev_attr_max_entries_per_user.attr,
	&dev_attr_max_bytes_per_user.attr,
	&dev_attr_max_blob_size.attr,
	&dev_attr_max_events.attr,
	&dev_attr_max_watches.attr,
	NULL
};
ATTRIBUTE_GROUPS(nvb);

static struct miscdevice nvb_misc = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "nvbridge",
	.fops	= &nvb_fops,
	.groups	= nvb_groups,
	.mode	= 0666,
};

static int __init nvb_init(void)
{
	return misc_register(&nvb_misc);
}

static void __exit nvb_exit(void)
{
	misc_deregister(&nvb_misc);
}

module_init(nvb_init);
module_exit(nvb_exit);

MODULE_DESCRIPTION("nvbridge: namespace-aware fd and blob rendezvous");
MODULE_AUTHOR("The nvbridge authors");
MODULE_LICENSE("GPL");
