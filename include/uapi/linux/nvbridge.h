/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR MIT) */
/*
 * nvbridge: a credential-checked, namespace-aware rendezvous for file
 * descriptors and small opaque blobs.
 *
 * This header is the single source of truth for the ABI spoken by the
 * kernel module (/dev/nvbridge, through ioctl() and read()) and by the
 * user-space broker nvbridged (over a SOCK_SEQPACKET socket).  See
 * Documentation/abi.rst for the reference.
 *
 * Conventions:
 *  - Every ioctl argument starts with "__u32 size", set by the caller to
 *    sizeof() the struct it was compiled with.  The kernel accepts any size
 *    from the first published version (NVBRIDGE_*_SIZE_VER0) upwards: a
 *    shorter struct gets zeroes for the missing fields, a longer one must
 *    have zeroes in the fields the kernel does not know (else -E2BIG).
 *    Output fields are written back only up to the caller's size.
 *  - The size encoded in the ioctl command number is that of VER0; the
 *    kernel matches the whole command number (any other size or
 *    direction is -ENOTTY); .size is the extension mechanism.
 *  - Pointers are __u64.  There is no implicit padding.
 *  - Unknown flag bits are rejected with -EINVAL.
 */
#ifndef _UAPI_LINUX_NVBRIDGE_H
#define _UAPI_LINUX_NVBRIDGE_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define NVBRIDGE_ABI_VERSION	2

/* Names: 1..NVBRIDGE_NAME_MAX-1 bytes of [A-Za-z0-9._:/-], NUL-terminated. */
#define NVBRIDGE_NAME_MAX	64

/* Hard upper bound for the max_blob_size module parameter. */
#define NVBRIDGE_BLOB_MAX	65536

/* Access policies (struct nvbridge_publish.access). */
enum nvbridge_access {
	NVBRIDGE_ACCESS_OWNER	= 0,	/* the publisher's euid only */
	NVBRIDGE_ACCESS_GROUP	= 1,	/* owner, plus holders of its egid (any group) */
	NVBRIDGE_ACCESS_SCOPE	= 2,	/* everyone in the publisher's IPC namespace */
	NVBRIDGE_ACCESS_UID	= 3,	/* owner, plus the uid in .uid */
	NVBRIDGE_ACCESS_GID	= 4,	/* owner, plus members of the gid in .gid */
	NVBRIDGE_ACCESS_MAX	= NVBRIDGE_ACCESS_GID,
};

/* No file: struct nvbridge_publish.fd */
#define NVBRIDGE_NO_FD		(-1)

/*
 * NVBRIDGE_IOC_PUBLISH: publish a file and/or a blob under a name, owned
 * by the opener's euid: an entry is (scope, euid, name), -EEXIST only for
 * the same euid.  Returns 0; .id receives the entry id.  The file must be
 * a memory-backed regular file (memfd, tmpfs/shmem, hugetlbfs; not FUSE,
 * NFS, ramfs or disk files), a dma-buf or a character device of an
 * allowed major (else -EINVAL); the device file must be open for writing
 * (else -EBADF).
 */
struct nvbridge_publish {
	__u32 size;		/* in: sizeof(struct nvbridge_publish) */
	__u32 flags;		/* in: none defined yet, must be 0 */
	__s32 fd;		/* in: file to publish, or NVBRIDGE_NO_FD */
	__u32 access;		/* in: enum nvbridge_access */
	__u32 uid;		/* in: NVBRIDGE_ACCESS_UID, in the caller's user ns */
	__u32 gid;		/* in: NVBRIDGE_ACCESS_GID, in the caller's user ns */
	__u32 blob_len;		/* in: bytes at .blob (0..max_blob_size) */
	__u32 __reserved;	/* must be 0 */
	__u64 blob;		/* in: pointer to the blob */
	__u64 id;		/* out: entry id, per scope, from 1 */
	char name[NVBRIDGE_NAME_MAX];	/* in */
};

#define NVBRIDGE_PUBLISH_SIZE_VER0	112

/* struct nvbridge_fetch.flags */
#define NVBRIDGE_FETCH_WAIT		(1U << 0)	/* wait until published */
#define NVBRIDGE_FETCH_NO_CLOEXEC	(1U << 1)	/* fd without O_CLOEXEC */
#define NVBRIDGE_FETCH_EXPECT_UID	(1U << 2)	/* the entry of owner .expect_uid */
#define NVBRIDGE_FETCH_FLAGS_ALL	(NVBRIDGE_FETCH_WAIT | NVBRIDGE_FETCH_NO_CLOEXEC | \
					 NVBRIDGE_FETCH_EXPECT_UID)

/* struct nvbridge_fetch.entry_flags, struct nvbridge_entry_info.flags */
#define NVBRIDGE_ENTRY_HAS_FD		(1U << 0)	/* the entry carries a file */
#define NVBRIDGE_ENTRY_OWN		(1U << 1)	/* published through this open file */

/*
 * NVBRIDGE_IOC_FETCH: look a name up and receive its file and blob.
 * Returns the new fd when the entry has a file (entry_flags has
 * NVBRIDGE_ENTRY_HAS_FD), else 0.  The fd is installed last: if the call
 * fails, no fd was installed.  With NVBRIDGE_FETCH_EXPECT_UID the call
 * addresses the entry of that name owned by .expect_uid only; without it,
 * several owners' entries of the name are -ENOTUNIQ.  An entry the caller
 * may not use is absent (-ENOENT, or waited for).
 */
struct nvbridge_fetch {
	__u32 size;		/* in */
	__u32 flags;		/* in: NVBRIDGE_FETCH_* */
	__s64 timeout_ns;	/* in: with FETCH_WAIT (< 0: forever), else 0 */
	__u64 blob;		/* in: buffer for the blob, 0 iff blob_cap is 0 */
	__u32 blob_cap;		/* in: bytes available at .blob */
	__u32 blob_len;		/* out: the blob's length (also on -EMSGSIZE) */
	__u64 id;		/* out: entry id */
	__u32 pid;		/* out: publisher's tgid in caller's pid ns, or 0 */
	__u32 uid;		/* out: publisher's euid in caller's user ns, or overflowuid */
	__u32 gid;		/* out: publisher's egid, likewise */
	__u32 access;		/* out: the entry's policy */
	__u32 entry_flags;	/* out: NVBRIDGE_ENTRY_* */
	__u32 expect_uid;	/* in: FETCH_EXPECT_UID, in caller's user ns; else 0 */
	char name[NVBRIDGE_NAME_MAX];	/* in */
};

#define NVBRIDGE_FETCH_SIZE_VER0	128

/*
 * NVBRIDGE_IOC_UNPUBLISH: withdraw an entry published through this open
 * file, by id (id != 0) or else by name.
 */
struct nvbridge_unpublish {
	__u32 size;		/* in */
	__u32 flags;		/* in: must be 0 */
	__u64 id;		/* in: entry id (then .name all zero), or 0 */
	char name[NVBRIDGE_NAME_MAX];	/* in */
};

#define NVBRIDGE_UNPUBLISH_SIZE_VER0	80

/* struct nvbridge_watch.flags */
#define NVBRIDGE_WATCH_PREFIX		(1U << 0)	/* .name is a prefix ("" = all) */
#define NVBRIDGE_WATCH_FLAGS_ALL	(NVBRIDGE_WATCH_PREFIX)

/*
 * NVBRIDGE_IOC_WATCH: subscribe this open file to events for a name or
 * prefix.  .id receives the watch id.  Events are read with read().
 * NVBRIDGE_IOC_UNWATCH: drop the watch with id .id (flags and name unused,
 * must be 0).
 */
struct nvbridge_watch {
	__u32 size;		/* in */
	__u32 flags;		/* in: NVBRIDGE_WATCH_* */
	__u64 id;		/* out (WATCH), in (UNWATCH) */
	char name[NVBRIDGE_NAME_MAX];	/* in (WATCH) */
};

#define NVBRIDGE_WATCH_SIZE_VER0	80

/* One entry as LIST reports it. */
struct nvbridge_entry_info {
	__u64 id;
	__u32 pid;		/* as in struct nvbridge_fetch */
	__u32 uid;
	__u32 gid;
	__u32 access;
	__u32 blob_len;
	__u32 flags;		/* NVBRIDGE_ENTRY_* */
	char name[NVBRIDGE_NAME_MAX];
};

#define NVBRIDGE_ENTRY_INFO_SIZE_VER0	96

/*
 * NVBRIDGE_IOC_LIST: the entries the caller may fetch, in id order, from
 * the first one with an id greater than .cursor.  Returns the number of
 * records written; .cursor is advanced past the last one.  0 means done.
 */
struct nvbridge_list {
	__u32 size;		/* in */
	__u32 flags;		/* in: must be 0 */
	__u64 cursor;		/* in/out: 0 to start */
	__u64 entries;		/* in: pointer to an array of records */
	__u32 count;		/* in: capacity of the array; out: records written */
	__u32 entry_size;	/* in: caller's sizeof(struct nvbridge_entry_info) */
};

#define NVBRIDGE_LIST_SIZE_VER0		32

/* NVBRIDGE_IOC_INFO: ABI version, limits and counters. */
struct nvbridge_info {
	__u32 size;		/* in */
	__u32 flags;		/* in: must be 0 */
	__u32 abi_version;	/* out: NVBRIDGE_ABI_VERSION */
	__u32 name_max;		/* out: NVBRIDGE_NAME_MAX */
	__u32 max_blob_size;	/* out */
	__u32 max_entries_per_user;	/* out: the quota */
	__u32 max_events;	/* out: event queue depth per open file */
	__u32 max_watches;	/* out: per open file */
	__u32 entries;		/* out: entries of the scope the caller may fetch */
	__u32 user_entries;	/* out: entries counted against the opener's euid */
};

#define NVBRIDGE_INFO_SIZE_VER0		40

/* Event types (struct nvbridge_event.type). */
enum nvbridge_event_type {
	NVBRIDGE_EVENT_PUBLISHED	= 1,
	NVBRIDGE_EVENT_REVOKED		= 2,
	NVBRIDGE_EVENT_OVERFLOW		= 3,	/* .lost events were dropped */
};

/* Why an entry went away (struct nvbridge_event.reason). */
enum nvbridge_revoke_reason {
	NVBRIDGE_REVOKE_NONE		= 0,
	NVBRIDGE_REVOKE_UNPUBLISHED	= 1,	/* NVBRIDGE_IOC_UNPUBLISH */
	NVBRIDGE_REVOKE_CLOSED		= 2,	/* publishing file released */
	NVBRIDGE_REVOKE_EXITED		= 3,	/* ...by its exiting (or killed) last holder */
};

/*
 * A fixed-size record read() from a watching file.  read() returns whole
 * records only; a buffer smaller than one record is -EINVAL.
 */
struct nvbridge_event {
	__u32 size;		/* sizeof(struct nvbridge_event) */
	__u16 type;		/* enum nvbridge_event_type */
	__u16 reason;		/* enum nvbridge_revoke_reason */
	__u64 seq;		/* per open file, from 1, counting lost events too */
	__u64 id;		/* entry id (0 for OVERFLOW) */
	__u64 watch_id;		/* the watch that matched (0 for OVERFLOW) */
	__u32 pid;		/* publisher, translated as in FETCH */
	__u32 uid;
	__u32 gid;
	__u32 lost;		/* OVERFLOW: number of events dropped */
	char name[NVBRIDGE_NAME_MAX];
};

#define NVBRIDGE_EVENT_SIZE		112

/*
 * 0xBD: free in Documentation/userspace-api/ioctl/ioctl-number.rst of 6.1
 * and of later kernels (0xB8, used until ABI 1, belongs to mshv and
 * mrvl_cn10k_dpi).
 */
#define NVBRIDGE_IOC_MAGIC	0xBD

#define NVBRIDGE_IOC_PUBLISH	_IOWR(NVBRIDGE_IOC_MAGIC, 0x01, struct nvbridge_publish)
#define NVBRIDGE_IOC_FETCH	_IOWR(NVBRIDGE_IOC_MAGIC, 0x02, struct nvbridge_fetch)
#define NVBRIDGE_IOC_UNPUBLISH	_IOW(NVBRIDGE_IOC_MAGIC, 0x03, struct nvbridge_unpublish)
#define NVBRIDGE_IOC_WATCH	_IOWR(NVBRIDGE_IOC_MAGIC, 0x04, struct nvbridge_watch)
#define NVBRIDGE_IOC_UNWATCH	_IOW(NVBRIDGE_IOC_MAGIC, 0x05, struct nvbridge_watch)
#define NVBRIDGE_IOC_LIST	_IOWR(NVBRIDGE_IOC_MAGIC, 0x06, struct nvbridge_list)
#define NVBRIDGE_IOC_INFO	_IOWR(NVBRIDGE_IOC_MAGIC, 0x07, struct nvbridge_info)

#endif /* _UAPI_LINUX_NVBRIDGE_H */
