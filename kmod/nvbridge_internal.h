/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nvbridge: internal structures shared by nvbridge_main.c and its KUnit
 * suite (nvbridge_kunit.c, linked into the same module), and the API
 * between nvbridge_main.c (device, ioctls) and nvbridge_registry.c.
 *
 * Locking.  There is no lock shared by all scopes on any ioctl, read or
 * poll path:
 *  - nvb_scopes_lock (mutex) and nvb_users_lock (spinlock) are taken only
 *    by open() and release(), for O(1) hash-table work: finding or
 *    creating the file's scope and its opener's quota record.
 *  - scope->lock (mutex) protects one IPC namespace's entries, name and
 *    id indexes, watch indexes and every watch list of its files.  Work
 *    under it is bounded: lookups are hashed, a publish visits only the
 *    watches that match its name (at most NVBRIDGE_NAME_MAX prefix
 *    probes plus one exact probe), and nothing under it touches user
 *    memory or sleeps for memory.
 *  - file->ev_lock (spinlock) protects one file's event queue; taken
 *    inside scope->lock to queue, alone to read.
 *  - Quota counters are atomics in the opener's nvb_user record.
 */
#ifndef _NVBRIDGE_INTERNAL_H
#define _NVBRIDGE_INTERNAL_H

#include <kunit/visibility.h>
#include <linux/atomic.h>
#include <linux/cred.h>
#include <linux/bits.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/hashtable.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/rbtree.h>
#include <linux/refcount.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/uidgid.h>
#include <linux/wait.h>
#include <linux/xarray.h>
#include <linux/nvbridge.h>

struct ipc_namespace;
struct pid_namespace;
struct mem_cgroup;

/* A bounded, writable module parameter. */
struct nvb_limit {
	unsigned int val;
	unsigned int min;
	unsigned int max;
};

/*
 * A publish wakes only the FETCH_WAIT sleepers whose name hashes to the
 * same bucket; seq is bumped on every publish into the bucket.
 */
#define NVB_PUBLISH_BUCKETS_BITS	4
#define NVB_PUBLISH_BUCKETS		BIT(NVB_PUBLISH_BUCKETS_BITS)

struct nvb_publish_bucket {
	unsigned long seq;
	wait_queue_head_t wq;
};

#define NVB_NAMES_BITS		10
#define NVB_VCOUNT_BITS		8	/* INFO's counters (nvbridge_visible.c) */
#define NVB_VC_MAX		4	/* counters an entry is in */
#define NVB_WATCH_BITS		9

/* All names of one IPC namespace. */
struct nvb_scope {
	struct hlist_node node;		/* in nvb_scopes, nvb_scopes_lock */
	struct ipc_namespace *ipc_ns;	/* referenced */
	unsigned int nr_files;		/* nvb_scopes_lock */

	struct mutex lock;		/* everything below */
	u64 last_id;			/* ids are per scope, from 1 */
	unsigned int nr_entries;	/* live entries */
	struct xarray ids;		/* id -> entry, live or pending */
	DECLARE_HASHTABLE(names, NVB_NAMES_BITS);	/* entries by name */
	DECLARE_HASHTABLE(vcounts, NVB_VCOUNT_BITS);	/* INFO's counts, by uid */
	struct rb_root vgacl;		/* INFO's group counts: GACL by gid */
	struct rb_root vgown;		/* GOWN by uid << 32 | gid */
	unsigned int nvgacl;		/* GACL ones (read unlocked by nvb_vlist_alloc()) */
	u32 vseed;			/* their hash's, random: ids are chosen by clients */
	unsigned long nsalt;		/* the name indexes' hash's, random (nvb_hash()) */
	DECLARE_HASHTABLE(exact, NVB_WATCH_BITS);	/* exact watches */
	DECLARE_HASHTABLE(prefix, NVB_WATCH_BITS);	/* prefix watches */
	struct nvb_publish_bucket publish[NVB_PUBLISH_BUCKETS];
};

/* Per-user counters for the quotas, over all scopes. */
struct nvb_user {
	struct hlist_node node;		/* nvb_users_lock */
	kuid_t uid;
	unsigned int nr_files;		/* nvb_users_lock */
	atomic_t entries;
	atomic_long_t bytes;
	atomic_t watches;
};

/*
 * One published name.  Its identity is (scope, pub_uid, name).  Entries
 * are reference counted: the scope's indexes hold one, a fetch in
 * progress holds one while it copies the blob out.
 */
struct nvb_entry {
	refcount_t ref;
	struct hlist_node name_node;	/* in scope->names */
	struct list_head owner_node;	/* in owner->entries */
	struct nvb_file *owner;
	u64 id;
	u32 hash;			/* of name */
	bool live;			/* visible: PUBLISH returned its id */
	char name[NVBRIDGE_NAME_MAX];
	struct file *file;		/* NULL when none; a reference */
	void *blob;			/* blob_len bytes, kvmalloc'ed, or NULL */
	u32 blob_len;
	u32 access;
	kuid_t acl_uid;			/* NVBRIDGE_ACCESS_UID */
	kgid_t acl_gid;			/* NVBRIDGE_ACCESS_GID */
	kuid_t pub_uid;			/* opener's euid */
	kgid_t pub_gid;			/* opener's egid */
	struct pid *pub_pid;		/* opener's thread group, a reference */
	struct nvb_vcount *vc[NVB_VC_MAX];	/* INFO's counters it is in */
	u8 nvc;
};

struct nvb_watch {
	struct hlist_node index_node;	/* scope->exact or scope->prefix */
	struct list_head node;		/* in file->watches */
	struct nvb_file *file;
	u64 id;
	u32 flags;
	u32 hash;			/* of name[0..len) */
	u32 len;
	char name[NVBRIDGE_NAME_MAX];
};

struct nvb_event_node {
	struct list_head node;
	struct nvbridge_event ev;
};

/*
 * The state of one open /dev/nvbridge.  Everything the module learns
 * about its user is taken once, at open(), from the opening task.
 */
struct nvb_file {
	const struct cred *cred;	/* the open file's f_cred, owned by it */
	struct pid *pid;		/* opener's thread group */
	struct pid_namespace *pid_ns;	/* opener's, a reference */
	struct mem_cgroup *memcg;	/* opener's, charged for its events */
	struct nvb_scope *scope;
	struct nvb_user *user;		/* quota record of cred->euid */
	bool ipc_owner;			/* CAP_IPC_OWNER over the scope */

	struct list_head entries;	/* owned, scope->lock */
	struct list_head watches;	/* scope->lock */
	unsigned int nr_watches;
	u64 next_watch_id;

	struct mutex read_mutex;	/* serialises readers */
	spinlock_t ev_lock;		/* protects the fields below */
	struct list_head events;
	unsigned int nr_events;
	u32 lost;
	u64 ev_seq;
	wait_queue_head_t read_wq;
};

/* What a fetch takes away from the registry, so it can drop the lock. */
struct nvb_fetched {
	struct nvb_entry *e;		/* a reference, or NULL */
	struct file *file;		/* e->file, borrowed */
	const void *blob;		/* e->blob, borrowed */
	u32 blob_len;
	u64 id;
	u32 pid, uid, gid, access, entry_flags;
};

/* nvbridge_main.c */
extern struct nvb_limit nvb_max_entries_per_user, nvb_max_bytes_per_user,
	nvb_max_blob_size, nvb_max_events, nvb_max_watches,
	nvb_max_watches_per_user;
unsigned int nvb_limit(const struct nvb_limit *l);

/* nvbridge_registry.c */
extern atomic_t nvb_nr_entries;		/* every scope's, for root's sysfs */
int nvb_name_check(const char *name, bool prefix);
struct nvb_file *nvb_file_create(struct file *filp);
void nvb_file_destroy(struct nvb_file *f);
int nvb_watch_add(struct nvb_file *f, u32 flags, const char *name, u64 *id);
int nvb_watch_del(struct nvb_file *f, u64 id);
struct nvb_entry *nvb_entry_new(struct nvb_file *f, const char *name,
				struct file *file, void *blob, u32 blob_len,
				u32 access, kuid_t acl_uid, kgid_t acl_gid);
int nvb_entry_reserve(struct nvb_file *f, struct nvb_entry *e);
void nvb_entry_commit(struct nvb_file *f, struct nvb_entry *e);
void nvb_entry_abort(struct nvb_file *f, struct nvb_entry *e);
void nvb_entry_put(struct nvb_entry *e);
int nvb_unpublish(struct nvb_file *f, u64 id, const char *name);
int nvb_fetch_expect(struct nvb_file *f, const char *name, u32 blob_cap,
		     kuid_t expect, bool wait, s64 *timeout_ns,
		     struct nvb_fetched *r);
void nvb_fetched_release(struct nvb_fetched *r);
unsigned int nvb_list_collect(struct nvb_file *f, u64 cursor,
			      struct nvbridge_entry_info *out,
			      unsigned int max);
unsigned int nvb_visible_entries(struct nvb_file *f);

/* nvbridge_visible.c: INFO's count, kept per scope (all under scope->lock) */
struct nvb_vcount;
int nvb_visible_link(struct nvb_scope *s, struct nvb_entry *e);
void nvb_visible_unlink(struct nvb_scope *s, struct nvb_entry *e);
void nvb_visible_set(struct nvb_entry *e, bool live);
unsigned int nvb_visible_count(struct nvb_scope *s, const struct cred *cred);
bool nvb_cred_has_gid(const struct cred *cred, kgid_t gid);
/* and LIST's merge of what a policy admits, in id order (nvb_list_collect()) */
struct nvb_vlist;
struct nvb_vlist *nvb_vlist_alloc(struct nvb_scope *s, const struct cred *cred, bool worst);
int nvb_vlist_start(struct nvb_vlist *l, struct nvb_scope *s, const struct cred *cred,
		    unsigned long after);
struct nvb_entry *nvb_vlist_next(struct nvb_vlist *l);
bool nvb_events_ready(struct nvb_file *f);
struct nvb_event_node *nvb_event_take(struct nvb_file *f,
				      struct nvbridge_event *ev);
void nvb_event_put_back(struct nvb_file *f, struct nvb_event_node *n);
void nvb_event_commit_overflow(struct nvb_file *f, u32 lost);

/*
 * Tracepoint arguments (nvbridge_trace.h): what @f did to @e, ids in the
 * initial namespaces.
 */
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

/*
 * What only the KUnit suite (nvbridge_kunit.c, linked into the same
 * module) reaches besides the above: static unless CONFIG_KUNIT.  Nothing
 * is exported: the suite is part of nvbridge.ko.
 */
#if IS_ENABLED(CONFIG_KUNIT)
extern spinlock_t nvb_users_lock;
extern const struct file_operations nvb_fops;

int nvb_policy_ids(const struct nvb_file *f,
		   const struct nvbridge_publish *arg, kuid_t *uid,
		   kgid_t *gid);
struct nvb_user *nvb_user_find(kuid_t uid);
bool nvb_watch_matches(const struct nvb_watch *w, const char *name);
struct nvb_publish_bucket *nvb_publish_bucket(struct nvb_scope *s,
					      const char *name);
int nvb_open(struct inode *inode, struct file *filp);
long nvb_ioctl(struct file *filp, unsigned int cmd, unsigned long arg);
__poll_t nvb_poll(struct file *filp, poll_table *wait);
#endif /* CONFIG_KUNIT */

#endif /* _NVBRIDGE_INTERNAL_H */
