// SPDX-License-Identifier: MIT
/* Run-time loading of the CUDA driver API (no link-time libcuda). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cuda_api.h"

int nvb_cuda_load(struct nvb_cuda *cu, const char *path, char *errbuf, size_t errlen)
{
	void *sym;

	memset(cu, 0, sizeof(*cu));
	if (!path)
		path = "libcuda.so.1";
	/*
	 * RTLD_NODELETE: the driver runs our host functions and stream
	 * callbacks on threads of its own, which go on executing driver code
	 * after our function returns.  nvb_gpu_close waits for our functions,
	 * never for those threads (nothing can), so a dlclose that unmapped
	 * the driver would pull the code from under them: a SIGSEGV a moment
	 * after close (gpu-fake close_after_hostfn_returns).  The driver stays
	 * mapped for the process, as any CUDA user's does.
	 */
	cu->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (!cu->lib) {
		const char *e = dlerror();

		snprintf(errbuf, errlen, "dlopen(%s): %s", path, e ? e : "failed");
		return -ENOENT;
	}
#define NVB_CUDA_RESOLVE(name, symname, params)					\
	sym = dlsym(cu->lib, symname);						\
	if (!sym && strcmp(symname, "cuMemcpyBatchAsync_v2") &&		\
	    strcmp(symname, "cuStreamAddCallback") &&				\
	    strcmp(symname, "cuStreamIsCapturing")) {				\
		snprintf(errbuf, errlen, "%s: symbol %s missing (driver too old?)", \
			 path, symname);					\
		dlclose(cu->lib);						\
		memset(cu, 0, sizeof(*cu));					\
		return -ENOSYS;							\
	}									\
	memcpy(&cu->name, &sym, sizeof(sym));
	NVB_CUDA_FUNCS(NVB_CUDA_RESOLVE)
#undef NVB_CUDA_RESOLVE
	if (cu->cuDriverGetVersion(&cu->driver_version) != CUDA_SUCCESS)
		cu->driver_version = 0;
	return 0;
}

void nvb_cuda_unload(struct nvb_cuda *cu)
{
	if (cu->lib)
		dlclose(cu->lib);
	memset(cu, 0, sizeof(*cu));
}

const char *nvb_cuda_errname(const struct nvb_cuda *cu, CUresult r)
{
	static __thread char buf[96];
	const char *name = NULL;

	if (cu && cu->cuGetErrorName)
		cu->cuGetErrorName(r, &name);
	snprintf(buf, sizeof(buf), "%s (%d)", name ? name : "CUDA_ERROR", r);
	return buf;
}
