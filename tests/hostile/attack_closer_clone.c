// SPDX-License-Identifier: MIT
/*
 * Attack: make nvbridged unable to start a closer, then give it a file
 * whose close blocks.
 *
 * nvbridged closes the files clients send in closer processes
 * (daemon/closer.c), started with clone().  A local user can make every
 * clone() fail: a fork bomb in its own uid exhausts pid_max or threads-max
 * where no per-user limit stops it.  The broker used to close its queued
 * files on its loop thread when not one closer could start; a FUSE file
 * whose FLUSH the attacker never answers then stopped the broker for
 * everyone, for ever.  Here clone() of a closer (its flags:
 * CLONE_VM | CLONE_FILES | SIGCHLD) goes to a seccomp user-notification
 * supervisor, which refuses it with EAGAIN (as a pids limit does) until
 * told otherwise.
 *
 *  A. The attacker (UID_ATTACK) sends the FUSE file on a PUBLISH the
 *     broker refuses, keeping its own copy open.  Checked: an honest uid
 *     is served within HONEST_MS, and nobody has FLUSHed the file (the
 *     FUSE server records each FLUSH's caller: the broker's own pid would
 *     be its loop sleeping in it).
 *  B. The broker keeps trying to start a closer, at a bounded rate.
 *     Checked: more than one clone() was refused over RETRY_WAIT_MS, and
 *     fewer than MAX_RETRIES (no spinning).
 *  C. clone() is allowed again.  Checked: within CLOSE_MS the file is
 *     FLUSHed, by a child of the broker (a closer), not by the broker's
 *     process; and the honest uid is still served.
 *
 * Runs as root (mounts FUSE, installs the filter, becomes uids) against
 * the broker named in argv[1].  Exit 0: an attack worked (a hole); 1: none
 * did; 2: setup failed; 77: no FUSE here (skip).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include "hostile.h"

#define HONEST_MS 1000
#define RETRY_WAIT_MS 1000
#define MAX_RETRIES 50		/* in RETRY_WAIT_MS: the broker backs off 100 ms */
#define CLOSE_MS 2000
#define CLOSER_FLAGS (CLONE_VM | CLONE_FILES | SIGCHLD)	/* closer.c spawn() */

/* shared with the supervisor */
struct sup {
	volatile int refuse;
	volatile unsigned int refused, allowed;
};
static struct sup *sup;

/*
 * In the broker's child before exec: clone() with the closers' flags goes
 * to a listener, whose fd is sent on s.  0, or nonzero on failure.
 */
static int notify_closer_clones(int s)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, CLOSER_FLAGS, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
	union {
		struct cmsghdr c;
		char b[CMSG_SPACE(sizeof(int))];
	} cm;
	char x = 'l';
	struct iovec iov = { &x, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			    .msg_controllen = sizeof(cm.b) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	int l;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -1;
	l = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
			 &prog);
	if (l < 0)
		return -1;
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &l, sizeof(int));
	if (sendmsg(s, &m, 0) != 1)
		return -1;
	close(l);
	return 0;
}

/* answers the broker's closer clone()s: EAGAIN while sup->refuse, else lets them run */
static void supervise(int l)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (;;) {
		struct seccomp_notif req;
		struct seccomp_notif_resp resp;

		memset(&req, 0, sizeof(req));
		if (ioctl(l, SECCOMP_IOCTL_NOTIF_RECV, &req)) {
			if (errno == EINTR || errno == ENOENT)
				continue;
			_exit(0);	/* the broker is gone */
		}
		memset(&resp, 0, sizeof(resp));
		resp.id = req.id;
		if (sup->refuse) {
			resp.error = -EAGAIN;
			__atomic_fetch_add(&sup->refused, 1, __ATOMIC_SEQ_CST);
		} else {
			resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
			__atomic_fetch_add(&sup->allowed, 1, __ATOMIC_SEQ_CST);
		}
		ioctl(l, SECCOMP_IOCTL_NOTIF_SEND, &resp);
	}
}

/* the broker under the filter, and its supervisor (*sv); -1 on failure */
static pid_t start_broker(const char *bin, const char *sock, pid_t *sv)
{
	int sp[2], l = -1;
	char x;
	union {
		struct cmsghdr c;
		char b[CMSG_SPACE(sizeof(int))];
	} cm;
	struct iovec iov = { &x, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			    .msg_controllen = sizeof(cm.b) };
	pid_t b;

	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp))
		return -1;
	setenv("NVBRIDGE_SOCKET", sock, 1);
	b = fork();
	if (b == 0) {
		close(sp[0]);
		if (notify_closer_clones(sp[1]))
			_exit(2);
		execl(bin, bin, "--socket", sock, (char *)NULL);
		_exit(2);
	}
	close(sp[1]);
	if (b > 0 && recvmsg(sp[0], &m, 0) == 1 && CMSG_FIRSTHDR(&m) &&
	    CMSG_FIRSTHDR(&m)->cmsg_type == SCM_RIGHTS)
		memcpy(&l, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
	close(sp[0]);
	if (l < 0) {
		if (b > 0)
			kill(b, SIGKILL), waitpid(b, NULL, 0);
		return -1;
	}
	*sv = fork();
	if (*sv == 0)
		supervise(l);
	close(l);
	for (int i = 0; i < 100 && access(sock, F_OK); i++)
		usleep(50000);
	return b;
}

static int served(const char *when)
{
	double ms = rhonest_ms(1, HONEST_MS);

	printf("  honest uid %d, %s: %s%.1f ms (deadline %d)\n", UID_HONEST, when,
	       ms < 0 ? "NOT SERVED, " : "", ms < 0 ? (double)HONEST_MS : ms, HONEST_MS);
	return ms >= 0;
}

int main(int argc, char **argv)
{
	const struct fuse_hang_seen *seen;
	struct fuse_scene sc;
	pid_t broker = -1, sv = -1, att = -1;
	int rp[2], rc, worked = 0;
	unsigned int r0, r1;

	if (argc < 2 || pipe(rp))
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	sup = mmap(NULL, sizeof(*sup), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sup == MAP_FAILED)
		return 2;
	sup->refuse = 1;
	rc = fuse_scene_start(&sc);
	if (rc)
		return rc;
	rc = 2;
	seen = fuse_hang_seen();
	broker = start_broker(argv[1], sc.sock, &sv);
	if (broker < 0 || !seen) {
		printf("  setup: the broker under the clone filter did not start\n");
		goto out;
	}
	att = rfile_sender(UID_ATTACK, sc.file, 1, rp[1]);
	if (rready(rp[0])) {
		printf("  setup: the attacker could not send the FUSE file\n");
		goto out;
	}
	usleep(300000);	/* the broker has the file to close, and no closer */
	printf("A: every clone() of a closer refused (EAGAIN), a FUSE file whose FLUSH hangs to "
	       "close\n");
	if (!served("while no closer can start"))
		worked = 1;
	if (seen->flushes) {
		printf("  the file was FLUSHed by pid %d%s\n", (int)seen->flush_pid,
		       seen->flush_pid == broker ? ": the broker's own process (its loop)" : "");
		worked = 1;
	}
	r0 = sup->refused;
	usleep(RETRY_WAIT_MS * 1000);
	r1 = sup->refused;
	printf("B: %u closer clone()s refused in %d ms (more than 1, fewer than %d)\n", r1 - r0,
	       RETRY_WAIT_MS, MAX_RETRIES);
	if (r1 - r0 < 2 || r1 - r0 >= MAX_RETRIES)
		worked = 1;
	sup->refuse = 0;
	printf("C: clone() allowed again: the file ");
	if (!flushed_by_closer(seen, broker, CLOSE_MS))
		worked = 1;
	if (!served("with the closer hung in FLUSH"))
		worked = 1;
	rc = worked ? 0 : 1;
out:
	rc = attack_end(&sc, att, broker, rc);
	if (sv > 0)
		kill(sv, SIGKILL), waitpid(sv, NULL, 0);
	return rc;
}
