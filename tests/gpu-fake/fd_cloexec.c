// SPDX-License-Identifier: MIT
/*
 * The descriptors the GPU layer keeps for exported memory (nvb_gpu_export's
 * fd, a registration's per-allocation fds) are capabilities to that memory:
 * whoever holds one imports and maps it, the tensors in it included.  They
 * must not survive an exec: a program the application runs with system()
 * or posix_spawn (which close nothing) would otherwise inherit read and
 * write access to live GPU memory.  The driver's export does not promise
 * O_CLOEXEC (the stand-in's, a dup(), has none), so the library sets it,
 * as nvb_fetch does for the fds it receives.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>

#include "fake.h"

/* Descriptors of this process an exec would keep (FD_CLOEXEC clear). */
static int inheritable_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0, fd, self;

	if (!d)
		return -1;
	self = dirfd(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && (fd = atoi(e->d_name)) != self && fd > 2 &&
		    !(fcntl(fd, F_GETFD) & FD_CLOEXEC))
			n++;
	closedir(d);
	return n;
}

static int t_export_fd_cloexec(void)
{
	struct nvb_gpu_meta meta;
	struct nvb_gpu_buf *b;
	struct nvb_gpu *g;
	int fd = -1, n0;

	OK(nvb_gpu_open(NULL, &g));
	OK(nvb_gpu_alloc(g, 0, 2u << 20, 0, &b));
	n0 = inheritable_fds();
	OK(nvb_gpu_export(b, &fd, &meta));
	CHECK(fd >= 0);
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC, "nvb_gpu_export's fd %d survives exec", fd);
	EXPECT(inheritable_fds(), n0);
	nvb_gpu_free(b);
	nvb_gpu_close(g);
	return 0;
}

static int t_register_fds_cloexec(void)
{
	struct nvb_gpu_buf *b, *r;
	struct nvb_gpu *g;
	int n0;

	OK(nvb_gpu_open(NULL, &g));
	OK(nvb_gpu_alloc(g, 0, 4u << 20, 0, &b));
	n0 = inheritable_fds();
	OK(nvb_gpu_register(g, nvb_gpu_buf_ptr(b) + 4096, 3u << 20, 0, &r));
	EXPECT(inheritable_fds(), n0);	/* the registration's export fd */
	nvb_gpu_free(r);
	nvb_gpu_free(b);
	nvb_gpu_close(g);
	return 0;
}

static const struct nvb_case cases[] = {
	{ "export_fd_cloexec", t_export_fd_cloexec },
	{ "register_fds_cloexec", t_register_fds_cloexec },
};

int main(int argc, char **argv)
{
	return fake_main("gpu-fd-cloexec", cases, sizeof(cases) / sizeof(cases[0]), argc, argv, NULL);
}
