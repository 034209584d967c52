// SPDX-License-Identifier: MIT
/*
 * libFuzzer harness for nvbridged's message handling: framing, HELLO,
 * every request's struct checks and the registry behind them, the reply
 * queue.  The broker's own files (all of daemon/ but main.c) are linked in;
 * a client is made on one end of a socketpair, so identity, replies and fd
 * passing are the real ones.
 *
 * Input: a sequence of messages, each [u16 length][u8 flags][bytes]; flag
 * bit 0 attaches a memfd (SCM_RIGHTS as the broker would receive it), bit 1
 * a second one, bit 2 marks it truncated, bit 3 sends it on the second
 * client.  A first byte with bit 0 set starts with a valid HELLO, so that
 * the fuzzer reaches the requests without having to find one.  The second
 * client has said HELLO and watches every name ("" prefix), so that the
 * event paths run too.
 *
 *   make fuzz-broker && build/fuzz/fuzz-broker -runs=1000000 tests/fuzz/corpus/broker
 */
#define _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/mman.h>
#include "../../daemon/nvbridged.h"

static int one_fd(void)
{
	int fd = memfd_create("fz", MFD_CLOEXEC);

	if (fd >= 0 && write(fd, "x", 1) < 0) {
		/* an empty memfd is as good */
	}
	return fd;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	ep = epoll_create1(EPOLL_CLOEXEC);
	events_init();
	closer_reserve();	/* as nvbridged: closes queue in the fd-indexed table */
	closer_init();
	conn_limits_init();
	return 0;
}

static void drain(int s)
{
	unsigned char b[MSG_MAX];
	union { struct cmsghdr c; char b[CMSG_SPACE(4 * sizeof(int))]; } cm;

	for (;;) {
		struct iovec iov = { b, sizeof(b) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
				    .msg_controllen = sizeof(cm.b) };

		if (recvmsg(s, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) <= 0)
			return;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
				for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
					int f;

					memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
					close(f);
				}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static struct client *new_client(int *peer)
{
	struct user *u = user_get(geteuid());
	struct client *c;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
		return NULL;
	c = u ? client_new(sv[0], u) : NULL;
	if (!c) {
		close(sv[0]);
		close(sv[1]);
		return NULL;
	}
	*peer = sv[1];
	return c;
}

static void hello(struct client *c)
{
	struct { struct nvbridge_wire_hdr h; struct nvbridge_wire_hello w; } m = {
		{ .magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
		  .type = NVBRIDGE_WIRE_HELLO, .arg_size = NVBRIDGE_WIRE_HELLO_SIZE },
		{ .abi_version = NVBRIDGE_ABI_VERSION } };

	handle_message(c, (void *)&m, sizeof(m), NULL, 0, false);
}

static void watch_all(struct client *c)
{
	struct { struct nvbridge_wire_hdr h; struct nvbridge_watch w; } m = {
		{ .magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
		  .type = NVBRIDGE_WIRE_REQUEST, .cmd = NVBRIDGE_IOC_WATCH, .seq = 1,
		  .arg_size = sizeof(struct nvbridge_watch) },
		{ .size = sizeof(struct nvbridge_watch), .flags = NVBRIDGE_WATCH_PREFIX } };

	handle_message(c, (void *)&m, sizeof(m), NULL, 0, false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char msg[MSG_MAX + 1];
	struct client *c, *w;
	int peer = -1, wpeer = -1;
	int64_t next = -1;

	c = new_client(&peer);
	w = new_client(&wpeer);
	if (!c || !w) {
		if (c)
			drop_client(c, "fuzz setup");
		if (w)
			drop_client(w, "fuzz setup");
		conns_tick(now_ns(), &next);
		close(peer);
		close(wpeer);
		return 0;
	}
	hello(w);
	watch_all(w);
	if (size && (data[0] & 1)) {
		hello(c);
		data++;
		size--;
	}
	while (size >= 3 && !c->dead) {
		size_t len = (size_t)data[0] | (size_t)data[1] << 8;
		uint8_t fl = data[2];
		int fds[2], nfds = 0;

		data += 3;
		size -= 3;
		if (len > size)
			len = size;
		if (len > MSG_MAX)
			len = MSG_MAX;
		memcpy(msg, data, len);
		if (fl & 1)
			fds[nfds++] = one_fd();
		if (fl & 2)
			fds[nfds++] = one_fd();
		handle_message((fl & 8) && !w->dead ? w : c, msg, len, fds, nfds, (fl & 4) != 0);
		data += len;
		size -= len;
		drain(peer);
		drain(wpeer);
		throttled_tick();
		ev_overflows();
	}
	drain(peer);
	close(peer);
	close(wpeer);
	if (!c->dead)
		drop_client(c, "fuzz input done");
	if (!w->dead)
		drop_client(w, "fuzz input done");
	conns_tick(now_ns(), &next);
	/* the closer processes' completions: the next input starts with no close pending */
	for (int i = 0; i < 200 && closer_pending(); i++) {
		struct epoll_event e[8];

		epoll_wait(ep, e, 8, 5);
		closer_completions();
	}
	closer_reap();
	closer_tick(now_ns(), &next);
	return 0;
}
