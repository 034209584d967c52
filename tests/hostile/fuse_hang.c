// SPDX-License-Identifier: MIT
/*
 * A FUSE file system served from raw /dev/fuse (no libfuse needed) with one
 * regular file, "f", mode 0666, whose FLUSH is never answered: whoever
 * close()s it waits for this server.  Killing the server aborts the
 * connection and releases every waiter.  Needs root (mount(2)), or to be
 * root of a user namespace with its own mount namespace.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/fuse.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <grp.h>
#include "fuse_hang.h"

static struct fuse_hang_seen *seen;	/* the last started server's, MAP_SHARED */

const struct fuse_hang_seen *fuse_hang_seen(void)
{
	return seen;
}

static void fill_attr(struct fuse_attr *a, uint64_t ino)
{
	memset(a, 0, sizeof(*a));
	a->ino = ino;
	a->mode = ino == FUSE_ROOT_ID ? (S_IFDIR | 0755) : (S_IFREG | 0666);
	a->nlink = 1;
	a->blksize = 4096;
}

static void answer(int fd, uint64_t unique, int err, const void *arg, size_t len)
{
	unsigned char buf[512];
	struct fuse_out_header o = { .len = (uint32_t)(sizeof(o) + len), .error = err,
				     .unique = unique };

	memcpy(buf, &o, sizeof(o));
	if (len)
		memcpy(buf + sizeof(o), arg, len);
	if (write(fd, buf, o.len) < 0) {
		/* the kernel dropped the request (interrupted): nothing to do */
	}
}

static void serve(int fd)
{
	static unsigned char buf[FUSE_MIN_READ_BUFFER + 65536];

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		struct fuse_in_header *in = (void *)buf;

		if (n < 0 && (errno == EINTR || errno == ENOENT))
			continue;
		if (n < (ssize_t)sizeof(*in))
			_exit(0);
		switch (in->opcode) {
		case FUSE_INIT: {
			struct fuse_init_out o = { .major = FUSE_KERNEL_VERSION, .minor = 31,
						   .max_readahead = 65536, .max_write = 4096,
						   .max_background = 16, .congestion_threshold = 12 };

			answer(fd, in->unique, 0, &o, sizeof(o));
			break;
		}
		case FUSE_LOOKUP: {
			struct fuse_entry_out o = { .nodeid = 2, .generation = 1,
						    .entry_valid = 3600, .attr_valid = 3600 };

			if (strcmp((char *)(in + 1), "f")) {
				answer(fd, in->unique, -ENOENT, NULL, 0);
				break;
			}
			fill_attr(&o.attr, 2);
			answer(fd, in->unique, 0, &o, sizeof(o));
			break;
		}
		case FUSE_GETATTR: {
			struct fuse_attr_out o = { .attr_valid = 3600 };

			if (in->nodeid != FUSE_ROOT_ID)
				break;	/* the file's attributes come from LOOKUP only: never answered */
			fill_attr(&o.attr, FUSE_ROOT_ID);
			answer(fd, in->unique, 0, &o, sizeof(o));
			break;
		}
		case FUSE_OPEN: {
			struct fuse_open_out o = { .fh = 1 };

			answer(fd, in->unique, 0, &o, sizeof(o));
			break;
		}
		case FUSE_FLUSH:
			if (seen) {
				seen->flush_pid = (pid_t)in->pid;
				__atomic_fetch_add(&seen->flushes, 1, __ATOMIC_SEQ_CST);
			}
			break;	/* never answered, the point of this server */
		case FUSE_INTERRUPT:
		case FUSE_FORGET:
		case FUSE_BATCH_FORGET:
			break;
		case FUSE_RELEASE:
			if (seen)
				__atomic_fetch_add(&seen->releases, 1, __ATOMIC_SEQ_CST);
			answer(fd, in->unique, 0, NULL, 0);
			break;
		default:
			answer(fd, in->unique, -ENOSYS, NULL, 0);
			break;
		}
	}
}

/*
 * Mounts it at @mnt for @owner, as fusermount does for a user (user_id=,
 * allow_other where /etc/fuse.conf has user_allow_other), and starts its
 * server, which runs as @owner (as root for 0).
 */
int fuse_hang_start_for(const char *mnt, uid_t owner, pid_t *server)
{
	char opts[128];
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	mkdir(mnt, 0755);
	snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=%u,group_id=%u,allow_other",
		 fd, (unsigned int)owner, (unsigned int)owner);
	if (mount("nvbhang", mnt, "fuse.nvbhang", MS_NOSUID | MS_NODEV, opts)) {
		int e = -errno;

		close(fd);
		return e;
	}
	if (!seen) {
		void *m = mmap(NULL, sizeof(*seen), PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

		seen = m == MAP_FAILED ? NULL : m;
	}
	if (seen)
		memset(seen, 0, sizeof(*seen));
	*server = fork();
	if (*server == 0) {
		gid_t g = (gid_t)owner;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (owner && (setgroups(1, &g) || setgid(g) || setuid(owner)))
			_exit(1);
		serve(fd);
		_exit(0);
	}
	close(fd);
	return *server < 0 ? -EAGAIN : 0;
}

int fuse_hang_start(const char *mnt, pid_t *server)
{
	return fuse_hang_start_for(mnt, 0, server);
}

/* Aborts the connection (every FLUSH waiter gets -ENOTCONN) and detaches the mount. */
void fuse_hang_stop(const char *mnt, pid_t server)
{
	kill(server, SIGKILL);
	waitpid(server, NULL, 0);
	umount2(mnt, MNT_DETACH);
	rmdir(mnt);
}

int fuse_scene_start(struct fuse_scene *sc)
{
	int r;

	snprintf(sc->dir, sizeof(sc->dir), "/tmp/nvb-scene.XXXXXX");
	if (!mkdtemp(sc->dir) || chmod(sc->dir, 0755))
		return 2;
	snprintf(sc->mnt, sizeof(sc->mnt), "%s/fuse", sc->dir);
	snprintf(sc->file, sizeof(sc->file), "%s/f", sc->mnt);
	snprintf(sc->sock, sizeof(sc->sock), "%s/s.sock", sc->dir);
	r = fuse_hang_start(sc->mnt, &sc->srv);
	if (r) {
		printf("  skip: cannot mount FUSE (%s)\n", strerror(-r));
		rmdir(sc->mnt);
		rmdir(sc->dir);
		return 77;
	}
	return 0;
}

/* every FLUSH returns (the server dies), then the scene goes */
void fuse_scene_end(struct fuse_scene *sc)
{
	fuse_hang_stop(sc->mnt, sc->srv);
	unlink(sc->sock);
	rmdir(sc->dir);
}
