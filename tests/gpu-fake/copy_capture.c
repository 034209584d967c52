// SPDX-License-Identifier: MIT
/*
 * nvb_gpu_copy_blocks on a stream being captured into a CUDA graph: the
 * SM path's block list lives in a host ring slot that later calls reuse,
 * so a graph captured from it would copy whatever sits there at each
 * replay.  An explicit NVB_GPU_COPY_SM is refused with -EBUSY before
 * anything is recorded, and the capture stays valid; the default records
 * one copy per block (addresses in the graph), run at the replay only.
 */
#include <dlfcn.h>

#include "fake.h"

static int t_copy_blocks_capture(void)
{
	int (*begin)(void *, int), (*end)(void *, void **), (*nodes)(void *);
	void *st = (void *)(uintptr_t)0x7200;	/* the application's stream (the stand-in's) */
	struct nvb_gpu_block bl[3];
	struct nvb_gpu_buf *b;
	struct nvb_gpu *g;
	unsigned char want[3 * 4096], *p;
	void *cu, *graph = NULL;

	OK(nvb_gpu_open(NULL, &g));
	OK(nvb_gpu_set_device(g, 0));
	cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	CHECK(cu != NULL, "%s", dlerror());
	*(void **)&begin = dlsym(cu, "cuStreamBeginCapture_v2");
	*(void **)&end = dlsym(cu, "cuStreamEndCapture");
	*(void **)&nodes = dlsym(cu, "fakecuda_capture_nodes");
	CHECK(begin && end && nodes, "the stand-in's capture model");
	OK(nvb_gpu_alloc(g, 0, 1 << 20, 0, &b));
	p = (unsigned char *)(uintptr_t)nvb_gpu_buf_ptr(b);
	fake_random(p, 1 << 20);			/* sources and poisoned destinations */
	memcpy(want, p + (512 << 10), sizeof(want));	/* the destinations as they are */
	for (int i = 0; i < 3; i++)
		bl[i] = (struct nvb_gpu_block){ nvb_gpu_buf_ptr(b) + (512 << 10) + i * 4096u,
						nvb_gpu_buf_ptr(b) + (uint64_t)i * 8192, 4096 };

	EXPECT(begin(st, 0), 0);
	EXPECT(nvb_gpu_copy_blocks(g, bl, 3, st, NVB_GPU_COPY_SM, 0, 0), -EBUSY);
	CHECK(strstr(nvb_gpu_last_error(), "captured"), "%s", nvb_gpu_last_error());
	EXPECT(nodes(st), 0);				/* nothing recorded */
	OK(nvb_gpu_copy_blocks(g, bl, 3, st, 0, 0, 0));	/* the default: a copy per block */
	EXPECT(nodes(st), 3);
	EXPECT(memcmp(p + (512 << 10), want, sizeof(want)), 0);	/* recorded, not run */
	EXPECT(end(st, &graph), 0);			/* the capture is intact */
	CHECK(graph != NULL, "no graph");

	/* not capturing: the same call copies */
	OK(nvb_gpu_copy_blocks(g, bl, 3, st, 0, 0, 0));
	for (int i = 0; i < 3; i++)
		EXPECT(memcmp(p + (512 << 10) + i * 4096, p + i * 8192, 4096), 0);
	nvb_gpu_free(b);
	nvb_gpu_close(g);
	dlclose(cu);
	return 0;
}

static const struct nvb_case cases[] = {
	{ "copy_blocks_capture", t_copy_blocks_capture },
};

int main(int argc, char **argv)
{
	return fake_main("gpu-copy-capture", cases, sizeof(cases) / sizeof(cases[0]), argc, argv,
			 NULL);
}
