/* SPDX-License-Identifier: MIT */
/* Small helpers shared by nvbridge-bench's two halves (nvbridge-bench.c, multi.c). */
#ifndef NVB_BENCH_UTIL_H
#define NVB_BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static inline double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* "1 GiB", "16 MiB", "1536 MiB", "4 KiB": the largest unit that divides s. */
static inline void fmt_size(char *buf, size_t len, uint64_t s)
{
	if (s >= GiB && !(s % GiB))
		snprintf(buf, len, "%llu GiB", (unsigned long long)(s / GiB));
	else if (s >= MiB && !(s % MiB))
		snprintf(buf, len, "%llu MiB", (unsigned long long)(s / MiB));
	else
		snprintf(buf, len, "%llu KiB", (unsigned long long)(s >> 10));
}

#endif
