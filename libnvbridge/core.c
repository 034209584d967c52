// SPDX-License-Identifier: MIT
/* libnvbridge: handle, argument marshalling, errors, events. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "nvb_internal.h"
#include "opts.h"
#include "nvbridge_uring.h"
#include "nvb_name.h"
#include "gpu_internal.h"	/* nvb_watch_fetch() */

static __thread char nvb_open_why[NVB_ERRLEN];
static __thread char nvb_err_copy[NVB_ERRLEN];

void nvb_seterr(struct nvb *h, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&h->lock);
	va_start(ap, fmt);
	vsnprintf(h->errmsg, sizeof(h->errmsg), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&h->lock);
}

int nvb_fail(struct nvb *h, int err, const char *fmt, ...)
{
	char buf[NVB_ERRLEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&h->lock);
	if (h->txerr[0]) {	/* the broker connection ended: say why, once */
		snprintf(h->errmsg, sizeof(h->errmsg), "%s: %s (%s)", buf, nvb_strerror(err),
			 h->txerr);
		h->txerr[0] = 0;
	} else {
		snprintf(h->errmsg, sizeof(h->errmsg), "%s: %s", buf, nvb_strerror(err));
	}
	pthread_mutex_unlock(&h->lock);
	return err;
}

NVB_API const char *nvb_last_error(struct nvb *h)
{
	if (!h)
		return nvb_open_why;
	pthread_mutex_lock(&h->lock);
	memcpy(nvb_err_copy, h->errmsg, sizeof(nvb_err_copy));
	pthread_mutex_unlock(&h->lock);
	return nvb_err_copy;
}

NVB_API const char *nvb_open_error(void)
{
	return nvb_open_why;
}

NVB_API const char *nvb_strerror(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0: return "success";
	case ENOENT: return "no such entry visible to the caller (or no nvbridge backend)";
	case EEXIST: return "the caller already published this name in this scope";
	case ENOTUNIQ: return "several owners publish this name: say whose (expect_uid)";
	case EACCES: return "access denied";
	case EPERM: return "not permitted (the caller's entry, published through another handle)";
	case EMSGSIZE: return "blob too large for the limit or the buffer";
	case ETIMEDOUT: return "timed out (waiting for the name, or for the broker to answer)";
	case ECHILD: return "handle inherited through fork(): it belongs to the parent";
	case EBADMSG: return "broker sent a malformed or truncated message";
	case EOVERFLOW: return "broker answered with more than was asked for";
	case EINTR: return "interrupted by a signal";
	case ENOSPC: return "a limit is reached (entries or bytes per user, watches)";
	case EPROTO: return "nvbridge ABI or protocol mismatch (or a reply that answers no request)";
	case ECONNRESET: return "broker connection lost";
	case ENOTCONN: return "broker not connected";
	case ECONNREFUSED: return "broker not running (connection refused)";
	case EBADF: return "bad file descriptor";
	case E2BIG: return "struct larger than supported with non-zero tail";
	case ENOTTY: return "unknown nvbridge command";
	default: {
		/* static text, unlike strerror() whose buffer the next call reuses */
		const char *d = strerrordesc_np(err);

		return d ? d : "unknown error";
	}
	}
}

NVB_API const char *nvb_backend_name(int backend)
{
	switch (backend) {
	case NVB_BACKEND_AUTO: return "auto";
	case NVB_BACKEND_KERNEL: return "kernel";
	case NVB_BACKEND_BROKER: return "broker";
	default: return "unknown";
	}
}

NVB_API int nvb_backend(const struct nvb *h)
{
	return h ? h->backend : -EINVAL;
}

static inline int nvb_xfer(struct nvb *h, unsigned long cmd, void *arg)
{
	if (h->forked)
		return -ECHILD;
	if (h->backend == NVB_BACKEND_KERNEL)
		return nvb_kernel_xfer(h, cmd, arg);
	return nvb_broker_xfer(h, cmd, arg);
}

/* Raw UAPI call on either backend; not exported from the .so (tests link the .a). */
int nvb__xfer(struct nvb *h, unsigned long cmd, void *arg);
int nvb__xfer(struct nvb *h, unsigned long cmd, void *arg)
{
	return nvb_xfer(h, cmd, arg);
}

int nvb_name_check(const char *name, bool prefix, char *why, size_t len)
{
	size_t at = 0;

	switch (nvb_name_fault(name, prefix, &at)) {
	case NVB_NAME_OK:
		return 0;
	case NVB_NAME_TOO_LONG:
		snprintf(why, len, "name longer than %d bytes", NVB_NAME_MAX - 1);
		break;
	case NVB_NAME_EMPTY:
		snprintf(why, len, "name is empty");
		break;
	case NVB_NAME_BAD_BYTE:
		snprintf(why, len, "name has byte 0x%02x at %zu (allowed: [A-Za-z0-9._:/-])",
			 (unsigned char)name[at], at);
		break;
	}
	return -EINVAL;
}

/* Copies a C string into a UAPI name field as-is (unterminated if too long). */
static void put_name(char dst[NVBRIDGE_NAME_MAX], const char *src)
{
	size_t n = strnlen(src, NVBRIDGE_NAME_MAX);

	memset(dst, 0, NVBRIDGE_NAME_MAX);
	memcpy(dst, src, n);
}

static const char *envstr(const char *k)
{
	const char *v = getenv(k);

	return v && *v ? v : NULL;
}

/*
 * fork(): a handle belongs to the process that opened it.  The child gets
 * copies of its fds, which would keep the parent's entries alive after the
 * parent dies (the device file and the broker connection are shared, and
 * entries live until the last copy is closed), and on the broker backend
 * would let both processes read each other's replies and fds.  So the
 * child closes its copies at once, in a pthread_atfork() child handler
 * (Linux has no close-on-fork), and every call on the handle then fails
 * with -ECHILD.  A child made by a raw clone()/fork syscall, which skips
 * the handlers, is not covered.
 */
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct nvb *handles;
/* handles closed (or lost to fork) so far: the GPU layer then forgets their registries */
static uint64_t closes;

uint64_t nvb_handle_closes(void)
{
	return __atomic_load_n(&closes, __ATOMIC_ACQUIRE);
}

/*
 * Set by the GPU layer (same library, but the core builds without it):
 * called by nvb_close() once h left the list, before its fds close, with
 * no lock held, so that the cached mappings imported through h leave the
 * caches now (nvb_gpu_seg_publish(3)), not at some later import.
 */
static void (*close_hook)(void);

void nvb_set_close_hook(void (*fn)(void))
{
	__atomic_store_n(&close_hook, fn, __ATOMIC_RELEASE);
}

bool nvb_serial_live(uint64_t serial)
{
	bool live = false;

	pthread_mutex_lock(&handles_lock);
	for (struct nvb *h = handles; h && !live; h = h->fork_next)
		live = h->serial == serial;
	pthread_mutex_unlock(&handles_lock);
	return live;
}

/*
 * nvb_event_read(h, ev, max, 0) on the handle of serial, if it is still
 * open: -ESRCH if not (the GPU layer's thread reads the events of handles
 * it holds no pointer it may use: the application may close them at any
 * time).  handles_lock keeps nvb_close() from freeing h meanwhile; a
 * reader already in h's event lock (a wait of the application's) makes
 * it -EAGAIN rather than stall every nvb_open()/nvb_close() behind it.
 * The trylock's lock is kept through the read (event_read_locked): let go
 * in between, an application's wait could take it and the read below
 * would wait for as long, with handles_lock held.
 * Lock order: handles_lock, then h->evlock (never the other way round).
 */
static int event_read_locked(struct nvb *h, struct nvb_event *ev, unsigned int max,
			     int64_t timeout_ns);

int nvb_event_read_live(uint64_t serial, struct nvb_event *ev, unsigned int max)
{
	struct nvb *h;
	int n = -ESRCH;

	if (!ev || !max)
		return max ? -EINVAL : 0;
	pthread_mutex_lock(&handles_lock);
	for (h = handles; h && h->serial != serial; h = h->fork_next)
		;
	if (h && pthread_mutex_trylock(&h->evlock)) {
		n = -EAGAIN;
	} else if (h) {
		if (h->forked)
			n = nvb_fail(h, -ECHILD, "event_read");
		else if (h->evfd < 0)
			n = nvb_fail(h, -ENOTCONN, "event_read");
		else
			n = event_read_locked(h, ev, max, 0);
		pthread_mutex_unlock(&h->evlock);
	}
	pthread_mutex_unlock(&handles_lock);
	return n;
}

static void fork_prepare(void)
{
	pthread_mutex_lock(&handles_lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&handles_lock);
}

static void fork_child(void)
{
	for (struct nvb *h = handles; h; h = h->fork_next) {
		h->forked = true;
		/* other threads are gone: whatever they held is free again */
		pthread_mutex_init(&h->lock, NULL);
		pthread_mutex_init(&h->evlock, NULL);
		if (h->ring_ok) {
			io_uring_queue_exit(&h->ring);	/* an armed read holds the file */
			h->ring_ok = false;
		}
		if (h->evfd >= 0 && h->evfd != h->fd)
			close(h->evfd);
		if (h->fd >= 0)
			close(h->fd);
		h->fd = h->evfd = -1;
	}
	handles = NULL;
	__atomic_add_fetch(&closes, 1, __ATOMIC_RELEASE);
	pthread_mutex_init(&handles_lock, NULL);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_register(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static void handle_add(struct nvb *h)
{
	pthread_once(&atfork_once, atfork_register);
	pthread_mutex_lock(&handles_lock);
	h->fork_next = handles;
	if (handles)
		handles->fork_prev = h;
	handles = h;
	pthread_mutex_unlock(&handles_lock);
}

static void handle_del(struct nvb *h)
{
	if (h->forked)
		return;	/* the child's list was emptied */
	pthread_mutex_lock(&handles_lock);
	if (h->fork_prev)
		h->fork_prev->fork_next = h->fork_next;
	else if (handles == h)
		handles = h->fork_next;
	if (h->fork_next)
		h->fork_next->fork_prev = h->fork_prev;
	pthread_mutex_unlock(&handles_lock);
}

/* "N" -> *v; false when not a number in [0, max] */
static bool env_num(const char *k, long long max, long long *v)
{
	const char *e = getenv(k);
	char *end;

	if (!e || !*e)
		return false;
	errno = 0;
	*v = strtoll(e, &end, 10);
	return !errno && !*end && *v >= 0 && *v <= max;
}

NVB_API int nvb_open(const struct nvb_opts *opts, struct nvb **out)
{
	struct nvb_opts o = { .sz = sizeof(o) };
	const char *sock, *env;
	char why[NVB_ERRLEN] = "";
	struct nvb *h;
	int backend, err;
	int64_t broker_uid, timeout_ns;

	nvb_open_why[0] = 0;
	if (!out) {
		snprintf(nvb_open_why, NVB_ERRLEN, "nvb_open: out is NULL");
		return -EINVAL;
	}
	*out = NULL;
	if (opts) {
		int err = nvb_opts_in(&o, sizeof(o), opts, opts->sz,
				      offsetof(struct nvb_opts, socket_path));

		if (err) {
			snprintf(nvb_open_why, NVB_ERRLEN, err == -E2BIG ?
				 "nvb_open: unknown non-zero options past byte %zu" :
				 "nvb_open: opts->sz %zu unsupported",
				 err == -E2BIG ? sizeof(o) : opts->sz);
			return err;
		}
	}
	if (o.flags & ~(uint32_t)NVB_OPEN_BROKER_UID) {
		snprintf(nvb_open_why, NVB_ERRLEN, "nvb_open: opts->flags 0x%x unknown", o.flags);
		return -EINVAL;
	}
	if (o.__pad || (!(o.flags & NVB_OPEN_BROKER_UID) && o.broker_uid)) {
		snprintf(nvb_open_why, NVB_ERRLEN,
			 "nvb_open: opts->broker_uid without NVB_OPEN_BROKER_UID, or __pad not 0");
		return -EINVAL;
	}
	broker_uid = o.flags & NVB_OPEN_BROKER_UID ? (int64_t)o.broker_uid : -1;
	if (broker_uid < 0 && envstr("NVBRIDGE_BROKER_UID")) {
		long long v;

		if (!env_num("NVBRIDGE_BROKER_UID", UINT32_MAX - 1, &v)) {
			snprintf(nvb_open_why, NVB_ERRLEN, "NVBRIDGE_BROKER_UID=%s: not a uid",
				 getenv("NVBRIDGE_BROKER_UID"));
			return -EINVAL;
		}
		broker_uid = v;
	}
	timeout_ns = o.timeout_ns;
	if (timeout_ns == 0 && envstr("NVBRIDGE_TIMEOUT_MS")) {
		long long v;

		/* 0 ms: no timeout, as a negative .timeout_ns */
		if (!env_num("NVBRIDGE_TIMEOUT_MS", INT64_MAX / 1000000, &v)) {
			snprintf(nvb_open_why, NVB_ERRLEN, "NVBRIDGE_TIMEOUT_MS=%s: not a number of ms",
				 getenv("NVBRIDGE_TIMEOUT_MS"));
			return -EINVAL;
		}
		timeout_ns = v ? v * 1000000 : -1;
	}
	if (timeout_ns == 0)
		timeout_ns = NVB_DEFAULT_TIMEOUT_NS;
	backend = o.backend;
	if (backend == NVB_BACKEND_AUTO && (env = envstr("NVBRIDGE_BACKEND"))) {
		if (!strcmp(env, "kernel"))
			backend = NVB_BACKEND_KERNEL;
		else if (!strcmp(env, "broker"))
			backend = NVB_BACKEND_BROKER;
		else if (strcmp(env, "auto")) {
			snprintf(nvb_open_why, NVB_ERRLEN,
				 "NVBRIDGE_BACKEND=%s: expected kernel, broker or auto", env);
			return -EINVAL;
		}
	}
	if (backend < NVB_BACKEND_AUTO || backend > NVB_BACKEND_BROKER) {
		snprintf(nvb_open_why, NVB_ERRLEN, "nvb_open: backend %d unknown", backend);
		return -EINVAL;
	}
	sock = o.socket_path ? o.socket_path : envstr("NVBRIDGE_SOCKET");
	if (!sock)
		sock = NVB_DEFAULT_SOCKET;

	h = calloc(1, sizeof(*h));
	if (!h) {
		snprintf(nvb_open_why, NVB_ERRLEN, "nvb_open: out of memory");
		return -ENOMEM;
	}
	h->fd = -1;
	h->evfd = -1;
	h->timeout_ns = timeout_ns;
	{
		static uint64_t serials;

		h->serial = __atomic_add_fetch(&serials, 1, __ATOMIC_RELAXED);
	}
	pthread_mutex_init(&h->lock, NULL);
	pthread_mutex_init(&h->evlock, NULL);

	if (backend == NVB_BACKEND_KERNEL || backend == NVB_BACKEND_AUTO) {
		err = nvb_kernel_open(h, o.device_path, why, sizeof(why));
		if (err == 0) {
			h->backend = NVB_BACKEND_KERNEL;
			goto ok;
		}
		if (backend == NVB_BACKEND_KERNEL || err != -ENOENT)
			goto fail;
	}
	err = nvb_broker_open(h, sock, broker_uid, why, sizeof(why));
	if (err == 0) {
		h->backend = NVB_BACKEND_BROKER;
		goto ok;
	}
	if (backend == NVB_BACKEND_AUTO && err == -ENOENT) {
		snprintf(nvb_open_why, NVB_ERRLEN,
			 "no /dev/nvbridge (module not loaded) and no broker socket at %s",
			 sock);
		goto fail_why;
	}
fail:
	snprintf(nvb_open_why, NVB_ERRLEN, "%s", why);
fail_why:
	pthread_mutex_destroy(&h->lock);
	pthread_mutex_destroy(&h->evlock);
	free(h);
	return err;
ok:
	handle_add(h);
	*out = h;
	return 0;
}

NVB_API void nvb_close(struct nvb *h)
{
	if (!h)
		return;
	void (*hook)(void) = __atomic_load_n(&close_hook, __ATOMIC_ACQUIRE);

	handle_del(h);
	__atomic_add_fetch(&closes, 1, __ATOMIC_RELEASE);
	if (hook)
		hook();
	if (h->ring_ok) {
		/*
		 * An armed read holds a reference to the device file: cancel it
		 * and reap it, so that close() below is the last reference and
		 * revokes our entries before nvb_close() returns.
		 */
		if (h->ev_inflight) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&h->ring);
			struct io_uring_cqe *cqe;
			struct __kernel_timespec ts = { .tv_sec = 1 };

			if (sqe) {
				io_uring_prep_cancel64(sqe, 1, 0);
				io_uring_sqe_set_data64(sqe, 2);
				io_uring_submit(&h->ring);
			}
			while (h->ev_inflight &&
			       io_uring_wait_cqe_timeout(&h->ring, &cqe, &ts) == 0) {
				if (cqe->user_data == 1)
					h->ev_inflight = false;
				io_uring_cqe_seen(&h->ring, cqe);
			}
		}
		io_uring_queue_exit(&h->ring);
	}
	if (h->backend == NVB_BACKEND_BROKER)
		nvb_broker_close(h);
	else if (h->fd >= 0)
		close(h->fd);
	pthread_mutex_destroy(&h->lock);
	pthread_mutex_destroy(&h->evlock);
	free(h);
}

static const char *access_name(uint32_t a)
{
	static const char *const n[] = { "owner", "group", "scope", "uid", "gid" };

	return a < 5 ? n[a] : "?";
}

NVB_API int nvb_publish(struct nvb *h, const char *name, int fd, const void *blob,
			size_t blob_len, const struct nvb_publish_opts *opts,
			uint64_t *id)
{
	struct nvbridge_publish p;
	struct nvb_publish_opts o = { 0 };
	char why[NVB_ERRLEN];
	int ret;

	if (!h)
		return -EINVAL;
	if (!name)
		return nvb_fail(h, -EINVAL, "publish: name is NULL");
	if (opts) {
		int err = nvb_opts_in(&o, sizeof(o), opts, opts->sz,
				      offsetof(struct nvb_publish_opts, flags) + sizeof(uint32_t));

		if (err)
			return nvb_fail(h, err, "publish: opts->sz %zu %s", opts->sz,
					err == -E2BIG ? "with unknown non-zero options" : "unsupported");
	}
	if (blob_len > UINT32_MAX)
		return nvb_fail(h, -EMSGSIZE, "publish '%s': blob_len %zu", name, blob_len);
	memset(&p, 0, sizeof(p));
	p.size = sizeof(p);
	p.flags = o.flags;
	p.fd = fd;
	p.access = o.access;
	p.uid = o.uid;
	p.gid = o.gid;
	p.blob_len = (uint32_t)blob_len;
	p.blob = (uintptr_t)blob;
	put_name(p.name, name);
	ret = nvb_xfer(h, NVBRIDGE_IOC_PUBLISH, &p);
	if (ret < 0) {
		if (ret == -EINVAL) {
			if (nvb_name_check(name, false, why, sizeof(why)))
				return nvb_fail(h, ret, "publish: %s", why);
			if (o.flags)
				return nvb_fail(h, ret, "publish '%s': flags 0x%x unknown", name, o.flags);
			if (o.access > NVB_ACCESS_GID)
				return nvb_fail(h, ret, "publish '%s': access %u unknown", name, o.access);
			if (o.access == NVB_ACCESS_UID || o.access == NVB_ACCESS_GID)
				return nvb_fail(h, ret, "publish '%s': %s %u not mapped in the publisher's user namespace (or fd %d refused)",
						name, o.access == NVB_ACCESS_UID ? "uid" : "gid",
						o.access == NVB_ACCESS_UID ? o.uid : o.gid, fd);
			if (o.uid || o.gid)
				return nvb_fail(h, ret, "publish '%s': uid/gid must be 0 with access %s",
						name, access_name(o.access));
			return nvb_fail(h, ret, "publish '%s': fd %d refused (an nvbridge handle, an io_uring or a Unix socket: reference cycle)",
					name, fd);
		}
		if (ret == -EBADF)
			return nvb_fail(h, ret, "publish '%s': fd %d (not open, or opened with O_PATH)", name, fd);
		if (ret == -EFAULT)
			return nvb_fail(h, ret, "publish '%s': blob is NULL with blob_len %zu", name, blob_len);
		if (ret == -EMSGSIZE)
			return nvb_fail(h, ret, "publish '%s': blob_len %zu over max_blob_size", name, blob_len);
		return nvb_fail(h, ret, "publish '%s'", name);
	}
	if (id)
		*id = p.id;
	return 0;
}

static void entry_from_fetch(struct nvb_entry *e, const struct nvbridge_fetch *f)
{
	memset(e, 0, sizeof(*e));
	e->id = f->id;
	e->pid = f->pid;
	e->uid = f->uid;
	e->gid = f->gid;
	e->access = f->access;
	e->flags = f->entry_flags;
	e->blob_len = f->blob_len;
	memcpy(e->name, f->name, NVB_NAME_MAX);
	e->name[NVB_NAME_MAX - 1] = 0;
}

/* nvb_fetch() up to the request: the options read, f filled; 0 or -errno (failed). */
static int fetch_prep(struct nvb *h, const char *name, const struct nvb_fetch_opts *opts,
		      void *blob, size_t blob_cap, struct nvb_fetch_opts *op,
		      struct nvbridge_fetch *fp)
{
	struct nvb_fetch_opts o = { .timeout_ns = -1 };
	struct nvbridge_fetch f;

	if (!name)
		return nvb_fail(h, -EINVAL, "fetch: name is NULL");
	if (opts) {
		int err = nvb_opts_in(&o, sizeof(o), opts, opts->sz,
				      offsetof(struct nvb_fetch_opts, timeout_ns) + sizeof(int64_t));

		if (err)
			return nvb_fail(h, err, "fetch: opts->sz %zu %s", opts->sz,
					err == -E2BIG ? "with unknown non-zero options" : "unsupported");
	}
	if (blob_cap > UINT32_MAX)
		blob_cap = UINT32_MAX;
	memset(&f, 0, sizeof(f));
	f.size = sizeof(f);
	f.flags = o.flags;
	/* ABI 2 refuses inputs a call would ignore (a timeout without WAIT) */
	f.timeout_ns = (o.flags & NVB_FETCH_WAIT) ? o.timeout_ns : 0;
	f.expect_uid = o.expect_uid;
	f.blob_cap = blob ? (uint32_t)blob_cap : 0;
	f.blob = f.blob_cap ? (uintptr_t)blob : 0;
	put_name(f.name, name);
	*op = o;
	*fp = f;
	return 0;
}

/* nvb_fetch() after the request: ret is its result; the entry, the errors, the fd. */
static int fetch_done(struct nvb *h, int ret, const char *name, const struct nvb_fetch_opts *op,
		      const struct nvbridge_fetch *fp, size_t blob_cap, struct nvb_entry *entry,
		      int *fdp)
{
	const struct nvb_fetch_opts o = *op;
	const struct nvbridge_fetch f = *fp;
	char why[NVB_ERRLEN];

	if (blob_cap > UINT32_MAX)
		blob_cap = UINT32_MAX;
	if (entry && (ret >= 0 || ret == -EMSGSIZE))
		entry_from_fetch(entry, &f);
	if (ret < 0) {
		if (ret == -EINVAL && nvb_name_check(name, false, why, sizeof(why)))
			return nvb_fail(h, ret, "fetch: %s", why);
		if (ret == -EINVAL && (o.flags & ~(uint32_t)NVBRIDGE_FETCH_FLAGS_ALL))
			return nvb_fail(h, ret, "fetch '%s': flags 0x%x unknown", name, o.flags);
		if (ret == -EINVAL && !(o.flags & NVB_FETCH_EXPECT_UID) && o.expect_uid)
			return nvb_fail(h, ret, "fetch '%s': expect_uid %u without NVB_FETCH_EXPECT_UID",
					name, o.expect_uid);
		if (ret == -EINVAL && (o.flags & NVB_FETCH_EXPECT_UID))
			return nvb_fail(h, ret, "fetch '%s': expect_uid %u is not mapped in the caller's user namespace",
					name, o.expect_uid);
		if (ret == -EINVAL)
			return nvb_fail(h, ret, "fetch '%s'", name);
		if (ret == -ENOTUNIQ)
			return nvb_fail(h, ret, "fetch '%s': published by several owners the caller "
					"may use; name the owner with NVB_FETCH_EXPECT_UID", name);
		if (ret == -EMSGSIZE)
			return nvb_fail(h, ret, "fetch '%s': blob is %u bytes, blob_cap %zu",
					name, f.blob_len, blob_cap);
		return nvb_fail(h, ret, "fetch '%s'", name);
	}
	if (f.entry_flags & NVBRIDGE_ENTRY_HAS_FD) {
		if (fdp)
			*fdp = ret;
		else
			close(ret);
	}
	return 0;
}

NVB_API int nvb_fetch(struct nvb *h, const char *name,
		      const struct nvb_fetch_opts *opts, void *blob, size_t blob_cap,
		      struct nvb_entry *entry, int *fdp)
{
	struct nvb_fetch_opts o;
	struct nvbridge_fetch f;
	int ret;

	if (fdp)
		*fdp = -1;
	if (!h)
		return -EINVAL;
	ret = fetch_prep(h, name, opts, blob, blob_cap, &o, &f);
	if (ret)
		return ret;
	ret = nvb_xfer(h, NVBRIDGE_IOC_FETCH, &f);
	return fetch_done(h, ret, name, &o, &f, blob_cap, entry, fdp);
}

NVB_API int nvb_unpublish(struct nvb *h, uint64_t id, const char *name)
{
	struct nvbridge_unpublish u;
	char why[NVB_ERRLEN];
	int ret;

	if (!h)
		return -EINVAL;
	if (!id && !name)
		return nvb_fail(h, -EINVAL, "unpublish: id 0 and name NULL");
	memset(&u, 0, sizeof(u));
	u.size = sizeof(u);
	u.id = id;
	if (!id)
		put_name(u.name, name);
	ret = nvb_xfer(h, NVBRIDGE_IOC_UNPUBLISH, &u);
	if (ret < 0) {
		if (ret == -EINVAL && !id && nvb_name_check(name, false, why, sizeof(why)))
			return nvb_fail(h, ret, "unpublish: %s", why);
		if (id)
			return nvb_fail(h, ret, "unpublish id %llu", (unsigned long long)id);
		return nvb_fail(h, ret, "unpublish '%s'", name);
	}
	return 0;
}

static void watch_prep(struct nvbridge_watch *w, const char *name, uint32_t flags)
{
	memset(w, 0, sizeof(*w));
	w->size = sizeof(*w);
	w->flags = flags;
	put_name(w->name, name);
}

/* nvb_watch() after the request: ret is its result. */
static int watch_done(struct nvb *h, int ret, const char *name, uint32_t flags,
		      const struct nvbridge_watch *wp, uint64_t *wid)
{
	const struct nvbridge_watch w = *wp;
	char why[NVB_ERRLEN];

	if (ret < 0) {
		if (ret == -EINVAL && nvb_name_check(name, flags & NVB_WATCH_PREFIX, why, sizeof(why)))
			return nvb_fail(h, ret, "watch: %s", why);
		if (ret == -EINVAL)
			return nvb_fail(h, ret, "watch '%s': flags 0x%x unknown", name, flags);
		return nvb_fail(h, ret, "watch '%s'", name);
	}
	if (wid)
		*wid = w.id;
	return 0;
}

NVB_API int nvb_watch(struct nvb *h, const char *name, uint32_t flags, uint64_t *wid)
{
	struct nvbridge_watch w;

	if (!h)
		return -EINVAL;
	if (!name)
		return nvb_fail(h, -EINVAL, "watch: name is NULL");
	watch_prep(&w, name, flags);
	return watch_done(h, nvb_xfer(h, NVBRIDGE_IOC_WATCH, &w), name, flags, &w, wid);
}

int nvb_watch_fetch(struct nvb *h, const char *wname, uint32_t wflags, int *wret,
		    uint64_t *wid, const char *name, const struct nvb_fetch_opts *opts, void *blob,
		    size_t blob_cap, struct nvb_entry *entry, int *fdp, unsigned int *round_trips)
{
	struct nvb_fetch_opts o;
	struct nvbridge_fetch f;
	struct nvbridge_watch w;
	int ret, wr;

	*round_trips = 0;
	*wret = 0;
	if (wid)
		*wid = 0;
	if (fdp)
		*fdp = -1;
	if (!h || !wname || !fdp)
		return -EINVAL;
	ret = fetch_prep(h, name, opts, blob, blob_cap, &o, &f);
	if (ret)
		return ret;
	watch_prep(&w, wname, wflags);
	if (h->forked) {
		wr = ret = -ECHILD;
	} else if (h->backend == NVB_BACKEND_KERNEL) {
		/* ioctls answer at once: the watch is in force before the fetch */
		wr = nvb_kernel_xfer(h, NVBRIDGE_IOC_WATCH, &w);
		if (wr < 0 && wr != -EEXIST) {
			ret = 0;	/* no fetch: it would go unwatched */
			*round_trips = 1;
		} else {
			ret = nvb_kernel_xfer(h, NVBRIDGE_IOC_FETCH, &f);
			*round_trips = 2;
		}
	} else {
		ret = nvb_broker_xfer2(h, NVBRIDGE_IOC_WATCH, &w, &wr, NVBRIDGE_IOC_FETCH, &f);
		*round_trips = 1;
	}
	*wret = wr < 0 ? wr : 0;
	if (wr < 0 && wr != -EEXIST) {	/* -EEXIST: watched already, in force */
		/* the fetch is worth nothing unwatched: drop it, say why the watch failed */
		if (ret >= 0 && (f.entry_flags & NVBRIDGE_ENTRY_HAS_FD))
			close(ret);
		return watch_done(h, wr, wname, wflags, &w, NULL);
	}
	if (wid && !wr)
		*wid = w.id;
	return fetch_done(h, ret, name, &o, &f, blob_cap, entry, fdp);
}

NVB_API int nvb_unwatch(struct nvb *h, uint64_t wid)
{
	struct nvbridge_watch w;
	int ret;

	if (!h)
		return -EINVAL;
	memset(&w, 0, sizeof(w));
	w.size = sizeof(w);
	w.id = wid;
	ret = nvb_xfer(h, NVBRIDGE_IOC_UNWATCH, &w);
	if (ret < 0)
		return nvb_fail(h, ret, "unwatch %llu", (unsigned long long)wid);
	return 0;
}

NVB_API int nvb_list(struct nvb *h, uint64_t *cursor, struct nvb_entry *out,
		     unsigned int max)
{
	struct nvbridge_entry_info rec[64];
	struct nvbridge_list l;
	unsigned int done = 0;
	int ret;

	if (!h)
		return -EINVAL;
	if (!cursor || (!out && max))
		return nvb_fail(h, -EINVAL, "list: %s is NULL", cursor ? "out" : "cursor");
	while (done < max) {
		unsigned int want = max - done;

		if (want > 64)
			want = 64;
		memset(&l, 0, sizeof(l));
		l.size = sizeof(l);
		l.cursor = *cursor;
		l.entries = (uintptr_t)rec;
		l.count = want;
		l.entry_size = sizeof(rec[0]);
		ret = nvb_xfer(h, NVBRIDGE_IOC_LIST, &l);
		if (ret < 0)
			return nvb_fail(h, ret, "list");
		if ((unsigned int)ret > want)	/* never more than asked: out[] ends at max */
			return nvb_fail(h, -EOVERFLOW, "list: %d entries for %u asked", ret, want);
		for (int i = 0; i < ret; i++) {
			struct nvb_entry *e = &out[done + i];

			memset(e, 0, sizeof(*e));
			e->id = rec[i].id;
			e->pid = rec[i].pid;
			e->uid = rec[i].uid;
			e->gid = rec[i].gid;
			e->access = rec[i].access;
			e->flags = rec[i].flags;
			e->blob_len = rec[i].blob_len;
			memcpy(e->name, rec[i].name, NVB_NAME_MAX);
			e->name[NVB_NAME_MAX - 1] = 0;
		}
		if (ret > 0)
			*cursor = l.cursor;
		done += ret;
		if (ret == 0)
			break;
	}
	return (int)done;
}

NVB_API int nvb_info(struct nvb *h, struct nvb_info *info)
{
	struct nvbridge_info i;
	struct nvb_info o;
	int ret;

	if (!h)
		return -EINVAL;
	if (!info || info->sz < offsetof(struct nvb_info, user_entries) + 4)
		return nvb_fail(h, -EINVAL, "info: info is NULL or info->sz too small");
	memset(&i, 0, sizeof(i));
	i.size = sizeof(i);
	ret = nvb_xfer(h, NVBRIDGE_IOC_INFO, &i);
	if (ret < 0)
		return nvb_fail(h, ret, "info");
	memset(&o, 0, sizeof(o));
	o.sz = info->sz;
	o.backend = h->backend;
	o.abi_version = i.abi_version;
	o.name_max = i.name_max;
	o.max_blob_size = i.max_blob_size;
	o.max_entries_per_user = i.max_entries_per_user;
	o.max_events = i.max_events;
	o.max_watches = i.max_watches;
	o.entries = i.entries;
	o.user_entries = i.user_entries;
	memcpy(info, &o, info->sz < sizeof(o) ? info->sz : sizeof(o));
	return 0;
}

/* ---- events ---- */

NVB_API int nvb_event_fd(struct nvb *h)
{
	if (!h)
		return -EINVAL;
	if (h->forked)
		return -ECHILD;
	return h->evfd >= 0 ? h->evfd : -ENOTCONN;
}

static void event_from_raw(struct nvb_event *e, const struct nvbridge_event *r)
{
	memset(e, 0, sizeof(*e));
	e->type = r->type;
	e->reason = r->reason;
	e->seq = r->seq;
	e->id = r->id;
	e->watch_id = r->watch_id;
	e->pid = r->pid;
	e->uid = r->uid;
	e->gid = r->gid;
	e->lost = r->lost;
	memcpy(e->name, r->name, NVB_NAME_MAX);
	e->name[NVB_NAME_MAX - 1] = 0;
}

NVB_API int nvb_event_parse(struct nvb *h, const void *buf, int res,
			    struct nvb_event *ev, unsigned int max)
{
	const unsigned char *p = buf;
	struct nvbridge_event r;
	unsigned int n = 0;

	if (res < 0)
		return res;
	if (!buf || (res % NVBRIDGE_EVENT_SIZE)) {
		if (h)
			nvb_seterr(h, "event: %d bytes is not a whole number of %d-byte records",
				   res, NVBRIDGE_EVENT_SIZE);
		return -EPROTO;
	}
	for (int off = 0; off < res && n < max; off += NVBRIDGE_EVENT_SIZE) {
		memcpy(&r, p + off, sizeof(r));
		if (r.size != NVBRIDGE_EVENT_SIZE || r.type < NVBRIDGE_EVENT_PUBLISHED ||
		    r.type > NVBRIDGE_EVENT_OVERFLOW) {
			if (h)
				nvb_seterr(h, "event: bad record (size %u type %u)", r.size, r.type);
			return -EPROTO;
		}
		event_from_raw(&ev[n++], &r);
	}
	return (int)n;
}

static void ev_prep(struct nvb *h, struct io_uring_sqe *sqe, void *buf, size_t len,
		    struct msghdr *msg, struct iovec *iov)
{
	if (h->backend == NVB_BACKEND_KERNEL) {
		io_uring_prep_read(sqe, h->evfd, buf, (unsigned int)len, 0);
	} else {
		/* one datagram = one record: read exactly one record */
		iov->iov_base = buf;
		iov->iov_len = NVBRIDGE_EVENT_SIZE;
		memset(msg, 0, sizeof(*msg));
		msg->msg_iov = iov;
		msg->msg_iovlen = 1;
		io_uring_prep_recvmsg(sqe, h->evfd, msg, 0);
	}
}

NVB_API int nvb_prep_event_read(struct io_uring_sqe *sqe, struct nvb *h, void *buf,
				size_t len)
{
	if (!sqe || !h || !buf)
		return -EINVAL;
	if (len < NVBRIDGE_EVENT_SIZE)
		return nvb_fail(h, -EINVAL, "prep_event_read: len %zu < one record (%d)",
				len, NVBRIDGE_EVENT_SIZE);
	if (h->forked)
		return nvb_fail(h, -ECHILD, "prep_event_read");
	if (h->evfd < 0)
		return nvb_fail(h, -ENOTCONN, "prep_event_read");
	if (len > (1U << 30))
		len = 1U << 30;
	len -= len % NVBRIDGE_EVENT_SIZE;
	ev_prep(h, sqe, buf, len, &h->appmsg, &h->appiov);
	io_uring_sqe_set_data64(sqe, nvb_event_tag(h));
	return 0;
}

#define NVB_TAG_BITS 0x4e56420000000000ULL	/* "NVB" above any user pointer */

NVB_API uint64_t nvb_event_tag(const struct nvb *h)
{
	return NVB_TAG_BITS | (uint64_t)(uintptr_t)h;
}

NVB_API int nvb_cqe_is_event(const struct nvb *h, const struct io_uring_cqe *cqe)
{
	return h && cqe && cqe->user_data == nvb_event_tag(h);
}

/* Called with evlock held: non-blocking read of what is queued now. */
static int ev_read_now(struct nvb *h)
{
	ssize_t n;

	if (h->backend == NVB_BACKEND_KERNEL) {
		n = read(h->evfd, h->evbuf, sizeof(h->evbuf));
		return n < 0 ? -errno : (int)n;
	}
	/* broker: one datagram per record */
	size_t got = 0;

	while (got + NVBRIDGE_EVENT_SIZE <= sizeof(h->evbuf)) {
		n = recv(h->evfd, h->evbuf + got, NVBRIDGE_EVENT_SIZE, MSG_DONTWAIT);
		if (n < 0) {
			if (got)
				break;
			return -errno;
		}
		if (n == 0)
			return got ? (int)got : 0;
		got += (size_t)n;
	}
	return (int)got;
}

/* Reaps the ring's completions until the read (user_data 1) is seen. */
static int ev_reap(struct nvb *h, int *res)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = { .tv_sec = 2 };

	while (h->ev_inflight) {
		int ret = io_uring_wait_cqe_timeout(&h->ring, &cqe, &ts);

		if (ret == -EINTR)
			continue;
		if (ret)
			return ret;
		if (cqe->user_data == 1) {
			*res = cqe->res;
			h->ev_inflight = false;
		}
		io_uring_cqe_seen(&h->ring, cqe);
	}
	return 0;
}

/*
 * Called with evlock held: one read through the ring, waiting at most
 * timeout_ns (< 0 forever).  Nothing stays armed when it returns: on a
 * timeout or a signal the read is cancelled (and if it completed meanwhile,
 * its records are returned), so the application may then use its own ring.
 */
static int ev_wait(struct nvb *h, int64_t timeout_ns)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts;
	struct io_uring_sqe *sqe;
	int ret, res = 0;

	sqe = io_uring_get_sqe(&h->ring);
	if (!sqe)
		return -EBUSY;
	ev_prep(h, sqe, h->evbuf, sizeof(h->evbuf), &h->evmsg, &h->eviov);
	io_uring_sqe_set_data64(sqe, 1);
	ret = io_uring_submit(&h->ring);
	if (ret < 0)
		return ret;
	h->ev_inflight = true;
	ts.tv_sec = timeout_ns / 1000000000;
	ts.tv_nsec = timeout_ns % 1000000000;
	for (;;) {
		ret = timeout_ns < 0 ? io_uring_wait_cqe(&h->ring, &cqe) :
				       io_uring_wait_cqe_timeout(&h->ring, &cqe, &ts);
		if (ret || cqe->user_data == 1)
			break;
		/* an earlier call's cancel, completed after its read: not ours */
		io_uring_cqe_seen(&h->ring, cqe);
	}
	if (ret == 0) {
		res = cqe->res;
		h->ev_inflight = false;
		io_uring_cqe_seen(&h->ring, cqe);
		return res;
	}
	/* timed out or interrupted: cancel, and take what may have come */
	sqe = io_uring_get_sqe(&h->ring);
	if (sqe) {
		io_uring_prep_cancel64(sqe, 1, 0);
		io_uring_sqe_set_data64(sqe, 2);
		io_uring_submit(&h->ring);
	}
	if (ev_reap(h, &res))
		return -EIO;
	if (res == -ECANCELED || res == -EINTR)
		return ret == -EINTR ? -EINTR : -ETIMEDOUT;
	return res;
}

NVB_API int nvb_event_read(struct nvb *h, struct nvb_event *ev, unsigned int max,
			   int64_t timeout_ns)
{
	int n;

	if (!h || (!ev && max))
		return -EINVAL;
	if (max == 0)
		return 0;
	if (h->forked)
		return nvb_fail(h, -ECHILD, "event_read");
	if (h->evfd < 0)
		return nvb_fail(h, -ENOTCONN, "event_read");
	pthread_mutex_lock(&h->evlock);
	n = event_read_locked(h, ev, max, timeout_ns);
	pthread_mutex_unlock(&h->evlock);
	return n;
}

/* nvb_event_read()'s work, h->evlock held by the caller (and still held on return). */
static int event_read_locked(struct nvb *h, struct nvb_event *ev, unsigned int max,
			     int64_t timeout_ns)
{
	int res, n;

	if (!h->ring_ok && !h->ring_tried) {
		/* the ring is created on first use: handles that never read events pay nothing */
		h->ring_tried = true;
		if (io_uring_queue_init(4, &h->ring, 0) == 0)
			h->ring_ok = true;
	}
	if (h->evq_pos == h->evq_len) {
		h->evq_pos = h->evq_len = 0;
		if (timeout_ns == 0) {
			res = ev_read_now(h);
		} else if (h->ring_ok) {
			res = ev_wait(h, timeout_ns);
		} else {
			/* no io_uring here (disabled by policy): poll + read */
			struct pollfd p = { .fd = h->evfd, .events = POLLIN };
			int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);

			res = poll(&p, 1, ms);
			if (res < 0)
				res = -errno;
			else if (res == 0)
				res = -ETIMEDOUT;
			else
				res = ev_read_now(h);
		}
		if (res == 0) {
			res = h->backend == NVB_BACKEND_BROKER ? -ECONNRESET : -EPROTO;
		}
		if (res < 0) {
			if (res == -ETIMEDOUT || res == -EAGAIN)
				return res;
			return nvb_fail(h, res, "event_read");
		}
		n = nvb_event_parse(h, h->evbuf, res, h->evq, NVB_EVQ);
		if (n < 0)
			return n;
		h->evq_len = (unsigned int)n;
	}
	n = 0;
	while (h->evq_pos < h->evq_len && (unsigned int)n < max)
		ev[n++] = h->evq[h->evq_pos++];
	return n;
}
