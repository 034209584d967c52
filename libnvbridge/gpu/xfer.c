// SPDX-License-Identifier: MIT
/*
 * libnvbridge GPU layer: batches of transfers between local memory and
 * segments.  Every request is checked against its segment before anything
 * is queued; the copy method is picked per batch by shape; completion comes
 * from a host function queued after the copies, which wakes the one library
 * thread of segment.c (never a thread per batch).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "seg_priv.h"
#include "../opts.h"

#define XFER_SM_AVG_MAX		(128u << 10)	/* as nvb_gpu_copy_blocks' AUTO */
#define XFER_BATCH_AVG_MAX	(1u << 20)	/* above: one copy-engine copy per request */
#define XFER_MAX_REQS		(1u << 20)

/*
 * Runs on the driver's callback thread once the batch's copies are done:
 * no CUDA call, no lock.  b may be freed by the library thread as soon as
 * gpu_done is set; e lives until inflight_gpu is back to 0 (xfer_shutdown).
 */
static void host_done(void *arg)
{
	struct nvb_gpu_batch *b = arg;
	struct seg_engine *e = b->e;
	uint64_t one = 1;
	int fd = e->wake;

	__atomic_store_n(&b->gpu_done, 1, __ATOMIC_RELEASE);
	if (write(fd, &one, sizeof(one)) < 0) {
		/* saturated counter: the thread is awake anyway */
	}
	__atomic_sub_fetch(&e->inflight_gpu, 1, __ATOMIC_RELEASE);
}

/*
 * The same, from cuStreamAddCallback: also called when the context hit an
 * error (a fault, an ECC error), which cuLaunchHostFunc's function is not
 * (CUDA's documentation), so that the batch still completes, with -EIO.
 */
static void stream_done(CUstream st, CUresult r, void *arg)
{
	struct nvb_gpu_batch *b = arg;

	(void)st;
	if (r != CUDA_SUCCESS)
		b->err = -EIO;	/* published by host_done's release store */
	host_done(arg);
}

void batch_free(struct nvb_gpu_batch *b)
{
	if (b->efd >= 0)
		close(b->efd);
	free(b->segs);
	free(b->status);
	free(b);
}

void xfer_reap(struct seg_engine *e)
{
	struct nvb_gpu_batch **pp, *b, *dead = NULL;
	struct nvb_gpu_seg *gone = NULL, *s;
	uint64_t one = 1, now = ns_now();
	size_t i;
	int any = 0;

	pthread_mutex_lock(&e->lock);
	for (pp = &e->inflight; (b = *pp);) {
		if (!__atomic_load_n(&b->gpu_done, __ATOMIC_ACQUIRE)) {
			pp = &b->next;
			continue;
		}
		*pp = b->next;
		any = 1;
		/* a revocation seen before completion makes the data worthless */
		for (i = 0; i < b->n; i++) {
			b->status[i] = seg_dead(b->segs[i]) ? -ENOLINK : b->err;
			s = seg_put(b->segs[i]);
			if (s) {
				s->next = gone;
				gone = s;
			}
			b->segs[i] = NULL;
		}
		b->t_done = now;
		e->xs.completed++;
		e->xs.busy_ns += now - b->t_submit;
		for (i = 0; i < b->n; i++)
			if (b->status[i]) {
				e->xs.failed++;
				break;
			}
		__atomic_store_n(&b->done, 1, __ATOMIC_RELEASE);
		if (b->efd >= 0) {
			if (write(b->efd, &one, sizeof(one)) < 0) {
				/* the caller's eventfd is full: status still tells */
			}
			close(b->efd);	/* our duplicate: nothing more to tell */
			b->efd = -1;
		}
		if (write(e->done_fd, &one, sizeof(one)) < 0) {
			/* saturated: still readable */
		}
		if (b->freed) {
			b->next = dead;
			dead = b;
		} else {
			b->next = e->done;
			e->done = b;
		}
	}
	if (any)
		pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->lock);
	while ((b = dead)) {
		dead = b->next;
		batch_free(b);
	}
	while ((s = gone)) {
		gone = s->next;
		nvb_gpu__seg_destroy(s);
	}
}

int xfer_shutdown(struct seg_engine *e)
{
	uint64_t end = ns_now() + 5000000000ull;

	/* bounded: a batch on a stream of the caller's that never runs must not hang close */
	while (__atomic_load_n(&e->inflight_gpu, __ATOMIC_ACQUIRE) > 0) {
		if (ns_now() > end)
			return -ETIMEDOUT;
		usleep(1000);
	}
	xfer_reap(e);
	return 0;
}

/* Checks request i against its segment (e->lock held). */
static int check_req(const struct seg_engine *e, const struct nvb_gpu_xfer_req *r, size_t i)
{
	const struct nvb_gpu_seg *s = r->seg;

	if (r->opcode != NVB_GPU_XFER_READ && r->opcode != NVB_GPU_XFER_WRITE)
		return seterr(-EINVAL, "request %zu: unknown opcode %u", i, r->opcode);
	if (r->__pad)
		return seterr(-EINVAL, "request %zu: __pad must be 0", i);
	if (!s || !r->local)
		return seterr(-EINVAL, "request %zu: NULL segment or local address", i);
	if (!r->len)
		return seterr(-EINVAL, "request %zu: zero length", i);
	/*
	 * Another struct nvb_gpu's segment is guarded by another lock and freed
	 * by that layer's close whatever this batch holds: refuse it.
	 */
	if (s->e != e)
		return seterr(-EINVAL, "request %zu: segment %s belongs to another struct nvb_gpu",
			      i, s->name);
	if (s->closed)
		return seterr(-EBADF, "request %zu: segment %s is closed", i, s->name);
	if (seg_dead(s))
		return seterr(-ENOLINK, "request %zu: segment %s (entry %llu) was revoked", i,
			      s->name, (unsigned long long)s->id);
	if (r->offset + r->len < r->offset || r->offset + r->len > s->size)
		return seterr(-ERANGE, "request %zu: [%#llx, +%#llx) outside segment %s of %zu bytes",
			      i, (unsigned long long)r->offset, (unsigned long long)r->len,
			      s->name, s->size);
	if (r->local + r->len < r->local)
		return seterr(-ERANGE, "request %zu: local range wraps", i);
	return 0;
}

/* Reads events that already arrived on the requests' handles, so a revocation counts. */
static void refresh(struct seg_engine *e, const struct nvb_gpu_xfer_req *reqs, size_t n)
{
	struct seg_handle *seen[8], *hd;
	size_t i, k, ns = 0;
	int pending = 0;

	for (i = 0; i < n && ns < 8; i++) {
		/* another layer's segment is refused by check_req: never touch its records */
		if (!reqs[i].seg || reqs[i].seg->e != e || reqs[i].seg->local ||
		    !(hd = reqs[i].seg->hd))
			continue;
		for (k = 0; k < ns && seen[k] != hd; k++)
			;
		if (k == ns)
			seen[ns++] = hd;
	}
	for (k = 0; k < ns; k++) {
		struct pollfd p = { .fd = seen[k]->evfd, .events = POLLIN };

		/* one poll(2) per handle: the common case reads nothing */
		if (p.fd >= 0 && poll(&p, 1, 0) > 0)
			pending = 1;
	}
	if (!pending)
		return;
	pthread_mutex_lock(&e->hlock);
	/* the records are still listed: their segments hold them */
	for (k = 0; k < ns; k++)
		if (seen[k]->evfd >= 0)
			seg_events(e, seen[k]);
	pthread_mutex_unlock(&e->hlock);
}

static uint32_t pick_method(struct nvb_gpu *g, size_t n, uint64_t total)
{
	uint64_t avg = total / n;

	if (g->kernel_ok && n > 1 && avg <= XFER_SM_AVG_MAX)
		return NVB_GPU_COPY_SM;
	if (g->cu.cuMemcpyBatchAsync && n > 1 && avg < XFER_BATCH_AVG_MAX)
		return NVB_GPU_COPY_BATCH;
	return NVB_GPU_COPY_LOOP;
}

/* The library's stream on dev (created once; dev's context is current). */
static int lib_stream(struct seg_engine *e, int dev, CUstream *st)
{
	struct nvb_gpu *g = e->g;
	CUresult r = CUDA_SUCCESS;

	pthread_mutex_lock(&e->lock);
	if (!e->st[dev])
		r = g->cu.cuStreamCreate(&e->st[dev], CU_STREAM_NON_BLOCKING);
	*st = e->st[dev];
	pthread_mutex_unlock(&e->lock);
	return r == CUDA_SUCCESS ? 0 : cuerr(g, r, "cuStreamCreate");
}

/*
 * A batch is a one-shot: its segments are checked and held once, its
 * completion frees what it holds.  Captured into a CUDA graph, its copies
 * would run at every launch of the graph, after the segments were released
 * or revoked, and its completion would run once per launch (or never, if
 * the graph is never launched).  So a stream being captured is refused
 * (-EBUSY) before anything is queued on it: no copy, no callback (CUDA
 * does not support cuStreamAddCallback in capture, and an unsupported
 * call invalidates the capture; cuStreamSynchronize on the error path
 * would too), and the application's capture goes on unharmed.
 */
static int not_capturing(struct nvb_gpu *g, CUstream st)
{
	int cs;
	CUresult r = stream_capture(g, st, &cs);

	if (r != CUDA_SUCCESS)
		return cuerr(g, r, "nvb_gpu_xfer_submit: cuStreamIsCapturing");
	if (cs != CU_STREAM_CAPTURE_STATUS_NONE)
		return seterr(-EBUSY, "nvb_gpu_xfer_submit: the stream is %s (a batch cannot "
			      "be part of a CUDA graph)", cs == CU_STREAM_CAPTURE_STATUS_ACTIVE ?
			      "being captured" : "in an invalidated capture");
	return 0;
}

static int submit_checked(struct seg_engine *e, const struct nvb_gpu_xfer_req *reqs, size_t n,
			  const struct nvb_gpu_xfer_opts *o, struct nvb_gpu_batch *b)
{
	struct nvb_gpu *g = e->g;
	struct nvb_gpu_block *blk;
	CUcontext cur = NULL, old;
	CUstream st;
	size_t i;
	int dev = 0, err;
	CUresult r;

	g->cu.cuCtxGetCurrent(&cur);
	if (cur) {
		dev = cur_dev(g);
		if (dev < 0)
			return dev;
	}
	old = cur;	/* ctx_push without its second cuCtxGetCurrent: a call per submit */
	if (cur != g->d[dev].ctx)
		g->cu.cuCtxSetCurrent(g->d[dev].ctx);
	err = dev_ready(g, dev);
	if (err)
		goto out;
	if ((o->method == NVB_GPU_COPY_SM && !g->kernel_ok) ||
	    (o->method == NVB_GPU_COPY_BATCH && !g->cu.cuMemcpyBatchAsync)) {
		err = seterr(-EOPNOTSUPP, "nvb_gpu_xfer_submit: method %#x not available here",
			     o->method);
		goto out;
	}
	st = (CUstream)o->stream;
	if (st) {
		err = not_capturing(g, st);
		if (err)
			goto out;
	} else {
		err = lib_stream(e, dev, &st);
		if (err)
			goto out;
	}
	blk = malloc(n * sizeof(*blk));
	if (!blk) {
		err = seterr(-ENOMEM, "nvb_gpu_xfer_submit: out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		uint64_t remote = reqs[i].seg->ptr + reqs[i].offset;

		blk[i].dst = reqs[i].opcode == NVB_GPU_XFER_READ ? reqs[i].local : remote;
		blk[i].src = reqs[i].opcode == NVB_GPU_XFER_READ ? remote : reqs[i].local;
		blk[i].len = reqs[i].len;
	}
	b->method = o->method ? o->method : pick_method(g, n, b->bytes);
	err = nvb_gpu_copy_blocks(g, blk, n, st, b->method, o->flag, o->flag_val);
	free(blk);
	if (!err) {
		__atomic_add_fetch(&e->inflight_gpu, 1, __ATOMIC_ACQ_REL);
		/*
		 * A callback that runs even after a context error: with a host
		 * function only, such a batch would never complete (a wait with
		 * no timeout hangs).  The host function only where the driver
		 * has no cuStreamAddCallback (the stream is not capturing:
		 * not_capturing() said so before anything was queued).
		 */
		if (g->cu.cuStreamAddCallback)
			r = g->cu.cuStreamAddCallback(st, stream_done, b, 0);
		else
			r = g->cu.cuLaunchHostFunc(st, host_done, b);
		if (r != CUDA_SUCCESS) {
			__atomic_sub_fetch(&e->inflight_gpu, 1, __ATOMIC_ACQ_REL);
			err = cuerr(g, r, g->cu.cuStreamAddCallback ? "cuStreamAddCallback" :
				    "cuLaunchHostFunc");
		}
	}
	if (err)	/* what was queued must be over before the batch goes */
		g->cu.cuStreamSynchronize(st);
out:
	ctx_pop(g, old);
	return err;
}

int nvb_gpu_xfer_submit(struct nvb_gpu *g, const struct nvb_gpu_xfer_req *reqs, size_t n,
			const struct nvb_gpu_xfer_opts *opts, struct nvb_gpu_batch **out)
{
	struct nvb_gpu_xfer_opts o = { .sz = sizeof(o), .efd = -1 };
	struct nvb_gpu_seg *gone = NULL, *s;
	struct nvb_gpu_batch *b, **pp;
	struct seg_engine *e;
	size_t i;
	int err;

	if (!out)
		return seterr(-EINVAL, "nvb_gpu_xfer_submit: out is NULL");
	*out = NULL;
	if (!g)
		return seterr(-EINVAL, "nvb_gpu_xfer_submit: g is NULL");
	if (opts) {
		err = nvb_gpu_opts_in("nvb_gpu_xfer_submit", &o, sizeof(o), opts,
				      offsetof(struct nvb_gpu_xfer_opts, flags) + sizeof(uint32_t));
		if (err)
			return err;
	}
	if (o.flags & ~NVB_GPU_XFER_EVENTFD)
		return seterr(-EINVAL, "nvb_gpu_xfer_submit: unknown flags %#x", o.flags);
	if (o.method && o.method != NVB_GPU_COPY_SM && o.method != NVB_GPU_COPY_BATCH &&
	    o.method != NVB_GPU_COPY_LOOP)
		return seterr(-EINVAL, "nvb_gpu_xfer_submit: method %#x is not SM, BATCH or LOOP",
			      o.method);
	if ((o.flags & NVB_GPU_XFER_EVENTFD) && o.efd < 0)
		return seterr(-EBADF, "nvb_gpu_xfer_submit: NVB_GPU_XFER_EVENTFD with efd %d", o.efd);
	if (o.flag & 3)
		return seterr(-EINVAL, "nvb_gpu_xfer_submit: flag %#llx not 4-byte aligned",
			      (unsigned long long)o.flag);
	if (!n || n > XFER_MAX_REQS || !reqs)
		return seterr(-EINVAL, "nvb_gpu_xfer_submit: 1..%u requests required", XFER_MAX_REQS);
	e = seg_engine_get(g, &err);
	if (!e)
		return err;
	b = calloc(1, sizeof(*b));
	if (b) {
		b->efd = -1;	/* batch_free closes it */
		b->segs = calloc(n, sizeof(*b->segs));
		b->status = malloc(n * sizeof(*b->status));
	}
	if (!b || !b->segs || !b->status) {
		if (b)
			batch_free(b);
		return seterr(-ENOMEM, "nvb_gpu_xfer_submit: out of memory");
	}
	b->e = e;
	b->n = n;
	/*
	 * Our own duplicate: the application may close its eventfd once it no
	 * longer cares (after nvb_gpu_batch_free of a running batch), and the
	 * completion must not write 8 bytes into whatever file reuses the number.
	 */
	if ((o.flags & NVB_GPU_XFER_EVENTFD) &&
	    (b->efd = fcntl(o.efd, F_DUPFD_CLOEXEC, 0)) < 0) {
		err = -errno;	/* EBADF, or EMFILE */
		batch_free(b);
		return seterr(err, "nvb_gpu_xfer_submit: efd %d: %s", o.efd, strerror(-err));
	}
	b->user_data = o.user_data;
	refresh(e, reqs, n);

	/* every request is checked, and its segment held, under one lock */
	pthread_mutex_lock(&e->lock);
	for (i = 0; i < n; i++) {
		err = check_req(e, &reqs[i], i);
		if (err) {
			e->xs.rejected++;
			pthread_mutex_unlock(&e->lock);
			batch_free(b);
			return err;
		}
		b->bytes += reqs[i].len;
	}
	for (i = 0; i < n; i++) {
		b->segs[i] = reqs[i].seg;
		reqs[i].seg->refs++;
		b->status[i] = -EINPROGRESS;
	}
	b->t_submit = ns_now();
	b->next = e->inflight;
	e->inflight = b;
	pthread_mutex_unlock(&e->lock);

	err = submit_checked(e, reqs, n, &o, b);

	pthread_mutex_lock(&e->lock);
	if (err) {
		for (pp = &e->inflight; *pp; pp = &(*pp)->next)
			if (*pp == b) {
				*pp = b->next;
				break;
			}
		for (i = 0; i < n; i++) {
			s = seg_put(b->segs[i]);
			if (s) {
				s->next = gone;
				gone = s;
			}
		}
		e->xs.rejected++;
	} else {
		e->xs.batches++;
		e->xs.requests += n;
		e->xs.bytes += b->bytes;
		e->xs.last_method = b->method;
		if (b->method == NVB_GPU_COPY_SM)
			e->xs.sm_batches++;
		else if (b->method == NVB_GPU_COPY_BATCH)
			e->xs.batch_batches++;
		else
			e->xs.loop_batches++;
	}
	pthread_mutex_unlock(&e->lock);
	if (err) {
		while ((s = gone)) {
			gone = s->next;
			nvb_gpu__seg_destroy(s);
		}
		batch_free(b);
		return err;
	}
	*out = b;
	return 0;
}

int nvb_gpu_batch_status(const struct nvb_gpu_batch *b, int *status, size_t n)
{
	size_t i;
	int res = 0;

	if (!b)
		return seterr(-EINVAL, "nvb_gpu_batch_status: b is NULL");
	if (!__atomic_load_n(&b->done, __ATOMIC_ACQUIRE)) {
		for (i = 0; status && i < n && i < b->n; i++)
			status[i] = -EINPROGRESS;
		return -EINPROGRESS;
	}
	for (i = 0; i < b->n; i++) {
		if (status && i < n)
			status[i] = b->status[i];
		if (!res && b->status[i])
			res = b->status[i];
	}
	return res;
}

int nvb_gpu_batch_wait(struct nvb_gpu_batch *b, int64_t timeout_ns)
{
	struct seg_engine *e;
	struct timespec ts;
	int rc = 0;

	if (!b)
		return seterr(-EINVAL, "nvb_gpu_batch_wait: b is NULL");
	e = b->e;
	if (!b->done && seg_forked(e))	/* the thread that would complete it is the parent's */
		return seterr(-ECHILD, "nvb_gpu_batch_wait: batch inherited through fork()");
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (timeout_ns >= 0) {
		ts.tv_sec += timeout_ns / 1000000000;
		ts.tv_nsec += timeout_ns % 1000000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_lock(&e->lock);
	while (!b->done && rc == 0)
		rc = timeout_ns < 0 ? pthread_cond_wait(&e->cv, &e->lock) :
		     pthread_cond_timedwait(&e->cv, &e->lock, &ts);
	pthread_mutex_unlock(&e->lock);
	if (!b->done)
		return seterr(-ETIMEDOUT, "nvb_gpu_batch_wait: batch still running");
	return nvb_gpu_batch_status(b, NULL, 0);
}

uint32_t nvb_gpu_batch_method(const struct nvb_gpu_batch *b)
{
	return b->method;
}

uint64_t nvb_gpu_batch_user_data(const struct nvb_gpu_batch *b)
{
	return b->user_data;
}

void nvb_gpu_batch_free(struct nvb_gpu_batch *b)
{
	struct nvb_gpu_batch **pp;
	struct seg_engine *e;
	int now = 0;

	if (!b)
		return;
	e = b->e;
	if (seg_forked(e))	/* the parent's: nvb_gpu_close() frees the child's copy */
		return;
	pthread_mutex_lock(&e->lock);
	if (b->done) {
		for (pp = &e->done; *pp; pp = &(*pp)->next)
			if (*pp == b) {
				*pp = b->next;
				break;
			}
		now = 1;
	} else {
		b->freed = 1;	/* xfer_reap frees it */
	}
	pthread_mutex_unlock(&e->lock);
	if (now)
		batch_free(b);
}

int nvb_gpu_xfer_fd(struct nvb_gpu *g)
{
	struct seg_engine *e;
	int err;

	if (!g)
		return seterr(-EINVAL, "nvb_gpu_xfer_fd: g is NULL");
	e = seg_engine_get(g, &err);
	return e ? e->done_fd : err;
}

int nvb_gpu_xfer_stats(struct nvb_gpu *g, struct nvb_gpu_xfer_stats *out)
{
	struct nvb_gpu_xfer_stats st;
	struct nvb_gpu_batch *b;
	struct seg_engine *e;
	size_t sz;

	if (!g || !out || out->sz < offsetof(struct nvb_gpu_xfer_stats, batches) + sizeof(uint64_t) ||
	    out->sz > NVB_OPTS_MAX)
		return seterr(-EINVAL, "nvb_gpu_xfer_stats: bad arguments");
	memset(&st, 0, sizeof(st));
	e = __atomic_load_n(&g->seg, __ATOMIC_ACQUIRE);
	if (e) {
		int locked = !seg_forked(e);	/* a child must not wait for the parent's lock */

		if (locked)
			pthread_mutex_lock(&e->lock);
		st = e->xs;
		for (b = e->inflight; b; b = b->next)
			st.inflight++;
		if (locked)
			pthread_mutex_unlock(&e->lock);
	}
	st.sz = sizeof(st);
	sz = out->sz < sizeof(st) ? out->sz : sizeof(st);
	memcpy(out, &st, sz);
	out->sz = sz;
	return 0;
}
