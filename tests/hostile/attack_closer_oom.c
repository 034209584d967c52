// SPDX-License-Identifier: MIT
/*
 * Attack: make memory short for nvbridged, then give it a file whose close
 * blocks.
 *
 * nvbridged closes the files clients send in closer processes
 * (daemon/closer.c).  Queueing such a close used to malloc() a request,
 * and when that failed the broker closed the file on its loop thread; a
 * FUSE file whose FLUSH the attacker never answers then stopped the broker
 * for everyone.  Under strict overcommit (vm.overcommit_memory=2) any
 * local user's own allocations can use up the commit limit and make every
 * malloc() fail.  Here an LD_PRELOAD shim (failmalloc.so, next to this
 * program) makes the broker's malloc(), calloc() and realloc() fail from
 * SIGUSR1 to SIGUSR2.
 *
 * The attacker (UID_ATTACK) connects, then, with memory short, sends the
 * FUSE file on a PUBLISH the broker refuses, keeping its own copy open.
 * Checked: the FUSE server sees the file's FLUSH from a child of the
 * broker (a closer), not from the broker's process (its loop), within
 * CLOSE_MS; and once memory is back an honest uid is served within
 * HONEST_MS.
 *
 * Runs as root (mounts FUSE, becomes uids) against the broker named in
 * argv[1].  Exit 0: the attack worked (a hole); 1: it did not; 2: setup
 * failed; 77: no FUSE here (skip).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include "hostile.h"

#define HONEST_MS 1000
#define CLOSE_MS 2000

/* UID_ATTACK: connects ('k' on ready), waits for a byte on go, sends file ('k' again) */
static pid_t attacker(const char *file, int ready, int go)
{
	pid_t p = fork();

	if (p == 0) {
		int s, fd;
		char c;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (become(UID_ATTACK) || (fd = open(file, O_RDWR | O_CLOEXEC)) < 0 ||
		    (s = rconnect()) < 0 || rhello(s, -1) || write(ready, "k", 1) != 1 ||
		    read(go, &c, 1) != 1)
			_exit(1);
		/* the refusal may not come back (no memory for it): the file was sent */
		rpublish_refused(s, 1, "closer.oom", fd);
		ready_and_wait(ready, true);
	}
	return p;
}

int main(int argc, char **argv)
{
	const struct fuse_hang_seen *seen;
	char self[PATH_MAX], shim[PATH_MAX + 32];
	struct fuse_scene sc;
	pid_t broker = -1, att = -1;
	int rp[2], gp[2], rc, worked = 0;
	ssize_t l;
	double ms;

	if (argc < 2 || pipe(rp) || pipe(gp))
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	l = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (l <= 0)
		return 2;
	self[l] = 0;
	snprintf(shim, sizeof(shim), "%s/failmalloc.so", dirname(self));
	if (access(shim, R_OK)) {
		printf("  setup: %s: %s\n", shim, strerror(errno));
		return 2;
	}
	rc = fuse_scene_start(&sc);
	if (rc)
		return rc;
	rc = 2;
	seen = fuse_hang_seen();
	setenv("LD_PRELOAD", shim, 1);
	broker = start_broker_at(argv[1], sc.sock);
	unsetenv("LD_PRELOAD");
	att = attacker(sc.file, rp[1], gp[0]);
	if (!seen || rready(rp[0])) {
		printf("  setup: the attacker could not connect\n");
		goto out;
	}
	kill(broker, SIGUSR1);	/* every malloc() of the broker fails from now */
	usleep(50000);
	if (write(gp[1], "g", 1) != 1 || rready(rp[0])) {
		printf("  setup: the attacker could not send the FUSE file\n");
		goto out;
	}
	printf("  the broker's malloc() failing, a FUSE file whose FLUSH hangs sent to it: ");
	if (!flushed_by_closer(seen, broker, CLOSE_MS))
		worked = 1;
	kill(broker, SIGUSR2);	/* memory is back */
	usleep(50000);
	ms = rhonest_ms(1, HONEST_MS);
	printf("  honest uid %d, memory back: %s%.1f ms (deadline %d)\n", UID_HONEST,
	       ms < 0 ? "NOT SERVED, " : "", ms < 0 ? (double)HONEST_MS : ms, HONEST_MS);
	if (ms < 0)
		worked = 1;
	rc = worked ? 0 : 1;
out:
	return attack_end(&sc, att, broker, rc);
}
