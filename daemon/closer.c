// SPDX-License-Identifier: MIT
/*
 * nvbridged: closing files that clients sent, without blocking the loop.
 *
 * close() runs the file's ->flush, and a FUSE file's flush waits for its
 * server, which a client can control: one such close on the loop thread
 * stops the broker for everyone, and a kill -9 leaves it in D state.  So
 * every client-supplied fd is closed through io_uring's IORING_OP_CLOSE:
 * the kernel closes a file without ->flush inline, and punts one with
 * ->flush to an io-wq worker (io_close() returns -EAGAIN under
 * IO_URING_F_NONBLOCK), where a hung server holds a worker, not the loop.
 * The workers are bounded (IOWQ_MAX_WORKERS); closes beyond them wait in
 * io-wq, each holding its fd in our table.  So every close is charged to
 * the uid that sent the file until it completes: a uid at
 * --max-pending-closes-per-user, or any uid with closes pending while the
 * total is at --max-pending-closes, is not read from and not accepted
 * (conn.c) until its closes complete, which keeps fds for everyone else.
 *
 * Files the broker opened itself (sockets, pidfds, /proc) are closed with
 * close(): none has a ->flush that a client controls.
 */
#include "nvbridged.h"
#include <liburing.h>

#define RING_ENTRIES 256
#define IOWQ_MAX_WORKERS 64

static struct io_uring ring;
static bool ring_ok;
static unsigned int pending, queued;
static int64_t last_warn;

int closer_init(void)
{
	unsigned int workers[2] = { IOWQ_MAX_WORKERS, IOWQ_MAX_WORKERS };
	struct io_uring_params p = { .flags = IORING_SETUP_CQSIZE, .cq_entries = 16 * RING_ENTRIES };
	int ret = io_uring_queue_init_params(RING_ENTRIES, &ring, &p);

	if (ret) {
		logmsg("io_uring unavailable (%s): client files are closed on the loop thread, "
		       "where a FUSE file can stall the broker", strerror(-ret));
		return ret;
	}
	io_uring_register_iowq_max_workers(&ring, workers);
	ring_ok = true;
	return 0;
}

/* the number of closes completed */
static unsigned int reap(void)
{
	struct io_uring_cqe *cqe;
	unsigned int n = 0;

	while (io_uring_peek_cqe(&ring, &cqe) == 0) {
		struct user *u = (struct user *)(uintptr_t)io_uring_cqe_get_data64(cqe);

		pending--;
		n++;
		io_uring_cqe_seen(&ring, cqe);
		if (u) {
			u->closes--;
			user_put(u);
		}
	}
	return n;
}

unsigned int closer_pending(void)
{
	return pending;
}

/* Closes fd off the loop, charged to u (the uid that sent the file; may be NULL). */
void closer_close(int fd, struct user *u)
{
	struct io_uring_sqe *sqe;

	if (fd < 0)
		return;
	if (!ring_ok) {
		close(fd);
		return;
	}
	sqe = io_uring_get_sqe(&ring);
	if (!sqe) {
		closer_run();
		sqe = io_uring_get_sqe(&ring);
	}
	if (!sqe) {
		close(fd);	/* cannot happen with a CQ 16x the SQ, but never leak */
		return;
	}
	io_uring_prep_close(sqe, fd);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)u);
	if (u)
		u->closes++;	/* keeps u: user_put() frees none with closes pending */
	queued++;
	pending++;
}

/* Submits the closes queued during one loop iteration (one syscall) and reaps finished ones. */
void closer_run(void)
{
	if (!ring_ok)
		return;
	if (queued) {
		io_uring_submit(&ring);
		queued = 0;
	}
	if (reap())
		conns_closes_resume();
	if (pending > IOWQ_MAX_WORKERS) {
		int64_t now = now_ns();

		if (now - last_warn > 10000000000LL) {
			logmsg("%u closes of client files pending (a file system not answering FLUSH?)",
			       pending);
			last_warn = now;
		}
	}
}

void closer_exit(void)
{
	if (!ring_ok)
		return;
	closer_run();
	io_uring_queue_exit(&ring);
	ring_ok = false;
}
