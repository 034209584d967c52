// SPDX-License-Identifier: MIT
/*
 * nvb-bench: rendezvous latency (a benchmark, not a test).
 *
 *  1. publish + fetch + close (+ unpublish, to publish again) of a memfd
 *     through the backend in use, against two socketpair SCM_RIGHTS
 *     baselines measured in the same run:
 *       - same process: sendmsg + recvmsg + close of the fd by one thread
 *         (no context switch, no wake-up: the floor of moving an fd);
 *       - cross process: A sends the fd to B, which is blocked in recvmsg,
 *         receives it, closes it and sends back a one-byte acknowledgement
 *         that A waits for: one round trip between two processes, which is
 *         what every broker request is (the client waits for nvbridged).
 *     also fetch + close of an already published entry.
 *  2. event notification latency: publish in one thread, the watcher in
 *     another waits with nvb_event_read() (the library's io_uring) or
 *     epoll_wait() on nvb_event_fd() + a non-blocking read.
 *
 * usage: nvb-bench [-b kernel|broker] [-n ITERATIONS]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include "nvbridge.h"

static int64_t now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static double median_us(int64_t *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp64);
	return (double)v[n / 2] / 1000.0;
}

static double p99_us(int64_t *v, int n)
{
	return (double)v[(n * 99) / 100] / 1000.0;	/* v sorted by median_us */
}

static void die(const char *what, struct nvb *h, int err)
{
	fprintf(stderr, "nvb-bench: %s: %d %s\n", what, err, h ? nvb_last_error(h) : nvb_open_error());
	exit(1);
}

static int64_t scm_once(int sv[2], int fd)
{
	union { struct cmsghdr c; char b[CMSG_SPACE(sizeof(int))]; } cm;
	char byte = 0;
	struct iovec iov = { &byte, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			    .msg_controllen = sizeof(cm.b) };
	int64_t t0 = now();
	int got;

	memset(&cm, 0, sizeof(cm));
	cm.c.cmsg_level = SOL_SOCKET;
	cm.c.cmsg_type = SCM_RIGHTS;
	cm.c.cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(&cm.c), &fd, sizeof(int));
	if (sendmsg(sv[0], &m, 0) != 1)
		die("sendmsg", NULL, -errno);
	m.msg_controllen = sizeof(cm.b);
	if (recvmsg(sv[1], &m, MSG_CMSG_CLOEXEC) != 1)
		die("recvmsg", NULL, -errno);
	memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
	close(got);
	return now() - t0;
}

/*
 * Cross-process round trip: B (forked, blocked in recvmsg) receives the fd
 * over a SOCK_SEQPACKET socketpair (the broker's socket type), closes it and
 * acknowledges with one byte; A times send -> acknowledgement.
 */
struct xpeer {
	int s;
	pid_t pid;
};

static void xpeer_start(struct xpeer *x)
{
	union { struct cmsghdr c; char b[CMSG_SPACE(sizeof(int))]; } cm;
	char byte = 0;
	struct iovec iov = { &byte, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		die("socketpair", NULL, -errno);
	x->pid = fork();
	if (x->pid < 0)
		die("fork", NULL, -errno);
	if (x->pid == 0) {
		close(sv[0]);
		for (;;) {
			int got;

			m.msg_control = cm.b;
			m.msg_controllen = sizeof(cm.b);
			if (recvmsg(sv[1], &m, MSG_CMSG_CLOEXEC) != 1)
				_exit(0);
			if (CMSG_FIRSTHDR(&m)) {
				memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
				close(got);
			}
			if (send(sv[1], &byte, 1, 0) != 1)
				_exit(1);
		}
	}
	close(sv[1]);
	x->s = sv[0];
}

static int64_t xpeer_once(struct xpeer *x, int fd)
{
	union { struct cmsghdr c; char b[CMSG_SPACE(sizeof(int))]; } cm;
	char byte = 0;
	struct iovec iov = { &byte, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			    .msg_controllen = sizeof(cm.b) };
	int64_t t0 = now();

	memset(&cm, 0, sizeof(cm));
	cm.c.cmsg_level = SOL_SOCKET;
	cm.c.cmsg_type = SCM_RIGHTS;
	cm.c.cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(&cm.c), &fd, sizeof(int));
	if (sendmsg(x->s, &m, 0) != 1)
		die("sendmsg", NULL, -errno);
	if (recv(x->s, &byte, 1, 0) != 1)
		die("recv ack", NULL, -errno);
	return now() - t0;
}

static void xpeer_stop(struct xpeer *x)
{
	int st;

	close(x->s);
	waitpid(x->pid, &st, 0);
}

/* ---- event latency ---- */
struct evb {
	struct nvb *w;
	int mode;		/* 0 io_uring (nvb_event_read), 1 epoll */
	int n;
	_Atomic int64_t t0;
	_Atomic int go, done;
	int64_t *lat;
};

static void *watcher(void *arg)
{
	struct evb *b = arg;
	struct nvb_event ev[4];
	int ep = -1;
	struct epoll_event ee = { .events = EPOLLIN };

	if (b->mode == 1) {
		ep = epoll_create1(EPOLL_CLOEXEC);
		epoll_ctl(ep, EPOLL_CTL_ADD, nvb_event_fd(b->w), &ee);
	}
	for (int i = 0; i < b->n; i++) {
		int got = 0;

		atomic_store(&b->go, i + 1);
		while (got < 1) {
			int r;

			if (b->mode == 0) {
				r = nvb_event_read(b->w, ev, 1, -1);
			} else {
				epoll_wait(ep, &ee, 1, -1);
				r = nvb_event_read(b->w, ev, 1, 0);
				if (r == -EAGAIN)
					r = 0;
			}
			if (r < 0)
				die("event read", b->w, r);
			got += r;
		}
		b->lat[i] = now() - atomic_load(&b->t0);
		/* drain the REVOKED that follows */
		while (got < 2) {
			int r = nvb_event_read(b->w, ev, 1, 1000000000LL);

			if (r < 0)
				die("event drain", b->w, r);
			got += r;
		}
		atomic_store(&b->done, i + 1);
	}
	if (ep >= 0)
		close(ep);
	return NULL;
}

static double event_latency(struct nvb *p, struct nvb *w, int mode, int n, double *p99)
{
	struct evb b = { .w = w, .mode = mode, .n = n };
	pthread_t t;

	b.lat = calloc((size_t)n, sizeof(int64_t));
	pthread_create(&t, NULL, watcher, &b);
	for (int i = 0; i < n; i++) {
		uint64_t id;
		int ret;

		while (atomic_load(&b.go) != i + 1)
			;
		usleep(20);	/* let the watcher block */
		atomic_store(&b.t0, now());
		ret = nvb_publish(p, "bench/ev", -1, NULL, 0, NULL, &id);
		if (ret)
			die("publish", p, ret);
		ret = nvb_unpublish(p, id, NULL);
		if (ret)
			die("unpublish", p, ret);
		while (atomic_load(&b.done) != i + 1)
			;
	}
	pthread_join(t, NULL);
	double m = median_us(b.lat, n);

	*p99 = p99_us(b.lat, n);
	free(b.lat);
	return m;
}

int main(int argc, char **argv)
{
	int n = 20000, o, sv[2], fd, got, ret;
	struct nvb *a, *b;
	int64_t *lat;
	double m_scm, m_rtt, m_pf, m_f, m_pub, m_pubnf, m_unp, p;

	while ((o = getopt(argc, argv, "b:n:")) != -1) {
		if (o == 'b')
			setenv("NVBRIDGE_BACKEND", optarg, 1);
		else if (o == 'n')
			n = atoi(optarg);
		else {
			fprintf(stderr, "usage: nvb-bench [-b kernel|broker] [-n ITERATIONS]\n");
			return 2;
		}
	}
	if (n < 100)
		n = 100;
	lat = calloc((size_t)n, sizeof(int64_t));
	if ((ret = nvb_open(NULL, &a)) || (ret = nvb_open(NULL, &b)))
		die("open", NULL, ret);
	fd = memfd_create("bench", MFD_CLOEXEC);
	if (ftruncate(fd, 1 << 20))
		die("ftruncate", NULL, -errno);
	socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);

	/*
	 * The baselines and the rendezvous are measured interleaved, in rounds,
	 * so that a slow or fast phase of the host (other load, frequency,
	 * which CPUs the processes land on) affects all of them alike.
	 */
	{
		struct xpeer x;
		int64_t *la = calloc((size_t)n, sizeof(int64_t));
		int64_t *lb = calloc((size_t)n, sizeof(int64_t));
		int64_t *lf = calloc((size_t)n, sizeof(int64_t));
		const int rounds = 10;
		int k = 0;

		xpeer_start(&x);
		if ((ret = nvb_publish(a, "bench/f", fd, NULL, 0, NULL, NULL)))
			die("publish", a, ret);
		for (int i = 0; i < 1000; i++) {	/* warm up */
			uint64_t id;

			scm_once(sv, fd);
			xpeer_once(&x, fd);
			if ((ret = nvb_publish(a, "bench/pf", fd, NULL, 0, NULL, &id)) ||
			    (ret = nvb_fetch(b, "bench/pf", NULL, NULL, 0, NULL, &got)))
				die("warm-up", b, ret);
			close(got);
			if ((ret = nvb_unpublish(a, id, NULL)))
				die("unpublish", a, ret);
		}
		for (int r = 0; r < rounds; r++) {
			int end = r == rounds - 1 ? n : (n / rounds) * (r + 1);

			for (int i = k; i < end; i++)
				la[i] = scm_once(sv, fd);
			for (int i = k; i < end; i++)
				lb[i] = xpeer_once(&x, fd);
			for (int i = k; i < end; i++) {
				uint64_t id;
				int64_t t0 = now();

				if ((ret = nvb_publish(a, "bench/pf", fd, NULL, 0, NULL, &id)))
					die("publish", a, ret);
				if ((ret = nvb_fetch(b, "bench/pf", NULL, NULL, 0, NULL, &got)))
					die("fetch", b, ret);
				close(got);
				lat[i] = now() - t0;
				if ((ret = nvb_unpublish(a, id, NULL)))
					die("unpublish", a, ret);
			}
			for (int i = k; i < end; i++) {
				int64_t t0 = now();

				if ((ret = nvb_fetch(b, "bench/f", NULL, NULL, 0, NULL, &got)))
					die("fetch", b, ret);
				close(got);
				lf[i] = now() - t0;
			}
			k = end;
		}
		xpeer_stop(&x);
		if ((ret = nvb_unpublish(a, 0, "bench/f")))
			die("unpublish", a, ret);
		m_scm = median_us(la, n);
		m_rtt = median_us(lb, n);
		m_pf = median_us(lat, n);
		m_f = median_us(lf, n);
		free(la);
		free(lb);
		free(lf);
	}

	/* the parts */
	{
		int64_t *l2 = calloc((size_t)n, sizeof(int64_t)), *l3 = calloc((size_t)n, sizeof(int64_t));

		for (int i = 0; i < n; i++) {
			uint64_t id;
			int64_t t0 = now();

			if ((ret = nvb_publish(a, "bench/p", fd, NULL, 0, NULL, &id)))
				die("publish", a, ret);
			int64_t t1 = now();

			if ((ret = nvb_unpublish(a, id, NULL)))
				die("unpublish", a, ret);
			lat[i] = t1 - t0;
			l3[i] = now() - t1;
			t0 = now();
			if ((ret = nvb_publish(a, "bench/p", -1, "x", 1, NULL, &id)))
				die("publish", a, ret);
			l2[i] = now() - t0;
			if ((ret = nvb_unpublish(a, id, NULL)))
				die("unpublish", a, ret);
		}
		m_pub = median_us(lat, n);
		m_pubnf = median_us(l2, n);
		m_unp = median_us(l3, n);
		free(l2);
		free(l3);
	}

	{
		struct utsname u;
		time_t t = time(NULL);
		char date[32];

		uname(&u);
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&t));
		printf("nvb-bench: backend %s, %d iterations, medians; %s, %s %s, %ld CPUs\n",
		       nvb_backend_name(nvb_backend(a)), n, date, u.nodename, u.release,
		       sysconf(_SC_NPROCESSORS_ONLN));
	}
	printf("  %-44s %8.2f us\n", "[A] socketpair SCM_RIGHTS send+recv+close", m_scm);
	printf("  %-44s %8.2f us\n", "[B] cross-process SCM_RIGHTS round trip", m_rtt);
	printf("  %-44s %8.2f us  (%.2fx A, %.2fx B)\n", "publish+fetch+close", m_pf, m_pf / m_scm,
	       m_pf / m_rtt);
	printf("  %-44s %8.2f us  (%.2fx A, %.2fx B)\n", "fetch+close (entry already published)", m_f,
	       m_f / m_scm, m_f / m_rtt);
	printf("  %-44s %8.2f us\n", "publish of an fd", m_pub);
	printf("  %-44s %8.2f us\n", "publish of a 1-byte blob, no fd", m_pubnf);
	printf("  %-44s %8.2f us\n", "unpublish", m_unp);

	struct nvb *w;

	if ((ret = nvb_open(NULL, &w)))
		die("open", NULL, ret);
	if ((ret = nvb_watch(w, "bench/ev", 0, NULL)))
		die("watch", w, ret);
	int ne = n / 10 < 2000 ? n / 10 : 2000;
	double iu = event_latency(a, w, 0, ne, &p);

	printf("  %-44s %8.2f us  (p99 %.2f)\n", "event latency, io_uring (nvb_event_read)", iu, p);
	double ep = event_latency(a, w, 1, ne, &p);

	printf("  %-44s %8.2f us  (p99 %.2f)\n", "event latency, epoll + read", ep, p);
	if (nvb_backend(a) == NVB_BACKEND_KERNEL) {
		printf("  goal (issue 3): kernel publish+fetch+close within 1.0x of [A]: %.2fx, %s.\n"
		       "  [A] is the fair floor here: an ioctl, like send+recv in one thread, involves\n"
		       "  no other process and no wake-up.\n",
		       m_pf / m_scm, m_pf / m_scm <= 1.0 ? "met" : "NOT met");
	} else {
		printf("  goal (issue 3): broker publish+fetch+close within 3x of the socketpair round\n"
		       "  trip, judged against [B]: %.2fx, %s (against [A] it is %.2fx, %s).\n"
		       "  Why [B]: the issue names a round trip, and [A] is not one (one thread, no\n"
		       "  context switch, no wake-up). A broker publish+fetch is two cross-process\n"
		       "  round trips by construction (publisher <-> nvbridged, fetcher <-> nvbridged),\n"
		       "  so 2.0x [B] is the floor of any broker design; 3x [B] leaves 1.5x that floor.\n",
		       m_pf / m_rtt, m_pf / m_rtt <= 3.0 ? "met" : "NOT met",
		       m_pf / m_scm, m_pf / m_scm <= 3.0 ? "met" : "not met");
	}
	nvb_close(w);
	nvb_close(a);
	nvb_close(b);
	close(sv[0]);
	close(sv[1]);
	free(lat);
	return 0;
}
