/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Small helpers shared by the programs that run inside the test VM
 * (e2e.c, bench-latency.c, demo.c): thin ioctl wrappers that return the
 * ioctl result or -errno, and process plumbing.  Header-only on purpose:
 * every VM program is one statically linked translation unit.
 */
#ifndef NVB_VM_NVBTEST_H
#define NVB_VM_NVBTEST_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <linux/nvbridge.h>

#define NVB_DEV "/dev/nvbridge"

static inline int nvb_open(int extra_flags)
{
	int fd = open(NVB_DEV, O_RDWR | O_CLOEXEC | extra_flags);

	return fd < 0 ? -errno : fd;
}

static inline long nvb_ioctl(int fd, unsigned long req, void *arg)
{
	long r = ioctl(fd, req, arg);

	return r < 0 ? -errno : r;
}

static inline void nvb_set_name(char *dst, const char *name)
{
	size_t n = name ? strnlen(name, NVBRIDGE_NAME_MAX) : 0;

	memset(dst, 0, NVBRIDGE_NAME_MAX);
	memcpy(dst, name ? name : "", n);
}

/* PUBLISH; *id receives the entry id on success. */
static inline long nvb_publish_ex(int dfd, const char *name, int fd,
				  uint32_t access, uint32_t uid, uint32_t gid,
				  const void *blob, uint32_t blob_len,
				  uint64_t *id)
{
	struct nvbridge_publish p;
	long r;

	memset(&p, 0, sizeof(p));
	p.size = sizeof(p);
	p.fd = fd;
	p.access = access;
	p.uid = uid;
	p.gid = gid;
	p.blob = (uintptr_t)blob;
	p.blob_len = blob_len;
	nvb_set_name(p.name, name);
	r = nvb_ioctl(dfd, NVBRIDGE_IOC_PUBLISH, &p);
	if (id)
		*id = r == 0 ? p.id : 0;
	return r;
}

static inline long nvb_publish(int dfd, const char *name, int fd,
			       uint32_t access, uint64_t *id)
{
	return nvb_publish_ex(dfd, name, fd, access, 0, 0, NULL, 0, id);
}

/* FETCH; returns the new fd, 0 (no file) or -errno; *out may be NULL. */
static inline long nvb_fetch_ex(int dfd, const char *name, uint32_t flags,
				int64_t timeout_ns, void *blob, uint32_t cap,
				struct nvbridge_fetch *out)
{
	struct nvbridge_fetch f;
	long r;

	memset(&f, 0, sizeof(f));
	f.size = sizeof(f);
	f.flags = flags;
	f.timeout_ns = timeout_ns;
	f.blob = (uintptr_t)blob;
	f.blob_cap = cap;
	nvb_set_name(f.name, name);
	r = nvb_ioctl(dfd, NVBRIDGE_IOC_FETCH, &f);
	if (out)
		*out = f;
	return r;
}

static inline long nvb_fetch(int dfd, const char *name,
			     struct nvbridge_fetch *out)
{
	return nvb_fetch_ex(dfd, name, 0, 0, NULL, 0, out);
}

static inline long nvb_unpublish(int dfd, uint64_t id, const char *name)
{
	struct nvbridge_unpublish u;

	memset(&u, 0, sizeof(u));
	u.size = sizeof(u);
	u.id = id;
	nvb_set_name(u.name, name);
	return nvb_ioctl(dfd, NVBRIDGE_IOC_UNPUBLISH, &u);
}

static inline long nvb_watch(int dfd, const char *name, uint32_t flags,
			     uint64_t *id)
{
	struct nvbridge_watch w;
	long r;

	memset(&w, 0, sizeof(w));
	w.size = sizeof(w);
	w.flags = flags;
	nvb_set_name(w.name, name);
	r = nvb_ioctl(dfd, NVBRIDGE_IOC_WATCH, &w);
	if (id)
		*id = r == 0 ? w.id : 0;
	return r;
}

static inline long nvb_unwatch(int dfd, uint64_t id)
{
	struct nvbridge_watch w;

	memset(&w, 0, sizeof(w));
	w.size = sizeof(w);
	w.id = id;
	return nvb_ioctl(dfd, NVBRIDGE_IOC_UNWATCH, &w);
}

static inline long nvb_info(int dfd, struct nvbridge_info *info)
{
	memset(info, 0, sizeof(*info));
	info->size = sizeof(*info);
	return nvb_ioctl(dfd, NVBRIDGE_IOC_INFO, info);
}

/* LIST into recs (count records of entry_size bytes). */
static inline long nvb_list(int dfd, uint64_t *cursor, void *recs,
			    uint32_t count, uint32_t entry_size)
{
	struct nvbridge_list l;
	long r;

	memset(&l, 0, sizeof(l));
	l.size = sizeof(l);
	l.cursor = *cursor;
	l.entries = (uintptr_t)recs;
	l.count = count;
	l.entry_size = entry_size;
	r = nvb_ioctl(dfd, NVBRIDGE_IOC_LIST, &l);
	if (r >= 0)
		*cursor = l.cursor;
	return r;
}

/* Wait up to timeout_ms for one event record; 0, -ETIMEDOUT or -errno. */
static inline int nvb_next_event(int dfd, struct nvbridge_event *ev,
				 int timeout_ms)
{
	struct pollfd p = { .fd = dfd, .events = POLLIN };
	ssize_t n;
	int r;

	r = poll(&p, 1, timeout_ms);
	if (r < 0)
		return -errno;
	if (r == 0)
		return -ETIMEDOUT;
	n = read(dfd, ev, sizeof(*ev));
	if (n < 0)
		return -errno;
	if (n != (ssize_t)sizeof(*ev))
		return -EIO;
	return 0;
}

static inline uint64_t nvb_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void nvb_random(void *buf, size_t len)
{
	unsigned char *p = buf;

	while (len) {
		ssize_t n = getrandom(p, len, 0);

		if (n <= 0)
			continue;
		p += n;
		len -= (size_t)n;
	}
}

static inline void nvb_sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

#endif /* NVB_VM_NVBTEST_H */
