// SPDX-License-Identifier: MIT
/*
 * nvbridged: the user-space nvbridge broker.  Same semantics as the kernel
 * module (Documentation/semantics.md, Documentation), over a SOCK_SEQPACKET
 * Unix socket speaking the UAPI structs (see "Broker wire framing" in
 * <linux/nvbridge.h>).  Single-threaded, epoll driven.
 *
 * Identity of a client (what the kernel captures at open()):
 *   - euid, egid: SO_PEERCRED, captured by the kernel at connect();
 *     supplementary groups: SO_PEERGROUPS (also captured at connect()).
 *   - scope (IPC ns), user ns (uid_map/gid_map), pid ns, CapEff: read from
 *     /proc/<pid> when the client's HELLO arrives.
 *
 * The race: SO_PEERCRED's pid is only a number.  If the client exited and
 * the number were reused before we read /proc/<pid>/ns/ipc, we would put the
 * connection in another process's scope.  It is closed like this: HELLO
 * must carry (SCM_RIGHTS) a pidfd of the sending process, and the kernel
 * attaches SCM_CREDENTIALS (SO_PASSCRED) with the sender's pid, which it
 * verifies.  We require SO_PEERCRED pid == SCM_CREDENTIALS pid == the
 * pidfd's pid (fdinfo "Pid:"), read /proc/<pid>/..., and then check through
 * the pidfd that the process has not exited.  The pidfd was opened by the
 * sender while it owned that pid, so it names the sender; if the sender is
 * still alive after the reads, /proc/<pid> was the sender's.  What remains:
 * a client may call unshare()/setns() between connect() and HELLO (the
 * library sends HELLO right after connect), which only lets it choose a
 * namespace it is already in; a client that forks and lets the child send
 * HELLO is refused (pid mismatch).
 *
 * Where the kernel has SO_PEERPIDFD (Linux 6.5+), the broker also takes
 * the kernel's own pidfd of the connecting process at accept() and uses
 * it for the liveness check instead of the one the client sent: a client
 * able to forge SCM_CREDENTIALS (root in its user namespace) cannot then
 * pass off a process that took over the pid of one that connected and
 * exited, since the kernel's pidfd says the connecting process is gone.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/nsfs.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <linux/nvbridge.h>
#include "nvb_wire.h"

#define CAP_IPC_OWNER_BIT 15
#define MAX_WAITERS 1024
#define MAX_OUTQ 256
#define MAX_MAP 340
#define MAX_PIDNS 33
#define MSG_MAX (NVBRIDGE_WIRE_HDR_SIZE + NVBRIDGE_WIRE_ARG_MAX + NVBRIDGE_WIRE_DATA_MAX)

/* ---- configuration ---- */
static struct {
	const char *socket;
	mode_t mode;
	gid_t group;
	bool have_group;
	uint32_t max_entries_per_user;
	uint32_t max_blob_size;
	uint32_t max_events;
	uint32_t max_watches;
	uint32_t max_conns_per_user;
	uint32_t hello_timeout_ms;
	int verbose;
} cfg = {
	.socket = "/run/nvbridge/nvbridged.sock",
	.mode = 0666,
	.max_entries_per_user = 1024,
	.max_blob_size = 4096,
	.max_events = 1024,
	.max_watches = 64,
	.max_conns_per_user = 1024,
	.hello_timeout_ms = 5000,
};

static uint32_t overflowuid = 65534, overflowgid = 65534;
static size_t ev_truesize;	/* SIOCOUTQ bytes per queued event record */
static int listen_fd = -1, ep = -1;
static bool socket_activated;
static uint64_t next_entry_id = 1;
static struct stat listen_st;
static dev_t nvbridge_rdev;	/* /dev/nvbridge's device number, if any */
static dev_t anon_dev;		/* st_dev of anonymous-inode files (io_uring, eventfd...) */
static unsigned int total_waiters;
static uint64_t msg_gen = 1;	/* bumped per message handled (see pub_alive) */
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77		/* Linux 6.5 */
#endif

static bool have_pidfd_signal;	/* pidfd_send_signal(sig 0) works here (probed at start) */
static unsigned int lost_clients;	/* clients owing an OVERFLOW record */
static unsigned int pre_hello;		/* connections that have not said HELLO yet */
static int reserve_fd = -1;		/* spent to shed a connection at EMFILE */
static int64_t listen_paused_until;	/* no reserve either: accept() again after this */
static int64_t last_shed_log;

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "nvbridged: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- data ---- */
struct idmap {
	uint32_t n;
	struct { uint32_t in, out, count; } e[MAX_MAP];
};

struct outmsg {
	struct outmsg *next;
	size_t len;
	int fd;
	unsigned char buf[];
};

struct waiter {
	struct waiter *next;
	uint32_t seq;
	uint32_t size;		/* request's struct size */
	struct nvbridge_fetch f;
	int64_t deadline;	/* CLOCK_MONOTONIC ns, or -1 */
};

struct watch {
	uint64_t id;
	uint32_t flags;
	char name[NVBRIDGE_NAME_MAX];
};

struct client {
	struct client *next;
	int fd, evfd, pidfd;
	int peer_pidfd;		/* SO_PEERPIDFD: the kernel's pidfd of the connecting process, or -1 */
	bool hello;
	int64_t hello_deadline;		/* CLOCK_MONOTONIC ns: HELLO must come by then */
	bool dead;
	bool reaped;			/* its process is gone: report pid 0 */
	uint64_t alive_gen;		/* msg_gen when last seen alive */
	pid_t pid;
	uid_t euid;
	gid_t egid;
	gid_t *groups;
	int ngroups;
	dev_t ipc_dev;
	ino_t ipc_ino;
	ino_t pidns[MAX_PIDNS];		/* pid ns inos, outermost (ours) first */
	pid_t nspid[MAX_PIDNS];
	int npidns;
	struct idmap uidmap, gidmap;
	bool cap_ipc_owner;
	ino_t evend_ino;		/* the client's end of the event socket */
	uint32_t ev_sent_bound;		/* >= records sent and not yet read by the client */
	/* watches */
	struct watch *watches;
	uint32_t nwatches;
	uint64_t next_watch_id;
	/* events */
	struct nvbridge_event *evq;	/* ring of max_events + 1 */
	uint32_t evq_head, evq_len;
	uint64_t ev_seq;
	uint32_t lost;
	uint64_t lost_seq;
	bool ev_epollout;
	/* replies */
	struct outmsg *outq, **outq_tail;
	uint32_t outq_len;
	bool epollout;
	struct waiter *waiters;
	uint32_t nwaiters;
};

struct entry {
	struct entry *next;
	uint64_t id;
	char name[NVBRIDGE_NAME_MAX];
	dev_t ipc_dev;
	ino_t ipc_ino;
	struct client *owner;
	int fd;
	void *blob;
	uint32_t blob_len;
	uint32_t access;
	uid_t puid;		/* policy ids, in our namespace */
	gid_t pgid;
	uid_t euid;
	gid_t egid;
};

static struct client *clients;
static struct entry *entries, **entries_tail = &entries;
static unsigned int nclients;

/* ep tags: low bits */
#define TAG_LISTEN 1
#define TAG_SIGNAL 2
static int sig_fd = -1;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- id and pid translation ---- */
static int read_idmap(int procfd, const char *file, struct idmap *m)
{
	char line[128];
	FILE *f;
	int fd = openat(procfd, file, O_RDONLY | O_CLOEXEC);

	m->n = 0;
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	while (m->n < MAX_MAP && fgets(line, sizeof(line), f)) {
		unsigned long a, b, c;

		if (sscanf(line, "%lu %lu %lu", &a, &b, &c) == 3) {
			m->e[m->n].in = (uint32_t)a;
			m->e[m->n].out = (uint32_t)b;
			m->e[m->n].count = (uint32_t)c;
			m->n++;
		}
	}
	fclose(f);
	return 0;
}

/* our id -> id inside the client's user ns; over when unmapped */
static uint32_t map_to(const struct idmap *m, uint32_t id, uint32_t over)
{
	for (uint32_t i = 0; i < m->n; i++)
		if (id >= m->e[i].out && id - m->e[i].out < m->e[i].count)
			return m->e[i].in + (id - m->e[i].out);
	return over;
}

/* id inside the client's user ns -> our id; -1 when unmapped */
static int64_t map_from(const struct idmap *m, uint32_t id)
{
	if (id == (uint32_t)-1)
		return -1;
	for (uint32_t i = 0; i < m->n; i++)
		if (id >= m->e[i].in && id - m->e[i].in < m->e[i].count)
			return (int64_t)m->e[i].out + (id - m->e[i].in);
	return -1;
}

/*
 * Has the publisher's process (the one that connected; its pidfd came with
 * HELLO) not yet been reaped?  The module reports pid 0 once the publishing
 * thread group is gone (pid_has_task(TGID)), because the number may be
 * reused.  pidfd_send_signal(sig 0) answers exactly that question: it finds
 * a zombie (0, or -EPERM without CAP_KILL) and fails with -ESRCH once the
 * process is reaped.  Cached for the message being handled, so that a LIST
 * or a burst of events costs one syscall per publisher.
 */
static bool pub_alive(struct client *pub)
{
	long r;

	if (pub->reaped)
		return false;
	if (pub->pidfd < 0 || pub->alive_gen == msg_gen)
		return true;
	if (have_pidfd_signal) {
		r = syscall(SYS_pidfd_send_signal, pub->pidfd, 0, NULL, 0);
		if (r < 0 && errno == ESRCH) {
			pub->reaped = true;
			return false;
		}
	} else {
		/* filtered or missing: exited counts as gone, zombie or not */
		struct pollfd p = { .fd = pub->pidfd, .events = POLLIN };

		if (poll(&p, 1, 0) > 0) {
			pub->reaped = true;
			return false;
		}
	}
	pub->alive_gen = msg_gen;
	return true;
}

static uint32_t pid_for(const struct client *viewer, struct client *pub)
{
	ino_t ns = viewer->pidns[viewer->npidns - 1];

	for (int i = 0; i < pub->npidns; i++)
		if (pub->pidns[i] == ns)
			return pub_alive(pub) ? (uint32_t)pub->nspid[i] : 0;
	return 0;
}

/* ---- access ---- */
static bool in_groups(const struct client *c, gid_t g)
{
	if (c->egid == g)
		return true;
	for (int i = 0; i < c->ngroups; i++)
		if (c->groups[i] == g)
			return true;
	return false;
}

static bool may_use(const struct client *c, const struct entry *e)
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

static bool same_scope(const struct client *c, const struct entry *e)
{
	return c->ipc_dev == e->ipc_dev && c->ipc_ino == e->ipc_ino;
}

static struct entry *find_entry(const struct client *c, const char *name)
{
	for (struct entry *e = entries; e; e = e->next)
		if (same_scope(c, e) && !strcmp(e->name, name))
			return e;
	return NULL;
}

/* ---- output ---- */
static void drop_client(struct client *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void set_epoll(struct client *c)
{
	struct epoll_event ev = { .data.ptr = c };
	bool want_out = c->outq != NULL;

	ev.events = want_out ? EPOLLOUT : EPOLLIN;
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->epollout = want_out;
}

/* One message from iov[0..niov), with pass_fd attached when >= 0.  0 or -errno. */
static int send_iov(int fd, struct iovec *iov, size_t niov, int pass_fd)
{
	union {
		struct cmsghdr c;
		char b[CMSG_SPACE(sizeof(int))];
	} cm;
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = niov };

	if (pass_fd >= 0) {
		memset(&cm, 0, sizeof(cm));
		m.msg_control = cm.b;
		m.msg_controllen = sizeof(cm.b);
		cm.c.cmsg_level = SOL_SOCKET;
		cm.c.cmsg_type = SCM_RIGHTS;
		cm.c.cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(&cm.c), &pass_fd, sizeof(int));
	}
	return sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 ? -errno : 0;
}

static void flush_out(struct client *c)
{
	while (c->outq) {
		struct outmsg *o = c->outq;
		struct iovec iov = { o->buf, o->len };
		int ret = send_iov(c->fd, &iov, 1, o->fd);

		if (ret == -EAGAIN)
			break;
		if (ret < 0) {
			/* peer gone: the EPOLLHUP/EOF path cleans up */
			c->dead = true;
		}
		c->outq = o->next;
		if (o->fd >= 0)
			close(o->fd);
		free(o);
		c->outq_len--;
		if (c->dead)
			break;
	}
	if (!c->outq)
		c->outq_tail = &c->outq;
	if (!c->dead && (c->outq != NULL) != c->epollout)
		set_epoll(c);
}

/* Queues a reply; pass_fd is dup'ed. */
static void reply(struct client *c, uint32_t type, uint32_t cmd, uint32_t seq, int32_t result,
		  const void *arg, uint32_t arg_size, const void *data, uint32_t data_len,
		  int pass_fd)
{
	struct nvbridge_wire_hdr h = {
		.magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
		.type = (uint16_t)type, .cmd = cmd, .seq = seq, .result = result,
		.arg_size = arg_size, .data_len = data_len,
	};
	size_t len = NVBRIDGE_WIRE_HDR_SIZE + arg_size + data_len;
	struct outmsg *o;

	if (c->dead)
		return;
	if (!c->outq) {
		/* fast path: nothing queued, send now without copying */
		struct iovec iov[3] = { { &h, NVBRIDGE_WIRE_HDR_SIZE }, { (void *)arg, arg_size },
					{ (void *)data, data_len } };
		int ret = send_iov(c->fd, iov, 3, pass_fd);

		if (!ret)
			return;
		if (ret != -EAGAIN) {
			c->dead = true;	/* peer gone: the EOF path cleans up */
			return;
		}
	}
	if (c->outq_len >= MAX_OUTQ) {
		drop_client(c, "does not read its replies (%u queued)", c->outq_len);
		return;
	}
	o = malloc(sizeof(*o) + len);
	if (!o) {
		drop_client(c, "out of memory for a reply");
		return;
	}
	o->fd = pass_fd >= 0 ? fcntl(pass_fd, F_DUPFD_CLOEXEC, 0) : -1;
	if (pass_fd >= 0 && o->fd < 0 && !h.result)
		h.result = -errno;	/* out of fds: say so rather than drop the fd */
	memcpy(o->buf, &h, NVBRIDGE_WIRE_HDR_SIZE);
	if (arg_size)
		memcpy(o->buf + NVBRIDGE_WIRE_HDR_SIZE, arg, arg_size);
	if (data_len)
		memcpy(o->buf + NVBRIDGE_WIRE_HDR_SIZE + arg_size, data, data_len);
	o->len = len;
	o->next = NULL;
	*c->outq_tail = o;
	c->outq_tail = &o->next;
	c->outq_len++;
	/* the socket is full (EAGAIN above, or replies already queued): EPOLLOUT sends it */
	if (!c->epollout)
		set_epoll(c);
}

/* ---- events ---- */
/* Records sent on the event socket and not yet read: measured (SIOCOUTQ). */
static uint32_t ev_in_flight(struct client *c)
{
	int q = 0;

	if (!ev_truesize || ioctl(c->evfd, SIOCOUTQ, &q) < 0 || q <= 0)
		q = 0;
	c->ev_sent_bound = (uint32_t)(((size_t)q + ev_truesize - 1) / (ev_truesize ? ev_truesize : 1));
	return c->ev_sent_bound;
}

static void ev_flush(struct client *c)
{
	while (c->evq_len) {
		struct nvbridge_event *r = &c->evq[c->evq_head];
		ssize_t n = send(c->evfd, r, sizeof(*r), MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0 && errno == EAGAIN)
			break;
		if (n >= 0)
			c->ev_sent_bound++;
		/* else: the reader closed its end; drop silently */
		c->evq_head = (c->evq_head + 1) % (cfg.max_events + 1);
		c->evq_len--;
	}
	bool want = c->evq_len > 0;

	if (want != c->ev_epollout) {
		struct epoll_event ev = { .events = want ? EPOLLOUT : 0,
					  .data.u64 = (uint64_t)(uintptr_t)c | 4 };

		epoll_ctl(ep, EPOLL_CTL_MOD, c->evfd, &ev);
		c->ev_epollout = want;
	}
}

static void ev_push(struct client *c, const struct nvbridge_event *r)
{
	uint32_t tail = (c->evq_head + c->evq_len) % (cfg.max_events + 1);

	c->evq[tail] = *r;
	c->evq_len++;
}

/*
 * Records queued here plus records in flight.  Measuring the latter costs a
 * syscall per event; as long as the upper bound (every record sent since
 * the last measurement still unread) keeps us below max_events, the exact
 * number cannot change a decision, so it is only measured near the limit.
 */
static uint32_t ev_depth(struct client *c)
{
	if (c->evq_len + c->ev_sent_bound < cfg.max_events)
		return c->evq_len + c->ev_sent_bound;
	return c->evq_len + ev_in_flight(c);
}

/* Emits the OVERFLOW record once everything before it was read. */
static void ev_check_overflow(struct client *c)
{
	if (c->lost && c->evq_len == 0 && ev_in_flight(c) == 0) {
		struct nvbridge_event r = {
			.size = NVBRIDGE_EVENT_SIZE, .type = NVBRIDGE_EVENT_OVERFLOW,
			.seq = c->lost_seq, .lost = c->lost,
		};

		ev_push(c, &r);
		c->lost = 0;
		lost_clients--;
		ev_flush(c);
	}
}

static void ev_emit(struct client *c, struct nvbridge_event *r)
{
	uint32_t depth;

	r->seq = ++c->ev_seq;
	if (c->lost)
		ev_check_overflow(c);
	depth = ev_depth(c);
	if (c->lost || depth >= cfg.max_events) {
		if (!c->lost)
			lost_clients++;
		c->lost++;
		c->lost_seq = r->seq;
		return;
	}
	ev_push(c, r);
	ev_flush(c);
}

static void notify(const struct entry *e, uint16_t type, uint16_t reason, const struct client *skip)
{
	for (struct client *c = clients; c; c = c->next) {
		if (!c->hello || c->dead || c == skip || !same_scope(c, e) || !c->nwatches)
			continue;
		if (!may_use(c, e))
			continue;
		for (uint32_t i = 0; i < c->nwatches; i++) {
			struct watch *w = &c->watches[i];
			bool match = (w->flags & NVBRIDGE_WATCH_PREFIX) ?
				!strncmp(e->name, w->name, strlen(w->name)) :
				!strcmp(e->name, w->name);
			struct nvbridge_event r;

			if (!match)
				continue;
			memset(&r, 0, sizeof(r));
			r.size = NVBRIDGE_EVENT_SIZE;
			r.type = type;
			r.reason = reason;
			r.id = e->id;
			r.watch_id = w->id;
			r.pid = pid_for(c, e->owner);
			r.uid = map_to(&c->uidmap, e->euid, overflowuid);
			r.gid = map_to(&c->gidmap, e->egid, overflowgid);
			memcpy(r.name, e->name, NVBRIDGE_NAME_MAX);
			ev_emit(c, &r);
		}
	}
}

/* ---- entries ---- */
static void entry_free(struct entry *e)
{
	if (e->fd >= 0)
		close(e->fd);
	free(e->blob);
	free(e);
}

static void entry_revoke(struct entry *e, uint16_t reason, const struct client *skip)
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
static int get_struct(void *dst, size_t ksize, size_t ver0, const void *src, uint32_t usize)
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

static int check_name(const char *n, bool prefix)
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

static uint32_t user_entries(uid_t euid)
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
static bool refused_file(int fd)
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
static int do_publish(struct client *c, struct nvbridge_publish *p, const void *data,
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

static void fetch_reply(struct client *c, uint32_t seq, uint32_t size,
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

static void waiter_free(struct client *c, struct waiter *w)
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

static void wake_waiters(struct entry *e)
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

static void do_fetch(struct client *c, uint32_t seq, uint32_t size, struct nvbridge_fetch *f)
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

static int do_unpublish(struct client *c, struct nvbridge_unpublish *u)
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

static int do_watch(struct client *c, struct nvbridge_watch *w)
{
	bool prefix;
	int ret;

	if (w->flags & ~NVBRIDGE_WATCH_FLAGS_ALL)
		return -EINVAL;
	prefix = w->flags & NVBRIDGE_WATCH_PREFIX;
	ret = check_name(w->name, prefix);
	if (ret)
		return ret;
	for (uint32_t i = 0; i < c->nwatches; i++)
		if (c->watches[i].flags == w->flags && !strcmp(c->watches[i].name, w->name))
			return -EEXIST;
	if (c->nwatches >= cfg.max_watches)
		return -ENOSPC;
	struct watch *nw = realloc(c->watches, (c->nwatches + 1) * sizeof(*nw));

	if (!nw)
		return -ENOMEM;
	c->watches = nw;
	nw[c->nwatches].id = ++c->next_watch_id;
	nw[c->nwatches].flags = w->flags;
	memset(nw[c->nwatches].name, 0, NVBRIDGE_NAME_MAX);
	strcpy(nw[c->nwatches].name, w->name);
	w->id = nw[c->nwatches].id;
	c->nwatches++;
	return 0;
}

static int do_unwatch(struct client *c, struct nvbridge_watch *w)
{
	if (w->flags)
		return -EINVAL;
	for (int i = 0; i < NVBRIDGE_NAME_MAX; i++)
		if (w->name[i])
			return -EINVAL;
	for (uint32_t i = 0; i < c->nwatches; i++)
		if (c->watches[i].id == w->id) {
			c->watches[i] = c->watches[--c->nwatches];
			return 0;
		}
	return -ENOENT;
}

static void do_list(struct client *c, uint32_t seq, uint32_t size, struct nvbridge_list *l)
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

static void fill_info(struct client *c, struct nvbridge_info *i)
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

/* ---- HELLO: who is the client ---- */
static int fdinfo_pid(int fd)
{
	char path[64], line[128];
	FILE *f;
	int pid = -1;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "Pid:", 4)) {
			pid = atoi(line + 4);
			break;
		}
	fclose(f);
	return pid;
}

static int ns_ino(int procfd, const char *ns, struct stat *st)
{
	char p[32];

	snprintf(p, sizeof(p), "ns/%s", ns);
	return fstatat(procfd, p, st, 0) ? -errno : 0;
}

static int identify(struct client *c, int procfd)
{
	char line[512];
	struct stat st;
	FILE *f;
	int fd, ret;
	uint64_t capeff = 0;
	ino_t userns_ino;

	ret = ns_ino(procfd, "ipc", &st);
	if (ret)
		return ret;
	c->ipc_dev = st.st_dev;
	c->ipc_ino = st.st_ino;
	ret = ns_ino(procfd, "user", &st);
	if (ret)
		return ret;
	userns_ino = st.st_ino;
	if ((ret = read_idmap(procfd, "uid_map", &c->uidmap)) ||
	    (ret = read_idmap(procfd, "gid_map", &c->gidmap)))
		return ret;
	/* NSpid and CapEff */
	fd = openat(procfd, "status", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	c->npidns = 0;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "NSpid:", 6)) {
			char *s = line + 6, *end;

			while (c->npidns < MAX_PIDNS) {
				long v = strtol(s, &end, 10);

				if (end == s)
					break;
				c->nspid[c->npidns++] = (pid_t)v;
				s = end;
			}
		} else if (!strncmp(line, "CapEff:", 7)) {
			capeff = strtoull(line + 7, NULL, 16);
		}
	}
	fclose(f);
	if (c->npidns == 0)
		return -EIO;
	/* pid ns inos: innermost from ns/pid, then parents */
	fd = openat(procfd, "ns/pid", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (int i = c->npidns - 1; i >= 0; i--) {
		int parent;

		if (fstat(fd, &st)) {
			close(fd);
			return -errno;
		}
		c->pidns[i] = st.st_ino;
		if (i == 0)
			break;
		parent = ioctl(fd, NS_GET_PARENT);
		close(fd);
		if (parent < 0)
			return -errno;
		fd = parent;
	}
	close(fd);
	/* CAP_IPC_OWNER counts in the user ns owning the scope, or above it */
	c->cap_ipc_owner = false;
	if (capeff & (1ULL << CAP_IPC_OWNER_BIT)) {
		fd = openat(procfd, "ns/ipc", O_RDONLY | O_CLOEXEC);
		int u = fd >= 0 ? ioctl(fd, NS_GET_USERNS) : -1;

		if (fd >= 0)
			close(fd);
		while (u >= 0) {
			int parent;

			if (!fstat(u, &st) && st.st_ino == userns_ino) {
				c->cap_ipc_owner = true;
				close(u);
				break;
			}
			parent = ioctl(u, NS_GET_PARENT);
			close(u);
			u = parent;
		}
	}
	return 0;
}

static int make_event_socket(struct client *c, int *client_end)
{
	int sv[2];
	struct stat st;
	struct epoll_event ev = { .events = 0, .data.u64 = (uint64_t)(uintptr_t)c | 4 };

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
		return -errno;
	shutdown(sv[0], SHUT_RD);
	shutdown(sv[1], SHUT_WR);
	if (fstat(sv[1], &st) == 0)
		c->evend_ino = st.st_ino;
	c->evfd = sv[0];
	*client_end = sv[1];
	epoll_ctl(ep, EPOLL_CTL_ADD, c->evfd, &ev);
	return 0;
}

static void do_hello(struct client *c, const struct nvbridge_wire_hdr *h, const void *arg,
		     int *fdp, const struct ucred *scm)
{
	struct nvbridge_wire_hello hello = { 0 };
	struct nvbridge_info info = { .size = sizeof(info) };
	char path[32];
	int procfd, ret, cend = -1;
	struct pollfd pfd;

	if (h->arg_size < NVBRIDGE_WIRE_HELLO_SIZE) {
		drop_client(c, "short HELLO");
		return;
	}
	memcpy(&hello, arg, sizeof(hello));
	if (hello.abi_version != NVBRIDGE_ABI_VERSION || hello.flags) {
		logmsg("client pid %d: ABI version %u, broker speaks %d: refused", c->pid,
		       hello.abi_version, NVBRIDGE_ABI_VERSION);
		fill_info(NULL, &info);
		reply(c, NVBRIDGE_WIRE_HELLO, 0, h->seq, -EPROTO, &info, sizeof(info), NULL, 0, -1);
		return;
	}
	/* see "The race" at the top: SO_PEERCRED pid == SCM_CREDENTIALS pid == pidfd's pid */
	if (!scm || scm->pid == 0) {
		drop_client(c, "HELLO without the sender's credentials (no SCM_CREDENTIALS: "
			    "neither end had SO_PASSCRED when it was sent; peer pid %d)", c->pid);
		return;
	}
	if (scm->pid != c->pid) {
		drop_client(c, "HELLO sent by pid %d, not by the connecting process (peer pid %d)",
			    scm->pid, c->pid);
		return;
	}
	if (*fdp < 0) {
		drop_client(c, "HELLO without a pidfd (SCM_RIGHTS) of the connecting process (peer pid %d)",
			    c->pid);
		return;
	}
	{
		int fp = fdinfo_pid(*fdp);

		if (fp != c->pid) {
			drop_client(c, "HELLO's fd is not a pidfd of the connecting process (it names pid %d, peer pid %d)",
				    fp, c->pid);
			return;
		}
	}
	if (c->peer_pidfd >= 0 && fdinfo_pid(c->peer_pidfd) != c->pid) {
		drop_client(c, "the connecting process (peer pid %d) has exited: its pid may name another process now",
			    c->pid);
		return;
	}
	if (c->pidfd >= 0)
		close(c->pidfd);	/* an earlier HELLO that was refused */
	c->pidfd = *fdp;
	*fdp = -1;
	{
		/* only HELLO needs credentials: spare the kernel attaching them to every request */
		int zero = 0;

		setsockopt(c->fd, SOL_SOCKET, SO_PASSCRED, &zero, sizeof(zero));
	}
	snprintf(path, sizeof(path), "/proc/%d", c->pid);
	procfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	ret = procfd < 0 ? -errno : identify(c, procfd);
	if (procfd >= 0)
		close(procfd);
	/* the kernel's pidfd of the connecting process where there is one */
	pfd.fd = c->peer_pidfd >= 0 ? c->peer_pidfd : c->pidfd;
	pfd.events = POLLIN;
	if (!ret && poll(&pfd, 1, 0) != 0)
		ret = -ESRCH;	/* exited meanwhile: /proc/<pid> may not be it */
	if (ret) {
		logmsg("client pid %d uid %u: cannot read its namespaces: %s", c->pid, c->euid,
		       strerror(-ret));
		reply(c, NVBRIDGE_WIRE_HELLO, 0, h->seq, ret == -ESRCH ? -ESRCH : -EACCES,
		      NULL, 0, NULL, 0, -1);
		return;
	}
	c->evq = calloc(cfg.max_events + 1, sizeof(*c->evq));
	if (!c->evq || make_event_socket(c, &cend)) {
		drop_client(c, "out of resources for the event socket");
		return;
	}
	c->hello = true;
	pre_hello--;
	fill_info(c, &info);
	reply(c, NVBRIDGE_WIRE_HELLO, 0, h->seq, 0, &info, sizeof(info), NULL, 0, cend);
	close(cend);
	if (cfg.verbose)
		logmsg("client pid %d uid %u gid %u ipc ns %lu connected", c->pid, c->euid, c->egid,
		       (unsigned long)c->ipc_ino);
}

/* ---- request dispatch ---- */
static void handle_request(struct client *c, const struct nvbridge_wire_hdr *h,
			   const unsigned char *arg, const unsigned char *data, int *fdp)
{
	union {
		struct nvbridge_publish p;
		struct nvbridge_fetch f;
		struct nvbridge_unpublish u;
		struct nvbridge_watch w;
		struct nvbridge_list l;
		struct nvbridge_info i;
	} a;
	uint32_t size = h->arg_size, asz;
	int ret;

	if (size < 4) {
		/* not even a size field: the ioctl would read garbage; answer -EINVAL */
		reply(c, NVBRIDGE_WIRE_REPLY, h->cmd, h->seq, -EINVAL, NULL, 0, NULL, 0, -1);
		return;
	}
	memcpy(&size, arg, 4);
	if (size != h->arg_size) {
		/* the struct says a different size than was sent: like a bad pointer */
		reply(c, NVBRIDGE_WIRE_REPLY, h->cmd, h->seq, size < h->arg_size ? -EINVAL : -EFAULT,
		      NULL, 0, NULL, 0, -1);
		return;
	}
	if (h->cmd != NVBRIDGE_IOC_PUBLISH && (h->data_len || *fdp >= 0)) {
		drop_client(c, "payload or fd on a request that takes none (cmd 0x%x)", h->cmd);
		return;
	}
	switch (h->cmd) {
	case NVBRIDGE_IOC_PUBLISH:
		ret = get_struct(&a.p, sizeof(a.p), NVBRIDGE_PUBLISH_SIZE_VER0, arg, size);
		if (!ret && *fdp >= 0 && a.p.fd < 0) {
			drop_client(c, "PUBLISH with an fd but .fd = %d", a.p.fd);
			return;
		}
		if (!ret)
			ret = do_publish(c, &a.p, data, h->data_len, fdp);
		asz = size < sizeof(a.p) ? size : sizeof(a.p);
		reply(c, NVBRIDGE_WIRE_REPLY, h->cmd, h->seq, ret, ret ? NULL : &a.p,
		      ret ? 0 : asz, NULL, 0, -1);
		if (!ret) {
			struct entry *e = find_entry(c, a.p.name);

			if (e)
				wake_waiters(e);
		}
		return;
	case NVBRIDGE_IOC_FETCH:
		ret = get_struct(&a.f, sizeof(a.f), NVBRIDGE_FETCH_SIZE_VER0, arg, size);
		if (ret)
			break;
		do_fetch(c, h->seq, size, &a.f);
		return;
	case NVBRIDGE_IOC_UNPUBLISH:
		ret = get_struct(&a.u, sizeof(a.u), NVBRIDGE_UNPUBLISH_SIZE_VER0, arg, size);
		if (!ret)
			ret = do_unpublish(c, &a.u);
		break;
	case NVBRIDGE_IOC_WATCH:
	case NVBRIDGE_IOC_UNWATCH:
		ret = get_struct(&a.w, sizeof(a.w), NVBRIDGE_WATCH_SIZE_VER0, arg, size);
		if (!ret)
			ret = h->cmd == NVBRIDGE_IOC_WATCH ? do_watch(c, &a.w) : do_unwatch(c, &a.w);
		if (!ret && h->cmd == NVBRIDGE_IOC_WATCH) {
			asz = size < sizeof(a.w) ? size : sizeof(a.w);
			reply(c, NVBRIDGE_WIRE_REPLY, h->cmd, h->seq, 0, &a.w, asz, NULL, 0, -1);
			return;
		}
		break;
	case NVBRIDGE_IOC_LIST:
		ret = get_struct(&a.l, sizeof(a.l), NVBRIDGE_LIST_SIZE_VER0, arg, size);
		if (ret)
			break;
		do_list(c, h->seq, size, &a.l);
		return;
	case NVBRIDGE_IOC_INFO:
		ret = get_struct(&a.i, sizeof(a.i), NVBRIDGE_INFO_SIZE_VER0, arg, size);
		if (!ret && a.i.flags)
			ret = -EINVAL;
		if (ret)
			break;
		fill_info(c, &a.i);
		asz = size < sizeof(a.i) ? size : sizeof(a.i);
		reply(c, NVBRIDGE_WIRE_REPLY, h->cmd, h->seq, 0, &a.i, asz, NULL, 0, -1);
		return;
	default:
		ret = -ENOTTY;
		break;
	}
	reply(c, NVBRIDGE_WIRE_REPLY, h->cmd, h->seq, ret, NULL, 0, NULL, 0, -1);
}

static void handle_cancel(struct client *c, const struct nvbridge_wire_hdr *h)
{
	for (struct waiter *w = c->waiters; w; w = w->next)
		if (w->seq == h->seq) {
			reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, w->seq, -EINTR,
			      NULL, 0, NULL, 0, -1);
			waiter_free(c, w);
			return;
		}
}

static void client_free(struct client *c)
{
	struct client **pp;
	uint16_t reason = NVBRIDGE_REVOKE_CLOSED;

	for (pp = &clients; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	nclients--;
	if (!c->hello)
		pre_hello--;
	msg_gen++;
	/* EXITED when the process that connected is gone or exiting */
	if (c->pidfd >= 0) {
		struct pollfd pfd = { .fd = c->pidfd, .events = POLLIN };

		if (poll(&pfd, 1, 0) > 0) {
			reason = NVBRIDGE_REVOKE_EXITED;
		} else {
			char path[64], buf[512];
			int fd;
			ssize_t n;

			snprintf(path, sizeof(path), "/proc/%d/stat", c->pid);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				n = read(fd, buf, sizeof(buf) - 1);
				close(fd);
				if (n > 0) {
					char *p;
					unsigned long flags = 0;

					buf[n] = 0;
					p = strrchr(buf, ')');
					/* ") S ppid pgrp session tty tpgid flags" */
					if (p && sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %lu", &flags) == 1 &&
					    (flags & 0x4))	/* PF_EXITING */
						reason = NVBRIDGE_REVOKE_EXITED;
				}
			}
			if (poll(&pfd, 1, 0) > 0)
				reason = NVBRIDGE_REVOKE_EXITED;
		}
	}
	c->nwatches = 0;	/* its own watches vanish first */
	if (c->lost)
		lost_clients--;
	c->lost = 0;
	for (struct entry *e = entries, *nx; e; e = nx) {
		nx = e->next;
		if (e->owner == c)
			entry_revoke(e, reason, c);
	}
	while (c->waiters)
		waiter_free(c, c->waiters);
	while (c->outq) {
		struct outmsg *o = c->outq;

		c->outq = o->next;
		if (o->fd >= 0)
			close(o->fd);
		free(o);
	}
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->evfd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, c->evfd, NULL);
		close(c->evfd);
	}
	if (c->pidfd >= 0)
		close(c->pidfd);
	if (c->peer_pidfd >= 0)
		close(c->peer_pidfd);
	free(c->watches);
	free(c->evq);
	free(c->groups);
	free(c);
}

static void drop_client(struct client *c, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	if (c->dead)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	logmsg("dropping client pid %d uid %u: %s", c->pid, c->euid, buf);
	c->dead = true;
}

static void client_read(struct client *c)
{
	static unsigned char buf[MSG_MAX + 1];
	union {
		struct cmsghdr c;
		char b[CMSG_SPACE(4 * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
	} cm;
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			    .msg_controllen = sizeof(cm.b) };
	struct nvbridge_wire_hdr h;
	struct ucred scm, *scmp = NULL;
	int fds[8], nfds = 0, fd = -1;
	ssize_t n;

	msg_gen++;
	n = recvmsg(c->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		c->dead = true;	/* ECONNRESET etc.: a normal close */
		return;
	}
	if (n == 0) {
		c->dead = true;
		return;
	}
	for (struct cmsghdr *cmh = CMSG_FIRSTHDR(&m); cmh; cmh = CMSG_NXTHDR(&m, cmh)) {
		if (cmh->cmsg_level != SOL_SOCKET)
			continue;
		if (cmh->cmsg_type == SCM_RIGHTS) {
			int k = (int)((cmh->cmsg_len - CMSG_LEN(0)) / sizeof(int));

			/* every fd the kernel installed is ours to close: keep the
			 * first 8 (more is a drop anyway), close the rest now */
			for (int i = 0; i < k; i++) {
				int f;

				memcpy(&f, CMSG_DATA(cmh) + i * sizeof(int), sizeof(int));
				if (nfds < 8)
					fds[nfds] = f;
				else
					close(f);
				nfds++;
			}
		} else if (cmh->cmsg_type == SCM_CREDENTIALS) {
			memcpy(&scm, CMSG_DATA(cmh), sizeof(scm));
			scmp = &scm;
		}
	}
	if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		drop_client(c, "oversized message (%zd bytes%s)", n,
			    (m.msg_flags & MSG_CTRUNC) ? ", control truncated" : "");
		goto out;
	}
	if (nfds > 1) {
		drop_client(c, "%d fds in one message", nfds);
		goto out;
	}
	if (nfds == 1)
		fd = fds[0];
	nfds = 0;	/* from here on the one fd (if any) is in fd */
	if ((size_t)n < NVBRIDGE_WIRE_HDR_SIZE) {
		drop_client(c, "malformed message: %zd bytes, shorter than the header", n);
		goto out;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.magic != NVBRIDGE_WIRE_MAGIC || h.version != NVBRIDGE_WIRE_VERSION || h.__reserved ||
	    h.result) {
		drop_client(c, "malformed header (magic 0x%08x version %u)", h.magic, h.version);
		goto out;
	}
	if (h.arg_size > NVBRIDGE_WIRE_ARG_MAX || h.data_len > NVBRIDGE_WIRE_DATA_MAX ||
	    (size_t)n != NVBRIDGE_WIRE_HDR_SIZE + (size_t)h.arg_size + h.data_len) {
		drop_client(c, "malformed message: %zd bytes, header says %u + %u", n,
			    h.arg_size, h.data_len);
		goto out;
	}
	if (!c->hello) {
		if (h.type != NVBRIDGE_WIRE_HELLO) {
			drop_client(c, "first message is type %u, not HELLO", h.type);
			goto out;
		}
		do_hello(c, &h, buf + NVBRIDGE_WIRE_HDR_SIZE, &fd, scmp);
		goto out;
	}
	switch (h.type) {
	case NVBRIDGE_WIRE_REQUEST:
		handle_request(c, &h, buf + NVBRIDGE_WIRE_HDR_SIZE,
			       buf + NVBRIDGE_WIRE_HDR_SIZE + h.arg_size, &fd);
		break;
	case NVBRIDGE_WIRE_CANCEL:
		if (fd >= 0 || h.arg_size || h.data_len)
			drop_client(c, "malformed CANCEL");
		else
			handle_cancel(c, &h);
		break;
	default:
		drop_client(c, "unexpected message type %u", h.type);
		break;
	}
out:
	if (fd >= 0)
		close(fd);
	/* nfds != 0 only when we left before taking fds[0] into fd: close them all */
	for (int i = 0; i < nfds && i < 8; i++)
		close(fds[i]);
}

static unsigned int conns_of(uid_t uid)
{
	unsigned int n = 0;

	for (struct client *c = clients; c; c = c->next)
		n += c->euid == uid && !c->dead;
	return n;
}

/*
 * accept() failed for want of fds or memory.  The connection stays in the
 * backlog and the listener stays readable: retrying at once would spin.
 * Spend the reserve fd to accept and close it (the client sees the broker
 * close the connection, not a hang), else stop watching the listener for
 * 100 ms.
 */
static void shed_connection(int err)
{
	int64_t now = now_ns();
	int fd;

	if (now - last_shed_log > 1000000000LL) {
		logmsg("accept: %s (%u clients): shedding new connections", strerror(err), nclients);
		last_shed_log = now;
	}
	if (reserve_fd >= 0) {
		close(reserve_fd);
		reserve_fd = -1;
		fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd >= 0)
			close(fd);
		reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd >= 0)
			return;
	}
	if (!listen_paused_until) {
		struct epoll_event ev = { .events = 0, .data.u64 = TAG_LISTEN };

		epoll_ctl(ep, EPOLL_CTL_MOD, listen_fd, &ev);
	}
	listen_paused_until = now + 100000000;
}

static void accept_client(void)
{
	struct client *c;
	struct ucred cr;
	socklen_t l = sizeof(cr);
	struct epoll_event ev;
	int fd;

	fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			shed_connection(errno);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l)) {
		close(fd);
		return;
	}
	if (cr.uid != 0 && conns_of(cr.uid) >= cfg.max_conns_per_user) {
		int64_t now = now_ns();

		if (now - last_shed_log > 1000000000LL) {
			logmsg("uid %u (pid %d) has %u connections (--max-connections-per-user): refused",
			       cr.uid, cr.pid, cfg.max_conns_per_user);
			last_shed_log = now;
		}
		close(fd);
		return;
	}
	/*
	 * The accepted socket, not the listener, decides whether HELLO's
	 * SCM_CREDENTIALS are delivered; newer kernels copy the listener's flag
	 * at connect(), so a connection queued before the listener had it
	 * (socket activation without PassCredentials=) would lack them.
	 */
	{
		int one = 1;

		setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	c->evfd = -1;
	c->pidfd = -1;
	{
		int pp = -1;
		socklen_t pl = sizeof(pp);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pp, &pl) || pp < 0)
			pp = -1;
		c->peer_pidfd = pp;
	}
	c->pid = cr.pid;
	c->euid = cr.uid;
	c->egid = cr.gid;
	c->outq_tail = &c->outq;
	c->hello_deadline = now_ns() + (int64_t)cfg.hello_timeout_ms * 1000000;
	pre_hello++;
	{
		/* supplementary groups as of connect(); ERANGE tells the size needed */
		socklen_t gl = 64 * sizeof(gid_t);

		for (int tries = 0; tries < 3; tries++) {
			gid_t *g = malloc(gl ? gl : sizeof(gid_t));

			if (!g)
				break;
			if (!getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &gl)) {
				c->groups = g;
				c->ngroups = (int)(gl / sizeof(gid_t));
				break;
			}
			free(g);
			if (errno != ERANGE)
				break;
		}
	}
	ev.events = EPOLLIN;
	ev.data.ptr = c;
	epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	c->next = clients;
	clients = c;
	nclients++;
}

/* ---- setup ---- */
static void measure_truesize(void)
{
	int sv[2], q = 0;
	struct nvbridge_event r = { .size = NVBRIDGE_EVENT_SIZE };

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		return;
	if (send(sv[0], &r, sizeof(r), 0) == sizeof(r) && !ioctl(sv[0], SIOCOUTQ, &q) && q > 0)
		ev_truesize = (size_t)q;
	close(sv[0]);
	close(sv[1]);
}

static void read_u32(const char *path, uint32_t *v)
{
	FILE *f = fopen(path, "re");

	if (f) {
		unsigned int x;

		if (fscanf(f, "%u", &x) == 1)
			*v = x;
		fclose(f);
	}
}

static int setup_listener(void)
{
	const char *lp = getenv("LISTEN_PID"), *lf = getenv("LISTEN_FDS");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int one = 1, type = 0;
	socklen_t tl = sizeof(type);

	if (lp && lf && atoi(lp) == getpid() && atoi(lf) >= 1) {
		listen_fd = 3;	/* SD_LISTEN_FDS_START */
		if (getsockopt(listen_fd, SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_SEQPACKET) {
			logmsg("LISTEN_FDS: fd 3 is not a SOCK_SEQPACKET socket");
			return -1;
		}
		fcntl(listen_fd, F_SETFD, FD_CLOEXEC);
		socket_activated = true;
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_FDNAMES");
		{
			struct sockaddr_un a;
			socklen_t al = sizeof(a);
			static char path[sizeof(a.sun_path) + 1];

			if (!getsockname(listen_fd, (struct sockaddr *)&a, &al) &&
			    al > offsetof(struct sockaddr_un, sun_path) && a.sun_path[0]) {
				snprintf(path, sizeof(path), "%s", a.sun_path);
				cfg.socket = path;
			}
		}
		if (cfg.verbose)
			logmsg("socket activated: %s", cfg.socket);
	} else {
		char dir[sizeof(sa.sun_path)];
		char *slash;

		if (strlen(cfg.socket) >= sizeof(sa.sun_path)) {
			logmsg("socket path too long: %s", cfg.socket);
			return -1;
		}
		strcpy(sa.sun_path, cfg.socket);
		strcpy(dir, cfg.socket);
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = 0;
			if (mkdir(dir, 0755) && errno != EEXIST) {
				logmsg("mkdir %s: %s", dir, strerror(errno));
				return -1;
			}
		}
		listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (listen_fd < 0)
			return -1;
		/* a stale socket from a dead broker: replace it; a live one: refuse */
		{
			int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

			if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
				logmsg("%s: another nvbridged is listening", cfg.socket);
				close(probe);
				return -1;
			}
			if (probe >= 0)
				close(probe);
		}
		unlink(cfg.socket);
		mode_t old = umask(0777);	/* no window where the socket is too open */

		if (bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa))) {
			umask(old);
			logmsg("bind %s: %s", cfg.socket, strerror(errno));
			return -1;
		}
		umask(old);
		if (cfg.have_group && chown(cfg.socket, (uid_t)-1, cfg.group)) {
			logmsg("chown %s: %s", cfg.socket, strerror(errno));
			return -1;
		}
		if (chmod(cfg.socket, cfg.mode)) {
			logmsg("chmod %s: %s", cfg.socket, strerror(errno));
			return -1;
		}
		/* before listen(): connections inherit the listener's flag at connect() */
		setsockopt(listen_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
		if (listen(listen_fd, 512)) {
			logmsg("listen: %s", strerror(errno));
			return -1;
		}
	}
	/* activated: set it too (accept_client sets it on every connection anyway) */
	setsockopt(listen_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	fstat(listen_fd, &listen_st);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: nvbridged [options]\n"
		"  --socket PATH            listen on PATH (default /run/nvbridge/nvbridged.sock;\n"
		"                           ignored under systemd socket activation, LISTEN_FDS)\n"
		"  --mode OCTAL             socket mode (default 0666: every request is checked per\n"
		"                           entry, like /dev/nvbridge; 0660 + --group to narrow)\n"
		"  --group NAME|GID         socket group\n"
		"  --max-entries-per-user N (default 1024)\n"
		"  --max-blob-size N        (default 4096, at most %d)\n"
		"  --max-events N           (default 1024)\n"
		"  --max-watches N          (default 64)\n"
		"  --max-connections-per-user N  connections one non-root euid may hold (default 1024)\n"
		"  --hello-timeout-ms N     drop a connection that sends no HELLO by then (default 5000)\n"
		"  -v, --verbose\n"
		"  -h, --help\n", NVBRIDGE_BLOB_MAX);
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 0);

	if (!*s || *end || v < lo || v > hi)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "mode", required_argument, NULL, 'm' },
		{ "group", required_argument, NULL, 'g' },
		{ "max-entries-per-user", required_argument, NULL, 'E' },
		{ "max-blob-size", required_argument, NULL, 'B' },
		{ "max-events", required_argument, NULL, 'V' },
		{ "max-watches", required_argument, NULL, 'W' },
		{ "max-connections-per-user", required_argument, NULL, 'C' },
		{ "hello-timeout-ms", required_argument, NULL, 'H' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	/* the numeric limits, with the module parameters' ranges */
	static const struct limit_opt {
		int opt;
		uint32_t min, max;
		uint32_t *val;
	} limit_opts[] = {
		{ 'E', 1, 1048576, &cfg.max_entries_per_user },
		{ 'B', 0, NVBRIDGE_BLOB_MAX, &cfg.max_blob_size },
		{ 'V', 1, 65536, &cfg.max_events },
		{ 'W', 1, 4096, &cfg.max_watches },
		{ 'C', 1, 1048576, &cfg.max_conns_per_user },
		{ 'H', 1, 3600000, &cfg.hello_timeout_ms },
	};
	struct epoll_event ev;
	sigset_t ss;
	int o;
	bool stop = false;

	while ((o = getopt_long(argc, argv, "s:m:g:vh", lo, NULL)) != -1) {
		uint32_t v;

		switch (o) {
		case 's':
			cfg.socket = optarg;
			break;
		case 'm':
			if (parse_u32(optarg, 0, 0777, &v) || optarg[0] != '0') {
				logmsg("--mode wants an octal mode such as 0660");
				return 2;
			}
			cfg.mode = (mode_t)strtoul(optarg, NULL, 8);
			break;
		case 'g': {
			struct group *gr = getgrnam(optarg);

			if (gr) {
				cfg.group = gr->gr_gid;
			} else if (!parse_u32(optarg, 0, 0xfffffffe, &v)) {
				cfg.group = v;
			} else {
				logmsg("--group %s: no such group", optarg);
				return 2;
			}
			cfg.have_group = true;
			break;
		}
		case 'E': case 'B': case 'V': case 'W': case 'C': case 'H': {
			const struct limit_opt *l = limit_opts;

			while (l->opt != o)
				l++;
			if (parse_u32(optarg, l->min, l->max, l->val))
				goto badval;
			break;
		}
		case 'v':
			cfg.verbose++;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		continue;
badval:
		logmsg("bad value: %s", optarg);
		return 2;
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	{
		/* every client costs ~3 fds and every published file one: use what we may */
		struct rlimit rl;

		if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	read_u32("/proc/sys/kernel/overflowuid", &overflowuid);
	read_u32("/proc/sys/kernel/overflowgid", &overflowgid);
	{
		uint32_t maj = 0, min = 0;
		FILE *f = fopen("/sys/class/misc/nvbridge/dev", "re");

		if (f) {
			if (fscanf(f, "%u:%u", &maj, &min) == 2)
				nvbridge_rdev = makedev(maj, min);
			fclose(f);
		}
	}
	measure_truesize();
	{
		/* sig 0 to ourselves must succeed; a seccomp EPERM/ENOSYS would be ambiguous later */
		int self = (int)syscall(SYS_pidfd_open, getpid(), 0);

		have_pidfd_signal = self >= 0 && syscall(SYS_pidfd_send_signal, self, 0, NULL, 0) == 0;
		if (self >= 0)
			close(self);
		if (!have_pidfd_signal)
			logmsg("pidfd_send_signal unavailable: a publisher's pid reads 0 from its exit, not its reaping");
	}
	{
		struct stat st;
		int efd = eventfd(0, EFD_CLOEXEC);

		if (efd >= 0 && !fstat(efd, &st))
			anon_dev = st.st_dev;
		if (efd >= 0)
			close(efd);
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || setup_listener())
		return 1;
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	sig_fd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
	ev.events = EPOLLIN;
	ev.data.u64 = TAG_LISTEN;
	epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
	ev.data.u64 = TAG_SIGNAL;
	epoll_ctl(ep, EPOLL_CTL_ADD, sig_fd, &ev);
	if (cfg.verbose)
		logmsg("listening on %s (mode %04o)", cfg.socket, (unsigned int)cfg.mode);

	while (!stop) {
		struct epoll_event evs[64];
		int64_t now = now_ns(), next = -1;
		int timeout = -1, n;
		bool overflow_pending = false;

		for (struct client *c = total_waiters || lost_clients ? clients : NULL; c; c = c->next) {
			for (struct waiter *w = c->waiters; w; w = w->next)
				if (w->deadline >= 0 && (next < 0 || w->deadline < next))
					next = w->deadline;
			if (c->lost)
				overflow_pending = true;
		}
		if (next >= 0) {
			int64_t ms = next <= now ? 0 : (next - now) / 1000000 + 1;

			timeout = ms > INT32_MAX ? INT32_MAX : (int)ms;
		}
		if (overflow_pending && (timeout < 0 || timeout > 5))
			timeout = 5;
		if (pre_hello || listen_paused_until) {
			int64_t t = listen_paused_until ? listen_paused_until : INT64_MAX;

			for (struct client *c = pre_hello ? clients : NULL; c; c = c->next)
				if (!c->hello && !c->dead && c->hello_deadline < t)
					t = c->hello_deadline;
			if (t != INT64_MAX) {
				int64_t ms = t <= now ? 0 : (t - now) / 1000000 + 1;

				if (timeout < 0 || ms < timeout)
					timeout = (int)ms;
			}
		}
		n = epoll_wait(ep, evs, 64, timeout);
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;

			if (tag != TAG_LISTEN && tag != TAG_SIGNAL &&
			    ((struct client *)(uintptr_t)(tag & ~(uint64_t)4))->dead)
				continue;
			if (tag == TAG_LISTEN) {
				accept_client();
			} else if (tag == TAG_SIGNAL) {
				struct signalfd_siginfo si;

				if (read(sig_fd, &si, sizeof(si)) == sizeof(si)) {
					logmsg("signal %u: shutting down", si.ssi_signo);
					stop = true;
				}
			} else if (tag & 4) {
				struct client *c = (struct client *)(uintptr_t)(tag & ~(uint64_t)4);

				ev_flush(c);
			} else {
				struct client *c = evs[i].data.ptr;

				if (evs[i].events & EPOLLOUT)
					flush_out(c);
				else if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					client_read(c);
			}
		}
		/* timeouts and overflow records */
		now = now_ns();
		if (listen_paused_until && listen_paused_until <= now) {
			struct epoll_event lev = { .events = EPOLLIN, .data.u64 = TAG_LISTEN };

			epoll_ctl(ep, EPOLL_CTL_MOD, listen_fd, &lev);
			listen_paused_until = 0;
		}
		for (struct client *c = pre_hello ? clients : NULL; c; c = c->next)
			if (!c->hello && !c->dead && c->hello_deadline <= now)
				drop_client(c, "no HELLO within %u ms", cfg.hello_timeout_ms);
		for (struct client *c = total_waiters || lost_clients ? clients : NULL; c; c = c->next) {
			struct waiter *w, *nx;

			for (w = c->waiters; w; w = nx) {
				nx = w->next;
				if (w->deadline >= 0 && w->deadline <= now) {
					reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, w->seq,
					      -ETIMEDOUT, NULL, 0, NULL, 0, -1);
					waiter_free(c, w);
				}
			}
			if (c->lost)
				ev_check_overflow(c);
		}
		for (struct client *c = clients, *nx; c; c = nx) {
			nx = c->next;
			if (c->dead)
				client_free(c);
		}
	}
	while (clients)
		client_free(clients);
	while (entries) {
		struct entry *e = entries;

		entries = e->next;
		entry_free(e);
	}
	close(listen_fd);
	if (!socket_activated)
		unlink(cfg.socket);
	close(sig_fd);
	close(ep);
	if (reserve_fd >= 0)
		close(reserve_fd);
	return 0;
}
