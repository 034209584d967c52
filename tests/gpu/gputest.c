// SPDX-License-Identifier: MIT
/*
 * GPU tests for the libnvbridge GPU layer (make gputest).  Needs two GPUs
 * that can reach each other and an nvbridge backend (the make target starts
 * a private nvbridged); on a host without them it reports itself skipped.
 *
 * Every copy test: random data, destination poisoned first, every byte
 * compared on the host.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cuda_api.h"
#include "nvbridge.h"
#include "nvbridge_gpu.h"

#define MiB (1ull << 20)
static int passed, failed;
static struct nvb_cuda cu;
static struct nvb_gpu *g;
static char tag[32];
/*
 * The importing side's GPU: 1 where there are two, else 0.  Two processes
 * on one GPU go through the same rendezvous, export and import as two on
 * two GPUs; only the peer-to-peer link differs.
 */
static int D1;

static void result(int ok, const char *name, const char *fmt, ...)
{
	va_list ap;

	printf("%s %s", ok ? "ok  " : "FAIL", name);
	if (!ok && fmt) {
		printf(": ");
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
	}
	printf("\n");
	fflush(stdout);
	if (ok)
		passed++;
	else
		failed++;
}

static const char *current_test = "setup";

static void watchdog(int sig)
{
	char buf[200];
	int n;

	(void)sig;
	n = snprintf(buf, sizeof(buf), "FAIL %s: hang (watchdog fired)\n%d passed, %d failed\n",
		     current_test, passed, failed + 1);
	if (write(1, buf, (size_t)n) < 0)
		_exit(1);
	_exit(1);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	size_t i;

	for (i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 24);
	}
}

static struct nvb *open_nvb(void)
{
	struct nvb *h = NULL;

	if (nvb_open(NULL, &h))
		return NULL;
	return h;
}

/* ---------------------------------------------------------------- cases */

static void t_alloc_export(void)
{
	struct nvb_gpu_buf *b;
	struct nvb_gpu_meta m;
	int fd, err, types;
	CUcontext before = NULL, after = NULL;

	nvb_gpu_set_device(g, D1);
	cu.cuCtxGetCurrent(&before);
	err = nvb_gpu_alloc(g, 0, 3 * MiB + 5, 0, &b);
	cu.cuCtxGetCurrent(&after);
	nvb_gpu_set_device(g, 0);
	if (err) {
		result(0, "alloc_fallback", "%s", nvb_gpu_last_error());
		return;
	}
	result(before && after == before, "alloc_keeps_callers_context",
	       "current context %p before, %p after", (void *)before, (void *)after);
	types = (int)nvb_gpu_buf_handle_types(b);
	result((types & NVB_GPU_HANDLE_POSIX_FD) &&
	       ((types & NVB_GPU_HANDLE_FABRIC) || nvb_gpu_buf_fabric_error(b) == CUDA_ERROR_NOT_PERMITTED ||
		nvb_gpu_buf_fabric_error(b) == CUDA_ERROR_NOT_SUPPORTED ||
		nvb_gpu_buf_fabric_error(b) == CUDA_ERROR_INVALID_VALUE),
	       "alloc_fallback", "types %#x, fabric trial %d", types, nvb_gpu_buf_fabric_error(b));
	printf("     (allocation handle types %s, fabric trial result %d)\n",
	       types & NVB_GPU_HANDLE_FABRIC ? "FABRIC|POSIX_FD" : "POSIX_FD", nvb_gpu_buf_fabric_error(b));
	err = nvb_gpu_export(b, &fd, &m);
	result(!err && fd >= 0 && m.magic == NVB_GPU_META_MAGIC && m.size == sizeof(m) &&
	       m.granularity && m.alloc_size >= 3 * MiB + 5 && m.alloc_size % m.granularity == 0 &&
	       nvb_gpu_buf_size(b) == m.alloc_size, "export_metadata", "err %d", err);
	nvb_gpu_free(b);
}

static void t_errors(void)
{
	struct nvb_gpu_buf *b = NULL;
	struct nvb_gpu_map *m = NULL;
	struct nvb_gpu_meta meta;
	void *st = NULL;
	int fd, err;

	result(nvb_gpu_alloc(g, 0, 0, 0, &b) == -EINVAL, "error_alloc_size0", NULL);
	result(nvb_gpu_alloc(g, 99, MiB, 0, &b) == -EINVAL, "error_alloc_baddev", NULL);
	result(nvb_gpu_alloc(g, 0, MiB, 0x80, &b) == -EINVAL, "error_alloc_badflags", NULL);
	if (nvb_gpu_alloc(g, 0, 2 * MiB, 0, &b)) {
		result(0, "error_paths_setup", "%s", nvb_gpu_last_error());
		return;
	}
	nvb_gpu_export(b, &fd, &meta);
	err = nvb_gpu_import_fd(g, 0, fd, &meta, 8, 0, &m);
	result(err == -EMSGSIZE && !m, "error_import_short_blob", "err %d", err);
	meta.magic ^= 1;
	err = nvb_gpu_import_fd(g, 0, fd, &meta, sizeof(meta), 0, &m);
	result(err == -EINVAL && !m, "error_import_bad_magic", "err %d", err);
	meta.magic ^= 1;
	meta.alloc_size *= 2;	/* size mismatch: bigger than the allocation */
	err = nvb_gpu_import_fd(g, 0, fd, &meta, sizeof(meta), 0, &m);
	result(err < 0 && !m, "error_import_size_mismatch", "err %d (%s)", err, nvb_gpu_last_error());
	meta.alloc_size /= 2;
	err = nvb_gpu_import_fd(g, 0, -1, &meta, sizeof(meta), NVB_GPU_IMPORT_NO_FABRIC, &m);
	result(err == -EBADF && !m, "error_import_no_fd", "err %d", err);
	err = nvb_gpu_import_fd(g, 0, fd, &meta, sizeof(meta), 0x100, &m);
	result(err == -EINVAL, "error_import_badflags", "err %d", err);
	result(nvb_gpu_copy(g, 0, 0, 16, NULL, 0, 0) == -EINVAL, "error_copy_nostreams", NULL);
	cu.cuStreamCreate((CUstream *)&st, CU_STREAM_NON_BLOCKING);
	result(nvb_gpu_signal(g, st, nvb_gpu_buf_ptr(b) + 2, 1) == -EINVAL, "error_flag_unaligned", NULL);
	result(nvb_gpu_copy_blocks(g, NULL, 3, st, 0, 0, 0) == -EINVAL, "error_blocks_null", NULL);
	result(nvb_gpu_copy_blocks(g, NULL, 0, st,
				   NVB_GPU_COPY_SM | NVB_GPU_COPY_BATCH, 0, 0) == -EINVAL,
	       "error_blocks_two_modes", NULL);
	cu.cuStreamDestroy((CUstream)st);
	nvb_gpu_free(b);
}

/*
 * Cross-process: the child (GPU 0) publishes a buffer full of random data
 * through nvbridge and waits for commands on a pipe; the parent (GPU 1)
 * imports it and runs the copy tests.
 */
#define BUFSZ (64 * MiB)

/* The exporter runs in a fresh process (exec: CUDA does not survive fork). */
static int exporter_main(const char *name, int cmd_r, int ack_w, int unpublish_on_cmd)
{
	struct nvb_gpu *cg;
	struct nvb_gpu_buf *b;
	struct nvb *h;
	uint8_t *host;
	uint64_t id;
	char ch = 'r', msg[256];

	if (nvb_cuda_load(&cu, NULL, msg, sizeof(msg)))
		return 2;
	if (nvb_gpu_open(NULL, &cg) || nvb_gpu_set_device(cg, 0) ||
	    nvb_gpu_alloc(cg, 0, BUFSZ, 0, &b))
		return 2;
	host = malloc(BUFSZ);
	fill_random(host, BUFSZ, 42);
	if (cu.cuMemcpyHtoD(nvb_gpu_buf_ptr(b), host, BUFSZ))
		return 3;
	h = open_nvb();
	if (!h || nvb_gpu_publish(cg, h, name, b, NVB_ACCESS_OWNER, &id))
		return 4;
	if (write(ack_w, &ch, 1) != 1)
		return 5;
	while (read(cmd_r, &ch, 1) == 1) {
		if (ch == 'u' && unpublish_on_cmd)
			nvb_unpublish(h, id, NULL);
		if (ch == 'v') {	/* verify what the parent wrote at [32M, 64M) */
			uint8_t *exp = malloc(32 * MiB);

			fill_random(exp, 32 * MiB, 77);
			cu.cuMemcpyDtoH(host, nvb_gpu_buf_ptr(b) + 32 * MiB, 32 * MiB);
			ch = memcmp(host, exp, 32 * MiB) ? 'n' : 'y';
			free(exp);
		}
		if (write(ack_w, &ch, 1) != 1)
			break;
	}
	return 0;
}

static pid_t spawn_exporter(const char *name, int *cmd_w, int *ack_r, int unpublish_on_cmd)
{
	int c[2], a[2];
	pid_t pid;

	if (pipe(c) || pipe(a))
		return -1;
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		char s1[16], s2[16], s3[4];

		close(c[1]);
		close(a[0]);
		snprintf(s1, sizeof(s1), "%d", c[0]);
		snprintf(s2, sizeof(s2), "%d", a[1]);
		snprintf(s3, sizeof(s3), "%d", unpublish_on_cmd);
		execl("/proc/self/exe", "gputest", "--exporter", name, s1, s2, s3, (char *)NULL);
		_exit(127);
	}
	close(c[0]);
	close(a[1]);
	*cmd_w = c[1];
	*ack_r = a[0];
	return pid;
}

static char cmd(int w, int r, char c)
{
	char ack = 0;

	if (write(w, &c, 1) != 1 || read(r, &ack, 1) != 1)
		return 0;
	return ack;
}

static int check_dev(uint64_t dptr, const uint8_t *exp, size_t n, uint8_t *scratch,
		     size_t *bad_at)
{
	size_t i;

	if (cu.cuMemcpyDtoH(scratch, dptr, n))
		return 0;
	for (i = 0; i < n; i++)
		if (scratch[i] != exp[i]) {
			*bad_at = i;
			return 0;
		}
	return 1;
}

static void t_proxy(struct nvb_gpu_map *m, struct nvb_gpu_buf *loc, const uint8_t *exp,
		    uint8_t *scratch, void **st);

static void t_cross_process(struct nvb *h)
{
	static const size_t sizes[] = { 1, 7, 4096, 4097, 65536 + 3, MiB - 1, 16 * MiB + 5, 32 * MiB };
	static const size_t offs[] = { 0, 1, 13, 4096 };
	char name[64];
	int cw, ar, err, ok, k, o, mode;
	struct nvb_gpu_map *m, *m2;
	struct nvb_gpu_buf *loc;
	uint8_t *exp, *scratch;
	void *st[4];
	pid_t pid;
	size_t bad = 0;
	double t0;

	snprintf(name, sizeof(name), "gputest.%s.x", tag);
	pid = spawn_exporter(name, &cw, &ar, 0);
	if (pid < 0 || read(ar, name + 60, 1) != 1) {
		result(0, "xproc_setup", "exporter did not start");
		return;
	}
	snprintf(name, sizeof(name), "gputest.%s.x", tag);
	nvb_gpu_set_device(g, D1);
	t0 = now_s();
	err = nvb_gpu_import(g, h, name, 5000000000LL, 0, &m);
	result(!err, "xproc_import_by_name", "%d %s", err, nvb_gpu_last_error());
	if (err)
		goto out;
	printf("     (import %.3f ms, handle %s)\n", (now_s() - t0) * 1e3,
	       nvb_gpu_map_handle_type(m) == NVB_GPU_HANDLE_FABRIC ? "fabric" : "fd");
	t0 = now_s();
	err = nvb_gpu_import(g, h, name, 0, 0, &m2);
	result(!err && m2 == m, "xproc_cached_reimport", "err %d, %p vs %p", err, (void *)m2, (void *)m);
	printf("     (cached re-import %.2f us)\n", (now_s() - t0) * 1e6);
	if (!err)
		nvb_gpu_unmap(m2);

	exp = malloc(BUFSZ);
	scratch = malloc(BUFSZ);
	fill_random(exp, BUFSZ, 42);
	nvb_gpu_alloc(g, D1, BUFSZ, 0, &loc);
	for (k = 0; k < 4; k++)
		cu.cuStreamCreate((CUstream *)&st[k], CU_STREAM_NON_BLOCKING);

	/* read: peer -> local, every size x offset x method, poisoned dest */
	for (mode = 0; mode < 3; mode++) {
		static const uint32_t fl[] = { NVB_GPU_COPY_CE, NVB_GPU_COPY_SM,
			NVB_GPU_COPY_CE | NVB_GPU_COPY_SM | NVB_GPU_COPY_SM_PCT(30) };
		static const char *nm[] = { "xproc_read_ce", "xproc_read_sm", "xproc_read_hybrid" };

		ok = 1;
		for (k = 0; ok && k < (int)(sizeof(sizes) / sizeof(sizes[0])); k++)
			for (o = 0; ok && o < 4; o++) {
				size_t n = sizes[k], so = offs[o], dofs = offs[(o + 1) % 4];

				cu.cuMemsetD8Async(nvb_gpu_buf_ptr(loc), 0xa5, BUFSZ, (CUstream)st[0]);
				err = nvb_gpu_copy(g, nvb_gpu_buf_ptr(loc) + dofs, nvb_gpu_map_ptr(m) + so,
						   n, st, 4, fl[mode]);
				cu.cuStreamSynchronize((CUstream)st[0]);
				if (err) {
					ok = 0;
					result(0, nm[mode], "copy: %s", nvb_gpu_last_error());
					break;
				}
				/* the poison around the copy must be intact, the copy exact */
				{
					uint8_t *want = malloc(n + dofs + 64);

					memset(want, 0xa5, n + dofs + 64);
					memcpy(want + dofs, exp + so, n);
					if (!check_dev(nvb_gpu_buf_ptr(loc), want, n + dofs + 64, scratch, &bad)) {
						ok = 0;
						result(0, nm[mode], "size %zu src+%zu dst+%zu: byte %zu differs",
						       n, so, dofs, bad);
					}
					free(want);
				}
			}
		if (ok)
			result(1, nm[mode], NULL);
	}

	/*
	 * scattered blocks: random lists, every method; the last with
	 * NVB_GPU_OPEN_SM_YIELD (another stream, joined by events): the
	 * poisoning before must land first, and a copy of the result queued
	 * after it on the caller's stream must see the blocks
	 */
	for (mode = 0; mode < 5; mode++) {
		static const uint32_t fl[] = { NVB_GPU_COPY_SM, NVB_GPU_COPY_BATCH, NVB_GPU_COPY_LOOP, 0,
					       NVB_GPU_COPY_SM };
		static const char *nm[] = { "xproc_blocks_sm", "xproc_blocks_batch",
			"xproc_blocks_loop", "xproc_blocks_auto", "xproc_blocks_sm_yield" };
		struct nvb_gpu_opts yo = { .sz = sizeof(yo), .flags = NVB_GPU_OPEN_SM_YIELD };
		struct nvb_gpu *gy = NULL;
		CUdeviceptr after = 0;
		struct nvb_gpu_block bl[300];
		uint8_t *want = malloc(BUFSZ);
		uint64_t x = 1234 + (uint64_t)mode;
		size_t i, dpos = 0;

		memset(want, 0x5a, BUFSZ);
		for (i = 0; i < 300; i++) {
			size_t len, src;

			x = x * 6364136223846793005ull + 1442695040888963407ull;
			len = i % 7 == 0 ? (x >> 33) % (600 * 1024) + 1 : (x >> 40) % 70000 + 1;
			src = (x >> 20) % (BUFSZ - len);
			if (dpos + len + 3 > BUFSZ)
				break;
			bl[i].src = nvb_gpu_map_ptr(m) + src;
			bl[i].dst = nvb_gpu_buf_ptr(loc) + dpos;
			bl[i].len = len;
			memcpy(want + dpos, exp + src, len);
			dpos += len + (i % 3);	/* some unaligned destinations and gaps */
		}
		if (mode == 4 && (nvb_gpu_open(&yo, &gy) || cu.cuMemAlloc(&after, BUFSZ))) {
			result(0, nm[mode], "setup: %s", nvb_gpu_last_error());
			if (gy)
				nvb_gpu_close(gy);
			free(want);
			continue;
		}
		cu.cuMemsetD8Async(nvb_gpu_buf_ptr(loc), 0x5a, BUFSZ, (CUstream)st[0]);
		err = nvb_gpu_copy_blocks(gy ? gy : g, bl, i, st[0], fl[mode], 0, 0);
		if (!err && after)
			cu.cuMemcpyDtoDAsync(after, nvb_gpu_buf_ptr(loc), BUFSZ, (CUstream)st[0]);
		cu.cuStreamSynchronize((CUstream)st[0]);
		if (err == -EOPNOTSUPP)	/* not counted either way */
			printf("skip %s: not supported here: %s\n", nm[mode], nvb_gpu_last_error());
		else if (err)
			result(0, nm[mode], "%s", nvb_gpu_last_error());
		else if (after && !check_dev(after, want, BUFSZ, scratch, &bad))
			result(0, nm[mode], "the copy queued after the blocks: byte %zu differs", bad);
		else
			result(check_dev(nvb_gpu_buf_ptr(loc), want, BUFSZ, scratch, &bad), nm[mode],
			       "byte %zu differs", bad);
		if (after)
			cu.cuMemFree(after);
		if (gy)
			nvb_gpu_close(gy);
		free(want);
	}

	/* write into the peer's buffer and let the exporter verify it */
	{
		uint8_t *pat = malloc(32 * MiB);

		fill_random(pat, 32 * MiB, 77);
		cu.cuMemcpyHtoD(nvb_gpu_buf_ptr(loc), pat, 32 * MiB);
		err = nvb_gpu_copy(g, nvb_gpu_map_ptr(m) + 32 * MiB, nvb_gpu_buf_ptr(loc), 32 * MiB,
				   st, 4, NVB_GPU_COPY_CE);
		cu.cuStreamSynchronize((CUstream)st[0]);
		result(!err && cmd(cw, ar, 'v') == 'y', "xproc_write_verified_by_exporter", "err %d", err);
		free(pat);
	}

	/*
	 * put + signal: the flag must appear after the data.  A checker stream
	 * waits for the flag and then snapshots the data, so a flag that got
	 * ahead of its data leaves a stale snapshot.
	 */
	{
		uint64_t flag = nvb_gpu_buf_ptr(loc) + BUFSZ - 64;
		uint64_t snap = nvb_gpu_buf_ptr(loc) + BUFSZ / 2;
		uint32_t v = 0;

		cu.cuMemsetD8Async(nvb_gpu_buf_ptr(loc), 0, BUFSZ, (CUstream)st[0]);
		cu.cuStreamSynchronize((CUstream)st[0]);
		err = nvb_gpu_wait(g, st[1], flag, 7);
		cu.cuMemcpyDtoDAsync(snap, nvb_gpu_buf_ptr(loc), 4096, (CUstream)st[1]);
		if (!err)
			err = nvb_gpu_put_signal(g, nvb_gpu_buf_ptr(loc), nvb_gpu_map_ptr(m), 4096,
						 st[0], flag, 7);
		cu.cuStreamSynchronize((CUstream)st[0]);
		cu.cuStreamSynchronize((CUstream)st[1]);
		cu.cuMemcpyDtoH(&v, flag, 4);
		result(!err && v == 7 && check_dev(snap, exp, 4096, scratch, &bad),
		       "put_signal_flag_after_data", "err %d v %u, snapshot byte %zu", err, v, bad);
	}

	if (nvb_gpu_has_kernel(g))
		t_proxy(m, loc, exp, scratch, st);

	for (k = 0; k < 4; k++)
		cu.cuStreamDestroy((CUstream)st[k]);
	nvb_gpu_free(loc);
	free(exp);
	free(scratch);
	nvb_gpu_unmap(m);
out:
	close(cw);
	close(ar);
	waitpid(pid, NULL, 0);
}


/*
 * The persistent proxy: gets (peer -> local) and puts (local -> peer) of
 * many sizes and offsets in one stream of ops, a wait gate, flag order, and
 * a stop that must end a wait nobody will ever satisfy.  Nothing here calls
 * cuCtxSynchronize while the proxy runs.
 */
static void t_proxy(struct nvb_gpu_map *m, struct nvb_gpu_buf *loc, const uint8_t *exp,
		    uint8_t *scratch, void **st)
{
	static const size_t sizes[] = { 1, 7, 4096, 4097, 65536 + 3, 300000, MiB - 1, 5 * MiB + 5 };
	struct nvb_gpu_proxy *p = NULL;
	struct nvb_gpu_put op;
	uint64_t lp = nvb_gpu_buf_ptr(loc), rp = nvb_gpu_map_ptr(m), t_gate = 0, t_last = 0;
	uint64_t flags = lp + BUFSZ - 4096;	/* flag words, outside every data range */
	uint8_t *want = malloc(BUFSZ), *pat = malloc(8 * MiB);
	size_t k, dpos = 0, bad = 0;
	uint32_t fv[3] = { 0, 0, 0 };
	int err, ok;
	double t0;

	fill_random(pat, 8 * MiB, 91);
	memset(want, 0xa5, BUFSZ);
	cu.cuMemsetD8Async(lp, 0xa5, BUFSZ, (CUstream)st[0]);
	cu.cuMemsetD32Async(flags, 0, 16, (CUstream)st[0]);
	cu.cuStreamSynchronize((CUstream)st[0]);
	err = nvb_gpu_proxy_start(g, D1, 0, 0, &p);
	result(!err, "proxy_start", "%s", nvb_gpu_last_error());
	if (err)
		goto out;
	/* gets: peer -> local, odd sizes and offsets, random source data */
	memset(&op, 0, sizeof(op));
	for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t so = (k * 4099) % 8192, pad = k % 3;

		op.dst = lp + dpos + pad;
		op.src = rp + so;
		op.len = sizes[k];
		memcpy(want + dpos + pad, exp + so, sizes[k]);
		err = nvb_gpu_proxy_post(p, &op, &t_last);
		if (err)
			break;
		dpos += pad + sizes[k] + 4096;
	}
	if (!err)
		err = nvb_gpu_proxy_sync(p, t_last, 10000000000LL);
	result(!err, "proxy_gets_complete", "%d %s", err, nvb_gpu_last_error());
	/* puts: local -> peer [40 MiB, 48 MiB), then read back below */
	cu.cuMemcpyHtoD(lp + 48 * MiB, pat, 8 * MiB);
	memcpy(want + 48 * MiB, pat, 8 * MiB);
	for (k = 0, err = 0; !err && k < 200; k++) {
		size_t off = (k * 40961) % (8 * MiB - 70000), len = (k * 7919) % 65536 + 1;

		if (k == 199) {		/* one big one over the lot */
			off = 0;
			len = 8 * MiB;
		}
		memset(&op, 0, sizeof(op));
		op.dst = rp + 40 * MiB + off;
		op.src = lp + 48 * MiB + off;
		op.len = len;
		op.flag = flags;	/* flag order: the last value wins */
		op.flag_val = (uint32_t)k + 1;
		err = nvb_gpu_proxy_post(p, &op, &t_last);
	}
	if (!err)
		err = nvb_gpu_proxy_sync(p, t_last, 10000000000LL);
	result(!err, "proxy_puts_complete", "%d %s", err, nvb_gpu_last_error());
	/* a gated op must not run before its flag */
	memset(&op, 0, sizeof(op));
	op.dst = lp + 56 * MiB;
	op.src = rp + 8192;
	op.len = 4096;
	op.wait_flag = flags + 4;
	op.wait_val = 5;
	op.flag = flags + 8;
	op.flag_val = 9;
	err = nvb_gpu_proxy_post(p, &op, &t_gate);
	memcpy(want + 56 * MiB, exp + 8192, 4096);
	usleep(20000);
	ok = !err && nvb_gpu_proxy_done(p) < t_gate;
	err = nvb_gpu_signal(g, st[1], flags + 4, 5);
	cu.cuStreamSynchronize((CUstream)st[1]);
	if (!err)
		err = nvb_gpu_proxy_sync(p, t_gate, 5000000000LL);
	result(ok && !err, "proxy_wait_gate", "held %d, err %d %s", ok, err, nvb_gpu_last_error());
	/* a wait nobody satisfies: stop must still end the kernel, quickly */
	memset(&op, 0, sizeof(op));
	op.wait_flag = flags + 12;
	op.wait_val = 1;
	op.dst = lp + 60 * MiB;
	op.src = rp;
	op.len = 4096;
	nvb_gpu_proxy_post(p, &op, &t_last);
	t0 = now_s();
	err = nvb_gpu_proxy_stop(p, 5000000000LL);
	result(!err && now_s() - t0 < 2.0, "proxy_stop_ends_pending_wait", "err %d after %.3f s (%s)",
	       err, now_s() - t0, nvb_gpu_last_error());
	p = NULL;
	/* verify after the kernel is gone */
	cu.cuCtxSynchronize();
	result(check_dev(lp, want, BUFSZ - 4096, scratch, &bad), "proxy_data_exact",
	       "byte %zu differs (want %#x)", bad, want[bad]);
	cu.cuMemcpyDtoH(fv, flags, sizeof(fv));
	result(fv[0] == 200 && fv[2] == 9, "proxy_flags_in_order", "flags %u %u %u", fv[0], fv[1], fv[2]);
	result(check_dev(rp + 40 * MiB, pat, 8 * MiB, scratch, &bad), "proxy_puts_exact",
	       "byte %zu differs", bad);
out:
	if (p)
		nvb_gpu_proxy_stop(p, 5000000000LL);
	free(want);
	free(pat);
}

/* Revocation: unpublish (and SIGKILL) while a stream waits and copies run. */
static void t_revoke(struct nvb *h, int kill_it)
{
	const char *tn = kill_it ? "revoke_sigkill_while_copying" : "revoke_unpublish_releases_waiter";
	struct nvb_gpu_map *m = NULL;
	struct nvb_gpu_buf *loc = NULL;
	CUstream sw, sc;
	struct nvb_gpu_proxy *px = NULL;
	uint64_t pticket = 0;
	char name[64], ch;
	int cw, ar, err, k, seen = 0;
	uint32_t v = 0;
	pid_t pid;
	double t0;

	snprintf(name, sizeof(name), "gputest.%s.r%d", tag, kill_it);
	pid = spawn_exporter(name, &cw, &ar, 1);
	if (pid < 0 || read(ar, &ch, 1) != 1) {
		result(0, tn, "exporter did not start");
		return;
	}
	nvb_gpu_set_device(g, D1);
	err = nvb_gpu_import(g, h, name, 5000000000LL, 0, &m);
	if (err || nvb_gpu_alloc(g, D1, BUFSZ, 0, &loc)) {
		result(0, tn, "setup: %s", nvb_gpu_last_error());
		goto out;
	}
	cu.cuStreamCreate(&sw, CU_STREAM_NON_BLOCKING);
	cu.cuStreamCreate(&sc, CU_STREAM_NON_BLOCKING);
	cu.cuMemsetD32Async(nvb_gpu_buf_ptr(loc), 0, 64, sw);
	cu.cuStreamSynchronize(sw);
	/* a stream waiting for a flag the (soon dead) peer would have written */
	err = nvb_gpu_wait_abortable(g, sw, nvb_gpu_buf_ptr(loc), 1, m);
	if (err)
		fprintf(stderr, "     [wait_abortable: %s]\n", nvb_gpu_last_error());
	/* a proxy op waiting for the same peer */
	if (nvb_gpu_has_kernel(g) && !nvb_gpu_proxy_start(g, D1, 8, 0, &px)) {
		struct nvb_gpu_put op;

		memset(&op, 0, sizeof(op));
		op.wait_flag = nvb_gpu_buf_ptr(loc) + 64;
		op.wait_val = 1;
		op.wait_peer = m;
		op.dst = nvb_gpu_buf_ptr(loc) + 4096;
		op.src = nvb_gpu_map_ptr(m);
		op.len = 4096;
		op.flag = nvb_gpu_buf_ptr(loc) + 128;
		op.flag_val = 3;
		if (nvb_gpu_proxy_post(px, &op, &pticket))
			fprintf(stderr, "     [proxy post: %s]\n", nvb_gpu_last_error());
	}
	/* and copies from the peer's memory in flight */
	for (k = 0; k < 50; k++)
		cu.cuMemcpyDtoDAsync(nvb_gpu_buf_ptr(loc) + MiB, nvb_gpu_map_ptr(m), BUFSZ - MiB, sc);
	fprintf(stderr, "     [%s: peer %s]\n", tn, kill_it ? "killed" : "unpublishing");
	if (kill_it)
		kill(pid, SIGKILL);
	else
		cmd(cw, ar, 'u');
	t0 = now_s();
	while (now_s() - t0 < 10 && !nvb_gpu_map_revoked(m)) {
		if (nvb_gpu_poll_events(g, h) < 0)
			break;
		if (!nvb_gpu_map_revoked(m)) {	/* block a little on the event fd */
			struct pollfd p = { nvb_event_fd(h), POLLIN, 0 };

			poll(&p, 1, 100);
		}
	}
	seen = nvb_gpu_map_revoked(m);
	fprintf(stderr, "     [%s: revoked seen %d after %.3f s]\n", tn, seen, now_s() - t0);
	/* neither stream may hang */
	while (now_s() - t0 < 20 && (cu.cuStreamQuery(sw) == CUDA_ERROR_NOT_READY ||
				     cu.cuStreamQuery(sc) == CUDA_ERROR_NOT_READY))
		usleep(1000);
	k = cu.cuStreamQuery(sw) == CUDA_SUCCESS && cu.cuStreamQuery(sc) == CUDA_SUCCESS;
	fprintf(stderr, "     [%s: wait stream %d, copy stream %d after %.3f s]\n", tn,
		cu.cuStreamQuery(sw), cu.cuStreamQuery(sc), now_s() - t0);
	cu.cuMemcpyDtoH(&v, nvb_gpu_buf_ptr(loc), 4);
	fprintf(stderr, "     [%s: flag %#x]\n", tn, v);
	result(seen && k && v == NVB_GPU_FLAG_ABORTED, tn,
	       "revoked %d, streams done %d, flag %#x (%.1f s)", seen, k, v, now_s() - t0);
	if (px) {
		uint32_t pf[2] = { 0, 0 };

		err = nvb_gpu_proxy_sync(px, pticket, 5000000000LL);
		k = (int)nvb_gpu_proxy_aborted(px);
		if (nvb_gpu_proxy_stop(px, 5000000000LL))
			err = err ? err : -ETIMEDOUT;
		cu.cuMemcpyDtoH(pf, nvb_gpu_buf_ptr(loc) + 64, 4);
		cu.cuMemcpyDtoH(pf + 1, nvb_gpu_buf_ptr(loc) + 128, 4);
		result(!err && k == 1 && pf[0] == NVB_GPU_FLAG_ABORTED && pf[1] == 0,
		       kill_it ? "proxy_wait_aborted_by_kill" : "proxy_wait_aborted_by_unpublish",
		       "err %d aborted %d wait flag %#x op flag %u", err, k, pf[0], pf[1]);
	}
	{
		struct nvb_gpu_map *again = NULL;

		/* a stale entry: the name is gone */
		err = nvb_gpu_import(g, h, name, 0, 0, &again);
		result(err == -ENOENT && !again, kill_it ? "stale_entry_after_kill" : "stale_entry_after_unpublish",
		       "err %d", err);
	}
	fprintf(stderr, "     [%s: cleanup]\n", tn);
	cu.cuStreamDestroy(sw);
	cu.cuStreamDestroy(sc);
out:
	if (m)
		nvb_gpu_unmap(m);
	fprintf(stderr, "     [%s: unmapped]\n", tn);
	if (loc)
		nvb_gpu_free(loc);
	fprintf(stderr, "     [%s: freed]\n", tn);
	close(cw);
	close(ar);
	if (!kill_it)
		kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}


/*
 * nvb_gpu_copy_signal: a stream that waits for flag k and then snapshots
 * transfer k's destination must see all of transfer k (the flag may never
 * run ahead of its copy), for large transfers alternating on two streams.
 */
static void t_copy_signal(int peer)
{
	const char *tn = peer ? "copy_signal_flag_after_copy_peer" : "copy_signal_flag_after_copy";
	int wd = peer ? 0 : D1;	/* device of the destination, flag and waiter */
	const size_t part = 64 * MiB;
	const unsigned int nparts = 4, rounds = 3;
	struct nvb_gpu_buf *src = NULL, *dst = NULL, *snap = NULL, *fl = NULL;
	uint64_t *host = NULL, x = 0x1234567;
	uint8_t *back = NULL;
	void *st[3] = { NULL, NULL, NULL };
	CUstream sc = NULL;
	unsigned int k, r;
	size_t i, bad = 0;
	int err = 0, ok = 1;

	if (nvb_gpu_alloc(g, D1, part * nparts, 0, &src) || nvb_gpu_alloc(g, wd, part * nparts, 0, &dst) ||
	    nvb_gpu_alloc(g, wd, part * nparts, 0, &snap) || nvb_gpu_alloc(g, wd, 4096, 0, &fl)) {
		result(0, tn, "alloc: %s", nvb_gpu_last_error());
		goto out;
	}
	nvb_gpu_set_device(g, D1);
	host = malloc(part * nparts);
	back = malloc(part);
	for (i = 0; i < part * nparts / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		host[i] = x;
	}
	cu.cuMemcpyHtoD(nvb_gpu_buf_ptr(src), host, part * nparts);
	for (k = 0; k < 3; k++)
		cu.cuStreamCreate((CUstream *)&st[k], CU_STREAM_NON_BLOCKING);
	nvb_gpu_set_device(g, wd);
	cu.cuStreamCreate(&sc, CU_STREAM_NON_BLOCKING);
	for (r = 0; ok && r < rounds; r++) {
		nvb_gpu_set_device(g, wd);
		cu.cuMemsetD8Async(nvb_gpu_buf_ptr(dst), 0x5a, part * nparts, sc);
		cu.cuMemsetD8Async(nvb_gpu_buf_ptr(snap), 0xa5, part * nparts, sc);
		cu.cuMemsetD32Async(nvb_gpu_buf_ptr(fl), 0, 1, sc);
		cu.cuStreamSynchronize(sc);
		/* the checker first: it waits, then snapshots */
		for (k = 1; k <= nparts; k++) {
			nvb_gpu_wait(g, sc, nvb_gpu_buf_ptr(fl), k);
			cu.cuMemcpyDtoDAsync(nvb_gpu_buf_ptr(snap) + (k - 1) * part,
					     nvb_gpu_buf_ptr(dst) + (k - 1) * part, part, sc);
		}
		nvb_gpu_set_device(g, D1);	/* the copies run on GPU D1 */
		for (k = 1; k <= nparts && !err; k++)
			err = nvb_gpu_copy_signal(g, nvb_gpu_buf_ptr(dst) + (k - 1) * part,
						  nvb_gpu_buf_ptr(src) + (k - 1) * part, part, st, 3,
						  nvb_gpu_buf_ptr(fl), k);
		cu.cuStreamSynchronize(sc);
		for (k = 0; k < 3; k++)
			cu.cuStreamSynchronize((CUstream)st[k]);
		if (err) {
			ok = 0;
			break;
		}
		for (k = 0; ok && k < nparts; k++) {
			cu.cuMemcpyDtoH(back, nvb_gpu_buf_ptr(snap) + k * part, part);
			for (i = 0; i < part; i++)
				if (back[i] != ((uint8_t *)host)[k * part + i]) {
					ok = 0;
					bad = k * part + i;
					break;
				}
		}
	}
	result(ok && !err, tn, "err %d (%s), round %u: snapshot byte %zu stale",
	       err, err ? nvb_gpu_last_error() : "", r, bad);
out:
	for (k = 0; k < 3; k++)
		if (st[k])
			cu.cuStreamDestroy((CUstream)st[k]);
	if (sc)
		cu.cuStreamDestroy(sc);
	nvb_gpu_free(src);
	nvb_gpu_free(dst);
	nvb_gpu_free(snap);
	nvb_gpu_free(fl);
	free(host);
	free(back);
}

static void t_blob_only(struct nvb *h)
{
	struct nvb_gpu_map *m = NULL;
	char name[64], junk[200];
	int err;

	snprintf(name, sizeof(name), "gputest.%s.blob", tag);
	memset(junk, 0x3c, sizeof(junk));
	if (nvb_publish(h, name, -1, junk, sizeof(junk), NULL, NULL)) {
		result(0, "error_import_blob_only_entry", "publish: %s", nvb_last_error(h));
		return;
	}
	err = nvb_gpu_import(g, h, name, 0, 0, &m);
	result(err < 0 && !m, "error_import_blob_only_entry", "err %d", err);
	nvb_unpublish(h, 0, name);
}

static void t_leaks(struct nvb *h)
{
	size_t f0, f1, e0, e1, t;
	int fds0, fds1, i;

	/* GPU 1 runs this side; GPU 0 holds the exporters' memory, alive while mapped */
	nvb_gpu_set_device(g, D1);
	cu.cuCtxSynchronize();
	nvb_gpu_cache_trim(g);
	nvb_gpu_mem_info(g, &f0, &t);
	nvb_gpu_set_device(g, 0);
	nvb_gpu_mem_info(g, &e0, &t);
	fds0 = fd_count();
	for (i = 0; i < 3; i++) {
		t_cross_process(h);
		nvb_gpu_cache_trim(g);
	}
	nvb_gpu_set_device(g, D1);
	cu.cuCtxSynchronize();
	nvb_gpu_mem_info(g, &f1, &t);
	nvb_gpu_set_device(g, 0);
	nvb_gpu_mem_info(g, &e1, &t);
	fds1 = fd_count();
	result(f1 + 4 * MiB >= f0 && e1 + 4 * MiB >= e0 && fds1 == fds0, "no_leaks_mem_and_fds",
	       "GPU 1 free %zu -> %zu MiB, GPU 0 free %zu -> %zu MiB, fds %d -> %d",
	       f0 >> 20, f1 >> 20, e0 >> 20, e1 >> 20, fds0, fds1);
}

/*
 * More imports through one handle than it may hold watches (64 by default):
 * the library falls back to one scope-wide watch, every mapping reads back
 * its own random data, and a revocation of an entry past the limit still
 * reaches the importer.
 */
#define MANY 80
static void t_many_imports(struct nvb *h)
{
	static struct nvb_gpu_buf *b[MANY];
	static struct nvb_gpu_map *m[MANY];
	const size_t sz = 2 * MiB;
	uint8_t *exp = malloc(sz), *scratch = malloc(sz);
	struct nvb *h2 = open_nvb();
	int i, nimp = 0, good = 0, err = 0;
	size_t bad_at = 0;
	char name[64];

	if (!exp || !scratch || !h2) {
		result(0, "many_imports_past_watch_limit", "setup");
		goto out;
	}
	nvb_gpu_set_device(g, 0);
	for (i = 0; i < MANY; i++) {
		snprintf(name, sizeof(name), "gputest.%s.many%d", tag, i);
		fill_random(exp, sz, 7000 + (uint64_t)i);
		err = nvb_gpu_alloc(g, 0, sz, 0, &b[i]);
		if (!err && cu.cuMemcpyHtoD(nvb_gpu_buf_ptr(b[i]), exp, sz))
			err = -EIO;
		if (!err)
			err = nvb_gpu_publish(g, h, name, b[i], NVB_ACCESS_OWNER, NULL);
		if (err) {
			result(0, "many_imports_past_watch_limit", "publish %d: %s", i,
			       nvb_gpu_last_error());
			goto out;
		}
	}
	nvb_gpu_set_device(g, D1);
	for (i = 0; i < MANY; i++) {
		snprintf(name, sizeof(name), "gputest.%s.many%d", tag, i);
		err = nvb_gpu_import(g, h2, name, 0, 0, &m[i]);
		if (err)
			break;
		nimp++;
		fill_random(exp, sz, 7000 + (uint64_t)i);
		good += check_dev(nvb_gpu_map_ptr(m[i]), exp, sz, scratch, &bad_at);
	}
	result(nimp == MANY && good == MANY, "many_imports_past_watch_limit",
	       "%d imported (err %d: %s), %d read back right", nimp, err,
	       err ? nvb_gpu_last_error() : "", good);
	if (nimp == MANY) {
		int k;

		snprintf(name, sizeof(name), "gputest.%s.many%d", tag, MANY - 1);
		nvb_unpublish(h, 0, name);
		for (k = 0; k < 200 && !nvb_gpu_map_revoked(m[MANY - 1]); k++) {
			nvb_gpu_poll_events(g, h2);
			usleep(5000);
		}
		result(nvb_gpu_map_revoked(m[MANY - 1]) && !nvb_gpu_map_revoked(m[0]),
		       "many_imports_revocation_past_watch_limit", "revoked: last %d, first %d",
		       nvb_gpu_map_revoked(m[MANY - 1]), nvb_gpu_map_revoked(m[0]));
	}
out:
	for (i = 0; i < MANY; i++) {
		if (m[i])
			nvb_gpu_unmap(m[i]);
		m[i] = NULL;
	}
	for (i = 0; i < MANY; i++) {
		if (b[i]) {
			snprintf(name, sizeof(name), "gputest.%s.many%d", tag, i);
			nvb_unpublish(h, 0, name);
			nvb_gpu_free(b[i]);
		}
		b[i] = NULL;
	}
	if (h2)
		nvb_close(h2);
	nvb_gpu_cache_trim(g);
	free(exp);
	free(scratch);
}

/* ---------------------------------------------------------------- coexistence */

/*
 * nvb_gpu_open / nvb_gpu_proxy_start / a post that launches / nvb_gpu_close
 * leave the caller's current context as found: none at all, then the
 * primary context of GPU D1.
 */
static void t_context_as_found(void)
{
	struct nvb_gpu *g2 = NULL;
	struct nvb_gpu_proxy *p = NULL;
	struct nvb_gpu_buf *b = NULL;
	CUcontext want[2] = { NULL, NULL }, c[4];
	char why[200];
	int k, i, ok, err;

	nvb_gpu_set_device(g, D1);
	cu.cuCtxGetCurrent(&want[1]);
	for (k = 0; k < 2; k++) {
		memset(c, 0xff, sizeof(c));
		cu.cuCtxSetCurrent(want[k]);
		err = nvb_gpu_open(NULL, &g2);
		cu.cuCtxGetCurrent(&c[0]);
		if (!err)
			err = nvb_gpu_alloc(g2, 0, 2 * MiB, 0, &b);
		if (!err && nvb_gpu_has_kernel(g2)) {
			err = nvb_gpu_proxy_start(g2, 0, 0, 0, &p);
			cu.cuCtxGetCurrent(&c[1]);
			if (!err)	/* launches the kernel */
				err = nvb_gpu_proxy_put(p, nvb_gpu_buf_ptr(b), nvb_gpu_buf_ptr(b) + MiB,
							MiB, 0, 0);
			cu.cuCtxGetCurrent(&c[2]);
			if (!err)
				err = nvb_gpu_proxy_sync(p, 0, 5000000000LL);
			if (p)
				nvb_gpu_proxy_stop(p, 5000000000LL);
			p = NULL;
		} else {
			c[1] = c[2] = want[k];
		}
		if (b)
			nvb_gpu_free(b);
		b = NULL;
		nvb_gpu_close(g2);
		g2 = NULL;
		cu.cuCtxGetCurrent(&c[3]);
		for (i = 0, ok = !err; i < 4; i++)
			ok &= c[i] == want[k];
		snprintf(why, sizeof(why), "err %d (%s); want %p, after open %p, proxy_start %p, "
			 "post %p, close %p", err, err ? nvb_gpu_last_error() : "", (void *)want[k],
			 (void *)c[0], (void *)c[1], (void *)c[2], (void *)c[3]);
		result(ok, k ? "context_as_found_primary" : "context_as_found_none", "%s", why);
	}
	nvb_gpu_set_device(g, 0);
}

/*
 * The coexistence child (exec'd: CUDA does not survive fork).  With every
 * kind of nvbridge GPU object alive (handle, published buffer, a mapping of
 * it, a proxy that served puts and holds a wait nobody satisfies, copies
 * with flags queued), the application's device-wide calls must return:
 * cuCtxSynchronize, cuMemAlloc + cuMemFree, nvb_gpu_free of another buffer.
 * Writes "R <sync ms> <free ms> <launches>" to fd out.
 */
static int coexist_main(int persistent, int out)
{
	struct nvb_gpu *cg;
	struct nvb_gpu_buf *b, *b2;
	struct nvb_gpu_map *m;
	struct nvb_gpu_proxy *p;
	struct nvb_gpu_block blk[64];
	struct nvb_gpu_put op;
	struct nvb *h;
	CUstream st;
	CUdeviceptr x;
	char msg[256], name[64];
	uint64_t lp, rp, t = 0;
	double t0, t_sync, t_free;
	int i;

	if (nvb_cuda_load(&cu, NULL, msg, sizeof(msg)) || nvb_gpu_open(NULL, &cg) ||
	    nvb_gpu_set_device(cg, 0) || nvb_gpu_alloc(cg, 0, 64 * MiB, 0, &b) ||
	    nvb_gpu_alloc(cg, 0, 2 * MiB, 0, &b2) || cu.cuStreamCreate(&st, CU_STREAM_NON_BLOCKING))
		return 2;
	h = open_nvb();
	snprintf(name, sizeof(name), "gputest.%d.co", (int)getpid());
	if (!h || nvb_gpu_publish(cg, h, name, b, NVB_ACCESS_OWNER, NULL) ||
	    nvb_gpu_import(cg, h, name, 1000000000LL, 0, &m))
		return 3;
	lp = nvb_gpu_buf_ptr(b);
	rp = nvb_gpu_map_ptr(m);
	cu.cuMemsetD32Async(lp, 0, 1024, st);
	cu.cuStreamSynchronize(st);
	if (nvb_gpu_proxy_start(cg, 0, 0, persistent ? NVB_GPU_PROXY_PERSISTENT : 0, &p))
		return 4;
	for (i = 0; i < 100; i++)
		if (nvb_gpu_proxy_put(p, rp + 32 * MiB + (uint64_t)i * 65536, lp + MiB, 65536,
				      lp + 64, (uint32_t)i + 1))
			return 5;
	if (nvb_gpu_proxy_sync(p, 0, 10000000000LL))
		return 6;
	memset(&op, 0, sizeof(op));	/* a wait nobody will satisfy */
	op.wait_flag = lp + 128;
	op.wait_val = 1;
	op.dst = rp + 16 * MiB;
	op.src = lp + MiB;
	op.len = 4096;
	if (nvb_gpu_proxy_post(p, &op, &t))
		return 7;
	for (i = 0; i < 64; i++) {
		blk[i].dst = rp + 8 * MiB + (uint64_t)i * 65536;
		blk[i].src = lp + 2 * MiB + (uint64_t)i * 65536;
		blk[i].len = 65536;
	}
	if (nvb_gpu_copy_signal(cg, rp + 20 * MiB, lp + MiB, MiB, (void **)&st, 1, lp + 192, 1) ||
	    nvb_gpu_copy_blocks(cg, blk, 64, st, 0, lp + 256, 1))
		return 8;
	usleep(5000);
	t0 = now_s();
	cu.cuCtxSynchronize();
	t_sync = now_s() - t0;
	t0 = now_s();
	if (cu.cuMemAlloc(&x, 64 * MiB) || cu.cuMemFree(x))
		return 9;
	nvb_gpu_free(b2);
	t_free = now_s() - t0;
	snprintf(msg, sizeof(msg), "R %.3f %.3f %llu\n", t_sync * 1e3, t_free * 1e3,
		 (unsigned long long)nvb_gpu_proxy_launches(p));
	if (write(out, msg, strlen(msg)) < 0)
		return 10;
	/* and everything goes away with the handle */
	nvb_gpu_unmap(m);
	nvb_gpu_close(cg);
	nvb_close(h);
	return 0;
}

/* Runs coexist_main in a child with a deadline; 1 and the figures if it answered. */
static int run_coexist(int persistent, double deadline_s, double *sync_ms, double *free_ms,
		       unsigned long long *launches, int *status)
{
	char arg[4], fd[16], buf[128] = "";
	int pp[2], n = 0;
	struct pollfd pf;
	double t0 = now_s();
	pid_t pid;

	if (pipe(pp))
		return 0;
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		close(pp[0]);
		snprintf(arg, sizeof(arg), "%d", persistent);
		snprintf(fd, sizeof(fd), "%d", pp[1]);
		execl("/proc/self/exe", "gputest", "--coexist", arg, fd, (char *)NULL);
		_exit(127);
	}
	close(pp[1]);
	pf.fd = pp[0];
	pf.events = POLLIN;
	while (n < (int)sizeof(buf) - 1 && now_s() - t0 < deadline_s) {
		ssize_t r;

		if (poll(&pf, 1, 100) <= 0)
			continue;
		r = read(pp[0], buf + n, sizeof(buf) - 1 - (size_t)n);
		if (r <= 0)
			break;
		n += (int)r;
		if (strchr(buf, '\n'))
			break;
	}
	close(pp[0]);
	buf[n] = 0;
	if (!strchr(buf, '\n'))
		kill(pid, SIGKILL);
	waitpid(pid, status, 0);
	return sscanf(buf, "R %lf %lf %llu", sync_ms, free_ms, launches) == 3;
}

static void t_coexist(void)
{
	double s_ms = 0, f_ms = 0;
	unsigned long long l = 0;
	int st = 0, ok;

	if (!nvb_gpu_has_kernel(g)) {
		printf("skip sync_and_free_return_with_objects_alive: no SM kernel (proxy)\n");
		return;
	}
	ok = run_coexist(0, 20.0, &s_ms, &f_ms, &l, &st);
	result(ok && s_ms < 1000 && f_ms < 1000 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	       "sync_and_free_return_with_objects_alive",
	       "answered %d, cuCtxSynchronize %.3f ms, cuMemFree %.3f ms (bound 1000), exit %#x",
	       ok, s_ms, f_ms, st);
	printf("     (cuCtxSynchronize %.3f ms, cuMemAlloc+cuMemFree+nvb_gpu_free %.3f ms, "
	       "proxy launches %llu)\n", s_ms, f_ms, l);
	/* the same check must catch a proxy that stays: it is not vacuous */
	ok = run_coexist(1, 5.0, &s_ms, &f_ms, &l, &st);
	result(!ok, "deadline_catches_persistent_proxy",
	       "a persistent proxy with a pending wait let cuCtxSynchronize return (%.3f ms)", s_ms);
}

/*
 * The proxy leaves the GPU when idle and comes back on the next post; a
 * parked wait resumes when the flag arrives and the host syncs.
 */
static void t_proxy_idle(void)
{
	struct nvb_gpu_proxy *p = NULL;
	struct nvb_gpu_buf *b = NULL;
	struct nvb_gpu_put op;
	uint64_t lp, t;
	uint32_t v[2] = { 0, 0 };
	CUstream st = NULL;
	int err, run;
	unsigned long long l0, l1;

	if (!nvb_gpu_has_kernel(g)) {
		printf("skip proxy_exits_when_idle: no SM kernel (proxy)\n");
		return;
	}
	nvb_gpu_set_device(g, 0);
	if (nvb_gpu_alloc(g, 0, 4 * MiB, 0, &b) || cu.cuStreamCreate(&st, CU_STREAM_NON_BLOCKING) ||
	    nvb_gpu_proxy_start(g, 0, 0, NVB_GPU_PROXY_IDLE_US(200), &p)) {
		result(0, "proxy_exits_when_idle", "setup: %s", nvb_gpu_last_error());
		goto out;
	}
	lp = nvb_gpu_buf_ptr(b);
	cu.cuMemsetD32Async(lp, 0, 64, st);
	cu.cuStreamSynchronize(st);
	l0 = nvb_gpu_proxy_launches(p);
	err = nvb_gpu_proxy_put(p, lp + MiB, lp + 2 * MiB, MiB, lp, 1);
	if (!err)
		err = nvb_gpu_proxy_sync(p, 0, 5000000000LL);
	usleep(20000);	/* 100 x the idle time */
	/* the kernel is gone: a device-wide synchronize returns at once */
	run = cu.cuCtxSynchronize() == CUDA_SUCCESS;
	l1 = nvb_gpu_proxy_launches(p);
	result(!err && run && l0 == 0 && l1 >= 1, "proxy_exits_when_idle",
	       "err %d, launches %llu -> %llu", err, l0, l1);
	/* again: a new launch serves the next put */
	err = nvb_gpu_proxy_put(p, lp + MiB, lp + 2 * MiB, MiB, lp, 2);
	if (!err)
		err = nvb_gpu_proxy_sync(p, 0, 5000000000LL);
	result(!err && nvb_gpu_proxy_launches(p) > l1, "proxy_relaunches_on_post",
	       "err %d, launches %llu", err, (unsigned long long)nvb_gpu_proxy_launches(p));
	/* a wait that parks (the flag comes 20 ms later) still completes, in order */
	memset(&op, 0, sizeof(op));
	op.wait_flag = lp + 4;
	op.wait_val = 1;
	op.flag = lp + 8;
	op.flag_val = 7;
	err = nvb_gpu_proxy_post(p, &op, &t);
	usleep(20000);
	run = nvb_gpu_proxy_done(p) < t && cu.cuCtxSynchronize() == CUDA_SUCCESS;
	if (!err)
		err = nvb_gpu_signal(g, st, lp + 4, 1);
	if (!err)
		err = nvb_gpu_proxy_sync(p, t, 5000000000LL);
	cu.cuStreamSynchronize(st);
	cu.cuMemcpyDtoH(v, lp + 4, sizeof(v));
	result(!err && run && v[1] == 7, "proxy_parked_wait_resumes",
	       "err %d (%s), held+synced %d, flag %u", err, err ? nvb_gpu_last_error() : "", run, v[1]);
out:
	if (p)
		nvb_gpu_proxy_stop(p, 5000000000LL);
	if (st)
		cu.cuStreamDestroy(st);
	if (b)
		nvb_gpu_free(b);
}

/*
 * NVB_GPU_OPEN_SM_YIELD beside a CUDA graph capture (relaxed mode, as a
 * second thread's work would be): an SM copy on the capturing stream and
 * one on an ordinary stream, both through the same yielding context.  The
 * shared low-priority stream must not be drawn into the capture, or the
 * second copy fails (its fork waits on an event outside the capture) or
 * lands in the graph.  Then the graph replays the first copy.
 */
static void t_yield_beside_capture(void)
{
	CUresult (*begin)(CUstream, int), (*end)(CUstream, void **), (*gdestroy)(void *);
	CUresult (*ginst)(void **, void *, unsigned long long), (*glaunch)(void *, CUstream);
	CUresult (*gxdestroy)(void *);
	struct nvb_gpu_opts yo = { .sz = sizeof(yo), .flags = NVB_GPU_OPEN_SM_YIELD };
	struct nvb_gpu *gy = NULL;
	struct nvb_gpu_buf *b = NULL;
	uint8_t *exp = malloc(8 * MiB), *scratch = malloc(8 * MiB);
	void *graph = NULL, *exec = NULL;
	CUstream sa = NULL, sb = NULL;
	uint64_t base;
	size_t bad = 0;
	int e1 = -1, e2 = -1;
	CUresult cr = CUDA_ERROR_INVALID_VALUE;

	*(void **)&begin = dlsym(cu.lib, "cuStreamBeginCapture_v2");
	*(void **)&end = dlsym(cu.lib, "cuStreamEndCapture");
	*(void **)&gdestroy = dlsym(cu.lib, "cuGraphDestroy");
	*(void **)&ginst = dlsym(cu.lib, "cuGraphInstantiateWithFlags");
	*(void **)&glaunch = dlsym(cu.lib, "cuGraphLaunch");
	*(void **)&gxdestroy = dlsym(cu.lib, "cuGraphExecDestroy");
	if (!nvb_gpu_has_kernel(g)) {
		printf("skip yield_beside_capture: no SM kernel\n");
		goto out;
	}
	if (!exp || !scratch || !begin || !end || !gdestroy || !ginst || !glaunch || !gxdestroy ||
	    nvb_gpu_open(&yo, &gy) || nvb_gpu_alloc(g, 0, 8 * MiB, 0, &b) ||
	    cu.cuStreamCreate(&sa, CU_STREAM_NON_BLOCKING) ||
	    cu.cuStreamCreate(&sb, CU_STREAM_NON_BLOCKING)) {
		result(0, "yield_beside_capture", "setup: %s", nvb_gpu_last_error());
		goto out;
	}
	base = nvb_gpu_buf_ptr(b);
	fill_random(exp, 2 * MiB, 4242);
	fill_random(exp + 2 * MiB, 2 * MiB, 4343);
	cu.cuMemcpyHtoD(base, exp, 4 * MiB);		/* sources: [0, 4 MiB) */
	cu.cuMemsetD8Async(base + 4 * MiB, 0xa5, 4 * MiB, sa);	/* poisoned destinations */
	cu.cuStreamSynchronize(sa);
	if (begin(sa, 2 /* CU_STREAM_CAPTURE_MODE_RELAXED */)) {
		result(0, "yield_beside_capture", "cuStreamBeginCapture");
		goto out;
	}
	e1 = nvb_gpu_copy(gy, base + 4 * MiB, base, 2 * MiB, (void **)&sa, 1, NVB_GPU_COPY_SM);
	e2 = nvb_gpu_copy(gy, base + 6 * MiB, base + 2 * MiB, 2 * MiB, (void **)&sb, 1,
			  NVB_GPU_COPY_SM);
	cr = end(sa, &graph);
	cu.cuStreamSynchronize(sb);
	if (e1 || e2 || cr != CUDA_SUCCESS || !graph) {
		result(0, "yield_beside_capture", "copy in capture %d, beside it %d, capture: %s",
		       e1, e2, nvb_cuda_errname(&cu, cr));
		goto out;
	}
	if (!check_dev(base + 6 * MiB, exp + 2 * MiB, 2 * MiB, scratch, &bad)) {
		result(0, "yield_beside_capture", "the copy beside the capture: byte %zu", bad);
		goto out;
	}
	cr = ginst(&exec, graph, 0);
	if (cr == CUDA_SUCCESS)
		cr = glaunch(exec, sa);
	if (cr == CUDA_SUCCESS)
		cr = cu.cuStreamSynchronize(sa);
	result(cr == CUDA_SUCCESS && check_dev(base + 4 * MiB, exp, 2 * MiB, scratch, &bad),
	       "yield_beside_capture", "graph: %s, byte %zu", nvb_cuda_errname(&cu, cr), bad);
out:
	if (exec)
		gxdestroy(exec);
	if (graph)
		gdestroy(graph);
	if (sa)
		cu.cuStreamDestroy(sa);
	if (sb)
		cu.cuStreamDestroy(sb);
	if (b)
		nvb_gpu_free(b);
	if (gy)
		nvb_gpu_close(gy);
	free(exp);
	free(scratch);
}

/*
 * Review B: NVB_GPU_OPEN_SM_YIELD puts every SM copy of a device on ONE
 * library stream, forked from and joined to the caller's stream.  Two
 * independent application streams become ordered: a producer/consumer pair
 * that is correct without the flag (A waits for a flag that B writes after
 * its own copy; A's copy queued first) deadlocks on the GPU with it:
 *   yield stream: [wait A's fork] [A's gather] [join] [wait B's fork] [B's gather] ...
 *   A's fork waits for A's flag wait, the flag is written after B's join,
 *   B's gather waits behind A's gather.  The case asks for both streams
 * to be done within 3 s, first without the flag (control), then with it; a
 * hang is broken by writing the flag from a third stream.  Expected on
 * main: "yield_independent_streams_no_deadlock" FAILS.
 */
static void yield_pair(struct nvb_gpu *gg, const char *name)
{
	struct nvb_gpu_buf *b = NULL;
	CUstream a = NULL, bs = NULL, c = NULL;
	uint64_t p, flag;
	double t0;
	int err, done = 0;

	if (nvb_gpu_alloc(gg, 0, 16 * MiB, 0, &b) || cu.cuStreamCreate(&a, CU_STREAM_NON_BLOCKING) ||
	    cu.cuStreamCreate(&bs, CU_STREAM_NON_BLOCKING) ||
	    cu.cuStreamCreate(&c, CU_STREAM_NON_BLOCKING)) {
		result(0, name, "setup: %s", nvb_gpu_last_error());
		goto out;
	}
	p = nvb_gpu_buf_ptr(b);
	flag = p + 15 * MiB;
	cu.cuMemsetD32Async(flag, 0, 1, c);
	cu.cuStreamSynchronize(c);
	/* consumer A: waits for the producer's flag, then copies (queued first) */
	err = nvb_gpu_wait(gg, a, flag, 1);
	if (!err)
		err = nvb_gpu_copy(gg, p, p + 4 * MiB, 4 * MiB, (void *const *)&a, 1, NVB_GPU_COPY_SM);
	/* producer B: copies, then raises the flag */
	if (!err)
		err = nvb_gpu_copy(gg, p + 8 * MiB, p + 12 * MiB, 2 * MiB, (void *const *)&bs, 1,
				   NVB_GPU_COPY_SM);
	if (!err)
		err = nvb_gpu_signal(gg, bs, flag, 1);
	if (err) {
		result(0, name, "queue: %d %s", err, nvb_gpu_last_error());
		cu.cuStreamWriteValue32(c, flag, 1, 0);
		goto sync;
	}
	t0 = now_s();
	while (!(done = cu.cuStreamQuery(a) == CUDA_SUCCESS && cu.cuStreamQuery(bs) == CUDA_SUCCESS) &&
	       now_s() - t0 < 3)
		usleep(1000);
	if (!done)	/* break the cycle so that the process can go on */
		cu.cuStreamWriteValue32(c, flag, 1, 0);
	result(done, name, "streams A and B still busy after 3 s (B %s): B's copy waits "
	       "behind A's on the shared lowest-priority stream", cu.cuStreamQuery(bs) ==
	       CUDA_SUCCESS ? "done" : "busy");
sync:
	cu.cuStreamSynchronize(c);
	cu.cuStreamSynchronize(a);
	cu.cuStreamSynchronize(bs);
out:
	if (a)
		cu.cuStreamDestroy(a);
	if (bs)
		cu.cuStreamDestroy(bs);
	if (c)
		cu.cuStreamDestroy(c);
	if (b)
		nvb_gpu_free(b);
}

/*
 * Review B: with NVB_GPU_OPEN_SM_YIELD an SM copy queued on a stream being
 * captured (relaxed mode) pulls the library's shared yield stream into the
 * capture until it ends.  An eager SM copy on another, uncaptured stream in
 * that time (same thread here; another thread alike) forks onto the same
 * yield stream: its event wait crosses the capture boundary (an error that
 * invalidates the capture) or its kernel lands in the graph instead of
 * running.  Without the flag (control) both work.  Expected on main:
 * "yield_capture_isolated" FAILS.
 */
static void yield_capture(struct nvb_gpu *gg, const char *name)
{
	CUresult (*begin)(CUstream, int), (*end)(CUstream, void **), (*gdestroy)(void *);
	struct nvb_gpu_buf *b = NULL;
	uint8_t *src = malloc(2 * MiB), *got = malloc(2 * MiB);
	CUstream a = NULL, bs = NULL;
	void *graph = NULL;
	CUresult cr = CUDA_SUCCESS;
	uint64_t p;
	int e1 = -1, e2 = -1;

	*(void **)&begin = dlsym(cu.lib, "cuStreamBeginCapture_v2");
	*(void **)&end = dlsym(cu.lib, "cuStreamEndCapture");
	*(void **)&gdestroy = dlsym(cu.lib, "cuGraphDestroy");
	if (!src || !got || !begin || !end || !gdestroy || nvb_gpu_alloc(gg, 0, 16 * MiB, 0, &b) ||
	    cu.cuStreamCreate(&a, CU_STREAM_NON_BLOCKING) ||
	    cu.cuStreamCreate(&bs, CU_STREAM_NON_BLOCKING)) {
		result(0, name, "setup: %s", nvb_gpu_last_error());
		goto out;
	}
	p = nvb_gpu_buf_ptr(b);
	fill_random(src, 2 * MiB, 77);
	fill_random(got, 2 * MiB, 78);	/* poison */
	cu.cuMemcpyHtoD(p + 8 * MiB, src, 2 * MiB);
	cu.cuMemcpyHtoD(p + 12 * MiB, got, 2 * MiB);
	/* warm-up outside the capture: dev_ready() (module, events, the yield stream) is done */
	if (nvb_gpu_copy(gg, p, p + 4 * MiB, MiB, (void *const *)&bs, 1, NVB_GPU_COPY_SM)) {
		result(0, name, "warm-up copy: %s", nvb_gpu_last_error());
		goto out;
	}
	cu.cuCtxSynchronize();
	if (begin(a, 2 /* relaxed */)) {
		result(0, name, "cuStreamBeginCapture");
		goto out;
	}
	e1 = nvb_gpu_copy(gg, p, p + 4 * MiB, 2 * MiB, (void *const *)&a, 1, NVB_GPU_COPY_SM);
	/* eager work on another stream while A captures */
	e2 = nvb_gpu_copy(gg, p + 12 * MiB, p + 8 * MiB, 2 * MiB, (void *const *)&bs, 1,
			  NVB_GPU_COPY_SM);
	cr = end(a, &graph);
	if (graph)
		gdestroy(graph);
	cu.cuStreamSynchronize(bs);
	cu.cuMemcpyDtoH(got, p + 12 * MiB, 2 * MiB);
	result(!e1 && !e2 && cr == CUDA_SUCCESS && graph && !memcmp(src, got, 2 * MiB), name,
	       "captured copy %d, eager copy %d (%s), capture %s, eager bytes %s", e1, e2,
	       e2 ? nvb_gpu_last_error() : "", cr == CUDA_SUCCESS ? "valid" :
	       nvb_cuda_errname(&cu, cr), memcmp(src, got, 2 * MiB) ? "NOT copied" : "copied");
out:
	cu.cuCtxSynchronize();
	if (a)
		cu.cuStreamDestroy(a);
	if (bs)
		cu.cuStreamDestroy(bs);
	if (b)
		nvb_gpu_free(b);
	free(src);
	free(got);
}

/* Review B's yield cases: case on the default layer (control), then on one opened with the flag. */
static void t_yield(void (*fn)(struct nvb_gpu *, const char *), const char *control, const char *name)
{
	struct nvb_gpu_opts yo = { .sz = sizeof(yo), .flags = NVB_GPU_OPEN_SM_YIELD };
	struct nvb_gpu *gy = NULL;

	if (!nvb_gpu_has_kernel(g)) {
		printf("skip %s: no SM kernel\n", name);
		return;
	}
	nvb_gpu_set_device(g, 0);
	fn(g, control);
	if (nvb_gpu_open(&yo, &gy)) {
		result(0, name, "open: %s", nvb_gpu_last_error());
		return;
	}
	nvb_gpu_set_device(gy, 0);
	fn(gy, name);
	nvb_gpu_close(gy);
}

int main(int argc, char **argv)
{
	char msg[256] = "";
	struct nvb *h;
	int err, n;

	if (argc == 6 && !strcmp(argv[1], "--exporter"))
		return exporter_main(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
	if (argc == 4 && !strcmp(argv[1], "--coexist"))
		return coexist_main(atoi(argv[2]), atoi(argv[3]));

	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(tag, sizeof(tag), "%d", (int)getpid());
	if (nvb_cuda_load(&cu, NULL, msg, sizeof(msg)) || cu.cuInit(0)) {
		printf("SKIP gputest: no usable libcuda (%s)\n0 passed, 0 failed\n", msg);
		return 0;
	}
	err = nvb_gpu_open(NULL, &g);
	n = err ? 0 : nvb_gpu_device_count(g);
	if (n < 1) {
		printf("SKIP gputest: %s\n0 passed, 0 failed\n",
		       err ? nvb_gpu_last_error() : "no GPU");
		return 0;
	}
	D1 = n > 1 ? 1 : 0;
	h = open_nvb();
	if (!h) {
		printf("FAIL no nvbridge backend: %s\n0 passed, 1 failed\n", nvb_open_error());
		return 1;
	}
	printf("gputest: %d GPU(s)%s, backend %s, SM kernel %s\n", n,
	       n > 1 ? "" : " (both processes of each cross-process case on GPU 0)",
	       nvb_backend_name(nvb_backend(h)), nvb_gpu_has_kernel(g) ? "yes" : "no");
	signal(SIGALRM, watchdog);
	nvb_gpu_set_device(g, 0);
#define RUN(name, call) do { current_test = name; alarm(90); call; alarm(0); } while (0)
	RUN("alloc_export", t_alloc_export());
	RUN("errors", t_errors());
	RUN("blob_only", t_blob_only(h));
	RUN("cross_process", t_cross_process(h));
	RUN("context_as_found", t_context_as_found());
	RUN("proxy_idle", t_proxy_idle());
	RUN("coexist", t_coexist());
	RUN("yield_beside_capture", t_yield_beside_capture());
	RUN("copy_signal", t_copy_signal(0));
	if (n > 1)
		RUN("copy_signal_peer", t_copy_signal(1));
	else
		printf("skip copy_signal_flag_after_copy_peer: needs 2 GPUs (this host has 1)\n");
	RUN("revoke_unpublish", t_revoke(h, 0));
	RUN("revoke_sigkill", t_revoke(h, 1));
	RUN("many_imports", t_many_imports(h));
	RUN("leaks", t_leaks(h));
	RUN("yield_deadlock", t_yield(yield_pair, "yield_independent_streams_control",
				      "yield_independent_streams_no_deadlock"));
	RUN("yield_capture", t_yield(yield_capture, "yield_capture_control",
				     "yield_capture_isolated"));
	nvb_close(h);
	nvb_gpu_close(g);
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
