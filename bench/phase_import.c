// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench: import cost (a first import at a quiet point, each CUDA
 * step) and the legacy CUDA IPC baseline.
 */
#define _GNU_SOURCE
#include "bench.h"

/* Where an import's time went: fetch/rendezvous (the rest) and each CUDA step. */
void report_import_stages(struct side *s, struct nvb_gpu_map *m, double total_s,
				 const char *method)
{
	struct nvb_gpu_map_stats st;
	double cuda_us = 0;
	char key[48];
	unsigned int k;

	memset(&st, 0, sizeof(st));
	st.sz = sizeof(st);
	if (nvb_gpu_map_stats(m, &st))
		return;
	report(s, "import_import_us", method, nvb_gpu_map_size(m), st.import_ns / 1e3, "us");
	report(s, "import_reserve_us", method, nvb_gpu_map_size(m), st.reserve_ns / 1e3, "us");
	report(s, "import_map_us", method, nvb_gpu_map_size(m), st.map_ns / 1e3, "us");
	cuda_us = (st.import_ns + st.reserve_ns + st.map_ns) / 1e3;
	for (k = 0; k < st.naccess && k < 4; k++) {
		snprintf(key, sizeof(key), "import_access_gpu%d_us", st.access_dev[k]);
		report(s, key, method, nvb_gpu_map_size(m), st.access_ns[k] / 1e3, "us");
		cuda_us += st.access_ns[k] / 1e3;
	}
	report(s, "import_rest_us", method, nvb_gpu_map_size(m), total_s * 1e6 - cuda_us, "us");
}

/*
 * A first import of a fresh 1 GiB entry at the same point of the run as the
 * legacy IPC baseline (contexts and peer paths equally warm for both).
 */
static unsigned int late_seq;	/* one name per call: no revocation of the last in the way */

void late_import(struct side *s)
{
	unsigned int seq = late_seq++;
	struct nvb_gpu_buf *b = NULL;
	struct nvb_gpu_map *m = NULL;
	char name[80];
	double t0, t1;
	uint64_t id = 0;

	if (s->role == 0) {
		NV(s, nvb_gpu_alloc(s->g, s->dev, GiB, 0, &b));
#ifdef NVB_BENCH_LIB
		if (opt.use_lib) {
			snprintf(name, sizeof(name), "%s.late%u", s->name_self, seq);
			NV(s, nvb_gpu_publish(s->g, s->h, name, b, NVB_ACCESS_OWNER, &id));
			barrier(s);	/* published: the importer's clock starts now */
		} else
#endif
		{
			struct nvb_gpu_meta meta;
			int fd;

			NV(s, nvb_gpu_export(b, &fd, &meta));
			barrier(s);
			ctl_send(s, &meta, sizeof(meta), fd);
		}
		barrier(s);
#ifdef NVB_BENCH_LIB
		if (opt.use_lib)
			nvb_unpublish(s->h, id, NULL);
#endif
		nvb_gpu_free(b);
		return;
	}
	barrier(s);
#ifdef NVB_BENCH_LIB
	if (opt.use_lib) {
		snprintf(name, sizeof(name), "%s.late%u", s->name_peer, seq);
		/*
		 * Handle revocations left by earlier phases first: releasing
		 * those mappings is real work, but not this import's.
		 */
		nvb_gpu_poll_events(s->g, s->h);
		t0 = now_s();
		{
			/* nvb_gpu_import()'s steps, each timed */
			struct nvb_fetch_opts fo = { .sz = sizeof(fo),
				.flags = NVB_FETCH_WAIT, .timeout_ns = 10 * 1000000000LL };
			unsigned char blob[512];
			struct nvb_entry ent;
			double ta, tb;
			uint64_t wid;
			int fd = -1, err;

			err = nvb_watch(s->h, name, 0, &wid);
			ta = now_s();
			if (err && err != -EEXIST)
				NV(s, err);
			NV(s, nvb_fetch(s->h, name, &fo, blob, sizeof(blob), &ent, &fd));
			tb = now_s();
			NV(s, nvb_gpu_import_fd(s->g, ent.id, fd, blob, ent.blob_len, 0, &m));
			if (fd >= 0)
				close(fd);
			report(s, "import_watch_us", "nvbridge-late", GiB, (ta - t0) * 1e6, "us");
			report(s, "import_fetch_us", "nvbridge-late", GiB, (tb - ta) * 1e6, "us");
			report(s, "import_fd_us", "nvbridge-late", GiB, (now_s() - tb) * 1e6, "us");
		}
		t1 = now_s();
	} else
#endif
	{
		struct nvb_gpu_meta meta;
		int fd, n;

		n = ctl_recv(s, &meta, sizeof(meta), &fd);
		t0 = now_s();
		NV(s, nvb_gpu_import_fd(s->g, 0, fd, &meta, (size_t)n, 0, &m));
		t1 = now_s();
		close(fd);
	}
	(void)id;
	(void)name;
	(void)seq;
	report(s, "import_ms", "nvbridge-late", nvb_gpu_map_size(m), (t1 - t0) * 1e3, "ms");
	report_import_stages(s, m, t1 - t0, "nvbridge-late");
	nvb_gpu_unmap(m);
	nvb_gpu_cache_trim(s->g);
	barrier(s);
}

/* Legacy CUDA IPC: exporter cuMemAlloc + cuIpcGetMemHandle, importer opens. */
void legacy_ipc(struct side *s)
{
	CUipcMemHandle ih;
	CUdeviceptr p;
	double t0, t1;

	if (s->role == 0) {
		CK(s, cuMemAlloc(&p, GiB));
		t0 = now_s();
		CK(s, cuIpcGetMemHandle(&ih, p));
		t1 = now_s();
		ctl_send(s, &ih, sizeof(ih), -1);
		ctl_send(s, &t1, sizeof(t1), -1);
		(void)t0;
		barrier(s);
		s->ipc_buf = p;		/* freed by legacy_ipc_release(), after the co-run */
		return;
	}
	ctl_recv(s, &ih, sizeof(ih), NULL);
	ctl_recv(s, &t1, sizeof(t1), NULL);
	t0 = now_s();
	CK(s, cuIpcOpenMemHandle(&p, ih, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
	t1 = now_s();
	report(s, "import_ms", "legacy-ipc", GiB, (t1 - t0) * 1e3, "ms");
	{
		unsigned int it = iters_for(GiB), k;

		CK(s, cuMemcpyDtoDAsync(p, s->ldata, GiB, s->st[0]));
		CK(s, cuEventRecord(s->e0, s->st[0]));
		for (k = 0; k < it; k++)
			CK(s, cuMemcpyDtoDAsync(p, s->ldata, GiB, s->st[0]));
		CK(s, cuEventRecord(s->e1, s->st[0]));
		report(s, "write", "legacy-ipc", GiB, (double)GiB * it / (ev_ms(s) * 1e-3) / 1e9, "GB/s");
	}
	s->ipc_map = p;		/* the co-run phase copies into it too */
	barrier(s);
}

/* After the co-run phase, on both sides (a barrier between them before). */
void legacy_ipc_release(struct side *s)
{
	double t0;

	if (s->ipc_map) {
		t0 = now_s();
		CK(s, cuIpcCloseMemHandle(s->ipc_map));
		report(s, "ipc_close_ms", "legacy-ipc", GiB, (now_s() - t0) * 1e3, "ms");
		s->ipc_map = 0;
	}
	if (s->ipc_buf) {
		CK(s, cuMemFree(s->ipc_buf));
		s->ipc_buf = 0;
	}
}
