// SPDX-License-Identifier: GPL-2.0
/*
 * Latency of handing one memfd over: through /dev/nvbridge (PUBLISH, FETCH,
 * close of the fetched fd, UNPUBLISH so the name can be reused) against a
 * socketpair (sendmsg with SCM_RIGHTS, recvmsg, close of the received fd),
 * both in one process, in the same boot.  Not a test: it prints numbers.
 *
 * Usage: bench-latency [ITERATIONS]   (default 20000, 5 rounds; the best
 * round's mean is reported, as it is the least disturbed by the host.)
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "nvbtest.h"

#define ROUNDS 5

static int send_fd(int sock, int fd)
{
	char c = 'f';
	struct iovec iov = { &c, 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = { 0 };
	struct cmsghdr *cm;

	memset(&u, 0, sizeof(u));
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = u.buf;
	m.msg_controllen = sizeof(u.buf);
	cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &m, 0) == 1 ? 0 : -errno;
}

static int recv_fd(int sock)
{
	char c;
	struct iovec iov = { &c, 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = { 0 };
	struct cmsghdr *cm;
	int fd;

	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = u.buf;
	m.msg_controllen = sizeof(u.buf);
	if (recvmsg(sock, &m, MSG_CMSG_CLOEXEC) != 1)
		return -errno;
	cm = CMSG_FIRSTHDR(&m);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		return -EPROTO;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

struct ctx {
	int pub, fet, mfd, sv[2];
	unsigned char blob[64];
};

/* one full hand-over through the device; 0 or -errno */
static int op_device(struct ctx *c)
{
	uint64_t id;
	long r, fd;

	r = nvb_publish(c->pub, "bench/buffer", c->mfd, NVBRIDGE_ACCESS_OWNER, &id);
	if (r)
		return (int)r;
	fd = nvb_fetch(c->fet, "bench/buffer", NULL);
	if (fd < 0)
		return (int)fd;
	close((int)fd);
	return (int)nvb_unpublish(c->pub, id, NULL);
}

/* the same with a 64-byte blob (a fabric handle's size) */
static int op_device_blob(struct ctx *c)
{
	unsigned char got[64];
	uint64_t id;
	long r, fd;

	r = nvb_publish_ex(c->pub, "bench/blob", c->mfd, NVBRIDGE_ACCESS_OWNER, 0, 0,
			   c->blob, sizeof(c->blob), &id);
	if (r)
		return (int)r;
	fd = nvb_fetch_ex(c->fet, "bench/blob", 0, 0, got, sizeof(got), NULL);
	if (fd < 0)
		return (int)fd;
	close((int)fd);
	return (int)nvb_unpublish(c->pub, id, NULL);
}

/* FETCH + close of an entry that stays published */
static int op_fetch_only(struct ctx *c)
{
	long fd = nvb_fetch(c->fet, "bench/static", NULL);

	if (fd < 0)
		return (int)fd;
	close((int)fd);
	return 0;
}

static int op_socketpair(struct ctx *c)
{
	int r = send_fd(c->sv[0], c->mfd), fd;

	if (r)
		return r;
	fd = recv_fd(c->sv[1]);
	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

/* best mean over ROUNDS rounds of n/ROUNDS operations, in ns per op */
static double measure(const char *what, int (*op)(struct ctx *), struct ctx *c,
		      long n)
{
	long per = n / ROUNDS > 0 ? n / ROUNDS : 1;
	double best = 0;

	for (long i = 0; i < per / 10 + 10; i++) {	/* warm up */
		int r = op(c);

		if (r) {
			fprintf(stderr, "%s: %s\n", what, strerror(-r));
			exit(1);
		}
	}
	for (int round = 0; round < ROUNDS; round++) {
		uint64_t t0 = nvb_now_ns();
		double ns;

		for (long i = 0; i < per; i++) {
			int r = op(c);

			if (r) {
				fprintf(stderr, "%s: %s\n", what, strerror(-r));
				exit(1);
			}
		}
		ns = (double)(nvb_now_ns() - t0) / (double)per;
		if (round == 0 || ns < best)
			best = ns;
	}
	printf("%-52s %10.0f ns/op\n", what, best);
	return best;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	struct ctx c;
	double dev, devb, fetch, sock;

	setvbuf(stdout, NULL, _IOLBF, 0);
	memset(&c, 0, sizeof(c));
	nvb_random(c.blob, sizeof(c.blob));
	c.pub = nvb_open(0);
	c.fet = nvb_open(0);
	if (c.pub < 0 || c.fet < 0) {
		fprintf(stderr, "open %s: %s\n", NVB_DEV, strerror(-(c.pub < 0 ? c.pub : c.fet)));
		return 1;
	}
	c.mfd = memfd_create("bench", MFD_CLOEXEC);
	if (c.mfd < 0 || ftruncate(c.mfd, 1 << 20) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c.sv) < 0) {
		perror("setup");
		return 1;
	}
	if (nvb_publish(c.pub, "bench/static", c.mfd, NVBRIDGE_ACCESS_OWNER, NULL)) {
		fprintf(stderr, "publish bench/static failed\n");
		return 1;
	}
	printf("fd hand-over latency, %ld iterations in %d rounds (best round), one process\n",
	       n, ROUNDS);
	dev = measure("nvbridge: publish + fetch + close + unpublish", op_device, &c, n);
	devb = measure("nvbridge: the same with a 64-byte blob", op_device_blob, &c, n);
	fetch = measure("nvbridge: fetch + close (entry stays published)", op_fetch_only, &c, n);
	sock = measure("socketpair: SCM_RIGHTS send + recv + close", op_socketpair, &c, n);
	printf("ratio nvbridge publish+fetch+close / socketpair: %.2f\n", dev / sock);
	printf("ratio nvbridge (64-byte blob) / socketpair:      %.2f\n", devb / sock);
	printf("ratio nvbridge fetch+close / socketpair:         %.2f\n", fetch / sock);
	close(c.sv[0]);
	close(c.sv[1]);
	close(c.mfd);
	close(c.fet);
	close(c.pub);
	return 0;
}
