/* SPDX-License-Identifier: MIT */
/*
 * libnvbridge: publish and fetch file descriptors and small blobs by name,
 * through the nvbridge kernel module (/dev/nvbridge) or the user-space
 * broker nvbridged, with the same semantics.
 *
 * Conventions (liburing / libbpf style):
 *  - Every function returns 0 (or a non-negative value) on success and a
 *    negative errno on failure.  Nothing prints, nothing exits.
 *  - nvb_last_error() gives a human-readable detail for the last failure on
 *    a handle (naming the offending argument); nvb_strerror() maps an errno.
 *  - Options structs start with "size_t sz" which the caller sets to
 *    sizeof() the struct it was compiled with; NULL options mean defaults.
 *  - One handle may be used from several threads at once.
 *
 * Link with `pkg-config --cflags --libs libnvbridge`.  The io_uring helpers
 * live in <nvbridge_uring.h>.
 */
#ifndef LIBNVBRIDGE_NVBRIDGE_H
#define LIBNVBRIDGE_NVBRIDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The package's version: the Makefile reads it from here (NVB_VERSION). */
#define NVB_VERSION_MAJOR	1
#define NVB_VERSION_MINOR	2
#define NVB_VERSION_PATCH	0

/* Names: 1..63 bytes of [A-Za-z0-9._:/-]. */
#define NVB_NAME_MAX		64

/* An opaque handle: one open /dev/nvbridge file or one broker connection. */
struct nvb;

enum nvb_backend {
	NVB_BACKEND_AUTO	= 0,	/* device if present, else the broker */
	NVB_BACKEND_KERNEL	= 1,	/* /dev/nvbridge */
	NVB_BACKEND_BROKER	= 2,	/* nvbridged */
};

/* Default broker socket; NVBRIDGE_SOCKET overrides it. */
#define NVB_DEFAULT_SOCKET	"/run/nvbridge/nvbridged.sock"

/*
 * nvb_open() options.  When .backend is NVB_BACKEND_AUTO the environment
 * variable NVBRIDGE_BACKEND ("kernel", "broker" or "auto") decides; when
 * .socket_path is NULL, NVBRIDGE_SOCKET (else NVB_DEFAULT_SOCKET) is used.
 * Broker only: NVBRIDGE_SPIN_US=N polls for a reply for up to N us before
 * sleeping (default 0: trades CPU for latency on hosts with spare cores).
 *
 * Broker request timeout (.timeout_ns; 0: NVBRIDGE_TIMEOUT_MS, else 30 s;
 * < 0: none): nvb_open() and every call that waits for the broker fail with
 * -ETIMEDOUT when it has not answered in time.  A FETCH with NVB_FETCH_WAIT
 * and a finite timeout_ns T may take T + this timeout (the broker answers
 * -ETIMEDOUT itself at T); one that waits forever has no bound.  A timeout
 * shuts the connection down (see nvb_open(3): the handle is dead).
 *
 * Broker identity: before anything is sent, the socket's server (its
 * SO_PEERCRED uid) must be root, the caller's own euid, or the owner of the
 * directory holding the socket (who can replace the socket anyway), else
 * nvb_open() fails with -EPERM.  NVB_OPEN_BROKER_UID (or NVBRIDGE_BROKER_UID)
 * names the one uid it must be instead.
 */
/* bit 0 stays unassigned: callers and tests use it as "an unknown flag" */
#define NVB_OPEN_BROKER_UID	(1U << 1)	/* the broker must run as .broker_uid */

struct nvb_opts {
	size_t sz;		/* sizeof(struct nvb_opts) */
	uint32_t backend;	/* enum nvb_backend */
	uint32_t flags;		/* NVB_OPEN_* */
	const char *socket_path;	/* broker socket, or NULL */
	const char *device_path;	/* device node, or NULL: found with libudev */
	/* since 1.1: callers built before pass a smaller .sz and get the defaults */
	int64_t timeout_ns;	/* broker request timeout: 0 default, < 0 none */
	uint32_t broker_uid;	/* with NVB_OPEN_BROKER_UID */
	uint32_t __pad;		/* 0 */
};

/*
 * Opens a handle.  Errors: -ENOENT (no device and no broker), -EPROTO (ABI
 * version mismatch or not an nvbridged; nvb_open_error() names both
 * versions), -ECONNREFUSED, -EACCES, -EPERM (the broker socket is served by
 * an unexpected uid), -ETIMEDOUT (the broker did not answer), -EINVAL (bad
 * options).
 *
 * A handle belongs to the process that opened it.  In a child created with
 * fork() (either backend) the library closes the handle's fds at once, so
 * the child neither holds the parent's entries alive nor shares its
 * connection, and every call on the inherited handle fails with -ECHILD;
 * nvb_close() in the child only frees it.  The child opens its own handle.
 *
 * Broker backend: when the broker goes away (restart, crash) or breaks the
 * protocol, the call that finds out fails (-ECONNRESET, or the protocol
 * error) and so does every later call on the handle (-ECONNRESET); there is
 * no transparent reconnect, since every entry published through the
 * connection was revoked with it: close the handle, open a new one and
 * publish again.
 */
int nvb_open(const struct nvb_opts *opts, struct nvb **out);

/* Why the last nvb_open() in this thread failed ("" if it did not). */
const char *nvb_open_error(void);

/* Closes the handle; every entry published through it is revoked. */
void nvb_close(struct nvb *h);

/* enum nvb_backend actually in use (never AUTO). */
int nvb_backend(const struct nvb *h);
const char *nvb_backend_name(int backend);

/* Access policies, as in the kernel ABI. */
enum nvb_access {
	NVB_ACCESS_OWNER	= 0,	/* publisher's euid only */
	NVB_ACCESS_GROUP	= 1,	/* publisher's egid (fetcher's egid or supplementary) */
	NVB_ACCESS_SCOPE	= 2,	/* everyone in the same IPC namespace */
	NVB_ACCESS_UID		= 3,	/* owner, plus .uid */
	NVB_ACCESS_GID		= 4,	/* owner, plus members of .gid */
};

struct nvb_publish_opts {
	size_t sz;
	uint32_t access;	/* enum nvb_access (default OWNER) */
	uint32_t uid;		/* NVB_ACCESS_UID */
	uint32_t gid;		/* NVB_ACCESS_GID */
	uint32_t flags;		/* none defined: 0 */
};

/*
 * Publishes fd (or -1 for none) and/or blob[0..blob_len) under name.  The
 * entry is (scope, caller's euid, name): another user may publish the same
 * name.  It lives until nvb_unpublish() or until the handle is closed (or
 * the process dies).  *id (may be NULL) receives the entry id, counted per
 * scope from 1.
 * Errors: -EINVAL (name, access, uid/gid, flags, or a file that may not be
 * published: only memory-backed regular files (memfd, tmpfs/shmem,
 * hugetlbfs), dma-bufs and character devices of the allowed majors may), -EBADF (not open, or an O_PATH fd),
 * -EEXIST (the caller's euid already has name in this scope), -EMSGSIZE
 * (blob larger than max_blob_size), -ENOSPC (the caller's euid is at its
 * entry or blob-byte quota), -EFAULT.  Values are checked before the blob
 * pointer, the blob before the fd.
 */
int nvb_publish(struct nvb *h, const char *name, int fd, const void *blob,
		size_t blob_len, const struct nvb_publish_opts *opts,
		uint64_t *id);

/* An entry as nvb_fetch() and nvb_list() report it. */
#define NVB_ENTRY_HAS_FD	(1U << 0)	/* it carries a file */
#define NVB_ENTRY_OWN		(1U << 1)	/* published through this handle */

struct nvb_entry {
	uint64_t id;
	uint32_t pid;		/* publisher, in the caller's pid ns (0: not visible,
				   or its process has exited) */
	uint32_t uid;		/* publisher's euid in the caller's user ns */
	uint32_t gid;
	uint32_t access;	/* enum nvb_access */
	uint32_t flags;		/* NVB_ENTRY_* */
	uint32_t blob_len;
	char name[NVB_NAME_MAX];
};

#define NVB_FETCH_WAIT		(1U << 0)	/* wait until published */
#define NVB_FETCH_NO_CLOEXEC	(1U << 1)	/* fd without O_CLOEXEC */
#define NVB_FETCH_EXPECT_UID	(1U << 2)	/* the publisher must be .expect_uid */

/*
 * Fields are only ever added at the end; .sz tells the library which ones
 * the caller knows (a caller compiled before .expect_uid existed passes a
 * smaller .sz and gets expect_uid 0).
 */
struct nvb_fetch_opts {
	size_t sz;
	uint32_t flags;		/* NVB_FETCH_* */
	uint32_t __pad;		/* 0 */
	int64_t timeout_ns;	/* with NVB_FETCH_WAIT: < 0 forever */
	/*
	 * With NVB_FETCH_EXPECT_UID: the euid (in the caller's user namespace)
	 * whose entry of that name is fetched; other users' entries of the
	 * name do not exist for this fetch (-ENOENT, or NVB_FETCH_WAIT goes on
	 * waiting): nobody else can hand the caller a file or make it fail.
	 * Must be 0 without the flag.
	 */
	uint32_t expect_uid;
	uint32_t __pad2;	/* 0 */
};

/*
 * Fetches name: copies its blob into blob[0..blob_cap), fills *entry (may
 * be NULL) and stores the received fd in *fd (may be NULL only for entries
 * without a file), or -1 when the entry has none.  The entry stays
 * published.  An entry the caller may not use does not exist for it.
 * Errors: -ENOENT (none the caller may use), -ENOTUNIQ (without
 * NVB_FETCH_EXPECT_UID, more than one user has an entry of that name the
 * caller may use: name the owner; at once, also with NVB_FETCH_WAIT),
 * -ETIMEDOUT, -EINTR (a handled signal, SA_RESTART or not; a stop and
 * continue does not end the wait), -EMSGSIZE (blob_cap too small:
 * entry->blob_len says how much is needed; no fd), -EMFILE, -ECONNRESET
 * (broker gone), -EINVAL (flags, name, timeout_ns without NVB_FETCH_WAIT,
 * or expect_uid unmapped / set without the flag), -EFAULT (blob NULL with
 * a blob_cap).  Any call, broker backend: -ETIMEDOUT (no answer within the
 * request timeout), -EPROTO / -EBADMSG / -EOVERFLOW (the broker's reply
 * answers no request in flight, is malformed, or holds more than asked for;
 * nothing is written past the caller's buffers).  Any call on a handle
 * inherited through fork(): -ECHILD.
 */
int nvb_fetch(struct nvb *h, const char *name,
	      const struct nvb_fetch_opts *opts, void *blob, size_t blob_cap,
	      struct nvb_entry *entry, int *fd);

/* Withdraws an entry published through this handle: by id, or (id 0) by name. */
int nvb_unpublish(struct nvb *h, uint64_t id, const char *name);

#define NVB_WATCH_PREFIX	(1U << 0)	/* name is a prefix; "" = all */

/* Subscribes the handle to events for name (or a prefix). */
int nvb_watch(struct nvb *h, const char *name, uint32_t flags,
	      uint64_t *watch_id);
int nvb_unwatch(struct nvb *h, uint64_t watch_id);

/*
 * Lists the entries the caller may fetch with ids > *cursor, in id order,
 * up to max of them; returns how many were stored and advances *cursor.
 * 0 means done.
 */
int nvb_list(struct nvb *h, uint64_t *cursor, struct nvb_entry *out,
	     unsigned int max);

struct nvb_info {
	size_t sz;			/* sizeof(struct nvb_info) */
	uint32_t backend;		/* enum nvb_backend */
	uint32_t abi_version;
	uint32_t name_max;
	uint32_t max_blob_size;
	uint32_t max_entries_per_user;
	uint32_t max_events;
	uint32_t max_watches;
	uint32_t entries;		/* in the caller's scope */
	uint32_t user_entries;		/* owned by the caller's euid */
	uint32_t __pad;
};

int nvb_info(struct nvb *h, struct nvb_info *info);

/* Events */
enum nvb_event_type {
	NVB_EVENT_PUBLISHED	= 1,
	NVB_EVENT_REVOKED	= 2,
	NVB_EVENT_OVERFLOW	= 3,	/* .lost events were dropped */
};

enum nvb_revoke_reason {
	NVB_REVOKE_NONE		= 0,
	NVB_REVOKE_UNPUBLISHED	= 1,
	NVB_REVOKE_CLOSED	= 2,
	NVB_REVOKE_EXITED	= 3,
};

struct nvb_event {
	uint32_t type;		/* enum nvb_event_type */
	uint32_t reason;	/* enum nvb_revoke_reason */
	uint64_t seq;		/* per handle, from 1, counting lost events */
	uint64_t id;		/* entry id */
	uint64_t watch_id;
	uint32_t pid;
	uint32_t uid;
	uint32_t gid;
	uint32_t lost;		/* OVERFLOW */
	char name[NVB_NAME_MAX];
};

/*
 * Reads up to max events, waiting at most timeout_ns (< 0: forever, 0: do
 * not wait) through the library's own io_uring (no helper thread).
 * Returns the number of events, -ETIMEDOUT, -EAGAIN (timeout 0, none).
 * Do not mix with reads of nvb_event_fd() on another ring for the same
 * handle.
 */
int nvb_event_read(struct nvb *h, struct nvb_event *ev, unsigned int max,
		   int64_t timeout_ns);

/* The non-blocking fd events arrive on (poll it for POLLIN), or -errno. */
int nvb_event_fd(struct nvb *h);

/* Size of one raw event record on nvb_event_fd(). */
#define NVB_EVENT_RECORD_SIZE	112

/*
 * Decodes res bytes of raw records (as read from nvb_event_fd(), e.g. the
 * res of an io_uring completion) into ev[0..max).  Returns the number of
 * events, or res itself when it is negative, or -EPROTO on a bad record.
 */
int nvb_event_parse(struct nvb *h, const void *buf, int res,
		    struct nvb_event *ev, unsigned int max);

/* errno -> text (nvbridge-specific wording where it helps). */
const char *nvb_strerror(int err);

/* Detail of the last failure on h, in this thread's copy; never NULL. */
const char *nvb_last_error(struct nvb *h);

#ifdef __cplusplus
}
#endif

#endif /* LIBNVBRIDGE_NVBRIDGE_H */
