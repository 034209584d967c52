// SPDX-License-Identifier: MIT
#include "nvbridged.h"

/* ---- output ---- */

void set_epoll(struct client *c)
{
	struct epoll_event ev = { .data.ptr = c };
	bool want_out = c->outq != NULL;

	ev.events = want_out ? EPOLLOUT : EPOLLIN;
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->epollout = want_out;
}

/* One message from iov[0..niov), with pass_fd attached when >= 0.  0 or -errno. */
int send_iov(int fd, struct iovec *iov, size_t niov, int pass_fd)
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

void flush_out(struct client *c)
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
void reply(struct client *c, uint32_t type, uint32_t cmd, uint32_t seq, int32_t result,
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


int make_event_socket(struct client *c, int *client_end)
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

void do_hello(struct client *c, const struct nvbridge_wire_hdr *h, const void *arg,
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
void handle_request(struct client *c, const struct nvbridge_wire_hdr *h,
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

void handle_cancel(struct client *c, const struct nvbridge_wire_hdr *h)
{
	for (struct waiter *w = c->waiters; w; w = w->next)
		if (w->seq == h->seq) {
			reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, w->seq, -EINTR,
			      NULL, 0, NULL, 0, -1);
			waiter_free(c, w);
			return;
		}
}

void client_free(struct client *c)
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

void drop_client(struct client *c, const char *fmt, ...)
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

void client_read(struct client *c)
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

unsigned int conns_of(uid_t uid)
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
void shed_connection(int err)
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

void accept_client(void)
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
