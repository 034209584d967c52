// SPDX-License-Identifier: MIT
/*
 * Attack: an unprivileged user serves a FUSE file whose FLUSH it never
 * answers and publishes it for its whole scope under a name an importer
 * fetches without EXPECT_UID.  Two ways to get the mount, neither needing
 * privilege: a user namespace of its own ("userns"), or fusermount with
 * allow_other where /etc/fuse.conf has user_allow_other ("fusermount",
 * done here by root the way fusermount does it: user_id=the user, the
 * server running as the user).  An importer handed that file hangs in D
 * state when it closes it (or merely exits): unkillable, until the
 * attacker chooses to let it go.  The broker must refuse the file
 * (-EINVAL: only memory-backed regular files may be published), so the
 * importer finds nothing.
 *
 * Build and run: make check-attacks (tests/hostile/run-attacks.sh).
 * Runs as root (it becomes test uids), against the broker named in argv[1].
 * Exit 0: the attack worked (the hole is there); 1: it did not; 2: setup failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "nvbridge.h"
#include "hostile.h"

static char dir[] = "/tmp/nvb-fuseatk.XXXXXX";

static int wself(const char *file, const char *s)
{
	char path[64];
	int fd, ok;

	snprintf(path, sizeof(path), "/proc/self/%s", file);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	ok = write(fd, s, strlen(s)) == (ssize_t)strlen(s);
	close(fd);
	return ok ? 0 : -1;
}

/* root of a new user namespace (mapped to UID_ATTACK only), own mounts */
static int enter_userns(void)
{
	char ids[32];

	if (unshare(CLONE_NEWUSER | CLONE_NEWNS))
		return -1;
	snprintf(ids, sizeof(ids), "0 %d 1\n", UID_ATTACK);
	if (wself("uid_map", ids) || wself("setgroups", "deny") || wself("gid_map", ids))
		return -1;
	return mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
}

/*
 * The attacker (UID_ATTACK): mounts FUSE in its user namespace (@userns;
 * else the mount is there), opens its file, publishes it.  Reports the
 * PUBLISH's result (0 or -errno) and its FUSE server's pid (0: not its
 * own) on @rep, then holds its connection.
 */
static void attacker(int rep, const char *mnt, bool userns)
{
	char file[160];
	struct nvbridge_wire_hdr h;
	int s, fd, rfd = -1, res[2] = { -EPROTO, 0 }, r;
	pid_t srv = 0;

	if (become(UID_ATTACK) || prctl(PR_SET_DUMPABLE, 1))
		_exit(2);
	if (userns) {
		if (enter_userns())
			_exit(2);
		r = fuse_hang_start(mnt, &srv);
		if (r) {
			printf("    cannot mount FUSE in a user namespace (%s)\n", strerror(-r));
			_exit(2);
		}
	}
	snprintf(file, sizeof(file), "%s/f", mnt);
	fd = open(file, O_RDWR | O_CLOEXEC);
	s = rconnect();
	if (fd < 0 || s < 0 || rhello(s, -1) ||
	    rpublish(s, 1, "job.weights", fd, NVBRIDGE_ACCESS_SCOPE))
		_exit(2);
	if (!rrecv(s, &h, NULL, 0, &rfd, 3000))
		res[0] = h.result;
	res[1] = srv;
	printf("    PUBLISH of the attacker's FUSE file: %s\n",
	       res[0] ? strerror(-res[0]) : "accepted");
	if (write(rep, res, sizeof(res)) != sizeof(res))
		_exit(2);
	pause();	/* holds the entry (if any) */
	_exit(0);
}

/* The importer: fetches job.weights from whoever published it, and closes it. */
static void importer(void)
{
	struct nvbridge_wire_hdr h;
	int s, fd = -1;

	if (become(UID_VICTIM) || (s = rconnect()) < 0 || rhello(s, -1) ||
	    rfetch_req(s, 1, "job.weights", 0, 0) || rrecv(s, &h, NULL, 0, &fd, 3000))
		_exit(2);
	if (h.result == 0 && fd >= 0) {
		close(fd);	/* FUSE FLUSH: the attacker never answers */
		_exit(42);
	}
	_exit(h.result == -ENOENT ? 0 : 3);
}

/* One way to mount: 0 the attack worked, 1 it did not, 2 setup failed. */
static int scenario(const char *how, bool userns)
{
	char mnt[128];
	int rep[2], res = 2, pr[2] = { 0, 0 }, st = -1;
	pid_t a, imp = -1, srv = 0;

	printf("  %s:\n", how);
	snprintf(mnt, sizeof(mnt), "%s/%s", dir, how);
	if (mkdir(mnt, 0755) || chown(mnt, UID_ATTACK, UID_ATTACK) || pipe(rep))
		return 2;
	if (!userns && fuse_hang_start_for(mnt, UID_ATTACK, &srv)) {
		rmdir(mnt);
		return 2;
	}
	a = fork();
	if (a == 0)
		attacker(rep[1], mnt, userns);
	close(rep[1]);
	if (read(rep[0], pr, sizeof(pr)) != sizeof(pr))
		goto out;	/* the attacker could not set up */
	if (pr[1] > 0)
		srv = pr[1];
	imp = fork();
	if (imp == 0)
		importer();
	for (int i = 0; i < 300 && waitpid(imp, &st, WNOHANG) == 0; i++)
		usleep(10000);
	if (st != -1)
		imp = -1;	/* reaped */
	if (st == -1) {
		kill(imp, SIGKILL);
		usleep(500000);
		if (waitpid(imp, &st, WNOHANG) == 0)
			printf("    the importer is unkillable (0.5 s after SIGKILL)\n");
		else
			imp = -1;
		res = 0;
	} else if (WIFEXITED(st) && WEXITSTATUS(st) == 42) {
		printf("    the importer was handed the attacker's FUSE file\n");
		res = 0;
	} else if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && pr[0]) {
		/* which errno: the conformance suite's publish_fuse_file_einval */
		printf("    refused (%s); the importer found nothing\n", strerror(-pr[0]));
		res = 1;
	} else {
		printf("    importer: status %#x, PUBLISH %d\n", st, pr[0]);
	}
out:
	/*
	 * The server first: its death aborts the connection and releases every
	 * FLUSH waiter, the attacker's own exit included (which would wait for
	 * it, and the server's PDEATHSIG comes only after that exit).
	 */
	if (srv > 0)
		kill(srv, SIGKILL);
	kill(a, SIGKILL);
	waitpid(a, NULL, 0);
	if (imp > 0)
		waitpid(imp, NULL, 0);	/* released by the server's death */
	if (!userns && srv > 0) {
		waitpid(srv, NULL, 0);
		umount2(mnt, MNT_DETACH);
	}
	close(rep[0]);
	rmdir(mnt);
	return res;
}

int main(int argc, char **argv)
{
	char sock[128];
	int r1, r2;
	pid_t broker;

	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc < 2 || !mkdtemp(dir) || chmod(dir, 0755))
		return 2;
	snprintf(sock, sizeof(sock), "%s/s.sock", dir);
	broker = start_broker_at(argv[1], sock);
	r1 = scenario("userns", true);
	r2 = scenario("fusermount", false);
	kill(broker, SIGTERM);
	waitpid(broker, NULL, 0);
	unlink(sock);
	rmdir(dir);
	if (!r1 || !r2)
		return 0;
	return r1 == 2 || r2 == 2 ? 2 : 1;
}
