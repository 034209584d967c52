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
#include <dirent.h>
#include <poll.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <linux/nvbridge.h>
#include "nvb_wire.h"
#include "nvbridge.h"
#include "nvbridge_uring.h"
#include "cases.h"
#include "../seccomp_refuse.h"

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
enum fake_mode { FAKE_ABI_OTHER, FAKE_CLOSE, FAKE_GARBAGE, FAKE_DIE_ON_REQUEST, FAKE_EVENTS };

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
	union nvb_wire_cmsg cm;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (fd >= 0)
		nvb_wire_attach_fd(&m, &cm, fd);
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
	r.i.abi_version = f->mode == FAKE_ABI_OTHER ? NVBRIDGE_ABI_VERSION + 1 : NVBRIDGE_ABI_VERSION;
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

	CHECK(!fake_start(&f, FAKE_ABI_OTHER), "fake");
	o = broker_at(f.path);
	EXPECT(nvb_open(&o, &h), -EPROTO);
	snprintf(want, sizeof(want), "ABI version %d", NVBRIDGE_ABI_VERSION + 1);
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

/* ---- a real nvbridged under hostile clients (NVB_TEST_DAEMON = its path) ---- */
struct daemon {
	pid_t pid;
	char path[108];
	char log[128];
};
static struct daemon *cur_daemon;	/* killed after a case that failed early */
static bool daemon_no_clone;		/* the next daemon_start: clone() fails EAGAIN (a pids limit) */
static int (*daemon_setup)(void);	/* the next daemon_start: run before exec, nonzero fails */


/* starts nvbridged with extra args; nofile > 0: RLIMIT_NOFILE soft = hard = nofile */
static int daemon_start(struct daemon *d, int nofile, const char *a1, const char *a2)
{
	const char *bin = getenv("NVB_TEST_DAEMON");
	static int n;

	if (!bin)
		return -1;
	snprintf(d->path, sizeof(d->path), "/tmp/nvb-unitd-%d-%d.sock", getpid(), n);
	snprintf(d->log, sizeof(d->log), "/tmp/nvb-unitd-%d-%d.log", getpid(), n++);
	unlink(d->path);
	d->pid = fork();
	if (d->pid == 0) {
		int lf = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

		if (lf >= 0) {
			dup2(lf, 1);
			dup2(lf, 2);
		}
		if (nofile > 0) {
			struct rlimit rl = { (rlim_t)nofile, (rlim_t)nofile };

			setrlimit(RLIMIT_NOFILE, &rl);
		}
		if (daemon_no_clone) {
			/* an ASan build's LeakSanitizer stops the world with clone(), refused here */
			const char *ao = getenv("ASAN_OPTIONS");
			char buf[512];

			snprintf(buf, sizeof(buf), "%s%sdetect_leaks=0", ao ? ao : "",
				 ao && *ao ? ":" : "");
			setenv("ASAN_OPTIONS", buf, 1);
			if (seccomp_refuse(__NR_clone, EAGAIN))
				_exit(126);
		}
		if (daemon_setup && daemon_setup())
			_exit(126);
		execl(bin, bin, "--socket", d->path, a1, a2, (char *)NULL);
		_exit(127);
	}
	cur_daemon = d;
	for (int i = 0; i < 200; i++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

		strcpy(sa.sun_path, d->path);
		if (!connect(s, (struct sockaddr *)&sa, sizeof(sa))) {
			close(s);
			usleep(20000);	/* let it handle (and drop) the probe */
			return 0;
		}
		close(s);
		usleep(10000);
	}
	return -1;
}

/* stops it; nonzero when it did not exit 0 at SIGTERM or logged a sanitizer report */
static int daemon_stop(struct daemon *d)
{
	int st = 0, bad = 0;
	char line[512];
	FILE *f;

	kill(d->pid, SIGTERM);
	waitpid(d->pid, &st, 0);
	cur_daemon = NULL;
	f = fopen(d->log, "re");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "runtime error") || strstr(line, "Sanitizer")) {
			printf("    daemon: %s", line);
			bad = 1;
		}
	if (f)
		fclose(f);
	unlink(d->log);
	unlink(d->path);
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		printf("    daemon exit status 0x%x\n", st);
		bad = 1;
	}
	return bad;
}

static int dconnect(struct daemon *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	strcpy(sa.sun_path, d->path);
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa))) {
		close(s);
		return -1;
	}
	return s;
}

/* sends hdr + arg with nfds copies of fd as SCM_RIGHTS (and our creds) */
static int send_fds(int s, const struct nvbridge_wire_hdr *h, const void *arg, int fd, int nfds)
{
	unsigned char msg[NVBRIDGE_WIRE_HDR_SIZE + 256];
	size_t alen = h->arg_size < 256 ? h->arg_size : 64;	/* a lying header sends less */
	struct iovec iov = { msg, NVBRIDGE_WIRE_HDR_SIZE + alen };
	union { struct cmsghdr c; char b[CMSG_SPACE(32 * sizeof(int))]; } cm;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	int fds[32];

	memcpy(msg, h, sizeof(*h));
	memcpy(msg + NVBRIDGE_WIRE_HDR_SIZE, arg, alen < 40 ? alen : 40);
	if (nfds) {
		for (int i = 0; i < nfds; i++)
			fds[i] = fd;
		memset(&cm, 0, sizeof(cm));
		m.msg_control = cm.b;
		m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		cm.c.cmsg_level = SOL_SOCKET;
		cm.c.cmsg_type = SCM_RIGHTS;
		cm.c.cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(&cm.c), fds, (size_t)nfds * sizeof(int));
	}
	return sendmsg(s, &m, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* a correct HELLO; returns the reply's result */
static int dhello(int s)
{
	struct nvbridge_wire_hdr h = { .magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
				       .type = NVBRIDGE_WIRE_HELLO, .arg_size = NVBRIDGE_WIRE_HELLO_SIZE };
	struct nvbridge_wire_hello hello = { .abi_version = NVBRIDGE_ABI_VERSION };
	unsigned char rb[512];
	int one = 1, pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0), fd, ret;

	setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	ret = send_fds(s, &h, &hello, pidfd, 1);
	close(pidfd);
	if (ret)
		return ret;
	if (recv_one(s, rb, sizeof(rb), &fd) < (int)NVBRIDGE_WIRE_HDR_SIZE)
		return -EPIPE;
	if (fd >= 0)
		close(fd);
	return ((struct nvbridge_wire_hdr *)rb)->result;
}

/* 1 when the broker closes s within ms */
static int closed_within(int s, int ms)
{
	struct pollfd p = { s, POLLIN, 0 };
	char b[256];

	while (poll(&p, 1, ms) == 1) {
		ssize_t n = recv(s, b, sizeof(b), MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return 1;
		if (n < 0 && errno != EAGAIN)
			return 0;
	}
	return 0;
}

/* the daemon's fd count settles back to want within 2 s */
static int fds_settle(pid_t pid, int want)
{
	int n = -1;

	for (int i = 0; i < 100; i++) {
		n = proc_fds(pid);
		if (n == want)
			return n;
		usleep(20000);
	}
	return n;
}

/*
 * fds that arrive with a message the broker refuses (several fds, more
 * fds than it looks at, a truncated control message, a malformed header)
 * are all closed: none stays open in the broker.
 */
static int t_daemon_refused_fds_closed(void)
{
	struct daemon d;
	struct nvbridge_wire_hdr h = { .magic = NVBRIDGE_WIRE_MAGIC, .version = NVBRIDGE_WIRE_VERSION,
				       .type = NVBRIDGE_WIRE_REQUEST, .cmd = NVBRIDGE_IOC_INFO };
	struct nvbridge_info info;
	int memfd = memfd_create("leak", MFD_CLOEXEC), base, s, bad;
	unsigned char junk[4096];

	CHECK(memfd >= 0, "memfd");
	rnd(junk, sizeof(junk));
	CHECK(write(memfd, junk, sizeof(junk)) == (ssize_t)sizeof(junk), "write");
	CHECK(!daemon_start(&d, 0, NULL, NULL), "daemon did not start");
	base = fds_settle(d.pid, proc_fds(d.pid));
	memset(&info, 0, sizeof(info));
	info.size = sizeof(info);
	h.arg_size = sizeof(info);
	static const struct { int hello, nfds; const char *what; } k[] = {
		{ 1, 2, "two fds on a request" },
		{ 1, 12, "twelve fds (more than the broker collects)" },
		{ 0, 3, "three fds on the HELLO" },
		{ 0, 7, "control message truncated (MSG_CTRUNC)" },
		{ 1, 1, "an fd on a request that takes none" },
		{ 1, 20, "twenty fds" },
	};
	for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		struct nvbridge_wire_hdr hh = h;

		s = dconnect(&d);
		CHECK(s >= 0, "connect");
		if (k[i].hello) {
			EXPECT(dhello(s), 0);
		} else {
			int one = 1;
			struct nvbridge_wire_hello hello = { .abi_version = NVBRIDGE_ABI_VERSION };

			setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
			hh.type = NVBRIDGE_WIRE_HELLO;
			hh.arg_size = NVBRIDGE_WIRE_HELLO_SIZE;
			EXPECT(send_fds(s, &hh, &hello, memfd, k[i].nfds), 0);
			CHECK(closed_within(s, 3000), "%s: not dropped", k[i].what);
			close(s);
			CHECK(fds_settle(d.pid, base) == base, "%s: broker has %d fds, had %d",
			      k[i].what, proc_fds(d.pid), base);
			continue;
		}
		EXPECT(send_fds(s, &hh, &info, memfd, k[i].nfds), 0);
		CHECK(closed_within(s, 3000), "%s: not dropped", k[i].what);
		close(s);
		CHECK(fds_settle(d.pid, base) == base, "%s: broker has %d fds, had %d",
		      k[i].what, proc_fds(d.pid), base);
	}
	/* a lying header with an fd */
	s = dconnect(&d);
	EXPECT(dhello(s), 0);
	h.arg_size = 4000;
	EXPECT(send_fds(s, &h, &info, memfd, 1), 0);
	CHECK(closed_within(s, 3000), "lying header not dropped");
	close(s);
	CHECK(fds_settle(d.pid, base) == base, "lying header: broker has %d fds, had %d",
	      proc_fds(d.pid), base);
	close(memfd);
	bad = daemon_stop(&d);
	CHECK(!bad, "daemon");
	return 0;
}

/* a connection that never says HELLO is dropped (--hello-timeout-ms) */
static int t_daemon_hello_timeout(void)
{
	struct daemon d;
	struct timespec t0, t1;
	int s, ok;

	CHECK(!daemon_start(&d, 0, "--hello-timeout-ms", "300"), "daemon did not start");
	s = dconnect(&d);
	CHECK(s >= 0, "connect");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ok = closed_within(s, 3000);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	close(s);
	CHECK(ok, "silent connection not dropped within 3 s");
	CHECK(t1.tv_sec - t0.tv_sec < 2, "dropped only after %ld s", (long)(t1.tv_sec - t0.tv_sec));
	/* a prompt client is not affected */
	s = dconnect(&d);
	EXPECT(dhello(s), 0);
	usleep(500000);
	struct pollfd p = { s, POLLIN, 0 };

	EXPECT(poll(&p, 1, 0), 0);
	close(s);
	CHECK(!daemon_stop(&d), "daemon");
	return 0;
}

static long proc_cpu_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (long)(ut + st);
}

/*
 * Out of fds (a local user opening connections): the broker neither spins
 * on its readable listener nor stops serving; new connections are shed
 * (closed, not left hanging) until fds are free again.
 */
static int t_daemon_fd_exhaustion(void)
{
	struct daemon d;
	enum { N = 120 };
	int s[N], n = 0, shed = 0;
	long c0, c1;
	struct nvb *h;
	struct nvb_opts o;

	CHECK(!daemon_start(&d, 48, NULL, NULL), "daemon did not start");
	for (int i = 0; i < N; i++) {
		s[i] = dconnect(&d);
		if (s[i] >= 0)
			n++;
	}
	CHECK(n > 60, "only %d connections", n);
	usleep(300000);
	c0 = proc_cpu_ticks(d.pid);
	usleep(1000000);
	c1 = proc_cpu_ticks(d.pid);
	CHECK(c0 >= 0 && c1 - c0 < 20, "broker burned %ld ticks in 1 s while out of fds", c1 - c0);
	for (int i = 0; i < N; i++) {
		struct pollfd p = { s[i], POLLIN, 0 };

		if (s[i] >= 0 && poll(&p, 1, 0) == 1)
			shed++;
	}
	CHECK(shed > 0, "no connection was shed");
	for (int i = 0; i < N; i++)
		if (s[i] >= 0)
			close(s[i]);
	usleep(200000);
	o = broker_at(d.path);
	EXPECT(nvb_open(&o, &h), 0);
	EXPECT(nvb_publish(h, "after-exhaustion", -1, "x", 1, NULL, NULL), 0);
	nvb_close(h);
	CHECK(!daemon_stop(&d), "daemon");
	return 0;
}

/* --max-connections-per-user: one uid cannot take every connection slot */
static int t_daemon_conns_per_user(void)
{
	struct daemon d;
	pid_t p;
	int st;

	if (geteuid() != 0) {
		printf("    skip: needs root to act as another uid\n");
		return 0;
	}
	CHECK(!daemon_start(&d, 0, "--max-connections-per-user", "3"), "daemon did not start");
	chmod(d.path, 0666);
	p = fork();
	if (p == 0) {
		struct nvb_opts o = broker_at(d.path);
		struct nvb *h[4];
		int r;

		if (setgid(4321) || setuid(4321))
			_exit(10);
		for (int i = 0; i < 3; i++)
			if (nvb_open(&o, &h[i]))
				_exit(11 + i);
		r = nvb_open(&o, &h[3]);
		if (r != -ECONNRESET) {
			printf("    a 4th connection of uid 4321: %d (%s), want -ECONNRESET\n", r,
			       r ? strerror(-r) : "opened");
			_exit(20);
		}
		nvb_close(h[0]);
		if (nvb_open(&o, &h[0]))	/* a slot is free again */
			_exit(21);
		_exit(0);
	}
	while (waitpid(p, &st, 0) < 0)
		CHECK(errno == EINTR, "waitpid: %s", strerror(errno));
	/* root is not limited */
	struct nvb_opts o = broker_at(d.path);
	struct nvb *r[4];

	for (int i = 0; i < 4; i++)
		EXPECT(nvb_open(&o, &r[i]), 0);
	for (int i = 0; i < 4; i++)
		nvb_close(r[i]);
	CHECK(!daemon_stop(&d), "daemon");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x", st);
	return 0;
}

/*
 * A broker that refuses a connection closes it at accept.  Before HELLO is
 * sent the send fails (EPIPE; ECONNRESET or ENOTCONN as the close races);
 * after it the read sees the reset.  Which one happened is scheduling (the
 * 4th connection of daemon_conns_per_user saw EPIPE once): nvb_open answers
 * -ECONNRESET for all of them.  The send's errno is made by a seccomp
 * filter here, so each order is tested every run; another errno stays.
 */
static int t_broker_hello_send_errno(void)
{
	static const int in[] = { EPIPE, ECONNRESET, ENOTCONN, ENOBUFS };
	static const int want[] = { -ECONNRESET, -ECONNRESET, -ECONNRESET, -ENOBUFS };
	struct daemon d;
	struct nvb *h;
	int st;

	CHECK(!daemon_start(&d, 0, NULL, NULL), "daemon did not start");
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		pid_t p = fork();

		if (p == 0) {
			struct nvb_opts o = broker_at(d.path);
			int r;

			if (seccomp_refuse(__NR_sendmsg, (unsigned int)in[i]))
				_exit(10);
			h = (void *)1;
			r = nvb_open(&o, &h);
			if (r != want[i] || h != NULL) {
				printf("    HELLO's send failing with %s: %d (%s), handle %p, want %d\n",
				       strerror(in[i]), r, strerror(-r), (void *)h, want[i]);
				fflush(stdout);
				_exit(20);
			}
			_exit(0);
		}
		CHECK(p > 0, "fork: %s", strerror(errno));
		while (waitpid(p, &st, 0) < 0)
			CHECK(errno == EINTR, "waitpid: %s", strerror(errno));
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: child status 0x%x", strerror(in[i]),
		      st);
	}
	CHECK(!daemon_stop(&d), "daemon");
	return 0;
}

/* the daemon's child processes (its closers, daemon/closer.c) */
static int daemon_children(pid_t d, pid_t *out, int max)
{
	DIR *dir = opendir("/proc");
	struct dirent *e;
	int n = 0;

	while (dir && (e = readdir(dir)) && n < max) {
		char p[64], b[512], *r;
		FILE *f;
		int ppid;

		snprintf(p, sizeof(p), "/proc/%s/stat", e->d_name);
		f = e->d_name[0] >= '1' && e->d_name[0] <= '9' ? fopen(p, "re") : NULL;
		if (!f)
			continue;
		r = fgets(b, sizeof(b), f) ? strrchr(b, ')') : NULL;
		if (r && sscanf(r + 2, "%*c %d", &ppid) == 1 && ppid == d)
			out[n++] = atoi(e->d_name);
		fclose(f);
	}
	if (dir)
		closedir(dir);
	return n;
}

/*
 * n rounds of: connect, send a pipe in a PUBLISH, disconnect.  The PUBLISH
 * is refused (-EINVAL: not publishable), but the pipe came with it and the
 * broker closes it through a closer (memfds and pidfds, whose close cannot
 * block, it closes on its loop).  0 once every round was answered so.
 */
static int publish_rounds(const char *path, int n)
{
	struct nvb_opts o = broker_at(path);

	for (int i = 0; i < n; i++) {
		struct nvb *h;
		int p[2], r;

		if (pipe2(p, O_CLOEXEC) || nvb_open(&o, &h))
			return -1;
		r = nvb_publish(h, "closer.round", p[0], NULL, 0, NULL, NULL);
		close(p[0]);
		close(p[1]);
		nvb_close(h);
		if (r != -EINVAL)
			return r ? r : -1;
	}
	return 0;
}

/*
 * A closer killed (by the OOM killer, an admin): the broker reaps it and
 * starts another; files are still closed, none is left in its table.
 */
static int t_daemon_closer_killed(void)
{
	struct daemon d;
	pid_t k[8];
	int base, n;

	CHECK(!daemon_start(&d, 0, NULL, NULL), "daemon did not start");
	base = proc_fds(d.pid);
	EXPECT(publish_rounds(d.path, 3), 0);
	usleep(100000);
	n = daemon_children(d.pid, k, 8);
	CHECK(n >= 1, "no closer process after three closes");
	for (int i = 0; i < n; i++)
		kill(k[i], SIGKILL);
	usleep(200000);
	CHECK(daemon_children(d.pid, k, 8) == 0, "a killed closer was not reaped");
	EXPECT(publish_rounds(d.path, 3), 0);
	usleep(200000);
	CHECK(daemon_children(d.pid, k, 8) >= 1, "no new closer started");
	usleep(1300000);	/* idle closers end after 1 s */
	CHECK(daemon_children(d.pid, k, 8) == 0, "an idle closer did not end");
	n = proc_fds(d.pid);
	CHECK(n == base, "broker fds %d, %d before", n, base);
	CHECK(!daemon_stop(&d), "daemon");
	return 0;
}

/*
 * A closer's request pipe is its broker's fd number too (CLONE_FILES).  The
 * broker retired an idle closer by closing both ends of that pipe, while the
 * closer might not be inside read() (just written its report, stopped,
 * descheduled): its next read() then used a number the loop had freed and
 * could give to a new client's socket, reading a client-chosen "fd number"
 * and closing it.  Held here with PTRACE_INTERRUPT (its read() left and to
 * be restarted) across the 1 s retirement: the number it reads from must
 * still be its pipe, and it must end and be reaped once let go.
 */
static int t_daemon_closer_pipe_kept(void)
{
	struct daemon d;
	pid_t k[8];
	char p[64], sys[128], link[64];
	int n, fd = -1, st, base;
	ssize_t l;
	FILE *f;

	CHECK(!daemon_start(&d, 0, NULL, NULL), "daemon did not start");
	base = proc_fds(d.pid);
	EXPECT(publish_rounds(d.path, 1), 0);
	usleep(100000);
	n = daemon_children(d.pid, k, 8);
	CHECK(n >= 1, "no closer process after a close");
	snprintf(p, sizeof(p), "/proc/%d/syscall", (int)k[0]);
	f = fopen(p, "re");
	CHECK(f && fgets(sys, sizeof(sys), f), "%s unreadable", p);
	fclose(f);
	{
		unsigned int x;

		n = sscanf(sys, "%*d 0x%x", &x);
		fd = n == 1 ? (int)x : -1;
	}
	CHECK(fd > 2, "closer not blocked in a syscall with an fd: %s", sys);
	CHECK(!ptrace(PTRACE_SEIZE, k[0], 0, 0), "PTRACE_SEIZE: %s", strerror(errno));
	CHECK(!ptrace(PTRACE_INTERRUPT, k[0], 0, 0), "PTRACE_INTERRUPT: %s", strerror(errno));
	CHECK(waitpid(k[0], &st, __WALL) == k[0] && WIFSTOPPED(st), "closer did not stop");
	usleep(1500000);	/* idle closers are retired after 1 s */
	snprintf(p, sizeof(p), "/proc/%d/fd/%d", (int)d.pid, fd);
	l = readlink(p, link, sizeof(link) - 1);
	link[l > 0 ? l : 0] = 0;
	ptrace(PTRACE_DETACH, k[0], 0, 0);
	CHECK(l > 0 && !strncmp(link, "pipe:", 5),
	      "the stopped closer's request fd %d is now \"%s\" (%s), not its pipe", fd, link,
	      l < 0 ? strerror(errno) : "reused");
	usleep(300000);
	CHECK(daemon_children(d.pid, k, 8) == 0, "the released closer did not end");
	n = proc_fds(d.pid);
	CHECK(n == base, "broker fds %d, %d before", n, base);
	CHECK(!daemon_stop(&d), "daemon");
	return 0;
}

/*
 * clone() refused for good (a pids limit, a seccomp profile): no closer can
 * start.  The files wait in the broker, counted against the uid that sent
 * them, and a closer is tried again every 100 ms.  None is closed on the
 * loop, where a FUSE file's FLUSH would stop the broker (attack
 * closer_clone); they used to be.  At its bound (2 here) the uid's next
 * connection is refused at accept (-ECONNRESET), and another uid is served.
 */
static int t_daemon_closer_clone_refused(void)
{
	struct daemon d;
	char line[256];
	int base, n, said = 0, onloop = 0, st;
	pid_t p;
	FILE *f;

	if (geteuid() != 0) {
		printf("    skip: needs root to act as another uid\n");
		return 0;
	}
	daemon_no_clone = true;
	n = daemon_start(&d, 0, "--max-pending-closes-per-user", "2");
	daemon_no_clone = false;
	CHECK(!n, "daemon did not start");
	chmod(d.path, 0666);
	base = proc_fds(d.pid);
	EXPECT(publish_rounds(d.path, 2), 0);
	usleep(350000);	/* three tries to start a closer */
	n = proc_fds(d.pid);
	CHECK(n == base + 2, "broker fds %d, %d before: want the 2 files kept for a closer", n, base);
	{
		struct nvb_opts o = broker_at(d.path);
		struct nvb *h;

		EXPECT(nvb_open(&o, &h), -ECONNRESET);	/* its 2 closes pending: at the bound */
	}
	p = fork();
	if (p == 0) {
		struct nvb_opts o = broker_at(d.path);
		struct nvb *h;
		int m = memfd_create("other", MFD_CLOEXEC);

		if (m < 0 || setgid(4322) || setuid(4322) || nvb_open(&o, &h) ||
		    nvb_publish(h, "closer.other", m, NULL, 0, NULL, NULL))
			_exit(1);
		nvb_close(h);
		_exit(0);
	}
	while (waitpid(p, &st, 0) < 0)
		CHECK(errno == EINTR, "waitpid: %s", strerror(errno));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "another uid was not served (0x%x)", st);
	CHECK(proc_fds(d.pid) == base + 2, "broker fds %d, want %d", proc_fds(d.pid), base + 2);
	f = fopen(d.log, "re");
	while (f && fgets(line, sizeof(line), f)) {
		said |= strstr(line, "closes wait, a closer tried again") != NULL;
		onloop |= strstr(line, "on the loop") != NULL;
	}
	if (f)
		fclose(f);
	CHECK(said, "the broker did not say its closes wait");
	CHECK(!onloop, "the broker closed on its loop");
	CHECK(!daemon_stop(&d), "daemon");
	return 0;
}

#include "daemon_closer.c"

static const struct nvb_case cases[] = {
	{ "strerror", t_strerror },
	{ "open_args", t_open_args },
	{ "env_overrides", t_env_overrides },
	{ "kernel_not_nvbridge", t_kernel_not_nvbridge },
	{ "broker_abi_mismatch", t_broker_abi_mismatch },
	{ "broker_closes_or_garbage", t_broker_closes },
	{ "broker_dies_mid_request", t_broker_dies_mid_request },
	{ "event_parse_and_tags", t_event_parse },
	{ "null_handle", t_null_handle },
	{ "daemon_refused_fds_closed", t_daemon_refused_fds_closed },
	{ "daemon_hello_timeout", t_daemon_hello_timeout },
	{ "daemon_fd_exhaustion_no_spin", t_daemon_fd_exhaustion },
	{ "daemon_conns_per_user", t_daemon_conns_per_user },
	{ "broker_hello_send_errno", t_broker_hello_send_errno },
	{ "daemon_closer_killed", t_daemon_closer_killed },
	{ "daemon_closer_clone_refused", t_daemon_closer_clone_refused },
	{ "daemon_closer_pipe_kept", t_daemon_closer_pipe_kept },
	{ "daemon_entry_free_not_reclassified", t_daemon_entry_free_not_reclassified },
	{ "daemon_reaps_only_closers", t_daemon_reaps_only_closers },
	{ "daemon_closer_write_refused", t_daemon_closer_write_refused },
	{ "daemon_closer_fd_above_table", t_daemon_closer_fd_above_table },
};

static void stop_cur_daemon(void)
{
	if (cur_daemon) {
		kill(cur_daemon->pid, SIGKILL);
		waitpid(cur_daemon->pid, NULL, 0);
		unlink(cur_daemon->path);
		unlink(cur_daemon->log);
		cur_daemon = NULL;
	}
}

int main(int argc, char **argv)
{
	return run_cases("unit", cases, sizeof(cases) / sizeof(cases[0]), argc, argv, false,
			 stop_cur_daemon);
}
