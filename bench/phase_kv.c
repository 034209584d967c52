// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench --kv L,B,S: a KV cache moved by request, as between a
 * prefill and a decode instance, in the --segments mode's processes 1 (the
 * exporter: the prefill's cache) and 0 (the importer: the decode's cache,
 * which pulls into it).
 *
 * Layout of both caches: L arrays of B blocks of S bytes, array-major, as
 * vLLM's paged KV cache holds a [B, S] array per layer for K and one for
 * V: a model of n layers with separate K and V is L = 2n (block i of layer
 * l's K at ((2l) * B + i) * S, of its V at ((2l + 1) * B + i) * S).  A
 * request moves k blocks: k distinct random block ids of the exporter's
 * cache into k distinct random ids of the importer's, the same ids in every
 * array: L * k copies of S bytes.  For each k of --kv-blocks and each
 * method, a trial is the median latency of --kv-requests requests (fresh ids
 * each); after KV_WARMUP requests per method, the trials of the methods
 * alternate (a drift of the clocks hits them alike).  The figures are the
 * median of the trials and their range:
 *
 *   nvbridge-xfer  nvb_gpu_xfer_submit of READ requests on the exporter's
 *                  segment: T host threads, each one batch of its arrays
 *                  (arrays t, t + T, ...) on a stream of its own; the library
 *                  picks the method (counted with nvb_gpu_xfer_stats)
 *   legacy-ipc     the same copies as one cuMemcpyDtoDAsync per block, by
 *                  hand, on the legacy IPC mapping of a cuMemAlloc copy of
 *                  the exporter's cache: T host threads, a stream each
 *   large-copy     the request's bytes as one contiguous range out of the
 *                  segment, split into T contiguous slices: T host threads,
 *                  one cuMemcpyDtoDAsync each on a stream of its own (the
 *                  same threads and streams as the two above): the link's
 *                  rate, the baseline of the "/ large" column
 *   large-copy-1t  the same range as one copy by one thread on one stream
 *                  (the baseline before; shown apart)
 *   nccl           processes on two GPUs only (NCCL runs one rank per
 *                  GPU): ncclSend (exporter) / ncclRecv (importer) of every
 *                  block, KV_NCCL_GROUP of them per ncclGroupStart/End, one
 *                  host thread and one stream a side, NCCL's own channel
 *                  choice and the environment's NCCL_* settings (printed)
 *
 * A latency is the importer's host clock from the request's start (its
 * threads released; for NCCL both processes past a barrier) to every copy
 * complete (streams synchronized, batches waited for).  After the timed
 * trials, each method moves one more request of the largest k into the
 * importer's cache, poisoned first, and every byte of that cache is read
 * back: the moved blocks against the exporter's contents (random words
 * derived from a seed and their offset), every other byte still poison.
 * NVB_BENCH_KV_CORRUPT=1 spoils one moved byte before the check, to prove
 * that the check fails (tests/gpu-fake/bench-kv.sh).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>

#include "seg_priv.h"
#include "nccl_api.h"

#ifdef NVB_BENCH_LIB

enum { KV_NVB, KV_LEGACY, KV_LARGE, KV_LARGE1, KV_NCCL, KV_NMETH };
static const char *const kv_name[KV_NMETH] = {
	"nvbridge-xfer", "legacy-ipc", "large-copy", "large-copy-1t", "nccl"
};

/* The request's bytes as one contiguous range (split over the threads, or not). */
static int kv_large(int m)
{
	return m == KV_LARGE || m == KV_LARGE1;
}

#define KV_WARMUP	2
#define KV_POISON	0xa5a5a5a5u
#define KV_POISON64	0xa5a5a5a5a5a5a5a5ull
#define KV_CHUNK	(64 * MiB)	/* bytes per read-back of the check */
#define KV_NCCL_GROUP	1024		/* NCCL operations per group */
#define KV_SEG		"nvbench.kv"
#define KV_WAIT_NS	30000000000LL

enum { KV_CMD_NONE, KV_CMD_NCCL, KV_CMD_DONE };

struct kv_shared {
	pthread_barrier_t bar;		/* processes 0 and 1 */
	CUipcMemHandle ipc;		/* the exporter's cuMemAlloc copy */
	uint64_t seed;			/* of the exporter's contents */
	ncclUniqueId nccl_id;
	int nccl_ok[2];
	char nccl_why[2][160];
	char nccl_env[256];
	int nccl_version;
	char device[128];
	int driver;
	int cmd;			/* the importer's to the exporter, read past a barrier */
	unsigned int k;
	/* the importer's results */
	double us[KV_MAXK][KV_NMETH][MAX_SAMPLES];	/* per trial */
	int ran[KV_NMETH];
	uint64_t picked[KV_MAXK][3];	/* nvbridge-xfer batches on SM, BATCH, LOOP */
	uint64_t checked[KV_NMETH];	/* bytes read back and checked */
	uint32_t src[];			/* an NCCL request's exporter block ids */
};

/* The importer: its cache, the peer's two mappings, the worker threads. */
struct kv_imp {
	struct seg_ctx *c;
	struct kv_shared *kv;
	struct nvb_gpu_buf *buf;
	uint64_t local, total;
	CUdeviceptr ipc;		/* the legacy IPC mapping */
	struct nvb_gpu_seg *seg;
	CUstream st;
	uint32_t *perm_src, *perm_dst, *src, *dst;
	uint64_t rng;
	/* the request the workers run */
	pthread_barrier_t go, done;
	int method, quit;
	unsigned int k;
	/* NCCL */
	struct nccl_api n;
	ncclComm_t comm;
	int nccl;
};

struct kv_worker {
	struct kv_imp *I;
	unsigned int id;
	CUstream st;
	struct nvb_gpu_xfer_req *r;	/* room for this worker's batch */
	pthread_t t;
	char why[200];
};

static unsigned int kv_kmax(const struct seg_opts *o)
{
	unsigned int m = 0;
	int i;

	for (i = 0; i < o->kv_nk; i++)
		if (o->kv_k[i] > m)
			m = o->kv_k[i];
	return m;
}

/* The exporter's word i (splitmix64 of seed and i); also the ids' randomness. */
static uint64_t kv_word(uint64_t seed, uint64_t i)
{
	uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

struct kv_shared *kv_shared_new(const struct seg_opts *o)
{
	size_t sz = sizeof(struct kv_shared) + kv_kmax(o) * sizeof(uint32_t);
	pthread_barrierattr_t ba;
	struct kv_shared *kv;

	kv = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (kv == MAP_FAILED) {
		perror("mmap");
		return NULL;
	}
	pthread_barrierattr_init(&ba);
	pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
	pthread_barrier_init(&kv->bar, &ba, 2);
	kv->seed = kv_word((uint64_t)(now_s() * 1e9), (uint64_t)getpid());
	return kv;
}

static void kv_bar(struct seg_ctx *c)
{
	pthread_barrier_wait(&c->sh->kv->bar);
	if (c->sh->failed)
		_exit(1);
}

/* The blocks of a request as grouped NCCL operations, in the same order on both sides. */
static int kv_nccl_ops(const struct nccl_api *n, ncclComm_t comm, CUstream st,
		       const struct seg_opts *o, uint64_t base, const uint32_t *ids,
		       unsigned int k, int send)
{
	unsigned int l, j, ops = 0;
	int r = n->GroupStart(), r2;

	for (l = 0; l < o->kv_layers && !r; l++)
		for (j = 0; j < k && !r; j++) {
			void *p = (void *)(uintptr_t)(base + ((uint64_t)l * o->kv_nblocks + ids[j]) *
						      o->kv_block);

			/* importer rank 0, exporter rank 1 */
			r = send ? n->Send(p, o->kv_block, NCCL_INT8, 0, comm, st) :
				   n->Recv(p, o->kv_block, NCCL_INT8, 1, comm, st);
			if (!r && ++ops % KV_NCCL_GROUP == 0) {
				r = n->GroupEnd();
				if (!r)
					r = n->GroupStart();
			}
		}
	r2 = n->GroupEnd();	/* the open group ends even after an error */
	return r ? r : r2;
}

/* Both processes: NCCL when they are on two GPUs and it loads; 1 if it runs. */
static int kv_nccl_init(struct seg_ctx *c, struct nccl_api *n, ncclComm_t *comm)
{
	struct kv_shared *kv = c->sh->kv;
	char *why = kv->nccl_why[c->idx];
	size_t len = 0;
	int r, i;

	if (c->sh->dev[0] == c->sh->dev[1])
		snprintf(why, sizeof(kv->nccl_why[0]), "both processes are on GPU %d and NCCL "
			 "runs one rank per GPU", c->dev);
	else if (opt.no_nccl)
		snprintf(why, sizeof(kv->nccl_why[0]), "--no-nccl");
	else
		nccl_load(n, why, sizeof(kv->nccl_why[0]));
	kv->nccl_ok[c->idx] = !why[0];
	if (c->idx == 0)	/* what NCCL reads (nccl_load set NCCL_NVLS_ENABLE) */
		for (i = 0; environ[i] && len + 1 < sizeof(kv->nccl_env); i++)
			if (!strncmp(environ[i], "NCCL_", 5))
				len += (size_t)snprintf(kv->nccl_env + len, sizeof(kv->nccl_env) - len,
							"%s%s", len ? " " : "", environ[i]);
	kv_bar(c);
	if (!kv->nccl_ok[0] || !kv->nccl_ok[1])
		return 0;
	if (c->idx == 1 && (r = n->GetUniqueId(&kv->nccl_id)))
		seg_die(c, "ncclGetUniqueId: %s", n->GetErrorString(r));
	kv_bar(c);
	r = n->CommInitRank(comm, 2, kv->nccl_id, c->idx);
	if (r)
		seg_die(c, "ncclCommInitRank: %s", n->GetErrorString(r));
	if (c->idx == 0)
		n->GetVersion(&kv->nccl_version);
	return 1;
}

/* ---- the exporter ---- */

static void kv_export(struct seg_ctx *c)
{
	const struct seg_opts *o = c->o;
	struct kv_shared *kv = c->sh->kv;
	uint64_t total = (uint64_t)o->kv_layers * o->kv_nblocks * o->kv_block, off, i, n;
	uint64_t *h = malloc(KV_CHUNK);
	struct nvb_gpu_buf *buf;
	struct nvb_gpu_seg *seg;
	struct nccl_api nc;
	ncclComm_t comm = NULL;
	CUdeviceptr ipc;
	CUstream st;
	int nccl, r;

	if (!h)
		seg_die(c, "out of memory");
	SNV(c, nvb_gpu_alloc(c->g, c->dev, total, 0, &buf));
	SCK(c, cuMemAlloc(&ipc, total));
	for (off = 0; off < total; off += n) {	/* the same random words in both */
		n = total - off < KV_CHUNK ? total - off : KV_CHUNK;
		for (i = 0; i < n / 8; i++)
			h[i] = kv_word(kv->seed, off / 8 + i);
		SCK(c, cuMemcpyHtoD(nvb_gpu_buf_ptr(buf) + off, h, n));
		SCK(c, cuMemcpyHtoD(ipc + off, h, n));
	}
	free(h);
	SNV(c, nvb_gpu_seg_publish(c->g, c->h, KV_SEG, buf, NULL, &seg));
	SCK(c, cuIpcGetMemHandle(&kv->ipc, ipc));
	SCK(c, cuStreamCreate(&st, CU_STREAM_NON_BLOCKING));
	nccl = kv_nccl_init(c, &nc, &comm);
	kv_bar(c);	/* ready */
	for (;;) {	/* the importer's NCCL requests */
		kv_bar(c);
		if (kv->cmd == KV_CMD_DONE)
			break;
		r = nccl ? kv_nccl_ops(&nc, comm, st, o, nvb_gpu_buf_ptr(buf), kv->src, kv->k, 1) : -1;
		if (r)
			seg_die(c, "ncclSend: %s", nccl ? nc.GetErrorString(r) : "NCCL not initialized");
		SCK(c, cuStreamSynchronize(st));
	}
	kv_bar(c);	/* the importer closed its mappings */
	if (nccl)
		nc.CommDestroy(comm);
	c->cu.cuStreamDestroy(st);
	nvb_gpu_seg_close(seg);
	c->cu.cuMemFree(ipc);
	nvb_gpu_free(buf);
}

/* ---- the importer ---- */

static int kv_werr(struct kv_worker *w, const char *what, const char *detail)
{
	snprintf(w->why, sizeof(w->why), "%s: %s", what, detail);
	return -1;
}

/* Worker w's share of the request: arrays w->id, w->id + T, ... */
static int kv_share(struct kv_worker *w)
{
	struct kv_imp *I = w->I;
	const struct seg_opts *o = I->c->o;
	struct nvb_cuda *cu = &I->c->cu;
	struct nvb_gpu_xfer_opts xo = { .sz = sizeof(xo), .stream = w->st };
	uint64_t S = o->kv_block, B = o->kv_nblocks;
	struct nvb_gpu_batch *b;
	unsigned int l, j;
	size_t n = 0;
	CUresult cr;
	int e;

	if (kv_large(I->method)) {
		uint64_t total = (uint64_t)o->kv_layers * I->k * S, lo = 0, len = total;

		if (I->method == KV_LARGE) {	/* slice w->id of T, the same total bytes */
			lo = total * w->id / o->kv_threads;
			len = total * (w->id + 1) / o->kv_threads - lo;
		} else if (w->id) {
			len = 0;
		}
		if (!len)
			return 0;
		cr = cu->cuMemcpyDtoDAsync(I->local + lo, nvb_gpu_seg_ptr(I->seg) + lo, len, w->st);
		if (cr != CUDA_SUCCESS)
			return kv_werr(w, "cuMemcpyDtoDAsync", nvb_cuda_errname(cu, cr));
	}
	for (l = w->id; l < o->kv_layers && !kv_large(I->method); l += o->kv_threads)
		for (j = 0; j < I->k; j++) {
			uint64_t so = ((uint64_t)l * B + I->src[j]) * S;
			uint64_t dof = ((uint64_t)l * B + I->dst[j]) * S;

			if (I->method == KV_NVB) {
				w->r[n++] = (struct nvb_gpu_xfer_req){ .opcode = NVB_GPU_XFER_READ,
					.local = I->local + dof, .seg = I->seg, .offset = so, .len = S };
				continue;
			}
			/* what an application writes by hand on a legacy IPC mapping */
			cr = cu->cuMemcpyDtoDAsync(I->local + dof, I->ipc + so, S, w->st);
			if (cr != CUDA_SUCCESS)
				return kv_werr(w, "cuMemcpyDtoDAsync", nvb_cuda_errname(cu, cr));
		}
	if (I->method != KV_NVB) {
		cr = cu->cuStreamSynchronize(w->st);
		return cr == CUDA_SUCCESS ? 0 : kv_werr(w, "cuStreamSynchronize",
							nvb_cuda_errname(cu, cr));
	}
	if (!n)
		return 0;
	e = nvb_gpu_xfer_submit(I->c->g, w->r, n, &xo, &b);
	if (!e) {
		e = nvb_gpu_batch_wait(b, KV_WAIT_NS);
		nvb_gpu_batch_free(b);
	}
	return e ? kv_werr(w, strerror(-e), nvb_gpu_last_error()) : 0;
}

static void *kv_worker_main(void *arg)
{
	struct kv_worker *w = arg;
	struct kv_imp *I = w->I;

	if (nvb_gpu_set_device(I->c->g, I->c->dev) ||
	    I->c->cu.cuStreamCreate(&w->st, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS)
		kv_werr(w, "worker", "nvb_gpu_set_device or cuStreamCreate failed");
	for (;;) {
		pthread_barrier_wait(&I->go);
		if (I->quit)
			break;
		if (!w->why[0])
			kv_share(w);
		pthread_barrier_wait(&I->done);
	}
	if (w->st)
		I->c->cu.cuStreamDestroy(w->st);
	return NULL;
}

/* k distinct random ids out of perm (a permutation of 0..B-1, shuffled on) */
static void kv_pick(struct kv_imp *I, uint32_t *perm, uint32_t *ids, unsigned int k)
{
	uint32_t B = I->c->o->kv_nblocks, j, t;
	unsigned int i;

	for (i = 0; i < k; i++) {
		j = i + (uint32_t)(kv_word(~I->kv->seed, I->rng++) % (B - i));
		t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
		ids[i] = perm[i];
	}
}

/* One request of k fresh random blocks by method m: its latency in us. */
static double kv_request(struct kv_imp *I, struct kv_worker *w, int m, unsigned int k)
{
	struct seg_ctx *c = I->c;
	struct kv_shared *kv = I->kv;
	double t0;
	unsigned int i;
	int r;

	kv_pick(I, I->perm_src, I->src, k);
	kv_pick(I, I->perm_dst, I->dst, k);
	if (m == KV_NCCL) {
		memcpy(kv->src, I->src, k * sizeof(uint32_t));
		kv->k = k;
		kv->cmd = KV_CMD_NCCL;
		kv_bar(c);
		t0 = now_s();
		r = kv_nccl_ops(&I->n, I->comm, I->st, c->o, I->local, I->dst, k, 0);
		if (r)
			seg_die(c, "ncclRecv: %s", I->n.GetErrorString(r));
		SCK(c, cuStreamSynchronize(I->st));
		return (now_s() - t0) * 1e6;
	}
	I->method = m;
	I->k = k;
	t0 = now_s();
	pthread_barrier_wait(&I->go);
	pthread_barrier_wait(&I->done);
	t0 = (now_s() - t0) * 1e6;
	for (i = 0; i < c->o->kv_threads; i++)
		if (w[i].why[0])
			seg_die(c, "%s, thread %u: %s", kv_name[m], i, w[i].why);
	return t0;
}

static int kv_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * After the timed trials: one request of k blocks by method m into the
 * poisoned cache, then every byte of the cache read back and checked.
 */
static void kv_check(struct kv_imp *I, struct kv_worker *w, int m, unsigned int k)
{
	struct seg_ctx *c = I->c;
	const struct seg_opts *o = c->o;
	uint64_t S = o->kv_block, B = o->kv_nblocks, chunk = KV_CHUNK / S * S;
	uint64_t off, n, g, i, bad = 0, where = 0, got = 0, want = 0, seed = I->kv->seed;
	int64_t *inv = malloc(B * sizeof(*inv)), s;
	uint64_t *h;

	if (!chunk)
		chunk = S;
	h = malloc(chunk);
	if (!inv || !h)
		seg_die(c, "out of memory");
	SCK(c, cuMemsetD32Async(I->local, KV_POISON, I->total / 4, I->st));
	SCK(c, cuStreamSynchronize(I->st));
	kv_request(I, w, m, k);
	for (i = 0; i < B; i++)
		inv[i] = -1;
	for (i = 0; i < k; i++)
		inv[I->dst[i]] = I->src[i];
	if (getenv("NVB_BENCH_KV_CORRUPT")) {	/* the test that the check can fail */
		uint64_t first = kv_large(m) ? 0 : I->dst[0] * S;
		uint64_t from = kv_large(m) ? 0 : I->src[0] * S;

		SCK(c, cuMemsetD8Async(I->local + first,
				       (unsigned char)(kv_word(seed, from / 8) ^ 0x5a), 1, I->st));
		SCK(c, cuStreamSynchronize(I->st));
	}
	for (off = 0; off < I->total; off += n) {
		n = I->total - off < chunk ? I->total - off : chunk;
		SCK(c, cuMemcpyDtoH(h, I->local + off, n));
		for (g = off / S; g < (off + n) / S; g++) {
			const uint64_t *wd = h + (g * S - off) / 8;

			/* the exporter's block that landed in block g, or -1: poison */
			if (kv_large(m))
				s = g < (uint64_t)o->kv_layers * k ? (int64_t)g : -1;
			else
				s = inv[g % B] < 0 ? -1 : (int64_t)(g / B * B) + inv[g % B];
			for (i = 0; i < S / 8; i++) {
				uint64_t x = s < 0 ? KV_POISON64 : kv_word(seed, (uint64_t)s * S / 8 + i);

				if (wd[i] != x && !bad++) {
					where = g * S + i * 8;
					got = wd[i];
					want = x;
				}
			}
		}
	}
	free(h);
	free(inv);
	if (bad)
		seg_die(c, "%s: data check failed: %llu of %llu words wrong, the first in array "
			"%llu, block %llu, byte %llu: %#llx, want %#llx", kv_name[m],
			(unsigned long long)bad, (unsigned long long)(I->total / 8),
			(unsigned long long)(where / S / B), (unsigned long long)(where / S % B),
			(unsigned long long)(where % S), (unsigned long long)got,
			(unsigned long long)want);
	I->kv->checked[m] = I->total;
}

static void kv_import(struct seg_ctx *c)
{
	const struct seg_opts *o = c->o;
	struct kv_shared *kv = c->sh->kv;
	struct nvb_gpu_seg_open_opts oo = { .sz = sizeof(oo), .timeout_ns = 10000000000LL };
	struct nvb_gpu_xfer_stats x0, x1;
	unsigned int kmax = kv_kmax(o), i, t, q, per = o->kv_layers / o->kv_threads + 1;
	double lat[64];
	struct kv_imp I;
	struct kv_worker *w;
	CUdevice d;
	int ki, m, nm;

	memset(&I, 0, sizeof(I));
	I.c = c;
	I.kv = kv;
	I.total = (uint64_t)o->kv_layers * o->kv_nblocks * o->kv_block;
	I.perm_src = malloc(o->kv_nblocks * sizeof(uint32_t));
	I.perm_dst = malloc(o->kv_nblocks * sizeof(uint32_t));
	I.src = malloc(kmax * sizeof(uint32_t));
	I.dst = malloc(kmax * sizeof(uint32_t));
	w = calloc(o->kv_threads, sizeof(*w));
	if (!I.perm_src || !I.perm_dst || !I.src || !I.dst || !w)
		seg_die(c, "out of memory");
	for (i = 0; i < o->kv_nblocks; i++)
		I.perm_src[i] = I.perm_dst[i] = i;
	if (c->cu.cuDeviceGet(&d, c->dev) == CUDA_SUCCESS)
		c->cu.cuDeviceGetName(kv->device, sizeof(kv->device), d);
	c->cu.cuDriverGetVersion(&kv->driver);
	SNV(c, nvb_gpu_alloc(c->g, c->dev, I.total, 0, &I.buf));
	I.local = nvb_gpu_buf_ptr(I.buf);
	SCK(c, cuStreamCreate(&I.st, CU_STREAM_NON_BLOCKING));
	I.nccl = kv_nccl_init(c, &I.n, &I.comm);
	kv_bar(c);	/* the exporter's cache is filled and published */
	SNV(c, nvb_gpu_seg_open(c->g, c->h, KV_SEG, &oo, &I.seg));
	SCK(c, cuIpcOpenMemHandle(&I.ipc, kv->ipc, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));

	pthread_barrier_init(&I.go, NULL, o->kv_threads + 1);
	pthread_barrier_init(&I.done, NULL, o->kv_threads + 1);
	for (i = 0; i < o->kv_threads; i++) {
		w[i] = (struct kv_worker){ .I = &I, .id = i };
		w[i].r = calloc((size_t)per * kmax, sizeof(*w[i].r));
		if (!w[i].r || pthread_create(&w[i].t, NULL, kv_worker_main, &w[i]))
			seg_die(c, "worker threads: out of memory");
	}
	nm = I.nccl ? KV_NMETH : KV_NCCL;
	for (ki = 0; ki < o->kv_nk; ki++) {
		x0 = (struct nvb_gpu_xfer_stats){ .sz = sizeof(x0) };
		x1 = x0;
		nvb_gpu_xfer_stats(c->g, &x0);
		for (m = 0; m < nm; m++)
			for (q = 0; q < KV_WARMUP; q++)
				kv_request(&I, w, m, o->kv_k[ki]);
		for (t = 0; t < o->trials; t++)
			for (m = 0; m < nm; m++) {
				for (q = 0; q < o->kv_requests; q++)
					lat[q] = kv_request(&I, w, m, o->kv_k[ki]);
				qsort(lat, o->kv_requests, sizeof(lat[0]), kv_cmp);
				kv->us[ki][m][t] = lat[o->kv_requests / 2];
			}
		nvb_gpu_xfer_stats(c->g, &x1);
		kv->picked[ki][0] = x1.sm_batches - x0.sm_batches;
		kv->picked[ki][1] = x1.batch_batches - x0.batch_batches;
		kv->picked[ki][2] = x1.loop_batches - x0.loop_batches;
	}
	for (m = 0; m < nm; m++) {
		kv_check(&I, w, m, kmax);
		kv->ran[m] = 1;
	}
	I.quit = 1;
	pthread_barrier_wait(&I.go);
	for (i = 0; i < o->kv_threads; i++) {
		pthread_join(w[i].t, NULL);
		free(w[i].r);
	}
	kv->cmd = KV_CMD_DONE;
	kv_bar(c);
	if (I.nccl)
		I.n.CommDestroy(I.comm);
	nvb_gpu_seg_close(I.seg);
	c->cu.cuIpcCloseMemHandle(I.ipc);
	c->cu.cuStreamDestroy(I.st);
	nvb_gpu_free(I.buf);
	kv_bar(c);
	free(w);
	free(I.perm_src);
	free(I.perm_dst);
	free(I.src);
	free(I.dst);
}

void kv_phase(struct seg_ctx *c)
{
	if (c->idx == 0)
		kv_import(c);
	else if (c->idx == 1)
		kv_export(c);
}

/* ---- the parent: table and JSON ---- */

static void kv_add(const char *key, int m, uint64_t size, double v, const char *unit)
{
	struct result *r = &results[nresults];

	if (nresults >= (int)(sizeof(results) / sizeof(results[0])))
		return;
	memset(r, 0, sizeof(*r));
	scopy(r->key, sizeof(r->key), key);
	scopy(r->method, sizeof(r->method), kv_name[m]);
	scopy(r->unit, sizeof(r->unit), unit);
	r->size = size;
	r->value = v;
	add_sample(r);
}

/* "SM x27, BATCH x3": the batches per method the library picked */
static void kv_picked(const uint64_t *p, char *buf, size_t len)
{
	static const char *const name[3] = { "SM", "BATCH", "LOOP" };
	size_t n = 0;
	int i;

	buf[0] = 0;
	for (i = 0; i < 3; i++)
		if (p[i] && n < len)
			n += (size_t)snprintf(buf + n, len - n, "%s%s x%llu", n ? ", " : "", name[i],
					      (unsigned long long)p[i]);
}

/* "median (min-max)", whole numbers from 100 on (no 4.43e+04 in a table of us) */
static const char *kv_spread(const struct result *r, char *buf, size_t len)
{
	const double v[3] = { r->value, r->min, r->max };
	char t[3][24];
	int i;

	for (i = 0; i < 3; i++)
		snprintf(t[i], sizeof(t[i]), v[i] >= 100 ? "%.0f" : "%.3g", v[i]);
	snprintf(buf, len, "%s (%s-%s)", t[0], t[1], t[2]);
	return buf;
}

/* A JSON string's text: no quote, backslash or control character (they become '). */
static void kv_plain(char *s)
{
	for (; *s; s++)
		if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
			*s = '\'';
}

int kv_report(const struct seg_opts *o, struct seg_shared *sh, const char *seg_json)
{
	struct kv_shared *kv = sh->kv;
	uint64_t S = o->kv_block, req, total = (uint64_t)o->kv_layers * o->kv_nblocks * S;
	static char extra[8192];	/* json_extra: print_json reads it */
	char sz[32], a[96], b[96], pk[96], res[KV_NMETH][400], nccl_note[256];
	const struct result *lat, *bw, *large;
	unsigned int t;
	int ki, m, len;
	FILE *f;

	/* each trial is a sample: medians and ranges as the other phases' */
	for (ki = 0; ki < o->kv_nk; ki++)
		for (m = 0; m < KV_NMETH; m++)
			for (t = 0; kv->ran[m] && t < o->trials; t++) {
				req = (uint64_t)o->kv_layers * o->kv_k[ki] * S;
				kv_add("kv_us", m, req, kv->us[ki][m][t], "us");
				kv_add("kv_GBs", m, req, req / (kv->us[ki][m][t] * 1e-6) / 1e9, "GB/s");
			}
	finish_samples();
	scopy(info.device, sizeof(info.device), kv->device);
	info.driver = kv->driver;
	scopy(info.backend, sizeof(info.backend), o->socket ? "broker (--socket)" : "libnvbridge default");
	opt.gpu_a = sh->dev[1];
	opt.gpu_b = sh->dev[0];
	opt.trials = o->trials;
	if (kv->ran[KV_NCCL])
		snprintf(nccl_note, sizeof(nccl_note), "NCCL %d", kv->nccl_version);
	else
		snprintf(nccl_note, sizeof(nccl_note), "NCCL not run: %s",
			 kv->nccl_why[0][0] ? kv->nccl_why[0] : kv->nccl_why[1]);
	scopy(info.nccl_note, sizeof(info.nccl_note), nccl_note);

	snprintf(res[KV_NVB], sizeof(res[0]), "%u host threads, a stream and a batch each per "
		 "request (nvb_gpu_xfer_submit, READ); the library's pick (nvb_gpu_xfer_stats); its "
		 "SM kernel at most %u CTAs x 512 threads a batch%s", o->kv_threads,
		 o->sm_ctas ? o->sm_ctas : o->sm_yield ? o->kv_nblocks : NVB_GPU_SM_CTAS_DEFAULT,
		 o->sm_yield ? ", at the lowest stream priority (NVB_GPU_OPEN_SM_YIELD)" : "");
	snprintf(res[KV_LEGACY], sizeof(res[0]), "%u host threads, a stream each, one "
		 "cuMemcpyDtoDAsync per block on the legacy IPC mapping (copy engines, no SM)",
		 o->kv_threads);
	snprintf(res[KV_LARGE], sizeof(res[0]), "%u host threads, a stream each, one "
		 "cuMemcpyDtoDAsync each of a contiguous 1/%u of the request's bytes out of the "
		 "segment (copy engines)", o->kv_threads, o->kv_threads);
	snprintf(res[KV_LARGE1], sizeof(res[0]), "1 host thread, 1 stream, one cuMemcpyDtoDAsync "
		 "of the request's bytes out of the segment (copy engines)");
	if (kv->ran[KV_NCCL])
		snprintf(res[KV_NCCL], sizeof(res[0]), "1 host thread and 1 stream a side, "
			 "ncclSend/ncclRecv per block, %d a group; NCCL %d picks its channels (SMs "
			 "on both GPUs); environment: %s", KV_NCCL_GROUP, kv->nccl_version,
			 kv->nccl_env[0] ? kv->nccl_env : "none");
	else
		snprintf(res[KV_NCCL], sizeof(res[0]), "not run: %s",
			 kv->nccl_why[0][0] ? kv->nccl_why[0] : kv->nccl_why[1]);
	for (m = 0; m < KV_NMETH; m++)
		kv_plain(res[m]);
	kv_plain(info.nccl_note);

	len = snprintf(extra, sizeof(extra), "  \"segments\": %s,\n  \"kv\": {\"arrays\": %u, "
		       "\"blocks\": %u, \"block_size\": %llu, \"threads\": %u, \"requests_per_trial\": "
		       "%u, \"warmups\": %d, \"importer_gpu\": %d, \"exporter_gpu\": %d, "
		       "\"blocks_per_request\": [", seg_json, o->kv_layers, o->kv_nblocks,
		       (unsigned long long)S, o->kv_threads, o->kv_requests, KV_WARMUP, sh->dev[0],
		       sh->dev[1]);
	for (ki = 0; ki < o->kv_nk; ki++)
		len += snprintf(extra + len, sizeof(extra) - (size_t)len, "%s%u", ki ? ", " : "",
				o->kv_k[ki]);
	len += snprintf(extra + len, sizeof(extra) - (size_t)len, "], \"nvbridge_picked\": [");
	for (ki = 0; ki < o->kv_nk; ki++)
		len += snprintf(extra + len, sizeof(extra) - (size_t)len,
				"%s{\"sm\": %llu, \"batch\": %llu, \"loop\": %llu}", ki ? ", " : "",
				(unsigned long long)kv->picked[ki][0],
				(unsigned long long)kv->picked[ki][1],
				(unsigned long long)kv->picked[ki][2]);
	len += snprintf(extra + len, sizeof(extra) - (size_t)len, "], \"checked_bytes\": {");
	for (m = 0; m < KV_NMETH; m++)
		len += snprintf(extra + len, sizeof(extra) - (size_t)len, "%s\"%s\": %llu",
				m ? ", " : "", kv_name[m], (unsigned long long)kv->checked[m]);
	len += snprintf(extra + len, sizeof(extra) - (size_t)len, "}, \"resources\": {");
	for (m = 0; m < KV_NMETH; m++)
		len += snprintf(extra + len, sizeof(extra) - (size_t)len, "%s\"%s\": \"%s\"",
				m ? ", " : "", kv_name[m], res[m]);
	snprintf(extra + len, sizeof(extra) - (size_t)len, "}},\n");
	json_extra = extra;

	if (!o->json) {
		fmt_size(sz, sizeof(sz), S);
		fmt_size(a, sizeof(a), total);
		printf("KV cache: %u arrays x %u blocks x %s = %s a process, array-major (K and V of "
		       "a layer: two arrays); process 0 (GPU %d) pulls k random blocks of every "
		       "array out of process 1's cache (GPU %d%s) into k random blocks of its own\n",
		       o->kv_layers, o->kv_nblocks, sz, a, sh->dev[0], sh->dev[1],
		       sh->dev[0] == sh->dev[1] ? ": two processes on one GPU" : "");
		for (m = 0; m < KV_NMETH; m++)
			printf("  %-14s %s\n", kv_name[m], res[m]);
		printf("latency per request: median of %u trials (min-max), a trial the median of %u "
		       "requests, after %d warm-ups\n", o->trials, o->kv_requests, KV_WARMUP);
		printf("  %6s %9s  %-14s %30s %30s %8s  %s\n", "blocks", "bytes", "method",
		       "latency us", "GB/s", "/ large", "nvbridge picked");
		for (ki = 0; ki < o->kv_nk; ki++) {
			req = (uint64_t)o->kv_layers * o->kv_k[ki] * S;
			fmt_size(sz, sizeof(sz), req);
			large = find("kv_GBs", kv_name[KV_LARGE], req);
			for (m = 0; m < KV_NMETH; m++) {
				lat = find("kv_us", kv_name[m], req);
				bw = find("kv_GBs", kv_name[m], req);
				if (!lat || !bw)
					continue;
				pk[0] = 0;
				if (m == KV_NVB)
					kv_picked(kv->picked[ki], pk, sizeof(pk));
				printf("  %6u %9s  %-14s %30s %30s %7.2fx  %s\n", o->kv_k[ki], sz,
				       kv_name[m], kv_spread(lat, a, sizeof(a)),
				       kv_spread(bw, b, sizeof(b)),
				       large && large->value > 0 ? bw->value / large->value : 0, pk);
			}
		}
		fmt_size(a, sizeof(a), total);
		printf("data: after the trials, one %u-block request per method into the poisoned "
		       "cache, all %s read back and checked: every word right\n", kv_kmax(o), a);
	}
	if (o->json)
		print_json(stdout, NULL, 0);
	if (o->json_out) {
		f = fopen(o->json_out, "w");
		if (f) {
			print_json(f, NULL, 0);
			fclose(f);
		} else {
			perror(o->json_out);
		}
	}
	return 0;
}

#endif
