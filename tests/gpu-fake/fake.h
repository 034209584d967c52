/* SPDX-License-Identifier: MIT */
/*
 * Shared by the gpu-fake programs: the stand-in libcuda is libcuda.so.1 on
 * LD_LIBRARY_PATH (tests/gpu-fake/run), so nvb_gpu_open(NULL, ...) finds
 * it as an application's would find the real one; a private nvbridged
 * (NVB_TEST_DAEMON) serves the rendezvous.
 */
#ifndef NVB_GPU_FAKE_H
#define NVB_GPU_FAKE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nvbridge.h"
#include "nvbridge_gpu.h"
#include "cases.h"

#define OK(expr) EXPECT(expr, 0)

static inline void fake_random(void *p, size_t n)
{
	unsigned char *b = p;

	while (n) {
		ssize_t r = getrandom(b, n, 0);

		if (r <= 0)
			abort();
		b += r;
		n -= (size_t)r;
	}
}

/* A private broker for one program: its socket path, or NULL. */
static char fake_sock[108];
static pid_t fake_broker_pid;

static inline void fake_broker_stop(void)
{
	if (fake_broker_pid > 0) {
		kill(fake_broker_pid, SIGTERM);
		waitpid(fake_broker_pid, NULL, 0);
		fake_broker_pid = 0;
	}
	unlink(fake_sock);
}

static inline const char *fake_broker_start(void)
{
	const char *bin = getenv("NVB_TEST_DAEMON");

	if (!bin)
		return NULL;
	snprintf(fake_sock, sizeof(fake_sock), "/tmp/nvb-gpufake-%d.sock", (int)getpid());
	unlink(fake_sock);
	fake_broker_pid = fork();
	if (fake_broker_pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0)
			dup2(null, 2);
		execl(bin, bin, "--socket", fake_sock, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		int up;

		strcpy(sa.sun_path, fake_sock);
		up = s >= 0 && !connect(s, (struct sockaddr *)&sa, sizeof(sa));
		if (s >= 0)
			close(s);
		if (up)
			return fake_sock;
		usleep(10000);
	}
	fake_broker_stop();
	return NULL;
}

/* A rendezvous handle on the private broker. */
static inline int fake_nvb_open(struct nvb **h)
{
	struct nvb_opts o = { .sz = sizeof(o), .backend = NVB_BACKEND_BROKER,
			      .socket_path = fake_sock };

	return nvb_open(&o, h);
}

/*
 * main() of a gpu-fake program: its cases, isolated, against a private
 * broker; after (may be NULL) runs after each case.
 */
static inline int fake_main(const char *suite, const struct nvb_case *cases, size_t n,
			    int argc, char **argv, void (*after)(void))
{
	int rc;

	signal(SIGPIPE, SIG_IGN);
	if (!fake_broker_start()) {
		printf("no broker (NVB_TEST_DAEMON)\n0 passed, 1 failed\n");
		return 1;
	}
	rc = run_cases(suite, cases, n, argc, argv, true, after);
	fake_broker_stop();
	return rc;
}

#endif /* NVB_GPU_FAKE_H */
