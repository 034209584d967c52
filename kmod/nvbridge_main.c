// SPDX-License-Identifier: GPL-2.0
/*
 * nvbridge: /dev/nvbridge, a credential-checked, namespace-aware
 * rendezvous for file descriptors and small opaque blobs.
 *
 * A process publishes a file and/or a blob under a name with an access
 * policy; others in the same IPC namespace fetch it by name.  An entry
 * belongs to the open file that published it and is revoked when that file
 * is released.  Watchers read fixed-size event records.
 *
 * See Documentation/abi.rst and include/uapi/linux/nvbridge.h.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/device.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/hash.h>
#include <linux/hrtimer.h>
#include <linux/ipc_namespace.h>
#include <linux/memcontrol.h>
#include <linux/kernel.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/net.h>
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
#include <net/sock.h>
#include <uapi/linux/magic.h>

#include "nvbridge_internal.h"

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

static struct nvb_limit nvb_max_entries_per_user = { 1024, 1, 1048576 };
static struct nvb_limit nvb_max_blob_size = { 4096, 0, NVBRIDGE_BLOB_MAX };
static struct nvb_limit nvb_max_events = { 1024, 1, 65536 };
static struct nvb_limit nvb_max_watches = { 64, 1, 4096 };

module_param_cb(max_entries_per_user, &nvb_limit_ops,
		&nvb_max_entries_per_user, 0644);
MODULE_PARM_DESC(max_entries_per_user,
		 "Entries one user may own, over all scopes (default 1024)");
module_param_cb(max_blob_size, &nvb_limit_ops, &nvb_max_blob_size, 0644);
MODULE_PARM_DESC(max_blob_size, "Largest blob in bytes (default 4096, max 65536)");
module_param_cb(max_events, &nvb_limit_ops, &nvb_max_events, 0644);
MODULE_PARM_DESC(max_events, "Event queue depth per open file (default 1024)");
module_param_cb(max_watches, &nvb_limit_ops, &nvb_max_watches, 0644);
MODULE_PARM_DESC(max_watches, "Watches per open file (default 64)");

static unsigned int nvb_limit(const struct nvb_limit *l)
{
	return READ_ONCE(l->val);
}

/* ------------------------------------------------------------------ */
/* Global state                                                       */

static DEFINE_MUTEX(nvb_lock);
static LIST_HEAD(nvb_scopes);
static DEFINE_HASHTABLE(nvb_users, 6);
static unsigned int nvb_nr_entries;
static u64 nvb_last_id;		/* under nvb_lock: ids follow list order */

static const struct file_operations nvb_fops;

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
static int nvb_name_check(const char *name, bool prefix)
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

/* @gid is @cred's egid or one of its supplementary groups (sorted). */
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
 * judged on the credentials captured at open (f->ipc_owner is computed
 * once there, without auditing, so that denials do not flood the log).
 */
static bool nvb_may_access(const struct nvb_file *f, const struct nvb_entry *e)
{
	return f->ipc_owner || nvb_policy_allows(f->cred, e);
}

static void nvb_peer_ids(const struct nvb_file *f, const struct nvb_entry *e,
			 u32 *pid, u32 *uid, u32 *gid)
{
	/* A dead publisher's number may belong to someone else by now. */
	*pid = pid_has_task(e->pub_pid, PIDTYPE_TGID) ?
	       pid_nr_ns(e->pub_pid, f->pid_ns) : 0;
	*uid = from_kuid_munged(f->cred->user_ns, e->pub_uid);
	*gid = from_kgid_munged(f->cred->user_ns, e->pub_gid);
}

/* ------------------------------------------------------------------ */
/* Scopes                                                             */

static void nvb_put_ipc_ns(struct ipc_namespace *ns)
{
#ifdef CONFIG_IPC_NS
	/* put_ipc_ns() is not exported; its ns_common operation is. */
	ns->ns.ops->put(&ns->ns);
#endif
}

/* Called with nvb_lock held.  Returns a counted scope or NULL. */
static struct nvb_scope *nvb_scope_get(struct ipc_namespace *ns)
{
	struct nvb_scope *s;
	int i;

	lockdep_assert_held(&nvb_lock);
	list_for_each_entry(s, &nvb_scopes, node) {
		if (s->ipc_ns == ns) {
			s->nr_files++;
			return s;
		}
	}
	s = kzalloc(sizeof(*s), GFP_KERNEL_ACCOUNT);
	if (!s)
		return NULL;
	s->ipc_ns = get_ipc_ns(ns);
	s->nr_files = 1;
	INIT_LIST_HEAD(&s->entries);
	hash_init(s->names);
	INIT_LIST_HEAD(&s->watchers);
	for (i = 0; i < NVB_PUBLISH_BUCKETS; i++)
		init_waitqueue_head(&s->publish[i].wq);
	list_add(&s->node, &nvb_scopes);
	return s;
}

/* Called with nvb_lock held, after the file's entries are gone. */
static void nvb_scope_put(struct nvb_scope *s)
{
	lockdep_assert_held(&nvb_lock);
	if (--s->nr_files)
		return;
	WARN_ON(s->nr_entries || !list_empty(&s->entries) ||
		!list_empty(&s->watchers));
	list_del(&s->node);
	nvb_put_ipc_ns(s->ipc_ns);
	kfree(s);
}

/* ------------------------------------------------------------------ */
/* Per-user quota                                                     */

static struct nvb_user *nvb_user_find(kuid_t uid)
{
	struct nvb_user *u;

	hash_for_each_possible(nvb_users, u, node, __kuid_val(uid))
		if (uid_eq(u->uid, uid))
			return u;
	return NULL;
}

static unsigned int nvb_user_entries(kuid_t uid)
{
	struct nvb_user *u = nvb_user_find(uid);

	return u ? u->entries : 0;
}

static int nvb_quota_charge(kuid_t uid)
{
	struct nvb_user *u;

	lockdep_assert_held(&nvb_lock);
	u = nvb_user_find(uid);
	if (u) {
		if (u->entries >= nvb_limit(&nvb_max_entries_per_user))
			return -EDQUOT;
		u->entries++;
		return 0;
	}
	u = kzalloc(sizeof(*u), GFP_KERNEL_ACCOUNT);
	if (!u)
		return -ENOMEM;
	u->uid = uid;
	u->entries = 1;
	hash_add(nvb_users, &u->node, __kuid_val(uid));
	return 0;
}

static void nvb_quota_uncharge(kuid_t uid)
{
	struct nvb_user *u;

	lockdep_assert_held(&nvb_lock);
	u = nvb_user_find(uid);
	if (WARN_ON(!u))
		return;
	if (--u->entries)
		return;
	hash_del(&u->node);
	kfree(u);
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

	/* Charged to the watcher, who decides how much it queues. */
	if (!READ_ONCE(f->lost) &&
	    READ_ONCE(f->nr_events) < nvb_limit(&nvb_max_events)) {
		old_memcg = set_active_memcg(f->memcg);
		n = kzalloc(sizeof(*n), GFP_KERNEL_ACCOUNT);
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

static bool nvb_watch_matches(const struct nvb_watch *w, const char *name)
{
	if (w->flags & NVBRIDGE_WATCH_PREFIX)
		return !strncmp(w->name, name, w->len);
	return !strcmp(w->name, name);
}

/* Tell every watcher of @e's scope that may see @e.  nvb_lock held. */
static void nvb_notify(struct nvb_scope *s, const struct nvb_entry *e,
		       u16 type, u16 reason)
{
	struct nvb_file *wf;
	struct nvb_watch *w;

	lockdep_assert_held(&nvb_lock);
	list_for_each_entry(wf, &s->watchers, watcher_node) {
		if (!nvb_may_access(wf, e))
			continue;
		list_for_each_entry(w, &wf->watches, node)
			if (nvb_watch_matches(w, e->name))
				nvb_event_queue(wf, e, w->id, type, reason);
	}
}

/* ------------------------------------------------------------------ */
/* Entries                                                            */

/* A blob of @len bytes, one reference, its data still to be filled. */
static struct nvb_blob *nvb_blob_alloc(u32 len)
{
	struct nvb_blob *b;

	b = kmalloc(struct_size(b, data, len), GFP_KERNEL_ACCOUNT);
	if (b) {
		refcount_set(&b->ref, 1);
		b->len = len;
	}
	return b;
}

static void nvb_blob_put(struct nvb_blob *b)
{
	if (b && refcount_dec_and_test(&b->ref))
		kfree(b);
}

static u32 nvb_entry_blob_len(const struct nvb_entry *e)
{
	return e->blob ? e->blob->len : 0;
}

static void nvb_entry_free(struct nvb_entry *e)
{
	if (e->file)
		fput(e->file);
	put_pid(e->pub_pid);
	nvb_blob_put(e->blob);
	kfree(e);
}

/*
 * A new entry published through @f, not yet linked.  Takes over @file and
 * @blob (references, each may be NULL) only on success.
 */
static struct nvb_entry *nvb_entry_new(struct nvb_file *f, const char *name,
				       struct file *file, struct nvb_blob *blob,
				       u32 access, kuid_t acl_uid,
				       kgid_t acl_gid)
{
	struct nvb_entry *e;

	e = kzalloc(sizeof(*e), GFP_KERNEL_ACCOUNT);
	if (!e)
		return NULL;
	INIT_LIST_HEAD(&e->scope_node);
	INIT_HLIST_NODE(&e->name_node);
	INIT_LIST_HEAD(&e->owner_node);
	strscpy(e->name, name, sizeof(e->name));
	e->file = file;
	e->blob = blob;
	e->access = access;
	e->acl_uid = acl_uid;
	e->acl_gid = acl_gid;
	e->pub_uid = f->cred->euid;
	e->pub_gid = f->cred->egid;
	e->pub_pid = get_pid(task_tgid(current));
	return e;
}

static u32 nvb_name_hash(const char *name)
{
	return full_name_hash(NULL, name, strlen(name));
}

static struct nvb_publish_bucket *nvb_publish_bucket(struct nvb_scope *s,
						     const char *name)
{
	return &s->publish[hash_32(nvb_name_hash(name),
				   NVB_PUBLISH_BUCKETS_BITS)];
}

static struct nvb_entry *nvb_scope_find(struct nvb_scope *s, const char *name)
{
	struct nvb_entry *e;

	hash_for_each_possible(s->names, e, name_node, nvb_name_hash(name))
		if (!strcmp(e->name, name))
			return e;
	return NULL;
}

static struct nvb_entry *nvb_scope_find_id(struct nvb_scope *s, u64 id)
{
	struct nvb_entry *e;

	list_for_each_entry(e, &s->entries, scope_node)
		if (e->id == id)
			return e;
	return NULL;
}

/*
 * Link @e into @f's scope under a fresh id, allocated under nvb_lock so
 * that the scope's list stays in id order (LIST's cursor relies on it),
 * and stored in *@id.  -EEXIST if the name is taken, -EDQUOT if the
 * publisher is at its quota.  On success the entry belongs to @f (and may
 * be gone as soon as the lock is dropped); on failure the caller still
 * owns it.
 */
static int nvb_entry_publish(struct nvb_file *f, struct nvb_entry *e, u64 *id)
{
	struct nvb_scope *s = f->scope;
	struct nvb_publish_bucket *b;
	int ret;

	mutex_lock(&nvb_lock);
	if (nvb_scope_find(s, e->name)) {
		ret = -EEXIST;
		goto out_unlock;
	}
	ret = nvb_quota_charge(e->pub_uid);
	if (ret)
		goto out_unlock;
	e->id = ++nvb_last_id;
	*id = e->id;
	e->owner = f;
	list_add_tail(&e->scope_node, &s->entries);
	hash_add(s->names, &e->name_node, nvb_name_hash(e->name));
	list_add_tail(&e->owner_node, &f->entries);
	s->nr_entries++;
	WRITE_ONCE(nvb_nr_entries, nvb_nr_entries + 1);
	nvb_notify(s, e, NVBRIDGE_EVENT_PUBLISHED, NVBRIDGE_REVOKE_NONE);
	b = nvb_publish_bucket(s, e->name);
	WRITE_ONCE(b->seq, b->seq + 1);
	wake_up_all(&b->wq);
out_unlock:
	mutex_unlock(&nvb_lock);
	return ret;
}

/* Unlink @e and tell watchers why.  nvb_lock held; caller frees @e. */
static void nvb_entry_revoke(struct nvb_entry *e, u16 reason)
{
	struct nvb_scope *s = e->owner->scope;

	lockdep_assert_held(&nvb_lock);
	list_del_init(&e->scope_node);
	hash_del(&e->name_node);
	list_del_init(&e->owner_node);
	s->nr_entries--;
	WRITE_ONCE(nvb_nr_entries, nvb_nr_entries - 1);
	nvb_quota_uncharge(e->pub_uid);
	nvb_notify(s, e, NVBRIDGE_EVENT_REVOKED, reason);
}

/* Withdraw an entry of @f by @id, or by @name when @id is 0. */
static int nvb_unpublish(struct nvb_file *f, u64 id, const char *name)
{
	struct nvb_entry *e;
	int ret = 0;

	mutex_lock(&nvb_lock);
	if (id)
		e = nvb_scope_find_id(f->scope, id);
	else
		e = nvb_scope_find(f->scope, name);
	if (!e)
		ret = -ENOENT;
	else if (e->owner != f)
		ret = -EPERM;
	else
		nvb_entry_revoke(e, NVBRIDGE_REVOKE_UNPUBLISHED);
	mutex_unlock(&nvb_lock);
	if (!ret)
		nvb_entry_free(e);
	return ret;
}

/* What a fetch takes away from the registry, so it can drop nvb_lock. */
struct nvb_fetched {
	struct file *file;		/* a reference, or NULL */
	struct nvb_blob *blob;		/* a reference, or NULL */
	u32 blob_len;
	u64 id;
	u32 pid, uid, gid, access, entry_flags;
};

static void nvb_fetched_release(struct nvb_fetched *r)
{
	if (r->file)
		fput(r->file);
	nvb_blob_put(r->blob);
	memset(r, 0, sizeof(*r));
}

/*
 * Look @name up for @f.  -ENOENT, -EACCES, -EPERM when @expect is a valid
 * uid and not the publisher's, or -EMSGSIZE when the blob is larger than
 * @blob_cap (with r->blob_len set); 0 with @r filled.
 * @seq receives the publish counter of @name's bucket as seen under the
 * lock.
 */
static int nvb_fetch_once(struct nvb_file *f, const char *name, u32 blob_cap,
			  kuid_t expect, struct nvb_fetched *r,
			  unsigned long *seq)
{
	struct nvb_entry *e;
	int ret = 0;

	mutex_lock(&nvb_lock);
	*seq = nvb_publish_bucket(f->scope, name)->seq;
	e = nvb_scope_find(f->scope, name);
	if (!e) {
		ret = -ENOENT;
		goto out_unlock;
	}
	if (!nvb_may_access(f, e)) {
		ret = -EACCES;
		goto out_unlock;
	}
	if (uid_valid(expect) && !uid_eq(expect, e->pub_uid)) {
		ret = -EPERM;
		goto out_unlock;
	}
	r->id = e->id;
	r->access = e->access;
	r->blob_len = nvb_entry_blob_len(e);
	r->entry_flags = (e->file ? NVBRIDGE_ENTRY_HAS_FD : 0) |
			 (e->owner == f ? NVBRIDGE_ENTRY_OWN : 0);
	nvb_peer_ids(f, e, &r->pid, &r->uid, &r->gid);
	if (r->blob_len > blob_cap) {
		ret = -EMSGSIZE;
		goto out_unlock;
	}
	/* published blobs never change: a reference, no copy under the lock */
	if (e->blob) {
		refcount_inc(&e->blob->ref);
		r->blob = e->blob;
	}
	if (e->file)
		r->file = get_file(e->file);
out_unlock:
	mutex_unlock(&nvb_lock);
	return ret;
}

static bool nvb_published_since(struct nvb_publish_bucket *b,
				unsigned long seq)
{
	return READ_ONCE(b->seq) != seq;
}

/*
 * nvb_fetch_once(), waiting for the name to appear when @wait is set:
 * forever when @timeout_ns < 0.  -ETIMEDOUT, -EINTR.  @expect: the
 * publisher's required euid, or INVALID_UID for any.
 */
static int nvb_fetch_expect(struct nvb_file *f, const char *name,
			    u32 blob_cap, kuid_t expect, bool wait,
			    s64 timeout_ns, struct nvb_fetched *r)
{
	struct nvb_publish_bucket *b = nvb_publish_bucket(f->scope, name);
	ktime_t deadline = 0;
	unsigned long seq;
	int ret;

	if (wait && timeout_ns >= 0) {
		ktime_t now = ktime_get();

		deadline = timeout_ns > KTIME_MAX - now ? KTIME_MAX :
			   ktime_add_ns(now, timeout_ns);
	}
	for (;;) {
		ret = nvb_fetch_once(f, name, blob_cap, expect, r, &seq);
		if (ret != -ENOENT || !wait)
			return ret;
		if (timeout_ns >= 0) {
			ktime_t left = ktime_sub(deadline, ktime_get());

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
			return -EINTR;
	}
}

/* ------------------------------------------------------------------ */
/* Watches                                                            */

static int nvb_watch_add(struct nvb_file *f, u32 flags, const char *name,
			 u64 *id)
{
	struct nvb_watch *w, *new;
	int ret = 0;

	new = kzalloc(sizeof(*new), GFP_KERNEL_ACCOUNT);
	if (!new)
		return -ENOMEM;
	new->flags = flags;
	new->len = strscpy(new->name, name, sizeof(new->name));

	mutex_lock(&nvb_lock);
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
	if (!f->nr_watches++)
		list_add_tail(&f->watcher_node, &f->scope->watchers);
	list_add_tail(&new->node, &f->watches);
	new = NULL;
out_unlock:
	mutex_unlock(&nvb_lock);
	kfree(new);
	return ret;
}

static void nvb_watch_unlink(struct nvb_file *f, struct nvb_watch *w)
{
	lockdep_assert_held(&nvb_lock);
	list_del(&w->node);
	if (!--f->nr_watches)
		list_del_init(&f->watcher_node);
}

static int nvb_watch_del(struct nvb_file *f, u64 id)
{
	struct nvb_watch *w, *found = NULL;

	mutex_lock(&nvb_lock);
	list_for_each_entry(w, &f->watches, node) {
		if (w->id == id) {
			found = w;
			nvb_watch_unlink(f, w);
			break;
		}
	}
	mutex_unlock(&nvb_lock);
	if (!found)
		return -ENOENT;
	kfree(found);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Argument copying                                                   */

/*
 * Read an extensible argument: its leading size must be at least @ver0;
 * bytes beyond @ksize must be zero (-E2BIG otherwise).
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
	if (size > PAGE_SIZE)
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

/* Files that must not be published: they could own or pin the entry. */
static bool nvb_file_refused(struct file *file)
{
	struct socket *sock;

	if (file->f_op == &nvb_fops)
		return true;
	/* io_uring files can hold registered files, this one included. */
	if (file_inode(file)->i_sb->s_magic == ANON_INODE_FS_MAGIC &&
	    !strcmp(file->f_path.dentry->d_name.name, "[io_uring]"))
		return true;
	/* Unix sockets can carry this file in flight. */
	sock = sock_from_file(file);
	if (sock && sock->sk && sock->sk->sk_family == AF_UNIX)
		return true;
	return false;
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

static int nvb_policy_ids(const struct nvb_file *f,
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

static long nvb_ioctl_publish(struct nvb_file *f,
			      struct nvbridge_publish __user *uarg)
{
	struct nvbridge_publish arg;
	struct file *file = NULL;
	struct nvb_blob *blob = NULL;
	struct nvb_entry *e;
	kuid_t acl_uid;
	kgid_t acl_gid;
	u32 usize;
	u64 id;
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

	if (arg.blob_len) {
		blob = nvb_blob_alloc(arg.blob_len);
		if (!blob)
			return -ENOMEM;
		if (copy_from_user(blob->data, u64_to_user_ptr(arg.blob),
				   arg.blob_len)) {
			ret = -EFAULT;
			goto err_free_blob;
		}
	}
	if (arg.fd != NVBRIDGE_NO_FD) {
		file = arg.fd >= 0 ? fget(arg.fd) : NULL;
		if (!file) {
			ret = -EBADF;
			goto err_free_blob;
		}
		if (nvb_file_refused(file)) {
			ret = -EINVAL;
			goto err_put_file;
		}
	}
	e = nvb_entry_new(f, arg.name, file, blob, arg.access, acl_uid,
			  acl_gid);
	if (!e) {
		ret = -ENOMEM;
		goto err_put_file;
	}
	ret = nvb_entry_publish(f, e, &id);
	if (ret)
		goto err_free_entry;
	/* The struct was writable a moment ago; if not now, take it back. */
	if (put_user(id, &uarg->id)) {
		nvb_unpublish(f, id, NULL);
		return -EFAULT;
	}
	return 0;

err_free_entry:
	nvb_entry_free(e);		/* drops @file and @blob too */
	return ret;
err_put_file:
	if (file)
		fput(file);
err_free_blob:
	nvb_blob_put(blob);
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
			       arg.flags & NVBRIDGE_FETCH_WAIT, arg.timeout_ns,
			       &r);
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
	    copy_to_user(u64_to_user_ptr(arg.blob), r.blob->data, r.blob_len))
		ret = -EFAULT;
	if (ret != -EFAULT && nvb_copy_out(uarg, &arg, sizeof(arg), usize))
		ret = -EFAULT;
	if (ret || !r.file)
		goto out_release;

	/* The last step: nothing can fail after the fd is installed. */
	o_flags = (arg.flags & NVBRIDGE_FETCH_NO_CLOEXEC) ? 0 : O_CLOEXEC;
	ret = nvb_receive_fd(r.file, o_flags);
out_release:
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
	if (!arg.id) {
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
static unsigned int nvb_list_collect(struct nvb_file *f, u64 cursor,
				     struct nvbridge_entry_info *out,
				     unsigned int max)
{
	struct nvb_entry *e;
	unsigned int n = 0;

	mutex_lock(&nvb_lock);
	list_for_each_entry(e, &f->scope->entries, scope_node) {
		struct nvbridge_entry_info *i;

		if (n == max)
			break;
		if (e->id <= cursor || !nvb_may_access(f, e))
			continue;
		i = &out[n];
		memset(i, 0, sizeof(*i));
		i->id = e->id;
		nvb_peer_ids(f, e, &i->pid, &i->uid, &i->gid);
		i->access = e->access;
		i->blob_len = nvb_entry_blob_len(e);
		i->flags = (e->file ? NVBRIDGE_ENTRY_HAS_FD : 0) |
			   (e->owner == f ? NVBRIDGE_ENTRY_OWN : 0);
		strscpy(i->name, e->name, sizeof(i->name));
		n++;
	}
	mutex_unlock(&nvb_lock);
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
	if (arg.entry_size > PAGE_SIZE)
		return -E2BIG;
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
	mutex_lock(&nvb_lock);
	arg.entries = f->scope->nr_entries;
	arg.user_entries = nvb_user_entries(f->cred->euid);
	mutex_unlock(&nvb_lock);
	return nvb_copy_out(uarg, &arg, sizeof(arg), usize);
}

/* Commands are matched on type, number and direction: the size in the
 * command number is that of the first version of each struct.
 */
#define NVB_CMD_KEY(cmd)	((cmd) & ~(_IOC_SIZEMASK << _IOC_SIZESHIFT))

static long nvb_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
	struct nvb_file *f = filp->private_data;
	void __user *uarg = (void __user *)arg;

	switch (NVB_CMD_KEY(cmd)) {
	case NVB_CMD_KEY(NVBRIDGE_IOC_PUBLISH):
		return nvb_ioctl_publish(f, uarg);
	case NVB_CMD_KEY(NVBRIDGE_IOC_FETCH):
		return nvb_ioctl_fetch(f, uarg);
	case NVB_CMD_KEY(NVBRIDGE_IOC_UNPUBLISH):
		return nvb_ioctl_unpublish(f, uarg);
	case NVB_CMD_KEY(NVBRIDGE_IOC_WATCH):
		return nvb_ioctl_watch(f, uarg);
	case NVB_CMD_KEY(NVBRIDGE_IOC_UNWATCH):
		return nvb_ioctl_unwatch(f, uarg);
	case NVB_CMD_KEY(NVBRIDGE_IOC_LIST):
		return nvb_ioctl_list(f, uarg);
	case NVB_CMD_KEY(NVBRIDGE_IOC_INFO):
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

static __poll_t nvb_poll(struct file *filp, poll_table *wait)
{
	struct nvb_file *f = filp->private_data;

	poll_wait(filp, &f->read_wq, wait);
	return nvb_events_ready(f) ? EPOLLIN | EPOLLRDNORM : 0;
}

/*
 * CAP_IPC_OWNER over the scope, judged on @cred (the file's, which is not
 * always the caller's) and not audited: it is a check, not a request.
 */
static bool nvb_cred_ipc_owner(const struct cred *cred, struct nvb_scope *s)
{
	const struct cred *old = override_creds(cred);
	bool ret = ns_capable_noaudit(s->ipc_ns->user_ns, CAP_IPC_OWNER);

	revert_creds(old);
	return ret;
}

/* The state of an open file, as if opened by the current task. */
static struct nvb_file *nvb_file_create(struct file *filp)
{
	struct nvb_file *f;

	f = kzalloc(sizeof(*f), GFP_KERNEL_ACCOUNT);
	if (!f)
		return NULL;
	f->cred = filp->f_cred;
	INIT_LIST_HEAD(&f->entries);
	INIT_LIST_HEAD(&f->watches);
	INIT_LIST_HEAD(&f->watcher_node);
	INIT_LIST_HEAD(&f->events);
	mutex_init(&f->read_mutex);
	spin_lock_init(&f->ev_lock);
	init_waitqueue_head(&f->read_wq);

	mutex_lock(&nvb_lock);
	f->scope = nvb_scope_get(current->nsproxy->ipc_ns);
	mutex_unlock(&nvb_lock);
	if (!f->scope)
		goto err_free;
	f->pid_ns = get_pid_ns(task_active_pid_ns(current));
	f->memcg = get_mem_cgroup_from_mm(current->mm);
	f->ipc_owner = nvb_cred_ipc_owner(filp->f_cred, f->scope);
	return f;

err_free:
	kfree(f);
	return NULL;
}

/*
 * Revoke everything @f owns (why: the releasing task exits, or not), drop
 * its watches, events and scope.
 */
static void nvb_file_destroy(struct nvb_file *f)
{
	u16 reason = (current->flags & PF_EXITING) ? NVBRIDGE_REVOKE_EXITED :
						     NVBRIDGE_REVOKE_CLOSED;
	struct nvb_entry *e, *etmp;
	struct nvb_watch *w, *wtmp;
	LIST_HEAD(dead);

	mutex_lock(&nvb_lock);
	list_for_each_entry_safe(w, wtmp, &f->watches, node) {
		nvb_watch_unlink(f, w);
		kfree(w);
	}
	list_for_each_entry_safe(e, etmp, &f->entries, owner_node) {
		nvb_entry_revoke(e, reason);
		list_add_tail(&e->owner_node, &dead);
	}
	nvb_scope_put(f->scope);
	mutex_unlock(&nvb_lock);

	list_for_each_entry_safe(e, etmp, &dead, owner_node)
		nvb_entry_free(e);
	nvb_events_free(f);
	mem_cgroup_put(f->memcg);
	put_pid_ns(f->pid_ns);
	mutex_destroy(&f->read_mutex);
	kfree(f);
}

static int nvb_open(struct inode *inode, struct file *filp)
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

static const struct file_operations nvb_fops = {
	.owner		= THIS_MODULE,
	.open		= nvb_open,
	.release	= nvb_release,
	.read_iter	= nvb_read_iter,
	.poll		= nvb_poll,
	.unlocked_ioctl	= nvb_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
};

/* ------------------------------------------------------------------ */
/* sysfs: /sys/class/misc/nvbridge/                                   */

static ssize_t abi_version_show(struct device *dev,
				struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", NVBRIDGE_ABI_VERSION);
}
static DEVICE_ATTR_RO(abi_version);

static ssize_t entries_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	return sysfs_emit(buf, "%u\n", READ_ONCE(nvb_nr_entries));
}
static DEVICE_ATTR_RO(entries);

#define NVB_LIMIT_ATTR(name)						\
static ssize_t name##_show(struct device *dev,				\
			   struct device_attribute *attr, char *buf)	\
{									\
	return sysfs_emit(buf, "%u\n", nvb_limit(&nvb_##name));		\
}									\
static DEVICE_ATTR_RO(name)

NVB_LIMIT_ATTR(max_entries_per_user);
NVB_LIMIT_ATTR(max_blob_size);
NVB_LIMIT_ATTR(max_events);
NVB_LIMIT_ATTR(max_watches);

static struct attribute *nvb_attrs[] = {
	&dev_attr_abi_version.attr,
	&dev_attr_entries.attr,
	&dev_attr_max_entries_per_user.attr,
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
	int ret;

	ret = misc_register(&nvb_misc);
	if (ret) {
		pr_err("cannot register /dev/nvbridge: %d\n", ret);
		return ret;
	}
	pr_info("ABI %u ready\n", NVBRIDGE_ABI_VERSION);
	return 0;
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

#if IS_ENABLED(CONFIG_NVBRIDGE_KUNIT_TEST)
#include "nvbridge_kunit.c"
#endif
