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
 * SLOW_FACTOR-fold (and by SLOW_MS_MIN), or in the crowded scope (below)
 * an INFO or a LIST cost more than CROWD_RATIO times the 3-gid client's.
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

enum { REQ_INFO = 1, REQ_LIST = 2, REQ_PAIR = 3 };

/* an INFO and/or (which) a LIST from 0, answered: 0 or -1 */
static int request(int s, int which)
{
	struct nvbridge_info i = { .size = sizeof(i) };
	struct nvbridge_list l = { .size = sizeof(l), .count = 64,
				   .entry_size = sizeof(struct nvbridge_entry_info),
				   .entries = 0x1000 };
	struct nvbridge_wire_hdr h;
	int fd;

	if ((which & REQ_INFO) &&
	    (rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_INFO, 1, &i, sizeof(i), NULL, 0, -1) ||
	     rrecv(s, &h, NULL, 0, &fd, 10000) || h.result))
		return -1;
	if ((which & REQ_LIST) &&
	    (rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_LIST, 2, &l, sizeof(l), NULL, 0, -1) ||
	     rrecv(s, &h, NULL, 0, &fd, 10000) || h.result < 1))
		return -1;
	return 0;
}

static int pair(int s)
{
	return request(s, REQ_PAIR);
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

/*
 * the broker's CPU (ms) a request (which: REQ_*) from uid u costs: up to
 * NREQ of them or block_ns; -1: failed
 */
static double cost_of(pid_t broker, uid_t u, bool many, int which, int64_t block_ns)
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
		for (k = 0; k < NREQ && now_ns() - t0 < block_ns; k++)
			if (request(s, which))
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
	printf("  uid %u, %s: %d %s, broker CPU %.1f ms\n", (unsigned int)u,
	       many ? "NGROUPS_MAX gids" : "3 gids", k,
	       which == REQ_PAIR ? "INFO + LIST" : which == REQ_INFO ? "INFO" : "LIST", c1 - c0);
	return c0 < 0 ? -1 : (c1 - c0) / k;
}

static double cost(pid_t broker, uid_t u, bool many)
{
	return cost_of(broker, u, many, REQ_PAIR, BLOCK_NS);
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

/*
 * The crowded scope: CROWD_UIDS uids (a container's subuid range would
 * do) publish CROWD_PER entries of GID access each, each naming another
 * gid from GID_BASE, which the NGROUPS_MAX client holds: as many GACL
 * counters as it has gids.  An INFO there cost the broker 19 ms and a
 * LIST 49 ms (a lookup per gid, every cursor scanned per record), 913x
 * and 1,413x the 3-gid client's; the in-order walk of the gids beside
 * the counters (daemon/vorder.c) and LIST's heap, 0.6-0.8 ms and
 * 0.7-1.5 ms (31-240x), linear in the 65,536 that it sees.
 */
#define CROWD_UIDS 64
#define CROWD_PER 1024
#define CROWD_UID0 (UID_MANY + 7500)
#define CROWD_NS 1000000000LL
/*
 * the 3-gid client's request costs the broker 6-24 us (6 since the
 * EPOLLHUP spin went), the walk's 0.6-1.5 ms on a loaded host: 30-240x;
 * the old 19 and 49 ms are 3,000x and 8,000x of 6 us
 */
#define CROWD_RATIO 1000.0

static pid_t crowd_publisher(int k, int rd)
{
	pid_t p = fork();

	if (p == 0) {
		struct nvbridge_wire_hdr h;
		int s = -1, fd, i = 0, evfd;
		bool ok;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		ok = !become(CROWD_UID0 + (uid_t)k) && (s = rconnect()) >= 0 && !rhello_keep(s, &evfd);
		for (; ok && i < CROWD_PER; i++) {
			struct nvbridge_publish pb = { .size = sizeof(pb), .fd = NVBRIDGE_NO_FD,
						       .access = NVBRIDGE_ACCESS_GID };

			snprintf(pb.name, sizeof(pb.name), "crowd.%d.%d", k, i);
			pb.gid = GID_BASE + (gid_t)(k * CROWD_PER + i);
			ok = !rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_PUBLISH, (uint32_t)i + 1,
				    &pb, sizeof(pb), NULL, 0, -1) &&
			     !rrecv(s, &h, NULL, 0, &fd, 30000) && !h.result;
		}
		ready_and_wait(rd, ok);
	}
	return p;
}

/*
 * INFO and LIST in the crowded scope: the many-gid client's cost over
 * the 3-gid client's, each request alone, the least of BLOCKS each.
 * 0: within CROWD_RATIO; 1: over (a hole); -1: setup failed.
 */
static int crowded(pid_t broker, const int *rd, pid_t *kids)
{
	double o[2] = { 1e9, 1e9 }, m[2] = { 1e9, 1e9 };
	static const int which[2] = { REQ_INFO, REQ_LIST };
	int bad = 0;

	for (int k = 0; k < CROWD_UIDS; k++)
		kids[k] = crowd_publisher(k, rd[1]);
	for (int k = 0; k < CROWD_UIDS; k++)
		if (kids[k] <= 0 || rready(rd[0])) {
			printf("  setup failed: crowd publisher\n");
			return -1;
		}
	for (int b = 0; b < BLOCKS; b++)
		for (int w = 0; w < 2; w++) {
			double x = cost_of(broker, UID_ONE, false, which[w], CROWD_NS);
			double y = cost_of(broker, UID_GIDS, true, which[w], CROWD_NS);

			if (x < 0 || y < 0)
				return -1;
			o[w] = x < o[w] ? x : o[w];
			m[w] = y < m[w] ? y : m[w];
		}
	for (int w = 0; w < 2; w++) {
		printf("  %d x %d GID entries: broker CPU a %s %.1f us with 3 gids, %.1f us with "
		       "%ld gids (%.1fx; bound %.1fx)\n", CROWD_UIDS, CROWD_PER,
		       w ? "LIST" : "INFO", o[w] * 1e3, m[w] * 1e3, sysconf(_SC_NGROUPS_MAX),
		       m[w] / o[w], CROWD_RATIO);
		bad |= m[w] > CROWD_RATIO * o[w];
	}
	return bad;
}

int main(int argc, char **argv)
{
	pid_t pub = -1, broker, crowd[CROWD_UIDS];
	int p[2], rc = 2, cr;
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
	memset(crowd, 0, sizeof(crowd));
	cr = crowded(broker, p, crowd);
	for (int k = 0; k < CROWD_UIDS; k++)
		if (crowd[k] > 0)
			kill(crowd[k], SIGKILL), (void)waitpid(crowd[k], NULL, 0);
	rc = cr < 0 ? 2 : cr ? 0 : rc;
out:
	if (pub > 0)
		kill(pub, SIGKILL), waitpid(pub, NULL, 0);
	kill(broker, SIGKILL);
	waitpid(broker, NULL, 0);
	unlink(sock);
	return rc;
}
