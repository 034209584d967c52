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
		if (rpublish_refused(s, 1, "closer.reserve", pp[1]))
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
	struct fuse_scene sc;
	pid_t kids[ATT_TENANTS], broker;
	int nk = 0, p[2], got = 0, rc = 2;
	double before, during;

	if (argc < 2 || pipe(p))
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	rc = fuse_scene_start(&sc);
	if (rc)
		return rc;
	rc = 2;
	broker = start_broker_at(argv[1], sc.sock);
	before = honest_close_ms();
	for (int u = 0; u < ATT_TENANTS; u++) {
		kids[nk++] = rfile_sender(UID_TEN + (uid_t)u, sc.file, PER_TENANT, p[1]);
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
	fuse_scene_end(&sc);	/* every FLUSH returns: the closers and the kids can end */
	for (int i = 0; i < nk; i++)
		kill(kids[i], SIGKILL), waitpid(kids[i], NULL, 0);
	kill(broker, SIGTERM);
	waitpid(broker, NULL, 0);
	return rc;
}
