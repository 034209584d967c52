// SPDX-License-Identifier: MIT
/*
 * Attack: one unprivileged user publishes a file of a FUSE file system it
 * serves, whose FLUSH it never answers, and hangs up.  The broker must
 * close that file (the entry is revoked), and close() waits for FLUSH.
 *
 *  A. Where io_uring is unavailable (here: a seccomp filter failing
 *     io_uring_setup with ENOSYS, as container runtimes' default profiles
 *     do), nvbridged used to close client files on its loop thread: the
 *     loop sleeps in close() and nobody is served.  Checked: an honest
 *     uid is served, and its own published files are closed (three
 *     rounds of publish + hang up), within HONEST_MS.
 *  B. FLUSH is a forced FUSE request, waited for uninterruptibly: a broker
 *     whose own process (an io-wq worker, a thread) sits in it does not
 *     finish exiting on SIGTERM, nor on SIGKILL, so systemd cannot restart
 *     it.  Checked: the broker's process is reaped within EXIT_MS of
 *     SIGTERM, a new broker on the same socket serves the honest uid, and
 *     that one, given the same file to close, is reaped within EXIT_MS of
 *     SIGKILL, all while the FLUSH still hangs.
 *  C. That killed broker's hung closer holds its whole fd table, the
 *     listening socket included.  Checked: a third broker on the same
 *     path starts and serves the honest uid (it used to take the held
 *     socket, which accepts connections into a backlog, for a live broker
 *     and exit).
 *
 * Runs as root (mounts FUSE, becomes uids 2003 and 2001) against the
 * broker named in argv[1].  Exit 0: an attack worked (a hole); 1: neither
 * did; 2: setup failed; 77: no FUSE here (skip).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include "nvbridge.h"
#include "hostile.h"
#include "../seccomp_refuse.h"

#define HONEST_MS 1000
#define EXIT_MS 2000

static char sock[128];

/* the broker, with io_uring_setup failing ENOSYS when no_uring */
static pid_t start_broker(const char *bin, bool no_uring)
{
	pid_t p = fork();

	if (p == 0) {
		if (no_uring && seccomp_refuse(__NR_io_uring_setup, ENOSYS))
			_exit(2);
		execl(bin, bin, "--socket", sock, (char *)NULL);
		_exit(2);
	}
	for (int i = 0; i < 100 && access(sock, F_OK); i++)
		usleep(50000);
	return p;
}

/*
 * UID_ATTACK: sends the FUSE file in a PUBLISH, hangs up, keeps its own fd.
 * The PUBLISH is refused (only memory-backed files are publishable), but
 * the file came with the message: the broker holds it and must close it.
 */
static pid_t attacker(const char *file, int ready)
{
	pid_t p = fork();

	if (p == 0) {
		struct nvbridge_wire_hdr h;
		int fd, s, rfd;
		char r = 'n';

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (!become(UID_ATTACK) && (fd = open(file, O_RDWR | O_CLOEXEC)) >= 0 &&
		    (s = rconnect()) >= 0 && !rhello(s, -1) &&
		    !rpublish(s, 1, "fuse.flush", fd, NVBRIDGE_ACCESS_SCOPE) &&
		    !rrecv(s, &h, NULL, 0, &rfd, 3000) && (!h.result || h.result == -EINVAL)) {
			close(s);
			r = 'y';
		}
		if (write(ready, &r, 1) != 1)
			_exit(2);
		pause();	/* its own fd stays open: its exit would FLUSH too */
		_exit(0);
	}
	return p;
}

/* ms until the broker's process was reaped after sig, or -1 past EXIT_MS */
static double exit_ms(pid_t b, int sig)
{
	int64_t t0 = now_ns();

	kill(b, sig);
	while (now_ns() - t0 < (int64_t)EXIT_MS * 1000000) {
		if (waitpid(b, NULL, WNOHANG) == b)
			return (double)(now_ns() - t0) / 1e6;
		usleep(10000);
	}
	return -1;
}

static int served(const char *when)
{
	double ms = rhonest_ms(3, 5000);

	printf("honest uid %d, %s: %s%.1f ms (deadline %d)\n", UID_HONEST, when,
	       ms < 0 ? "NOT SERVED, " : "", ms, HONEST_MS);
	return ms >= 0 && ms <= HONEST_MS;
}

int main(int argc, char **argv)
{
	char dir[] = "/tmp/nvb-fuseflush.XXXXXX", mnt[160], file[170], c = 0;
	pid_t b1, b2 = -1, b3 = -1, att, att2 = -1, srv;
	int rp[2], worked = 0, r;
	double t;

	setvbuf(stdout, NULL, _IONBF, 0);
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2 || !mkdtemp(dir) || chmod(dir, 0755) || pipe(rp))
		return 2;
	snprintf(sock, sizeof(sock), "%s/s.sock", dir);
	snprintf(mnt, sizeof(mnt), "%s/fuse", dir);
	snprintf(file, sizeof(file), "%s/f", mnt);
	setenv("NVBRIDGE_SOCKET", sock, 1);
	r = fuse_hang_start(mnt, &srv);
	if (r) {
		printf("skip: cannot mount FUSE (%s)\n", strerror(-r));
		rmdir(mnt);
		rmdir(dir);
		return 77;
	}
	b1 = start_broker(argv[1], true);
	att = attacker(file, rp[1]);
	if (read(rp[0], &c, 1) != 1 || c != 'y') {
		printf("setup: the attacker could not publish the FUSE file\n");
		worked = -1;
		goto out;
	}
	usleep(200000);	/* the broker has the hang-up and closes the file */
	printf("A: io_uring unavailable to the broker, its close of the FUSE file waits for FLUSH\n");
	if (!served("while the FLUSH hangs"))
		worked = 1;
	t = exit_ms(b1, SIGTERM);
	printf("B: the broker's process %s%.0f ms after SIGTERM\n", t < 0 ? "NOT REAPED " : "reaped ",
	       t < 0 ? (double)EXIT_MS : t);
	if (t < 0) {
		worked = 1;
		t = exit_ms(b1, SIGKILL);
		printf("   and %s after SIGKILL\n", t < 0 ? "still not reaped" : "reaped");
	} else {
		b1 = -1;
		b2 = start_broker(argv[1], false);
		if (!served("from a new broker on the same socket, the FLUSH still hanging"))
			worked = 1;
		/* the same file hung in the new broker too, then the kill systemd sends last */
		att2 = attacker(file, rp[1]);
		if (read(rp[0], &c, 1) != 1 || c != 'y') {
			printf("setup: the attacker could not publish to the second broker\n");
			worked = worked ? worked : -1;
			goto out;
		}
		usleep(200000);
		t = exit_ms(b2, SIGKILL);
		printf("   the second broker, closing the same file: %s%.0f ms after SIGKILL\n",
		       t < 0 ? "NOT REAPED " : "reaped ", t < 0 ? (double)EXIT_MS : t);
		if (t < 0) {
			worked = 1;
		} else {
			b2 = -1;
			/*
			 * C: its hung closer still holds the killed broker's fd
			 * table, its listening socket included: connect() to the
			 * path succeeded (into a backlog nobody accepts), and a
			 * new broker took that for a live one and exited.
			 */
			usleep(100000);
			b3 = start_broker(argv[1], false);
			usleep(300000);
			if (waitpid(b3, NULL, WNOHANG) == b3) {
				printf("C: a third broker, the second's listening socket held by its hung "
				       "closer: EXITED at start (took it for a live broker)\n");
				b3 = -1;
				worked = 1;
			} else if (!served("from a third broker, the second killed with its "
					   "closer hung")) {
				worked = 1;
			}
		}
	}
out:
	fuse_hang_stop(mnt, srv);	/* aborts the connection: every FLUSH returns */
	for (int i = 0; i < 2; i++) {
		pid_t a = i ? att2 : att;

		if (a > 0) {
			kill(a, SIGKILL);
			waitpid(a, NULL, 0);
		}
	}
	for (int i = 0; i < 3; i++) {
		pid_t b = i == 2 ? b3 : i ? b2 : b1;

		if (b > 0) {
			kill(b, SIGTERM);
			waitpid(b, NULL, 0);
		}
	}
	unlink(sock);
	rmdir(dir);
	if (worked < 0)
		return 2;
	return worked ? 0 : 1;
}
