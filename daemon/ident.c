// SPDX-License-Identifier: MIT
/*
 * nvbridged: who a peer is.  Everything here is decided once, in
 * accept_client(), from what the kernel captured at connect() and from the
 * connecting process itself, and never read again:
 *
 *   - euid, egid, pid: SO_PEERCRED (the kernel's copy of the connecting
 *     task's credentials at connect()).
 *   - supplementary groups: SO_PEERGROUPS (the same credentials).
 *   - the process: SO_PEERPIDFD, the kernel's pidfd of the connecting
 *     process (Linux 6.5+; older kernels: pidfd_open(SO_PEERCRED pid),
 *     checked below).  Its fdinfo gives the pid in every pid namespace
 *     (NSpid), from our own /proc/self/fdinfo, not from the peer's /proc.
 *   - scope (IPC namespace), user namespace id maps, pid namespaces: read
 *     from /proc/<pid>, then the pidfd is checked to be still alive: a live
 *     pidfd means /proc/<pid> was that process, not a reuse of its number.
 *   - the policy override (every access policy admits the peer): only a
 *     peer whose SO_PEERCRED euid is 0 in our user namespace.  No
 *     capability is read: a capability read after connect() is what a
 *     setuid exec racing HELLO used to change (issue 11).
 *
 * A peer that unshare()s or setns()es between connect() and our reads can
 * only pick namespaces it is already allowed into.  The client's HELLO
 * may still carry a pidfd (older libraries send one); it is ignored.
 */
#include "nvbridged.h"
#include <fcntl.h>
#include <poll.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

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
uint32_t map_to(const struct idmap *m, uint32_t id, uint32_t over)
{
	for (uint32_t i = 0; i < m->n; i++)
		if (id >= m->e[i].out && id - m->e[i].out < m->e[i].count)
			return m->e[i].in + (id - m->e[i].out);
	return over;
}

/* id inside the client's user ns -> our id; -1 when unmapped */
int64_t map_from(const struct idmap *m, uint32_t id)
{
	if (id == (uint32_t)-1)
		return -1;
	for (uint32_t i = 0; i < m->n; i++)
		if (id >= m->e[i].in && id - m->e[i].in < m->e[i].count)
			return (int64_t)m->e[i].out + (id - m->e[i].in);
	return -1;
}

/*
 * Has the publisher's process not yet been reaped?  The module reports pid
 * 0 once the publishing thread group is gone, because the number may be
 * reused.  The pidfd sits in the epoll set and marks the client exited
 * when it becomes readable; from then on pidfd_send_signal(sig 0) answers
 * whether it is reaped: it finds a zombie and fails with -ESRCH once the
 * process is reaped.  Cached for the message being handled, so that a LIST
 * or a burst of events costs one syscall per exited publisher.
 */
bool pub_alive(struct client *pub)
{
	long r;

	if (pub->reaped)
		return false;
	/* until its pidfd reported the exit (main.c), it is alive: no syscall per message */
	if (pub->pidfd < 0 || !pub->exited || pub->alive_gen == msg_gen)
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

uint32_t pid_for(const struct client *viewer, struct client *pub)
{
	ino_t ns = viewer->pidns[viewer->npidns - 1];

	for (int i = 0; i < pub->npidns; i++)
		if (pub->pidns[i] == ns)
			return pub_alive(pub) ? (uint32_t)pub->nspid[i] : 0;
	return 0;
}

/* EXITED when the process that connected is gone or exiting, else CLOSED */
uint16_t exit_reason(struct client *c)
{
	struct pollfd pfd = { .fd = c->pidfd, .events = POLLIN };
	char path[64], buf[512];
	unsigned long flags = 0;
	ssize_t n;
	int fd;

	if (c->pidfd < 0)
		return NVBRIDGE_REVOKE_CLOSED;
	if (poll(&pfd, 1, 0) > 0)
		return NVBRIDGE_REVOKE_EXITED;
	snprintf(path, sizeof(path), "/proc/%d/stat", c->pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			char *p;

			buf[n] = 0;
			p = strrchr(buf, ')');
			/* ") S ppid pgrp session tty tpgid flags" */
			if (p && sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %lu", &flags) == 1 &&
			    (flags & 0x4))	/* PF_EXITING */
				return NVBRIDGE_REVOKE_EXITED;
		}
	}
	return poll(&pfd, 1, 0) > 0 ? NVBRIDGE_REVOKE_EXITED : NVBRIDGE_REVOKE_CLOSED;
}

/* ---- at accept ---- */
/* "Pid:" and "NSpid:" of a pidfd, from our own fdinfo: -1 when it is not a live pidfd */
static int pidfd_pids(int pidfd, struct client *c)
{
	char path[64], line[512];
	FILE *f;
	int pid = -1;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
	f = fopen(path, "re");
	if (!f)
		return -1;
	c->npidns = 0;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "Pid:", 4)) {
			pid = atoi(line + 4);
		} else if (!strncmp(line, "NSpid:", 6)) {
			char *s = line + 6, *end;

			while (c->npidns < MAX_PIDNS) {
				long v = strtol(s, &end, 10);

				if (end == s)
					break;
				c->nspid[c->npidns++] = (pid_t)v;
				s = end;
			}
		}
	}
	fclose(f);
	if (c->npidns == 0 && pid > 0) {
		c->nspid[0] = pid;	/* a kernel without NSpid: our view only */
		c->npidns = 1;
	}
	return pid;
}

static int ns_ino(int procfd, const char *ns, struct stat *st)
{
	char p[32];

	snprintf(p, sizeof(p), "ns/%s", ns);
	return fstatat(procfd, p, st, 0) ? -errno : 0;
}

/* is st (a peer's ns/user) our own user namespace? */
static bool same_userns(const struct stat *st)
{
	static struct stat self;
	static bool have;

	if (!have && stat("/proc/self/ns/user", &self))
		return false;
	have = true;
	return st->st_dev == self.st_dev && st->st_ino == self.st_ino;
}

/*
 * The tenant of a peer outside our user namespace: the owner (in our ids)
 * of its outermost user namespace below ours, walked up with NS_GET_PARENT
 * from the peer's own.  Every uid a rootless container's root can become
 * shares it.  A peer whose namespace is not below ours (we run in a user
 * namespace, it does not) keeps its euid: the kernel refuses to show us the
 * parents (EPERM), and its uid is already a uid of ours or the overflow uid.
 */
static int peer_tenant(struct client *c, int procfd)
{
	struct stat st;
	int fd = openat(procfd, "ns/user", O_RDONLY | O_CLOEXEC), parent, ret = 0;

	if (fd < 0)
		return -errno;
	c->tenant_uid = c->euid;
	for (int depth = 0; depth < 33; depth++) {	/* the kernel nests at most 32 */
		uid_t owner;

		parent = ioctl(fd, NS_GET_PARENT);
		if (parent < 0) {
			ret = errno == EPERM ? 0 : -errno;
			break;
		}
		if (fstat(parent, &st)) {
			ret = -errno;
			close(parent);
			break;
		}
		if (same_userns(&st)) {
			close(parent);
			if (ioctl(fd, NS_GET_OWNER_UID, &owner))
				ret = -errno;
			else
				c->tenant_uid = owner;
			break;
		}
		close(fd);
		fd = parent;
	}
	close(fd);
	return ret;
}

static int read_namespaces(struct client *c, int procfd)
{
	struct stat st;
	int fd, ret;

	fd = openat(procfd, "ns/ipc", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	c->scope = scope_get(fd);
	if (!c->scope)
		return -ENOMEM;
	/*
	 * A peer in our own user namespace uses our ids.  Its uid_map would
	 * not say so: read by a process of the same namespace, it shows the
	 * map to the parent namespace (user_namespaces(7)), which would shift
	 * every id such a peer names when we run in a user namespace.
	 */
	ret = ns_ino(procfd, "user", &st);
	if (ret)
		return ret;
	if (same_userns(&st)) {
		c->uidmap.n = c->gidmap.n = 1;
		c->uidmap.e[0].in = c->uidmap.e[0].out = 0;
		c->uidmap.e[0].count = UINT32_MAX;
		c->gidmap.e[0] = c->uidmap.e[0];
		c->tenant_uid = c->euid;
	} else if ((ret = read_idmap(procfd, "uid_map", &c->uidmap)) ||
		   (ret = read_idmap(procfd, "gid_map", &c->gidmap)) ||
		   (ret = peer_tenant(c, procfd))) {
		return ret;
	}
	/* pid ns inos: innermost from ns/pid, then its parents */
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
	return 0;
}

static int cmp_gid(const void *a, const void *b)
{
	gid_t x = *(const gid_t *)a, y = *(const gid_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * c's supplementary gids, sorted and each once: sorted here, once per
 * connection, not per INFO and LIST (visible.c).  The kernel's list is
 * sorted, but mapped into our user namespace (unmapped gids all become
 * the overflow gid) it may not be.
 */
static int peer_groups(struct client *c, int fd)
{
	socklen_t gl = 64 * sizeof(gid_t);

	/* ERANGE tells the size needed */
	for (int tries = 0; tries < 3; tries++) {
		gid_t *g = malloc(gl ? gl : sizeof(gid_t));

		if (!g)
			return -ENOMEM;
		if (!getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &gl)) {
			int n = (int)(gl / sizeof(gid_t)), k = 0;

			qsort(g, (size_t)n, sizeof(*g), cmp_gid);
			for (int i = 0; i < n; i++)
				if (!i || g[i] != g[k - 1])
					g[k++] = g[i];
			c->groups = g;
			c->ngroups = k;
			return 0;
		}
		free(g);
		if (errno != ERANGE)
			return -errno;
	}
	return -ERANGE;
}

/* Fills c's identity from the accepted socket fd: 0 or -errno (the peer is then refused). */
int ident_at_accept(struct client *c, int fd)
{
	struct ucred cr;
	socklen_t l = sizeof(cr);
	struct pollfd pfd;
	char path[32];
	int procfd, ret, pp = -1;
	socklen_t pl = sizeof(pp);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l))
		return -errno;
	c->pid = cr.pid;
	c->euid = cr.uid;
	c->egid = cr.gid;
	c->override = cr.uid == 0;
	ret = peer_groups(c, fd);
	if (ret)
		return ret;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pp, &pl) || pp < 0)
		pp = (int)syscall(SYS_pidfd_open, cr.pid, 0);	/* pre-6.5: checked below */
	c->pidfd = pp;
	if (pp < 0)
		return -ESRCH;
	fcntl(pp, F_SETFD, FD_CLOEXEC);
	if (pidfd_pids(pp, c) != cr.pid)
		return -ESRCH;	/* gone already: its pid may name another process */
	snprintf(path, sizeof(path), "/proc/%d", c->pid);
	procfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	ret = procfd < 0 ? -errno : read_namespaces(c, procfd);
	if (procfd >= 0)
		close(procfd);
	/* still alive after the reads: /proc/<pid> was the connecting process */
	pfd.fd = pp;
	pfd.events = POLLIN;
	if (!ret && poll(&pfd, 1, 0) != 0)
		ret = -ESRCH;
	return ret;
}
