// SPDX-License-Identifier: MIT
/*
 * The GPU layer's entry ABI: the options convention of nvb_gpu_open() and
 * nvb_gpu_map_stats() (size_t sz first, smaller = older caller, larger =
 * newer caller with a zero tail), and the 1.0 versions of both that
 * binaries built before libnvbridge 1.2 still call.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

#include "fake.h"

/* What a 1.0 binary was built with. */
struct gpu_opts_v10 {
	uint32_t size;
	uint32_t flags;
	const char *libcuda;
	uint32_t sm_ctas;
	uint32_t __reserved;
};

struct map_stats_v10 {
	uint32_t size;
	uint32_t naccess;
	uint64_t import_ns, reserve_ns, map_ns;
	uint64_t access_ns[4];
	int32_t access_dev[4];
};

static void *old_sym(const char *name)
{
	void *l = dlopen("libnvbridge.so.1", RTLD_NOW | RTLD_NOLOAD);

	return l ? dlvsym(l, name, "LIBNVBRIDGE_1.0") : NULL;
}

static int t_open_opts(void)
{
	unsigned char big[sizeof(struct nvb_gpu_opts) + 32];
	struct nvb_gpu_opts *o = (void *)big;
	struct nvb_gpu *g;

	EXPECT(nvb_gpu_open(NULL, NULL), -EINVAL);
	OK(nvb_gpu_open(NULL, &g));
	EXPECT(nvb_gpu_device_count(g), 1);
	nvb_gpu_close(g);

	memset(big, 0, sizeof(big));
	o->sz = offsetof(struct nvb_gpu_opts, sm_ctas);	/* an older, smaller caller */
	OK(nvb_gpu_open(o, &g));
	nvb_gpu_close(g);
	o->sz = sizeof(big);				/* a newer one, zero tail */
	o->libcuda = getenv("NVB_FAKE_CUDA");
	OK(nvb_gpu_open(o, &g));
	nvb_gpu_close(g);
	big[sizeof(*o) + 9] = 1;			/* a field this library does not know */
	g = (void *)1;
	EXPECT(nvb_gpu_open(o, &g), -E2BIG);
	CHECK(g == NULL, "out not cleared on failure");
	CHECK(strstr(nvb_gpu_last_error(), "sz"), "%s", nvb_gpu_last_error());
	big[sizeof(*o) + 9] = 0;
	o->sz = 4097;
	EXPECT(nvb_gpu_open(o, &g), -EINVAL);
	o->sz = sizeof(uint32_t);
	EXPECT(nvb_gpu_open(o, &g), -EINVAL);
	o->sz = sizeof(*o);
	o->flags = NVB_GPU_OPEN_SM_YIELD << 1;
	EXPECT(nvb_gpu_open(o, &g), -EINVAL);
	CHECK(strstr(nvb_gpu_last_error(), "flags"), "%s", nvb_gpu_last_error());
	o->flags = 0;
	o->libcuda = "/nonexistent/libcuda.so.1";
	EXPECT(nvb_gpu_open(o, &g), -ENOENT);
	return 0;
}

/* A 1.0 binary: nvb_gpu_open@LIBNVBRIDGE_1.0 is (out, opts) with uint32_t size. */
static int t_open_v10(void)
{
	int (*open10)(struct nvb_gpu **, const struct gpu_opts_v10 *) =
		(int (*)(struct nvb_gpu **, const struct gpu_opts_v10 *))old_sym("nvb_gpu_open");
	struct gpu_opts_v10 o = { .size = sizeof(o), .libcuda = "/nonexistent/libcuda.so.1" };
	struct nvb_gpu *g;

	CHECK(open10 != NULL, "nvb_gpu_open@LIBNVBRIDGE_1.0 missing: %s", dlerror());
	CHECK((void *)open10 != (void *)nvb_gpu_open, "the 1.0 symbol is the new function");
	EXPECT(open10(&g, &o), -ENOENT);	/* its libcuda field is read */
	o.libcuda = getenv("NVB_FAKE_CUDA");
	OK(open10(&g, &o));
	EXPECT(nvb_gpu_device_count(g), 1);
	nvb_gpu_close(g);
	OK(open10(&g, NULL));
	nvb_gpu_close(g);
	o.size = 4;
	EXPECT(open10(&g, &o), -EINVAL);
	o.size = sizeof(o);
	o.flags = 2;
	EXPECT(open10(&g, &o), -EINVAL);
	o.flags = NVB_GPU_OPEN_SM_YIELD;	/* 1.2's flag: 1.0 had none */
	EXPECT(open10(&g, &o), -EINVAL);
	return 0;
}

/*
 * NVB_GPU_OPEN_SM_YIELD: the device's yielding stream is made at the
 * lowest priority CUDA offers (the stand-in's range is 0..-5), only with
 * the flag; SM copies still need the kernel (the stand-in has none).
 */
static int t_sm_yield_stream(void)
{
	struct nvb_gpu_opts o = { .sz = sizeof(o) };
	uint64_t dst, src;
	struct nvb_gpu_buf *b;
	struct nvb_gpu *g;
	void *st = NULL, *cu;
	int *prio;

	for (int yield = 0; yield < 2; yield++) {
		o.flags = yield ? NVB_GPU_OPEN_SM_YIELD : 0;
		OK(nvb_gpu_open(&o, &g));
		/* loaded by the open, privately (RTLD_LOCAL) */
		cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
		prio = cu ? dlsym(cu, "fake_last_stream_prio") : NULL;
		CHECK(prio != NULL, "the stand-in libcuda lacks fake_last_stream_prio");
		*prio = 1;
		OK(nvb_gpu_set_device(g, 0));	/* copies run in the current context */
		OK(nvb_gpu_alloc(g, 0, 2 << 20, 0, &b));
		dst = nvb_gpu_buf_ptr(b);
		src = dst + (1 << 20);
		EXPECT(nvb_gpu_copy(g, dst, src, 1 << 20, &st, 1, NVB_GPU_COPY_SM), -EOPNOTSUPP);
		EXPECT(*prio, yield ? 0 : 1);
		nvb_gpu_free(b);
		nvb_gpu_close(g);
		dlclose(cu);
	}
	return 0;
}

/* stats through both versions describe the same import */
static int t_map_stats_versions(void)
{
	int (*stats10)(const struct nvb_gpu_map *, struct map_stats_v10 *) =
		(int (*)(const struct nvb_gpu_map *, struct map_stats_v10 *))
		old_sym("nvb_gpu_map_stats");
	struct nvb_gpu_map_stats st, small;
	struct map_stats_v10 s10;
	struct nvb_gpu_meta meta;
	struct nvb_gpu_buf *b;
	struct nvb_gpu_map *m;
	struct nvb_gpu *g;
	int fd;

	CHECK(stats10 != NULL, "nvb_gpu_map_stats@LIBNVBRIDGE_1.0 missing");
	OK(nvb_gpu_open(NULL, &g));
	OK(nvb_gpu_alloc(g, 0, 1 << 20, 0, &b));
	OK(nvb_gpu_export(b, &fd, &meta));
	OK(nvb_gpu_import_fd(g, 0, fd, &meta, sizeof(meta), 0, &m));

	memset(&st, 0x5a, sizeof(st));
	st.sz = sizeof(st);
	OK(nvb_gpu_map_stats(m, &st));
	EXPECT(st.sz, sizeof(st));
	CHECK(st.naccess >= 1 && st.naccess <= 4, "naccess %u", st.naccess);
	EXPECT(st.access_dev[0], 0);

	memset(&s10, 0x5a, sizeof(s10));
	s10.size = sizeof(s10);
	OK(stats10(m, &s10));
	EXPECT(s10.size, sizeof(s10));
	EXPECT(s10.naccess, st.naccess);
	CHECK(s10.import_ns == st.import_ns && s10.map_ns == st.map_ns &&
	      s10.access_dev[0] == st.access_dev[0], "1.0 layout differs");

	/* an older, smaller struct is filled up to its size only */
	memset(&small, 0x5a, sizeof(small));
	small.sz = offsetof(struct nvb_gpu_map_stats, reserve_ns);
	OK(nvb_gpu_map_stats(m, &small));
	EXPECT(small.sz, offsetof(struct nvb_gpu_map_stats, reserve_ns));
	EXPECT(small.import_ns, st.import_ns);
	EXPECT(small.reserve_ns, 0x5a5a5a5a5a5a5a5aull);
	small.sz = 4;
	EXPECT(nvb_gpu_map_stats(m, &small), -EINVAL);
	EXPECT(nvb_gpu_map_stats(NULL, &st), -EINVAL);

	nvb_gpu_unmap(m);
	nvb_gpu_free(b);
	nvb_gpu_close(g);
	return 0;
}

/*
 * nvb_gpu_has_kernel() says whether the SM kernel is loaded, not only
 * embedded: the stand-in cannot load it, so 0 before any copy tried; the
 * calling thread's context (none here) is left as it was.
 */
static int t_has_kernel_loaded(void)
{
	int (*get)(void **);	/* cuCtxGetCurrent: the tests do not include cuda_api.h */
	void *cur = (void *)1;
	struct nvb_gpu *g;
	void *cu;

	OK(nvb_gpu_open(NULL, &g));
	EXPECT(nvb_gpu_has_kernel(g), 0);
	cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	*(void **)&get = cu ? dlsym(cu, "cuCtxGetCurrent") : NULL;
	CHECK(get != NULL, "no cuCtxGetCurrent in the stand-in");
	EXPECT(get(&cur), 0);
	CHECK(cur == NULL, "a context was left current: %p", cur);
	nvb_gpu_close(g);
	dlclose(cu);
	return 0;
}

static const struct nvb_case cases[] = {
	{ "open_opts_convention", t_open_opts },
	{ "open_v10_compat", t_open_v10 },
	{ "map_stats_versions", t_map_stats_versions },
	{ "sm_yield_stream", t_sm_yield_stream },
	{ "has_kernel_loaded", t_has_kernel_loaded },
};

int main(int argc, char **argv)
{
	return run_cases("gpu-abi", cases, sizeof(cases) / sizeof(cases[0]), argc, argv,
			 true, NULL);
}
