// SPDX-License-Identifier: MIT
/*
 * Attack: INFO and LIST from a client holding NGROUPS_MAX (65,536) gids,
 * which anyone may hold in a user namespace of their own.
 *
 * The broker counted what a caller may see with two counter lookups per
 * gid it holds (INFO), LIST began with one lookup per gid and an array as
 * long, and may_use() scanned the gids for each entry: the cost of a
 * request grew with the caller's groups, and the broker's one loop, which
 * serves every other client, paid it.  A scope with a few entries of GID
 * access (three gids); then, for NREQ INFO + LIST pairs each (or
 * BLOCK_NS), the broker's CPU a pair for a client with 3 gids (those of
 * the entries: both see the same entries) and for one with NGROUPS_MAX,
 * the least of BLOCKS alternating blocks each, in this run, and an honest uid's INFO + LIST round (median of ROUNDS)
 * beside a client repeating its pairs, with 3 gids and with NGROUPS_MAX
 * (the same load on this machine but for the broker's cost).  The attack
 * worked when the many-gid client's pairs cost the broker more than
 * CPU_RATIO times the 3-gid client's, or the honest round grew more than
 * SLOW_FACTOR-fold (and by SLOW_MS_MIN).
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
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include "hostile.h"

#define NREQ 3000
#define BLOCK_NS 3000000000LL
#define ROUNDS 200
#define BLOCKS 3
#define CPU_RATIO 4.0
#define SLOW_FACTOR 5.0
#define SLOW_MS_MIN 0.3
#define GID_BASE 200000u
#define UID_ONE (UID_MANY + 7400)
#define UID_GIDS (UID_MANY + 7401)

/* the gids of the GID entries (gid_publisher()), which every client here holds */
static const gid_t entry_gids[3] = { GID_BASE, GID_BASE + 1000, GID_BASE + 60000 };

/*
 * uid u with gids GID_BASE.. (NGROUPS_MAX of them), or entry_gids only:
 * both see the same entries (a listed entry costs the broker its own work)
 */
static int become_gids(uid_t u, bool many)
{
	long n = many ? sysconf(_SC_NGROUPS_MAX) : 3;
	gid_t *g = malloc(sizeof(*g) * (size_t)(n > 3 ? n : 3));
	int r;

	if (!g || n < 3)
		return -ENOMEM;
	memcpy(g, entry_gids, sizeof(entry_gids));
	for (long i = 0; many && i < n; i++)
		g[i] = GID_BASE + (gid_t)i;
	r = setgroups((size_t)n, g) || setgid((gid_t)u) || setuid(u) ? -errno : 0;
	free(g);
	return r;
}

/* one INFO and one LIST from 0, answered: 0 or -1 */
static int pair(int s)
{
	struct nvbridge_info i = { .size = sizeof(i) };
	struct nvbridge_list l = { .size = sizeof(l), .count = 64,
				   .entry_size = sizeof(struct nvbridge_entry_info),
				   .entries = 0x1000 };
	struct nvbridge_wire_hdr h;
	int fd;

	if (rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_INFO, 1, &i, sizeof(i), NULL, 0, -1) ||
	    rrecv(s, &h, NULL, 0, &fd, 10000) || h.result ||
	    rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_LIST, 2, &l, sizeof(l), NULL, 0, -1) ||
	    rrecv(s, &h, NULL, 0, &fd, 10000) || h.result < 1)
		return -1;
	return 0;
}

/*
 * the broker's CPU, ms, by its CPU clock (ns; /proc/PID/stat's ticks
 * are sampled: 70 to 330 ms for the same 3,000 pairs here), or -1
 */
static double broker_ms(pid_t broker)
{
	struct timespec ts;
	clockid_t clk;

	if (clock_getcpuclockid(broker, &clk) || clock_gettime(clk, &ts))
		return -1;
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* the broker's CPU (ms) a pair from uid u costs: up to NREQ pairs or BLOCK_NS; -1: failed */
static double cost(pid_t broker, uid_t u, bool many)
{
	pid_t p;
	int ready[2], go[2], st, k = -1;
	double c0 = -1, c1;
	char c;

	if (pipe(ready) || pipe(go))
		return -1;
	p = fork();
	if (p == 0) {
		int s = -1, evfd;
		bool ok = !become_gids(u, many) && (s = rconnect()) >= 0 && !rhello_keep(s, &evfd);
		int64_t t0;

		c = ok;
		if (write(ready[1], &c, 1) != 1 || !ok || read(go[0], &c, 1) != 1)
			_exit(1);
		t0 = now_ns();
		for (k = 0; k < NREQ && now_ns() - t0 < BLOCK_NS; k++)
			if (pair(s))
				_exit(2);
		_exit(write(ready[1], &k, sizeof(k)) == sizeof(k) ? 0 : 1);
	}
	if (p > 0 && read(ready[0], &c, 1) == 1 && c) {
		c0 = broker_ms(broker);		/* connected: its gids are read */
		if (write(go[1], &c, 1) != 1 || read(ready[0], &k, sizeof(k)) != sizeof(k))
			c0 = -1;
	}
	close(go[1]);
	if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) || c0 < 0 ||
	    k < 1)
		c0 = -1;
	c1 = broker_ms(broker);
	close(ready[0]), close(ready[1]), close(go[0]);
	printf("  uid %u, %s: %d INFO + LIST, broker CPU %.1f ms\n", (unsigned int)u,
	       many ? "NGROUPS_MAX gids" : "3 gids", k, c1 - c0);
	return c0 < 0 ? -1 : (c1 - c0) / k;
}

/* a client repeating pairs until killed */
static pid_t flooder(uid_t u, bool many, int rd)
{
	pid_t p = fork();

	if (p == 0) {
		int s = -1, evfd;
		bool ok;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		ok = !become_gids(u, many) && (s = rconnect()) >= 0 && !rhello_keep(s, &evfd);
		if (write(rd, ok ? "k" : "n", 1) != 1 || !ok)
			_exit(1);
		while (!pair(s))
			;
		_exit(1);
	}
	return p;
}

/* UID_HONEST's INFO + LIST, ms */
static double honest_round(int s)
{
	int64_t t0 = now_ns();

	return pair(s) ? -1 : (double)(now_ns() - t0) / 1e6;
}

/* UID_HONEST + 1 publishes three GID entries (gids the many-gid clients hold) */
static pid_t gid_publisher(int rd)
{
	pid_t p = fork();

	if (p == 0) {
		struct nvbridge_wire_hdr h;
		int s = -1, fd, evfd;
		bool ok;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		ok = !become(UID_HONEST + 1) && (s = rconnect()) >= 0 && !rhello_keep(s, &evfd);
		for (int i = 0; ok && i < 4; i++) {
			struct nvbridge_publish pb = { .size = sizeof(pb), .fd = NVBRIDGE_NO_FD };

			snprintf(pb.name, sizeof(pb.name), "gids.%d", i);
			pb.access = i < 3 ? NVBRIDGE_ACCESS_GID : NVBRIDGE_ACCESS_SCOPE;
			pb.gid = i < 3 ? entry_gids[i] : 0;
			ok = !rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_PUBLISH, 1, &pb,
				    sizeof(pb), NULL, 0, -1) &&
			     !rrecv(s, &h, NULL, 0, &fd, 10000) && !h.result;
		}
		ready_and_wait(rd, ok);
	}
	return p;
}

/* the honest round's median beside a client of uid u repeating pairs: ms, or -1 */
static double beside(uid_t u, bool many, const int *rd)
{
	pid_t f = flooder(u, many, rd[1]);
	double m = -1;

	if (f > 0 && !rready(rd[0]))
		m = median_round_ms(UID_HONEST, honest_round, ROUNDS);
	if (f > 0)
		kill(f, SIGKILL), waitpid(f, NULL, 0);
	return m;
}

int main(int argc, char **argv)
{
	pid_t pub = -1, broker;
	int p[2], rc = 2;
	double one, many, base, during;
	char sock[64];

	if (argc < 2 || pipe(p))
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(sock, sizeof(sock), "/tmp/nvb-manygids.%d.sock", getpid());
	unlink(sock);
	broker = start_broker_at(argv[1], sock);
	if (broker <= 0)
		return 2;
	pub = gid_publisher(p[1]);
	if (rready(p[0])) {
		printf("  setup failed: the publisher\n");
		goto out;
	}
	/* the least of BLOCKS alternating blocks each: the machine's load shifts both */
	one = many = 1e9;
	for (int b = 0; b < BLOCKS; b++) {
		double o = cost(broker, UID_ONE, false), m = cost(broker, UID_GIDS, true);

		if (o < 0 || m < 0) {
			one = many = -1;
			break;
		}
		one = o < one ? o : one;
		many = m < many ? m : many;
	}
	base = beside(UID_ONE + 10, false, p);
	during = beside(UID_GIDS + 10, true, p);
	if (one < 0 || many < 0 || base < 0 || during < 0) {
		printf("  setup failed (cpu %.3f %.3f ms, rounds %.3f %.3f ms)\n", one, many, base,
		       during);
		goto out;
	}
	printf("  broker CPU an INFO + LIST: %.1f us with 3 gids, %.1f us with %ld gids (%.1fx; "
	       "bound %.1fx)\n", one * 1e3, many * 1e3, sysconf(_SC_NGROUPS_MAX), many / one,
	       CPU_RATIO);
	printf("  honest INFO + LIST, median of %d: %.3f ms beside a 3-gid client, %.3f ms "
	       "beside a %ld-gid one (%.1fx; bound %.1fx)\n", ROUNDS, base, during,
	       sysconf(_SC_NGROUPS_MAX), during / base, SLOW_FACTOR);
	rc = many > CPU_RATIO * one ||
	     (during > SLOW_FACTOR * base && during - base > SLOW_MS_MIN) ? 0 : 1;
out:
	if (pub > 0)
		kill(pub, SIGKILL), waitpid(pub, NULL, 0);
	kill(broker, SIGKILL);
	waitpid(broker, NULL, 0);
	unlink(sock);
	return rc;
}
