/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nvbridge: internal structures shared by nvbridge_main.c and its KUnit
 * suite (nvbridge_kunit.c, compiled into the same unit).
 *
 * Locking: nvb_lock (a mutex) protects the scope list, every scope's
 * entries and watcher list, every file's entries and watches, and the
 * per-user quota table.  Each file's event queue has its own spinlock
 * (ev_lock), taken inside nvb_lock when events are queued and alone when
 * they are read.  Nothing under nvb_lock touches user memory.
 */
#ifndef _NVBRIDGE_INTERNAL_H
#define _NVBRIDGE_INTERNAL_H

#include <linux/cred.h>
#include <linux/bits.h>
#include <linux/hashtable.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/refcount.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/uidgid.h>
#include <linux/wait.h>
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
 * A publish wakes only the sleepers whose name hashes to the same bucket;
 * seq is bumped on every publish into the bucket.
 */
#define NVB_PUBLISH_BUCKETS_BITS	4
#define NVB_PUBLISH_BUCKETS		BIT(NVB_PUBLISH_BUCKETS_BITS)

struct nvb_publish_bucket {
	unsigned long seq;
	wait_queue_head_t wq;
};

/* All names of one IPC namespace. */
struct nvb_scope {
	struct list_head node;		/* in nvb_scopes */
	struct ipc_namespace *ipc_ns;	/* referenced */
	unsigned int nr_files;		/* open files in this scope */
	unsigned int nr_entries;
	struct list_head entries;	/* ascending id */
	DECLARE_HASHTABLE(names, 7);	/* entries by name */
	struct list_head watchers;	/* nvb_file.watcher_node, files with watches */
	/* FETCH_WAIT sleepers, hashed by the name they wait for */
	struct nvb_publish_bucket publish[NVB_PUBLISH_BUCKETS];
};

/* A published blob: never changed, shared by its entry and its fetchers. */
struct nvb_blob {
	refcount_t ref;
	u32 len;
	u8 data[];
};

/* One published name. */
struct nvb_entry {
	struct list_head scope_node;
	struct hlist_node name_node;	/* in scope->names */
	struct list_head owner_node;
	struct nvb_file *owner;
	u64 id;
	char name[NVBRIDGE_NAME_MAX];
	struct file *file;		/* NULL when none; a reference */
	struct nvb_blob *blob;		/* NULL when none; a reference */
	u32 access;
	kuid_t acl_uid;			/* NVBRIDGE_ACCESS_UID */
	kgid_t acl_gid;			/* NVBRIDGE_ACCESS_GID */
	kuid_t pub_uid;			/* publisher's euid */
	kgid_t pub_gid;			/* publisher's egid */
	struct pid *pub_pid;		/* publisher's thread group, a reference */
};

struct nvb_watch {
	struct list_head node;
	u64 id;
	u32 flags;
	size_t len;
	char name[NVBRIDGE_NAME_MAX];
};

struct nvb_event_node {
	struct list_head node;
	struct nvbridge_event ev;
};

/* The state of one open /dev/nvbridge. */
struct nvb_file {
	const struct cred *cred;	/* the open file's f_cred, owned by it */
	struct nvb_scope *scope;
	struct pid_namespace *pid_ns;	/* opener's, a reference */
	struct mem_cgroup *memcg;	/* opener's, charged for its events */
	bool ipc_owner;			/* CAP_IPC_OWNER over the scope */

	struct list_head entries;	/* owned entries */
	struct list_head watches;
	unsigned int nr_watches;
	u64 next_watch_id;
	struct list_head watcher_node;	/* in scope->watchers while watching */

	struct mutex read_mutex;	/* serialises readers */
	spinlock_t ev_lock;		/* protects the fields below */
	struct list_head events;
	unsigned int nr_events;
	u32 lost;
	u64 ev_seq;
	wait_queue_head_t read_wq;
};

/* Per-user entry count, for the quota. */
struct nvb_user {
	struct hlist_node node;
	kuid_t uid;
	unsigned int entries;
};

#endif /* _NVBRIDGE_INTERNAL_H */
