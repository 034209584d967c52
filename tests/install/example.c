// SPDX-License-Identifier: MIT
/*
 * A program built against an *installed* libnvbridge with nothing but
 * `pkg-config --cflags --libs libnvbridge` (the install suite compiles it
 * outside the source tree).
 *
 *   example offline SOCKET   nvb_open() on a socket nobody listens on must
 *                            fail with a negative errno and a message
 *   example live SOCKET      through the broker at SOCKET: publish a memfd
 *                            holding random bytes, a child process fetches
 *                            it and must read the same bytes back
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nvbridge.h>
#include <linux/nvbridge.h>	/* the UAPI header is installed too */

_Static_assert(sizeof(struct nvbridge_publish) == NVBRIDGE_PUBLISH_SIZE_VER0,
	       "installed UAPI header");
_Static_assert(NVB_NAME_MAX == NVBRIDGE_NAME_MAX, "library and UAPI agree");

static int open_broker(const char *sock, struct nvb **h)
{
	struct nvb_opts o = { .sz = sizeof(o), .backend = NVB_BACKEND_BROKER,
			      .socket_path = sock };

	return nvb_open(&o, h);
}

static int offline(const char *sock)
{
	struct nvb *h = NULL;
	int ret = open_broker(sock, &h);

	if (ret >= 0 || h) {
		fprintf(stderr, "nvb_open on %s succeeded?\n", sock);
		return 1;
	}
	printf("nvb_open: %d (%s): %s\n", ret, nvb_strerror(ret), nvb_open_error());
	return nvb_strerror(ret) && *nvb_strerror(ret) ? 0 : 1;
}

static int live(const char *sock)
{
	unsigned char data[4096], back[sizeof(data)];
	struct nvb_publish_opts po = { .sz = sizeof(po), .access = NVB_ACCESS_OWNER };
	struct nvb *h;
	char name[NVB_NAME_MAX];
	uint64_t id = 0;
	int ret, mfd, status;
	pid_t pid;

	if (getrandom(data, sizeof(data), 0) != sizeof(data))
		return 1;
	snprintf(name, sizeof(name), "install-example/%d", (int)getpid());
	mfd = memfd_create("install-example", MFD_CLOEXEC);
	if (mfd < 0 || pwrite(mfd, data, sizeof(data), 0) != sizeof(data))
		return 1;
	ret = open_broker(sock, &h);
	if (ret < 0) {
		fprintf(stderr, "nvb_open: %s: %s\n", nvb_strerror(ret), nvb_open_error());
		return 1;
	}
	ret = nvb_publish(h, name, mfd, data, 16, &po, &id);
	if (ret < 0 || id == 0) {
		fprintf(stderr, "nvb_publish: %s: %s\n", nvb_strerror(ret), nvb_last_error(h));
		return 1;
	}
	pid = fork();
	if (pid == 0) {
		struct nvb *c;
		struct nvb_entry e;
		unsigned char blob[16];
		int fd = -1;

		if (open_broker(sock, &c) < 0)
			_exit(2);
		ret = nvb_fetch(c, name, NULL, blob, sizeof(blob), &e, &fd);
		if (ret < 0 || fd < 0) {
			fprintf(stderr, "nvb_fetch: %s: %s\n", nvb_strerror(ret), nvb_last_error(c));
			_exit(3);
		}
		if (e.id != id || e.blob_len != 16 || memcmp(blob, data, 16) ||
		    !(e.flags & NVB_ENTRY_HAS_FD) || e.uid != getuid())
			_exit(4);
		if (pread(fd, back, sizeof(back), 0) != sizeof(back) ||
		    memcmp(back, data, sizeof(data)))
			_exit(5);
		nvb_close(c);
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return 1;
	nvb_close(h);
	close(mfd);
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "fetching child failed (status %#x)\n", status);
		return 1;
	}
	printf("published %s (id %llu), a child fetched the memfd and read %zu bytes back\n",
	       name, (unsigned long long)id, sizeof(data));
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "offline"))
		return offline(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "live"))
		return live(argv[2]);
	fprintf(stderr, "usage: %s offline|live SOCKET\n", argv[0]);
	return 2;
}
