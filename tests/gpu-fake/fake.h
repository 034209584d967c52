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
#include <dirent.h>
#include <time.h>
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

/* Milliseconds since t0 (CLOCK_MONOTONIC). */
static inline int64_t fake_ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Descriptors of this process on the stand-in's "device memory" (its memfds). */
static inline int fake_mem_fds(void)
{
	char path[64], link[128];
	struct dirent *d;
	DIR *dir = opendir("/proc/self/fd");
	ssize_t n;
	int c = 0;

	while (dir && (d = readdir(dir))) {
		snprintf(path, sizeof(path), "/proc/self/fd/%s", d->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = 0;
			c += strstr(link, "memfd:fakecuda") != NULL;
		}
	}
	if (dir)
		closedir(dir);
	return c;
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

/* An nvbridged of its own on path (NVB_TEST_DAEMON), answering: its pid, or -1. */
static inline pid_t fake_broker_spawn(const char *path)
{
	const char *bin = getenv("NVB_TEST_DAEMON");
	pid_t pid;

	if (!bin)
		return -1;
	unlink(path);
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0)
			dup2(null, 2);
		execl(bin, bin, "--socket", path, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; pid > 0 && i < 500; i++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		int up;

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
		up = s >= 0 && !connect(s, (struct sockaddr *)&sa, sizeof(sa));
		if (s >= 0)
			close(s);
		if (up)
			return pid;
		usleep(10000);
	}
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
	unlink(path);
	return -1;
}

static inline const char *fake_broker_start(void)
{
	snprintf(fake_sock, sizeof(fake_sock), "/tmp/nvb-gpufake-%d.sock", (int)getpid());
	fake_broker_pid = fake_broker_spawn(fake_sock);
	return fake_broker_pid > 0 ? fake_sock : NULL;
}

/*
 * A rendezvous handle on the broker at path; with NVB_FAKE_BACKEND=kernel
 * (a run in the VM, tests/vm/run) on /dev/nvbridge instead, so that the
 * same cases prove the kernel backend's path of the library.
 */
static inline int fake_kernel_backend(void)
{
	const char *k = getenv("NVB_FAKE_BACKEND");

	return k && !strcmp(k, "kernel");
}

static inline int fake_nvb_open_at(const char *path, struct nvb **h)
{
	struct nvb_opts o = { .sz = sizeof(o), .backend = NVB_BACKEND_BROKER,
			      .socket_path = path };

	if (fake_kernel_backend()) {
		o.backend = NVB_BACKEND_KERNEL;
		o.socket_path = NULL;
	}
	return nvb_open(&o, h);
}

/* A rendezvous handle on the private broker. */
static inline int fake_nvb_open(struct nvb **h)
{
	return fake_nvb_open_at(fake_sock, h);
}

/* What an importing peer (most often a child process) holds: its own GPU layer, handle, mapping. */
struct fake_peer {
	struct nvb_gpu *g;
	struct nvb *h;		/* on the program's private broker */
	struct nvb_gpu_map *m;	/* NULL unless the import worked */
};

/*
 * The peer's first steps: nvb_gpu_open(), fake_nvb_open(), then, when name
 * is not NULL, nvb_gpu_import() of name waiting timeout_ns.  0, or the
 * errno of the first step that failed: p->h NULL then means the GPU layer
 * or the handle failed, before any import.
 */
static inline int fake_peer_import(struct fake_peer *p, const char *name, int64_t timeout_ns)
{
	int err;

	memset(p, 0, sizeof(*p));
	err = nvb_gpu_open(NULL, &p->g);
	if (!err)
		err = fake_nvb_open(&p->h);
	if (err) {
		p->h = NULL;
		return err;
	}
	return name ? nvb_gpu_import(p->g, p->h, name, timeout_ns, 0, &p->m) : 0;
}

/* Ends what fake_peer_import() opened (the mapping too, when there is one). */
static inline void fake_peer_close(struct fake_peer *p)
{
	if (p->m)
		nvb_gpu_unmap(p->m);
	nvb_close(p->h);
	nvb_gpu_close(p->g);
	memset(p, 0, sizeof(*p));
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
