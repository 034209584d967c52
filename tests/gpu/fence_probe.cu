// SPDX-License-Identifier: MIT
/*
 * Probe (not part of the suites): what system-scope fences, acquire loads
 * and host-memory stores cost from an SM on this machine.  Guides the put
 * proxy's design.  Build: nvcc -O2 -arch=sm_90 -o fence_probe fence_probe.cu
 */
#include <cstdio>
#include <cuda_runtime.h>

__device__ __forceinline__ unsigned long long gt(void)
{
	unsigned long long t;

	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	return t;
}

__global__ void probe(unsigned int *host, unsigned int *dev, unsigned long long *out, int n)
{
	unsigned long long t0, t1;
	unsigned int v = 0;
	int i;

	if (threadIdx.x)
		return;
	t0 = gt();
	for (i = 0; i < n; i++)
		__threadfence_system();
	t1 = gt();
	out[0] = (t1 - t0) / n;	/* fence.sys, nothing pending */
	t0 = gt();
	for (i = 0; i < n; i++) {
		*(volatile unsigned int *)host = i;
		__threadfence_system();
	}
	t1 = gt();
	out[1] = (t1 - t0) / n;	/* host store + fence.sys */
	t0 = gt();
	for (i = 0; i < n; i++)
		asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(host) : "memory");
	t1 = gt();
	out[2] = (t1 - t0) / n;	/* acquire.sys load of host memory */
	t0 = gt();
	for (i = 0; i < n; i++)
		v += *(volatile unsigned int *)(host + 16 + (v & 1));
	t1 = gt();
	out[3] = (t1 - t0) / n;	/* volatile load of host memory */
	t0 = gt();
	for (i = 0; i < n; i++) {
		*(volatile unsigned int *)dev = i;
		__threadfence_system();
	}
	t1 = gt();
	out[4] = (t1 - t0) / n;	/* device store + fence.sys */
	t0 = gt();
	for (i = 0; i < n; i++)
		asm volatile("st.release.sys.global.u32 [%0], %1;" :: "l"(dev), "r"(i) : "memory");
	t1 = gt();
	out[5] = (t1 - t0) / n;	/* release.sys store, device */
	t0 = gt();
	for (i = 0; i < n; i++)
		*(volatile unsigned int *)host = i;
	t1 = gt();
	out[6] = (t1 - t0) / n;	/* host stores, no fence */
	t0 = gt();
	for (i = 0; i < n; i++)
		__threadfence();
	t1 = gt();
	out[7] = (t1 - t0) / n;	/* fence.gpu after host stores */
	t0 = gt();
	for (i = 0; i < n; i++)
		__threadfence_system();
	t1 = gt();
	out[8] = (t1 - t0) / n;	/* fence.sys again, nothing pending */
	t0 = gt();
	for (i = 0; i < n; i++)
		asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(dev) : "memory");
	t1 = gt();
	out[9] = (t1 - t0) / n;	/* acquire.sys load, device */
	out[10] = v;
}

int main(void)
{
	static const char *what[] = {
		"fence.sys, nothing pending", "host store + fence.sys", "ld.acquire.sys host",
		"ld.volatile host", "device store + fence.sys", "st.release.sys device",
		"host store, no fence", "fence.gpu", "fence.sys again", "ld.acquire.sys device",
	};
	unsigned int *host, *dev;
	unsigned long long *out;
	int i;

	cudaHostAlloc((void **)&host, 4096, cudaHostAllocMapped);
	cudaMalloc((void **)&dev, 4096);
	cudaHostAlloc((void **)&out, 4096, cudaHostAllocMapped);
	for (i = 0; i < 3; i++) {
		probe<<<1, 32>>>(host, dev, out, 200);
		if (cudaDeviceSynchronize() != cudaSuccess) {
			printf("probe failed: %s\n", cudaGetErrorString(cudaGetLastError()));
			return 1;
		}
	}
	for (i = 0; i < 10; i++)
		printf("%-28s %8.2f us\n", what[i], out[i] / 1000.0);
	return 0;
}
