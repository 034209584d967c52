// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench: one child process: set-up, publish + import, the phases in
 * trials, the co-run phase.
 */
#define _GNU_SOURCE
#include "bench.h"

static void corun_report(void *ctx, const char *key, const char *method, uint64_t size,
			 double value, const char *unit)
{
	report(ctx, key, method, size, value, unit);
}

static void corun_progress(void *ctx, const char *what)
{
	progress(ctx, what);
}

/* The co-run phase (corun.c) on the importer's GPU; why it could not run goes to the parent. */
static void corun_run(struct side *s)
{
	struct corun_env e;
	char why[300], msg[320];

	memset(&e, 0, sizeof(e));
	e.cu = &s->cu;
	e.g = s->g;
	e.dev = s->dev;
	e.local = s->ldata;
	e.remote = s->rdata;
	e.remote_ipc = s->ipc_map;
	e.quick = opt.quick;
	e.trials = opt.trials;
	e.proxy_ctas = opt.proxy_ctas;
	e.cublas = opt.cublas;
	e.ctx = s;
	e.report = corun_report;
	e.progress = corun_progress;
	if (corun_phase(&e, why, sizeof(why))) {
		snprintf(msg, sizeof(msg), "C %s\n", why);
		if (write(s->res, msg, strlen(msg)) < 0)
			_exit(1);
	}
	NV(s, nvb_gpu_set_device(s->g, s->dev));
}

void child(int role, int ctl, int res, const char *tag)
{
	struct side S, *s = &S;
	uint64_t sizes[16], size;
	int nsizes = 0, i;
	unsigned int trial;
	double t;
	char dname[128];

	memset(s, 0, sizeof(*s));
	s->role = role;
	s->ctl = ctl;
	s->res = res;
	s->dev = role ? opt.gpu_b : opt.gpu_a;
	s->peer_dev = role ? opt.gpu_a : opt.gpu_b;
	snprintf(s->name_self, sizeof(s->name_self), "nvbench.%s.%c", tag, role ? 'B' : 'A');
	snprintf(s->name_peer, sizeof(s->name_peer), "nvbench.%s.%c", tag, role ? 'A' : 'B');
	for (size = opt.min_size; size <= opt.max_size; size *= 4)
		sizes[nsizes++] = size;

	{
		char msg[256];

		if (nvb_cuda_load(&s->cu, NULL, msg, sizeof(msg)))
			die(s, "%s", msg);
	}
	{
		double t0 = now_s();

		NV(s, nvb_gpu_open(NULL, &s->g));
		if (role == 1)
			report(s, "gpu_open_ms", "nvbridge", 0, (now_s() - t0) * 1e3, "ms");
	}
	if (!opt.gpus_given && nvb_gpu_device_count(s->g) == 1)
		s->dev = s->peer_dev = 0;	/* one GPU: both processes on it */
	if (s->dev >= nvb_gpu_device_count(s->g) || s->peer_dev >= nvb_gpu_device_count(s->g))
		die(s, "need GPUs %d and %d, have %d", opt.gpu_a, opt.gpu_b,
		    nvb_gpu_device_count(s->g));
	if (role == 1) {
		char msg[64];

		snprintf(msg, sizeof(msg), "I gpus %d %d\n", s->peer_dev, s->dev);
		if (write(res, msg, strlen(msg)) < 0)
			_exit(1);
	}
	NV(s, nvb_gpu_set_device(s->g, s->dev));
	for (i = 0; i < NSTREAMS; i++)
		CK(s, cuStreamCreate(&s->st[i], CU_STREAM_NON_BLOCKING));
	CK(s, cuEventCreate(&s->e0, CU_EVENT_DEFAULT));
	CK(s, cuEventCreate(&s->e1, CU_EVENT_DEFAULT));
	if (role == 1) {
		char msg[200];

		nvb_gpu_device_name(s->g, s->dev, dname, sizeof(dname));
		snprintf(msg, sizeof(msg), "I device %s\nI driver %d\nI kernel %d\n", dname,
			 nvb_gpu_driver_version(s->g), nvb_gpu_has_kernel(s->g));
		if (write(res, msg, strlen(msg)) < 0)
			_exit(1);
	}
#ifdef NVB_BENCH_LIB
	if (opt.use_lib) {
		struct nvb_opts o;

		memset(&o, 0, sizeof(o));
		o.sz = sizeof(o);
		o.socket_path = opt.socket;
		NV(s, nvb_open(&o, &s->h));
		if (role == 1) {
			char msg[100];

			snprintf(msg, sizeof(msg), "I backend %s\n", nvb_backend_name(nvb_backend(s->h)));
			if (write(res, msg, strlen(msg)) < 0)
				_exit(1);
		}
	}
#endif
	s->data_size = opt.max_size < GiB ? GiB : opt.max_size;
	progress(s, "allocate + publish");
	NV(s, nvb_gpu_alloc(s->g, s->dev, FLAGS_BYTES + s->data_size, 0, &s->buf));
	if (role == 1) {
		char msg[160];

		snprintf(msg, sizeof(msg), "I alloc %s%s\n",
			 nvb_gpu_buf_handle_types(s->buf) & NVB_GPU_HANDLE_FABRIC ?
			 "FABRIC|POSIX_FD" : "POSIX_FD (FABRIC trial: ",
			 nvb_gpu_buf_handle_types(s->buf) & NVB_GPU_HANDLE_FABRIC ? "" :
			 nvb_cuda_errname(&s->cu, nvb_gpu_buf_fabric_error(s->buf)));
		if (!(nvb_gpu_buf_handle_types(s->buf) & NVB_GPU_HANDLE_FABRIC))
			strcat(msg + strlen(msg) - 1, ")\n");
		if (write(res, msg, strlen(msg)) < 0)
			_exit(1);
	}
	s->lflags = nvb_gpu_buf_ptr(s->buf);
	s->ldata = s->lflags + FLAGS_BYTES;
	CK(s, cuMemsetD32Async(s->lflags, 0, FLAGS_BYTES / 4, s->st[0]));
	CK(s, cuMemsetD32Async(s->ldata, role ? 0xb0b0b0b0 : 0xa0a0a0a0, s->data_size / 4, s->st[0]));
	sync_all(s);

	/*
	 * Exporter publishes first, importer imports, then the other way.  The
	 * first barrier keeps the importer's clock from running while the
	 * exporter is still allocating: a FETCH that waits for the name would
	 * count the other process's set-up (13-35 ms in some runs before).  The
	 * socketpair stand-in starts its clock once the descriptor is in.
	 */
	if (role == 0) {
		rdv_publish(s);
		if (opt.use_lib)
			barrier(s);
		barrier(s);
		rdv_import(s, &s->map, 0);
	} else {
		if (opt.use_lib)
			barrier(s);
		t = rdv_import(s, &s->map, 0);
		report(s, "import_ms", "nvbridge", nvb_gpu_map_size(s->map), t * 1e3, "ms");
		report_import_stages(s, s->map, t, "nvbridge");
		{
			struct nvb_gpu_map *m2;
			unsigned int k, n = 1000;
			double tot = 0;

			for (k = 0; k < n; k++) {
				tot += rdv_reimport(s, &m2);
				nvb_gpu_unmap(m2);
			}
			report(s, "reimport_us", "nvbridge", nvb_gpu_map_size(s->map), tot / n * 1e6, "us");
		}
		barrier(s);
		rdv_publish(s);
	}
	s->rflags = nvb_gpu_map_ptr(s->map);
	s->rdata = s->rflags + FLAGS_BYTES;
	if (role == 1) {
		char msg[80];

		snprintf(msg, sizeof(msg), "I import %s\n",
			 nvb_gpu_map_handle_type(s->map) == NVB_GPU_HANDLE_FABRIC ? "fabric" : "fd");
		if (write(res, msg, strlen(msg)) < 0)
			_exit(1);
	}
	barrier(s);

	/*
	 * Every phase runs opt.trials times, the cheap ones and the costly
	 * ones alike: the parent reports the median and the spread.
	 */
	for (trial = 0; trial < opt.trials; trial++) {
		char tp[48];

		snprintf(tp, sizeof(tp), "trial %u of %u", trial + 1, opt.trials);
		progress(s, tp);
		/* bulk write / read, importer only; the exporter idles */
		if (role == 1) {
			for (i = 0; i < nsizes; i++) {
				char p[64];

				snprintf(p, sizeof(p), "write/read %llu KiB", (unsigned long long)sizes[i] >> 10);
				progress(s, p);
				bw_one_side(s, "write", s->rdata, s->ldata, sizes[i], NVB_GPU_COPY_CE, 1, "nvbridge-ce");
				bw_one_side(s, "read", s->ldata, s->rdata, sizes[i], NVB_GPU_COPY_CE, 1, "nvbridge-ce");
				if (sizes[i] >= 8 * MiB) {
					bw_one_side(s, "write", s->rdata, s->ldata, sizes[i], NVB_GPU_COPY_CE,
						    NSTREAMS, "nvbridge-ce-4streams");
					bw_one_side(s, "read", s->ldata, s->rdata, sizes[i], NVB_GPU_COPY_CE,
						    NSTREAMS, "nvbridge-ce-4streams");
				}
				if (nvb_gpu_has_kernel(s->g) && sizes[i] >= 16 * MiB) {
					static const unsigned int pcts[] = { 10, 20, 30 };
					unsigned int q;

					for (q = 0; q < 3; q++) {
						char mname[40];
						uint32_t fl = NVB_GPU_COPY_CE | NVB_GPU_COPY_SM |
							      NVB_GPU_COPY_SM_PCT(pcts[q]);

						snprintf(mname, sizeof(mname), "nvbridge-hybrid%u", pcts[q]);
						bw_one_side(s, "write", s->rdata, s->ldata, sizes[i], fl, NSTREAMS, mname);
						bw_one_side(s, "read", s->ldata, s->rdata, sizes[i], fl, NSTREAMS, mname);
					}
				}
				if (nvb_gpu_has_kernel(s->g)) {
					bw_one_side(s, "write", s->rdata, s->ldata, sizes[i], NVB_GPU_COPY_SM, 1, "nvbridge-sm");
					bw_one_side(s, "read", s->ldata, s->rdata, sizes[i], NVB_GPU_COPY_SM, 1, "nvbridge-sm");
				}
			}
			progress(s, "pipelined 4 KiB puts");
			pipelined_puts(s);
			progress(s, "scattered blocks");
			{
				static const uint64_t bs[] = { 4096, 16384, 65536, 262144, 1048576 };
				unsigned int k;

				for (k = 0; k < sizeof(bs) / sizeof(bs[0]); k++) {
					if (bs[k] * opt.blk_count * 2 > s->data_size)
						continue;
					blocks(s, bs[k], opt.blk_count, 1);
					blocks(s, bs[k], opt.blk_count, 0);
				}
				if (opt.blk_size != 65536 && opt.blk_size * opt.blk_count * 2 <= s->data_size) {
					blocks(s, opt.blk_size, opt.blk_count, 1);
					blocks(s, opt.blk_size, opt.blk_count, 0);
				}
			}
			progress(s, "same-process baseline");
			same_process(s, sizes, nsizes);
		}
		barrier(s);
		/* bidirectional: both push */
		for (i = 0; i < nsizes; i++) {
			if (sizes[i] < MiB)
				continue;
			progress(s, "bidirectional");
			bw_bidir(s, sizes[i], "nvbridge-ce", NVB_GPU_COPY_CE);
			if (nvb_gpu_has_kernel(s->g) && sizes[i] >= 64 * MiB)
				bw_bidir(s, sizes[i], "nvbridge-hybrid20", NVB_GPU_COPY_CE | NVB_GPU_COPY_SM |
					 NVB_GPU_COPY_SM_PCT(20));
		}
		progress(s, "put + completion latency");
		pingpong(s, 4096, 0, "nvbridge-ce+memop");
		if (nvb_gpu_has_kernel(s->g)) {
			pingpong(s, 4096, 1, "nvbridge-sm+memop");
			pingpong(s, 4096, 2, "nvbridge-sm+spin");
		}
		for (i = 0; i < nsizes; i++) {
			progress(s, "transfers with completion");
			xfer(s, sizes[i], 0, "nvbridge-ce");
			if (sizes[i] >= 64 * 1024)
				xfer(s, sizes[i], 4, "nvbridge-ce-pipe");
			if (nvb_gpu_has_kernel(s->g)) {
				if (sizes[i] <= 16 * MiB)
					xfer(s, sizes[i], 1, "nvbridge-sm");
				if (sizes[i] >= 16 * MiB)
					xfer(s, sizes[i], 2, "nvbridge-hybrid20");
			}
		}
		proxy_phase(s, sizes, nsizes);
		progress(s, "legacy CUDA IPC");
		late_import(s);
		legacy_ipc(s);
		progress(s, "VMM import steps");
		vmm_parts(s, opt.vmm_parts, GiB);
	}
	if (role == 1 && !opt.no_corun)
		corun_run(s);
	nccl_bench(s, sizes, nsizes);
	barrier(s);
	legacy_ipc_release(s);
	nvb_gpu_unmap(s->map);
	sync_all(s);
	nvb_gpu_free(s->buf);
#ifdef NVB_BENCH_LIB
	if (s->h)
		nvb_close(s->h);
#endif
	nvb_gpu_close(s->g);
	if (write(res, "D\n", 2) < 0)
		_exit(1);
	_exit(0);
}
