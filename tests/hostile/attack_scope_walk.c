// SPDX-License-Identifier: MIT
/*
 * Attack: requests that make nvbridged walk every entry of the scope.
 *
 * UNPUBLISH by id looked the id up by walking the scope's list from its
 * head, and LIST walked it from the head to the cursor and then through
 * every entry the caller may not see.  ENT_UIDS uids (a rootless
 * container's subuids would do: entries are bounded per uid) publish
 * their 1024 entries each, access OWNER; then one more uid, which sees
 * none of them, sends NREQ UNPUBLISHes of an id past the last and NREQ
 * LISTs, each a cheap request.  Measured: the broker's CPU for those
 * requests, and an honest uid's LIST of its own entry and UNPUBLISH of it
 * by id (median of ROUNDS), with and without the entries.  The attack
 * worked when the requests cost the broker more than CPU_US each, or the
 * honest round grew more than SLOW_FACTOR-fold (and by SLOW_MS_MIN).
 *
 * Runs as root (becomes uids) against the broker named in argv[1].
 * Exit 0: the attack worked (a hole); 1: it did not; 2: setup failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include "hostile.h"

#define ENT_UIDS 100
#define PER_UID 1024		/* --max-entries-per-user's default */
#define NREQ 1000
#define ROUNDS 200
#define CPU_US 300.0
#define SLOW_FACTOR 5.0
#define SLOW_MS_MIN 0.3
#define UID_ENT (UID_MANY + 7300)
#define LIST_CAP 64

/* a LIST request from cursor, room for LIST_CAP records (never read: the reply carries them) */
static int rlist(int s, uint32_t seq, uint64_t cursor)
{
	struct nvbridge_list l = { .size = sizeof(l), .cursor = cursor, .count = LIST_CAP,
				   .entry_size = sizeof(struct nvbridge_entry_info),
				   .entries = 0x1000 };

	return rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_LIST, seq, &l, sizeof(l), NULL, 0, -1);
}

static int runpublish_id(int s, uint32_t seq, uint64_t id)
{
	struct nvbridge_unpublish u = { .size = sizeof(u), .id = id };

	return rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_UNPUBLISH, seq, &u, sizeof(u), NULL, 0,
		     -1);
}

/* UID_ATTACK: NREQ of each, one at a time; 0 when every answer came as expected */
static int requests(void)
{
	pid_t p = fork();
	int st;

	if (p == 0) {
		struct nvbridge_wire_hdr h;
		int s, fd;

		if (become(UID_ATTACK) || (s = rconnect()) < 0 || rhello(s, -1))
			_exit(1);
		for (int k = 0; k < NREQ; k++)
			if (runpublish_id(s, 1, (uint64_t)ENT_UIDS * PER_UID * 2) ||
			    rrecv(s, &h, NULL, 0, &fd, 10000) || h.result != -ENOENT ||
			    rlist(s, 2, 0) || rrecv(s, &h, NULL, 0, &fd, 10000) || h.result != 0)
				_exit(2);
		_exit(0);
	}
	return p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

/*
 * UID_HONEST publishes one entry, then (timed) LISTs from 0 (one record:
 * its own) and UNPUBLISHes it by the id LIST gave: ms, or -1
 */
static double honest_round(int s)
{
	struct nvbridge_list a;
	struct nvbridge_wire_hdr h;
	int64_t t0;
	int fd;

	if (rpublish(s, 1, "honest.list", -1, NVBRIDGE_ACCESS_OWNER) ||
	    rrecv(s, &h, NULL, 0, &fd, 10000) || h.result)
		return -1;
	t0 = now_ns();
	if (rlist(s, 2, 0) || rrecv(s, &h, &a, sizeof(a), &fd, 10000) || h.result != 1 ||
	    a.cursor == 0 || runpublish_id(s, 3, a.cursor) || rrecv(s, &h, NULL, 0, &fd, 10000) ||
	    h.result)
		return -1;
	return (double)(now_ns() - t0) / 1e6;
}

int main(int argc, char **argv)
{
	pid_t kids[ENT_UIDS], broker;
	int nk = 0, p[2], got = 0, worked, rc = 2;
	double base, during, c0, c1, per;
	char sock[64];

	if (argc < 2 || pipe(p))
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(sock, sizeof(sock), "/tmp/nvb-scopewalk.%d.sock", getpid());
	unlink(sock);
	broker = start_broker_at(argv[1], sock);
	if (broker <= 0)
		return 2;
	base = median_round_ms(UID_HONEST, honest_round, ROUNDS);
	for (int u = 0; u < ENT_UIDS; u++) {
		kids[nk++] = rpublisher(UID_ENT + (uid_t)u, NULL, PER_UID, p[1]);
		got += !rready(p[0]);
	}
	if (got != ENT_UIDS || base < 0) {
		printf("  setup failed (%d of %d publishers)\n", got, ENT_UIDS);
		goto out;
	}
	c0 = cpu_ms_of(broker);
	if (requests()) {
		printf("  the requests were not answered as expected\n");
		goto out;
	}
	c1 = cpu_ms_of(broker);
	during = median_round_ms(UID_HONEST, honest_round, ROUNDS);
	if (during < 0)
		goto out;
	per = (c1 - c0) * 1000.0 / (2 * NREQ);
	printf("  %d uids x %d entries; %d UNPUBLISH by id + %d LIST from a uid that sees none: "
	       "broker CPU %.0f ms, %.1f us a request (bound %.0f)\n", ENT_UIDS, PER_UID, NREQ,
	       NREQ, c1 - c0, per, CPU_US);
	printf("  honest LIST + UNPUBLISH by id, median of %d: %.3f ms in an empty scope, %.3f ms "
	       "beside the entries (%.1fx; bound %.1fx)\n", ROUNDS, base, during, during / base,
	       SLOW_FACTOR);
	worked = per > CPU_US || (during > SLOW_FACTOR * base && during - base > SLOW_MS_MIN);
	rc = worked ? 0 : 1;
out:
	for (int i = 0; i < nk; i++)
		kill(kids[i], SIGKILL), waitpid(kids[i], NULL, 0);
	kill(broker, SIGKILL);
	waitpid(broker, NULL, 0);
	unlink(sock);
	return rc;
}
