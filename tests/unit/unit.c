// SPDX-License-Identifier: MIT
/*
 * libnvbridge unit tests: no real backend needed.  Fake brokers (a thread
 * on a private socket) play ABI mismatches, garbage and sudden death.
 * Prints one line per case and "N passed, M failed".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/nvbridge.h>
#include "nvbridge.h"
#include "nvbridge_uring.h"

#define FAIL(...) do { printf("    %s:%d: ", __func__, __LINE__); printf(__VA_ARGS__); \
		       printf("\n"); return 1; } while (0)
#define CHECK(c, ...) do { if (!(c)) FAIL("check failed: " #c " " __VA_ARGS__); } while (0)
#define EXPECT(expr, want) do { long _r = (long)(expr), _w = (long)(want); \
		if (_r != _w) FAIL("%s = %ld, want %ld", #expr, _r, _w); } while (0)

/* ---- the ABI layout: sizes and no implicit padding ---- */
#define SUMCHECK(T, sum) _Static_assert(sizeof(T) == (sum), #T " has padding")
SUMCHECK(struct nvbridge_publish, 4 * 8 + 8 + 8 + 64);
SUMCHECK(struct nvbridge_fetch, 4 + 4 + 8 + 8 + 4 + 4 + 8 + 6 * 4 + 64);
SUMCHECK(struct nvbridge_unpublish, 4 + 4 + 8 + 64);
SUMCHECK(struct nvbridge_watch, 4 + 4 + 8 + 64);
SUMCHECK(struct nvbridge_entry_info, 8 + 6 * 4 + 64);
SUMCHECK(struct nvbridge_list, 4 + 4 + 8 + 8 + 4 + 4);
SUMCHECK(struct nvbridge_info, 10 * 4);
SUMCHECK(struct nvbridge_event, 4 + 2 + 2 + 3 * 8 + 4 * 4 + 64);
SUMCHECK(struct nvbridge_wire_hdr, 4 + 2 + 2 + 5 * 4 + 4);
SUMCHECK(struct nvbridge_wire_hello, 8);
_Static_assert(sizeof(struct nvbridge_publish) == NVBRIDGE_PUBLISH_SIZE_VER0, "publish");
_Static_assert(sizeof(struct nvbridge_fetch) == NVBRIDGE_FETCH_SIZE_VER0, "fetch");
_Static_assert(sizeof(struct nvbridge_unpublish) == NVBRIDGE_UNPUBLISH_SIZE_VER0, "unpublish");
_Static_assert(sizeof(struct nvbridge_watch) == NVBRIDGE_WATCH_SIZE_VER0, "watch");
_Static_assert(sizeof(struct nvbridge_entry_info) == NVBRIDGE_ENTRY_INFO_SIZE_VER0, "entry");
_Static_assert(sizeof(struct nvbridge_list) == NVBRIDGE_LIST_SIZE_VER0, "list");
_Static_assert(sizeof(struct nvbridge_info) == NVBRIDGE_INFO_SIZE_VER0, "info");
_Static_assert(sizeof(struct nvbridge_event) == NVBRIDGE_EVENT_SIZE, "event");
_Static_assert(sizeof(struct nvbridge_wire_hdr) == NVBRIDGE_WIRE_HDR_SIZE, "wire hdr");
_Static_assert(sizeof(struct nvbridge_wire_hello) == NVBRIDGE_WIRE_HELLO_SIZE, "hello");
_Static_assert(NVB_EVENT_RECORD_SIZE == NVBRIDGE_EVENT_SIZE, "record size");
_Static_assert((int)NVB_ACCESS_GID == (int)NVBRIDGE_ACCESS_GID && (int)NVB_ACCESS_SCOPE == (int)NVBRIDGE_ACCESS_SCOPE,
	       "access values");
_Static_assert(NVB_FETCH_WAIT == NVBRIDGE_FETCH_WAIT &&
	       NVB_FETCH_NO_CLOEXEC == NVBRIDGE_FETCH_NO_CLOEXEC, "fetch flags");
_Static_assert(NVB_ENTRY_HAS_FD == NVBRIDGE_ENTRY_HAS_FD && NVB_ENTRY_OWN == NVBRIDGE_ENTRY_OWN,
	       "entry flags");
_Static_assert(NVB_WATCH_PREFIX == NVBRIDGE_WATCH_PREFIX, "watch flags");

static void rnd(void *p, size_t n)
{
	if (getrandom(p, n, 0) != (ssize_t)n)
		abort();
}

/* ---- fake broker ---- */
enum fake_mode { FAKE_ABI2, FAKE_CLOSE, FAKE_GARBAGE, FAKE_DIE_ON_REQUEST, FAKE_EVENTS };

struct fake {
	enum fake_mode mode;
	char path[108];
	int lfd;
	pthread_t t;
	struct nvbridge_event ev[3];
};

static int recv_one(int s, void *buf, size_t len, int *fd)
{
	struct iovec iov = { buf, len };
	union { struct cmsghdr c; char b[CMSG_SPACE(sizeof(int))]; } cm;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			    .msg_controllen = sizeof(cm.b) };
	ssize_t n = recvmsg(s, &m, MSG_CMSG_CLOEXEC);

	*fd = -1;
	if (n > 0 && m.msg_controllen >= CMSG_LEN(sizeof(int)))
		memcpy(fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
	return (int)n;
}

static void send_fd(int s, const void *buf, size_t len, int fd)
{
	struct iovec iov = { (void *)buf, len };
	union { struct cmsghdr c; char b[CMSG_SPACE(sizeof(int))]; } cm;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (fd >= 0) {
		memset(&cm, 0, sizeof(cm));
		m.msg_control = cm.b;
		m.msg_controllen = sizeof(cm.b);
		cm.c.cmsg_level = SOL_SOCKET;
		cm.c.cmsg_type = SCM_RIGHTS;
		cm.c.cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(&cm.c), &fd, sizeof(int));
	}
	if (sendmsg(s, &m, MSG_NOSIGNAL) < 0)
		perror("fake: sendmsg");
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	unsigned char buf[1024];
	struct {
		struct nvbridge_wire_hdr h;
		struct nvbridge_info i;
	} r;
	int c, fd, sv[2];

	c = accept(f->lfd, NULL, NULL);
	if (c < 0)
		return NULL;
	if (recv_one(c, buf, sizeof(buf), &fd) <= 0)
		goto out;
	if (fd >= 0)
		close(fd);
	if (f->mode == FAKE_CLOSE)
		goto out;
	if (f->mode == FAKE_GARBAGE) {
		rnd(buf, 100);
		send(c, buf, 100, MSG_NOSIGNAL);
		goto out;
	}
	memset(&r, 0, sizeof(r));
	r.h.magic = NVBRIDGE_WIRE_MAGIC;
	r.h.version = NVBRIDGE_WIRE_VERSION;
	r.h.type = NVBRIDGE_WIRE_HELLO;
	r.h.arg_size = sizeof(r.i);
	r.i.size = sizeof(r.i);
	r.i.abi_version = f->mode == FAKE_ABI2 ? 2 : NVBRIDGE_ABI_VERSION;
	r.i.max_blob_size = 4096;
	socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
	send_fd(c, &r, sizeof(r), sv[1]);
	close(sv[1]);
	if (f->mode == FAKE_EVENTS) {
		for (int i = 0; i < 3; i++)
			send(sv[0], &f->ev[i], sizeof(f->ev[i]), MSG_NOSIGNAL);
		/* wait for the client to go */
		while (recv_one(c, buf, sizeof(buf), &fd) > 0)
			if (fd >= 0)
				close(fd);
	} else if (f->mode == FAKE_DIE_ON_REQUEST) {
		recv_one(c, buf, sizeof(buf), &fd);	/* the request: die instead of answering */
		if (fd >= 0)
			close(fd);
	}
	close(sv[0]);
out:
	close(c);
	return NULL;
}

static int fake_start(struct fake *f, enum fake_mode mode)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	f->mode = mode;
	snprintf(f->path, sizeof(f->path), "/tmp/nvb-unit-%d-%d.sock", getpid(), (int)mode);
	unlink(f->path);
	strcpy(sa.sun_path, f->path);
	f->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(f->lfd, 4))
		return -1;
	return pthread_create(&f->t, NULL, fake_main, f) ? -1 : 0;
}

static void fake_stop(struct fake *f)
{
	pthread_join(f->t, NULL);
	close(f->lfd);
	unlink(f->path);
}

static struct nvb_opts broker_at(const char *path)
{
	struct nvb_opts o = { .sz = sizeof(o), .backend = NVB_BACKEND_BROKER, .socket_path = path };

	return o;
}

/* ---- cases ---- */
static int t_strerror(void)
{
	int errs[] = { 0, ENOENT, EEXIST, EACCES, EPERM, EDQUOT, EMSGSIZE, ETIMEDOUT, EINTR,
		       ENOSPC, EPROTO, ECONNRESET, EBADF, E2BIG, ENOTTY, EINVAL, 9999 };

	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		const char *a = nvb_strerror(-errs[i]), *b = nvb_strerror(errs[i]);

		CHECK(a && *a && !strcmp(a, b), "errno %d", errs[i]);
	}
	CHECK(strstr(nvb_strerror(-EDQUOT), "quota"), "%s", nvb_strerror(-EDQUOT));
	CHECK(strstr(nvb_strerror(-ECONNRESET), "broker"), "%s", nvb_strerror(-ECONNRESET));
	EXPECT(strcmp(nvb_backend_name(NVB_BACKEND_KERNEL), "kernel"), 0);
	EXPECT(strcmp(nvb_backend_name(NVB_BACKEND_BROKER), "broker"), 0);
	EXPECT(strcmp(nvb_backend_name(77), "unknown"), 0);
	return 0;
}

static int t_open_args(void)
{
	struct nvb_opts o = { .sz = sizeof(o) };
	unsigned char big[sizeof(o) + 16];
	struct nvb *h = (struct nvb *)&o;

	EXPECT(nvb_open(NULL, NULL), -EINVAL);
	o.sz = 3;
	EXPECT(nvb_open(&o, &h), -EINVAL);
	CHECK(h == NULL, "out not cleared on failure");
	CHECK(strstr(nvb_open_error(), "sz"), "%s", nvb_open_error());
	o.sz = sizeof(o);
	o.flags = 4;
	EXPECT(nvb_open(&o, &h), -EINVAL);
	CHECK(strstr(nvb_open_error(), "flags"), "%s", nvb_open_error());
	o.flags = 0;
	o.backend = 9;
	EXPECT(nvb_open(&o, &h), -EINVAL);
	/* a newer caller's larger struct: zero tail fine, non-zero tail E2BIG */
	memset(big, 0, sizeof(big));
	memcpy(big, &o, sizeof(o));
	((struct nvb_opts *)big)->sz = sizeof(big);
	((struct nvb_opts *)big)->backend = NVB_BACKEND_BROKER;
	((struct nvb_opts *)big)->socket_path = "/nonexistent/x.sock";
	EXPECT(nvb_open((struct nvb_opts *)big, &h), -ENOENT);
	big[sizeof(o) + 5] = 1;
	EXPECT(nvb_open((struct nvb_opts *)big, &h), -E2BIG);
	return 0;
}

static int t_env_overrides(void)
{
	struct nvb *h;
	int r;

	setenv("NVBRIDGE_BACKEND", "bogus", 1);
	EXPECT(nvb_open(NULL, &h), -EINVAL);
	CHECK(strstr(nvb_open_error(), "NVBRIDGE_BACKEND"), "%s", nvb_open_error());
	setenv("NVBRIDGE_BACKEND", "broker", 1);
	setenv("NVBRIDGE_SOCKET", "/nonexistent/nvb.sock", 1);
	r = nvb_open(NULL, &h);
	EXPECT(r, -ENOENT);
	CHECK(strstr(nvb_open_error(), "/nonexistent/nvb.sock"), "%s", nvb_open_error());
	CHECK(strstr(nvb_open_error(), "nvbridged"), "%s", nvb_open_error());
	/* explicit options win over the environment */
	struct nvb_opts o = { .sz = sizeof(o), .backend = NVB_BACKEND_KERNEL,
			      .device_path = "/nonexistent/nvbridge" };

	r = nvb_open(&o, &h);
	CHECK(r < 0 && strstr(nvb_open_error(), "kernel"), "%d %s", r, nvb_open_error());
	unsetenv("NVBRIDGE_BACKEND");
	unsetenv("NVBRIDGE_SOCKET");
	return 0;
}

static int t_kernel_not_nvbridge(void)
{
	struct nvb_opts o = { .sz = sizeof(o), .backend = NVB_BACKEND_KERNEL,
			      .device_path = "/dev/null" };
	struct nvb *h;

	if (access("/sys/class/misc/nvbridge", F_OK) == 0) {
		printf("    (module loaded: skipping the /dev/null variant)\n");
		return 0;
	}
	EXPECT(nvb_open(&o, &h), -EPROTO);	/* INFO is ENOTTY on /dev/null */
	CHECK(strstr(nvb_open_error(), "INFO"), "%s", nvb_open_error());
	return 0;
}

static int t_broker_abi_mismatch(void)
{
	struct fake f;
	struct nvb *h;
	struct nvb_opts o;
	char want[64];

	CHECK(!fake_start(&f, FAKE_ABI2), "fake");
	o = broker_at(f.path);
	EXPECT(nvb_open(&o, &h), -EPROTO);
	snprintf(want, sizeof(want), "ABI version 2");
	CHECK(strstr(nvb_open_error(), want), "%s", nvb_open_error());
	snprintf(want, sizeof(want), "ABI version %d", NVBRIDGE_ABI_VERSION);
	CHECK(strstr(nvb_open_error(), want), "both versions not named: %s", nvb_open_error());
	fake_stop(&f);
	return 0;
}

static int t_broker_closes(void)
{
	struct fake f;
	struct nvb *h;
	struct nvb_opts o;

	CHECK(!fake_start(&f, FAKE_CLOSE), "fake");
	o = broker_at(f.path);
	EXPECT(nvb_open(&o, &h), -ECONNRESET);
	fake_stop(&f);
	CHECK(!fake_start(&f, FAKE_GARBAGE), "fake");
	o = broker_at(f.path);
	EXPECT(nvb_open(&o, &h), -EPROTO);
	CHECK(strstr(nvb_open_error(), "not an nvbridged"), "%s", nvb_open_error());
	fake_stop(&f);
	return 0;
}

static int t_broker_dies_mid_request(void)
{
	struct fake f;
	struct nvb *h;
	struct nvb_opts o;
	int ret;

	CHECK(!fake_start(&f, FAKE_DIE_ON_REQUEST), "fake");
	o = broker_at(f.path);
	EXPECT(nvb_open(&o, &h), 0);
	ret = nvb_publish(h, "x", -1, NULL, 0, NULL, NULL);
	EXPECT(ret, -ECONNRESET);
	CHECK(strstr(nvb_last_error(h), "broker"), "%s", nvb_last_error(h));
	/* later calls fail at once, no SIGPIPE (we would be dead) */
	EXPECT(nvb_fetch(h, "x", NULL, NULL, 0, NULL, NULL), -ECONNRESET);
	nvb_close(h);
	fake_stop(&f);
	return 0;
}

static int t_event_parse(void)
{
	struct fake f;
	struct nvb *h;
	struct nvb_opts o;
	struct nvb_event ev[4];
	unsigned char raw[3 * NVBRIDGE_EVENT_SIZE];

	for (int i = 0; i < 3; i++) {
		struct nvbridge_event *r = &f.ev[i];

		rnd(r, sizeof(*r));
		r->size = NVBRIDGE_EVENT_SIZE;
		r->type = (uint16_t)(1 + i);
		r->reason = (uint16_t)i;
		r->name[NVBRIDGE_NAME_MAX - 1] = 0;
		memcpy(raw + i * NVBRIDGE_EVENT_SIZE, r, sizeof(*r));
	}
	/* decoding without a handle */
	EXPECT(nvb_event_parse(NULL, raw, sizeof(raw), ev, 4), 3);
	for (int i = 0; i < 3; i++) {
		EXPECT(ev[i].type, 1 + i);
		EXPECT(ev[i].seq, f.ev[i].seq);
		EXPECT(ev[i].id, f.ev[i].id);
		EXPECT(ev[i].watch_id, f.ev[i].watch_id);
		EXPECT(ev[i].pid, f.ev[i].pid);
		EXPECT(ev[i].lost, f.ev[i].lost);
		CHECK(!strcmp(ev[i].name, f.ev[i].name), "name");
	}
	EXPECT(nvb_event_parse(NULL, raw, sizeof(raw), ev, 2), 2);
	EXPECT(nvb_event_parse(NULL, raw, 50, ev, 4), -EPROTO);
	EXPECT(nvb_event_parse(NULL, raw, -EAGAIN, ev, 4), -EAGAIN);
	raw[4] = 9;	/* bad type */
	EXPECT(nvb_event_parse(NULL, raw, sizeof(raw), ev, 4), -EPROTO);

	/* the same records through a (fake) broker's event socket and the library ring */
	CHECK(!fake_start(&f, FAKE_EVENTS), "fake");
	o = broker_at(f.path);
	EXPECT(nvb_open(&o, &h), 0);
	int got = 0;

	while (got < 3) {
		int n = nvb_event_read(h, ev + got, 4 - (unsigned)got, 2000000000LL);

		CHECK(n > 0, "event_read %d", n);
		got += n;
	}
	for (int i = 0; i < 3; i++)
		EXPECT(ev[i].seq, f.ev[i].seq);
	EXPECT(nvb_event_read(h, ev, 1, 0), -EAGAIN);
	struct io_uring_sqe sqe;

	EXPECT(nvb_prep_event_read(&sqe, h, raw, sizeof(raw)), 0);
	EXPECT(sqe.user_data, nvb_event_tag(h));
	EXPECT(sqe.fd, nvb_event_fd(h));
	struct io_uring_cqe cqe = { .user_data = nvb_event_tag(h) };

	CHECK(nvb_cqe_is_event(h, &cqe), "tag");
	cqe.user_data = 1;
	CHECK(!nvb_cqe_is_event(h, &cqe), "tag");
	nvb_close(h);
	fake_stop(&f);
	return 0;
}

static int t_null_handle(void)
{
	EXPECT(nvb_publish(NULL, "x", -1, NULL, 0, NULL, NULL), -EINVAL);
	EXPECT(nvb_fetch(NULL, "x", NULL, NULL, 0, NULL, NULL), -EINVAL);
	EXPECT(nvb_unpublish(NULL, 1, NULL), -EINVAL);
	EXPECT(nvb_watch(NULL, "x", 0, NULL), -EINVAL);
	EXPECT(nvb_unwatch(NULL, 1), -EINVAL);
	EXPECT(nvb_event_read(NULL, NULL, 1, 0), -EINVAL);
	EXPECT(nvb_event_fd(NULL), -EINVAL);
	EXPECT(nvb_backend(NULL), -EINVAL);
	nvb_close(NULL);
	CHECK(nvb_last_error(NULL) != NULL, "NULL");
	return 0;
}

static const struct { const char *name; int (*fn)(void); } cases[] = {
	{ "strerror", t_strerror },
	{ "open_args", t_open_args },
	{ "env_overrides", t_env_overrides },
	{ "kernel_not_nvbridge", t_kernel_not_nvbridge },
	{ "broker_abi_mismatch", t_broker_abi_mismatch },
	{ "broker_closes_or_garbage", t_broker_closes },
	{ "broker_dies_mid_request", t_broker_dies_mid_request },
	{ "event_parse_and_tags", t_event_parse },
	{ "null_handle", t_null_handle },
};

int main(void)
{
	int pass = 0, fail = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = cases[i].fn();

		printf("%s unit %s\n", r ? "FAIL" : "ok  ", cases[i].name);
		if (r)
			fail++;
		else
			pass++;
	}
	printf("%d passed, %d failed\n", pass, fail);
	return fail != 0;
}
