// SPDX-License-Identifier: MIT
/*
 * lib-hostile: libnvbridge against brokers that hang, die, lie or are not
 * who they should be, and against fork().  Every case runs in its own
 * process under alarm(): a hang or a crash is a failure, not a stuck suite.
 * A rogue broker is a forked process speaking the wire framing; each case
 * also checks that the client process has the same fds after nvb_close()
 * as before nvb_open().
 *
 * NVB_TEST_DAEMON=path/to/nvbridged enables the real-broker cases (restart,
 * fork).  Prints one line per case and "N passed, M failed".
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/nvbridge.h>
#include "nvbridge.h"
#include "nvb_wire.h"
#include "cases.h"

#define TIMEOUT_MS 300

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the rogue broker ---- */
enum mode {
	M_NO_ACCEPT,	/* listens, never accepts */
	M_SILENT,	/* accepts, never answers HELLO */
	M_HELLO_ONLY,	/* answers HELLO, then reads requests and never answers */
	M_WRONG_SEQ, M_WRONG_CMD, M_LIST_OVER, M_BLOB_OVER, M_ARG_OVER, M_SHORT,
	M_ARG_LIE, M_BAD_RESULT, M_FD_ON_INFO, M_TWO_FDS_FETCH, M_FD_NOT_SAID,
	M_HELLO_PIPE, M_HELLO_2FDS, M_HELLO_SHORT, M_OK_INFO,
	M_HELLO_DEAF,	/* answers HELLO, then neither reads nor closes */
};

struct rogue {
	pid_t pid;
	char dir[64];
	char path[108];
};

static void send_fds(int s, const void *buf, size_t len, const int *fds, int nfds)
{
	struct iovec iov = { (void *)buf, len };
	union { struct cmsghdr c; char b[CMSG_SPACE(4 * sizeof(int))]; } cm;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		memset(&cm, 0, sizeof(cm));
		m.msg_control = cm.b;
		m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm.c.cmsg_level = SOL_SOCKET;
		cm.c.cmsg_type = SCM_RIGHTS;
		cm.c.cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(&cm.c), fds, nfds * sizeof(int));
	}
	sendmsg(s, &m, MSG_NOSIGNAL);
}

static ssize_t recv_req(int c, void *buf, size_t len)
{
	union { struct cmsghdr c; char b[CMSG_SPACE(4 * sizeof(int))]; } cm;
	struct iovec iov = { buf, len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			    .msg_controllen = sizeof(cm.b) };
	ssize_t n = recvmsg(c, &m, 0);
	struct cmsghdr *h;

	for (h = CMSG_FIRSTHDR(&m); n > 0 && h; h = CMSG_NXTHDR(&m, h))
		if (h->cmsg_type == SCM_RIGHTS)
			for (size_t i = 0; CMSG_LEN((i + 1) * sizeof(int)) <= h->cmsg_len; i++) {
				int f;

				memcpy(&f, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
				close(f);
			}
	return n;
}

static void hello(int c, enum mode m)
{
	struct { struct nvbridge_wire_hdr h; struct nvbridge_info i; } r;
	int sv[2], fds[2], pp[2];

	memset(&r, 0, sizeof(r));
	r.h.magic = NVBRIDGE_WIRE_MAGIC;
	r.h.version = NVBRIDGE_WIRE_VERSION;
	r.h.type = NVBRIDGE_WIRE_HELLO;
	r.h.arg_size = sizeof(r.i);
	r.i.size = sizeof(r.i);
	r.i.abi_version = NVBRIDGE_ABI_VERSION;
	r.i.max_blob_size = 4096;
	socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
	if (pipe(pp))
		_exit(3);
	fds[0] = m == M_HELLO_PIPE ? pp[0] : sv[1];
	fds[1] = pp[1];
	if (m == M_HELLO_SHORT)
		send_fds(c, &r, NVBRIDGE_WIRE_HDR_SIZE + 8, fds, 1);
	else
		send_fds(c, &r, sizeof(r), fds, m == M_HELLO_2FDS ? 2 : 1);
}

/* Answers one request as mode m says (a lie, mostly). */
static void answer(int c, enum mode m, const unsigned char *req, ssize_t n)
{
	static unsigned char out[NVBRIDGE_WIRE_HDR_SIZE + NVBRIDGE_WIRE_ARG_MAX + 65536];
	const struct nvbridge_wire_hdr *q = (const void *)req;
	struct nvbridge_wire_hdr *h = (void *)out;
	size_t len, asz = q->arg_size;
	int fds[2] = { -1, -1 }, nfds = 0;

	if (n < NVBRIDGE_WIRE_HDR_SIZE)
		return;
	memset(out, 0, sizeof(out));
	*h = *q;
	h->type = NVBRIDGE_WIRE_REPLY;
	h->data_len = 0;
	memcpy(out + sizeof(*h), req + sizeof(*h), asz);
	len = sizeof(*h) + asz;
	switch (m) {
	case M_WRONG_SEQ:
		h->seq += 7;
		break;
	case M_WRONG_CMD:
		h->cmd = NVBRIDGE_IOC_INFO;
		break;
	case M_LIST_OVER: {
		/* 40 records for a request of 4: within the wire limits */
		struct nvbridge_list *l = (void *)(out + sizeof(*h));

		h->result = 40;
		h->data_len = 40 * l->entry_size;
		for (unsigned int i = 0; i < 40; i++) {
			struct nvbridge_entry_info *e = (void *)(out + len + i * l->entry_size);

			e->id = i + 1;
			memset(e->name, 'A', 63);
		}
		len += h->data_len;
		break;
	}
	case M_BLOB_OVER:
		h->data_len = 4096;
		memset(out + len, 'B', 4096);
		((struct nvbridge_fetch *)(out + sizeof(*h)))->blob_len = 4096;
		len += 4096;
		break;
	case M_ARG_OVER:
		h->arg_size = NVBRIDGE_WIRE_ARG_MAX;
		len = sizeof(*h) + NVBRIDGE_WIRE_ARG_MAX;
		break;
	case M_SHORT:
		len = 10;
		break;
	case M_ARG_LIE:
		h->arg_size = asz + 64;	/* says more than it sends */
		break;
	case M_BAD_RESULT:
		h->result = -100000;
		break;
	case M_FD_ON_INFO:
		fds[0] = open("/dev/null", O_RDONLY);
		nfds = 1;
		break;
	case M_TWO_FDS_FETCH:
		((struct nvbridge_fetch *)(out + sizeof(*h)))->entry_flags = NVBRIDGE_ENTRY_HAS_FD;
		fds[0] = open("/dev/null", O_RDONLY);
		fds[1] = open("/dev/null", O_RDONLY);
		nfds = 2;
		break;
	case M_FD_NOT_SAID:	/* an fd on a FETCH whose entry_flags say none */
		fds[0] = open("/dev/null", O_RDONLY);
		nfds = 1;
		break;
	default:
		break;
	}
	send_fds(c, out, len, fds, nfds);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
}

static void rogue_main(struct rogue *r, enum mode m, int ready, uid_t uid)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	unsigned char buf[8192];
	int l, c;
	ssize_t n;

	if (uid && (setgroups(0, NULL) || setresgid(uid, uid, uid) || setresuid(uid, uid, uid)))
		_exit(2);
	strcpy(sa.sun_path, r->path);
	l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 8))
		_exit(2);
	if (write(ready, "x", 1) != 1)
		_exit(2);
	if (m == M_NO_ACCEPT)
		for (;;)
			pause();
	for (;;) {
		c = accept(l, NULL, NULL);
		if (c < 0)
			_exit(2);
		if (recv_req(c, buf, sizeof(buf)) <= 0)	/* HELLO */
			goto next;
		if (m == M_SILENT) {
			while (recv_req(c, buf, sizeof(buf)) > 0)
				;
			goto next;
		}
		hello(c, m);
		if (m == M_HELLO_DEAF)
			for (;;)
				pause();
		while ((n = recv_req(c, buf, sizeof(buf))) > 0) {
			if (m == M_HELLO_ONLY)
				continue;
			if (((struct nvbridge_wire_hdr *)buf)->type == NVBRIDGE_WIRE_REQUEST)
				answer(c, m, buf, n);
		}
next:
		close(c);
	}
}

/* Starts a rogue broker running as uid (0: as we are) in a directory of ours. */
static int rogue_start(struct rogue *r, enum mode m, uid_t uid)
{
	int p[2];
	char x;

	snprintf(r->dir, sizeof(r->dir), "/tmp/nvb-hostile.XXXXXX");
	if (!mkdtemp(r->dir) || chmod(r->dir, 0777) || pipe(p))
		return -1;
	snprintf(r->path, sizeof(r->path), "%s/s.sock", r->dir);
	r->pid = fork();
	if (r->pid == 0) {
		close(p[0]);
		rogue_main(r, m, p[1], uid);
		_exit(0);
	}
	close(p[1]);
	if (read(p[0], &x, 1) != 1) {
		close(p[0]);
		return -1;
	}
	close(p[0]);
	return 0;
}

static void rogue_stop(struct rogue *r)
{
	kill(r->pid, SIGKILL);
	waitpid(r->pid, NULL, 0);
	unlink(r->path);
	rmdir(r->dir);
}

/*
 * -DHOSTILE_OPTS_1_0: the options as a caller built against libnvbridge 1.0
 * passes them, to run these attacks against a 1.0 library.
 */
static struct nvb_opts at(const char *path, int64_t timeout_ms)
{
	struct nvb_opts o = { .sz = sizeof(o), .backend = NVB_BACKEND_BROKER, .socket_path = path,
			      .timeout_ns = timeout_ms * 1000000 };
#ifdef HOSTILE_OPTS_1_0
	o.sz = offsetof(struct nvb_opts, timeout_ns);
#endif
	return o;
}

/* ---- rogue replies: a specific errno each, no crash, no leaked fd ---- */
enum op { OP_INFO, OP_PUBLISH, OP_FETCH, OP_LIST };

static int do_op(struct nvb *h, enum op op)
{
	switch (op) {
	case OP_INFO: {
		struct nvb_info i = { .sz = sizeof(i) };

		return nvb_info(h, &i);
	}
	case OP_PUBLISH:
		return nvb_publish(h, "rogue/x", -1, "b", 1, NULL, NULL);
	case OP_FETCH: {
		char blob[8];
		int fd = -1, ret;

		ret = nvb_fetch(h, "rogue/x", NULL, blob, sizeof(blob), NULL, &fd);
		if (fd >= 0)
			close(fd);
		return ret;
	}
	case OP_LIST: {
		/* 4 asked for, a guard behind them that must stay untouched */
		struct nvb_entry e[4 + 8];
		uint64_t cur = 0;
		int ret;

		memset(e, 0x5a, sizeof(e));
		ret = nvb_list(h, &cur, e, 4);
		for (size_t i = 4 * sizeof(e[0]); i < sizeof(e); i++)
			if (((unsigned char *)e)[i] != 0x5a)
				return -9999;	/* the caller's array overflowed */
		return ret;
	}
	}
	return -EINVAL;
}

static int rogue_case(enum mode m, enum op op, int want_open, int want)
{
	struct rogue r;
	struct nvb_opts o;
	struct nvb *h = NULL;
	int before, ret;

	CHECK(!rogue_start(&r, m, 0), "rogue broker");
	o = at(r.path, 2000);
	before = proc_fds(0);
	ret = nvb_open(&o, &h);
	if (ret != want_open) {
		rogue_stop(&r);
		FAIL("nvb_open = %d (%s), want %d: %s", ret, strerror(-ret), want_open,
		     nvb_open_error());
	}
	if (!ret) {
		ret = do_op(h, op);
		if (ret != want) {
			printf("    %s\n", nvb_last_error(h));
			nvb_close(h);
			rogue_stop(&r);
			FAIL("mode %d op %d = %d (%s), want %d", m, op, ret,
			     ret < 0 ? strerror(-ret) : "ok", want);
		}
		/* the connection is over: later calls fail at once */
		EXPECT(do_op(h, OP_INFO), -ECONNRESET);
		nvb_close(h);
	}
	rogue_stop(&r);
	EXPECT(proc_fds(0), before);
	return 0;
}

static int t_rogue_wrong_seq(void) { return rogue_case(M_WRONG_SEQ, OP_INFO, 0, -EPROTO); }
static int t_rogue_wrong_cmd(void) { return rogue_case(M_WRONG_CMD, OP_PUBLISH, 0, -EPROTO); }
static int t_rogue_list_overcount(void) { return rogue_case(M_LIST_OVER, OP_LIST, 0, -EOVERFLOW); }
static int t_rogue_blob_over_cap(void) { return rogue_case(M_BLOB_OVER, OP_FETCH, 0, -EOVERFLOW); }
static int t_rogue_arg_over_request(void) { return rogue_case(M_ARG_OVER, OP_INFO, 0, -EOVERFLOW); }
static int t_rogue_truncated(void) { return rogue_case(M_SHORT, OP_INFO, 0, -EBADMSG); }
static int t_rogue_size_lie(void) { return rogue_case(M_ARG_LIE, OP_PUBLISH, 0, -EBADMSG); }
static int t_rogue_bad_result(void) { return rogue_case(M_BAD_RESULT, OP_INFO, 0, -EBADMSG); }
static int t_rogue_fd_on_info(void) { return rogue_case(M_FD_ON_INFO, OP_INFO, 0, -EPROTO); }
static int t_rogue_two_fds(void) { return rogue_case(M_TWO_FDS_FETCH, OP_FETCH, 0, -EPROTO); }
static int t_rogue_fd_not_said(void) { return rogue_case(M_FD_NOT_SAID, OP_FETCH, 0, -EPROTO); }
static int t_rogue_hello_pipe(void) { return rogue_case(M_HELLO_PIPE, OP_INFO, -EPROTO, 0); }
static int t_rogue_hello_2fds(void) { return rogue_case(M_HELLO_2FDS, OP_INFO, -EPROTO, 0); }
static int t_rogue_hello_short(void) { return rogue_case(M_HELLO_SHORT, OP_INFO, -EPROTO, 0); }

/* A socket served by another, untrusted uid: refused before HELLO (our pidfd) goes out. */
static int t_rogue_peer_uid(void)
{
	struct rogue r;
	struct nvb_opts o;
	struct nvb *h;
	int before = proc_fds(0);

	if (geteuid() != 0) {
		printf("    SKIP: needs root to run the rogue broker as another uid\n");
		return 0;
	}
	CHECK(!rogue_start(&r, M_OK_INFO, 4321), "rogue broker");	/* dir is root's */
	o = at(r.path, 2000);
	EXPECT(nvb_open(&o, &h), -EPERM);
	CHECK(strstr(nvb_open_error(), "4321"), "%s", nvb_open_error());
	/* the caller who names that uid gets through */
	o.flags = NVB_OPEN_BROKER_UID;
	o.broker_uid = 4321;
	EXPECT(nvb_open(&o, &h), 0);
	nvb_close(h);
	o.broker_uid = 4322;
	EXPECT(nvb_open(&o, &h), -EPERM);
	/* ... or sets NVBRIDGE_BROKER_UID */
	o.flags = 0;
	o.broker_uid = 0;
	setenv("NVBRIDGE_BROKER_UID", "4321", 1);
	EXPECT(nvb_open(&o, &h), 0);
	nvb_close(h);
	setenv("NVBRIDGE_BROKER_UID", "x", 1);
	EXPECT(nvb_open(&o, &h), -EINVAL);
	unsetenv("NVBRIDGE_BROKER_UID");
	/* the directory's owner is trusted: it could replace the socket anyway */
	CHECK(chown(r.dir, 4321, 4321) == 0, "chown");
	EXPECT(nvb_open(&o, &h), 0);
	nvb_close(h);
	rogue_stop(&r);
	EXPECT(proc_fds(0), before);
	return 0;
}

/* ---- a hung broker: -ETIMEDOUT, never a hang ---- */
static int t_timeout_open_no_accept(void)
{
	struct rogue r;
	struct nvb_opts o;
	struct nvb *h;
	int64_t t0;
	int before = proc_fds(0);

	CHECK(!rogue_start(&r, M_NO_ACCEPT, 0), "rogue");
	o = at(r.path, TIMEOUT_MS);
	t0 = now_ms();
	EXPECT(nvb_open(&o, &h), -ETIMEDOUT);
	CHECK(now_ms() - t0 >= TIMEOUT_MS - 20 && now_ms() - t0 < TIMEOUT_MS + 1000,
	      "took %lld ms", (long long)(now_ms() - t0));
	rogue_stop(&r);
	EXPECT(proc_fds(0), before);
	return 0;
}

static int t_timeout_open_silent_env(void)
{
	struct rogue r;
	struct nvb_opts o;
	struct nvb *h;
	int64_t t0;

	CHECK(!rogue_start(&r, M_SILENT, 0), "rogue");
	o = at(r.path, 0);	/* the default, from the environment */
	setenv("NVBRIDGE_TIMEOUT_MS", "300", 1);
	t0 = now_ms();
	EXPECT(nvb_open(&o, &h), -ETIMEDOUT);
	CHECK(now_ms() - t0 < TIMEOUT_MS + 1000, "took %lld ms", (long long)(now_ms() - t0));
	setenv("NVBRIDGE_TIMEOUT_MS", "soon", 1);
	EXPECT(nvb_open(&o, &h), -EINVAL);
	unsetenv("NVBRIDGE_TIMEOUT_MS");
	rogue_stop(&r);
	return 0;
}

/* Each call on a broker that answered HELLO and then nothing. */
static int t_timeout_each_call(void)
{
	struct nvb_fetch_opts wf = { .sz = sizeof(wf), .flags = NVB_FETCH_WAIT,
				     .timeout_ns = 200 * 1000000LL };
	struct rogue r;
	struct nvb_opts o;
	struct nvb *h;
	int before = proc_fds(0);

	CHECK(!rogue_start(&r, M_HELLO_ONLY, 0), "rogue");
	o = at(r.path, TIMEOUT_MS);
	for (int call = 0; call < 9; call++) {
		struct nvb_info i = { .sz = sizeof(i) };
		struct nvb_entry e[2];
		uint64_t cur = 0;
		int64_t t0, bound = TIMEOUT_MS;
		int ret = 0;

		EXPECT(nvb_open(&o, &h), 0);
		t0 = now_ms();
		switch (call) {
		case 0: ret = nvb_info(h, &i); break;
		case 1: ret = nvb_publish(h, "hung/x", -1, NULL, 0, NULL, NULL); break;
		case 2: ret = nvb_fetch(h, "hung/x", NULL, NULL, 0, NULL, NULL); break;
		case 3:	/* FETCH_WAIT's own 200 ms, then the request timeout */
			ret = nvb_fetch(h, "hung/x", &wf, NULL, 0, NULL, NULL);
			bound += 200;
			break;
		case 4: ret = nvb_list(h, &cur, e, 2); break;
		case 5: ret = nvb_watch(h, "hung/", NVB_WATCH_PREFIX, NULL); break;
		case 6: ret = nvb_unwatch(h, 1); break;
		case 7: ret = nvb_unpublish(h, 1, NULL); break;
		case 8: ret = nvb_unpublish(h, 0, "hung/x"); break;
		}
		if (ret != -ETIMEDOUT)
			FAIL("call %d = %d, want -ETIMEDOUT", call, ret);
		CHECK(now_ms() - t0 >= bound - 20 && now_ms() - t0 < bound + 1000,
		      "call %d took %lld ms, bound %lld", call, (long long)(now_ms() - t0),
		      (long long)bound);
		CHECK(strstr(nvb_last_error(h), "did not answer"), "%s", nvb_last_error(h));
		/* the handle is dead now: at once */
		t0 = now_ms();
		EXPECT(nvb_info(h, &i), -ECONNRESET);
		CHECK(now_ms() - t0 < 50, "second call waited");
		nvb_close(h);
	}
	rogue_stop(&r);
	EXPECT(proc_fds(0), before);
	return 0;
}

/* nvb_close() waits for the broker to revoke our entries, but not forever. */
static int t_timeout_close(void)
{
	struct rogue r;
	struct nvb_opts o;
	struct nvb *h;
	int64_t t0;
	int before = proc_fds(0);

	CHECK(!rogue_start(&r, M_HELLO_DEAF, 0), "rogue");
	o = at(r.path, TIMEOUT_MS);
	EXPECT(nvb_open(&o, &h), 0);
	t0 = now_ms();
	nvb_close(h);
	CHECK(now_ms() - t0 < TIMEOUT_MS + 300, "nvb_close took %lld ms", (long long)(now_ms() - t0));
	rogue_stop(&r);
	EXPECT(proc_fds(0), before);
	return 0;
}

struct waiter {
	struct nvb *h;
	int ret;
};

static void *wait_forever(void *p)
{
	struct nvb_fetch_opts wf = { .sz = sizeof(wf), .flags = NVB_FETCH_WAIT, .timeout_ns = -1 };
	struct waiter *w = p;

	w->ret = nvb_fetch(w->h, "hung/never", &wf, NULL, 0, NULL, NULL);
	return NULL;
}

/*
 * One thread reads replies for a FETCH that waits forever (no deadline of
 * its own); another's INFO times out: it ends the connection, which wakes
 * the reader too.
 */
static int t_timeout_behind_reader(void)
{
	struct nvb_info i = { .sz = sizeof(i) };
	struct rogue r;
	struct nvb_opts o;
	struct waiter w = { .ret = 1 };
	pthread_t t;
	int64_t t0;

	CHECK(!rogue_start(&r, M_HELLO_ONLY, 0), "rogue");
	o = at(r.path, TIMEOUT_MS);
	EXPECT(nvb_open(&o, &w.h), 0);
	pthread_create(&t, NULL, wait_forever, &w);
	usleep(100 * 1000);	/* it is the reader now */
	t0 = now_ms();
	EXPECT(nvb_info(w.h, &i), -ETIMEDOUT);
	CHECK(now_ms() - t0 < TIMEOUT_MS + 1000, "took %lld ms", (long long)(now_ms() - t0));
	pthread_join(t, NULL);
	EXPECT(w.ret, -ETIMEDOUT);
	nvb_close(w.h);
	rogue_stop(&r);
	return 0;
}

static int t_open_opts_sizes(void)
{
	struct nvb_opts o = { .backend = NVB_BACKEND_BROKER, .socket_path = "/nonexistent/s" };
	unsigned char big[sizeof(o) + 16];
	struct nvb *h;

	/* a caller built before .timeout_ns: its smaller struct is fine */
	o.sz = offsetof(struct nvb_opts, timeout_ns);
	EXPECT(nvb_open(&o, &h), -ENOENT);
	o.sz = sizeof(o);
	o.broker_uid = 5;	/* without its flag */
	EXPECT(nvb_open(&o, &h), -EINVAL);
	o.broker_uid = 0;
	memset(big, 0, sizeof(big));
	memcpy(big, &o, sizeof(o));
	((struct nvb_opts *)(void *)big)->sz = sizeof(big);
	EXPECT(nvb_open((struct nvb_opts *)(void *)big, &h), -ENOENT);
	big[sizeof(o) + 3] = 1;
	EXPECT(nvb_open((struct nvb_opts *)(void *)big, &h), -E2BIG);
	return 0;
}

/* ---- the real broker: restart, fork ---- */
struct daemon {
	pid_t pid;
	char dir[64], path[108];
};

static int daemon_up(struct daemon *d, bool fresh)
{
	const char *bin = getenv("NVB_TEST_DAEMON");

	if (!bin)
		return -1;
	if (fresh) {
		snprintf(d->dir, sizeof(d->dir), "/tmp/nvb-hostile-d.XXXXXX");
		if (!mkdtemp(d->dir))
			return -1;
		snprintf(d->path, sizeof(d->path), "%s/s.sock", d->dir);
	}
	d->pid = fork();
	if (d->pid == 0) {
		int n = open("/dev/null", O_WRONLY);

		dup2(n, 2);
		execl(bin, bin, "--socket", d->path, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200; i++) {	/* until it accepts (bind comes before listen) */
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), ok;

		strcpy(sa.sun_path, d->path);
		ok = s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		if (s >= 0)
			close(s);
		if (ok)
			return 0;
		usleep(10000);
	}
	return -1;
}

static void daemon_kill(struct daemon *d)
{
	kill(d->pid, SIGKILL);
	waitpid(d->pid, NULL, 0);
	unlink(d->path);
}

#define NEED_DAEMON() do { if (!getenv("NVB_TEST_DAEMON")) { \
	printf("    SKIP: NVB_TEST_DAEMON not set\n"); return 0; } } while (0)

static int t_broker_restart(void)
{
	struct nvb_info i = { .sz = sizeof(i) };
	struct nvb_event ev;
	struct daemon d;
	struct nvb_opts o;
	struct nvb *h, *h2;
	struct nvb_entry e[4];
	uint64_t cur = 0;
	int before = proc_fds(0);

	NEED_DAEMON();
	CHECK(!daemon_up(&d, true), "daemon");
	o = at(d.path, 2000);
	EXPECT(nvb_open(&o, &h), 0);
	EXPECT(nvb_publish(h, "restart/a", -1, "x", 1, NULL, NULL), 0);
	EXPECT(nvb_watch(h, "restart/", NVB_WATCH_PREFIX, NULL), 0);
	daemon_kill(&d);
	CHECK(!daemon_up(&d, false), "daemon restart");
	/* every call on the old handle: -ECONNRESET, the first one too */
	EXPECT(nvb_info(h, &i), -ECONNRESET);
	EXPECT(nvb_publish(h, "restart/b", -1, NULL, 0, NULL, NULL), -ECONNRESET);
	EXPECT(nvb_fetch(h, "restart/a", NULL, NULL, 0, NULL, NULL), -ECONNRESET);
	EXPECT(nvb_list(h, &cur, e, 4), -ECONNRESET);
	EXPECT(nvb_watch(h, "restart/", NVB_WATCH_PREFIX, NULL), -ECONNRESET);
	EXPECT(nvb_event_read(h, &ev, 1, 0), -ECONNRESET);
	nvb_close(h);
	/* reopening works; the entries went with the old connection */
	EXPECT(nvb_open(&o, &h2), 0);
	EXPECT(nvb_fetch(h2, "restart/a", NULL, NULL, 0, NULL, NULL), -ENOENT);
	EXPECT(nvb_publish(h2, "restart/a", -1, "x", 1, NULL, NULL), 0);
	nvb_close(h2);
	daemon_kill(&d);
	rmdir(d.dir);
	EXPECT(proc_fds(0), before);
	return 0;
}

/*
 * NVB_HOSTILE_ANY_BACKEND=1: the fork cases open with default options, on
 * whichever backend nvb_open(NULL) picks (the kernel one in the VM), so that
 * both backends can be held to the same fork semantics.
 */
static bool any_backend;

/* A child never gets the parent's replies or fds: every call is -ECHILD. */
static int t_fork_child_calls(void)
{
	struct rogue r;
	struct nvb_opts o;
	struct nvb *h;
	int evfd, st;
	pid_t c;

	if (any_backend) {
		o = (struct nvb_opts){ .sz = sizeof(o) };
	} else {
		CHECK(!rogue_start(&r, M_OK_INFO, 0), "rogue");
		o = at(r.path, 2000);
	}
	EXPECT(nvb_open(&o, &h), 0);
	evfd = nvb_event_fd(h);
	c = fork();
	if (c == 0) {
		struct nvb_info i = { .sz = sizeof(i) };
		struct nvb_event ev;
		uint64_t cur = 0;
		int bad = 0;

		bad |= nvb_info(h, &i) != -ECHILD;
		bad |= (nvb_publish(h, "f/x", -1, NULL, 0, NULL, NULL) != -ECHILD) << 1;
		bad |= (nvb_fetch(h, "f/x", NULL, NULL, 0, NULL, NULL) != -ECHILD) << 2;
		bad |= (nvb_list(h, &cur, NULL, 0) != 0) << 3;	/* max 0: nothing asked */
		bad |= (nvb_event_fd(h) != -ECHILD) << 4;
		bad |= (nvb_event_read(h, &ev, 1, 0) != -ECHILD) << 5;
		/* its copy of the connection is closed */
		bad |= (fcntl(evfd, F_GETFD) != -1) << 6;
		bad |= !strstr(nvb_last_error(h), "fork") << 7;
		nvb_close(h);
		_exit(bad);
	}
	waitpid(c, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status 0x%x (bits: which call)", st);
	/* the parent's handle still works */
	{
		struct nvb_info i = { .sz = sizeof(i) };

		EXPECT(nvb_info(h, &i), 0);
	}
	nvb_close(h);
	if (!any_backend)
		rogue_stop(&r);
	return 0;
}

/*
 * The parent publishes, forks a child that lives on, and dies: the entry
 * must go with the parent, not live as long as the child.
 */
static int t_fork_child_outlives_parent(void)
{
	struct daemon d;
	struct nvb_opts o;
	struct nvb *w;
	int sync[2], st, ret = 0;
	pid_t p, child = 0;

	if (any_backend) {
		o = (struct nvb_opts){ .sz = sizeof(o) };
	} else {
		NEED_DAEMON();
		CHECK(!daemon_up(&d, true), "daemon");
		o = at(d.path, 2000);
	}
	CHECK(pipe(sync) == 0, "pipe");
	p = fork();
	if (p == 0) {
		struct nvb *h;
		int m = memfd_create("f", MFD_CLOEXEC);
		pid_t g;

		if (nvb_open(&o, &h) ||
		    nvb_publish(h, "fork/a", m, NULL, 0, NULL, NULL))
			_exit(1);
		g = fork();
		if (g == 0) {
			sleep(10);	/* outlives its parent, holds whatever it inherited */
			_exit(0);
		}
		if (write(sync[1], &g, sizeof(g)) != sizeof(g))
			_exit(1);
		_exit(0);	/* dies without nvb_close() */
	}
	close(sync[1]);
	CHECK(read(sync[0], &child, sizeof(child)) == sizeof(child), "publisher failed");
	waitpid(p, &st, 0);
	EXPECT(nvb_open(&o, &w), 0);
	for (int i = 0; i < 100; i++) {
		ret = nvb_fetch(w, "fork/a", NULL, NULL, 0, NULL, NULL);
		if (ret == -ENOENT)
			break;
		usleep(10000);
	}
	nvb_close(w);
	kill(child, SIGKILL);
	if (!any_backend) {
		daemon_kill(&d);
		rmdir(d.dir);
	}
	EXPECT(ret, -ENOENT);	/* not 0: the child kept the parent's entry alive */
	return 0;
}

static const struct nvb_case cases[] = {
	{ "rogue_wrong_seq", t_rogue_wrong_seq },
	{ "rogue_wrong_cmd", t_rogue_wrong_cmd },
	{ "rogue_list_overcount", t_rogue_list_overcount },
	{ "rogue_blob_over_cap", t_rogue_blob_over_cap },
	{ "rogue_arg_over_request", t_rogue_arg_over_request },
	{ "rogue_truncated", t_rogue_truncated },
	{ "rogue_size_lie", t_rogue_size_lie },
	{ "rogue_bad_result", t_rogue_bad_result },
	{ "rogue_fd_on_info", t_rogue_fd_on_info },
	{ "rogue_two_fds", t_rogue_two_fds },
	{ "rogue_fd_not_said", t_rogue_fd_not_said },
	{ "rogue_hello_pipe", t_rogue_hello_pipe },
	{ "rogue_hello_2fds", t_rogue_hello_2fds },
	{ "rogue_hello_short", t_rogue_hello_short },
	{ "rogue_peer_uid", t_rogue_peer_uid },
	{ "timeout_open_no_accept", t_timeout_open_no_accept },
	{ "timeout_open_silent_env", t_timeout_open_silent_env },
	{ "timeout_each_call", t_timeout_each_call },
	{ "timeout_behind_reader", t_timeout_behind_reader },
	{ "timeout_close", t_timeout_close },
	{ "open_opts_sizes", t_open_opts_sizes },
	{ "broker_restart", t_broker_restart },
	{ "fork_child_calls", t_fork_child_calls },
	{ "fork_child_outlives_parent", t_fork_child_outlives_parent },
};

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_DFL);	/* a SIGPIPE from the library would kill the case */
	any_backend = getenv("NVB_HOSTILE_ANY_BACKEND") != NULL;
	return run_cases("hostile", cases, sizeof(cases) / sizeof(cases[0]), argc, argv, true, NULL);
}
