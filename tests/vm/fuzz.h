/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A structure-aware ioctl fuzzer for /dev/nvbridge, run inside the test VM
 * as one e2e case (tests/vm/e2e.c, "ioctl_fuzz").  Seeded and with a fixed
 * iteration count, so a failure replays: NVB_FUZZ_SEED and NVB_FUZZ_ITERS
 * override the defaults.  Several processes, each with several threads,
 * issue valid and near-valid calls: every command (and corrupted command
 * numbers), struct sizes around each boundary, flag bits, names that are
 * valid, colliding, unterminated or bad, fds of many types (device files of
 * each open mode, memfd, pipe, eventfd, sockets, /dev/null, a directory),
 * blob and array pointers that are valid, NULL, unmapped or kernel
 * addresses, and reads of odd sizes.  Any return value is accepted; the
 * verdict is the kernel's: tests/vm/run fails the run on any oops,
 * WARNING, KASAN or lockdep report, and the runner on leftover entries.
 */
#ifndef NVB_VM_FUZZ_H
#define NVB_VM_FUZZ_H

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nvbtest.h"

#define FZ_SEED		0x6e766272ull
#define FZ_ITERS	4000	/* per thread */
#define FZ_PROCS	2
#define FZ_THREADS	3
#define FZ_DEVS		6

struct fz_pool {
	int dev[FZ_DEVS];	/* nvbridge files: RDWR, RDONLY, NONBLOCK... */
	int other[8];		/* files of other kinds */
};

/*
 * Each thread has its own argument page: a page shared between threads
 * would let one thread's random bytes land in another's FETCH between
 * its setup and the ioctl, so a replay of a seed would not be the same
 * run (and a wait could become one with no deadline).
 */
struct fz_thread {
	struct fz_pool *pool;
	unsigned char *page;	/* two pages; the second is PROT_NONE */
	uint64_t rng;
	unsigned int iters;
	volatile int done;
};

static uint64_t fz_next(uint64_t *s)
{
	/* xorshift64* */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static uint32_t fz_below(uint64_t *s, uint32_t n)
{
	return (uint32_t)(fz_next(s) % n);
}

static const char *const fz_names[] = {
	"fz/a", "fz/b", "fz/a/b", "fz", "", "fz/aa", "x", "fz/c",
};

static void fz_name(uint64_t *s, char *name)
{
	unsigned int k = fz_below(s, 10);

	memset(name, 0, NVBRIDGE_NAME_MAX);
	if (k < 8) {
		strcpy(name, fz_names[k]);
	} else if (k == 8) {	/* unterminated, valid characters */
		memset(name, 'z', NVBRIDGE_NAME_MAX);
	} else {		/* random bytes */
		for (int i = 0; i < NVBRIDGE_NAME_MAX; i++)
			name[i] = (char)fz_next(s);
	}
}

static int fz_fd(struct fz_thread *t)
{
	switch (fz_below(&t->rng, 5)) {
	case 0:
		return NVBRIDGE_NO_FD;
	case 1:
		return t->pool->dev[fz_below(&t->rng, FZ_DEVS)];
	case 2:
		return (int)fz_next(&t->rng);
	default:
		return t->pool->other[fz_below(&t->rng, 8)];
	}
}

/* A user pointer: valid, NULL, at the end of a page, unmapped, kernel. */
static uint64_t fz_ptr(struct fz_thread *t, uint32_t len)
{
	unsigned char *p = t->page;

	switch (fz_below(&t->rng, 6)) {
	case 0:
		return 0;
	case 1:
		return (uintptr_t)(p + 4096 - (len % 4096));	/* up to the hole */
	case 2:
		return (uintptr_t)(p + 4096);			/* PROT_NONE */
	case 3:
		return 0xffffffff81000000ull;			/* kernel */
	default:
		return (uintptr_t)p;
	}
}

static uint32_t fz_size(uint64_t *s, uint32_t ver0)
{
	static const int32_t d[] = { 0, 0, 0, -1, 1, 8, -8, 4096, 4097, 8192 };
	unsigned int k = fz_below(s, 10);

	if (k >= 7)
		return (uint32_t)d[k];
	return (uint32_t)((int32_t)ver0 + d[k]);
}

static uint32_t fz_flags(uint64_t *s, uint32_t all)
{
	switch (fz_below(s, 4)) {
	case 0:
		return 0;
	case 1:
		return (uint32_t)fz_next(s);
	default:
		return (uint32_t)fz_next(s) & all;
	}
}

static unsigned int fz_cmd(struct fz_thread *t, unsigned int *ver0)
{
	static const struct { unsigned int cmd, ver0; } c[] = {
		{ NVBRIDGE_IOC_PUBLISH, NVBRIDGE_PUBLISH_SIZE_VER0 },
		{ NVBRIDGE_IOC_FETCH, NVBRIDGE_FETCH_SIZE_VER0 },
		{ NVBRIDGE_IOC_UNPUBLISH, NVBRIDGE_UNPUBLISH_SIZE_VER0 },
		{ NVBRIDGE_IOC_WATCH, NVBRIDGE_WATCH_SIZE_VER0 },
		{ NVBRIDGE_IOC_UNWATCH, NVBRIDGE_WATCH_SIZE_VER0 },
		{ NVBRIDGE_IOC_LIST, NVBRIDGE_LIST_SIZE_VER0 },
		{ NVBRIDGE_IOC_INFO, NVBRIDGE_INFO_SIZE_VER0 },
	};
	unsigned int k = fz_below(&t->rng, 7), cmd = c[k].cmd;

	*ver0 = c[k].ver0;
	switch (fz_below(&t->rng, 12)) {
	case 0:		/* another size in the number */
		return (cmd & ~(_IOC_SIZEMASK << _IOC_SIZESHIFT)) |
		       (fz_below(&t->rng, 256) << _IOC_SIZESHIFT);
	case 1:		/* another direction */
		return cmd ^ (fz_below(&t->rng, 3) + 1) << _IOC_DIRSHIFT;
	case 2:		/* the old magic, or another number */
		return fz_below(&t->rng, 2) ?
		       (cmd & ~(_IOC_TYPEMASK << _IOC_TYPESHIFT)) |
		       (0xB8u << _IOC_TYPESHIFT) : cmd + 0x10;
	default:
		return cmd;
	}
}

/* One call; its result is not judged. */
static void fz_one(struct fz_thread *t)
{
	unsigned char *arg = t->page;
	int dev = t->pool->dev[fz_below(&t->rng, FZ_DEVS)];
	unsigned int ver0, cmd;
	uint32_t size;
	long r;

	if (fz_below(&t->rng, 16) == 0) {	/* read() of any size */
		size_t n = fz_below(&t->rng, 3) ? NVBRIDGE_EVENT_SIZE *
			   (1 + fz_below(&t->rng, 4)) : fz_below(&t->rng, 300);

		/* only O_NONBLOCK files: a blocking read would wait */
		if (read(t->pool->dev[2], (void *)(uintptr_t)fz_ptr(t, (uint32_t)n),
			 n) > 0)
			return;
		return;
	}
	cmd = fz_cmd(t, &ver0);
	size = fz_size(&t->rng, ver0);
	memset(arg, 0, 4096);
	for (uint32_t i = 0; i < 4096 && fz_below(&t->rng, 8) == 0; i += 8)
		arg[fz_below(&t->rng, 4096)] = (unsigned char)fz_next(&t->rng);
	switch (_IOC_NR(cmd)) {
	case 0x01: {
		struct nvbridge_publish *p = (void *)arg;
		uint32_t len = fz_below(&t->rng, 3) ? fz_below(&t->rng, 64) :
			       fz_below(&t->rng, 70000);

		p->flags = fz_flags(&t->rng, 0);
		p->fd = fz_fd(t);
		p->access = fz_below(&t->rng, 6);
		p->uid = fz_below(&t->rng, 4) ? 0 : fz_below(&t->rng, 3000);
		p->gid = fz_below(&t->rng, 4) ? 0 : fz_below(&t->rng, 3000);
		p->blob_len = len;
		p->blob = fz_ptr(t, len);
		fz_name(&t->rng, p->name);
		break;
	}
	case 0x02: {
		struct nvbridge_fetch *f = (void *)arg;

		f->flags = fz_flags(&t->rng, NVBRIDGE_FETCH_FLAGS_ALL);
		/* never forever: the thread would wait for nobody */
		f->timeout_ns = fz_below(&t->rng, 2) ? 0 :
				fz_below(&t->rng, 2000000);
		f->blob_cap = fz_below(&t->rng, 3) ? fz_below(&t->rng, 128) :
			      (uint32_t)fz_next(&t->rng);
		f->blob = fz_ptr(t, f->blob_cap);
		f->expect_uid = fz_below(&t->rng, 2) ? 0 : fz_below(&t->rng, 2);
		fz_name(&t->rng, f->name);
		break;
	}
	case 0x03: {
		struct nvbridge_unpublish *u = (void *)arg;

		u->id = fz_below(&t->rng, 2) ? 0 : fz_below(&t->rng, 200);
		if (fz_below(&t->rng, 2))
			fz_name(&t->rng, u->name);
		break;
	}
	case 0x04:
	case 0x05: {
		struct nvbridge_watch *w = (void *)arg;

		w->flags = fz_flags(&t->rng, NVBRIDGE_WATCH_FLAGS_ALL);
		w->id = fz_below(&t->rng, 80);
		if (_IOC_NR(cmd) == 0x04 || fz_below(&t->rng, 4) == 0)
			fz_name(&t->rng, w->name);
		break;
	}
	case 0x06: {
		struct nvbridge_list *l = (void *)arg;

		l->cursor = fz_below(&t->rng, 2) ? 0 : fz_next(&t->rng);
		l->count = fz_below(&t->rng, 200);
		l->entry_size = fz_size(&t->rng, NVBRIDGE_ENTRY_INFO_SIZE_VER0);
		l->entries = fz_ptr(t, l->count * l->entry_size);
		l->flags = fz_flags(&t->rng, 0);
		break;
	}
	default:
		break;
	}
	*(uint32_t *)arg = size;
	r = ioctl(dev, cmd, fz_below(&t->rng, 20) ? (void *)arg :
		  (void *)(uintptr_t)fz_ptr(t, size));
	if (r > 2 && _IOC_NR(cmd) == 0x02)
		close((int)r);			/* a fetched fd */
}

static void *fz_thread_fn(void *arg)
{
	struct fz_thread *t = arg;

	for (unsigned int i = 0; i < t->iters; i++)
		fz_one(t);
	t->done = 1;
	return NULL;
}

static void fz_wake(int sig)
{
	(void)sig;
}

/*
 * A struct read from random bytes (an argument pointer into the page, a
 * command with another size) can be a FETCH_WAIT with no deadline for a
 * name nobody publishes.  The process's main thread interrupts its
 * fuzzing threads every FZ_KICK_MS with a signal whose handler does not
 * restart, so such a wait ends in -EINTR: the signal path of every
 * blocking call is fuzzed too, and the run always ends.
 */
#define FZ_KICK_MS	50

static int fz_alive(struct fz_thread *th, pthread_t *tid)
{
	int alive = 0;

	for (int i = 0; i < FZ_THREADS; i++) {
		if (th[i].done)
			continue;
		alive++;
		pthread_kill(tid[i], SIGUSR1);
	}
	return alive;
}

/* One fuzzing process: its own files, FZ_THREADS threads. 0 or -errno. */
static int fz_process(uint64_t seed, unsigned int iters)
{
	static const int modes[FZ_DEVS] = {
		O_RDWR, O_RDONLY, O_RDWR | O_NONBLOCK, O_WRONLY, O_RDWR, O_RDWR,
	};
	struct fz_thread th[FZ_THREADS];
	pthread_t tid[FZ_THREADS];
	struct sigaction sa = { .sa_handler = fz_wake };	/* no SA_RESTART */
	struct fz_pool pool;
	int sv[2], pfd[2];

	if (sigaction(SIGUSR1, &sa, NULL))
		return -errno;
	for (int i = 0; i < FZ_THREADS; i++) {
		th[i].page = mmap(NULL, 8192, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (th[i].page == MAP_FAILED ||
		    mprotect(th[i].page + 4096, 4096, PROT_NONE))
			return -errno;
	}
	for (int i = 0; i < FZ_DEVS; i++) {
		pool.dev[i] = open(NVB_DEV, modes[i] | O_CLOEXEC);
		if (pool.dev[i] < 0)
			return -errno;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) ||
	    pipe2(pfd, O_CLOEXEC))
		return -errno;
	pool.other[0] = memfd_create("fz", MFD_CLOEXEC);
	pool.other[1] = sv[0];
	pool.other[2] = pfd[0];
	pool.other[3] = eventfd(0, EFD_CLOEXEC);
	pool.other[4] = open("/dev/null", O_RDWR | O_CLOEXEC);
	pool.other[5] = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	pool.other[6] = open("/", O_PATH | O_CLOEXEC);
	pool.other[7] = pool.dev[0];
	for (int i = 0; i < FZ_THREADS; i++) {
		th[i].pool = &pool;
		th[i].rng = seed * 0x9e3779b97f4a7c15ull + (uint64_t)i + 1;
		th[i].iters = iters;
		th[i].done = 0;
		if (pthread_create(&tid[i], NULL, fz_thread_fn, &th[i]))
			return -EAGAIN;
	}
	while (fz_alive(th, tid))
		nvb_sleep_ms(FZ_KICK_MS);
	for (int i = 0; i < FZ_THREADS; i++)
		pthread_join(tid[i], NULL);
	return 0;
}

#endif /* NVB_VM_FUZZ_H */
