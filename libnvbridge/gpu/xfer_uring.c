// SPDX-License-Identifier: MIT
/*
 * libnvbridge GPU layer: batch completions on the application's io_uring
 * (nvbridge_uring.h), in the style of nvb_prep_event_read().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>

#include "seg_priv.h"
#include "../nvbridge_uring.h"

/* "NVG" above any user pointer; nvb_event_tag() uses "NVB" */
#define NVB_XFER_TAG_BITS 0x4e56470000000000ULL

int nvb_gpu_prep_xfer_read(struct io_uring_sqe *sqe, struct nvb_gpu *g, uint64_t *count)
{
	int fd;

	if (!sqe || !g || !count)
		return seterr(-EINVAL, "nvb_gpu_prep_xfer_read: NULL argument");
	fd = nvb_gpu_xfer_fd(g);
	if (fd < 0)
		return fd;
	io_uring_prep_read(sqe, fd, count, sizeof(*count), 0);
	io_uring_sqe_set_data64(sqe, nvb_gpu_xfer_tag(g));
	return 0;
}

uint64_t nvb_gpu_xfer_tag(const struct nvb_gpu *g)
{
	return NVB_XFER_TAG_BITS | (uint64_t)(uintptr_t)g;
}

int nvb_gpu_cqe_is_xfer(const struct nvb_gpu *g, const struct io_uring_cqe *cqe)
{
	return g && cqe && cqe->user_data == nvb_gpu_xfer_tag(g);
}
