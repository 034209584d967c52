// SPDX-License-Identifier: MIT
/*
 * Attack: hold every closer of nvbridged with FLUSHes that never return.
 *
 * nvbridged closes the files clients send (all but memory-backed files
 * and pidfds) in closer processes (daemon/closer.c): at most 32, at most 2
 * running per tenant, so that one tenant's FUSE file whose FLUSH hangs
 * does not hold them all.  ATT_TENANTS tenants (distinct uids: a rootless
 * container's subuids are one tenant) each send a file of a FUSE file
 * system whose FLUSH is never answered, twice, on PUBLISHes the broker
 * refuses: 16 x 2 closers stuck, and nothing was left for anyone else.
 * Then an honest uid sends the write end of a pipe (not memory-backed:
 * a closer closes it) on a refused PUBLISH and closes its own copy; its
 * read end sees the hang-up once the broker's copy is closed.  The attack
 * worked when that did not come within HONEST_MS.
 *
 * Runs as root (mounts FUSE, becomes uids) against the broker named in
 * argv[1].  Exit 0: the attack worked (a hole); 1: it did not; 2: setup
 * failed; 77: no FUSE here (skip).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "hostile.h"

#define ATT_TENANTS 16
#define PER_TENANT 2		/* closer.c's CLOSING_PER_TENANT */
#define HONEST_MS 2000
#define UID_TEN (UID_MANY + 7400)

/* PUBLISH carrying fd, refused (bad access) before the file is looked at: 0 once answered */
static int refused_publish(int s, uint32_t seq, int fd)
{
	struct nvbridge_publish p = { .size = sizeof(p), .fd = fd, .access = 0xffff };
	struct nvbridge_wire_hdr h;
	int rfd;

	snprintf(p.name, sizeof(p.name), "closer.reserve");
	return rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_PUBLISH, seq, &p, sizeof(p), NULL, 0,
		     fd) || rrecv(s, &h, NULL, 0, &rfd, 5000) || h.result != -EINVAL ? -1 : 0;
}

/* uid u sends file PER_TENANT times: 'k' on ready, then waits to be killed */
static pid_t attacker(uid_t u, const char *file, int ready)
{
	pid_t p = fork();

	if (p == 0) {
		int s, fd, ok = 1;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (become(u) || (fd = open(file, O_RDWR | O_CLOEXEC)) < 0 ||
		    (s = rconnect()) < 0 || rhello(s, -1))
			_exit(1);
		for (int i = 0; i < PER_TENANT && ok; i++)
			ok = !refused_publish(s, (uint32_t)i + 1, fd);
		ready_and_wait(ready, ok);
	}
	return p;
}

/* UID_HONEST: ms until the broker closed the pipe end it was sent, or -1 (not within HONEST_MS) */
static double honest_close_ms(void)
{
	int p[2], st;
	double ms = -1;
	pid_t c;

	if (pipe(p))
		return -1;
	c = fork();
	if (c == 0) {
		int pp[2], s;
		struct pollfd pf;
		int64_t t0;

		close(p[0]);
		if (become(UID_HONEST) || pipe2(pp, O_CLOEXEC) || (s = rconnect()) < 0 ||
		    rhello(s, -1))
			_exit(1);
		t0 = now_ns();
		if (refused_publish(s, 1, pp[1]))
			_exit(2);
		close(pp[1]);
		pf = (struct pollfd){ .fd = pp[0], .events = POLLIN };
		if (poll(&pf, 1, HONEST_MS) == 1 && (pf.revents & POLLHUP))
			ms = (double)(now_ns() - t0) / 1e6;
		if (write(p[1], &ms, sizeof(ms)) != sizeof(ms))
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	if (c < 0 || read(p[0], &ms, sizeof(ms)) != sizeof(ms))
		ms = -2;
	close(p[0]);
	if (c > 0)
		waitpid(c, &st, 0);
	return ms;
}

int main(int argc, char **argv)
{
	char dir[] = "/tmp/nvb-closers.XXXXXX", mnt[160], file[170], sock[200];
	pid_t kids[ATT_TENANTS], srv, broker;
	int nk = 0, p[2], got = 0, r, rc = 2;
	double before, during;

	if (argc < 2 || !mkdtemp(dir) || chmod(dir, 0755) || pipe(p))
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(mnt, sizeof(mnt), "%s/fuse", dir);
	snprintf(file, sizeof(file), "%s/f", mnt);
	snprintf(sock, sizeof(sock), "%s/s.sock", dir);
	r = fuse_hang_start(mnt, &srv);
	if (r) {
		printf("  skip: cannot mount FUSE (%s)\n", strerror(-r));
		rmdir(mnt);
		rmdir(dir);
		return 77;
	}
	broker = start_broker_at(argv[1], sock);
	before = honest_close_ms();
	for (int u = 0; u < ATT_TENANTS; u++) {
		kids[nk++] = attacker(UID_TEN + (uid_t)u, file, p[1]);
		got += !rready(p[0]);
	}
	if (got != ATT_TENANTS || before < 0) {
		printf("  setup failed (%d of %d attackers; honest close %.1f ms)\n", got,
		       ATT_TENANTS, before);
		goto out;
	}
	usleep(300000);		/* the closers take their FLUSHes */
	during = honest_close_ms();
	printf("  %d tenants x %d FUSE files whose FLUSH hangs; an honest uid's file closed by the "
	       "broker after %.1f ms before, ", ATT_TENANTS, PER_TENANT, before);
	if (during < 0)
		printf("NOT within %d ms during\n", HONEST_MS);
	else
		printf("%.1f ms during (bound %d)\n", during, HONEST_MS);
	rc = during < 0 ? 0 : 1;
out:
	fuse_hang_stop(mnt, srv);	/* every FLUSH returns: the closers and the kids can end */
	for (int i = 0; i < nk; i++)
		kill(kids[i], SIGKILL), waitpid(kids[i], NULL, 0);
	kill(broker, SIGTERM);
	waitpid(broker, NULL, 0);
	unlink(sock);
	rmdir(mnt);
	rmdir(dir);
	return rc;
}
