// SPDX-License-Identifier: MIT
/*
 * hostile case many_entries: what a disconnect or an INFO costs the
 * broker's loop must not grow with the entries of others.
 *
 * Revoking an entry used to walk its scope's list (and its name bucket)
 * from the head to unlink it, and a disconnect walked the whole scope to
 * find the connection's entries: a publisher of k entries leaving a scope
 * of n cost the loop k x n / 2 steps.  DE_UIDS uids (a rootless
 * container's subuids would do: entries are bounded per uid) publish
 * DE_ENTRIES entries each, blob-less, and all hang up at once: the loop
 * sat over 6 s at 100% for 100 x 1024 (measured), serving no one.
 * Checked: an honest round right after the hang-ups is served within
 * DE_MS, and the broker uses less than DE_CPU_MS of CPU in that second.
 *
 * Before that, with the entries in place: INFO's count of what the caller
 * may fetch used to walk the scope (1 ms of the loop per INFO here).
 * Checked: DE_INFOS INFOs from another uid cost the broker less than
 * DE_CPU_MS.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include "hostile.h"

#define DE_UIDS 100
#define DE_ENTRIES 1024		/* --max-entries-per-user's default */
#define DE_MS 500.0
#define DE_CPU_MS 400.0
#define DE_INFOS 1000

/* DE_INFOS INFOs, one at a time, as UID_HONEST: 0 when all were answered */
static int infos(void)
{
	pid_t p = fork();
	int st;

	if (p == 0) {
		struct nvbridge_info i = { .size = sizeof(i) };
		struct nvbridge_wire_hdr h;
		int s, fd;

		if (become(UID_HONEST) || (s = rconnect()) < 0 || rhello(s, -1))
			_exit(1);
		for (int k = 0; k < DE_INFOS; k++)
			if (rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_INFO, 1, &i, sizeof(i), NULL, 0,
				  -1) || rrecv(s, &h, &i, sizeof(i), &fd, 3000) || h.result)
				_exit(2);
		_exit(0);
	}
	return p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

/*
 * One uid's publisher of DE_ENTRIES blob-less entries, access OWNER, or
 * UID naming puids[i] when puids is given: 'k' on the pipe once they are
 * in, then waits to be killed.
 */
void entries_publisher(uid_t u, int ready, const char *prefix, const uint32_t *puids)
{
	struct nvbridge_wire_hdr h;
	int s, fd, n = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (become(u) || (s = rconnect()) < 0 || rhello(s, -1))
		_exit(1);
	for (int i = 0; i < DE_ENTRIES; i++) {
		struct nvbridge_publish p = { .size = sizeof(p), .fd = NVBRIDGE_NO_FD,
					      .access = NVBRIDGE_ACCESS_OWNER };

		if (puids) {
			p.access = NVBRIDGE_ACCESS_UID;
			p.uid = puids[i];
		}
		snprintf(p.name, sizeof(p.name), "%s.%u.%d", prefix, u, i);
		if (rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_PUBLISH, (uint32_t)i + 1, &p,
			  sizeof(p), NULL, 0, -1) || rrecv(s, &h, NULL, 0, &fd, 10000) || h.result)
			break;
		n++;
	}
	ready_and_wait(ready, n == DE_ENTRIES);
}

/*
 * SIGKILLs the n processes kids (each holding a connection and its
 * entries) and reaps them, then: an honest round must be served within
 * ms_bound and the broker use less than cpu_bound ms of CPU in the next
 * second.  0 if so.
 */
int hang_up_all(const pid_t *kids, int n, double ms_bound, double cpu_bound)
{
	double c0 = broker_cpu_ms(), c1, ms;

	for (int u = 0; u < n; u++)
		kill(kids[u], SIGKILL);
	for (int u = 0; u < n; u++)
		waitpid(kids[u], NULL, 0);
	ms = honest_once();
	usleep(1000000);
	c1 = broker_cpu_ms();
	printf("    after they all hang up: honest round %s%.1f ms (bound %.0f), broker CPU %.0f ms "
	       "in the next second (bound %.0f)\n", ms < 0 ? "NOT SERVED within 3 s, " : "", ms,
	       ms_bound, c1 - c0, cpu_bound);
	return ms < 0 || ms > ms_bound || c1 - c0 > cpu_bound;
}

int t_many_entries(void)
{
	pid_t kids[DE_UIDS];
	int p[2], ok = 1, got = 0;
	double c0, c1;

	if (pipe(p))
		return 1;
	for (int u = 0; u < DE_UIDS; u++) {
		char c = 0;

		kids[u] = fork();
		if (kids[u] == 0)
			entries_publisher(UID_MANY + 3000 + (uid_t)u, p[1], "de", NULL);
		if (kids[u] < 0 || read(p[0], &c, 1) != 1)
			break;
		got += c == 'k';
	}
	printf("    %d uids hold %d entries each\n", got, DE_ENTRIES);
	if (got != DE_UIDS) {
		printf("    the publishers did not all run\n");
		ok = 0;
	}
	c0 = broker_cpu_ms();
	if (infos())
		ok = 0;
	c1 = broker_cpu_ms();
	printf("    %d INFOs from uid %d: broker CPU %.0f ms (bound %.0f)\n", DE_INFOS, UID_HONEST,
	       c1 - c0, DE_CPU_MS);
	if (c1 - c0 > DE_CPU_MS)
		ok = 0;
	if (hang_up_all(kids, DE_UIDS, DE_MS, DE_CPU_MS))
		ok = 0;
	return ok ? 0 : 1;
}
