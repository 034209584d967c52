// SPDX-License-Identifier: MIT
/*
 * nvbridged: peer identity.  Same semantics as the kernel
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
#include "nvbridged.h"

/* ---- id and pid translation ---- */
int read_idmap(int procfd, const char *file, struct idmap *m)
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
 * Has the publisher's process (the one that connected; its pidfd came with
 * HELLO) not yet been reaped?  The module reports pid 0 once the publishing
 * thread group is gone (pid_has_task(TGID)), because the number may be
 * reused.  pidfd_send_signal(sig 0) answers exactly that question: it finds
 * a zombie (0, or -EPERM without CAP_KILL) and fails with -ESRCH once the
 * process is reaped.  Cached for the message being handled, so that a LIST
 * or a burst of events costs one syscall per publisher.
 */
bool pub_alive(struct client *pub)
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

uint32_t pid_for(const struct client *viewer, struct client *pub)
{
	ino_t ns = viewer->pidns[viewer->npidns - 1];

	for (int i = 0; i < pub->npidns; i++)
		if (pub->pidns[i] == ns)
			return pub_alive(pub) ? (uint32_t)pub->nspid[i] : 0;
	return 0;
}


/* ---- HELLO: who is the client ---- */
int fdinfo_pid(int fd)
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

int ns_ino(int procfd, const char *ns, struct stat *st)
{
	char p[32];

	snprintf(p, sizeof(p), "ns/%s", ns);
	return fstatat(procfd, p, st, 0) ? -errno : 0;
}

int identify(struct client *c, int procfd)
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
