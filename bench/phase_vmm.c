// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench: the CUDA steps of opening K peer allocations, raw driver
 * calls only (no library code timed), to decide how an open of many
 * segments should map them:
 *
 *   separate         K x (import, reserve, map, cuMemSetAccess): what
 *                    nvb_gpu_import() does per entry today
 *   one-reservation  K imports mapped side by side into one reservation,
 *                    one cuMemSetAccess over all K
 *   legacy-ipc       K x cuIpcOpenMemHandle of K cuMemAlloc buffers
 *
 * and on the exporter, nvb_gpu_export() of a fresh allocation against
 * cuIpcGetMemHandle.  Which variant goes first alternates by trial; every
 * mapping is read back (the word the exporter wrote) before it is timed
 * as good.
 */
#define _GNU_SOURCE
#include "bench.h"

struct vmm_msg {
	struct nvb_gpu_meta meta;
	CUipcMemHandle ipc;
	uint32_t word;		/* what the exporter wrote at offset 0 of both buffers */
};

static unsigned int vmm_trial;

static double usec(double t0)
{
	return (now_s() - t0) * 1e6;
}

/* The importer's check: the first word of [p] is what the exporter wrote. */
static void check_word(struct side *s, CUdeviceptr p, uint32_t want, const char *what)
{
	uint32_t got = ~want;

	CK(s, cuMemcpyDtoH(&got, p, sizeof(got)));
	if (got != want)
		die(s, "vmm parts: %s read %#x, the exporter wrote %#x", what, got, want);
}

static void vmm_export_side(struct side *s, unsigned int k, uint64_t size)
{
	struct nvb_gpu_buf *b[VMM_MAXK];
	CUdeviceptr p[VMM_MAXK];
	struct vmm_msg m[VMM_MAXK];
	double t0, exp_us = 0, get_us = 0;
	unsigned int i;
	int fd;

	for (i = 0; i < k; i++) {
		memset(&m[i], 0, sizeof(m[i]));
		m[i].word = (uint32_t)random() | 1u;
		NV(s, nvb_gpu_alloc(s->g, s->dev, size, 0, &b[i]));
		CK(s, cuMemAlloc(&p[i], size));
		CK(s, cuMemsetD32Async(nvb_gpu_buf_ptr(b[i]), m[i].word, size / 4, s->st[0]));
		CK(s, cuMemsetD32Async(p[i], m[i].word, size / 4, s->st[0]));
	}
	sync_all(s);
	for (i = 0; i < k; i++) {
		t0 = now_s();
		NV(s, nvb_gpu_export(b[i], &fd, &m[i].meta));
		exp_us += usec(t0);
		t0 = now_s();
		CK(s, cuIpcGetMemHandle(&m[i].ipc, p[i]));
		get_us += usec(t0);
		ctl_send(s, &m[i], sizeof(m[i]), fd);
	}
	report(s, "vmm_export_us", "nvbridge", k * size, exp_us, "us");
	report(s, "vmm_export_us", "legacy-ipc", k * size, get_us, "us");
	barrier(s);	/* the importer has closed everything */
	for (i = 0; i < k; i++) {
		nvb_gpu_free(b[i]);
		CK(s, cuMemFree(p[i]));
	}
}

/* Imports every fd; t[0] += the time. */
static void vmm_import(struct side *s, const int *fd, unsigned int k,
		       CUmemGenericAllocationHandle *h, double *t)
{
	unsigned int i;
	double t0 = now_s();

	for (i = 0; i < k; i++)
		CK(s, cuMemImportFromShareableHandle(&h[i], (void *)(uintptr_t)fd[i],
						     CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
	t[0] += usec(t0);
}

/* steps: import, reserve, map, access; one reservation when one_res */
static void vmm_variant(struct side *s, const int *fd, const struct vmm_msg *m,
			unsigned int k, uint64_t size, int one_res)
{
	static const char *const key[] = { "vmm_import_us", "vmm_reserve_us", "vmm_map_us",
					   "vmm_access_us" };
	const char *method = one_res ? "one-reservation" : "separate";
	CUmemGenericAllocationHandle h[VMM_MAXK];
	CUdeviceptr base[VMM_MAXK];
	CUmemAccessDesc d;
	double t[4] = { 0 }, t0;
	uint64_t gran = m[0].meta.granularity;
	unsigned int i, j;

	memset(&d, 0, sizeof(d));
	d.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	d.location.id = s->dev;
	d.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	vmm_import(s, fd, k, h, &t[0]);
	if (one_res) {
		t0 = now_s();
		CK(s, cuMemAddressReserve(&base[0], k * size, gran, 0, 0));
		t[1] += usec(t0);
		for (i = 1; i < k; i++)
			base[i] = base[0] + i * size;
		t0 = now_s();
		for (i = 0; i < k; i++)
			CK(s, cuMemMap(base[i], size, 0, h[i], 0));
		t[2] += usec(t0);
		t0 = now_s();
		CK(s, cuMemSetAccess(base[0], k * size, &d, 1));
		t[3] += usec(t0);
	} else {
		for (i = 0; i < k; i++) {
			t0 = now_s();
			CK(s, cuMemAddressReserve(&base[i], size, gran, 0, 0));
			t[1] += usec(t0);
			t0 = now_s();
			CK(s, cuMemMap(base[i], size, 0, h[i], 0));
			t[2] += usec(t0);
			t0 = now_s();
			CK(s, cuMemSetAccess(base[i], size, &d, 1));
			t[3] += usec(t0);
		}
	}
	for (i = 0; i < k; i++)
		check_word(s, base[i], m[i].word, method);
	for (j = 0; j < 4; j++)
		report(s, key[j], method, k * size, t[j], "us");
	report(s, "vmm_total_us", method, k * size, t[0] + t[1] + t[2] + t[3], "us");
	for (i = 0; i < k; i++) {
		CK(s, cuMemUnmap(base[i], size));
		if (!one_res)
			CK(s, cuMemAddressFree(base[i], size));
		CK(s, cuMemRelease(h[i]));
	}
	if (one_res)
		CK(s, cuMemAddressFree(base[0], k * size));
}

static void vmm_legacy(struct side *s, const struct vmm_msg *m, unsigned int k, uint64_t size)
{
	CUdeviceptr p[VMM_MAXK];
	unsigned int i;
	double t0 = now_s();

	for (i = 0; i < k; i++)
		CK(s, cuIpcOpenMemHandle(&p[i], m[i].ipc, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
	report(s, "vmm_total_us", "legacy-ipc", k * size, usec(t0), "us");
	for (i = 0; i < k; i++) {
		check_word(s, p[i], m[i].word, "legacy-ipc");
		CK(s, cuIpcCloseMemHandle(p[i]));
	}
}

static void vmm_import_side(struct side *s, unsigned int k, uint64_t size)
{
	struct vmm_msg m[VMM_MAXK];
	int fd[VMM_MAXK];
	unsigned int i, v, first = vmm_trial % 3;

	for (i = 0; i < k; i++) {
		if (ctl_recv(s, &m[i], sizeof(m[i]), &fd[i]) != (int)sizeof(m[i]) || fd[i] < 0)
			die(s, "vmm parts: message %u of %u without its fd", i, k);
	}
	for (v = 0; v < 3; v++) {
		switch ((first + v) % 3) {
		case 0:
			vmm_variant(s, fd, m, k, size, 0);
			break;
		case 1:
			vmm_variant(s, fd, m, k, size, 1);
			break;
		default:
			vmm_legacy(s, m, k, size);
		}
	}
	for (i = 0; i < k; i++)
		close(fd[i]);
	barrier(s);
}

void vmm_parts(struct side *s, unsigned int k, uint64_t size)
{
	if (!k)
		return;
	if (k > VMM_MAXK)
		k = VMM_MAXK;
	if (s->role == 0)
		vmm_export_side(s, k, size);
	else
		vmm_import_side(s, k, size);
	vmm_trial++;
}
