// SPDX-License-Identifier: GPL-2.0
/*
 * The ioctls from a 32-bit (i386) process: the structs have no implicit
 * padding and carry pointers as __u64, so compat_ioctl is the native
 * handler.  Freestanding (raw int $0x80 system calls) because the build
 * host has no 32-bit C library.  Exit status 0, or the number of the step
 * that failed.  Run by the e2e case compat_ioctl_32bit.
 */
#include <linux/nvbridge.h>

#define SYS_exit		1
#define SYS_open		5
#define SYS_close		6
#define SYS_read		3
#define SYS_ioctl		54
#define SYS_memfd_create	356
#define O_RDWR			2

static long sys3(long nr, long a, long b, long c)
{
	long r;

	__asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c)
			 : "memory");
	return r;
}

static void zero(void *p, unsigned int n)
{
	char *c = p;

	while (n--)
		*c++ = 0;
}

static void copy(char *d, const char *s)
{
	while ((*d++ = *s++))
		;
}

static int same(const char *a, const char *b, unsigned int n)
{
	while (n--)
		if (*a++ != *b++)
			return 0;
	return 1;
}

static int run(void)
{
	struct nvbridge_publish p;
	struct nvbridge_fetch f;
	struct nvbridge_info i;
	struct nvbridge_list l;
	struct nvbridge_entry_info rec[2];
	char blob[8];
	long dev, mfd, r;

	dev = sys3(SYS_open, (long)"/dev/nvbridge", O_RDWR, 0);
	if (dev < 0)
		return 1;
	zero(&i, sizeof(i));
	i.size = sizeof(i);
	if (sys3(SYS_ioctl, dev, NVBRIDGE_IOC_INFO, (long)&i) || i.abi_version != 2)
		return 2;
	mfd = sys3(SYS_memfd_create, (long)"c32", 0, 0);
	if (mfd < 0)
		return 3;
	zero(&p, sizeof(p));
	p.size = sizeof(p);
	p.fd = mfd;
	p.access = NVBRIDGE_ACCESS_SCOPE;
	p.blob = (unsigned long)"abc";
	p.blob_len = 3;
	copy(p.name, "c32.x");
	if (sys3(SYS_ioctl, dev, NVBRIDGE_IOC_PUBLISH, (long)&p) || !p.id)
		return 4;
	zero(&f, sizeof(f));
	f.size = sizeof(f);
	f.blob = (unsigned long)blob;
	f.blob_cap = sizeof(blob);
	copy(f.name, "c32.x");
	r = sys3(SYS_ioctl, dev, NVBRIDGE_IOC_FETCH, (long)&f);
	if (r <= 0 || f.id != p.id || f.blob_len != 3 || !same(blob, "abc", 3) ||
	    !(f.entry_flags & NVBRIDGE_ENTRY_HAS_FD))
		return 5;
	sys3(SYS_close, r, 0, 0);
	zero(&l, sizeof(l));
	l.size = sizeof(l);
	l.entries = (unsigned long)rec;
	l.count = 2;
	l.entry_size = sizeof(rec[0]);
	if (sys3(SYS_ioctl, dev, NVBRIDGE_IOC_LIST, (long)&l) != 1 ||
	    rec[0].id != p.id || !same(rec[0].name, "c32.x", 6))
		return 6;
	sys3(SYS_close, dev, 0, 0);
	return 0;
}

void _start(void)
{
	sys3(SYS_exit, run(), 0, 0);
	for (;;)
		;
}
