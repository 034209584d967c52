// SPDX-License-Identifier: MIT
/*
 * libnvbridge broker backend: the nvbridged socket (see the wire framing in
 * <linux/nvbridge.h>).
 *
 * Several threads may have requests outstanding on one connection (a
 * waiting FETCH does not block the others): each request carries a seq;
 * whichever waiting thread finds no reader becomes the reader, receives
 * replies and hands each to the thread whose seq it carries.
 *
 * Every wait is bounded by the handle's request timeout (SO_SNDTIMEO and
 * SO_RCVTIMEO on the socket, a deadline per request): a broker that stops
 * answering makes the request fail with -ETIMEDOUT and the connection is
 * shut down, since a late reply could carry an fd nobody waits for.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <libgen.h>
#include "nvb_internal.h"
#include "nvb_wire.h"

#define RXBUF_SIZE (NVBRIDGE_WIRE_HDR_SIZE + NVBRIDGE_WIRE_ARG_MAX + NVBRIDGE_WIRE_DATA_MAX)

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* No timeout: a day, so that a signal still ends recvmsg() under SA_RESTART. */
#define NO_TIMEOUT_NS (86400LL * 1000000000)

static void set_timeo(int s, int opt, int64_t ns)
{
	struct timeval tv;

	if (ns <= 0 || ns > NO_TIMEOUT_NS)
		ns = NO_TIMEOUT_NS;
	if (ns < 1000)
		ns = 1000;	/* 0 would mean "forever" */
	tv.tv_sec = ns / 1000000000;
	tv.tv_usec = (ns % 1000000000) / 1000;
	setsockopt(s, SOL_SOCKET, opt, &tv, sizeof(tv));
}

static int do_connect(const char *path, int64_t timeout_ns, char *why, size_t whylen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s, ret, one = 1;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(why, whylen, "broker backend: socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0) {
		ret = -errno;
		snprintf(why, whylen, "broker backend: socket: %s", strerror(errno));
		return ret;
	}
	/*
	 * Have our credentials attached to HELLO (the broker checks its
	 * SCM_CREDENTIALS against SO_PEERCRED and the pidfd): set on the
	 * sender, this does not depend on the broker's socket having had
	 * SO_PASSCRED at the moment HELLO was queued (measured on 6.18: a
	 * message sent after accept() but before the broker set SO_PASSCRED
	 * on the accepted socket arrives with pid 0 unless the sender has it).
	 * Cleared again once HELLO is sent, so replies carry no credentials.
	 */
	setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	/* connect() to a full backlog waits SO_SNDTIMEO, sends too */
	set_timeo(s, SO_SNDTIMEO, timeout_ns);
	set_timeo(s, SO_RCVTIMEO, timeout_ns);
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = errno == EAGAIN ? -ETIMEDOUT : -errno;
		snprintf(why, whylen, "broker backend: connect %s: %s%s", path, strerror(-ret),
			 errno == ECONNREFUSED || errno == ENOENT ? " (is nvbridged running?)" : "");
		close(s);
		return ret;
	}
	return s;
}

/*
 * Who may answer on the socket: before our pidfd and requests go out, the
 * server (SO_PEERCRED: the uid that called listen(), so systemd's root for
 * an activated socket) must be the uid asked for, or else root, ourselves,
 * or the owner of the socket's directory, who could replace the socket
 * anyway.  A socket planted in a shared directory (/tmp) by another user
 * fails this.  Ids are as seen in our user namespace (an unmapped broker
 * and an unmapped directory owner both read as the overflow uid).
 */
static int check_peer(int s, const char *path, int64_t want, char *why, size_t whylen)
{
	struct ucred cr;
	socklen_t l = sizeof(cr);
	char dir[108];
	struct stat st;

	if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &l)) {
		int e = errno;

		snprintf(why, whylen, "broker backend: %s: SO_PEERCRED: %s", path, strerror(e));
		return -e;
	}
	if (want >= 0) {
		if (cr.uid == (uid_t)want)
			return 0;
		snprintf(why, whylen, "broker backend: %s is served by uid %u, expected uid %lld",
			 path, cr.uid, (long long)want);
		return -EPERM;
	}
	if (cr.uid == 0 || cr.uid == geteuid())
		return 0;
	snprintf(dir, sizeof(dir), "%s", path);
	if (stat(dirname(dir), &st) == 0 && st.st_uid == cr.uid)
		return 0;
	snprintf(why, whylen,
		 "broker backend: %s is served by uid %u: not root, not us, not the owner of its directory (set NVBRIDGE_BROKER_UID to trust it)",
		 path, cr.uid);
	return -EPERM;
}

static ssize_t send_msg(int s, const struct nvbridge_wire_hdr *hdr, const void *arg,
			const void *data, int fd)
{
	struct iovec iov[3];
	union nvb_wire_cmsg cm;
	struct msghdr m = { .msg_iov = iov };
	ssize_t n;

	iov[m.msg_iovlen].iov_base = (void *)hdr;
	iov[m.msg_iovlen++].iov_len = NVBRIDGE_WIRE_HDR_SIZE;
	if (hdr->arg_size) {
		iov[m.msg_iovlen].iov_base = (void *)arg;
		iov[m.msg_iovlen++].iov_len = hdr->arg_size;
	}
	if (hdr->data_len) {
		iov[m.msg_iovlen].iov_base = (void *)data;
		iov[m.msg_iovlen++].iov_len = hdr->data_len;
	}
	if (fd >= 0)
		nvb_wire_attach_fd(&m, &cm, fd);
	do
		n = sendmsg(s, &m, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? -ETIMEDOUT : -errno;
	return n;
}

/*
 * Receives one message into rx (buf/len in, len and fds out).  Returns the
 * length, 0 at the end of the connection, or -errno (-EAGAIN: SO_RCVTIMEO
 * passed, or nothing there with MSG_DONTWAIT).
 */
static ssize_t recv_msg(int s, void *buf, size_t cap, struct nvb_rx *rx, int flags)
{
	struct iovec iov = { buf, cap };
	union {
		struct cmsghdr c;
		char buf[CMSG_SPACE(NVB_RX_MAXFD * sizeof(int))];
	} cm;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf) };
	struct cmsghdr *c;
	ssize_t n;

	rx->buf = buf;
	rx->len = 0;
	rx->nfds = 0;
	rx->ctrunc = rx->trunc = false;
	n = recvmsg(s, &m, MSG_CMSG_CLOEXEC | flags);
	if (n < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; CMSG_LEN((i + 1) * sizeof(int)) <= c->cmsg_len; i++) {
			int f;

			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (rx->nfds < NVB_RX_MAXFD)
				rx->fds[rx->nfds++] = f;
			else
				close(f);
		}
	}
	rx->len = (size_t)n;
	rx->ctrunc = m.msg_flags & MSG_CTRUNC;
	rx->trunc = m.msg_flags & MSG_TRUNC;
	return n;
}

/*
 * Waits for a reply: polls without sleeping for up to spin_ns first (the
 * broker usually answers within a few microseconds, and a sleep + wake-up
 * costs more than that), then blocks (SO_RCVTIMEO bounds it).
 */
/*
 * A FETCH_WAIT sleeps in poll(), not in recvmsg(): after a stop and a
 * SIGCONT with no handler, recvmsg() on a socket with SO_RCVTIMEO fails
 * with EINTR (signal(7)), which would end the wait; poll() is restarted
 * then, and fails with EINTR exactly when a handler ran, SA_RESTART or
 * not, as the ioctl (-ERESTARTNOHAND).  -EAGAIN when @deadline passed.
 */
static ssize_t recv_wait(int s, void *buf, size_t cap, struct nvb_rx *rx, int64_t deadline)
{
	struct pollfd pf = { .fd = s, .events = POLLIN };
	int ms = -1, r;

	rx->nfds = 0;
	if (deadline) {
		int64_t left = deadline - mono_ns();

		ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
	}
	r = poll(&pf, 1, ms);
	if (r < 0)
		return -errno;
	if (r == 0)
		return -EAGAIN;
	return recv_msg(s, buf, cap, rx, MSG_DONTWAIT);
}

static ssize_t recv_reply(int s, void *buf, size_t cap, struct nvb_rx *rx, int64_t spin_ns)
{
	if (spin_ns > 0) {
		int64_t end = mono_ns() + spin_ns;

		do {
			ssize_t n = recv_msg(s, buf, cap, rx, MSG_DONTWAIT);

			if (n != -EAGAIN)
				return n;
		} while (mono_ns() < end);
	}
	return recv_msg(s, buf, cap, rx, 0);
}

int nvb_broker_open(struct nvb *h, const char *path, int64_t broker_uid, char *why,
		    size_t whylen)
{
	struct nvbridge_wire_hdr hdr = {
		.magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
		.type = NVBRIDGE_WIRE_HELLO, .arg_size = NVBRIDGE_WIRE_HELLO_SIZE,
	};
	struct nvbridge_wire_hello hello = { .abi_version = NVBRIDGE_ABI_VERSION };
	char pwhy[NVB_ERRLEN];
	struct nvb_rx rx;
	int s, pidfd, evfd = -1, ret, zero = 0;
	int64_t deadline = h->timeout_ns > 0 ? mono_ns() + h->timeout_ns : 0;
	ssize_t n;

	s = do_connect(path, h->timeout_ns, why, whylen);
	if (s < 0)
		return s;
	ret = check_peer(s, path, broker_uid, why, whylen);
	if (ret) {
		close(s);
		return ret;
	}
	h->rxbuf = malloc(RXBUF_SIZE);
	if (!h->rxbuf) {
		close(s);
		return -ENOMEM;
	}
	pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (pidfd < 0) {
		ret = -errno;
		snprintf(why, whylen, "broker backend: pidfd_open: %s", strerror(errno));
		goto fail;
	}
	n = send_msg(s, &hdr, &hello, NULL, pidfd);
	close(pidfd);
	setsockopt(s, SOL_SOCKET, SO_PASSCRED, &zero, sizeof(zero));
	/*
	 * A broker that refuses the connection (a per-user or per-tenant
	 * bound) closes it at accept.  Whether that close comes before our
	 * HELLO (the send fails: EPIPE) or after it (the read sees the reset)
	 * is scheduling: one answer for both, as for a broker gone later.
	 */
	if (n == -EPIPE || n == -ECONNRESET || n == -ENOTCONN) {
		ret = -ECONNRESET;
		snprintf(why, whylen, "broker backend: %s: broker closed the connection before HELLO",
			 path);
		goto fail;
	}
	if (n < 0) {
		ret = (int)n;
		snprintf(why, whylen, "broker backend: %s: sending HELLO: %s", path, strerror((int)-n));
		goto fail;
	}
	for (;;) {
		if (deadline)
			set_timeo(s, SO_RCVTIMEO, deadline - mono_ns());
		n = recv_msg(s, h->rxbuf, RXBUF_SIZE, &rx, 0);
		if (n != -EINTR && !(n == -EAGAIN && deadline && mono_ns() < deadline))
			break;
	}
	if (n == 0) {
		ret = -ECONNRESET;
		snprintf(why, whylen, "broker backend: %s: broker closed the connection during HELLO", path);
		goto fail;
	}
	if (n < 0) {
		ret = n == -EAGAIN ? -ETIMEDOUT : (int)n;
		snprintf(why, whylen, "broker backend: %s: HELLO: %s", path, strerror(-ret));
		goto fail;
	}
	ret = nvb_hello_parse(&rx, &h->binfo, &evfd, pwhy, sizeof(pwhy));
	if (ret) {
		snprintf(why, whylen, "broker backend: %s: %s", path, pwhy);
		goto fail;
	}
	h->fd = s;
	h->evfd = evfd;
	h->rcvtimeo_ns = h->timeout_ns;
	set_timeo(s, SO_RCVTIMEO, h->timeout_ns);
	{
		/* NVBRIDGE_SPIN_US: how long to poll for a reply before sleeping */
		const char *e = getenv("NVBRIDGE_SPIN_US");

		h->spin_ns = (e && *e ? atoll(e) : 0) * 1000;
	}
	snprintf(h->path, sizeof(h->path), "%s", path);
	return 0;
fail:
	close(s);
	free(h->rxbuf);
	h->rxbuf = NULL;
	return ret;
}

/*
 * Closing is synchronous, as close() on the device is: we shut our side
 * down and wait (bounded by the request timeout, at most 5 s) until the
 * broker has processed the end of the connection, i.e. revoked our
 * entries, and closes its side.  A handle inherited through fork() has no
 * fds left (see core.c).
 */
void nvb_broker_close(struct nvb *h)
{
	if (h->fd >= 0 && !h->dead) {
		int64_t left_ms = 5000;

		if (h->timeout_ns > 0 && h->timeout_ns / 1000000 < left_ms)
			left_ms = h->timeout_ns / 1000000 + 1;
		shutdown(h->fd, SHUT_WR);
		while (left_ms > 0) {
			struct pollfd p = { .fd = h->fd, .events = POLLIN };
			struct nvb_rx rx;
			ssize_t n;

			if (poll(&p, 1, 100) <= 0) {	/* EINTR too: keep the bound */
				left_ms -= 100;
				continue;
			}
			n = recv_msg(h->fd, h->rxbuf, RXBUF_SIZE, &rx, MSG_DONTWAIT);
			nvb_rx_close(&rx);
			if (n == 0 || (n < 0 && n != -EINTR && n != -EAGAIN))
				break;
		}
	}
	if (h->evfd >= 0)
		close(h->evfd);
	if (h->fd >= 0)
		close(h->fd);
	free(h->rxbuf);
}

/* Wakes the thread of one request (h->lock held). */
static void wake(struct nvb_pending *q)
{
	static const uint64_t one = 1;

	if (q->efd >= 0) {
		ssize_t r = write(q->efd, &one, sizeof(one));

		(void)r;	/* EAGAIN: the counter is full, it is awake */
	} else {
		pthread_cond_signal(&q->cv);
	}
}

/*
 * The connection is over (h->lock held): every request still in flight
 * fails with err, later calls with -ECONNRESET.  Shutting the socket down
 * ends a reader's recvmsg() in another thread and tells the broker to
 * revoke our entries now, not when it next reads.
 */
static void kill_conn(struct nvb *h, int err)
{
	if (!h->dead) {
		h->dead = true;
		shutdown(h->fd, SHUT_RDWR);
	}
	for (struct nvb_pending *q = h->pending; q; q = q->next) {
		if (!q->done) {
			q->result = err;
			q->done = true;
		}
		wake(q);
	}
}

/*
 * A FETCH that waits for its name while another thread reads the replies
 * must still end with -EINTR when a signal reaches it, as the ioctl does:
 * it sleeps in poll() on its own eventfd, which wake() kicks, rather than
 * in pthread_cond_wait(), which no signal ends.  Returns true when a
 * signal ended the sleep.  Called and returns with h->lock held.
 */
static bool sleep_interruptible(struct nvb *h, struct nvb_pending *p, int64_t deadline)
{
	struct pollfd pf;
	uint64_t v;
	int r, e, ms = -1;

	if (p->efd < 0)
		p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (deadline) {
		int64_t left = deadline - mono_ns();

		ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
	}
	if (p->efd < 0) {
		struct timespec ts = { deadline / 1000000000, deadline % 1000000000 };

		if (deadline)
			pthread_cond_timedwait(&p->cv, &h->lock, &ts);
		else
			pthread_cond_wait(&p->cv, &h->lock);
		return false;
	}
	pthread_mutex_unlock(&h->lock);
	pf.fd = p->efd;
	pf.events = POLLIN;
	pf.revents = 0;
	r = poll(&pf, 1, ms);
	e = errno;
	if (read(p->efd, &v, sizeof(v)) < 0)
		v = 0;	/* nothing to clear */
	pthread_mutex_lock(&h->lock);
	return r < 0 && e == EINTR;
}

/* Tells the broker to end the waiting FETCH of hdr->seq (it answers -EINTR). */
static void send_cancel(struct nvb *h, const struct nvbridge_wire_hdr *hdr)
{
	struct nvbridge_wire_hdr c = *hdr;

	c.type = NVBRIDGE_WIRE_CANCEL;
	c.cmd = 0;
	c.arg_size = 0;
	c.data_len = 0;
	send_msg(h->fd, &c, NULL, NULL, -1);
}

static void unlink_pending(struct nvb *h, struct nvb_pending *p)
{
	struct nvb_pending **pp;

	for (pp = &h->pending; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
}

/* The deadline of a request: 0 for none. */
static int64_t deadline_of(const struct nvb *h, unsigned long cmd, const void *arg)
{
	int64_t t = h->timeout_ns;

	if (t <= 0)
		return 0;
	if (cmd == NVBRIDGE_IOC_FETCH) {
		const struct nvbridge_fetch *f = arg;

		if (f->flags & NVBRIDGE_FETCH_WAIT) {
			if (f->timeout_ns < 0 || f->timeout_ns > NO_TIMEOUT_NS)
				return 0;
			t += f->timeout_ns;
		}
	}
	return mono_ns() + t;
}

/*
 * The reader's side (h->lock held, dropped while receiving): receives one
 * message and hands it out.  Returns false when p's deadline has passed.
 */
static bool read_one(struct nvb *h, struct nvb_pending *p, int64_t deadline,
		     bool wait_fetch, bool *cancelled, const struct nvbridge_wire_hdr *hdr)
{
	struct nvb_pending *q;
	struct nvb_rx rx;
	char why[NVB_ERRLEN];
	ssize_t n;
	int ret;

	if (deadline) {
		int64_t left = deadline - mono_ns(), slack = h->timeout_ns / 8;

		if (left <= 0)
			return false;
		/*
		 * SO_RCVTIMEO is the request timeout; a recvmsg() that started
		 * after this request was sent is reset to what is left only when
		 * it would overshoot by more than an eighth (a reader that took
		 * over late, or the last wait of a FETCH_WAIT), and set back once
		 * a full timeout is left again: no setsockopt() per request.
		 */
		if (left + slack < h->rcvtimeo_ns ||
		    (h->rcvtimeo_ns < h->timeout_ns && left >= h->timeout_ns)) {
			h->rcvtimeo_ns = left < h->timeout_ns ? left : h->timeout_ns;
			set_timeo(h->fd, SO_RCVTIMEO, h->rcvtimeo_ns);
		}
	}
	pthread_mutex_unlock(&h->lock);
	if (wait_fetch)
		n = recv_wait(h->fd, h->rxbuf, RXBUF_SIZE, &rx, deadline);
	else
		n = recv_reply(h->fd, h->rxbuf, RXBUF_SIZE, &rx, h->spin_ns);
	pthread_mutex_lock(&h->lock);
	if (n == -EINTR || n == -EAGAIN) {
		nvb_rx_close(&rx);
		if (n == -EINTR && wait_fetch && !*cancelled) {
			*cancelled = true;
			pthread_mutex_unlock(&h->lock);
			send_cancel(h, hdr);
			pthread_mutex_lock(&h->lock);
		}
		return true;
	}
	if (n <= 0) {
		nvb_rx_close(&rx);
		snprintf(h->txerr, sizeof(h->txerr), "broker connection lost");
		kill_conn(h, -ECONNRESET);
		return true;
	}
	ret = nvb_reply_dispatch(h->pending, &rx, &q, why, sizeof(why));
	if (ret < 0) {
		snprintf(h->txerr, sizeof(h->txerr), "%s", why);
		if (q && !q->done) {
			q->result = ret;
			q->done = true;
		}
		if (!p->done) {	/* the reader learns why the connection broke */
			p->result = ret;
			p->done = true;
		}
		kill_conn(h, -ECONNRESET);
	} else if (q != p) {
		wake(q);
	}
	return true;
}

/* One request in flight: what sending it set up and waiting for it needs. */
struct xfer {
	struct nvbridge_wire_hdr hdr;
	struct nvb_pending p;
	bool wait_fetch;
	int64_t deadline, wait_end;
};

/*
 * Sends the request and lists it as pending (0), or answers it at once
 * (-E2BIG, -ECONNRESET: nothing sent, nothing to wait for).  xfer_end() waits for its reply;
 * several may be in flight on one connection, answered in the order sent.
 */
static int xfer_begin(struct nvb *h, unsigned long cmd, void *arg, struct xfer *x)
{
	struct nvbridge_wire_hdr *hdr = &x->hdr;
	struct nvb_pending *pp = &x->p;
	pthread_condattr_t ca;
	const void *data = NULL;
	int sendfd = -1;
	uint32_t size;

	memset(x, 0, sizeof(*x));
	*hdr = (struct nvbridge_wire_hdr){
		.magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
		.type = NVBRIDGE_WIRE_REQUEST, .cmd = (uint32_t)cmd,
	};
	*pp = (struct nvb_pending){ .cmd = (uint32_t)cmd, .arg = arg, .fd = -1, .efd = -1,
				    .cloexec = true };
	memcpy(&size, arg, sizeof(size));
	if (size > NVBRIDGE_WIRE_ARG_MAX)
		return -E2BIG;	/* as the kernel: more than a page */
	hdr->arg_size = size;
	pp->arg_size = size;
	switch (cmd) {
	case NVBRIDGE_IOC_PUBLISH: {
		struct nvbridge_publish *pb = arg;

		pb->id = 0;	/* as the module: the id only on success */
		/*
		 * A missing blob or fd is the broker's to answer (-EFAULT,
		 * -EBADF), after it has checked every value, as the ioctl does.
		 */
		if (pb->blob && pb->blob_len <= h->binfo.max_blob_size &&
		    pb->blob_len <= NVBRIDGE_WIRE_DATA_MAX) {
			hdr->data_len = pb->blob_len;
			data = (const void *)(uintptr_t)pb->blob;
		}
		if (pb->fd >= 0 && fcntl(pb->fd, F_GETFD) >= 0)
			sendfd = pb->fd;
		break;
	}
	case NVBRIDGE_IOC_FETCH: {
		struct nvbridge_fetch *f = arg;

		pp->data = (void *)(uintptr_t)f->blob;
		pp->data_cap = f->blob ? f->blob_cap : 0;
		pp->cloexec = !(f->flags & NVBRIDGE_FETCH_NO_CLOEXEC);
		x->wait_fetch = f->flags & NVBRIDGE_FETCH_WAIT;
		if (x->wait_fetch && f->timeout_ns >= 0)
			x->wait_end = mono_ns() + (f->timeout_ns < NO_TIMEOUT_NS ? f->timeout_ns : NO_TIMEOUT_NS);
		break;
	}
	case NVBRIDGE_IOC_LIST: {
		struct nvbridge_list *l = arg;

		pp->data = (void *)(uintptr_t)l->entries;
		pp->list_count = l->entries ? l->count : 0;
		pp->entry_size = l->entry_size;
		pp->data_cap = (size_t)pp->list_count * l->entry_size;
		break;
	}
	}
	x->deadline = deadline_of(h, cmd, arg);
	/* the condition variable, for waits behind another reader (timed on CLOCK_MONOTONIC) */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&pp->cv, &ca);
	pthread_condattr_destroy(&ca);

	pthread_mutex_lock(&h->lock);
	if (h->dead) {
		pthread_mutex_unlock(&h->lock);
		pthread_cond_destroy(&pp->cv);
		return -ECONNRESET;
	}
	pp->seq = ++h->seq;
	hdr->seq = pp->seq;
	pp->next = h->pending;	/* before sending: a quick reply must find it */
	h->pending = pp;
	pthread_mutex_unlock(&h->lock);
	/*
	 * Not under the lock: when the broker stops reading us until we read
	 * its replies, this send blocks (SO_SNDTIMEO bounds it), and the
	 * thread that reads them needs the lock to hand them out.
	 */
	{
		ssize_t n = send_msg(h->fd, hdr, arg, data, sendfd);

		pthread_mutex_lock(&h->lock);
		if (n < 0 && !pp->done) {
			if (n == -EPIPE || n == -ECONNRESET || n == -ENOTCONN) {
				snprintf(h->txerr, sizeof(h->txerr), "broker connection lost");
				kill_conn(h, -ECONNRESET);
			} else if (n == -ETIMEDOUT) {
				snprintf(h->txerr, sizeof(h->txerr),
					 "broker did not take the request within the timeout");
				kill_conn(h, -ETIMEDOUT);
			} else {
				pp->result = (int)n;	/* -EBADF: fd not open */
				pp->done = true;
			}
		}
		pthread_mutex_unlock(&h->lock);
	}
	return 0;
}

/* Waits for the reply of a request xfer_begin() sent; its result. */
static int xfer_end(struct nvb *h, struct xfer *x)
{
	struct nvb_pending *pp = &x->p;
	bool cancelled = false, timed_out = false, wait_fetch = x->wait_fetch;
	int64_t deadline = x->deadline, wait_end = x->wait_end;
	int ret;

	pthread_mutex_lock(&h->lock);
	while (!pp->done && !timed_out) {
		if (h->reader) {
			if (deadline && mono_ns() >= deadline) {
				timed_out = true;
				break;
			}
			bool intr = false;

			pp->waiting = true;
			if (!wait_fetch) {
				struct timespec ts = { deadline / 1000000000, deadline % 1000000000 };

				if (deadline)
					pthread_cond_timedwait(&pp->cv, &h->lock, &ts);
				else
					pthread_cond_wait(&pp->cv, &h->lock);
			} else {
				intr = sleep_interruptible(h, pp, deadline);
			}
			pp->waiting = false;
			if (intr && !pp->done && !cancelled) {
				cancelled = true;
				pthread_mutex_unlock(&h->lock);
				send_cancel(h, &x->hdr);
				pthread_mutex_lock(&h->lock);
			}
			continue;
		}
		h->reader = true;
		while (!pp->done && !timed_out)
			timed_out = !read_one(h, pp, deadline, wait_fetch, &cancelled, &x->hdr);
		h->reader = false;
		for (struct nvb_pending *q = h->pending; q; q = q->next)
			if (q->waiting && !q->done) {
				wake(q);	/* the next reader */
				break;
			}
	}
	if (timed_out && !pp->done) {
		snprintf(h->txerr, sizeof(h->txerr), "broker did not answer within %lld ms",
			 (long long)(h->timeout_ns / 1000000));
		kill_conn(h, -ETIMEDOUT);
	}
	unlink_pending(h, pp);
	if (pp->efd >= 0)
		close(pp->efd);
	ret = pp->result;
	pthread_mutex_unlock(&h->lock);
	pthread_cond_destroy(&pp->cv);
	if (ret == -EINTR && wait_end) {
		/* as the ioctl: a FETCH_WAIT ended by a signal says how long was left */
		int64_t left = wait_end - mono_ns();

		((struct nvbridge_fetch *)pp->arg)->timeout_ns = left > 0 ? left : 0;
	}
	return ret;
}

int nvb_broker_xfer(struct nvb *h, unsigned long cmd, void *arg)
{
	struct xfer x;
	int ret = xfer_begin(h, cmd, arg, &x);

	return ret ? ret : xfer_end(h, &x);
}

int nvb_broker_xfer2(struct nvb *h, unsigned long cmd0, void *arg0, int *ret0,
		     unsigned long cmd1, void *arg1)
{
	struct xfer x0, x1;
	int r1;

	*ret0 = xfer_begin(h, cmd0, arg0, &x0);
	if (*ret0)	/* the first was not sent: the second is not either */
		return *ret0;
	r1 = xfer_begin(h, cmd1, arg1, &x1);	/* behind the first on the same stream */
	*ret0 = xfer_end(h, &x0);
	/*
	 * A first request refused makes the second worthless to the caller
	 * (nvb_watch_fetch drops it): a FETCH waiting for a publish is ended
	 * now (-EINTR), not left to wait out its timeout, or forever.  One that
	 * was answered already is not waiting: the broker ignores the cancel.
	 */
	if (!r1 && *ret0 < 0 && *ret0 != -EEXIST && x1.wait_fetch)
		send_cancel(h, &x1.hdr);
	return r1 ? r1 : xfer_end(h, &x1);
}

/*
 * xfer2's rule for n requests: at most NVB_XFERN_WINDOW in flight at
 * once (the broker stops reading a connection with half its max_queued
 * replies unread, 128 by default, and this thread is the one that reads
 * them), answers taken in the order sent.  A WATCH refused (but -EEXIST)
 * cancels the waiting FETCH right behind it, as nvb_broker_xfer2 does.
 */
#define NVB_XFERN_WINDOW	32

void nvb_broker_xfern(struct nvb *h, unsigned int n, const unsigned long *cmd, void *const *arg,
		      int *ret)
{
	struct xfer *x = calloc(n < NVB_XFERN_WINDOW ? n : NVB_XFERN_WINDOW, sizeof(*x));
	unsigned int sent = 0, done = 0, i;
	int dead = 0;

	if (!x) {
		for (i = 0; i < n; i++)
			ret[i] = -ENOMEM;
		return;
	}
	while (done < n) {
		/* sent, not yet answered: up to the window; one that could not go ends the sending */
		while (!dead && sent < n && sent - done < NVB_XFERN_WINDOW) {
			ret[sent] = xfer_begin(h, cmd[sent], arg[sent], &x[sent % NVB_XFERN_WINDOW]);
			if (ret[sent]) {
				dead = ret[sent];
				break;
			}
			sent++;
		}
		if (done == sent) {	/* nothing in flight: the rest were never sent */
			for (i = sent; i < n; i++)
				ret[i] = dead;
			break;
		}
		i = done++;
		ret[i] = xfer_end(h, &x[i % NVB_XFERN_WINDOW]);
		if (cmd[i] == NVBRIDGE_IOC_WATCH && ret[i] < 0 && ret[i] != -EEXIST && i + 1 < sent &&
		    cmd[i + 1] == NVBRIDGE_IOC_FETCH && x[(i + 1) % NVB_XFERN_WINDOW].wait_fetch)
			send_cancel(h, &x[(i + 1) % NVB_XFERN_WINDOW].hdr);
	}
	free(x);
}
