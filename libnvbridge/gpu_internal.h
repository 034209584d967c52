/* SPDX-License-Identifier: MIT */
/* Internal glue between the gpu/ files and gpu_nvb.c.  Not installed. */
#ifndef NVB_GPU_INTERNAL_H
#define NVB_GPU_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

struct nvb_gpu;
struct nvb_gpu_map;

/* Name cache entry: a name imported through nvb_gpu_import(). */
struct nvb_gpu_name {
	struct nvb_gpu_name *next;
	uint64_t id;
	uint64_t wserial;	/* serial of the handle holding a watch on it */
	uint64_t wid;		/* its watch id (0: none) */
	char name[64];
};

struct nvb_gpu_name **nvb_gpu_names_head(struct nvb_gpu *g);
pthread_mutex_t *nvb_gpu_lock(struct nvb_gpu *g);
int nvb_gpu_seterr(int err, const char *msg);
void nvb_gpu_names_free(struct nvb_gpu *g);
void nvb_gpu_names_forget(struct nvb_gpu *g, uint64_t id);

#endif
