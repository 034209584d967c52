// SPDX-License-Identifier: MIT
/*
 * hostile case info_counter_collisions: INFO's per-scope counters
 * (daemon/visible.c) must not let chosen ids make every PUBLISH,
 * revocation and INFO walk one long hash chain.
 *
 * Any local uid may PUBLISH with NVBRIDGE_ACCESS_UID naming any uid of its
 * namespace (ACCESS_GID: any gid), and each such entry makes a counter
 * keyed by that id.  The counters' table was hashed with fixed constants
 * and XOR-folded, so whether two ids share a bucket did not depend on the
 * scope pointer mixed in: colliding ids could be computed offline (this
 * test does, from the broker's old formula).  CC_UIDS uids (a rootless
 * container's subuids would do) publishing CC_ENTRIES entries each, every
 * one naming another colliding uid (entries_publisher()), put CC_UIDS x 1024 counters in one
 * bucket: quadratic CPU to build, and the same again on hang-up, when
 * the loop serves no one.  Checked: broker CPU for the publishes under
 * CC_PUB_MS, an honest round right after everyone hangs up served within
 * CC_MS, and the broker's CPU in the next second under CC_CPU_MS.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
#include "hostile.h"

#define CC_UIDS 48
#define CC_ENTRIES 1024		/* entries_publisher()'s: --max-entries-per-user's default */
#define CC_PUB_MS 6000.0	/* 1.8 s measured keyed, 14.3 s before */
#define CC_MS 500.0
#define CC_CPU_MS 400.0
#define CC_BASE_UID 100000u

/* the broker's old bucket for a UACL counter's uid, less the terms that cancel */
static uint32_t old_bucket(uint32_t a)
{
	uint64_t h = (uint64_t)a * 0xff51afd7ed558ccdULL;

	h ^= h >> 31;
	return (uint32_t)(h % 8192);
}

/* n uids >= CC_BASE_UID that shared a bucket under the old hash */
static uint32_t *colliding(size_t n)
{
	uint32_t *v = malloc(n * sizeof(*v)), want = old_bucket(CC_BASE_UID);
	size_t k = 0;

	for (uint32_t a = CC_BASE_UID; v && k < n && a < 0xfffffff0u; a++)
		if (old_bucket(a) == want)
			v[k++] = a;
	if (v && k < n) {
		free(v);
		v = NULL;
	}
	return v;
}

int t_info_counter_collisions(void)
{
	pid_t kids[CC_UIDS];
	uint32_t *puids = colliding((size_t)CC_UIDS * CC_ENTRIES);
	int p[2], ok = 1, got = 0, u;
	double c0, c1;

	if (!puids || pipe(p))
		return 1;
	c0 = broker_cpu_ms();
	for (u = 0; u < CC_UIDS; u++) {
		char c = 0;

		kids[u] = fork();
		if (kids[u] == 0)
			entries_publisher(UID_MANY + 6000 + (uid_t)u, p[1], "cc",
					  puids + (size_t)u * CC_ENTRIES);
		if (kids[u] < 0 || read(p[0], &c, 1) != 1)
			break;
		got += c == 'k';
	}
	c1 = broker_cpu_ms();
	printf("    %d uids published %d entries each, every one naming another uid of one "
	       "bucket: broker CPU %.0f ms (bound %.0f)\n", got, CC_ENTRIES, c1 - c0, CC_PUB_MS);
	if (got != CC_UIDS || c1 - c0 > CC_PUB_MS)
		ok = 0;
	if (hang_up_all(kids, u, CC_MS, CC_CPU_MS))
		ok = 0;
	free(puids);
	return ok ? 0 : 1;
}
