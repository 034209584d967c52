// SPDX-License-Identifier: MIT
/* Raw broker clients for the hostile suite: the wire framing by hand. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include "hostile.h"

int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * ms of CPU process pid has used, by its CPU clock (ns; /proc's ticks are
 * sampled), or -1: pid's own, not its children's (the broker's closers)
 */
double cpu_clock_ms(pid_t pid)
{
	struct timespec ts;
	clockid_t clk;

	if (clock_getcpuclockid(pid, &clk) || clock_gettime(clk, &ts))
		return -1;
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ms of CPU process pid has used, or -1 */
double cpu_ms_of(pid_t pid)
{
	char path[64], b[1024], *r;
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "re");
	if (!f || !fgets(b, sizeof(b), f)) {
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	r = strrchr(b, ')');
	if (!r || sscanf(r + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

int become(uid_t uid)
{
	gid_t g = (gid_t)uid;

	if (setgroups(1, &g) || setgid(g) || setuid(uid))
		return -errno;
	return 0;
}

/* before become(): an unprivileged user may not raise its hard limit */
int raise_nofile(unsigned int n)
{
	struct rlimit rl = { n, n };

	return setrlimit(RLIMIT_NOFILE, &rl) ? -errno : 0;
}

/*
 * A private nvbridged (@bin) on @sock, which NVBRIDGE_SOCKET then names
 * for rconnect(): its pid, once the socket exists (or after 5 s).
 */
pid_t start_broker_at(const char *bin, const char *sock)
{
	pid_t broker;

	setenv("NVBRIDGE_SOCKET", sock, 1);
	broker = fork();
	if (broker == 0) {
		execl(bin, bin, "--socket", sock, (char *)NULL);
		_exit(2);
	}
	for (int i = 0; i < 100 && access(sock, F_OK); i++)
		usleep(50000);
	return broker;
}

int rconnect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *path = getenv("NVBRIDGE_SOCKET");
	int one = 1, s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path ? path : "");
	/* what the library does: today's and older brokers want SCM_CREDENTIALS with HELLO */
	setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa))) {
		int e = -errno;

		close(s);
		return e;
	}
	return s;
}

int rsend(int s, uint16_t type, uint32_t cmd, uint32_t seq, const void *arg, uint32_t asz,
	  const void *data, uint32_t dlen, int fd)
{
	struct nvbridge_wire_hdr h = { .magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
				       .type = type, .cmd = cmd, .seq = seq, .arg_size = asz,
				       .data_len = dlen };
	struct iovec iov[3] = { { &h, sizeof(h) }, { (void *)arg, asz }, { (void *)data, dlen } };
	union nvb_wire_cmsg cm;
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = 3 };

	if (fd >= 0)
		nvb_wire_attach_fd(&m, &cm, fd);
	/*
	 * A datagram socket queues only net.unix.max_dgram_qlen (often 10)
	 * messages at the receiver: on a non-blocking socket, wait up to
	 * 100 ms for the broker to take them, so that an attack really
	 * sends what it says (the broker reading them is the point).
	 */
	for (int tries = 0;; tries++) {
		struct pollfd p = { s, POLLOUT, 0 };

		if (sendmsg(s, &m, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0)
			return 0;
		if (errno != EAGAIN || tries == 1 || poll(&p, 1, 100) != 1)
			return -errno;
	}
}

/* One message; *fd gets a passed fd or -1.  -ETIMEDOUT, -ECONNRESET on EOF. */
int rrecv(int s, struct nvbridge_wire_hdr *h, void *arg, size_t cap, int *fd, int timeout_ms)
{
	static __thread unsigned char buf[NVBRIDGE_WIRE_HDR_SIZE + NVBRIDGE_WIRE_ARG_MAX +
					  NVBRIDGE_WIRE_DATA_MAX];
	/* room for the credentials too: SO_PASSCRED stays on (see rconnect) */
	union { struct cmsghdr c; char b[CMSG_SPACE(4 * sizeof(int)) +
					 CMSG_SPACE(sizeof(struct ucred))]; } cm;
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			    .msg_controllen = sizeof(cm.b) };
	struct pollfd p = { s, POLLIN, 0 };
	ssize_t n;

	*fd = -1;
	if (poll(&p, 1, timeout_ms) != 1)
		return -ETIMEDOUT;
	n = recvmsg(s, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ECONNRESET;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	if ((size_t)n < sizeof(*h))
		return -EPROTO;
	memcpy(h, buf, sizeof(*h));
	if (arg && cap)
		memcpy(arg, buf + sizeof(*h), h->arg_size < cap ? h->arg_size : cap);
	return 0;
}

/* HELLO carrying fd (a pidfd of ours when fd is -1): the broker's answer, or -errno */
int rhello(int s, int fd)
{
	struct nvbridge_wire_hello hello = { .abi_version = NVBRIDGE_ABI_VERSION };
	struct nvbridge_wire_hdr h;
	int own = -1, r, evfd;

	if (fd < 0)
		fd = own = (int)syscall(SYS_pidfd_open, getpid(), 0);
	r = rsend(s, NVBRIDGE_WIRE_HELLO, 0, 0, &hello, sizeof(hello), NULL, 0, fd);
	if (own >= 0)
		close(own);
	if (r)
		return r;
	r = rrecv(s, &h, NULL, 0, &evfd, 5000);
	if (evfd >= 0)
		close(evfd);
	return r ? r : h.result;
}

/*
 * HELLO keeping the event socket open (*evfd): rhello() closes it, and a
 * closed event socket makes the broker spin on its EPOLLHUP
 * (attack_evfd_hangup), which a measure of the broker's CPU would count
 */
int rhello_keep(int s, int *evfd)
{
	struct nvbridge_wire_hello hello = { .abi_version = NVBRIDGE_ABI_VERSION };
	struct nvbridge_wire_hdr h;
	int pfd = (int)syscall(SYS_pidfd_open, getpid(), 0), r;

	*evfd = -1;
	r = rsend(s, NVBRIDGE_WIRE_HELLO, 0, 0, &hello, sizeof(hello), NULL, 0, pfd);
	if (pfd >= 0)
		close(pfd);
	if (r || (r = rrecv(s, &h, NULL, 0, evfd, 5000)))
		return r;
	return h.result ? h.result : *evfd < 0 ? -EPROTO : 0;
}

int rfetch_req(int s, uint32_t seq, const char *name, uint32_t flags, int64_t timeout_ns)
{
	struct nvbridge_fetch f = { .size = sizeof(f), .flags = flags, .timeout_ns = timeout_ns };

	snprintf(f.name, sizeof(f.name), "%s", name);
	return rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_FETCH, seq, &f, sizeof(f), NULL, 0, -1);
}

int rwatch(int s, uint32_t seq, const char *name, uint32_t flags)
{
	struct nvbridge_watch w = { .size = sizeof(w), .flags = flags };

	snprintf(w.name, sizeof(w.name), "%s", name);
	return rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_WATCH, seq, &w, sizeof(w), NULL, 0, -1);
}

int rpublish(int s, uint32_t seq, const char *name, int fd, uint32_t access)
{
	struct nvbridge_publish p = { .size = sizeof(p), .fd = fd >= 0 ? fd : NVBRIDGE_NO_FD,
				      .access = access };

	snprintf(p.name, sizeof(p.name), "%s", name);
	return rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_PUBLISH, seq, &p, sizeof(p), NULL, 0, fd);
}

/*
 * A PUBLISH carrying fd, refused (bad access) before the file is looked at,
 * so the broker only closes it: 0 once answered so.
 */
int rpublish_refused(int s, uint32_t seq, const char *name, int fd)
{
	struct nvbridge_publish p = { .size = sizeof(p), .fd = fd, .access = 0xffff };
	struct nvbridge_wire_hdr h;
	int rfd;

	snprintf(p.name, sizeof(p.name), "%s", name);
	return rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_PUBLISH, seq, &p, sizeof(p), NULL, 0,
		     fd) || rrecv(s, &h, NULL, 0, &rfd, 5000) || h.result != -EINVAL ? -1 : 0;
}

/* uid u opens file and sends it n times on refused PUBLISHes: 'k' on ready, then waits to be killed */
pid_t rfile_sender(uid_t u, const char *file, int n, int ready)
{
	pid_t p = fork();

	if (p == 0) {
		int s, fd, ok = 1;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (become(u) || (fd = open(file, O_RDWR | O_CLOEXEC)) < 0 ||
		    (s = rconnect()) < 0 || rhello(s, -1))
			_exit(1);
		for (int i = 0; i < n && ok; i++)
			ok = !rpublish_refused(s, (uint32_t)i + 1, "refused.file", fd);
		ready_and_wait(ready, ok);
	}
	return p;
}

/* in a child: 'k' (ok) or 'n' on the pipe ready, then waits to be killed */
void ready_and_wait(int ready, bool ok)
{
	char c = ok ? 'k' : 'n';

	if (write(ready, &c, 1) != 1)
		_exit(1);
	pause();
	_exit(0);
}

/* a process of uid u holding one connection: 'k' on ready once HELLO is answered */
pid_t rholder(uid_t u, int ready)
{
	pid_t p = fork();

	if (p == 0) {
		int s;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (become(u) || (s = rconnect()) < 0 || rhello(s, -1))
			_exit(1);
		ready_and_wait(ready, true);
	}
	return p;
}

int rready(int rd)
{
	char c = 0;

	return read(rd, &c, 1) == 1 && c == 'k' ? 0 : -1;
}

/*
 * A process of uid u that publishes n entries (access OWNER, no file):
 * names[i], or "p<u>.<i>" where names is NULL; 'k' on ready once all
 * are in ('n' if not), then waits to be killed.
 */
pid_t rpublisher(uid_t u, char (*names)[24], int n, int ready)
{
	pid_t p = fork();

	if (p == 0) {
		struct nvbridge_wire_hdr h;
		int s, fd, i;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (become(u) || (s = rconnect()) < 0 || rhello(s, -1))
			_exit(1);
		for (i = 0; i < n; i++) {
			char own[24];

			snprintf(own, sizeof(own), "p%u.%d", (unsigned int)u, i);
			if (rpublish(s, (uint32_t)i + 1, names ? names[i] : own, -1,
				     NVBRIDGE_ACCESS_OWNER) ||
			    rrecv(s, &h, NULL, 0, &fd, 30000) || h.result)
				break;
		}
		ready_and_wait(ready, i == n);
	}
	return p;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * A process of uid u on one connection runs round(s) n times (n <= 1000):
 * the median of the ms each returned, or -1 when one failed (returned < 0).
 */
double median_round_ms(uid_t u, double (*round)(int s), int n)
{
	int p[2], st;
	double med = -1;
	pid_t c;

	if (n < 1 || n > 1000 || pipe(p))
		return -1;
	c = fork();
	if (c == 0) {
		static double t[1000];
		int s;

		if (become(u) || (s = rconnect()) < 0 || rhello(s, -1))
			_exit(1);
		for (int r = 0; r < n; r++)
			if ((t[r] = round(s)) < 0)
				_exit(2);
		qsort(t, (size_t)n, sizeof(t[0]), cmp_double);
		if (write(p[1], &t[n / 2], sizeof(double)) != sizeof(double))
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	if (c < 0 || read(p[0], &med, sizeof(med)) != sizeof(med))
		med = -1;
	close(p[0]);
	if (c > 0)
		waitpid(c, &st, 0);
	return med;
}

/*
 * UID_HONEST, in a process of its own: rounds of connect, publish a memfd,
 * hang up; the last round's ms, or -1 when they did not end within wait_ms.
 */
double rhonest_ms(int rounds, int wait_ms)
{
	int p[2];
	double ms = -1;
	struct pollfd pf;
	pid_t c;

	if (pipe(p))
		return -1;
	c = fork();
	if (c == 0) {
		double r = -1;

		close(p[0]);
		if (become(UID_HONEST))
			_exit(1);
		for (int round = 0; round < rounds; round++) {
			int64_t t0 = now_ns();
			int s = rconnect(), fd = memfd_create("honest", MFD_CLOEXEC), rfd;
			struct nvbridge_wire_hdr h;

			if (s < 0 || fd < 0 || write(fd, "honest", 6) != 6 || rhello(s, -1) ||
			    rpublish(s, 1, "honest.job", fd, NVBRIDGE_ACCESS_SCOPE) ||
			    rrecv(s, &h, NULL, 0, &rfd, 3000) || h.result)
				_exit(2);
			close(s);	/* the broker closes the memfd: charged to this uid */
			close(fd);
			r = (double)(now_ns() - t0) / 1e6;
		}
		_exit(write(p[1], &r, sizeof(r)) == sizeof(r) ? 0 : 3);
	}
	close(p[1]);
	pf.fd = p[0];
	pf.events = POLLIN;
	if (poll(&pf, 1, wait_ms) != 1 || read(p[0], &ms, sizeof(ms)) != sizeof(ms))
		ms = -1;
	close(p[0]);
	kill(c, SIGKILL);
	waitpid(c, NULL, 0);
	return ms;
}

/* the parent pid of pid, or -1 */
pid_t ppid_of(pid_t pid)
{
	char p[64], b[512], *r;
	FILE *f;
	int pp = -1;

	snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
	f = fopen(p, "re");
	if (!f)
		return -1;
	r = fgets(b, sizeof(b), f) ? strrchr(b, ')') : NULL;
	if (!r || sscanf(r + 2, "%*c %d", &pp) != 1)
		pp = -1;
	fclose(f);
	return pp;
}

/*
 * Waits up to wait_ms for the FUSE file's first FLUSH and says who sent it
 * (after what): 1 when a child of broker (a closer) did, 0 when nobody
 * did or the broker's own process (its loop) did.
 */
int flushed_by_closer(const struct fuse_hang_seen *seen, pid_t broker, int wait_ms)
{
	int64_t t0 = now_ns();
	pid_t f;

	while (!seen->flushes && now_ns() - t0 < (int64_t)wait_ms * 1000000)
		usleep(10000);
	if (!seen->flushes) {
		printf("NOT FLUSHed within %d ms\n", wait_ms);
		return 0;
	}
	f = seen->flush_pid;
	printf("FLUSHed after %.0f ms by pid %d, %s\n", (double)(now_ns() - t0) / 1e6, (int)f,
	       f == broker ? "the broker's own process (its loop)" :
	       ppid_of(f) == broker ? "a closer (a child of the broker)" :
				      "not a child of the broker");
	return f != broker && ppid_of(f) == broker;
}

/* an attack's end: every FLUSH returns (the FUSE server dies), then its processes go */
int attack_end(struct fuse_scene *sc, pid_t att, pid_t broker, int rc)
{
	fuse_scene_end(sc);
	if (att > 0)
		kill(att, SIGKILL), waitpid(att, NULL, 0);
	if (broker > 0)
		kill(broker, SIGTERM), waitpid(broker, NULL, 0);
	return rc;
}
