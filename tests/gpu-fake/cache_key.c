// SPDX-License-Identifier: MIT
/*
 * The GPU layer's import cache with one struct nvb_gpu used through two
 * struct nvb handles on DIFFERENT registries (two nvbridged here; a broker
 * and the kernel module, or two brokers, in an application).  Entry ids
 * are counted per registry (from 1), so the two registries' ids coincide;
 * names coincide whenever two tenants pick the same one.  An import, a
 * segment open or a revocation through one handle must never reach what
 * came through the other: each case is an attack that, with the cache
 * keyed by entry id (or name) alone, hands registry A's memory to an
 * import from registry B, or lets B's revocation kill A's mapping.
 *
 * Exporters are child processes, one per registry, each publishing
 * random bytes; the case process is the importer.
 */
#include <dlfcn.h>
#include <poll.h>
#include <pthread.h>

#include "fake.h"
#include "cuda_api.h"

#define SZ	(2u << 20)

static char sock_b[108];
static pid_t pid_b;

/* The second registry, for this case only. */
static int broker_b(void)
{
	snprintf(sock_b, sizeof(sock_b), "/tmp/nvb-gpufake-b-%d.sock", (int)getpid());
	pid_b = fake_broker_spawn(sock_b);
	return pid_b > 0 ? 0 : -1;
}

struct exporter {
	pid_t pid;
	int up, down;	/* its reports (the entry id), our orders */
	uint64_t id;
};

enum { X_ALLOC, X_SEG, X_LEGACY };	/* what the exporter publishes */

/* A buffer of SZ bytes: nvb_gpu_alloc, or registered cudaMalloc memory (a legacy IPC handle). */
static struct nvb_gpu_buf *export_buf(struct nvb_gpu *g, int mode)
{
	CUresult (*alloc)(CUdeviceptr *, size_t);
	struct nvb_gpu_buf *b;
	CUdeviceptr p;

	if (mode != X_LEGACY)
		return nvb_gpu_alloc(g, 0, SZ, 0, &b) ? NULL : b;
	*(void **)&alloc = dlsym(dlopen("libcuda.so.1", RTLD_NOW), "cuMemAlloc_v2");
	if (!alloc || alloc(&p, SZ) || nvb_gpu_register(g, p, SZ, 0, &b))
		return NULL;
	return b;
}

/*
 * In a child: publish want[0..SZ) under name on the broker at sock (mode:
 * X_*), after dummy entries until the entry id is `target` (0: whatever
 * comes).  Reports the id, then obeys: 'u' unpublish, EOF exit.
 */
static void export_child(const char *sock, const char *name, const unsigned char *want,
			 uint64_t target, int mode, int up, int down)
{
	struct nvb_gpu_seg *s = NULL;
	struct nvb_gpu_buf *b;
	struct nvb_gpu *g;
	struct nvb *h;
	uint64_t id = 0;
	char c, pad[32];
	int seg = mode == X_SEG;

	if (fake_nvb_open_at(sock, &h) || nvb_gpu_open(NULL, &g) || !(b = export_buf(g, mode)))
		_exit(2);
	memcpy((void *)(uintptr_t)nvb_gpu_buf_ptr(b), want, SZ);
	for (int i = 0; target && id + 1 < target; i++) {
		snprintf(pad, sizeof(pad), "pad.%d", i);
		if (nvb_publish(h, pad, -1, "x", 1, NULL, &id))
			_exit(3);
	}
	if (seg ? nvb_gpu_seg_publish(g, h, name, b, NULL, &s) : nvb_gpu_publish(g, h, name, b, NVB_ACCESS_OWNER, &id))
		_exit(4);
	if (seg)
		id = nvb_gpu_seg_id(s);
	if (write(up, &id, sizeof(id)) != sizeof(id))
		_exit(5);
	while (read(down, &c, 1) == 1)
		if (c == 'u') {
			if (seg)
				nvb_gpu_seg_close(s);
			else
				nvb_gpu_unpublish(g, h, id);
			if (write(up, &id, sizeof(id)) != sizeof(id))
				_exit(6);
		}
	_exit(0);
}

static int export_start(struct exporter *x, const char *sock, const char *name,
			const unsigned char *want, uint64_t target, int mode)
{
	int up[2], down[2];

	if (pipe(up) || pipe(down))
		return -1;
	x->pid = fork();
	if (x->pid == 0) {
		close(up[0]);
		close(down[1]);
		export_child(sock, name, want, target, mode, up[1], down[0]);
	}
	close(up[1]);
	close(down[0]);
	x->up = up[0];
	x->down = down[1];
	if (x->pid < 0 || read(x->up, &x->id, sizeof(x->id)) != sizeof(x->id))
		return -1;
	return 0;
}

/* Order the exporter to unpublish; returns once it has. */
static int export_unpublish(struct exporter *x)
{
	uint64_t id;

	return write(x->down, "u", 1) == 1 && read(x->up, &id, sizeof(id)) == sizeof(id) ? 0 : -1;
}

static void export_end(struct exporter *x)
{
	close(x->down);
	close(x->up);
	waitpid(x->pid, NULL, 0);
}

static int same(struct nvb_gpu_map *m, const unsigned char *want)
{
	return nvb_gpu_map_size(m) == SZ && !memcmp((void *)(uintptr_t)nvb_gpu_map_ptr(m), want, SZ);
}

struct two {
	unsigned char *wa, *wb;		/* what A's and B's exporters publish */
	struct nvb_gpu *g;
	struct nvb *ha, *hb;
	struct exporter xa, xb;
};

/* Two registries, one exporter each (B's entry id made A's when align), one importer. */
static int two_start(struct two *t, const char *na, const char *nb, int align, int mode)
{
	memset(t, 0, sizeof(*t));
	t->wa = malloc(SZ);
	t->wb = malloc(SZ);
	if (!t->wa || !t->wb || broker_b())
		return -1;
	fake_random(t->wa, SZ);
	fake_random(t->wb, SZ);
	if (export_start(&t->xa, fake_sock, na, t->wa, 0, mode) ||
	    export_start(&t->xb, sock_b, nb, t->wb, align ? t->xa.id : 0, mode))
		return -1;
	if (nvb_gpu_open(NULL, &t->g) || fake_nvb_open(&t->ha) || fake_nvb_open_at(sock_b, &t->hb))
		return -1;
	return 0;
}

static void two_end(struct two *t)
{
	nvb_close(t->hb);
	nvb_close(t->ha);
	nvb_gpu_close(t->g);
	export_end(&t->xb);
	export_end(&t->xa);
	kill(pid_b, SIGTERM);
	waitpid(pid_b, NULL, 0);
	unlink(sock_b);
	free(t->wa);
	free(t->wb);
}

/* The same name on both registries: the import through B gets B's entry. */
static int t_same_name_two_registries(void)
{
	struct nvb_gpu_map *ma, *mb;
	struct two t;

	CHECK(two_start(&t, "kv", "kv", 0, X_ALLOC) == 0, "setup");
	OK(nvb_gpu_import(t.g, t.ha, "kv", 0, 0, &ma));
	CHECK(same(ma, t.wa));
	OK(nvb_gpu_import(t.g, t.hb, "kv", 0, 0, &mb));
	CHECK(mb != ma, "the import through B returned A's cached mapping");
	CHECK(same(mb, t.wb), "the import through B maps other bytes than B's entry");
	EXPECT(nvb_gpu_map_id(mb), t.xb.id);
	/* and each again, from the cache: still its own */
	nvb_gpu_unmap(mb);
	nvb_gpu_unmap(ma);
	OK(nvb_gpu_import(t.g, t.hb, "kv", 0, 0, &mb));
	OK(nvb_gpu_import(t.g, t.ha, "kv", 0, 0, &ma));
	CHECK(same(mb, t.wb) && same(ma, t.wa), "cached imports crossed registries");
	nvb_gpu_unmap(mb);
	nvb_gpu_unmap(ma);
	two_end(&t);
	return 0;
}

/*
 * Different names, the same entry id on both registries (mode X_LEGACY:
 * cudaMalloc memory, whose IPC opens are cached by handle: a handle names
 * one allocation, so the two registries' entries never share an open).
 */
static int entry_ids_coincide(int mode)
{
	struct nvb_gpu_map *ma, *mb;
	struct two t;

	CHECK(two_start(&t, "a.buf", "b.buf", 1, mode) == 0, "setup");
	EXPECT(t.xb.id, t.xa.id);	/* the precondition of the attack */
	OK(nvb_gpu_import(t.g, t.ha, "a.buf", 0, 0, &ma));
	CHECK(same(ma, t.wa));
	OK(nvb_gpu_import(t.g, t.hb, "b.buf", 0, 0, &mb));
	CHECK(mb != ma, "entry %llu of B was served A's mapping of entry %llu",
	      (unsigned long long)t.xb.id, (unsigned long long)t.xa.id);
	CHECK(same(mb, t.wb), "B's import maps other bytes");
	CHECK(same(ma, t.wa));
	EXPECT(nvb_gpu_map_handle_type(mb), mode == X_LEGACY ? NVB_GPU_HANDLE_LEGACY_IPC : NVB_GPU_HANDLE_POSIX_FD);
	nvb_gpu_unmap(mb);
	nvb_gpu_unmap(ma);
	two_end(&t);
	return 0;
}

static int t_entry_ids_coincide(void)
{
	return entry_ids_coincide(X_ALLOC);
}

static int t_entry_ids_coincide_legacy_ipc(void)
{
	return entry_ids_coincide(X_LEGACY);
}

/*
 * The device is part of the key: a LOCAL_ONLY import maps for the current
 * device alone, so an import that wants every device (or a LOCAL_ONLY one
 * from another device) must not be served that mapping.
 */
static int t_local_only_mapping_kept_local(void)
{
	struct nvb_gpu_map *ml, *ma, *m;
	struct two t;

	CHECK(two_start(&t, "a.loc", "b.loc", 0, X_ALLOC) == 0, "setup");
	OK(nvb_gpu_import(t.g, t.ha, "a.loc", 0, NVB_GPU_IMPORT_LOCAL_ONLY, &ml));
	OK(nvb_gpu_import(t.g, t.ha, "a.loc", 0, 0, &ma));
	CHECK(ma != ml, "an every-device import got the LOCAL_ONLY mapping");
	CHECK(same(ma, t.wa) && same(ml, t.wa));
	OK(nvb_gpu_import(t.g, t.ha, "a.loc", 0, NVB_GPU_IMPORT_LOCAL_ONLY, &m));
	CHECK(m == ma || m == ml, "a third mapping for a LOCAL_ONLY import on the same device");
	nvb_gpu_unmap(m);
	/* both are A's entry: its revocation reaches both */
	CHECK(export_unpublish(&t.xa) == 0);
	for (int i = 0; i < 500 && !nvb_gpu_map_revoked(ma); i++) {
		usleep(10000);
		nvb_gpu_poll_events(t.g, t.ha);
	}
	EXPECT(nvb_gpu_map_revoked(ma), 1);
	EXPECT(nvb_gpu_map_revoked(ml), 1);
	nvb_gpu_unmap(ma);
	nvb_gpu_unmap(ml);
	two_end(&t);
	return 0;
}

/* Two devices: a LOCAL_ONLY mapping of device 0 never serves device 1. */
static int t_local_only_per_device(void)
{
	struct nvb_gpu_map_stats st = { .sz = sizeof(st) };
	struct nvb_gpu_map *m0, *m1, *m;
	struct two t;

	setenv("NVB_FAKE_DEVICES", "2", 1);
	CHECK(two_start(&t, "a.dev", "b.dev", 0, X_ALLOC) == 0, "setup");
	EXPECT(nvb_gpu_device_count(t.g), 2);
	OK(nvb_gpu_set_device(t.g, 0));
	OK(nvb_gpu_import(t.g, t.ha, "a.dev", 0, NVB_GPU_IMPORT_LOCAL_ONLY, &m0));
	OK(nvb_gpu_set_device(t.g, 1));
	OK(nvb_gpu_import(t.g, t.ha, "a.dev", 0, NVB_GPU_IMPORT_LOCAL_ONLY, &m1));
	CHECK(m1 != m0, "device 1 was served device 0's LOCAL_ONLY mapping");
	OK(nvb_gpu_map_stats(m1, &st));
	CHECK(st.naccess == 1 && st.access_dev[0] == 1, "access %u for %d", st.naccess, st.access_dev[0]);
	CHECK(same(m0, t.wa) && same(m1, t.wa));
	OK(nvb_gpu_import(t.g, t.ha, "a.dev", 0, NVB_GPU_IMPORT_LOCAL_ONLY, &m));	/* device 1 again */
	CHECK(m == m1, "device 1's own mapping is the cached one");
	nvb_gpu_unmap(m);
	nvb_gpu_unmap(m1);
	nvb_gpu_unmap(m0);
	two_end(&t);
	return 0;
}

/* Waits for an event on h's fd (at most 5 s). */
static int event_ready(struct nvb *h)
{
	struct pollfd p = { .fd = nvb_event_fd(h), .events = POLLIN };

	return poll(&p, 1, 5000) == 1 ? 0 : -1;
}

/* B's revocation of its entry N must not revoke A's mapping of entry N. */
static int t_revocation_stays_in_its_registry(void)
{
	struct nvb_gpu_map *ma, *mb;
	struct two t;

	CHECK(two_start(&t, "a.rv", "b.rv", 1, X_ALLOC) == 0, "setup");
	EXPECT(t.xb.id, t.xa.id);
	OK(nvb_gpu_import(t.g, t.ha, "a.rv", 0, 0, &ma));
	OK(nvb_gpu_import(t.g, t.hb, "b.rv", 0, 0, &mb));	/* watches b.rv on B */
	CHECK(export_unpublish(&t.xb) == 0);
	CHECK(event_ready(t.hb) == 0, "no revocation event on B");
	CHECK(nvb_gpu_poll_events(t.g, t.hb) >= 1);
	EXPECT(nvb_gpu_map_revoked(mb), 1);
	EXPECT(nvb_gpu_map_revoked(ma), 0);	/* A's entry is still published */
	CHECK(same(ma, t.wa));
	nvb_gpu_unmap(mb);
	/* A's mapping is still the cached one for A's name */
	nvb_gpu_unmap(ma);
	OK(nvb_gpu_import(t.g, t.ha, "a.rv", 0, 0, &mb));
	CHECK(mb == ma && same(mb, t.wa), "A's cache entry was dropped by B's revocation");
	nvb_gpu_unmap(mb);
	two_end(&t);
	return 0;
}

/* Segments: the same through nvb_gpu_seg_open. */
static int t_segments_two_registries(void)
{
	struct nvb_gpu_seg *sa, *sb;
	struct two t;

	CHECK(two_start(&t, "a.seg", "b.seg", 1, X_SEG) == 0, "setup");
	EXPECT(t.xb.id, t.xa.id);
	OK(nvb_gpu_seg_open(t.g, t.ha, "a.seg", NULL, &sa));
	OK(nvb_gpu_seg_open(t.g, t.hb, "b.seg", NULL, &sb));
	CHECK(!memcmp((void *)(uintptr_t)nvb_gpu_seg_ptr(sa), t.wa, SZ));
	CHECK(nvb_gpu_seg_ptr(sb) != nvb_gpu_seg_ptr(sa), "B's segment is A's mapping");
	CHECK(!memcmp((void *)(uintptr_t)nvb_gpu_seg_ptr(sb), t.wb, SZ), "B's segment maps other bytes");
	/* B's segment revoked: A's stays */
	CHECK(export_unpublish(&t.xb) == 0);
	for (int i = 0; i < 500 && !nvb_gpu_seg_revoked(sb); i++)
		usleep(10000);
	EXPECT(nvb_gpu_seg_revoked(sb), 1);
	EXPECT(nvb_gpu_seg_revoked(sa), 0);
	nvb_gpu_seg_close(sb);
	nvb_gpu_seg_close(sa);
	two_end(&t);
	return 0;
}

/*
 * The handle-less API keeps its own id space: an nvb_gpu_import_fd() of
 * id N is not served a mapping nvb_gpu_import() made for entry N of a
 * registry, nor the other way round.
 */
static int t_import_fd_ids_are_the_callers(void)
{
	struct nvb_gpu_map *ma, *mf, *m2;
	struct nvb_gpu_meta meta;
	struct nvb_gpu_buf *b;
	unsigned char *w;
	struct two t;
	int fd;

	CHECK(two_start(&t, "a.fd", "b.fd", 0, X_ALLOC) == 0, "setup");
	OK(nvb_gpu_import(t.g, t.ha, "a.fd", 0, 0, &ma));
	OK(nvb_gpu_alloc(t.g, 0, SZ, 0, &b));
	w = (unsigned char *)(uintptr_t)nvb_gpu_buf_ptr(b);
	fake_random(w, SZ);
	OK(nvb_gpu_export(b, &fd, &meta));
	OK(nvb_gpu_import_fd(t.g, t.xa.id, fd, &meta, sizeof(meta), 0, &mf));
	CHECK(mf != ma && same(mf, w), "import_fd of id %llu got the registry's mapping",
	      (unsigned long long)t.xa.id);
	OK(nvb_gpu_import_cached(t.g, t.xa.id, &m2));	/* the caller's id space */
	CHECK(m2 == mf);
	nvb_gpu_unmap(m2);
	EXPECT(nvb_gpu_revoke(t.g, t.xa.id), 1);
	EXPECT(nvb_gpu_map_revoked(mf), 1);
	nvb_gpu_unmap(mf);
	nvb_gpu_unmap(ma);
	nvb_gpu_free(b);
	two_end(&t);
	return 0;
}

/* An entry fetched through h: its fd, blob (cap bytes of room) and id, as Python's import_tensor does. */
static int fetch_blob(struct nvb *h, const char *name, void *blob, size_t cap, size_t *len,
		      uint64_t *id, int *fd)
{
	struct nvb_fetch_opts fo = { .sz = sizeof(fo) };
	struct nvb_entry ent;
	int err;

	memset(&ent, 0, sizeof(ent));
	err = nvb_fetch(h, name, &fo, blob, cap, &ent, fd);
	*id = ent.id;
	*len = ent.blob_len;
	return err;
}

static int fetch_entry(struct nvb *h, const char *name, struct nvb_gpu_meta *meta, uint64_t *id, int *fd)
{
	size_t len;

	return fetch_blob(h, name, meta, sizeof(*meta), &len, id, fd);
}

/*
 * nvb_gpu_import_fd_on / nvb_gpu_revoke_on: the handle-less calls for an
 * entry fetched through a handle, keyed with its registry.
 */
static int t_import_fd_on(void)
{
	struct nvb_gpu_map *ma, *mfa, *mfb, *m;
	struct nvb_gpu_meta meta_a, meta_b;
	uint64_t ida, idb;
	int fda, fdb;
	struct two t;

	CHECK(two_start(&t, "a.on", "b.on", 1, X_ALLOC) == 0, "setup");
	OK(nvb_gpu_import(t.g, t.ha, "a.on", 0, 0, &ma));
	OK(fetch_entry(t.ha, "a.on", &meta_a, &ida, &fda));
	OK(fetch_entry(t.hb, "b.on", &meta_b, &idb, &fdb));
	EXPECT(idb, ida);
	OK(nvb_gpu_import_fd_on(t.g, t.ha, ida, fda, &meta_a, sizeof(meta_a), 0, &mfa));
	CHECK(mfa == ma, "the same entry of the same registry: the cached mapping");
	OK(nvb_gpu_import_fd_on(t.g, t.hb, idb, fdb, &meta_b, sizeof(meta_b), 0, &mfb));
	CHECK(mfb != ma && same(mfb, t.wb), "B's entry was served A's mapping");
	EXPECT(nvb_gpu_import_cached(t.g, ida, &m), -ENOENT);	/* not the caller's ids */
	/* a revocation read through B reaches B's mapping only */
	EXPECT(nvb_gpu_revoke_on(t.g, t.hb, idb), 1);
	EXPECT(nvb_gpu_map_revoked(mfb), 1);
	EXPECT(nvb_gpu_map_revoked(ma), 0);
	EXPECT(nvb_gpu_revoke_on(t.g, t.hb, idb), 0);
	/* bad input */
	m = (struct nvb_gpu_map *)&m;
	strcpy((char *)nvb_gpu_last_error(), "poison");
	EXPECT(nvb_gpu_import_fd_on(t.g, NULL, ida, fda, &meta_a, sizeof(meta_a), 0, &m), -EINVAL);
	CHECK(m == NULL && strstr(nvb_gpu_last_error(), "nvb_gpu_import_fd_on"), "%s", nvb_gpu_last_error());
	EXPECT(nvb_gpu_import_fd_on(NULL, t.ha, ida, fda, &meta_a, sizeof(meta_a), 0, &m), -EINVAL);
	EXPECT(nvb_gpu_import_fd_on(t.g, t.ha, ida, fda, &meta_a, sizeof(meta_a), 0, NULL), -EINVAL);
	EXPECT(nvb_gpu_import_fd_on(t.g, t.ha, ida, fda, &meta_a, sizeof(meta_a), 1U << 7, &m), -EINVAL);
	EXPECT(nvb_gpu_revoke_on(t.g, NULL, ida), -EINVAL);
	EXPECT(nvb_gpu_revoke_on(NULL, t.ha, ida), -EINVAL);
	EXPECT(nvb_gpu_map_revoked(ma), 0);
	close(fda);
	close(fdb);
	nvb_gpu_unmap(mfb);
	nvb_gpu_unmap(mfa);
	nvb_gpu_unmap(ma);
	two_end(&t);
	return 0;
}

/*
 * Legacy IPC opens are cached by handle AND device: CUDA lets a handle be
 * opened once per device's context, and the mapping belongs to the context
 * that opened it.  Two imports of one handle whose metadata name different
 * owning devices (a publisher may write any UUID) are two opens, each
 * closed in its own context: keyed by the handle alone, the second reused
 * the first's open and closed it from the other device's context, which
 * CUDA (and the stand-in) refuses, leaking the mapping.
 */
static int t_legacy_ipc_open_per_device(void)
{
	CUresult (*range)(CUdeviceptr *, size_t *, CUdeviceptr);
	CUresult (*getctx)(CUcontext *);
	struct nvb_gpu_map *m0, *m1;
	unsigned char blob[512];
	CUcontext before = NULL, after = (CUcontext)(uintptr_t)1;
	CUdeviceptr p0, p1;
	size_t len;
	uint64_t id;
	void *cu;
	struct two t;
	int fd;

	setenv("NVB_FAKE_DEVICES", "2", 1);
	cu = dlopen("libcuda.so.1", RTLD_NOW);
	*(void **)&range = dlsym(cu, "cuMemGetAddressRange_v2");
	*(void **)&getctx = dlsym(cu, "cuCtxGetCurrent");
	CHECK(range && getctx);
	CHECK(two_start(&t, "a.ipc", "b.ipc", 0, X_LEGACY) == 0, "setup");
	EXPECT(nvb_gpu_device_count(t.g), 2);
	OK(fetch_blob(t.ha, "a.ipc", blob, sizeof(blob), &len, &id, &fd));
	CHECK(fd < 0 && len >= sizeof(struct nvb_gpu_meta_range));
	getctx(&before);
	OK(nvb_gpu_import_fd(t.g, 0, -1, blob, len, 0, &m0));
	blob[offsetof(struct nvb_gpu_meta_range, uuid)] = 0xb0;	/* device 1's UUID */
	OK(nvb_gpu_import_fd(t.g, 0, -1, blob, len, 0, &m1));
	getctx(&after);
	CHECK(after == before, "the caller's context changed");
	CHECK(same(m0, t.wa) && same(m1, t.wa), "one handle, one allocation: the same bytes");
	p0 = nvb_gpu_map_ptr(m0);
	p1 = nvb_gpu_map_ptr(m1);
	CHECK(p0 != p1, "device 1's import reused device 0's open");
	nvb_gpu_unmap(m0);
	nvb_gpu_unmap(m1);
	getctx(&after);
	CHECK(after == before, "the caller's context changed");
	CHECK(range(NULL, NULL, p0) != CUDA_SUCCESS, "device 0's IPC mapping was never closed");
	CHECK(range(NULL, NULL, p1) != CUDA_SUCCESS, "device 1's IPC mapping was never closed");
	two_end(&t);
	return 0;
}

/*
 * The 1.0 way of importing by hand (bench/phase_import.c does it): watch,
 * nvb_fetch through h, nvb_gpu_import_fd() keyed by the entry's id, and
 * nvb_gpu_poll_events(g, h) to apply revocations.  The cache keeps such a
 * mapping in the caller's id space; a revocation read through h must
 * still reach it, or the mapping is never marked revoked (aborted waits
 * hang) and the cache keeps serving the revoked entry.  Revoking a
 * caller's id that merely coincides is the safe error; not revoking is not.
 */
static int t_poll_events_revokes_import_fd(void)
{
	struct nvb_gpu_map *m, *m2 = NULL;
	struct nvb_gpu_meta meta;
	uint64_t id, wid;
	struct two t;
	int fd;

	CHECK(two_start(&t, "a.v10", "b.v10", 0, X_ALLOC) == 0, "setup");
	OK(nvb_watch(t.ha, "a.v10", 0, &wid));
	OK(fetch_entry(t.ha, "a.v10", &meta, &id, &fd));
	OK(nvb_gpu_import_fd(t.g, id, fd, &meta, sizeof(meta), 0, &m));
	close(fd);
	CHECK(same(m, t.wa));
	CHECK(export_unpublish(&t.xa) == 0);
	CHECK(event_ready(t.ha) == 0, "no revocation event on A");
	CHECK(nvb_gpu_poll_events(t.g, t.ha) >= 1);
	EXPECT(nvb_gpu_map_revoked(m), 1);
	EXPECT(nvb_gpu_import_cached(t.g, id, &m2), -ENOENT);	/* the revoked entry is not served */
	if (m2)
		nvb_gpu_unmap(m2);
	m2 = NULL;
	/* a cache hit needs no fd: the revoked mapping must not come back that way */
	EXPECT(nvb_gpu_import_fd(t.g, id, -1, &meta, sizeof(meta), 0, &m2), -EBADF);
	CHECK(m2 == NULL);
	nvb_gpu_unmap(m);
	two_end(&t);
	return 0;
}

/*
 * A revocation applied while an import of that entry is still in its CUDA
 * calls (another thread's nvb_gpu_poll_events, or another import through
 * the same handle, which polls first): the cache has nothing to revoke
 * yet, and the import then caches the revoked entry's mapping as live.
 * The import must come back with its mapping marked revoked, and the next
 * import of the name must not be served it.
 */
struct imp {
	struct two *t;
	const char *name;
	struct nvb_gpu_map *m;
	int err;
};

static void *import_thread(void *arg)
{
	struct imp *a = arg;

	a->err = nvb_gpu_import(a->t->g, a->t->ha, a->name, 0, 0, &a->m);
	return NULL;
}

static int t_revoked_during_import(void)
{
	struct imp a = { .name = "a.race" };
	struct nvb_gpu_map *m2 = NULL;
	int gw[2], gr[2], err;
	char env[32], c;
	struct two t;
	pthread_t th;

	CHECK(two_start(&t, "a.race", "b.race", 0, X_ALLOC) == 0, "setup");
	a.t = &t;
	CHECK(pipe(gw) == 0 && pipe(gr) == 0);
	snprintf(env, sizeof(env), "%d,%d", gw[1], gr[0]);
	setenv("NVB_FAKE_IMPORT_GATE", env, 1);
	CHECK(pthread_create(&th, NULL, import_thread, &a) == 0);
	CHECK(read(gw[0], &c, 1) == 1, "the import never reached CUDA");	/* fetched, now importing */
	unsetenv("NVB_FAKE_IMPORT_GATE");
	CHECK(export_unpublish(&t.xa) == 0);
	CHECK(event_ready(t.ha) == 0, "no revocation event on A");
	CHECK(nvb_gpu_poll_events(t.g, t.ha) >= 1);
	CHECK(write(gr[1], "g", 1) == 1);
	pthread_join(th, NULL);
	OK(a.err);
	EXPECT(nvb_gpu_map_revoked(a.m), 1);
	err = nvb_gpu_import(t.g, t.ha, "a.race", 0, 0, &m2);
	CHECK(m2 != a.m, "the revoked entry was served from the cache");
	EXPECT(err, -ENOENT);
	if (m2)
		nvb_gpu_unmap(m2);
	nvb_gpu_unmap(a.m);
	close(gw[0]);
	close(gw[1]);
	close(gr[0]);
	close(gr[1]);
	two_end(&t);
	return 0;
}

/*
 * What revoked_during_import remembers is (registry, id): nvb_gpu_revoke()
 * names no registry, so B's live entry of the same id must still import
 * as live afterwards (A's mapping of it is revoked, as documented).
 */
static int t_revoke_any_spares_later_imports(void)
{
	struct nvb_gpu_map *ma, *mb;
	struct two t;

	CHECK(two_start(&t, "a.any", "b.any", 1, X_ALLOC) == 0, "setup");
	EXPECT(t.xb.id, t.xa.id);
	OK(nvb_gpu_import(t.g, t.ha, "a.any", 0, 0, &ma));
	EXPECT(nvb_gpu_revoke(t.g, t.xa.id), 1);
	EXPECT(nvb_gpu_map_revoked(ma), 1);
	OK(nvb_gpu_import(t.g, t.hb, "b.any", 0, 0, &mb));
	EXPECT(nvb_gpu_map_revoked(mb), 0);
	CHECK(same(mb, t.wb));
	nvb_gpu_unmap(mb);
	nvb_gpu_unmap(ma);
	two_end(&t);
	return 0;
}

/*
 * A handle per job (open, import, unmap, close; Python's "with
 * nvbridge.open() as h" in a loop): each handle is a registry of its own,
 * so a closed handle's cached mappings and names can never be found
 * again.  They must not pile up: every job would otherwise map the entry
 * anew and leave one more mapping (address space, a reference on the
 * exporter's memory) and one more name node behind, until nvb_gpu_close.
 */
static int t_closed_handles_leave_nothing_cached(void)
{
	struct nvb_gpu_map *m;
	struct two t;
	struct nvb *h;
	int i, n;

	CHECK(two_start(&t, "a.job", "b.job", 0, X_ALLOC) == 0, "setup");
	for (i = 0; i < 20; i++) {
		OK(fake_nvb_open(&h));
		OK(nvb_gpu_import(t.g, h, "a.job", 0, 0, &m));
		CHECK(same(m, t.wa));
		nvb_gpu_unmap(m);
		nvb_close(h);
	}
	n = nvb_gpu_cache_trim(t.g);
	CHECK(n <= 1, "%d mappings of one entry left cached by 20 closed handles", n);
	two_end(&t);
	return 0;
}

/*
 * A thread with no current context: the import picks device 0 (its
 * LOCAL_ONLY device, as the cache lookup does) but must leave the thread
 * as it found it, without a context (the library's rule for every call).
 */
struct noctx {
	struct two *t;
	CUresult (*getctx)(CUcontext *);
	CUcontext before, after_fd, after_name;
	int err_fd, err_name;
};

static void *noctx_thread(void *arg)
{
	struct noctx *a = arg;
	struct nvb_gpu_meta meta;
	struct nvb_gpu_map *m;
	uint64_t id;
	int fd;

	a->getctx(&a->before);
	a->err_fd = fetch_entry(a->t->ha, "a.ctx", &meta, &id, &fd);
	if (!a->err_fd)
		a->err_fd = nvb_gpu_import_fd(a->t->g, 0, fd, &meta, sizeof(meta), NVB_GPU_IMPORT_LOCAL_ONLY, &m);
	a->getctx(&a->after_fd);
	if (!a->err_fd) {
		close(fd);
		nvb_gpu_unmap(m);
	}
	a->err_name = nvb_gpu_import(a->t->g, a->t->ha, "a.ctx", 0, 0, &m);
	a->getctx(&a->after_name);
	if (!a->err_name)
		nvb_gpu_unmap(m);
	return NULL;
}

static int t_import_leaves_no_context(void)
{
	struct noctx a = { .after_fd = (CUcontext)(uintptr_t)1, .after_name = (CUcontext)(uintptr_t)1 };
	struct two t;
	pthread_t th;

	*(void **)&a.getctx = dlsym(dlopen("libcuda.so.1", RTLD_NOW), "cuCtxGetCurrent");
	CHECK(a.getctx);
	CHECK(two_start(&t, "a.ctx", "b.ctx", 0, X_ALLOC) == 0, "setup");
	a.t = &t;
	CHECK(pthread_create(&th, NULL, noctx_thread, &a) == 0);
	pthread_join(th, NULL);
	CHECK(a.before == NULL, "a new thread has a context");
	OK(a.err_fd);
	OK(a.err_name);
	CHECK(a.after_fd == NULL, "nvb_gpu_import_fd left context %p current", (void *)a.after_fd);
	CHECK(a.after_name == NULL, "nvb_gpu_import left context %p current", (void *)a.after_name);
	two_end(&t);
	return 0;
}

static const struct nvb_case cases[] = {
	{ "same_name_two_registries", t_same_name_two_registries },
	{ "entry_ids_coincide", t_entry_ids_coincide },
	{ "entry_ids_coincide_legacy_ipc", t_entry_ids_coincide_legacy_ipc },
	{ "local_only_mapping_kept_local", t_local_only_mapping_kept_local },
	{ "local_only_per_device", t_local_only_per_device },
	{ "revocation_stays_in_its_registry", t_revocation_stays_in_its_registry },
	{ "segments_two_registries", t_segments_two_registries },
	{ "import_fd_ids_are_the_callers", t_import_fd_ids_are_the_callers },
	{ "import_fd_on_and_revoke_on", t_import_fd_on },
	{ "legacy_ipc_open_per_device", t_legacy_ipc_open_per_device },
	{ "poll_events_revokes_import_fd", t_poll_events_revokes_import_fd },
	{ "revoked_during_import", t_revoked_during_import },
	{ "revoke_any_spares_later_imports", t_revoke_any_spares_later_imports },
	{ "closed_handles_leave_nothing_cached", t_closed_handles_leave_nothing_cached },
	{ "import_leaves_no_context", t_import_leaves_no_context },
};

int main(int argc, char **argv)
{
	return fake_main("gpu-cache-key", cases, sizeof(cases) / sizeof(cases[0]), argc, argv, NULL);
}
