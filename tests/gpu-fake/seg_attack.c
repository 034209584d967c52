// SPDX-License-Identifier: MIT
/*
 * Attacks on segments and transfer batches (a hostile review of issue 15):
 * a careless-but-legal application (its eventfd closed and reused while a
 * freed batch is in flight, fork() with the library thread running), a
 * flood of events that overflows the handle's queue with many segments
 * open, a broker that goes away under a prefetch.  Each case failed before
 * its fix (the commit that added it says how).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include "fake.h"

#define SEG_SIZE	(2u << 20)	/* one fake granule */

/* A second, private broker with extra options (the suite's stays untouched). */
static char own_sock[108];
static pid_t own_pid;

static void own_broker_stop(void)
{
	if (own_pid > 0) {
		kill(own_pid, SIGKILL);
		waitpid(own_pid, NULL, 0);
		own_pid = 0;
	}
	unlink(own_sock);
}

static int own_broker_start(const char *max_events)
{
	const char *bin = getenv("NVB_TEST_DAEMON");

	snprintf(own_sock, sizeof(own_sock), "/tmp/nvb-segatk-%d.sock", (int)getpid());
	unlink(own_sock);
	own_pid = fork();
	if (own_pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0)
			dup2(null, 2);
		execl(bin, bin, "--socket", own_sock, "--max-events", max_events, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		int up;

		strcpy(sa.sun_path, own_sock);
		up = s >= 0 && !connect(s, (struct sockaddr *)&sa, sizeof(sa));
		if (s >= 0)
			close(s);
		if (up)
			return 0;
		usleep(10000);
	}
	own_broker_stop();
	return -1;
}

static int own_nvb_open(struct nvb **h)
{
	struct nvb_opts o = { .sz = sizeof(o), .backend = NVB_BACKEND_BROKER,
			      .socket_path = own_sock };

	return nvb_open(&o, h);
}

/*
 * An exporter process on the private broker: publishes n segments
 * "<prefix>.<i>" of random bytes, says 'R', then waits to be killed.
 */
static pid_t peer_many(const char *prefix, int n)
{
	int up[2];
	char c = 0;
	pid_t pid;

	if (pipe(up))
		return -1;
	pid = fork();
	if (pid == 0) {
		struct nvb_gpu *g;
		struct nvb *h;

		close(up[0]);
		c = 'R';
		if (nvb_gpu_open(NULL, &g) || own_nvb_open(&h))
			c = 'E';
		for (int i = 0; c == 'R' && i < n; i++) {
			struct nvb_gpu_buf *b;
			struct nvb_gpu_seg *s;
			char name[64];

			snprintf(name, sizeof(name), "%s.%d", prefix, i);
			if (nvb_gpu_alloc(g, 0, SEG_SIZE, 0, &b) ||
			    nvb_gpu_seg_publish(g, h, name, b, NULL, &s))
				c = 'E';
			else
				fake_random((void *)(uintptr_t)nvb_gpu_buf_ptr(b), 4096);
		}
		if (write(up[1], &c, 1) != 1 || c != 'R')
			_exit(1);
		for (;;)
			pause();
	}
	close(up[1]);
	if (pid < 0 || read(up[0], &c, 1) != 1 || c != 'R') {
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
		pid = -1;
	}
	close(up[0]);
	return pid;
}

/* A loopback: this process publishes a segment and transfers against it. */
struct loop {
	struct nvb_gpu *g;
	struct nvb *h;
	struct nvb_gpu_buf *lb, *rb;
	struct nvb_gpu_seg *seg;
	struct nvb_gpu_xfer_req r;	/* a READ of 4 KiB from the segment */
};

static int loop_open(struct loop *l, const char *name)
{
	struct nvb_gpu_batch *b;

	if (nvb_gpu_open(NULL, &l->g) || fake_nvb_open(&l->h) ||
	    nvb_gpu_alloc(l->g, 0, SEG_SIZE, 0, &l->lb) || nvb_gpu_alloc(l->g, 0, SEG_SIZE, 0, &l->rb) ||
	    nvb_gpu_seg_publish(l->g, l->h, name, l->rb, NULL, &l->seg))
		return -1;
	fake_random((void *)(uintptr_t)nvb_gpu_buf_ptr(l->rb), 4096);
	l->r = (struct nvb_gpu_xfer_req){ NVB_GPU_XFER_READ, 0, nvb_gpu_buf_ptr(l->lb), l->seg, 0, 4096 };
	/* one batch first: the device's lazy setup is done before fds are counted */
	if (nvb_gpu_xfer_submit(l->g, &l->r, 1, NULL, &b))
		return -1;
	if (nvb_gpu_batch_wait(b, 5000000000LL))
		return -1;
	nvb_gpu_batch_free(b);
	return 0;
}

static void loop_close(struct loop *l)
{
	nvb_gpu_seg_close(l->seg);
	nvb_gpu_free(l->rb);
	nvb_gpu_free(l->lb);
	nvb_gpu_close(l->g);
	nvb_close(l->h);
}

/*
 * NVB_GPU_XFER_EVENTFD, then nvb_gpu_batch_free() while the batch runs (the
 * library frees it when it completes) and close() of the eventfd: legal,
 * the application no longer cares.  The fd number is reused by a file.
 * Before the fix the completion wrote 8 bytes (the counter's 1) into that
 * file; the library now writes only to its own duplicate of the eventfd.
 */
static int t_efd_closed_and_reused(void)
{
	struct nvb_gpu_batch *b;
	struct stat st;
	struct loop l;
	int efd, mfd, fds;

	CHECK(loop_open(&l, "atk.efd") == 0);
	fds = proc_fds(0);
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	CHECK(efd >= 0);
	struct nvb_gpu_xfer_opts o = { .sz = sizeof(o), .flags = NVB_GPU_XFER_EVENTFD, .efd = efd };

	setenv("NVB_FAKE_HOSTFN_DELAY_MS", "300", 1);
	OK(nvb_gpu_xfer_submit(l.g, &l.r, 1, &o, &b));
	nvb_gpu_batch_free(b);		/* fire and forget */
	close(efd);
	mfd = memfd_create("victim", MFD_CLOEXEC);
	CHECK(mfd >= 0);
	if (mfd != efd) {		/* the number the library remembered */
		CHECK(dup2(mfd, efd) == efd);
		close(mfd);
	}
	usleep(800000);			/* the batch completed meanwhile */
	CHECK(fstat(efd, &st) == 0);
	EXPECT(st.st_size, 0);		/* before the fix: 8 */
	close(efd);
	unsetenv("NVB_FAKE_HOSTFN_DELAY_MS");
	EXPECT(proc_fds(0), fds);	/* the duplicate went with the batch */

	/* an efd that is no open file: -EBADF at submit, as a negative one */
	o.efd = 1000;
	EXPECT(nvb_gpu_xfer_submit(l.g, &l.r, 1, &o, &b), -EBADF);
	EXPECT(proc_fds(0), fds);
	loop_close(&l);
	return 0;
}

/* Waits for pid up to ms; its wait status, or -1 (then it is killed). */
static int wait_child(pid_t pid, int ms)
{
	int st;

	for (int i = 0; i < ms / 10; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return st;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

/*
 * fork() with the library thread running: the child has the engine's
 * memory but not its thread.  Before the fix a batch the child submitted
 * was accepted and never completed (nothing reaps it: nvb_gpu_batch_wait
 * with no timeout hung, and its host function woke the parent's thread
 * through the shared eventfd).  Now the child's calls fail with -ECHILD, as
 * those on an inherited struct nvb do, and nvb_gpu_close() returns without
 * touching the parent's thread.  The parent is unaffected.
 */
static int t_fork_child(void)
{
	struct nvb_gpu_batch *b;
	struct loop l;
	pid_t pid;
	int st;

	CHECK(loop_open(&l, "atk.fork") == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct nvb_gpu_batch *cb = NULL;
		int rc = nvb_gpu_xfer_submit(l.g, &l.r, 1, NULL, &cb);

		if (rc == 0) {	/* before the fix: a batch nothing completes */
			rc = nvb_gpu_batch_wait(cb, 1000000000LL);
			_exit(rc == -ETIMEDOUT ? 10 : 11);
		}
		if (rc != -ECHILD)
			_exit(12);
		if (nvb_gpu_xfer_fd(l.g) != -ECHILD)
			_exit(13);
		nvb_gpu_seg_close(l.seg);
		nvb_gpu_close(l.g);
		_exit(0);
	}
	st = wait_child(pid, 5000);
	CHECK(st != -1, "the child hung (nvb_gpu_close or a wait)");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x (10: its batch never completed)",
	      st);
	/* a child that only closes (an atexit handler, Python's Gpu.__del__) */
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		nvb_gpu_close(l.g);
		_exit(0);
	}
	st = wait_child(pid, 5000);
	CHECK(st != -1, "nvb_gpu_close() hung in the child");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
	/* the parent still works */
	OK(nvb_gpu_xfer_submit(l.g, &l.r, 1, NULL, &b));
	OK(nvb_gpu_batch_wait(b, 5000000000LL));
	nvb_gpu_batch_free(b);
	loop_close(&l);
	return 0;
}

/*
 * More open segments on one handle than verify() looked at (32): the
 * exporter dies, its 40 revocations overflow the handle's event queue
 * (a broker with --max-events 4), and the lost-events path fetches each
 * open segment again.  Before the fix only the 32 newest were checked:
 * the oldest stayed "alive" (transfers 0 instead of -ENOLINK, forever).
 */
static int t_overflow_many_segments(void)
{
	struct nvb_gpu_seg *seg[40];
	struct nvb_gpu_buf *lb;
	struct nvb_gpu *g;
	struct nvb *h;
	pid_t peer;
	int i, alive = 0;

	CHECK(own_broker_start("4") == 0);
	peer = peer_many("atk.ov", 40);
	CHECK(peer > 0);
	OK(nvb_gpu_open(NULL, &g));
	OK(own_nvb_open(&h));
	OK(nvb_gpu_alloc(g, 0, SEG_SIZE, 0, &lb));
	for (i = 0; i < 40; i++) {
		char name[64];

		snprintf(name, sizeof(name), "atk.ov.%d", i);
		OK(nvb_gpu_seg_open(g, h, name, NULL, &seg[i]));
	}
	kill(peer, SIGKILL);
	waitpid(peer, NULL, 0);
	usleep(500000);		/* the thread reads the 4 events and the OVERFLOW record */
	for (i = 0; i < 40; i++) {
		struct nvb_gpu_xfer_req r = { NVB_GPU_XFER_READ, 0, nvb_gpu_buf_ptr(lb), seg[i], 0, 64 };
		struct nvb_gpu_batch *b;
		int rc = nvb_gpu_xfer_submit(g, &r, 1, NULL, &b);

		if (rc == 0) {
			alive++;
			nvb_gpu_batch_wait(b, 5000000000LL);
			nvb_gpu_batch_free(b);
		} else {
			EXPECT(rc, -ENOLINK);
		}
		EXPECT(nvb_gpu_seg_revoked(seg[i]), rc == 0 ? 0 : 1);
	}
	EXPECT(alive, 0);	/* before the fix: 4 of the 8 beyond the 32 looked at */
	for (i = 0; i < 40; i++)
		nvb_gpu_seg_close(seg[i]);
	nvb_gpu_free(lb);
	nvb_gpu_close(g);
	nvb_close(h);
	own_broker_stop();
	return 0;
}

/*
 * The broker goes away after a prefetch imported a segment: "a handle
 * whose connection ends revokes every segment opened through it".  Before
 * the fix an open after the loss came from the prefetch (no request, so
 * no error) and gave a segment that was not revoked, on which transfers
 * succeeded, with no revocation able to reach it any more.
 */
static int t_prefetch_after_connection_lost(void)
{
	struct nvb_gpu_seg *seg = NULL;
	struct nvb_gpu_buf *lb;
	struct nvb_gpu *g;
	struct nvb *h;
	pid_t peer;
	int rc;

	CHECK(own_broker_start("1024") == 0);
	peer = peer_many("atk.pf", 1);
	CHECK(peer > 0);
	OK(nvb_gpu_open(NULL, &g));
	OK(own_nvb_open(&h));
	OK(nvb_gpu_alloc(g, 0, SEG_SIZE, 0, &lb));
	OK(nvb_gpu_seg_prefetch(g, h, "atk.pf.0", NULL));
	usleep(300000);		/* the thread imports it */
	own_broker_stop();	/* the broker crashes */
	usleep(300000);		/* the thread sees the connection end */
	rc = nvb_gpu_seg_open(g, h, "atk.pf.0", NULL, &seg);
	if (rc == 0) {
		struct nvb_gpu_xfer_req r = { NVB_GPU_XFER_READ, 0, nvb_gpu_buf_ptr(lb), seg, 0, 64 };
		struct nvb_gpu_batch *b = NULL;

		EXPECT(nvb_gpu_seg_revoked(seg), 1);	/* before the fix: 0 */
		EXPECT(nvb_gpu_xfer_submit(g, &r, 1, NULL, &b), -ENOLINK);
		nvb_gpu_seg_close(seg);
	} else {
		CHECK(rc < 0 && !seg);
	}
	kill(peer, SIGKILL);
	waitpid(peer, NULL, 0);
	nvb_gpu_free(lb);
	nvb_gpu_close(g);
	nvb_close(h);
	return 0;
}

/*
 * nvb_gpu_close() while a batch's copies cannot finish within its 5 s
 * bound (a batch on the caller's stream behind work that waits, here a
 * host function delayed 7 s): the engine is leaked on purpose, since the
 * GPU may still run the copies.  Before the fix nvb_gpu_close() then went
 * on to unmap every mapping of the layer, those copies' peer segment
 * included: a use-after-unmap on the GPU (a fault, or another mapping's
 * bytes once the address range is reused).  Now the mappings of batches
 * still in flight are left mapped (leaked with the engine).
 */
static int t_close_timeout_keeps_mappings(void)
{
	struct nvb_gpu_seg *seg;
	struct nvb_gpu_batch *b;
	struct nvb_gpu *g2;
	struct timespec t0, t1;
	struct loop l;
	int pfd[2];
	char c;

	CHECK(loop_open(&l, "atk.close") == 0);
	OK(nvb_gpu_open(NULL, &g2));	/* the importer: another layer in this process */
	OK(nvb_gpu_seg_open(g2, l.h, "atk.close", NULL, &seg));
	struct nvb_gpu_xfer_req r = { NVB_GPU_XFER_READ, 0, nvb_gpu_buf_ptr(l.lb), seg, 0, 4096 };

	setenv("NVB_FAKE_HOSTFN_DELAY_MS", "7000", 1);
	OK(nvb_gpu_xfer_submit(g2, &r, 1, NULL, &b));
	unsetenv("NVB_FAKE_HOSTFN_DELAY_MS");
	nvb_gpu_batch_free(b);
	nvb_gpu_seg_close(seg);		/* the batch holds it */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	nvb_gpu_close(g2);		/* gives up after 5 s */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK(t1.tv_sec - t0.tv_sec < 7, "close waited for the batch");
	CHECK(pipe(pfd) == 0);
	/* the kernel reads the peer mapping: EFAULT if it is gone */
	EXPECT(write(pfd[1], (void *)(uintptr_t)r.local, 1), 1);
	EXPECT(write(pfd[1], (void *)(uintptr_t)nvb_gpu_seg_ptr(seg), 1), 1);	/* before: -1 */
	CHECK(read(pfd[0], &c, 1) == 1);
	close(pfd[0]);
	close(pfd[1]);
	usleep(2500000);		/* the host function runs on what was kept */
	loop_close(&l);
	return 0;
}

/*
 * An open through a handle nvb_event_fd() refuses (here one inherited
 * through fork(): -ECHILD) said -ENOMEM before the fix, whatever the
 * handle's error was; now the handle's errno comes back.
 */
static int t_open_on_refused_handle(void)
{
	struct nvb_gpu_seg *seg;
	struct nvb *h;
	pid_t pid;
	int st;

	OK(fake_nvb_open(&h));
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct nvb_gpu *g;
		int rc;

		if (nvb_gpu_open(NULL, &g))
			_exit(2);
		rc = nvb_gpu_seg_open(g, h, "atk.any", NULL, &seg);
		if (rc == 0 || seg)
			_exit(3);
		rc = rc == -ECHILD ? 0 : rc == -ENOMEM ? 10 : 11;
		if (!rc && nvb_gpu_seg_prefetch(g, h, "atk.any", NULL) != -ECHILD)
			rc = 12;
		nvb_gpu_close(g);
		_exit(rc);
	}
	st = wait_child(pid, 5000);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x (10: -ENOMEM)", st);
	nvb_close(h);
	return 0;
}

/* A fresh private broker and one exporter of "<prefix>.0" on it; the exporter's pid or -1. */
static pid_t broker_and_peer(const char *prefix)
{
	if (own_broker_start("1024"))
		return -1;
	return peer_many(prefix, 1);
}

/*
 * The broker restarts (a crash, systemd brings it back): entry ids start
 * again at 1, so the new publication of a name may carry the id an old
 * one had.  The mapping cache is keyed by entry id: before the fix, the
 * lost connection left the old entry's mapping cached (the open segment
 * was only marked revoked), and an open of the republished name on a new
 * handle got the OLD mapping: transfers went to the previous exporter's
 * memory (here the old bytes came back), silently.  Now a lost
 * connection drops the mappings of what was imported through it.
 */
static int t_broker_restart_id_reuse(void)
{
	unsigned char old[64];
	struct nvb_gpu_seg *s1, *s2;
	struct nvb *h1, *h2;
	struct nvb_gpu *g;
	pid_t a, b;

	a = broker_and_peer("atk.rs");
	CHECK(a > 0);
	OK(nvb_gpu_open(NULL, &g));
	OK(own_nvb_open(&h1));
	OK(nvb_gpu_seg_open(g, h1, "atk.rs.0", NULL, &s1));
	memcpy(old, (void *)(uintptr_t)nvb_gpu_seg_ptr(s1), sizeof(old));
	own_broker_stop();		/* before any revocation could be sent */
	kill(a, SIGKILL);
	waitpid(a, NULL, 0);
	usleep(300000);			/* the thread sees the connection end */
	EXPECT(nvb_gpu_seg_revoked(s1), 1);

	b = broker_and_peer("atk.rs");	/* new bytes, the same entry id */
	CHECK(b > 0);
	OK(own_nvb_open(&h2));
	OK(nvb_gpu_seg_open(g, h2, "atk.rs.0", NULL, &s2));
	EXPECT(nvb_gpu_seg_id(s2), nvb_gpu_seg_id(s1));	/* the premise: the id came back */
	EXPECT(nvb_gpu_seg_revoked(s2), 0);
	CHECK(nvb_gpu_seg_ptr(s2) != nvb_gpu_seg_ptr(s1), "the old entry's mapping was reused");
	CHECK(memcmp(old, (void *)(uintptr_t)nvb_gpu_seg_ptr(s2), sizeof(old)),
	      "the old exporter's bytes came back");
	nvb_gpu_seg_close(s2);
	nvb_gpu_seg_close(s1);
	kill(b, SIGKILL);
	waitpid(b, NULL, 0);
	nvb_gpu_close(g);
	nvb_close(h2);
	nvb_close(h1);
	own_broker_stop();
	return 0;
}

/*
 * The same restart after a revocation was seen: the id sat in the ring of
 * recent revocations (which covers a revocation read between an open's
 * fetch and its import).  Before the fix the ring was not tied to the
 * handle, and the new publication's open on the new handle was born
 * revoked: -ENOLINK for every transfer, for good.
 */
static int t_broker_restart_ring(void)
{
	struct nvb_gpu_seg *s1, *s2;
	struct nvb_gpu_batch *bt;
	struct nvb_gpu_buf *lb;
	struct nvb *h1, *h2;
	struct nvb_gpu *g;
	pid_t a, b;

	a = broker_and_peer("atk.rq");
	CHECK(a > 0);
	OK(nvb_gpu_open(NULL, &g));
	OK(nvb_gpu_alloc(g, 0, SEG_SIZE, 0, &lb));
	OK(own_nvb_open(&h1));
	OK(nvb_gpu_seg_open(g, h1, "atk.rq.0", NULL, &s1));
	kill(a, SIGKILL);		/* the broker revokes: the event is read */
	waitpid(a, NULL, 0);
	usleep(300000);
	EXPECT(nvb_gpu_seg_revoked(s1), 1);
	own_broker_stop();
	usleep(100000);

	b = broker_and_peer("atk.rq");
	CHECK(b > 0);
	OK(own_nvb_open(&h2));
	OK(nvb_gpu_seg_open(g, h2, "atk.rq.0", NULL, &s2));
	EXPECT(nvb_gpu_seg_id(s2), nvb_gpu_seg_id(s1));	/* the premise */
	EXPECT(nvb_gpu_seg_revoked(s2), 0);		/* before the fix: 1 */
	struct nvb_gpu_xfer_req r = { NVB_GPU_XFER_READ, 0, nvb_gpu_buf_ptr(lb), s2, 0, 64 };

	OK(nvb_gpu_xfer_submit(g, &r, 1, NULL, &bt));
	OK(nvb_gpu_batch_wait(bt, 5000000000LL));
	nvb_gpu_batch_free(bt);
	nvb_gpu_seg_close(s2);
	nvb_gpu_seg_close(s1);
	kill(b, SIGKILL);
	waitpid(b, NULL, 0);
	nvb_gpu_free(lb);
	nvb_gpu_close(g);
	nvb_close(h2);
	nvb_close(h1);
	own_broker_stop();
	return 0;
}

/*
 * A segment of another struct nvb_gpu in a request (two layers in one
 * process: a library and the application each open one).  Before the fix
 * the batch was accepted: the segment's reference count was raised under
 * the wrong engine's lock, and the other layer's nvb_gpu_close() freed the
 * segment under the batch still holding it (a use-after-free at
 * completion).  Now -EINVAL, nothing queued.
 */
static int t_segment_of_another_layer(void)
{
	struct nvb_gpu_batch *b = NULL;
	struct nvb_gpu_seg *seg;
	struct nvb_gpu *g2;
	struct loop l;
	int fds;

	CHECK(loop_open(&l, "atk.other") == 0);
	OK(nvb_gpu_open(NULL, &g2));
	OK(nvb_gpu_seg_open(g2, l.h, "atk.other", NULL, &seg));
	fds = proc_fds(0);
	struct nvb_gpu_xfer_req r = { NVB_GPU_XFER_READ, 0, nvb_gpu_buf_ptr(l.lb), seg, 0, 64 };

	EXPECT(nvb_gpu_xfer_submit(l.g, &r, 1, NULL, &b), -EINVAL);	/* before: 0 */
	CHECK(!b);
	CHECK(strstr(nvb_gpu_last_error(), "another struct nvb_gpu"), "%s", nvb_gpu_last_error());
	EXPECT(proc_fds(0), fds);
	OK(nvb_gpu_xfer_submit(g2, &r, 1, NULL, &b));	/* its own layer takes it */
	OK(nvb_gpu_batch_wait(b, 5000000000LL));
	nvb_gpu_batch_free(b);
	nvb_gpu_seg_close(seg);
	nvb_gpu_close(g2);
	loop_close(&l);
	return 0;
}

/*
 * The default owner is "the caller's own euid", and a process may change
 * its euid (a root service that drops to the user it serves).  Before the
 * fix the euid was read when the fetch ran, not when the caller asked:
 * a prefetch made as root served a later default open made as uid 2300
 * with root's segment (no request, the expectations "looked" equal), and
 * the lost-events check of a segment opened as root fetched it as 2300
 * (-ENOENT: revoked for nothing).  Now the default is the euid of the
 * call, recorded with the prefetch or segment.
 */
static int t_euid_change(void)
{
	struct nvb_gpu_seg *seg = NULL;
	struct loop l;
	pid_t pid;
	int st;

	if (geteuid() != 0) {
		printf("    skip: needs root (seteuid to a test uid)\n");
		return 0;
	}
	CHECK(loop_open(&l, "atk.euid") == 0);	/* root publishes atk.euid */
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct fake_peer pe;
		int rc;

		if (fake_peer_import(&pe, NULL, 0) || nvb_gpu_seg_prefetch(pe.g, pe.h, "atk.euid", NULL))
			_exit(2);
		usleep(300000);			/* imported as root's */
		if (seteuid(2300))
			_exit(3);
		rc = nvb_gpu_seg_open(pe.g, pe.h, "atk.euid", NULL, &seg);
		_exit(rc == 0 ? 10 : rc == -ENOENT ? 0 : 11);
	}
	st = wait_child(pid, 5000);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "child status %#x (10: root's segment served to a uid-2300 default open)", st);
	loop_close(&l);
	return 0;
}

/*
 * The CUDA context hits an error (a fault or an ECC error anywhere in it)
 * while a batch is queued.  CUDA does not call a cuLaunchHostFunc function
 * after a context error (cuda.h says so; the stand-in does the same under
 * NVB_FAKE_STREAM_ERROR), and that host function was the batch's only
 * completion: before the fix the batch never completed (a wait with no
 * timeout hung for ever, nothing came on the eventfds) and the documented
 * -EIO status was never produced (nothing set it).  Completion now comes
 * from cuStreamAddCallback, which CUDA calls with the error: -EIO.
 */
static int t_context_error_completes(void)
{
	struct nvb_gpu_xfer_stats xs = { .sz = sizeof(xs) };
	struct nvb_gpu_batch *b;
	struct loop l;
	int st[1] = { 0 };

	CHECK(loop_open(&l, "atk.ctxerr") == 0);
	setenv("NVB_FAKE_STREAM_ERROR", "700", 1);	/* CUDA_ERROR_ILLEGAL_ADDRESS */
	setenv("NVB_FAKE_HOSTFN_DELAY_MS", "100", 1);
	OK(nvb_gpu_xfer_submit(l.g, &l.r, 1, NULL, &b));
	EXPECT(nvb_gpu_batch_wait(b, 3000000000LL), -EIO);	/* before: -ETIMEDOUT */
	EXPECT(nvb_gpu_batch_status(b, st, 1), -EIO);
	EXPECT(st[0], -EIO);
	OK(nvb_gpu_xfer_stats(l.g, &xs));
	EXPECT(xs.failed, 1);
	EXPECT(xs.inflight, 0);
	nvb_gpu_batch_free(b);
	unsetenv("NVB_FAKE_STREAM_ERROR");
	unsetenv("NVB_FAKE_HOSTFN_DELAY_MS");
	loop_close(&l);
	return 0;
}

/*
 * A batch submitted on the application's stream while that stream is being
 * captured into a CUDA graph.  Before the fix the library queued the copies
 * (recorded into the graph, to run at every launch after the segment may
 * be gone), then cuStreamAddCallback, which CUDA refuses in capture and
 * which invalidates the capture, then cuLaunchHostFunc and
 * cuStreamSynchronize on the now invalid capture: -EIO, and the
 * application's graph was lost.  Now: -EBUSY, nothing recorded, the
 * capture still valid (it ends with a graph), the destination untouched;
 * the same stream outside the capture moves the bytes.  An invalidated
 * capture is refused alike, and cuStreamIsCapturing's own failure is -EIO.
 */
static int t_capturing_stream_refused(void)
{
	int (*begin)(void *, int), (*end)(void *, void **), (*sync)(void *), (*nodes)(void *);
	void *l0 = dlopen("libcuda.so.1", RTLD_NOW), *graph = NULL;
	void *st = (void *)(uintptr_t)0x7100;	/* the application's stream (the stand-in's) */
	struct nvb_gpu_xfer_opts xo = { .sz = sizeof(xo), .efd = -1, .stream = st };
	struct nvb_gpu_batch *b;
	unsigned char want[4096], *dst;
	struct loop l;

	CHECK(l0 != NULL, "%s", dlerror());
	*(void **)&begin = dlsym(l0, "cuStreamBeginCapture_v2");
	*(void **)&end = dlsym(l0, "cuStreamEndCapture");
	*(void **)&sync = dlsym(l0, "cuStreamSynchronize");
	*(void **)&nodes = dlsym(l0, "fakecuda_capture_nodes");
	CHECK(begin && end && sync && nodes);
	CHECK(loop_open(&l, "atk.capture") == 0);
	dst = (unsigned char *)(uintptr_t)nvb_gpu_buf_ptr(l.lb);
	fake_random(dst, sizeof(want));		/* poison */
	memcpy(want, dst, sizeof(want));
	fake_random((void *)(uintptr_t)nvb_gpu_buf_ptr(l.rb), 4096);

	EXPECT(begin(st, 0), 0);
	b = (struct nvb_gpu_batch *)&l;		/* poisoned: must come back NULL */
	EXPECT(nvb_gpu_xfer_submit(l.g, &l.r, 1, &xo, &b), -EBUSY);	/* before: -EIO */
	CHECK(b == NULL);
	CHECK(strstr(nvb_gpu_last_error(), "captur") != NULL, "%s", nvb_gpu_last_error());
	EXPECT(nodes(st), 0);			/* nothing recorded into the graph */
	EXPECT(memcmp(dst, want, sizeof(want)), 0);
	EXPECT(end(st, &graph), 0);		/* the capture is intact: a graph */
	CHECK(graph != NULL);

	/* an invalidated capture (the application's own illegal call) is refused too */
	EXPECT(begin(st, 0), 0);
	CHECK(sync(st) != 0);			/* unsupported in capture: invalidates it */
	EXPECT(nvb_gpu_xfer_submit(l.g, &l.r, 1, &xo, &b), -EBUSY);
	CHECK(strstr(nvb_gpu_last_error(), "invalidated") != NULL, "%s", nvb_gpu_last_error());
	CHECK(end(st, &graph) != 0);

	/* the driver cannot tell: -EIO, nothing queued */
	setenv("NVB_FAKE_IS_CAPTURING_ERROR", "999", 1);
	EXPECT(nvb_gpu_xfer_submit(l.g, &l.r, 1, &xo, &b), -EIO);
	unsetenv("NVB_FAKE_IS_CAPTURING_ERROR");
	EXPECT(memcmp(dst, want, sizeof(want)), 0);

	/* the same stream, not capturing: the batch runs */
	OK(nvb_gpu_xfer_submit(l.g, &l.r, 1, &xo, &b));
	OK(nvb_gpu_batch_wait(b, 5000000000LL));
	nvb_gpu_batch_free(b);
	EXPECT(memcmp(dst, (void *)(uintptr_t)nvb_gpu_buf_ptr(l.rb), 4096), 0);
	loop_close(&l);
	dlclose(l0);
	return 0;
}

static const struct nvb_case cases[] = {
	{ "eventfd_closed_and_reused_in_flight", t_efd_closed_and_reused },
	{ "fork_child_close_and_submit", t_fork_child },
	{ "overflow_with_40_segments_open", t_overflow_many_segments },
	{ "prefetch_after_connection_lost", t_prefetch_after_connection_lost },
	{ "close_timeout_keeps_mappings_in_use", t_close_timeout_keeps_mappings },
	{ "open_on_refused_handle_errno", t_open_on_refused_handle },
	{ "broker_restart_reuses_entry_ids", t_broker_restart_id_reuse },
	{ "broker_restart_after_revocation", t_broker_restart_ring },
	{ "segment_of_another_layer", t_segment_of_another_layer },
	{ "default_owner_is_the_callers_euid", t_euid_change },
	{ "context_error_completes_with_eio", t_context_error_completes },
	{ "capturing_stream_refused_capture_intact", t_capturing_stream_refused },
};

int main(int argc, char **argv)
{
	return fake_main("gpu-seg-attack", cases, sizeof(cases) / sizeof(cases[0]), argc, argv,
			 own_broker_stop);
}
