// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench: the child processes' plumbing: errors, records to the
 * parent, the control socket, barriers, timing, the rendezvous (libnvbridge
 * or a socketpair stand-in).
 */
#define _GNU_SOURCE
#include "bench.h"

void die(struct side *s, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = snprintf(buf, sizeof(buf), "E %s: ", s->role ? "importer" : "exporter");
	vsnprintf(buf + n, sizeof(buf) - n - 2, fmt, ap);
	va_end(ap);
	strcat(buf, "\n");
	if (write(s->res, buf, strlen(buf)) < 0)
		fputs(buf, stderr);
	_exit(1);
}

void report(struct side *s, const char *key, const char *method, uint64_t size,
		   double value, const char *unit)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "R %s %s %llu %.6g %s\n", key, method,
		 (unsigned long long)size, value, unit);
	if (write(s->res, buf, strlen(buf)) < 0)
		_exit(1);
}

void progress(struct side *s, const char *what)
{
	char buf[160];

	snprintf(buf, sizeof(buf), "P %s\n", what);
	if (write(s->res, buf, strlen(buf)) < 0)
		_exit(1);
}

void ctl_send(struct side *s, const void *p, size_t n, int fd)
{
	struct msghdr mh;
	struct iovec iov = { (void *)p, n };
	char cbuf[CMSG_SPACE(sizeof(int))];

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (fd >= 0) {
		struct cmsghdr *c;

		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	if (sendmsg(s->ctl, &mh, 0) != (ssize_t)n)
		die(s, "ctl send: %s", strerror(errno));
}

int ctl_recv(struct side *s, void *p, size_t n, int *fd)
{
	struct msghdr mh;
	struct iovec iov = { p, n };
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct cmsghdr *c;
	ssize_t r;

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	r = recvmsg(s->ctl, &mh, MSG_CMSG_CLOEXEC);
	if (r <= 0)
		die(s, "ctl recv: %s", r ? strerror(errno) : "peer gone");
	if (fd) {
		*fd = -1;
		c = CMSG_FIRSTHDR(&mh);
		if (c && c->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	}
	return (int)r;
}

void barrier(struct side *s)
{
	char c = 'b';

	ctl_send(s, &c, 1, -1);
	ctl_recv(s, &c, 1, NULL);
}

void sync_all(struct side *s)
{
	CK(s, cuCtxSynchronize());
}

double ev_ms(struct side *s)
{
	float ms = 0;

	CK(s, cuEventSynchronize(s->e1));
	CK(s, cuEventElapsedTime(&ms, s->e0, s->e1));
	return ms;
}

void set_flag(struct side *s, uint64_t addr, uint32_t v)
{
	CK(s, cuMemcpyHtoD(addr, &v, sizeof(v)));
}

unsigned int iters_for(uint64_t size)
{
	uint64_t it = (opt.quick ? 2 * GiB : 8 * GiB) / size;

	if (it < 5)
		it = 5;
	if (it > (opt.quick ? 300 : 1000))
		it = opt.quick ? 300 : 1000;
	return (unsigned int)it;
}

/* ---- rendezvous: through libnvbridge or a socketpair stand-in ---- */

void rdv_publish(struct side *s)
{
#ifdef NVB_BENCH_LIB
	if (opt.use_lib) {
		NV(s, nvb_gpu_publish(s->g, s->h, s->name_self, s->buf, NVB_ACCESS_OWNER, NULL));
		return;
	}
#endif
	{
		struct nvb_gpu_meta meta;
		int fd;

		NV(s, nvb_gpu_export(s->buf, &fd, &meta));
		ctl_send(s, &meta, sizeof(meta), fd);
	}
}

/* Import of the peer's buffer; returns seconds spent. */
double rdv_import(struct side *s, struct nvb_gpu_map **m, uint32_t flags)
{
	double t0, t1;

#ifdef NVB_BENCH_LIB
	if (opt.use_lib) {
		t0 = now_s();
		NV(s, nvb_gpu_import(s->g, s->h, s->name_peer, 10 * 1000000000LL, flags, m));
		t1 = now_s();
		return t1 - t0;
	}
#endif
	{
		struct nvb_gpu_meta meta;
		int fd, n;

		n = ctl_recv(s, &meta, sizeof(meta), &fd);
		t0 = now_s();
		NV(s, nvb_gpu_import_fd(s->g, 1000 + (uint64_t)s->role, fd, &meta, (size_t)n,
					flags, m));
		t1 = now_s();
		close(fd);
		return t1 - t0;
	}
}

double rdv_reimport(struct side *s, struct nvb_gpu_map **m)
{
	double t0 = now_s();

#ifdef NVB_BENCH_LIB
	if (opt.use_lib) {
		NV(s, nvb_gpu_import(s->g, s->h, s->name_peer, 0, 0, m));
		return now_s() - t0;
	}
#endif
	NV(s, nvb_gpu_import_cached(s->g, 1000 + (uint64_t)s->role, m));
	return now_s() - t0;
}

/* ---- measurements ---- */
