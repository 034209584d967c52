// SPDX-License-Identifier: MIT
/*
 * libFuzzer harness for libnvbridge's broker reply parser (libnvbridge/reply.c):
 * what a rogue or broken broker can send, as bytes plus fds, with no socket.
 *
 * Input: an 8-byte preamble that sets the scene, then the message.
 *   [0] bit 0: a HELLO answer (else a REPLY); bits 1-3: the command of the
 *       request in flight (PUBLISH, FETCH, UNPUBLISH, WATCH, UNWATCH, LIST,
 *       INFO); bit 4: NO_CLOEXEC
 *   [1] bits 0-2: fds that came with it (0-4); bit 3: MSG_CTRUNC; bit 4:
 *       MSG_TRUNC; bits 5-6: their kind (/dev/null, SOCK_SEQPACKET, pipe)
 *   [2] seq of the request in flight (a second one has seq + 1, INFO)
 *   [3] LIST: records asked for; [4..5] blob / LIST buffer bytes (le16)
 *   [6] LIST entry size - 96 (so 96..351); [7] unused
 * Every fd must come back (returned to its request, or closed): a leak
 * aborts.  Replies are written into buffers of exactly the asked size, so
 * ASan reports any write past what the request allowed.
 *
 * NVB_FUZZ_WRITE_SEEDS=DIR writes the seed corpus (well-formed messages)
 * into DIR and exits: tests/fuzz/corpus-lib/ is its output.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include "nvb_internal.h"
#include "nvb_wire.h"

#define PRE 8

static const uint32_t cmds[8] = {
	NVBRIDGE_IOC_PUBLISH, NVBRIDGE_IOC_FETCH, NVBRIDGE_IOC_UNPUBLISH, NVBRIDGE_IOC_WATCH,
	NVBRIDGE_IOC_UNWATCH, NVBRIDGE_IOC_LIST, NVBRIDGE_IOC_INFO, NVBRIDGE_IOC_INFO,
};

static int lowest_free;

static int lowest(void)
{
	int f = open("/dev/null", O_RDONLY | O_CLOEXEC);

	if (f >= 0)
		close(f);
	return f;
}

static int make_fd(int kind)
{
	int p[2];

	switch (kind) {
	case 1:
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p))
			return -1;
		close(p[1]);
		return p[0];
	case 2:
		if (pipe2(p, O_CLOEXEC))
			return -1;
		close(p[1]);
		return p[0];
	default:
		return open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
}

static uint32_t arg_size_of(uint32_t cmd)
{
	switch (cmd) {
	case NVBRIDGE_IOC_PUBLISH: return sizeof(struct nvbridge_publish);
	case NVBRIDGE_IOC_FETCH: return sizeof(struct nvbridge_fetch);
	case NVBRIDGE_IOC_UNPUBLISH: return sizeof(struct nvbridge_unpublish);
	case NVBRIDGE_IOC_LIST: return sizeof(struct nvbridge_list);
	case NVBRIDGE_IOC_INFO: return sizeof(struct nvbridge_info);
	default: return sizeof(struct nvbridge_watch);
	}
}

static void one(const uint8_t *d, size_t n)
{
	struct nvb_rx rx = { 0 };
	char why[NVB_ERRLEN];
	uint32_t cmd = cmds[(d[0] >> 1) & 7], asz = arg_size_of(cmd);
	size_t cap = (size_t)d[4] | (size_t)d[5] << 8;
	uint32_t esz = 96 + d[6];
	unsigned int nfds = d[1] & 7;
	/* heap buffers of exactly the asked size: ASan sees any overrun */
	void *msg = malloc(n - PRE ? n - PRE : 1);
	void *arg = calloc(1, asz), *arg2 = calloc(1, sizeof(struct nvbridge_info));
	void *data;
	struct nvb_pending p = { .cmd = cmd, .seq = d[2], .arg = arg, .arg_size = asz,
				 .cloexec = !(d[0] & 16), .fd = -1, .efd = -1 };
	struct nvb_pending p2 = { .cmd = NVBRIDGE_IOC_INFO, .seq = d[2] + 1u, .arg = arg2,
				  .arg_size = sizeof(struct nvbridge_info), .fd = -1, .efd = -1 };
	struct nvb_pending *out;

	if (nfds > NVB_RX_MAXFD)
		nfds = NVB_RX_MAXFD;
	memcpy(msg, d + PRE, n - PRE);
	memcpy(arg, &asz, 4);
	if (cmd == NVBRIDGE_IOC_LIST) {
		p.list_count = d[3];
		p.entry_size = esz;
		cap = (size_t)p.list_count * esz;
		((struct nvbridge_list *)arg)->count = p.list_count;
		((struct nvbridge_list *)arg)->entry_size = esz;
	}
	data = cap ? malloc(cap) : NULL;
	if (cmd == NVBRIDGE_IOC_FETCH || cmd == NVBRIDGE_IOC_LIST) {
		p.data = data;
		p.data_cap = data ? cap : 0;
	}
	p.next = &p2;
	rx.buf = msg;
	rx.len = n - PRE;
	rx.ctrunc = d[1] & 8;
	rx.trunc = d[1] & 16;
	for (unsigned int i = 0; i < nfds; i++) {
		int f = make_fd((d[1] >> 5) & 3);

		if (f >= 0)
			rx.fds[rx.nfds++] = f;
	}

	if (d[0] & 1) {
		struct nvbridge_info info;
		int evfd = -1;

		if (nvb_hello_parse(&rx, &info, &evfd, why, sizeof(why)) == 0)
			close(evfd);
		else if (evfd != -1)
			abort();	/* an fd handed out on failure */
	} else {
		int ret = nvb_reply_dispatch(&p, &rx, &out, why, sizeof(why));

		if (ret == 0 && out == &p && cmd == NVBRIDGE_IOC_FETCH && p.result >= 0) {
			const struct nvbridge_fetch *f = arg;

			if (f->entry_flags & NVBRIDGE_ENTRY_HAS_FD)
				close(p.result);
		}
		if (ret == 0 && out == &p && cmd == NVBRIDGE_IOC_LIST && p.result > (int)p.list_count)
			abort();	/* more records than asked */
		if (ret == 0 && cmd != NVBRIDGE_IOC_LIST && cmd != NVBRIDGE_IOC_FETCH &&
		    out == &p && p.result > 0)
			abort();
	}
	if (rx.nfds)
		abort();	/* the parser must consume every fd */
	if (lowest() != lowest_free)
		abort();	/* an fd leaked */
	free(msg);
	free(arg);
	free(arg2);
	free(data);
}

static void seed(const char *dir, const char *name, uint8_t pre0, uint8_t pre1, uint8_t seq,
		 uint8_t count, uint16_t cap, const void *m, size_t len)
{
	char path[512];
	uint8_t pre[PRE] = { pre0, pre1, seq, count, (uint8_t)cap, (uint8_t)(cap >> 8), 0, 0 };
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(pre, 1, PRE, f) != PRE || fwrite(m, 1, len, f) != len || fclose(f))
		exit(1);
}

static void write_seeds(const char *dir)
{
	struct {
		struct nvbridge_wire_hdr h;
		union {
			struct nvbridge_info i;
			struct nvbridge_fetch f;
			struct nvbridge_publish p;
			struct nvbridge_list l;
		} a;
		unsigned char data[2 * 96];
	} m;
	const size_t H = sizeof(m.h);

	memset(&m, 0, sizeof(m));
	m.h.magic = NVBRIDGE_WIRE_MAGIC;
	m.h.version = NVBRIDGE_WIRE_VERSION;
	m.h.type = NVBRIDGE_WIRE_HELLO;
	m.h.arg_size = sizeof(m.a.i);
	m.a.i.size = sizeof(m.a.i);
	m.a.i.abi_version = NVBRIDGE_ABI_VERSION;
	seed(dir, "hello-ok", 1, 1 | 1 << 5, 0, 0, 0, &m, H + sizeof(m.a.i));
	m.h.result = -EACCES;
	seed(dir, "hello-refused", 1, 0, 0, 0, 0, &m, H);

	memset(&m.a, 0, sizeof(m.a));
	m.h.type = NVBRIDGE_WIRE_REPLY;
	m.h.result = 0;
	m.h.seq = 5;
	m.h.cmd = NVBRIDGE_IOC_INFO;
	m.a.i.size = sizeof(m.a.i);
	seed(dir, "info", 6 << 1, 0, 5, 0, 0, &m, H + sizeof(m.a.i));
	m.h.cmd = NVBRIDGE_IOC_PUBLISH;
	m.h.arg_size = sizeof(m.a.p);
	m.a.p.size = sizeof(m.a.p);
	m.a.p.id = 7;
	seed(dir, "publish", 0, 0, 5, 0, 0, &m, H + sizeof(m.a.p));
	m.h.result = -EEXIST;
	m.h.arg_size = 0;
	seed(dir, "publish-eexist", 0, 0, 5, 0, 0, &m, H);

	m.h.result = 0;
	m.h.cmd = NVBRIDGE_IOC_FETCH;
	m.h.arg_size = sizeof(m.a.f);
	memset(&m.a, 0, sizeof(m.a));
	m.a.f.size = sizeof(m.a.f);
	m.a.f.entry_flags = NVBRIDGE_ENTRY_HAS_FD;
	m.a.f.blob_len = 16;
	m.h.data_len = 16;
	memset(m.data, 'b', 16);
	memcpy((char *)&m + H + sizeof(m.a.f), m.data, 16);
	seed(dir, "fetch-fd-blob", 1 << 1, 1, 5, 0, 64, &m, H + sizeof(m.a.f) + 16);
	seed(dir, "fetch-fd-lost", 1 << 1, 8, 5, 0, 64, &m, H + sizeof(m.a.f) + 16);

	m.h.cmd = NVBRIDGE_IOC_LIST;
	m.h.result = 2;
	m.h.arg_size = sizeof(m.a.l);
	m.h.data_len = 2 * 96;
	memset(&m.a, 0, sizeof(m.a));
	m.a.l.size = sizeof(m.a.l);
	m.a.l.count = 2;
	m.a.l.entry_size = 96;
	seed(dir, "list-2", 5 << 1, 0, 5, 4, 0, &m, H + sizeof(m.a.l) + 2 * 96);
	exit(0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("NVB_FUZZ_WRITE_SEEDS");

	(void)argc;
	(void)argv;
	if (dir)
		write_seeds(dir);
	lowest_free = lowest();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	if (n < PRE)
		return 0;
	one(d, n);
	return 0;
}
