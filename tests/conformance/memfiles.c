// SPDX-License-Identifier: MIT
/*
 * C7, regular files: only memory-backed ones may be published (memfd,
 * MFD_HUGETLB memfd, tmpfs/shmem, hugetlbfs).  Any other regular file is
 * refused with -EINVAL and nothing is published: a FUSE file handed to an
 * importer hangs it, unkillable, on its last close while the server sits
 * on FLUSH; ramfs, procfs and sysfs files stand for the other file
 * systems (disks, NFS, overlayfs...) every test machine may lack.
 * Included by conformance.c; runs on both backends.
 */
#include <sys/mount.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include "../hostile/fuse_hang.c"

/* Publishes @fd and fetches it back: the same file, with @len bytes of @want. */
static int publish_same_file(struct nvb *h, const char *name, int fd,
			     const unsigned char *want, size_t len)
{
	unsigned char got[64];
	struct stat a, b;
	int rfd = -1;

	OK(nvb_publish(h, name, fd, NULL, 0, NULL, NULL));
	OK(nvb_fetch(h, name, NULL, NULL, 0, NULL, &rfd));
	CHECK(rfd >= 0, "%s: no fd fetched", name);
	CHECK(!fstat(fd, &a) && !fstat(rfd, &b) && a.st_ino == b.st_ino &&
	      a.st_dev == b.st_dev, "%s: fetched another file", name);
	if (len) {
		memset(got, 0xa5, sizeof(got));
		CHECK(pread(rfd, got, len, 0) == (ssize_t)len && !memcmp(got, want, len),
		      "%s: fetched file does not hold the published bytes", name);
	}
	close(rfd);
	OK(nvb_unpublish(h, 0, name));
	return 0;
}

/* Publishing @fd is refused with -EINVAL and leaves nothing to fetch. */
static int publish_refused(struct nvb *h, const char *name, int fd)
{
	EXPECT(nvb_publish(h, name, fd, NULL, 0, NULL, NULL), -EINVAL);
	EXPECT(nvb_fetch(h, name, NULL, NULL, 0, NULL, NULL), -ENOENT);
	return 0;
}

/*
 * A new file on a fresh mount of @type, detached at once (the open file
 * keeps its mount): its fd, or -errno of the mount (the caller skips) or
 * of the open (it fails).
 */
static int file_on_fresh_mount(const char *type, int *mount_err)
{
	char dir[] = "/tmp/nvb-cf-mnt.XXXXXX", path[64];
	int fd;

	*mount_err = 0;
	if (!mkdtemp(dir))
		return -errno;
	if (mount("nvbcf", dir, type, MS_NOSUID | MS_NODEV, NULL)) {
		*mount_err = errno;
		rmdir(dir);
		return -*mount_err;
	}
	snprintf(path, sizeof(path), "%s/f", dir);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		fd = -errno;
	umount2(dir, MNT_DETACH);
	rmdir(dir);
	return fd;
}

static int t_publish_memfd_tmpfs(void)
{
	unsigned char buf[64];
	struct statfs sf;
	struct nvb *h;
	int fd;

	OPEN(h);
	fd = memfd_rand(sizeof(buf), buf);
	if (publish_same_file(h, nm("mf.memfd"), fd, buf, sizeof(buf)))
		return 1;
	close(fd);
	fd = memfd_create("cf", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
	OK(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
	if (publish_same_file(h, nm("mf.sealed"), fd, NULL, 0))
		return 1;
	close(fd);
	/* a file of a tmpfs mount (the VM and hosts mount one at /dev/shm) */
	if (statfs("/dev/shm", &sf) || sf.f_type != TMPFS_MAGIC) {
		nvb_close(h);
		SKIP("/dev/shm is not a tmpfs here");
	}
	fd = open("/dev/shm", O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
	CHECK(fd >= 0, "O_TMPFILE in /dev/shm: %s", strerror(errno));
	rnd(buf, sizeof(buf));
	CHECK(write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf), "write");
	if (publish_same_file(h, nm("mf.tmpfs"), fd, buf, sizeof(buf)))
		return 1;
	close(fd);
	nvb_close(h);
	return 0;
}

static int t_publish_hugetlb(void)
{
	struct nvb *h;
	int fd, merr;

	/* creating the files takes no huge page: only faulting one in would */
	fd = memfd_create("cf", MFD_CLOEXEC | MFD_HUGETLB);
	if (fd < 0)
		SKIP("memfd_create(MFD_HUGETLB): %s", strerror(errno));
	OPEN(h);
	if (publish_same_file(h, nm("mf.huge"), fd, NULL, 0))
		return 1;
	close(fd);
	fd = file_on_fresh_mount("hugetlbfs", &merr);
	if (merr) {
		nvb_close(h);
		SKIP("cannot mount hugetlbfs (%s)", strerror(merr));
	}
	CHECK(fd >= 0, "open on hugetlbfs: %s", strerror(-fd));
	if (publish_same_file(h, nm("mf.hugetlbfs"), fd, NULL, 0))
		return 1;
	close(fd);
	nvb_close(h);
	return 0;
}

static int t_publish_not_memory_backed(void)
{
	struct nvb *h;
	int fd, merr;

	OPEN(h);
	fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open /proc/self/status: %s", strerror(errno));
	if (publish_refused(h, nm("mf.proc"), fd))
		return 1;
	close(fd);
	fd = open("/sys/kernel/uevent_seqnum", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open /sys/kernel/uevent_seqnum: %s", strerror(errno));
	if (publish_refused(h, nm("mf.sysfs"), fd))
		return 1;
	close(fd);
	/* ramfs: memory, but not shmem (no seals, not what exporters make) */
	fd = file_on_fresh_mount("ramfs", &merr);
	if (merr) {
		nvb_close(h);
		SKIP("cannot mount ramfs (%s)", strerror(merr));
	}
	CHECK(fd >= 0, "open on ramfs: %s", strerror(-fd));
	CHECK(write(fd, "x", 1) == 1, "write");
	if (publish_refused(h, nm("mf.ramfs"), fd))
		return 1;
	close(fd);
	nvb_close(h);
	return 0;
}

/*
 * A FUSE file whose server never answers FLUSH, mounted at "/memfd:...":
 * its /proc/self/fd link ("/memfd:.../f") looks like a memfd's, so a
 * backend that went by the link would take it.
 */
static int t_publish_fuse_file(void)
{
	char mnt[64], file[80];
	struct nvb *h;
	pid_t srv;
	int fd, r, ret;

	OPEN(h);
	snprintf(mnt, sizeof(mnt), "/memfd:nvb-cf-%d", (int)getpid());
	snprintf(file, sizeof(file), "%s/f", mnt);
	r = fuse_hang_start(mnt, &srv);
	if (r) {
		rmdir(mnt);
		nvb_close(h);
		SKIP("cannot mount FUSE (%s)", strerror(-r));
	}
	fd = open(file, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fuse_hang_stop(mnt, srv);
		FAIL("open %s: %s", file, strerror(errno));
	}
	ret = publish_refused(h, nm("mf.fuse"), fd);
	nvb_close(h);
	fuse_hang_stop(mnt, srv);	/* first: our close() flushes, and no answer comes */
	close(fd);
	return ret;
}
