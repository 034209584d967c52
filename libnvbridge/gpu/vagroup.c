// SPDX-License-Identifier: MIT
/*
 * libnvbridge GPU layer: several imports in one VA reservation
 * (nvb_gpu_seg_open_many).  On an H100 an import's own reservation and
 * mapping cost about 120 us and its cuMemSetAccess 140-280 us, against a
 * whole cuIpcOpenMemHandle of 175 us: the access call is paid once per
 * device for all of a call's imports here, not once per import, and the
 * reservation once.  Each mapping stays a mapping of its own (cache,
 * revocation, stats): revoking one unmaps only its range; the reservation
 * is freed with the last of them (struct nvb_gpu_vagroup).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_priv.h"

void vagroup_unmap(struct nvb_gpu_map *m)
{
	struct nvb_gpu *g = m->g;
	struct nvb_gpu_vagroup *grp = m->grp;

	/* the caller (map_destroy) made the owner's context current */
	g->cu.cuMemUnmap(m->ptr, m->size);
	g->cu.cuMemRelease(m->h);
	if (__atomic_sub_fetch(&grp->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		g->cu.cuMemAddressFree(grp->base, grp->size);
		free(grp);
	}
}

/* Does device i need access to m (access_descs' rule)? */
static int needs(struct nvb_gpu *g, int i, const struct nvb_gpu_map *m, int only)
{
	return (only < 0 || i == only) && (m->owner_dev < 0 || g->peer[i][m->owner_dev]);
}

/*
 * Device i's access to the mappings in layout order ord[]: one
 * cuMemSetAccess per run of adjacent mappings i needs (a gap, or one it
 * does not need, ends a run).
 */
static int access_runs(struct nvb_gpu *g, int i, struct nvb_gpu_map **ms, const unsigned int *ord,
		       unsigned int n, int only)
{
	CUmemAccessDesc d = { .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = g->d[i].dev },
			      .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUdeviceptr start = 0, end = 0;
	unsigned int j;
	CUresult r;

	for (j = 0; j <= n; j++) {
		struct nvb_gpu_map *m = j < n ? ms[ord[j]] : NULL;

		if (m && needs(g, i, m, only) && end && m->ptr == end) {
			end += m->size;	/* the run goes on */
			continue;
		}
		if (end) {
			r = g->cu.cuMemSetAccess(start, end - start, &d, 1);
			if (r != CUDA_SUCCESS)
				return cuerr(g, r, "cuMemSetAccess");
		}
		start = end = 0;
		if (m && needs(g, i, m, only)) {
			start = m->ptr;
			end = m->ptr + m->size;
		}
	}
	return 0;
}

/* Layout: the largest granularity first, so that (powers of two) no gap falls between mappings. */
static void layout_order(const size_t *gran, unsigned int *ord, unsigned int n)
{
	unsigned int i, j, t;

	for (i = 0; i < n; i++)
		ord[i] = i;
	for (i = 1; i < n; i++)	/* insertion sort, stable: n is small */
		for (j = i; j > 0 && gran[ord[j - 1]] < gran[ord[j]]; j--) {
			t = ord[j];
			ord[j] = ord[j - 1];
			ord[j - 1] = t;
		}
}

static int group_map(struct nvb_gpu *g, struct nvb_gpu_map **ms, const size_t *gran, unsigned int n,
		     int only, int cur, struct nvb_gpu_vagroup *grp)
{
	unsigned int *ord = calloc(n, sizeof(*ord)), j, mapped = 0;
	size_t off = 0, maxg = 1;
	uint64_t t0;
	CUresult r;
	int err = 0, i, k;

	if (!ord)
		return seterr(-ENOMEM, "nvb_gpu_seg_open_many: out of memory");
	layout_order(gran, ord, n);
	maxg = gran[ord[0]];
	for (j = 0; j < n && !err; j++) {
		size_t gj = gran[ord[j]], at = (off + gj - 1) / gj * gj;

		if (at < off || at + ms[ord[j]]->size < at)
			err = seterr(-EOVERFLOW, "nvb_gpu_seg_open_many: the sizes overflow");
		off = at + ms[ord[j]]->size;
		ms[ord[j]]->ptr = at;	/* an offset until reserved */
	}
	grp->size = (off + maxg - 1) / maxg * maxg;
	if (!err && grp->size < off)
		err = seterr(-EOVERFLOW, "nvb_gpu_seg_open_many: the sizes overflow");
	if (err)
		goto out;
	t0 = ns_now();
	r = g->cu.cuMemAddressReserve(&grp->base, grp->size, maxg, 0, 0);
	if (r != CUDA_SUCCESS) {
		err = cuerr(g, r, "cuMemAddressReserve");
		goto out;
	}
	ms[0]->stats.reserve_ns = ns_now() - t0;	/* the whole reservation: on the first */
	for (j = 0; j < n; j++, mapped++) {
		struct nvb_gpu_map *m = ms[ord[j]];

		m->ptr += grp->base;
		t0 = ns_now();
		r = g->cu.cuMemMap(m->ptr, m->size, 0, m->h, 0);
		if (r != CUDA_SUCCESS) {
			err = cuerr(g, r, "cuMemMap (does the metadata size match the allocation?)");
			goto unmap;
		}
		m->stats.map_ns = ns_now() - t0;
	}
	/* the current device first, as an import's; the whole time on the first mapping */
	for (k = 0, i = -1; i < g->ndev; i++) {
		int d = i < 0 ? cur : i;

		if (i == cur)
			continue;
		t0 = ns_now();
		err = access_runs(g, d, ms, ord, n, only);
		if (err)
			goto unmap;
		if (k < 4 && (only < 0 || d == only)) {
			ms[0]->stats.access_ns[k] = ns_now() - t0;
			ms[0]->stats.access_dev[k] = g->d[d].dev;
			ms[0]->stats.naccess = (uint32_t)++k;
		}
	}
	goto out;
unmap:
	for (j = 0; j < mapped; j++)
		g->cu.cuMemUnmap(ms[ord[j]]->ptr, ms[ord[j]]->size);
	g->cu.cuMemAddressFree(grp->base, grp->size);
out:
	free(ord);
	return err;
}

static int group_import(struct nvb_gpu *g, uint64_t reg, struct nvb_gpu_vaimp *im, unsigned int n,
			uint32_t flags, int cur)
{
	CUmemAccessDesc desc[NVB_GPU_MAX_DEV];
	struct nvb_gpu_map **ms = calloc(n, sizeof(*ms));
	size_t *gran = calloc(n, sizeof(*gran));
	struct nvb_gpu_vagroup *grp = calloc(1, sizeof(*grp));
	int only = (flags & NVB_GPU_IMPORT_LOCAL_ONLY) ? cur : -1, err = 0;
	struct nvb_gpu_meta meta;
	unsigned int i;

	if (!ms || !gran || !grp) {
		err = seterr(-ENOMEM, "nvb_gpu_seg_open_many: out of memory");
		goto out;
	}
	for (i = 0; i < n && !err; i++) {
		err = meta_read(im[i].blob, im[i].blob_len, &meta);
		if (!err)
			err = import_handle(g, reg, im[i].id, im[i].fd, &meta, flags, cur, &ms[i]);
		if (!err && !access_descs(g, ms[i]->owner_dev, only, desc))
			err = seterr(-ENODEV, "no GPU in this process can reach the allocation's device");
		gran[i] = meta.granularity;
	}
	if (!err)
		err = group_map(g, ms, gran, n, only, cur, grp);
	if (err) {
		for (i = 0; i < n; i++)
			if (ms[i]) {
				g->cu.cuMemRelease(ms[i]->h);
				free(ms[i]);
			}
		goto out;
	}
	grp->refs = (int)n;
	for (i = 0; i < n; i++) {
		ms[i]->grp = grp;
		map_insert(g, ms[i], &im[i].m);	/* a racing import's mapping: ours goes */
	}
	grp = NULL;
out:
	free(grp);
	free(gran);
	free(ms);
	return err;
}

int vagroup_import(struct nvb_gpu *g, uint64_t reg, struct nvb_gpu_vaimp *im, unsigned int n,
		   uint32_t flags)
{
	CUcontext old = NULL;
	unsigned int i;
	int cur, err, ctx_set = 0;

	for (i = 0; i < n; i++)
		im[i].m = NULL;
	if (!n)
		return 0;
	cur = cur_dev(g);
	if (cur < 0) {	/* as an import: device 0's context, the caller's put back */
		g->cu.cuCtxGetCurrent(&old);
		g->cu.cuCtxSetCurrent(g->d[0].ctx);
		ctx_set = 1;
		cur = 0;
	}
	err = group_import(g, reg, im, n, flags, cur);
	if (ctx_set)
		g->cu.cuCtxSetCurrent(old);
	return err;
}
