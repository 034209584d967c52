// SPDX-License-Identifier: MIT
/*
 * libnvbridge broker backend: the nvbridged socket (see the wire framing in
 * <linux/nvbridge.h>).
 *
 * Several threads may have requests outstanding on one connection (a
 * waiting FETCH does not block the others): each request carries a seq;
 * whichever waiting thread finds no reader becomes the reader, receives
 * replies and hands each to the thread whose seq it carries.
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
#include <sys/un.h>
#include "nvb_internal.h"
#include "nvb_wire.h"

#define RXBUF_SIZE (NVBRIDGE_WIRE_HDR_SIZE + NVBRIDGE_WIRE_ARG_MAX + NVBRIDGE_WIRE_DATA_MAX)

struct nvb_pending {
	struct nvb_pending *next;
	uint32_t seq;
	uint32_t cmd;
	bool done;
	bool cloexec;
	bool waiting;		/* asleep behind the reader (not still sending) */
	int result;
	void *arg;		/* the caller's struct */
	uint32_t arg_size;
	void *data;		/* FETCH: blob buffer; LIST: records */
	size_t data_cap;
	int fd;			/* received fd */
	int efd;		/* a FETCH_WAIT sleeping behind another reader, or -1 */
	pthread_cond_t cv;	/* any other request sleeping behind the reader */
};

static int do_connect(const char *path, char *why, size_t whylen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s, ret;

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
	{
		int one = 1;

		setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	}
	{
		/* a receive timeout makes a signal end recvmsg() even under SA_RESTART */
		struct timeval tv = { .tv_sec = 86400 };

		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		snprintf(why, whylen, "broker backend: connect %s: %s%s", path, strerror(errno),
			 errno == ECONNREFUSED || errno == ENOENT ? " (is nvbridged running?)" : "");
		close(s);
		return ret;
	}
	return s;
}

static ssize_t send_msg(int s, const struct nvbridge_wire_hdr *hdr, const void *arg,
			const void *data, int fd)
{
	struct iovec iov[3];
	union {
		struct cmsghdr c;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
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
	if (fd >= 0) {
		memset(&cm, 0, sizeof(cm));
		m.msg_control = cm.buf;
		m.msg_controllen = sizeof(cm.buf);
		cm.c.cmsg_level = SOL_SOCKET;
		cm.c.cmsg_type = SCM_RIGHTS;
		cm.c.cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(&cm.c), &fd, sizeof(int));
	}
	do
		n = sendmsg(s, &m, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

/* Receives one message into buf; *fd gets the passed fd or -1. */
static ssize_t recv_msg_flags(int s, void *buf, size_t len, int *fd, bool *ctrunc, int flags);

static ssize_t recv_msg(int s, void *buf, size_t len, int *fd, bool *ctrunc)
{
	return recv_msg_flags(s, buf, len, fd, ctrunc, 0);
}

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Waits for a reply: polls without sleeping for up to spin_ns first (the
 * broker usually answers within a few microseconds, and a sleep + wake-up
 * costs more than that), then blocks.
 */
static ssize_t recv_reply(int s, void *buf, size_t len, int *fd, bool *ctrunc, int64_t spin_ns)
{
	if (spin_ns > 0) {
		int64_t end = mono_ns() + spin_ns;

		do {
			ssize_t n = recv_msg_flags(s, buf, len, fd, ctrunc, MSG_DONTWAIT);

			if (n != -EAGAIN)
				return n;
		} while (mono_ns() < end);
	}
	return recv_msg(s, buf, len, fd, ctrunc);
}

static ssize_t recv_msg_flags(int s, void *buf, size_t len, int *fd, bool *ctrunc, int flags)
{
	struct iovec iov = { buf, len };
	union {
		struct cmsghdr c;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} cm;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf) };
	struct cmsghdr *c;
	ssize_t n;

	*fd = -1;
	*ctrunc = false;
	n = recvmsg(s, &m, MSG_CMSG_CLOEXEC | flags);
	if (n < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			int nfd = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));

			for (int i = 0; i < nfd; i++) {
				int f;

				memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (*fd < 0)
					*fd = f;
				else
					close(f);
			}
		}
	}
	if (m.msg_flags & MSG_CTRUNC)
		*ctrunc = true;
	if (m.msg_flags & MSG_TRUNC) {
		if (*fd >= 0) {	/* the caller gives up on the message: not leaked */
			close(*fd);
			*fd = -1;
		}
		return -EPROTO;
	}
	return n;
}

int nvb_broker_open(struct nvb *h, const char *path, char *why, size_t whylen)
{
	struct nvbridge_wire_hdr hdr = {
		.magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
		.type = NVBRIDGE_WIRE_HELLO, .arg_size = NVBRIDGE_WIRE_HELLO_SIZE,
	};
	struct nvbridge_wire_hello hello = { .abi_version = NVBRIDGE_ABI_VERSION };
	struct nvbridge_wire_hdr *rh;
	int s, pidfd, evfd = -1, ret;
	bool ctrunc;
	ssize_t n;

	s = do_connect(path, why, whylen);
	if (s < 0)
		return s;
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
	{
		int zero = 0;

		setsockopt(s, SOL_SOCKET, SO_PASSCRED, &zero, sizeof(zero));
	}
	if (n < 0) {
		ret = (int)n;
		snprintf(why, whylen, "broker backend: %s: sending HELLO: %s", path, strerror((int)-n));
		goto fail;
	}
	do
		n = recv_msg(s, h->rxbuf, RXBUF_SIZE, &evfd, &ctrunc);
	while (n == -EINTR);
	rh = h->rxbuf;
	if (n == 0) {
		ret = -ECONNRESET;
		snprintf(why, whylen, "broker backend: %s: broker closed the connection during HELLO", path);
		goto fail;
	}
	if (n < 0) {
		ret = (int)n;
		snprintf(why, whylen, "broker backend: %s: HELLO: %s", path, strerror((int)-n));
		goto fail;
	}
	if ((size_t)n < NVBRIDGE_WIRE_HDR_SIZE || rh->magic != NVBRIDGE_WIRE_MAGIC ||
	    rh->type != NVBRIDGE_WIRE_HELLO) {
		ret = -EPROTO;
		snprintf(why, whylen, "broker backend: %s: not an nvbridged socket (bad HELLO)", path);
		goto fail;
	}
	if (rh->version != NVBRIDGE_WIRE_VERSION || rh->result == -EPROTO) {
		ret = -EPROTO;
		snprintf(why, whylen,
			 "broker backend: nvbridged speaks wire version %u, this libnvbridge speaks ABI version %d wire version %d",
			 rh->version, NVBRIDGE_ABI_VERSION, NVBRIDGE_WIRE_VERSION);
		goto fail;
	}
	if (rh->result < 0) {
		ret = rh->result;
		snprintf(why, whylen, "broker backend: %s: HELLO refused: %s", path, strerror(-ret));
		goto fail;
	}
	memset(&h->binfo, 0, sizeof(h->binfo));
	memcpy(&h->binfo, (char *)h->rxbuf + NVBRIDGE_WIRE_HDR_SIZE,
	       rh->arg_size < sizeof(h->binfo) ? rh->arg_size : sizeof(h->binfo));
	if (h->binfo.abi_version != NVBRIDGE_ABI_VERSION) {
		ret = -EPROTO;
		snprintf(why, whylen,
			 "broker backend: nvbridged speaks ABI version %u, this libnvbridge was built for ABI version %d",
			 h->binfo.abi_version, NVBRIDGE_ABI_VERSION);
		goto fail;
	}
	if (evfd < 0) {
		ret = -EPROTO;
		snprintf(why, whylen, "broker backend: %s: HELLO without event socket", path);
		goto fail;
	}
	h->fd = s;
	h->evfd = evfd;
	h->opener = getpid();
	{
		/* NVBRIDGE_SPIN_US: how long to poll for a reply before sleeping */
		const char *e = getenv("NVBRIDGE_SPIN_US");

		h->spin_ns = (e && *e ? atoll(e) : 0) * 1000;
	}
	snprintf(h->path, sizeof(h->path), "%s", path);
	return 0;
fail:
	if (evfd >= 0)
		close(evfd);
	close(s);
	free(h->rxbuf);
	h->rxbuf = NULL;
	return ret;
}

/*
 * Closing is synchronous, as close() on the device is: we shut our side
 * down and wait (bounded) until the broker has processed the end of the
 * connection, i.e. revoked our entries, and closes its side.  A handle
 * inherited through fork() is just closed (its parent still owns it).
 */
void nvb_broker_close(struct nvb *h)
{
	if (h->fd >= 0 && h->opener == getpid() && !h->dead) {
		int64_t left_ms = 5000;

		shutdown(h->fd, SHUT_WR);
		while (left_ms > 0) {
			struct pollfd p = { .fd = h->fd, .events = POLLIN };
			int fd;
			bool ct;
			ssize_t n;

			if (poll(&p, 1, 100) <= 0) {	/* EINTR too: keep the bound */
				left_ms -= 100;
				continue;
			}
			n = recv_msg(h->fd, h->rxbuf, RXBUF_SIZE, &fd, &ct);
			if (fd >= 0)
				close(fd);
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

/* With h->lock held: hand one received message to its pending request (returned). */
static struct nvb_pending *dispatch(struct nvb *h, ssize_t n, int fd, bool ctrunc)
{
	struct nvbridge_wire_hdr *rh = h->rxbuf;
	const char *arg = (const char *)h->rxbuf + NVBRIDGE_WIRE_HDR_SIZE;
	struct nvb_pending *p;

	if ((size_t)n < NVBRIDGE_WIRE_HDR_SIZE || rh->magic != NVBRIDGE_WIRE_MAGIC ||
	    rh->type != NVBRIDGE_WIRE_REPLY ||
	    (size_t)n != NVBRIDGE_WIRE_HDR_SIZE + (size_t)rh->arg_size + rh->data_len) {
		snprintf(h->errmsg, sizeof(h->errmsg), "broker sent a malformed message (%zd bytes)", n);
		h->dead = true;
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	for (p = h->pending; p; p = p->next)
		if (p->seq == rh->seq && !p->done)
			break;
	if (!p) {
		/* the requester is gone (cancelled): drop */
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	p->result = rh->result;
	if (rh->arg_size)
		memcpy(p->arg, arg, rh->arg_size < p->arg_size ? rh->arg_size : p->arg_size);
	if (rh->data_len && p->data)
		memcpy(p->data, arg + rh->arg_size,
		       rh->data_len < p->data_cap ? rh->data_len : p->data_cap);
	if (p->cmd == NVBRIDGE_IOC_FETCH && p->result >= 0) {
		struct nvbridge_fetch *f = p->arg;

		if (f->entry_flags & NVBRIDGE_ENTRY_HAS_FD) {
			if (fd < 0) {
				p->result = ctrunc ? -EMFILE : -EPROTO;
			} else {
				if (!p->cloexec)
					fcntl(fd, F_SETFD, 0);
				p->result = fd;
				fd = -1;
			}
		}
	}
	if (fd >= 0)
		close(fd);
	p->done = true;
	return p;
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

/* Wakes every thread waiting on the handle (h->lock held): the connection is gone. */
static void wake_all(struct nvb *h)
{
	for (struct nvb_pending *q = h->pending; q; q = q->next)
		wake(q);
}

/*
 * A FETCH that waits for its name while another thread reads the replies
 * must still end with -EINTR when a signal reaches it, as the ioctl does:
 * it sleeps in poll() on its own eventfd, which wake_all() kicks, rather
 * than in pthread_cond_wait(), which no signal ends.  Returns true when a
 * signal ended the sleep.  Called and returns with h->lock held.
 */
static bool sleep_interruptible(struct nvb *h, struct nvb_pending *p)
{
	struct pollfd pf;
	uint64_t v;
	int r, e;

	if (p->efd < 0)
		p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->efd < 0) {
		pthread_cond_wait(&p->cv, &h->lock);	/* no eventfd: as before */
		return false;
	}
	pthread_mutex_unlock(&h->lock);
	pf.fd = p->efd;
	pf.events = POLLIN;
	pf.revents = 0;
	r = poll(&pf, 1, -1);
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

int nvb_broker_xfer(struct nvb *h, unsigned long cmd, void *arg)
{
	struct nvbridge_wire_hdr hdr = {
		.magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
		.type = NVBRIDGE_WIRE_REQUEST, .cmd = (uint32_t)cmd,
	};
	struct nvb_pending p = { .cmd = (uint32_t)cmd, .arg = arg, .fd = -1, .efd = -1,
				 .cloexec = true, .cv = PTHREAD_COND_INITIALIZER };
	const void *data = NULL;
	int sendfd = -1, ret;
	bool cancelled = false, wait_fetch = false;
	uint32_t size;

	memcpy(&size, arg, sizeof(size));
	if (size > NVBRIDGE_WIRE_ARG_MAX)
		return -E2BIG;	/* as the kernel: more than a page */
	hdr.arg_size = size;
	p.arg_size = size;
	switch (cmd) {
	case NVBRIDGE_IOC_PUBLISH: {
		struct nvbridge_publish *pb = arg;

		pb->id = 0;	/* as the module: the id only on success */
		if (pb->blob_len && !pb->blob)
			return -EFAULT;
		if (pb->blob_len <= h->binfo.max_blob_size && pb->blob_len <= NVBRIDGE_WIRE_DATA_MAX) {
			hdr.data_len = pb->blob_len;
			data = (const void *)(uintptr_t)pb->blob;
		}
		if (pb->fd >= 0)
			sendfd = pb->fd;
		break;
	}
	case NVBRIDGE_IOC_FETCH: {
		struct nvbridge_fetch *f = arg;

		p.data = (void *)(uintptr_t)f->blob;
		p.data_cap = f->blob_cap;
		p.cloexec = !(f->flags & NVBRIDGE_FETCH_NO_CLOEXEC);
		wait_fetch = f->flags & NVBRIDGE_FETCH_WAIT;
		break;
	}
	case NVBRIDGE_IOC_LIST: {
		struct nvbridge_list *l = arg;

		p.data = (void *)(uintptr_t)l->entries;
		p.data_cap = (size_t)l->count * l->entry_size;
		break;
	}
	}

	pthread_mutex_lock(&h->lock);
	if (h->dead) {
		pthread_mutex_unlock(&h->lock);
		return -ECONNRESET;
	}
	p.seq = ++h->seq;
	hdr.seq = p.seq;
	p.next = h->pending;	/* before sending: a quick reply must find it */
	h->pending = &p;
	pthread_mutex_unlock(&h->lock);
	/*
	 * Not under the lock: when the broker stops reading us until we read
	 * its replies, this send blocks, and the thread that reads them needs
	 * the lock to hand them out.
	 */
	{
		ssize_t n = send_msg(h->fd, &hdr, arg, data, sendfd);

		pthread_mutex_lock(&h->lock);
		if (n < 0) {
			unlink_pending(h, &p);
			if (n == -EPIPE || n == -ECONNRESET || n == -ENOTCONN) {
				h->dead = true;
				wake_all(h);
				n = -ECONNRESET;
			}
			pthread_mutex_unlock(&h->lock);
			return (int)n;	/* -EBADF: fd not open */
		}
	}
	while (!p.done && !h->dead) {
		if (h->reader) {
			bool intr = false;

			p.waiting = true;
			if (!wait_fetch)
				pthread_cond_wait(&p.cv, &h->lock);
			else
				intr = sleep_interruptible(h, &p);
			p.waiting = false;
			if (intr && !p.done && !cancelled) {
				cancelled = true;
				pthread_mutex_unlock(&h->lock);
				send_cancel(h, &hdr);
				pthread_mutex_lock(&h->lock);
			}
			continue;
		}
		h->reader = true;
		while (!p.done && !h->dead) {
			struct nvb_pending *q;
			int fd;
			bool ctrunc;
			ssize_t n;

			pthread_mutex_unlock(&h->lock);
			n = recv_reply(h->fd, h->rxbuf, RXBUF_SIZE, &fd, &ctrunc,
				       wait_fetch ? 0 : h->spin_ns);
			pthread_mutex_lock(&h->lock);
			if (n == -EINTR || n == -EAGAIN) {
				if (n == -EINTR && wait_fetch && !cancelled) {
					cancelled = true;
					pthread_mutex_unlock(&h->lock);
					send_cancel(h, &hdr);
					pthread_mutex_lock(&h->lock);
				}
			} else if (n <= 0) {
				if (fd >= 0)
					close(fd);
				h->dead = true;
			} else if ((q = dispatch(h, n, fd, ctrunc)) && q != &p) {
				wake(q);
			}
		}
		h->reader = false;
		if (h->dead) {
			wake_all(h);
		} else {
			for (struct nvb_pending *q = h->pending; q; q = q->next)
				if (q->waiting && !q->done) {
					wake(q);	/* the next reader */
					break;
				}
		}
	}
	unlink_pending(h, &p);
	if (p.efd >= 0)
		close(p.efd);
	ret = p.done ? p.result : -ECONNRESET;
	pthread_mutex_unlock(&h->lock);
	pthread_cond_destroy(&p.cv);
	return ret;
}
