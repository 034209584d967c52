// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench: the NCCL send/recv baseline (dlopen of libnccl.so.2).
 */
#define _GNU_SOURCE
#include "bench.h"
#include "nccl_api.h"

int nccl_load(struct nccl_api *n, char *why, size_t len)
{
	const char *path = opt.nccl ? opt.nccl : getenv("NVB_NCCL_LIB");

	setenv("NCCL_NVLS_ENABLE", "0", 1);	/* never NVLink multicast */
	n->lib = dlopen(path ? path : "libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
	if (!n->lib) {
		snprintf(why, len, "%s", dlerror());
		return -1;
	}
#define NS(f) do { void *p_ = dlsym(n->lib, "nccl" #f); if (!p_) { \
		snprintf(why, len, "nccl" #f " missing"); return -1; } \
		memcpy(&n->f, &p_, sizeof(p_)); } while (0)
	NS(GetVersion);
	NS(GetUniqueId);
	NS(CommInitRank);
	NS(CommDestroy);
	NS(Send);
	NS(Recv);
	NS(GroupStart);
	NS(GroupEnd);
	NS(GetErrorString);
#undef NS
	return 0;
}

void nccl_bench(struct side *s, const uint64_t *sizes, int nsizes)
{
	struct nccl_api n;
	ncclUniqueId id;
	ncclComm_t comm;
	char why[256] = "", ok, peer_ok;
	int i, r, v = 0;
	int rank = s->role == 0 ? 0 : 1;

	memset(&n, 0, sizeof(n));
	if (s->dev == s->peer_dev)
		snprintf(why, sizeof(why), "both processes are on GPU %d and NCCL runs one rank "
			 "per GPU", s->dev);
	else if (opt.no_nccl)
		snprintf(why, sizeof(why), "--no-nccl");
	ok = !why[0] && nccl_load(&n, why, sizeof(why)) == 0;
	ctl_send(s, &ok, 1, -1);
	ctl_recv(s, &peer_ok, 1, NULL);
	if (!ok || !peer_ok) {
		if (s->role == 1) {
			char msg[300];

			snprintf(msg, sizeof(msg), "N NCCL skipped: %s\n", why[0] ? why : "peer could not load it");
			if (write(s->res, msg, strlen(msg)) < 0)
				_exit(1);
		}
		return;
	}
	progress(s, "NCCL init");
	if (s->role == 0) {
		r = n.GetUniqueId(&id);
		if (r)
			die(s, "ncclGetUniqueId: %s", n.GetErrorString(r));
		ctl_send(s, &id, sizeof(id), -1);
	} else {
		ctl_recv(s, &id, sizeof(id), NULL);
	}
	r = n.CommInitRank(&comm, 2, id, rank);
	if (r)
		die(s, "ncclCommInitRank: %s", n.GetErrorString(r));
	n.GetVersion(&v);
	if (s->role == 1)
		report(s, "nccl_version", "nccl", 0, v, "");
	/*
	 * One-way transfers importer -> exporter, timed from the first send
	 * issued to the last receive complete (same method as xfer()).
	 */
	for (i = 0; i < nsizes; i++) {
		uint64_t size = sizes[i];
		unsigned int cnt = size <= 16 * MiB ? (opt.quick ? 100 : 400) : iters_for(size) + 1, k;
		double t0, t1;

		progress(s, "NCCL send/recv");
		sync_all(s);
		barrier(s);
		if (s->role == 0) {	/* same clocks as xfer_recv_side / xfer_report */
			barrier(s);
			for (k = 0, r = 0; k < cnt && !r; k++)
				r = n.Recv((void *)(uintptr_t)s->ldata, size, 0, 1, comm, s->st[0]);
			if (r)
				die(s, "ncclRecv: %s", n.GetErrorString(r));
			CK(s, cuEventRecord(s->e1, s->st[0]));
			CK(s, cuEventSynchronize(s->e1));
			t1 = now_s();
			ctl_send(s, &t1, sizeof(t1), -1);
		} else {
			barrier(s);
			t0 = now_s();
			for (k = 0, r = 0; k < cnt && !r; k++)
				r = n.Send((const void *)(uintptr_t)s->ldata, size, 0, 0, comm, s->st[0]);
			if (r)
				die(s, "ncclSend: %s", n.GetErrorString(r));
			ctl_recv(s, &t1, sizeof(t1), NULL);
			report(s, "xfer", "nccl", size, (double)size * cnt / (t1 - t0) / 1e9, "GB/s");
			report(s, "xfer_us", "nccl", size, (t1 - t0) * 1e6 / cnt, "us");
		}
		sync_all(s);
	}
	/* ping-pong 4 KiB: one-way latency */
	{
		unsigned int cnt = opt.quick ? 200 : 1000, k;

		sync_all(s);
		barrier(s);
		if (s->role == 1)
			CK(s, cuEventRecord(s->e0, s->st[0]));
		for (k = 0, r = 0; k < cnt && !r; k++) {
			if (s->role == 1) {
				r = n.Send((const void *)(uintptr_t)s->ldata, 4096, 0, 0, comm, s->st[0]);
				if (!r)
					r = n.Recv((void *)(uintptr_t)s->ldata, 4096, 0, 0, comm, s->st[0]);
			} else {
				r = n.Recv((void *)(uintptr_t)s->ldata, 4096, 0, 1, comm, s->st[0]);
				if (!r)
					r = n.Send((const void *)(uintptr_t)s->ldata, 4096, 0, 1, comm, s->st[0]);
			}
		}
		if (r)
			die(s, "nccl ping-pong: %s", n.GetErrorString(r));
		if (s->role == 1) {
			CK(s, cuEventRecord(s->e1, s->st[0]));
			report(s, "put_signal_us", "nccl", 4096, ev_ms(s) * 1e3 / (2.0 * cnt), "us");
		}
		sync_all(s);
	}
	barrier(s);
	n.CommDestroy(comm);
}
