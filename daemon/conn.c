// SPDX-License-Identifier: MIT
/*
 * nvbridged: connections.  accept() and its bounds, the framing of
 * common/nvb_wire.h, request dispatch, and the reply queue.
 *
 * Bounds a client cannot pass (all configurable, see usage()):
 *   - connections: per uid, per tenant (ident.c: a subuid range is one
 *     tenant), and in total; at the total, a newcomer takes the newest
 *     connection of the largest holder if that tenant is over its fair
 *     share, so no tenant can lock others out, and none within its share
 *     loses a connection.
 *   - queued replies per connection (max_queued, and max_queued_kb bytes;
 *     per uid max_queued_kb_per_user bytes): a connection with half that
 *     many (or half the bytes) queued is not read until it reads its replies
 *     (backpressure: a multi-threaded client that pipelines is not
 *     punished); replies that complete on their own (woken FETCH_WAITs)
 *     still queue, and past max_queued the connection is dropped.
 *   - fds in flight (sent with a reply, not yet received): per connection
 *     and per uid.  A connection at its bound gets no further fds until it
 *     has read what was sent (SIOCOUTQ back to 0); its replies wait in its
 *     queue, they do not fail, and nobody else is affected.  Queued replies
 *     hold a reference to the entry, not a duplicated fd.
 *   - memory (max_memory_mb): replies, blobs, event rings, waiters.
 * Every fd a client sends is closed through closer.c, never in this process.
 */
#include "nvbridged.h"
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <linux/sockios.h>

#define USER_BUCKETS 1024

struct client *clients;
unsigned int nclients, pre_hello;
static uint64_t next_serial;
static uint32_t tenants_connected;	/* tenants holding a connection: fair shares */
static struct user *users[USER_BUCKETS], *tenants[USER_BUCKETS];
static struct client *dead_list;
static struct client *throttled;
static struct client *close_paused;	/* not read while their uid's closes are pending */
static uint32_t fds_in_flight_total, fds_in_flight_max;
static int reserve_fd = -1;		/* spent to shed a connection at EMFILE */
static int64_t listen_paused_until;	/* no reserve either: accept() again after this */
static int listen_fd_saved = -1;
/* connections without HELLO yet, in accept order: their deadlines are in the same order */
static struct client *ph_head, **ph_tail = &ph_head;

static void prehello_add(struct client *c)
{
	c->ph_next = NULL;
	c->ph_pprev = ph_tail;
	*ph_tail = c;
	ph_tail = &c->ph_next;
	pre_hello++;
}

static void prehello_del(struct client *c)
{
	if (!c->ph_pprev)
		return;
	*c->ph_pprev = c->ph_next;
	if (c->ph_next)
		c->ph_next->ph_pprev = c->ph_pprev;
	else
		ph_tail = c->ph_pprev;
	c->ph_pprev = NULL;
	pre_hello--;
}

/* ---- per uid, per tenant ---- */
static struct user *record_get(struct user **table, uid_t uid)
{
	struct user **b = &table[uid % USER_BUCKETS], *u;

	for (u = *b; u; u = u->next)
		if (u->uid == uid)
			return u;
	u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->uid = uid;
	u->is_tenant = table == tenants;
	u->next = *b;
	*b = u;
	return u;
}

struct user *user_get(uid_t uid)
{
	return record_get(users, uid);
}

struct user *tenant_get(uid_t uid)
{
	return record_get(tenants, uid);
}

void user_put(struct user *u)
{
	struct user **pp;

	if (!u || u->refs || u->conns || u->entries || u->watches || u->waiters || u->fds_in_flight ||
	    u->closes)
		return;
	for (pp = &(u->is_tenant ? tenants : users)[u->uid % USER_BUCKETS]; *pp; pp = &(*pp)->next)
		if (*pp == u) {
			*pp = u->next;
			break;
		}
	free(u);
}

void conn_limits_init(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		rl.rlim_cur = 1024;
	/* every client costs ~3 fds (socket, event socket, pidfd) plus what it publishes */
	if (!cfg.max_conns) {
		unsigned long n = rl.rlim_cur > 256 ? (rl.rlim_cur - 128) / 4 : 32;

		cfg.max_conns = n > 1048576 ? 1048576 : (uint32_t)n;
	}
	/* the kernel refuses SCM_RIGHTS beyond RLIMIT_NOFILE fds in flight per sending user */
	fds_in_flight_max = rl.rlim_cur / 2 > UINT32_MAX ? UINT32_MAX : (uint32_t)(rl.rlim_cur / 2);
	reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	/* what the connections leave of the fd table, less a reserve for accept and identity */
	if (!cfg.max_closes) {
		unsigned long n = rl.rlim_cur / 8 < 64 ? 64 : rl.rlim_cur / 8;

		cfg.max_closes = n > 1048576 ? 1048576 : (uint32_t)n;
	}
}

/*
 * A uid or tenant whose closes of files it sent wait (a FUSE FLUSH nobody
 * answers) is not read from while it is at its bound, or while the total is at
 * --max-pending-closes and it has any pending: each read may bring
 * another file to close.  closer.c calls the recheck when counts move.
 */
static bool closes_over(const struct user *r, uint32_t bound)
{
	return r && (r->closes >= bound || (r->closes && closer_pending() >= cfg.max_closes));
}

bool user_closes_paused(const struct user *u)
{
	return closes_over(u, cfg.max_closes_per_user);
}

/* ... and the same for its tenant (a subuid range's uids under their own bound each) */
bool client_closes_paused(const struct client *c)
{
	return user_closes_paused(c->user) || closes_over(c->tenant, cfg.max_closes_per_tenant);
}

static void set_epoll(struct client *c);

/* after closes completed: reads again from the paused connections whose uid is under bound */
void conns_closes_resume(void)
{
	struct client **pp = &close_paused;

	while (*pp) {
		struct client *c = *pp;

		if (client_closes_paused(c)) {
			pp = &c->cpause_next;
			continue;
		}
		*pp = c->cpause_next;
		c->close_paused = false;
		set_epoll(c);
	}
}

/* ---- output ---- */
static void set_epoll(struct client *c)
{
	struct epoll_event ev = { .data.ptr = c };
	bool paused = client_closes_paused(c);

	if (paused && !c->close_paused) {
		c->close_paused = true;
		c->cpause_next = close_paused;
		close_paused = c;
	}
	ev.events = (c->outq_len < cfg.max_queued / 2 &&
		     c->outq_bytes < (size_t)cfg.max_queued_kb << 9 && !paused ? EPOLLIN : 0) |
		    (c->outq && !c->fd_throttled ? EPOLLOUT : 0);
	if (ev.events != c->epoll_events) {
		epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
		c->epoll_events = ev.events;
	}
}

/* One message from iov[0..niov), with pass_fd attached when >= 0.  0 or -errno. */
static int send_iov(int fd, struct iovec *iov, size_t niov, int pass_fd)
{
	union nvb_wire_cmsg cm;
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = niov };

	if (pass_fd >= 0)
		nvb_wire_attach_fd(&m, &cm, pass_fd);
	return sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 ? -errno : 0;
}

static void client_gone(struct client *c);

/* The peer went away (a normal close, not worth a line) or the send failed otherwise. */
static void send_failed(struct client *c, int err)
{
	if (err == -EPIPE || err == -ECONNRESET)
		client_gone(c);
	else
		drop_client(c, "send: %s", strerror(-err));
}

/* Everything this connection was sent has been received: its fds are no longer in flight. */
static void fds_received(struct client *c)
{
	int q = 1;

	if (!c->fds_in_flight || ioctl(c->fd, SIOCOUTQ, &q) || q > 0)
		return;
	c->user->fds_in_flight -= c->fds_in_flight;
	fds_in_flight_total -= c->fds_in_flight;
	c->fds_in_flight = 0;
}

/* May one more fd go to c now?  A connection with none in flight always gets one. */
static bool fd_may_go(struct client *c)
{
	if (c->fds_in_flight >= cfg.max_fds_in_flight ||
	    c->user->fds_in_flight >= cfg.max_fds_in_flight_per_user ||
	    (c->fds_in_flight && fds_in_flight_total >= fds_in_flight_max))
		fds_received(c);
	return c->fds_in_flight < cfg.max_fds_in_flight &&
	       c->user->fds_in_flight < cfg.max_fds_in_flight_per_user &&
	       (!c->fds_in_flight || fds_in_flight_total < fds_in_flight_max);
}

static void throttle(struct client *c)
{
	if (c->fd_throttled)
		return;
	c->fd_throttled = true;
	c->throttle_next = throttled;
	throttled = c;
}

static void fd_sent(struct client *c)
{
	c->fds_in_flight++;
	c->user->fds_in_flight++;
	fds_in_flight_total++;
}

static void outmsg_free(struct client *c, struct outmsg *o)
{
	if (o->fd_entry)
		entry_put(o->fd_entry);
	c->outq_bytes -= o->len;
	c->user->queued -= o->len;
	mem_uncharge(sizeof(*o) + o->len);
	free(o);
}

static void flush_out(struct client *c)
{
	while (c->outq && !c->dead) {
		struct outmsg *o = c->outq;
		struct iovec iov = { o->buf, o->len };
		int ret;

		if (o->fd_entry && !fd_may_go(c)) {
			throttle(c);
			break;
		}
		ret = send_iov(c->fd, &iov, 1, o->fd_entry ? o->fd_entry->fd : -1);
		if (ret == -EAGAIN)
			break;
		if (ret == -ETOOMANYREFS) {
			throttle(c);	/* the kernel's own bound on our fds in flight */
			break;
		}
		if (ret < 0) {
			send_failed(c, ret);
			break;
		}
		if (o->fd_entry)
			fd_sent(c);
		c->outq = o->next;
		c->outq_len--;
		outmsg_free(c, o);
	}
	if (!c->outq)
		c->outq_tail = &c->outq;
	if (!c->dead)
		set_epoll(c);
}

void client_write(struct client *c)
{
	flush_out(c);
}

/* Connections waiting for their reader to take the fds in flight: looked at every few ms. */
void throttled_tick(void)
{
	struct client *list = throttled;

	throttled = NULL;
	while (list) {
		struct client *c = list;

		list = c->throttle_next;
		c->fd_throttled = false;
		if (c->dead)
			continue;
		fds_received(c);
		flush_out(c);
	}
}

bool conns_throttled(void)
{
	return throttled != NULL;
}

/* Queues (or sends at once) a reply; fd_entry's file goes with it (a reference is taken). */
void reply(struct client *c, uint32_t type, uint32_t cmd, uint32_t seq, int32_t result,
	   const void *arg, uint32_t arg_size, const void *data, uint32_t data_len,
	   struct entry *fd_entry)
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
	if (!c->outq && (!fd_entry || fd_may_go(c))) {
		/* fast path: nothing queued, send now without copying */
		struct iovec iov[3] = { { &h, NVBRIDGE_WIRE_HDR_SIZE }, { (void *)arg, arg_size },
					{ (void *)data, data_len } };
		int ret = send_iov(c->fd, iov, 3, fd_entry ? fd_entry->fd : -1);

		if (!ret) {
			if (fd_entry)
				fd_sent(c);
			return;
		}
		if (ret != -EAGAIN && ret != -ETOOMANYREFS) {
			send_failed(c, ret);
			return;
		}
		if (ret == -ETOOMANYREFS)
			throttle(c);
	} else if (fd_entry && !c->outq) {
		throttle(c);
	}
	if (c->outq_len >= cfg.max_queued || c->outq_bytes + len > (size_t)cfg.max_queued_kb << 10) {
		drop_client(c, "does not read its replies (%u queued, %zu bytes)", c->outq_len,
			    c->outq_bytes);
		return;
	}
	if (c->user->queued + len > (size_t)cfg.max_queued_kb_per_user << 10) {
		drop_client(c, "its uid's connections do not read their replies (%zu bytes queued)",
			    c->user->queued);
		return;
	}
	if (!mem_charge(sizeof(*o) + len)) {
		drop_client(c, "the memory budget is spent (%zu bytes queued for it)", c->outq_bytes);
		return;
	}
	o = malloc(sizeof(*o) + len);
	if (!o) {
		mem_uncharge(sizeof(*o) + len);
		drop_client(c, "no memory for its replies (%zu bytes queued)", c->outq_bytes);
		return;
	}
	memcpy(o->buf, &h, NVBRIDGE_WIRE_HDR_SIZE);
	if (arg_size)
		memcpy(o->buf + NVBRIDGE_WIRE_HDR_SIZE, arg, arg_size);
	if (data_len)
		memcpy(o->buf + NVBRIDGE_WIRE_HDR_SIZE + arg_size, data, data_len);
	o->len = len;
	o->next = NULL;
	o->fd_entry = fd_entry;
	if (fd_entry)
		fd_entry->refs++;
	*c->outq_tail = o;
	c->outq_tail = &o->next;
	c->outq_len++;
	c->outq_bytes += len;
	c->user->queued += len;
	set_epoll(c);
}

/* ---- HELLO ---- */
static int make_event_socket(struct client *c, int *client_end)
{
	int sv[2];
	struct epoll_event ev = { .events = 0, .data.u64 = (uint64_t)(uintptr_t)c | TAG_EV };

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
		return -errno;
	shutdown(sv[0], SHUT_RD);
	shutdown(sv[1], SHUT_WR);
	c->evfd = sv[0];
	*client_end = sv[1];
	epoll_ctl(ep, EPOLL_CTL_ADD, c->evfd, &ev);
	return 0;
}

static void do_hello(struct client *c, const struct nvbridge_wire_hdr *h, const void *arg)
{
	struct nvbridge_wire_hello hello = { 0 };
	struct nvbridge_info info = { .size = sizeof(info) };
	int cend = -1;

	if (h->arg_size < NVBRIDGE_WIRE_HELLO_SIZE) {
		drop_client(c, "short HELLO");
		return;
	}
	memcpy(&hello, arg, sizeof(hello));
	if (hello.abi_version != NVBRIDGE_ABI_VERSION || hello.flags) {
		logmsg_rl("client pid %d: ABI version %u, broker speaks %d: refused", c->pid,
			  hello.abi_version, NVBRIDGE_ABI_VERSION);
		fill_info(NULL, &info);
		reply(c, NVBRIDGE_WIRE_HELLO, 0, h->seq, -EPROTO, &info, sizeof(info), NULL, 0, NULL);
		return;
	}
	if (make_event_socket(c, &cend)) {
		drop_client(c, "out of resources for the event socket");
		return;
	}
	c->hello = true;
	prehello_del(c);
	fill_info(c, &info);
	{
		/* the event socket goes with the answer: sent at once or queued as bytes + fd */
		struct nvbridge_wire_hdr hh = {
			.magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
			.type = NVBRIDGE_WIRE_HELLO, .seq = h->seq, .arg_size = sizeof(info),
		};
		struct iovec iov[2] = { { &hh, sizeof(hh) }, { &info, sizeof(info) } };

		if (send_iov(c->fd, iov, 2, cend))
			drop_client(c, "cannot answer HELLO");
	}
	close(cend);
	if (cfg.verbose)
		logmsg("client pid %d uid %u gid %u ipc ns %lu connected", c->pid, c->euid, c->egid,
		       (unsigned long)c->scope->ino);
}

/* ---- request dispatch ---- */
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

	if (h->cmd != NVBRIDGE_IOC_PUBLISH && (h->data_len || *fdp >= 0)) {
		drop_client(c, "payload or fd on a request that takes none (cmd 0x%x)", h->cmd);
		return;
	}
	if (size < 4) {
		/* not even a size field: the ioctl would read garbage; answer -EINVAL */
		reply(c, NVBRIDGE_WIRE_REPLY, h->cmd, h->seq, -EINVAL, NULL, 0, NULL, 0, NULL);
		return;
	}
	memcpy(&size, arg, 4);
	if (size != h->arg_size) {
		/* the struct says a different size than was sent: like a bad pointer */
		reply(c, NVBRIDGE_WIRE_REPLY, h->cmd, h->seq, size < h->arg_size ? -EINVAL : -EFAULT,
		      NULL, 0, NULL, 0, NULL);
		return;
	}
	switch (h->cmd) {	/* the full number: another size or direction is -ENOTTY (C1) */
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
		      ret ? 0 : asz, NULL, 0, NULL);
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
			reply(c, NVBRIDGE_WIRE_REPLY, h->cmd, h->seq, 0, &a.w, asz, NULL, 0, NULL);
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
		reply(c, NVBRIDGE_WIRE_REPLY, h->cmd, h->seq, 0, &a.i, asz, NULL, 0, NULL);
		return;
	default:
		ret = -ENOTTY;
		break;
	}
	reply(c, NVBRIDGE_WIRE_REPLY, h->cmd, h->seq, ret, NULL, 0, NULL, 0, NULL);
}

/*
 * One received message: buf[0..n), the fds that came with it (all of which
 * this takes: they are closed off the loop unless an entry keeps one).
 * A frame the wire format does not allow drops the client; anything the
 * ioctl would refuse is a REPLY with its errno.
 */
void handle_message(struct client *c, const unsigned char *buf, size_t n, int *fds, int nfds,
		    bool truncated)
{
	struct nvbridge_wire_hdr h;
	int fd = nfds == 1 ? fds[0] : -1;

	if (truncated) {
		drop_client(c, "oversized message (%zu bytes)", n);
		goto out;
	}
	if (nfds > 1) {
		drop_client(c, "%d fds in one message", nfds);
		goto out;
	}
	if (n < NVBRIDGE_WIRE_HDR_SIZE) {
		drop_client(c, "malformed message: %zu bytes, shorter than the header", n);
		goto out;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.magic != NVBRIDGE_WIRE_MAGIC || h.version != NVBRIDGE_WIRE_VERSION || h.__reserved ||
	    h.result) {
		drop_client(c, "malformed header (magic 0x%08x version %u)", h.magic, h.version);
		goto out;
	}
	/* a struct larger than NVBRIDGE_WIRE_ARG_MAX is answered -E2BIG (C5): only the total is bounded */
	if ((uint64_t)h.arg_size + h.data_len > NVBRIDGE_WIRE_ARG_MAX + NVBRIDGE_WIRE_DATA_MAX ||
	    n != NVBRIDGE_WIRE_HDR_SIZE + (size_t)h.arg_size + h.data_len) {
		drop_client(c, "malformed message: %zu bytes, header says %u + %u", n,
			    h.arg_size, h.data_len);
		goto out;
	}
	if (!c->hello) {
		if (h.type != NVBRIDGE_WIRE_HELLO) {
			drop_client(c, "first message is type %u, not HELLO", h.type);
			goto out;
		}
		/* a pidfd from an older library: identity was fixed at accept, it is not looked at */
		do_hello(c, &h, buf + NVBRIDGE_WIRE_HDR_SIZE);
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
			waiter_cancel(c, h.seq);
		break;
	default:
		drop_client(c, "unexpected message type %u", h.type);
		break;
	}
out:
	if (nfds == 1) {
		closer_close(fd, c->user, c->tenant);	/* -1 when an entry took it */
		return;
	}
	for (int i = 0; i < nfds; i++)
		closer_close(fds[i], c->user, c->tenant);
}

void client_read(struct client *c)
{
	static unsigned char buf[MSG_MAX + 1];
	union {
		struct cmsghdr c;
		char b[CMSG_SPACE(8 * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
	} cm;

	/* one message per readiness: level-triggered epoll comes back for the next,
	 * and a second recvmsg() would mostly be an -EAGAIN costing a syscall */
	{
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
				    .msg_controllen = sizeof(cm.b) };
		int fds[8], nfds = 0;
		ssize_t n;

		if (client_closes_paused(c)) {
			struct pollfd pf = { .fd = c->fd };

			/* here with EPOLLIN off only for a hangup, which epoll reports regardless */
			if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLHUP | POLLERR)))
				client_gone(c);	/* what it left unread goes with the socket */
			else
				set_epoll(c);	/* readable in the batch whose close paused it */
			return;
		}
		msg_gen++;
		n = recvmsg(c->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				client_gone(c);	/* ECONNRESET etc.: a normal close */
			return;
		}
		for (struct cmsghdr *cmh = CMSG_FIRSTHDR(&m); cmh; cmh = CMSG_NXTHDR(&m, cmh)) {
			if (cmh->cmsg_level != SOL_SOCKET || cmh->cmsg_type != SCM_RIGHTS)
				continue;
			/* every fd the kernel installed is ours to close */
			for (size_t i = 0; i < (cmh->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int f;

				memcpy(&f, CMSG_DATA(cmh) + i * sizeof(int), sizeof(int));
				if (nfds < 8)
					fds[nfds++] = f;
				else
					closer_close(f, c->user, c->tenant);
			}
		}
		if (n == 0 && !nfds && !(m.msg_flags & MSG_CTRUNC)) {
			client_gone(c);	/* orderly close (or an empty datagram: the same) */
			return;
		}
		if (n == 0) {
			drop_client(c, "empty message carrying %d fds", nfds);
			for (int i = 0; i < nfds; i++)
				closer_close(fds[i], c->user, c->tenant);
			return;
		}
		handle_message(c, buf, (size_t)n, fds, nfds,
			       (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0);
	}
}

/* ---- lifetime ---- */
static void prehello_del(struct client *c);

/* The connection ends; it is freed after the current loop iteration (callers may hold it). */
static void client_gone(struct client *c)
{
	if (c->dead)
		return;
	c->dead = true;
	prehello_del(c);
	nclients--;	/* the bounds count live connections */
	if (c->user)
		c->user->conns--;
	if (c->tenant && !--c->tenant->conns)
		tenants_connected--;
	*c->pprev = c->next;
	if (c->next)
		c->next->pprev = c->pprev;
	c->next = dead_list;
	c->pprev = NULL;
	dead_list = c;
}

void drop_client(struct client *c, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	if (c->dead)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	logmsg_rl("dropping client pid %d uid %u: %s", c->pid, c->euid, buf);
	client_gone(c);
}

void client_free(struct client *c)
{
	uint16_t reason = exit_reason(c);

	msg_gen++;
	watches_release(c);
	client_release_registry(c, reason);
	while (c->outq) {
		struct outmsg *o = c->outq;

		c->outq = o->next;
		outmsg_free(c, o);
	}
	if (c->user) {
		c->user->fds_in_flight -= c->fds_in_flight;
		fds_in_flight_total -= c->fds_in_flight;
		c->user->refs--;
		user_put(c->user);
	}
	if (c->tenant) {
		c->tenant->refs--;
		user_put(c->tenant);
	}
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->evfd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, c->evfd, NULL);
		close(c->evfd);
	}
	if (c->pidfd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, c->pidfd, NULL);
		close(c->pidfd);
	}
	scope_put(c->scope);
	free(c->groups);
	free(c);
}

/* frees the clients dropped during this iteration; none is referenced any more */
static void free_dead(void)
{
	while (dead_list) {
		struct client *c = dead_list;

		dead_list = c->next;
		/* the throttled list may still name it: unlink */
		for (struct client **pp = &throttled; *pp; pp = &(*pp)->throttle_next)
			if (*pp == c) {
				*pp = c->throttle_next;
				break;
			}
		for (struct client **pp = &close_paused; c->close_paused && *pp;
		     pp = &(*pp)->cpause_next)
			if (*pp == c) {
				*pp = c->cpause_next;
				break;
			}
		client_free(c);
	}
}

/* ---- accept ---- */
/*
 * accept() failed for want of fds or memory.  The connection stays in the
 * backlog and the listener stays readable: retrying at once would spin.
 * Spend the reserve fd to accept and close it (the client sees the broker
 * close the connection, not a hang), else stop watching the listener for
 * 100 ms.
 */
static void shed_connection(int lfd, int err)
{
	int fd;

	logmsg_rl("accept: %s (%u clients): shedding new connections", strerror(err), nclients);
	if (reserve_fd >= 0) {
		close(reserve_fd);
		reserve_fd = -1;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd >= 0)
			close(fd);
		reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd >= 0)
			return;
	}
	if (!listen_paused_until) {
		struct epoll_event ev = { .events = 0, .data.u64 = TAG_LISTEN };

		epoll_ctl(ep, EPOLL_CTL_MOD, lfd, &ev);
	}
	listen_fd_saved = lfd;
	listen_paused_until = now_ns() + 100000000;
}

/*
 * At the total connection bound: room is made only at the expense of a
 * tenant holding more than its fair share, the bound divided among the
 * tenants holding connections (the newcomer's included), and at least
 * one: the tenant holding the most loses its newest connection if it is
 * over that share and holds more than the newcomer's tenant + 1.
 * Counted per tenant, not per uid: the uids of a subuid range are one
 * tenant, so a rootless container holding one connection from each of
 * many uids is the largest holder, not many holders of one.  When every
 * tenant holds its share (as many tenants as the bound, one connection
 * each: only root or that many users can do it), the newcomer is
 * refused: no connection is taken from a tenant within its share, so an
 * honest client that connected last is not the one to go (hostile case
 * newest_not_evicted).  true when room was made.
 */
static bool evict_for(const struct user *t)
{
	uint32_t holders = tenants_connected + (t->conns == 0);
	uint32_t fair = cfg.max_conns / (holders ? holders : 1);
	struct user *top = NULL;
	struct client *victim = NULL;

	if (fair < 1)
		fair = 1;
	for (int b = 0; b < USER_BUCKETS; b++)
		for (struct user *u = tenants[b]; u; u = u->next)
			if (!top || u->conns > top->conns)
				top = u;
	if (!top || top->conns <= fair || top->conns <= t->conns + 1)
		return false;
	for (struct client *c = clients; c; c = c->next)
		if (c->tenant == top && (!victim || c->serial > victim->serial))
			victim = c;
	if (!victim)
		return false;
	drop_client(victim, "evicted: %u connections in total (--max-connections), its tenant "
		    "(uid %u) holds %u, over its fair share %u; a tenant holding %u connected",
		    nclients, victim->tenant_uid, top->conns, fair, t->conns);
	return true;
}

/* Refused (false, logged) when c's tenant is at its bound or no room is made at the total. */
static bool tenant_admits(struct client *c)
{
	struct user *t = c->tenant;

	if (!c->override && t->conns >= cfg.max_conns_per_tenant) {
		logmsg_rl("tenant uid %u (uid %u pid %d) has %u connections "
			  "(--max-connections-per-tenant): refused", c->tenant_uid, c->euid,
			  c->pid, t->conns);
		return false;
	}
	if (closes_over(t, cfg.max_closes_per_tenant)) {
		logmsg_rl("tenant uid %u (uid %u pid %d) has %u closes of its files pending "
			  "(--max-pending-closes-per-tenant, --max-pending-closes): refused",
			  c->tenant_uid, c->euid, c->pid, t->closes);
		return false;
	}
	if (nclients >= cfg.max_conns && !evict_for(t)) {
		logmsg_rl("%u connections (--max-connections): uid %u (tenant %u, pid %d) refused",
			  nclients, c->euid, c->tenant_uid, c->pid);
		return false;
	}
	return true;
}

/*
 * A client on connected socket fd of uid u (whose conns it counts in):
 * NULL if refused.  Its tenant is known only once its identity is read,
 * so the tenant's bound and the total are checked here.
 */
struct client *client_new(int fd, struct user *u)
{
	struct epoll_event ev;
	struct client *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return NULL;
	c->fd = fd;
	c->evfd = -1;
	c->pidfd = -1;
	c->outq_tail = &c->outq;
	ret = ident_at_accept(c, fd);
	if (ret)
		logmsg_rl("uid %u pid %d: cannot establish its identity: %s", c->euid, c->pid,
			  strerror(-ret));
	else if (!(c->tenant = tenant_get(c->tenant_uid)))
		ret = -ENOMEM;
	if (ret || !tenant_admits(c)) {
		if (c->pidfd >= 0)
			close(c->pidfd);
		user_put(c->tenant);
		scope_put(c->scope);
		free(c->groups);
		free(c);
		return NULL;
	}
	c->user = u;
	u->conns++;
	u->refs++;
	if (!c->tenant->conns++)
		tenants_connected++;
	c->tenant->refs++;
	c->serial = ++next_serial;
	c->hello_deadline = now_ns() + (int64_t)cfg.hello_timeout_ms * 1000000;
	prehello_add(c);
	ev.events = EPOLLIN;
	ev.data.ptr = c;
	c->epoll_events = EPOLLIN;
	epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	ev.events = EPOLLIN | EPOLLONESHOT;	/* readable once the process exits */
	ev.data.u64 = (uint64_t)(uintptr_t)c | TAG_PID;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->pidfd, &ev))
		c->exited = true;	/* cannot watch it: ask every time, as before */
	c->next = clients;
	if (clients)
		clients->pprev = &c->next;
	c->pprev = &clients;
	clients = c;
	nclients++;
	return c;
}

void accept_client(int lfd)
{
	struct ucred cr;
	socklen_t l = sizeof(cr);
	struct user *u;
	int fd;

	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			shed_connection(lfd, errno);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) || !(u = user_get(cr.uid))) {
		close(fd);
		return;
	}
	if (cr.uid != 0 && u->conns >= cfg.max_conns_per_user) {
		logmsg_rl("uid %u (pid %d) has %u connections (--max-connections-per-user): refused",
			  cr.uid, cr.pid, u->conns);
		goto refuse;
	}
	if (user_closes_paused(u)) {
		logmsg_rl("uid %u (pid %d) has %u closes of its files pending "
			  "(--max-pending-closes-per-user, --max-pending-closes): refused",
			  cr.uid, cr.pid, u->closes);
		goto refuse;
	}
	if (client_new(fd, u))
		return;
refuse:
	close(fd);
	user_put(u);
}

/* HELLO deadlines (the oldest first) and the paused listener; then frees the dropped. */
void conns_tick(int64_t now, int64_t *next)
{
	if (listen_paused_until && listen_paused_until <= now) {
		struct epoll_event lev = { .events = EPOLLIN, .data.u64 = TAG_LISTEN };

		epoll_ctl(ep, EPOLL_CTL_MOD, listen_fd_saved, &lev);
		listen_paused_until = 0;
	}
	if (listen_paused_until && (*next < 0 || listen_paused_until < *next))
		*next = listen_paused_until;
	while (ph_head && ph_head->hello_deadline <= now)
		drop_client(ph_head, "no HELLO within %u ms", cfg.hello_timeout_ms);
	if (ph_head && (*next < 0 || ph_head->hello_deadline < *next))
		*next = ph_head->hello_deadline;
	free_dead();
}

void conns_exit(void)
{
	while (clients)
		client_gone(clients);
	free_dead();
	if (reserve_fd >= 0)
		close(reserve_fd);
}
