// SPDX-License-Identifier: MIT
/*
 * Example: nvbridge events, both ways.
 *
 *   nvb-example-events [PREFIX]
 *
 * 1. The library's own io_uring: nvb_event_read() with a timeout.
 * 2. The application's ring: nvb_prep_event_read() next to the
 *    application's other I/O (here: a read on stdin), completions told
 *    apart with nvb_cqe_is_event().
 *
 * It watches PREFIX (default "example/"), publishes a few names itself so
 * there is something to see, and prints each event.  Build:
 *   cc events.c $(pkg-config --cflags --libs libnvbridge) -luring
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <liburing.h>
#include <nvbridge.h>
#include <nvbridge_uring.h>

static void show(const char *how, const struct nvb_event *e)
{
	static const char *const type[] = { "?", "published", "revoked", "overflow" };

	printf("%-12s seq %-3llu %-9s %-24s id %llu pid %u uid %u reason %u\n", how,
	       (unsigned long long)e->seq, type[e->type <= 3 ? e->type : 0], e->name,
	       (unsigned long long)e->id, e->pid, e->uid, e->reason);
}

int main(int argc, char **argv)
{
	const char *prefix = argc > 1 ? argv[1] : "example/";
	char name[NVB_NAME_MAX], stdin_buf[64];
	unsigned char evbuf[8 * NVB_EVENT_RECORD_SIZE];
	struct nvb *h, *pub;
	struct nvb_event ev[8];
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	uint64_t id;
	int n, ret, seen = 0;

	if (nvb_open(NULL, &h) || nvb_open(NULL, &pub)) {
		fprintf(stderr, "nvb_open: %s\n", nvb_open_error());
		return 1;
	}
	printf("backend: %s\n", nvb_backend_name(nvb_backend(h)));
	ret = nvb_watch(h, prefix, NVB_WATCH_PREFIX, NULL);
	if (ret) {
		fprintf(stderr, "watch: %s\n", nvb_last_error(h));
		return 1;
	}

	/* 1: the library's ring */
	snprintf(name, sizeof(name), "%sone", prefix);
	if (nvb_publish(pub, name, -1, "hello", 5, NULL, &id) || nvb_unpublish(pub, id, NULL)) {
		fprintf(stderr, "publish: %s\n", nvb_last_error(pub));
		return 1;
	}
	while ((n = nvb_event_read(h, ev, 8, 500000000LL)) > 0)
		for (int i = 0; i < n; i++)
			show("library-ring", &ev[i]);

	/* 2: our own ring, with an unrelated read on stdin in flight as well */
	if (io_uring_queue_init(8, &ring, 0)) {
		fprintf(stderr, "io_uring_queue_init failed\n");
		return 1;
	}
	io_uring_prep_read(io_uring_get_sqe(&ring), STDIN_FILENO, stdin_buf, sizeof(stdin_buf), 0);
	nvb_prep_event_read(io_uring_get_sqe(&ring), h, evbuf, sizeof(evbuf));
	io_uring_submit(&ring);
	snprintf(name, sizeof(name), "%stwo", prefix);
	nvb_publish(pub, name, -1, NULL, 0, NULL, NULL);
	nvb_close(pub);	/* revokes "two" */
	while (seen < 2) {
		struct __kernel_timespec ts = { .tv_sec = 2 };

		if (io_uring_wait_cqe_timeout(&ring, &cqe, &ts))
			break;
		if (nvb_cqe_is_event(h, cqe)) {
			n = nvb_event_parse(h, evbuf, cqe->res, ev, 8);
			for (int i = 0; i < n; i++, seen++)
				show("app-ring", &ev[i]);
			io_uring_cqe_seen(&ring, cqe);
			nvb_prep_event_read(io_uring_get_sqe(&ring), h, evbuf, sizeof(evbuf));
			io_uring_submit(&ring);
		} else {
			printf("stdin: %d bytes\n", cqe->res);
			io_uring_cqe_seen(&ring, cqe);
		}
	}
	io_uring_queue_exit(&ring);	/* cancels the reads still in flight */
	nvb_close(h);
	return seen == 2 ? 0 : 1;
}
