/* SPDX-License-Identifier: MIT */
/*
 * The one rule for every options struct of the public API: its first
 * field is `size_t sz`, set by the caller to sizeof the struct it was
 * built against (openat2's and clone3's convention).
 */
#ifndef NVB_OPTS_H
#define NVB_OPTS_H

#include <errno.h>
#include <stddef.h>
#include <string.h>

#define NVB_OPTS_MAX	4096

/*
 * Copies the caller's struct (src, src_sz bytes) over dst (dst_sz bytes,
 * holding the defaults).  A smaller struct (an older caller) leaves the
 * fields it does not reach at their defaults; a larger one (a newer
 * caller) is accepted when every byte this library does not know is zero.
 * 0, -EINVAL (src_sz below min_sz, which covers the fields every version
 * has, or above NVB_OPTS_MAX) or -E2BIG (an unknown non-zero field).
 */
static inline int nvb_opts_in(void *dst, size_t dst_sz, const void *src, size_t src_sz,
			      size_t min_sz)
{
	if (src_sz < min_sz || src_sz > NVB_OPTS_MAX)
		return -EINVAL;
	for (size_t i = dst_sz; i < src_sz; i++)
		if (((const unsigned char *)src)[i])
			return -E2BIG;
	memcpy(dst, src, src_sz < dst_sz ? src_sz : dst_sz);
	return 0;
}

#endif /* NVB_OPTS_H */
