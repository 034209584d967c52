/* SPDX-License-Identifier: MIT */
/* libnvbridge internals: not installed. */
#ifndef LIBNVBRIDGE_INTERNAL_H
#define LIBNVBRIDGE_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <liburing.h>
#include <linux/nvbridge.h>
#include "nvbridge.h"

#define NVB_API __attribute__((visibility("default")))
#define NVB_ERRLEN 256
#define NVB_EVQ 32		/* records read per internal io_uring read */

/* One request in flight on a broker connection (lives on its caller's stack). */
struct nvb_pending {
	struct nvb_pending *next;
	uint32_t seq;
	uint32_t cmd;
	bool done;
	bool cloexec;
	bool waiting;		/* asleep behind the reader (not still sending) */
	int result;
	void *arg;		/* the caller's struct */
	uint32_t arg_size;
	void *data;		/* FETCH: blob buffer; LIST: records */
	size_t data_cap;
	uint32_t list_count;	/* LIST: records asked for */
	uint32_t entry_size;	/* LIST: bytes per record */
	int fd;			/* received fd */
	int efd;		/* a FETCH_WAIT sleeping behind another reader, or -1 */
	pthread_cond_t cv;	/* any other request sleeping behind the reader */
};

/* One message as received from the broker socket (the fds are owned by it). */
#define NVB_RX_MAXFD 4
struct nvb_rx {
	const void *buf;
	size_t len;
	int fds[NVB_RX_MAXFD];
	unsigned int nfds;
	bool ctrunc;		/* MSG_CTRUNC: fds were lost (RLIMIT_NOFILE, or too many) */
	bool trunc;		/* MSG_TRUNC: longer than the buffer */
};

/*
 * The reply parser, without a socket (the fuzzer feeds it bytes and fds).
 * nvb_reply_dispatch() finds rx's request in list by seq, checks the reply
 * against it (cmd, sizes, counts, fds) and fills it in (*out); it consumes
 * every fd in rx.  0: *out is done (its result may be an errno the broker
 * gave); < 0: rx broke the protocol (-EBADMSG malformed or truncated,
 * -EPROTO not an answer to a request in flight or unexpected fds,
 * -EOVERFLOW more than the request's buffer holds) and *out, when not
 * NULL, is the request it claimed to answer.
 */
int nvb_reply_dispatch(struct nvb_pending *list, struct nvb_rx *rx, struct nvb_pending **out,
		       char *why, size_t whylen);
/* Checks HELLO's answer; on 0, *info and *evfd (the event socket) are filled. */
int nvb_hello_parse(struct nvb_rx *rx, struct nvbridge_info *info, int *evfd,
		    char *why, size_t whylen);
void nvb_rx_close(struct nvb_rx *rx);

struct nvb {
	int backend;			/* NVB_BACKEND_KERNEL / _BROKER */
	int fd;				/* device fd, or broker socket */
	int evfd;			/* event fd: device fd, or broker event socket */
	pthread_mutex_t lock;		/* errmsg, broker state */
	char errmsg[NVB_ERRLEN];
	char txerr[NVB_ERRLEN];		/* broker: why the connection ended, for the next nvb_fail() */
	char path[108];

	/* broker */
	struct nvb_pending *pending;
	uint32_t seq;
	bool reader;			/* a thread is in recvmsg */
	bool dead;			/* connection lost, shut down, or broken */
	bool forked;			/* inherited through fork(): fds closed, calls -ECHILD */
	int64_t spin_ns;		/* poll for a reply this long before sleeping */
	int64_t timeout_ns;		/* broker: request timeout, <= 0 none */
	int64_t rcvtimeo_ns;		/* broker: SO_RCVTIMEO now on fd */
	struct nvb *fork_prev, *fork_next;	/* every open handle (for fork) */
	void *rxbuf;
	struct nvbridge_info binfo;	/* limits from HELLO */
	bool gpu_watch_all;		/* nvb_gpu_import() holds a scope-wide watch */
	uint64_t serial;		/* unique per nvb_open() in this process */

	/* events through the library's ring (evlock) */
	pthread_mutex_t evlock;
	struct io_uring ring;
	bool ring_ok;
	bool ring_tried;
	bool ev_inflight;
	unsigned char evbuf[NVB_EVQ * NVBRIDGE_EVENT_SIZE];
	struct msghdr evmsg;
	struct iovec eviov;
	unsigned int evq_pos, evq_len;	/* parsed-but-not-returned records */
	struct nvb_event evq[NVB_EVQ];

	/* one application-ring read (nvb_prep_event_read) */
	struct msghdr appmsg;
	struct iovec appiov;
};

void nvb_seterr(struct nvb *h, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int nvb_fail(struct nvb *h, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* transports: arg is the UAPI struct with real pointers; returns ioctl's result or -errno */
int nvb_kernel_open(struct nvb *h, const char *devpath, char *why, size_t whylen);
int nvb_kernel_xfer(struct nvb *h, unsigned long cmd, void *arg);
/* The broker's expected uid: NVB_OPEN_BROKER_UID's, or -1 for the default rule. */
int nvb_broker_open(struct nvb *h, const char *sock, int64_t broker_uid, char *why,
		    size_t whylen);
int nvb_broker_xfer(struct nvb *h, unsigned long cmd, void *arg);
/*
 * Two requests in one round trip: the second is sent right behind the
 * first, before its answer (the broker answers a connection's requests in
 * the order they came).  *ret0: the first's result; returns the second's.
 * A first that could not be sent is returned as both, the second unsent.
 * When the first fails (but -EEXIST) and the second is a FETCH that waits
 * for a publish, the second is cancelled (-EINTR, unless answered already).
 */
int nvb_broker_xfer2(struct nvb *h, unsigned long cmd0, void *arg0, int *ret0,
		     unsigned long cmd1, void *arg1);
void nvb_broker_close(struct nvb *h);
/* nvb_close() calls so far (fork's loss of every handle counts), and whether a handle of serial is open. */
uint64_t nvb_handle_closes(void);
bool nvb_serial_live(uint64_t serial);
/* core.c: fn is called by every nvb_close(), after the handle left the list (no lock held). */
void nvb_set_close_hook(void (*fn)(void));
/* core.c: nvb_event_read(h, ev, max, 0) on the handle of serial while it is open; -ESRCH: closed. */
int nvb_event_read_live(uint64_t serial, struct nvb_event *ev, unsigned int max);

#define NVB_DEFAULT_TIMEOUT_NS (30LL * 1000000000)

int nvb_name_check(const char *name, bool prefix, char *why, size_t len);

#endif
