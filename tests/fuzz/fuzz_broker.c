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
 * a second one.  A first byte with bit 0 set starts with a valid HELLO, so
 * that the fuzzer reaches the requests without having to find one.
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
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char msg[MSG_MAX + 1];
	struct user *u;
	struct client *c;
	int sv[2];
	int64_t next = -1;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
		return 0;
	u = user_get(geteuid());
	c = u ? client_new(sv[0], u) : NULL;
	if (!c) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	if (size && (data[0] & 1)) {
		struct { struct nvbridge_wire_hdr h; struct nvbridge_wire_hello w; } hello = {
			{ .magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
			  .type = NVBRIDGE_WIRE_HELLO, .arg_size = NVBRIDGE_WIRE_HELLO_SIZE },
			{ .abi_version = NVBRIDGE_ABI_VERSION } };

		handle_message(c, (void *)&hello, sizeof(hello), NULL, 0, false);
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
		handle_message(c, msg, len, fds, nfds, (fl & 4) != 0);
		data += len;
		size -= len;
		drain(sv[1]);
		throttled_tick();
	}
	drain(sv[1]);
	close(sv[1]);
	if (!c->dead)
		drop_client(c, "fuzz input done");
	conns_tick(now_ns(), &next);
	closer_run();
	return 0;
}
