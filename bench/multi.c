// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench on any number of GPUs:
 *
 *   --all-pairs        one process per GPU; each publishes a buffer and
 *                      imports every other one; every ordered pair is
 *                      measured (write, read) and every pair both ways at
 *                      once (bidirectional), against a same-process peer
 *                      copy of the same pair measured in the same run.
 *   --fan-out K,...    one exporter, K fresh importer processes on K other
 *                      GPUs fetch, map and read the same buffer at once.
 *   --many-publishers N  every process publishes N buffers of random data,
 *                      every other process imports all of them and reads
 *                      them back; legacy CUDA IPC does the same as baseline.
 *
 * The parent never touches CUDA: it forks one worker per GPU (and fresh
 * importers for each fan-out round) and drives them over SEQPACKET
 * socketpairs with fixed-size commands.  Phases that must overlap start at
 * a CLOCK_MONOTONIC instant the parent hands out.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../libnvbridge/cuda_api.h"
#include "../libnvbridge/nvbridge.h"
#include "../libnvbridge/nvbridge_gpu.h"
#include "multi.h"
#include "bench_util.h"

#define CHUNK (64 * MiB)

enum {
	OP_INIT = 1,		/* size, count: 1 = allocate and publish the pair buffer */
	OP_IMPORT,		/* peer, t_go */
	OP_BW,			/* peer, dir (0 write, 1 read), size */
	OP_SAME,		/* peer, size: same-process baseline, write/read/bidir */
	OP_BIDIR,		/* peer, size, t_go */
	OP_READ,		/* peer, size, count (iterations), t_go */
	OP_VERIFY,		/* peer, size: scratch holds the peer's data */
	OP_PUB_MANY,		/* count, size */
	OP_IMPORT_MANY,		/* peers, count, size, t_go, dir: import flags */
	OP_LEG_OPEN,		/* peer, count, size, blob: the peer's IPC handles */
	OP_QUIT,
};

struct mcmd {
	uint32_t op;
	int32_t peer;
	uint32_t dir;
	uint32_t count;
	uint64_t size;
	double t_go;
	uint32_t npeers;
	int32_t peers[MULTI_MAXG];
	unsigned char blob[MULTI_MAXPUB * CU_IPC_HANDLE_SIZE];
};

struct mrep {
	int32_t err;		/* 0, or 1 with msg */
	char msg[240];
	double v[8];
	unsigned char blob[MULTI_MAXPUB * CU_IPC_HANDLE_SIZE];
};

static char tag[32];
static const struct multi_opts *O;


static void spin_until(double t)
{
	while (now_s() < t)
		;
}

static void entry_name(char *buf, size_t len, int dev, int k)
{
	if (k < 0)
		snprintf(buf, len, "nvbench.%s.g%d", tag, dev);
	else
		snprintf(buf, len, "nvbench.%s.g%d.p%d", tag, dev, k);
}

/* Word k of the random stream "seed" (splitmix64): any slice can be made alone. */
static uint64_t rnd_word(uint64_t seed, uint64_t k)
{
	uint64_t z = seed * 0x9e3779b97f4a7c15ull + (k + 1) * 0xd1b54a32d192ed03ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ------------------------------------------------------------ worker */

struct worker {
	int dev, fd;
	struct nvb_cuda cu;
	struct nvb_gpu *g;
	struct nvb *h;
	CUstream st, st2;
	CUevent e0, e1;
	struct nvb_gpu_buf *buf;	/* data (size) + inbox (size), published */
	CUdeviceptr scratch;
	uint64_t size;
	struct nvb_gpu_map *map[MULTI_MAXG * 8];	/* by GPU index */
	uint64_t *host;			/* CHUNK bytes */
	struct nvb_gpu_buf *pub[MULTI_MAXPUB];
	CUdeviceptr leg[MULTI_MAXPUB];
	unsigned int npub;
	struct mrep rep;
};

static struct worker W;

static void wfail(const char *fmt, ...)
{
	va_list ap;
	int n;

	memset(&W.rep, 0, sizeof(W.rep));
	W.rep.err = 1;
	n = snprintf(W.rep.msg, sizeof(W.rep.msg), "GPU %d: ", W.dev);
	va_start(ap, fmt);
	vsnprintf(W.rep.msg + n, sizeof(W.rep.msg) - n, fmt, ap);
	va_end(ap);
	if (send(W.fd, &W.rep, sizeof(W.rep), 0) < 0)
		perror("nvbridge-bench worker");
	_exit(1);
}

#define CK(call) do {							\
	CUresult r_ = W.cu.call;					\
	if (r_ != CUDA_SUCCESS)						\
		wfail("%s: %s", #call, nvb_cuda_errname(&W.cu, r_));	\
} while (0)

#define NV(call) do {							\
	int e_ = (call);						\
	if (e_ < 0)							\
		wfail("%s: %s (%s)", #call, strerror(-e_), nvb_gpu_last_error()); \
} while (0)

static unsigned int iters_for(uint64_t size)
{
	uint64_t it = (O->quick ? 2 * GiB : 8 * GiB) / size;

	if (it < 4)
		it = 4;
	if (it > 200)
		it = 200;
	return (unsigned int)it;
}

static double ev_ms(void)
{
	float ms = 0;

	CK(cuEventSynchronize(W.e1));
	CK(cuEventElapsedTime(&ms, W.e0, W.e1));
	return ms;
}

static void fill(CUdeviceptr d, uint64_t size, uint64_t seed)
{
	uint64_t off, k;

	for (off = 0; off < size; off += CHUNK) {
		uint64_t n = size - off < CHUNK ? size - off : CHUNK;

		for (k = 0; k < n / 8; k++)
			W.host[k] = rnd_word(seed, off / 8 + k);
		CK(cuMemcpyHtoD(d + off, W.host, n));
	}
	/* a pageable copy may return before its DMA lands: nothing may overtake it */
	CK(cuCtxSynchronize());
}

/* Words of [d, d + size) that differ from stream seed. */
static uint64_t verify(CUdeviceptr d, uint64_t size, uint64_t seed)
{
	uint64_t off, k, bad = 0;

	for (off = 0; off < size; off += CHUNK) {
		uint64_t n = size - off < CHUNK ? size - off : CHUNK;

		CK(cuMemcpyDtoH(W.host, d, n));
		for (k = 0; k < n / 8; k++)
			bad += W.host[k] != rnd_word(seed, off / 8 + k);
		d += n;
	}
	return bad;
}

static uint64_t pair_seed(int dev)
{
	return 1000 + (uint64_t)dev;
}

static uint64_t pub_seed(int dev, int k)
{
	return 100000 * (uint64_t)(dev + 1) + (uint64_t)k;
}

static void w_init(const struct mcmd *c)
{
	struct nvb_opts o;
	char msg[256], dname[96];
	double t0, open_ms;

	if (nvb_cuda_load(&W.cu, NULL, msg, sizeof(msg)))
		wfail("%s", msg);
	t0 = now_s();
	NV(nvb_gpu_open(NULL, &W.g));
	open_ms = (now_s() - t0) * 1e3;
	if (W.dev >= nvb_gpu_device_count(W.g))
		wfail("no such GPU (have %d)", nvb_gpu_device_count(W.g));
	NV(nvb_gpu_set_device(W.g, W.dev));
	CK(cuStreamCreate(&W.st, CU_STREAM_NON_BLOCKING));
	CK(cuStreamCreate(&W.st2, CU_STREAM_NON_BLOCKING));
	CK(cuEventCreate(&W.e0, CU_EVENT_DEFAULT));
	CK(cuEventCreate(&W.e1, CU_EVENT_DEFAULT));
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.socket_path = O->socket;
	NV(nvb_open(&o, &W.h));
	W.host = malloc(CHUNK);
	if (!W.host)
		wfail("out of host memory");
	W.size = c->size;
	CK(cuMemAlloc(&W.scratch, W.size));
	CK(cuMemsetD32Async(W.scratch, 0xdeadbeef, W.size / 4, W.st));	/* poison */
	memset(&W.rep, 0, sizeof(W.rep));
	if (c->count) {
		NV(nvb_gpu_alloc(W.g, W.dev, 2 * W.size, 0, &W.buf));
		fill(nvb_gpu_buf_ptr(W.buf), W.size, pair_seed(W.dev));
		CK(cuMemsetD32Async(nvb_gpu_buf_ptr(W.buf) + W.size, 0x5a5a5a5a, W.size / 4, W.st));
		entry_name(msg, sizeof(msg), W.dev, -1);
		NV(nvb_gpu_publish(W.g, W.h, msg, W.buf, NVB_ACCESS_OWNER, NULL));
		snprintf((char *)W.rep.blob, 64, "%s",
			 nvb_gpu_buf_handle_types(W.buf) & NVB_GPU_HANDLE_FABRIC ?
			 "FABRIC|POSIX_FD" : "POSIX_FD");
	}
	CK(cuStreamSynchronize(W.st));
	nvb_gpu_device_name(W.g, W.dev, dname, sizeof(dname));
	snprintf((char *)W.rep.blob + 64, 96, "%s", dname);
	snprintf((char *)W.rep.blob + 160, 32, "%s", nvb_backend_name(nvb_backend(W.h)));
	W.rep.v[0] = nvb_gpu_driver_version(W.g);
	W.rep.v[1] = nvb_gpu_device_count(W.g);
	W.rep.v[2] = open_ms;
}

static void w_import(const struct mcmd *c)
{
	struct nvb_gpu_map_stats st;
	char name[80];
	double t0, t;

	entry_name(name, sizeof(name), c->peer, -1);
	if (c->t_go > 0)
		spin_until(c->t_go);
	t0 = now_s();
	NV(nvb_gpu_import(W.g, W.h, name, 10 * 1000000000LL, 0, &W.map[c->peer]));
	t = now_s() - t0;
	memset(&st, 0, sizeof(st));
	st.sz = sizeof(st);
	W.rep.v[0] = t * 1e3;
	if (!nvb_gpu_map_stats(W.map[c->peer], &st)) {
		double cuda_ns = (double)st.import_ns + st.reserve_ns + st.map_ns;
		unsigned int k;

		for (k = 0; k < st.naccess && k < 4; k++)
			cuda_ns += (double)st.access_ns[k];
		W.rep.v[1] = cuda_ns / 1e6;		/* CUDA calls, ms */
		W.rep.v[2] = t * 1e6 - cuda_ns / 1e3;	/* the rest: watch + fetch, us */
	}
}

/* GB/s of it copies of size bytes on W.st. */
static double copies(CUdeviceptr dst, CUdeviceptr src, uint64_t size, unsigned int it, int lib)
{
	void *st = W.st;
	unsigned int i;

	if (lib)
		NV(nvb_gpu_copy(W.g, dst, src, size, &st, 1, NVB_GPU_COPY_CE));
	else
		CK(cuMemcpyDtoDAsync(dst, src, size, W.st));
	CK(cuEventRecord(W.e0, W.st));
	for (i = 0; i < it; i++) {
		if (lib)
			NV(nvb_gpu_copy(W.g, dst, src, size, &st, 1, NVB_GPU_COPY_CE));
		else
			CK(cuMemcpyDtoDAsync(dst, src, size, W.st));
	}
	CK(cuEventRecord(W.e1, W.st));
	return (double)size * it / (ev_ms() * 1e-3) / 1e9;
}

static struct nvb_gpu_map *peer_map(int peer)
{
	if (!W.map[peer])
		wfail("GPU %d's buffer is not imported", peer);
	return W.map[peer];
}

static void w_bw(const struct mcmd *c)
{
	uint64_t r = nvb_gpu_map_ptr(peer_map(c->peer)), l = nvb_gpu_buf_ptr(W.buf);

	if (c->dir == 0)	/* write: own data -> the peer's inbox */
		W.rep.v[0] = copies(r + W.size, l, c->size, iters_for(c->size), 1);
	else			/* read: the peer's data -> scratch */
		W.rep.v[0] = copies(W.scratch, r, c->size, iters_for(c->size), 1);
}

static CUcontext ctx_of(int dev)
{
	CUcontext ctx;

	NV(nvb_gpu_set_device(W.g, dev));
	CK(cuCtxGetCurrent(&ctx));
	return ctx;
}

static void peer_access(int from, int to)
{
	CUcontext c = ctx_of(to);
	CUresult r;

	NV(nvb_gpu_set_device(W.g, from));
	r = W.cu.cuCtxEnablePeerAccess(c, 0);
	if (r && r != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)
		wfail("cuCtxEnablePeerAccess: %s", nvb_cuda_errname(&W.cu, r));
}

/*
 * The same pair in one process with plain allocations and peer access:
 * write (this GPU's engines push to the peer), read (pull), and both GPUs
 * pushing at once.
 */
static void w_same(const struct mcmd *c)
{
	uint64_t size = c->size, l = nvb_gpu_buf_ptr(W.buf);
	unsigned int it = iters_for(size), i;
	CUdeviceptr p;
	CUstream sp;
	double t0, t1;

	peer_access(W.dev, c->peer);
	peer_access(c->peer, W.dev);
	CK(cuMemAlloc(&p, 2 * size));
	CK(cuStreamCreate(&sp, CU_STREAM_NON_BLOCKING));
	CK(cuMemsetD32Async(p, 0x3c3c3c3c, 2 * size / 4, sp));
	CK(cuStreamSynchronize(sp));
	NV(nvb_gpu_set_device(W.g, W.dev));
	W.rep.v[0] = copies(p, l, size, it, 0);
	W.rep.v[1] = copies(W.scratch, p + size, size, it, 0);
	CK(cuCtxSynchronize());
	t0 = now_s();
	for (i = 0; i < it; i++)
		CK(cuMemcpyDtoDAsync(p, l, size, W.st));
	NV(nvb_gpu_set_device(W.g, c->peer));
	for (i = 0; i < it; i++)
		CK(cuMemcpyDtoDAsync(W.scratch, p + size, size, sp));
	CK(cuStreamSynchronize(sp));
	NV(nvb_gpu_set_device(W.g, W.dev));
	CK(cuStreamSynchronize(W.st));
	t1 = now_s();
	W.rep.v[2] = 2.0 * size * it / (t1 - t0) / 1e9;
	NV(nvb_gpu_set_device(W.g, c->peer));
	CK(cuStreamDestroy(sp));
	CK(cuMemFree(p));
	NV(nvb_gpu_set_device(W.g, W.dev));
}

/* Timed from t_go to the end of the last copy: wall start, end, bytes. */
static void timed_copies(CUdeviceptr dst, CUdeviceptr src, uint64_t size, unsigned int it,
			 double t_go)
{
	void *st = W.st;
	unsigned int i;

	NV(nvb_gpu_copy(W.g, dst, src, size, &st, 1, NVB_GPU_COPY_CE));	/* warm-up */
	CK(cuStreamSynchronize(W.st));
	spin_until(t_go);
	W.rep.v[0] = now_s();
	CK(cuEventRecord(W.e0, W.st));
	for (i = 0; i < it; i++)
		NV(nvb_gpu_copy(W.g, dst, src, size, &st, 1, NVB_GPU_COPY_CE));
	CK(cuEventRecord(W.e1, W.st));
	CK(cuStreamSynchronize(W.st));
	W.rep.v[1] = now_s();
	W.rep.v[2] = (double)size * it;
	W.rep.v[3] = (double)size * it / (ev_ms() * 1e-3) / 1e9;
}

static void w_bidir(const struct mcmd *c)
{
	uint64_t r = nvb_gpu_map_ptr(peer_map(c->peer));

	timed_copies(r + W.size, nvb_gpu_buf_ptr(W.buf), c->size, iters_for(c->size), c->t_go);
}

static void w_read(const struct mcmd *c)
{
	timed_copies(W.scratch, nvb_gpu_map_ptr(peer_map(c->peer)), c->size, c->count, c->t_go);
}

static void w_verify(const struct mcmd *c)
{
	W.rep.v[0] = (double)verify(W.scratch, c->size, pair_seed(c->peer));
}

/* N buffers through nvbridge and N through legacy IPC, same random data. */
static void w_pub_many(const struct mcmd *c)
{
	char name[80];
	unsigned int k;
	double t0, t_nvb = 0, t_leg = 0;

	W.npub = c->count;
	for (k = 0; k < W.npub; k++) {
		NV(nvb_gpu_alloc(W.g, W.dev, c->size, 0, &W.pub[k]));
		fill(nvb_gpu_buf_ptr(W.pub[k]), c->size, pub_seed(W.dev, (int)k));
		CK(cuMemAlloc(&W.leg[k], c->size));
		CK(cuMemcpyDtoDAsync(W.leg[k], nvb_gpu_buf_ptr(W.pub[k]), c->size, W.st));
	}
	CK(cuCtxSynchronize());
	for (k = 0; k < W.npub; k++) {
		entry_name(name, sizeof(name), W.dev, (int)k);
		t0 = now_s();
		NV(nvb_gpu_publish(W.g, W.h, name, W.pub[k], NVB_ACCESS_OWNER, NULL));
		t_nvb += now_s() - t0;
		t0 = now_s();
		CK(cuIpcGetMemHandle((CUipcMemHandle *)(W.rep.blob + k * CU_IPC_HANDLE_SIZE),
				     W.leg[k]));
		t_leg += now_s() - t0;
	}
	W.rep.v[0] = t_nvb;
	W.rep.v[1] = t_leg;
}

static void w_import_many(const struct mcmd *c)
{
	struct nvb_gpu_map **m = calloc((size_t)c->npeers * c->count, sizeof(*m));
	char name[80];
	unsigned int p, k, n = 0, bad = 0;
	double t0;

	if (!m)
		wfail("out of host memory");
	spin_until(c->t_go);
	t0 = now_s();
	for (p = 0; p < c->npeers; p++)
		for (k = 0; k < c->count; k++) {
			entry_name(name, sizeof(name), c->peers[p], (int)k);
			NV(nvb_gpu_import(W.g, W.h, name, 10 * 1000000000LL, c->dir, &m[n]));
			n++;
		}
	W.rep.v[0] = now_s();
	W.rep.v[1] = W.rep.v[0] - t0;
	/* every mapping, every word; then let go of them all, for the next pass */
	for (p = 0, n = 0; p < c->npeers; p++)
		for (k = 0; k < c->count; k++, n++) {
			bad += verify(nvb_gpu_map_ptr(m[n]), c->size, pub_seed(c->peers[p], (int)k)) != 0;
			nvb_gpu_unmap(m[n]);
		}
	nvb_gpu_cache_trim(W.g);
	free(m);
	W.rep.v[2] = n;
	W.rep.v[3] = bad;
}

static void w_leg_open(const struct mcmd *c)
{
	CUdeviceptr p[MULTI_MAXPUB];
	CUipcMemHandle ih;
	unsigned int k, bad = 0;
	double t0;

	spin_until(c->t_go);
	t0 = now_s();
	for (k = 0; k < c->count; k++) {
		memcpy(&ih, c->blob + k * CU_IPC_HANDLE_SIZE, sizeof(ih));
		CK(cuIpcOpenMemHandle(&p[k], ih, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
	}
	W.rep.v[0] = now_s();
	W.rep.v[1] = W.rep.v[0] - t0;
	for (k = 0; k < c->count; k++) {
		bad += verify(p[k], c->size, pub_seed(c->peer, (int)k)) != 0;
		CK(cuIpcCloseMemHandle(p[k]));
	}
	W.rep.v[2] = c->count;
	W.rep.v[3] = bad;
}

static void w_quit(void)
{
	unsigned int k;
	int i;

	for (i = 0; i < (int)(sizeof(W.map) / sizeof(W.map[0])); i++)
		if (W.map[i])
			nvb_gpu_unmap(W.map[i]);
	for (k = 0; k < W.npub; k++) {
		nvb_gpu_free(W.pub[k]);
		CK(cuMemFree(W.leg[k]));
	}
	if (W.buf)
		nvb_gpu_free(W.buf);
	if (W.scratch)
		CK(cuMemFree(W.scratch));
	if (W.h)
		nvb_close(W.h);
	if (W.g)
		nvb_gpu_close(W.g);
	free(W.host);
}

static void worker_main(int fd, int dev)
{
	static struct mcmd c;

	W.fd = fd;
	W.dev = dev;
	for (;;) {
		ssize_t n = recv(fd, &c, sizeof(c), 0);

		if (n != (ssize_t)sizeof(c))
			_exit(n == 0 ? 0 : 1);	/* parent gone */
		memset(&W.rep, 0, sizeof(W.rep));
		if (c.peer < 0 || c.peer >= (int)(sizeof(W.map) / sizeof(W.map[0])) ||
		    c.count > MULTI_MAXPUB * 1000 || c.npeers > MULTI_MAXG)
			wfail("bad command");
		switch (c.op) {
		case OP_INIT: w_init(&c); break;
		case OP_IMPORT: w_import(&c); break;
		case OP_BW: w_bw(&c); break;
		case OP_SAME: w_same(&c); break;
		case OP_BIDIR: w_bidir(&c); break;
		case OP_READ: w_read(&c); break;
		case OP_VERIFY: w_verify(&c); break;
		case OP_PUB_MANY: w_pub_many(&c); break;
		case OP_IMPORT_MANY: w_import_many(&c); break;
		case OP_LEG_OPEN: w_leg_open(&c); break;
		case OP_QUIT: w_quit(); break;
		default: wfail("unknown command %u", c.op);
		}
		if (send(fd, &W.rep, sizeof(W.rep), 0) != (ssize_t)sizeof(W.rep))
			_exit(1);
		if (c.op == OP_QUIT)
			_exit(0);
	}
}

/* ------------------------------------------------------------ parent */

struct wk {
	pid_t pid;
	int fd;
	int dev;
};

static struct wk *all_wk[MULTI_MAXG * 2];
static int nall_wk;
static double T0;

static void kill_all(void)
{
	int i;

	for (i = 0; i < nall_wk; i++)
		if (all_wk[i] && all_wk[i]->pid > 0)
			kill(all_wk[i]->pid, SIGKILL);
}

static void fatal(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\nnvbridge-bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	kill_all();
	exit(1);
}

static void on_alarm(int sig)
{
	static const char m[] = "\nnvbridge-bench: timed out (--timeout)\n";

	(void)sig;
	if (write(2, m, sizeof(m) - 1) < 0)
		_exit(1);
	kill_all();
	_exit(1);
}

static void progress(const char *fmt, ...)
{
	char buf[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "\r[%6.1fs] %-60s", now_s() - T0, buf);
}

static void wk_spawn(struct wk *w, int dev)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		fatal("socketpair: %s", strerror(errno));
	w->dev = dev;
	w->pid = fork();
	if (w->pid < 0)
		fatal("fork: %s", strerror(errno));
	if (w->pid == 0) {
		int i;

		close(sv[0]);
		for (i = 0; i < nall_wk; i++)	/* the other workers' parent ends */
			close(all_wk[i]->fd);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGALRM, SIG_DFL);
		alarm(0);
		worker_main(sv[1], dev);
		_exit(0);
	}
	close(sv[1]);
	w->fd = sv[0];
	all_wk[nall_wk++] = w;
}

static struct mcmd C;	/* 16 KiB: not on the stack */

static void wk_send(struct wk *w, const struct mcmd *c)
{
	if (send(w->fd, c, sizeof(*c), 0) != (ssize_t)sizeof(*c))
		fatal("GPU %d worker: %s", w->dev, strerror(errno));
}

static void wk_recv(struct wk *w, struct mrep *r)
{
	ssize_t n = recv(w->fd, r, sizeof(*r), 0);

	if (n != (ssize_t)sizeof(*r))
		fatal("GPU %d worker died", w->dev);
	if (r->err)
		fatal("%s", r->msg);
}

static void wk_call(struct wk *w, const struct mcmd *c, struct mrep *r)
{
	wk_send(w, c);
	wk_recv(w, r);
}

static struct mrep REP[MULTI_MAXG];	/* replies of a gather, by worker */

/*
 * Sends C to the n workers ws[] (per-worker tweaks by fix(), if any), then
 * takes their replies into REP[] in the order they come, so that the first
 * worker to fail is the one reported.
 */
static void wk_bcast(struct wk **ws, int n, void (*fix)(int i))
{
	struct pollfd pf[MULTI_MAXG];
	int i, left = n;

	for (i = 0; i < n; i++) {
		if (fix)
			fix(i);
		wk_send(ws[i], &C);
		pf[i].fd = ws[i]->fd;
		pf[i].events = POLLIN;
	}
	while (left) {
		if (poll(pf, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			fatal("poll: %s", strerror(errno));
		}
		for (i = 0; i < n; i++)
			if (pf[i].fd >= 0 && pf[i].revents) {
				wk_recv(ws[i], &REP[i]);
				pf[i].fd = -1;
				left--;
			}
	}
}

static void cmd_reset(uint32_t op)
{
	memset(&C, 0, sizeof(C));
	C.op = op;
}

static void wk_quit(struct wk *w)
{
	static struct mrep r;
	int st;

	cmd_reset(OP_QUIT);
	wk_call(w, &C, &r);
	close(w->fd);
	waitpid(w->pid, &st, 0);
	w->pid = 0;
}

/* GPU count from a short-lived child: the parent itself never loads CUDA. */
static int probe_gpus(char *why, size_t len)
{
	int p[2], n = -1;
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = fork();
	if (pid == 0) {
		struct nvb_cuda cu;
		char msg[200] = "";
		int cnt = 0;

		close(p[0]);
		if (nvb_cuda_load(&cu, NULL, msg, sizeof(msg)) || cu.cuInit(0) ||
		    cu.cuDeviceGetCount(&cnt))
			cnt = -1;
		if (write(p[1], &cnt, sizeof(cnt)) < 0 || write(p[1], msg, sizeof(msg)) < 0)
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	if (read(p[0], &n, sizeof(n)) != sizeof(n))
		n = -1;
	if (read(p[0], why, len) <= 0)
		why[0] = 0;
	why[len - 1] = 0;
	close(p[0]);
	waitpid(pid, NULL, 0);
	return n;
}

/* ---- results ---- */

static struct {
	char device[96], backend[32], alloc[32];
	int driver;
	int n, gpu[MULTI_MAXG];
	/* all-pairs, [importer][exporter] */
	double wr[MULTI_MAXG][MULTI_MAXG], rd[MULTI_MAXG][MULTI_MAXG], bi[MULTI_MAXG][MULTI_MAXG];
	double swr[MULTI_MAXG][MULTI_MAXG], srd[MULTI_MAXG][MULTI_MAXG], sbi[MULTI_MAXG][MULTI_MAXG];
	double imp_ms[MULTI_MAXG][MULTI_MAXG];
	double ap_bad;
	/* fan-out */
	int nk, k[MULTI_MAXG], skipped[MULTI_MAXG], nskipped;
	double f_rdv_mean[MULTI_MAXG], f_rdv_max[MULTI_MAXG];
	double f_imp_mean[MULTI_MAXG], f_imp_max[MULTI_MAXG];
	double f_bw_min[MULTI_MAXG], f_bw_mean[MULTI_MAXG], f_agg[MULTI_MAXG];
	double f_bad[MULTI_MAXG];
	double f_open[MULTI_MAXG];	/* slowest nvb_gpu_open() of the round, ms */
	/* many publishers */
	int mp_done;
	/* [0] nvbridge, [1] legacy IPC, [2] nvbridge with NVB_GPU_IMPORT_LOCAL_ONLY */
	double mp_pub[3], mp_imp[3], mp_n[3], mp_bad[3];
	double mp_us[3];	/* per import, the slowest process */
} R;

static struct wk pool[MULTI_MAXG];
static int bidir_peer[2];

static void fix_bidir(int i)
{
	C.peer = bidir_peer[i];
}

static void run_all_pairs(void)
{
	static struct mrep r;
	int i, j, n = R.n, done = 0, total = n * (n - 1);

	for (i = 0; i < n; i++)
		for (j = 0; j < n; j++) {
			if (i == j)
				continue;
			progress("all-pairs: GPU %d -> GPU %d (%d/%d)", R.gpu[i], R.gpu[j], ++done, total);
			cmd_reset(OP_BW);
			C.peer = R.gpu[j];
			C.size = O->size;
			C.dir = 0;
			wk_call(&pool[i], &C, &r);
			R.wr[i][j] = r.v[0];
			C.dir = 1;
			wk_call(&pool[i], &C, &r);
			R.rd[i][j] = r.v[0];
			C.op = OP_VERIFY;	/* what the reads left in scratch, every word */
			wk_call(&pool[i], &C, &r);
			R.ap_bad += r.v[0];
			C.op = OP_SAME;
			wk_call(&pool[i], &C, &r);
			R.swr[i][j] = r.v[0];
			R.srd[i][j] = r.v[1];
			R.sbi[i][j] = r.v[2];
		}
	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++) {
			struct wk *two[2] = { &pool[i], &pool[j] };
			double t0, t1;

			progress("all-pairs: GPU %d <-> GPU %d at once", R.gpu[i], R.gpu[j]);
			cmd_reset(OP_BIDIR);
			C.size = O->size;
			C.t_go = now_s() + 0.1;
			bidir_peer[0] = R.gpu[j];
			bidir_peer[1] = R.gpu[i];
			wk_bcast(two, 2, fix_bidir);
			t0 = fmin(REP[0].v[0], REP[1].v[0]);
			t1 = fmax(REP[0].v[1], REP[1].v[1]);
			R.bi[i][j] = R.bi[j][i] = (REP[0].v[2] + REP[1].v[2]) / (t1 - t0) / 1e9;
			/* same-process baseline: the pair measured from either side, the better */
			R.sbi[i][j] = R.sbi[j][i] = fmax(R.sbi[i][j], R.sbi[j][i]);
		}
}

/* Fan-out round with K fresh importers on the GPUs after the exporter. */
static void fan_round(int ki, int K)
{
	static struct wk imp[MULTI_MAXG];
	struct wk *ws[MULTI_MAXG];
	double t0 = 1e300, t1 = 0, bytes = 0, bw_sum = 0, bw_min = 1e300;
	double rdv_sum = 0, rdv_max = 0, imp_sum = 0, imp_max = 0, bad = 0;
	int i;

	progress("fan-out: K = %d, starting importers", K);
	for (i = 0; i < K; i++) {
		wk_spawn(&imp[i], R.gpu[1 + i]);
		ws[i] = &imp[i];
	}
	cmd_reset(OP_INIT);
	C.size = O->size;
	wk_bcast(ws, K, NULL);
	for (i = 0; i < K; i++)
		R.f_open[ki] = fmax(R.f_open[ki], REP[i].v[2]);
	progress("fan-out: K = %d, fetch + import at once", K);
	cmd_reset(OP_IMPORT);
	C.peer = R.gpu[0];
	C.t_go = now_s() + 0.05;
	wk_bcast(ws, K, NULL);
	for (i = 0; i < K; i++) {
		imp_sum += REP[i].v[0];
		imp_max = fmax(imp_max, REP[i].v[0]);
		rdv_sum += REP[i].v[2];
		rdv_max = fmax(rdv_max, REP[i].v[2]);
	}
	progress("fan-out: K = %d, reading at once", K);
	cmd_reset(OP_READ);
	C.peer = R.gpu[0];
	C.size = O->size;
	C.count = O->quick ? 4 : 10;
	C.t_go = now_s() + 0.2;		/* after every importer's warm-up copy */
	wk_bcast(ws, K, NULL);
	for (i = 0; i < K; i++) {
		t0 = fmin(t0, REP[i].v[0]);
		t1 = fmax(t1, REP[i].v[1]);
		bytes += REP[i].v[2];
		bw_sum += REP[i].v[3];
		bw_min = fmin(bw_min, REP[i].v[3]);
	}
	progress("fan-out: K = %d, checking every word read", K);
	cmd_reset(OP_VERIFY);
	C.peer = R.gpu[0];
	C.size = O->size;
	wk_bcast(ws, K, NULL);
	for (i = 0; i < K; i++)
		bad += REP[i].v[0];
	for (i = 0; i < K; i++)
		wk_quit(&imp[i]);
	nall_wk -= K;
	R.k[ki] = K;
	R.f_rdv_mean[ki] = rdv_sum / K;
	R.f_rdv_max[ki] = rdv_max;
	R.f_imp_mean[ki] = imp_sum / K;
	R.f_imp_max[ki] = imp_max;
	R.f_bw_mean[ki] = bw_sum / K;
	R.f_bw_min[ki] = bw_min;
	R.f_agg[ki] = bytes / (t1 - t0) / 1e9;
	R.f_bad[ki] = bad;
}

static void run_fan_out(void)
{
	int ks[MULTI_MAXG * 2], nks = 0, i, k;

	if (O->nfan == 1 && O->fan[0] == 0) {	/* "all" */
		for (k = 1; k < R.n - 1; k *= 2)
			ks[nks++] = k;
		ks[nks++] = R.n - 1;
	} else {
		for (i = 0; i < O->nfan; i++)
			ks[nks++] = O->fan[i];
	}
	for (i = 0; i < nks; i++) {
		if (ks[i] > R.n - 1) {
			R.skipped[R.nskipped++] = ks[i];
			continue;
		}
		fan_round(R.nk++, ks[i]);
	}
}

static struct wk *pool_ws[MULTI_MAXG];

/* Each worker imports from every other GPU. */
static void fix_peers(int i)
{
	int j;

	C.npeers = 0;
	for (j = 0; j < R.n; j++)
		if (pool_ws[i] != &pool[j])
			C.peers[C.npeers++] = R.gpu[j];
}

static void run_many(void)
{
	static unsigned char handles[MULTI_MAXG][sizeof(C.blob)];
	struct wk *ws[MULTI_MAXG];
	int i, j, k, m, n = R.n;
	double t1, pmax;

	progress("many publishers: %u buffers per GPU, publishing", O->npub);
	cmd_reset(OP_PUB_MANY);
	C.count = O->npub;
	C.size = O->pub_size;
	wk_bcast(pool_ws, n, NULL);
	R.mp_pub[0] = R.mp_pub[1] = 0;
	for (i = 0; i < n; i++) {
		memcpy(handles[i], REP[i].blob, sizeof(handles[i]));
		R.mp_pub[0] = fmax(R.mp_pub[0], REP[i].v[0]);
		R.mp_pub[1] = fmax(R.mp_pub[1], REP[i].v[1]);
	}
	/* nvbridge: every process imports every other process's buffers at once */
	for (m = 0; m < 3; m += 2) {
		progress("many publishers: importing through nvbridge%s", m ? " (local only)" : "");
		cmd_reset(OP_IMPORT_MANY);
		C.count = O->npub;
		C.size = O->pub_size;
		C.dir = m ? NVB_GPU_IMPORT_LOCAL_ONLY : 0;
		C.t_go = now_s() + 0.05;
		wk_bcast(pool_ws, n, fix_peers);
		t1 = 0;
		pmax = 0;
		for (i = 0; i < n; i++) {
			t1 = fmax(t1, REP[i].v[0]);
			pmax = fmax(pmax, REP[i].v[1]);
			R.mp_n[m] += REP[i].v[2];
			R.mp_bad[m] += REP[i].v[3];
		}
		R.mp_imp[m] = t1 - C.t_go;
		R.mp_us[m] = pmax / ((double)O->npub * (n - 1)) * 1e6;
		R.mp_pub[m] = R.mp_pub[0];
	}
	/* legacy IPC: the same, one publisher's handles at a time to everyone else */
	progress("many publishers: legacy CUDA IPC");
	R.mp_imp[1] = 0;
	pmax = 0;
	for (j = 0; j < n; j++) {
		double te = 0, rmax = 0;

		cmd_reset(OP_LEG_OPEN);
		C.peer = R.gpu[j];
		C.count = O->npub;
		C.size = O->pub_size;
		memcpy(C.blob, handles[j], sizeof(C.blob));
		C.t_go = now_s() + 0.02;
		for (i = 0, k = 0; i < n; i++)
			if (i != j)
				ws[k++] = &pool[i];
		wk_bcast(ws, k, NULL);
		for (i = 0; i < k; i++) {
			te = fmax(te, REP[i].v[0]);
			rmax = fmax(rmax, REP[i].v[1]);
			R.mp_n[1] += REP[i].v[2];
			R.mp_bad[1] += REP[i].v[3];
		}
		R.mp_imp[1] += te - C.t_go;
		pmax += rmax;
	}
	/* each round: every other process opens one publisher's npub handles */
	R.mp_us[1] = pmax / ((double)O->npub * n) * 1e6;
	R.mp_done = 1;
}

/* ---- output ---- */

static void print_matrix(FILE *f, const char *title, const char *unit,
			 double m[MULTI_MAXG][MULTI_MAXG], double base[MULTI_MAXG][MULTI_MAXG])
{
	int i, j;

	fprintf(f, "\n%s\n%-8s", title, base ? "ratio" : unit);
	for (j = 0; j < R.n; j++)
		fprintf(f, "  GPU%-4d", R.gpu[j]);
	fprintf(f, "\n");
	for (i = 0; i < R.n; i++) {
		fprintf(f, "GPU%-5d", R.gpu[i]);
		for (j = 0; j < R.n; j++) {
			if (i == j)
				fprintf(f, "  %7s", "-");
			else if (base)
				fprintf(f, "  %6.3fx", base[i][j] > 0 ? m[i][j] / base[i][j] : 0);
			else
				fprintf(f, "  %7.1f", m[i][j]);
		}
		fprintf(f, "\n");
	}
}

static void ratio_range(double m[MULTI_MAXG][MULTI_MAXG], double b[MULTI_MAXG][MULTI_MAXG],
			double *lo, double *hi)
{
	int i, j;

	*lo = 1e300;
	*hi = 0;
	for (i = 0; i < R.n; i++)
		for (j = 0; j < R.n; j++)
			if (i != j && b[i][j] > 0) {
				*lo = fmin(*lo, m[i][j] / b[i][j]);
				*hi = fmax(*hi, m[i][j] / b[i][j]);
			}
}

static void print_text(FILE *f)
{
	char date[64], sz[32];
	time_t t = time(NULL);
	double lo, hi;
	int i, b, k;

	strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&t));
	fprintf(f, "nvbridge-bench: %d x %s, CUDA driver API %d.%d, %s\n", R.n, R.device,
		R.driver / 1000, (R.driver % 1000) / 10, date);
	fprintf(f, "rendezvous: %s; allocation: %s; one process per GPU (GPUs", R.backend, R.alloc);
	for (i = 0; i < R.n; i++)
		fprintf(f, " %d", R.gpu[i]);
	fprintf(f, ")\n");
	if (O->all_pairs) {
		fmt_size(sz, sizeof(sz), O->size);
		fprintf(f, "\nALL PAIRS: %s per copy, copy engines, one stream; row = the process "
			"(GPU) driving the copy, column = the GPU whose exported buffer it imported\n", sz);
		print_matrix(f, "write (row pushes into column's buffer), GB/s", "GB/s", R.wr, NULL);
		print_matrix(f, "write / same-process peer copy of the same pair", NULL, R.wr, R.swr);
		print_matrix(f, "read (row pulls from column's buffer), GB/s", "GB/s", R.rd, NULL);
		print_matrix(f, "read / same-process peer copy of the same pair", NULL, R.rd, R.srd);
		print_matrix(f, "bidirectional (row and column push at once), total GB/s", "GB/s", R.bi, NULL);
		print_matrix(f, "bidirectional / same-process, both GPUs pushing", NULL, R.bi, R.sbi);
		print_matrix(f, "first import + map of the column's buffer by the row (fetch, import, map, access for every GPU)", "ms", R.imp_ms, NULL);
		ratio_range(R.wr, R.swr, &lo, &hi);
		fprintf(f, "\nwrite: %.3fx-%.3fx same-process; ", lo, hi);
		ratio_range(R.rd, R.srd, &lo, &hi);
		fprintf(f, "read: %.3fx-%.3fx; ", lo, hi);
		ratio_range(R.bi, R.sbi, &lo, &hi);
		fprintf(f, "bidirectional: %.3fx-%.3fx\n", lo, hi);
		fprintf(f, "every word read back checked against the exporter's random data: "
			"%.0f wrong\n", R.ap_bad);
	}
	if (R.nk || R.nskipped) {
		fmt_size(sz, sizeof(sz), O->size);
		fprintf(f, "\nFAN-OUT: exporter on GPU %d; K fresh importer processes fetch, import "
			"and read the same %s buffer at once\n", R.gpu[0], sz);
		fprintf(f, "%3s  %-14s  %-16s  %-20s  %-12s  %-10s  %s\n", "K", "rendezvous us",
			"import+map ms", "per-importer GB/s", "aggregate", "per-imp vs", "words");
		for (b = 0; b < R.nk && R.k[b] != 1; b++)
			;
		if (b == R.nk)
			b = 0;
		snprintf(sz, sizeof(sz), "K=%d (mean)", R.nk ? R.k[b] : 1);
		fprintf(f, "%3s  %-14s  %-16s  %-20s  %-12s  %-10s  %s\n", "", "mean / max",
			"mean / max", "min / mean", "GB/s", sz, "wrong");
		for (i = 0; i < R.nk; i++)
			fprintf(f, "%3d  %6.1f/%-7.1f  %6.3f/%-9.3f  %7.1f/%-12.1f  %-12.1f  %-10.3f  %.0f\n",
				R.k[i], R.f_rdv_mean[i], R.f_rdv_max[i], R.f_imp_mean[i], R.f_imp_max[i],
				R.f_bw_min[i], R.f_bw_mean[i], R.f_agg[i],
				R.f_bw_mean[b] > 0 ? R.f_bw_mean[i] / R.f_bw_mean[b] : 0, R.f_bad[i]);
		fprintf(f, "(importers' nvb_gpu_open(), the slowest of each round:");
		for (i = 0; i < R.nk; i++)
			fprintf(f, " %.0f ms", R.f_open[i]);
		fprintf(f, ")\n");
		for (i = 0; i < R.nskipped; i++)
			fprintf(f, "K = %d: not run, needs %d GPUs (have %d)\n", R.skipped[i],
				R.skipped[i] + 1, R.n);
	}
	if (R.mp_done) {
		fmt_size(sz, sizeof(sz), O->pub_size);
		fprintf(f, "\nMANY PUBLISHERS: %d processes x %u buffers of %s; every process "
			"imports the other %u, all processes at once\n", R.n, O->npub, sz,
			O->npub * (R.n - 1));
		fprintf(f, "%-12s  %-10s  %-14s  %-12s  %-10s  %-10s  %s\n", "method", "publish ms",
			"import wall ms", "us / import", "setup ms", "vs legacy", "mappings wrong");
		for (k = 0; k < 3; k++) {
			static const int order[3] = { 0, 2, 1 };
			static const char *const nm[3] = { "nvbridge", "legacy IPC", "nvb local" };
			double setup, setup_leg = (R.mp_pub[1] + R.mp_imp[1]) * 1e3;

			i = order[k];
			setup = (R.mp_pub[i] + R.mp_imp[i]) * 1e3;
			fprintf(f, "%-12s  %-10.2f  %-14.2f  %-12.2f  %-10.2f  %-10.3f  %.0f of %.0f\n",
				nm[i], R.mp_pub[i] * 1e3, R.mp_imp[i] * 1e3,
				R.mp_us[i],
				setup, setup > 0 ? setup_leg / setup : 0, R.mp_bad[i], R.mp_n[i]);
		}
		fprintf(f, "(vs legacy: legacy setup time / this method's, > 1 is faster. nvbridge "
			"maps for every GPU that can reach the memory;\n \"nvb local\" "
			"(NVB_GPU_IMPORT_LOCAL_ONLY, a second pass) and legacy IPC map for the "
			"importing GPU only. Legacy handles\n go out one publisher at a time "
			"through the bench's own sockets: its wall time adds up %d rounds)\n", R.n);
	}
}

static void json_matrix(FILE *f, const char *key, double m[MULTI_MAXG][MULTI_MAXG], int last)
{
	int i, j;

	fprintf(f, "    \"%s\": [", key);
	for (i = 0; i < R.n; i++) {
		fprintf(f, "%s[", i ? ", " : "");
		for (j = 0; j < R.n; j++)
			fprintf(f, i == j ? "%snull" : "%s%.3f", j ? ", " : "", m[i][j]);
		fprintf(f, "]");
	}
	fprintf(f, "]%s\n", last ? "" : ",");
}

static void print_json(FILE *f)
{
	int i;

	fprintf(f, "{\n  \"device\": \"%s\", \"gpus\": [", R.device);
	for (i = 0; i < R.n; i++)
		fprintf(f, "%s%d", i ? ", " : "", R.gpu[i]);
	fprintf(f, "], \"driver\": %d, \"backend\": \"%s\", \"allocation\": \"%s\",\n", R.driver,
		R.backend, R.alloc);
	fprintf(f, "  \"size\": %llu, \"time\": %lld", (unsigned long long)O->size,
		(long long)time(NULL));
	if (O->all_pairs) {
		fprintf(f, ",\n  \"all_pairs\": {\n    \"rows\": \"importer\", \"cols\": \"exporter\",\n");
		json_matrix(f, "write_gbs", R.wr, 0);
		json_matrix(f, "read_gbs", R.rd, 0);
		json_matrix(f, "bidir_gbs", R.bi, 0);
		json_matrix(f, "same_process_write_gbs", R.swr, 0);
		json_matrix(f, "same_process_read_gbs", R.srd, 0);
		json_matrix(f, "same_process_bidir_gbs", R.sbi, 0);
		json_matrix(f, "first_import_ms", R.imp_ms, 0);
		fprintf(f, "    \"wrong_words\": %.0f\n", R.ap_bad);
		fprintf(f, "  }");
	}
	if (R.nk || R.nskipped) {
		fprintf(f, ",\n  \"fan_out\": {\"exporter\": %d, \"rounds\": [", R.gpu[0]);
		for (i = 0; i < R.nk; i++)
			fprintf(f, "%s\n    {\"k\": %d, \"rendezvous_us_mean\": %.1f, "
				"\"rendezvous_us_max\": %.1f, \"import_ms_mean\": %.4f, \"import_ms_max\": %.4f, "
				"\"per_importer_gbs_min\": %.2f, \"per_importer_gbs_mean\": %.2f, "
				"\"aggregate_gbs\": %.2f, \"wrong_words\": %.0f, \"gpu_open_ms_max\": %.1f}",
				i ? "," : "", R.k[i], R.f_rdv_mean[i], R.f_rdv_max[i], R.f_imp_mean[i],
				R.f_imp_max[i], R.f_bw_min[i], R.f_bw_mean[i], R.f_agg[i], R.f_bad[i],
				R.f_open[i]);
		fprintf(f, "], \"skipped_k\": [");
		for (i = 0; i < R.nskipped; i++)
			fprintf(f, "%s%d", i ? ", " : "", R.skipped[i]);
		fprintf(f, "]}");
	}
	if (R.mp_done) {
		fprintf(f, ",\n  \"many_publishers\": {\"processes\": %d, \"buffers_each\": %u, "
			"\"buffer_size\": %llu", R.n, O->npub, (unsigned long long)O->pub_size);
		for (i = 0; i < 3; i++)
			fprintf(f, ",\n    \"%s\": {\"publish_ms\": %.3f, \"import_wall_ms\": %.3f, "
				"\"imports\": %.0f, \"mappings_wrong\": %.0f}",
				i == 2 ? "nvbridge_local_only" : i ? "legacy_ipc" : "nvbridge",
				R.mp_pub[i] * 1e3, R.mp_imp[i] * 1e3, R.mp_n[i], R.mp_bad[i]);
		fprintf(f, "}");
	}
	fprintf(f, "\n}\n");
}

int multi_main(const struct multi_opts *o)
{
	static struct mrep r;
	char why[200] = "";
	int ngpu, i, j;

	O = o;
	T0 = now_s();
	snprintf(tag, sizeof(tag), "%d", (int)getpid());
	setenv("NCCL_NVLS_ENABLE", "0", 1);
	signal(SIGPIPE, SIG_IGN);
	ngpu = probe_gpus(why, sizeof(why));
	if (ngpu < 0) {
		fprintf(stderr, "nvbridge-bench: no usable CUDA driver%s%s\n", why[0] ? ": " : "", why);
		return 1;
	}
	if (o->ngpus) {
		R.n = o->ngpus;
		for (i = 0; i < R.n; i++) {
			if (o->gpus[i] >= ngpu) {
				fprintf(stderr, "nvbridge-bench: --gpus names GPU %d, this host has %d\n",
					o->gpus[i], ngpu);
				return 2;
			}
			R.gpu[i] = o->gpus[i];
		}
	} else {
		R.n = ngpu < MULTI_MAXG ? ngpu : MULTI_MAXG;
		for (i = 0; i < R.n; i++)
			R.gpu[i] = i;
	}
	if (R.n < 2) {
		fprintf(stderr, "nvbridge-bench: the multi-GPU modes need 2 GPUs or more, have %d\n",
			R.n);
		return 1;
	}
	signal(SIGALRM, on_alarm);
	alarm((unsigned int)o->timeout_s);

	progress("starting %d processes", R.n);
	for (i = 0; i < R.n; i++) {
		wk_spawn(&pool[i], R.gpu[i]);
		pool_ws[i] = &pool[i];
	}
	cmd_reset(OP_INIT);
	C.size = o->size;
	C.count = 1;
	wk_bcast(pool_ws, R.n, NULL);
	snprintf(R.alloc, sizeof(R.alloc), "%.31s", (char *)REP[0].blob);
	snprintf(R.device, sizeof(R.device), "%.95s", (char *)REP[0].blob + 64);
	snprintf(R.backend, sizeof(R.backend), "%.31s", (char *)REP[0].blob + 160);
	R.driver = (int)REP[0].v[0];
	if (o->all_pairs) {
		/* every process imports every other one's buffer: a full mesh */
		for (i = 0; i < R.n; i++)
			for (j = 0; j < R.n; j++) {
				if (i == j)
					continue;
				progress("all-pairs: GPU %d imports GPU %d", R.gpu[i], R.gpu[j]);
				cmd_reset(OP_IMPORT);
				C.peer = R.gpu[j];
				wk_call(&pool[i], &C, &r);
				R.imp_ms[i][j] = r.v[0];
			}
		run_all_pairs();
	}
	if (o->nfan)
		run_fan_out();
	if (o->npub)
		run_many();
	for (i = 0; i < R.n; i++)
		wk_quit(&pool[i]);
	alarm(0);
	fprintf(stderr, "\r[%6.1fs] done%60s\n", now_s() - T0, "");
	if (o->json)
		print_json(stdout);
	else
		print_text(stdout);
	if (o->json_out) {
		FILE *jf = fopen(o->json_out, "w");

		if (jf) {
			print_json(jf);
			fclose(jf);
		} else {
			perror(o->json_out);	/* as the two-GPU form: reported only */
		}
	}
	if (R.ap_bad)
		return 1;
	for (i = 0; i < R.nk; i++)
		if (R.f_bad[i])
			return 1;
	if (R.mp_done && (R.mp_bad[0] || R.mp_bad[1] || R.mp_bad[2]))
		return 1;
	return 0;
}
