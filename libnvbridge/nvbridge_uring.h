/* SPDX-License-Identifier: MIT */
/*
 * libnvbridge io_uring helpers: put nvbridge event reads on the
 * application's own ring (liburing style).
 *
 *	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
 *	nvb_prep_event_read(sqe, h, buf, sizeof(buf));
 *	io_uring_submit(&ring);
 *	...
 *	if (nvb_cqe_is_event(h, cqe))
 *		n = nvb_event_parse(h, buf, cqe->res, ev, max);
 *
 * The read is an IORING_OP_READ on /dev/nvbridge (opened O_NONBLOCK, so the
 * ring waits in its poll path) or an IORING_OP_RECVMSG on the broker's
 * event socket.  buf must stay valid until the completion arrives and hold
 * at least NVB_EVENT_RECORD_SIZE bytes.  At most one read per handle should
 * be in flight.  nvb_event_read() must not be used meanwhile.
 */
#ifndef LIBNVBRIDGE_NVBRIDGE_URING_H
#define LIBNVBRIDGE_NVBRIDGE_URING_H

#include <liburing.h>
#include "nvbridge.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Prepares sqe to read events into buf[0..len) and sets its user_data to
 * nvb_event_tag(h) (override it with io_uring_sqe_set_data64() if you
 * dispatch otherwise).  Returns 0 or -errno (-EINVAL: len too small).
 */
int nvb_prep_event_read(struct io_uring_sqe *sqe, struct nvb *h, void *buf,
			size_t len);

/* The user_data nvb_prep_event_read() puts on its sqe. */
uint64_t nvb_event_tag(const struct nvb *h);

/* Non-zero when cqe completes an nvb_prep_event_read() of h. */
int nvb_cqe_is_event(const struct nvb *h, const struct io_uring_cqe *cqe);

/*
 * Transfer batches of the GPU layer (nvbridge_gpu.h, nvb_gpu_xfer_submit):
 * the same style for batch completions.  nvb_gpu_prep_xfer_read() prepares
 * an 8-byte IORING_OP_READ of nvb_gpu_xfer_fd(g) into *count (how many
 * batches completed since the last read; then look at their
 * nvb_gpu_batch_status()) with user_data nvb_gpu_xfer_tag(g).  count must
 * stay valid until the completion; at most one such read per g in flight.
 * Returns 0 or -errno (-EINVAL: a NULL argument).
 */
struct nvb_gpu;
int nvb_gpu_prep_xfer_read(struct io_uring_sqe *sqe, struct nvb_gpu *g, uint64_t *count);
uint64_t nvb_gpu_xfer_tag(const struct nvb_gpu *g);
/* Non-zero when cqe completes an nvb_gpu_prep_xfer_read() of g. */
int nvb_gpu_cqe_is_xfer(const struct nvb_gpu *g, const struct io_uring_cqe *cqe);

#ifdef __cplusplus
}
#endif

#endif /* LIBNVBRIDGE_NVBRIDGE_URING_H */
