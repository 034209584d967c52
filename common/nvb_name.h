/* SPDX-License-Identifier: MIT */
/*
 * The name rule, once for the broker and the library (the module has the
 * same rule in kmod/): 1..NVBRIDGE_NAME_MAX-1 bytes of [A-Za-z0-9._:/-],
 * NUL-terminated within the field; a watch prefix may be empty.
 */
#ifndef NVB_NAME_H
#define NVB_NAME_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <linux/nvbridge.h>

enum nvb_name_fault { NVB_NAME_OK, NVB_NAME_TOO_LONG, NVB_NAME_EMPTY, NVB_NAME_BAD_BYTE };

static inline bool nvb_name_byte_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == ':' || c == '/' || c == '-';
}

/* NVB_NAME_OK or the fault; *at gets the offending byte's index for BAD_BYTE. */
static inline enum nvb_name_fault nvb_name_fault(const char *name, bool prefix, size_t *at)
{
	size_t n = strnlen(name, NVBRIDGE_NAME_MAX);

	if (n == NVBRIDGE_NAME_MAX)
		return NVB_NAME_TOO_LONG;
	if (n == 0 && !prefix)
		return NVB_NAME_EMPTY;
	for (size_t i = 0; i < n; i++)
		if (!nvb_name_byte_ok((unsigned char)name[i])) {
			*at = i;
			return NVB_NAME_BAD_BYTE;
		}
	return NVB_NAME_OK;
}

static inline int nvb_name_valid(const char *name, bool prefix)
{
	size_t at;

	return nvb_name_fault(name, prefix, &at) == NVB_NAME_OK ? 0 : -EINVAL;
}

#endif /* NVB_NAME_H */
