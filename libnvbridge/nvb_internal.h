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

struct nvb_pending;

struct nvb {
	int backend;			/* NVB_BACKEND_KERNEL / _BROKER */
	int fd;				/* device fd, or broker socket */
	int evfd;			/* event fd: device fd, or broker event socket */
	pthread_mutex_t lock;		/* errmsg, broker state */
	char errmsg[NVB_ERRLEN];
	char path[108];

	/* broker */
	struct nvb_pending *pending;
	uint32_t seq;
	bool reader;			/* a thread is in recvmsg */
	bool dead;			/* connection lost */
	pid_t opener;			/* the process that opened it */
	int64_t spin_ns;		/* poll for a reply this long before sleeping */
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
int nvb_broker_open(struct nvb *h, const char *sock, char *why, size_t whylen);
int nvb_broker_xfer(struct nvb *h, unsigned long cmd, void *arg);
void nvb_broker_close(struct nvb *h);

int nvb_name_check(const char *name, bool prefix, char *why, size_t len);

#endif
