/* SPDX-License-Identifier: MIT */
/* fuse_hang.c: a FUSE mount whose FLUSH never answers (hostile and conformance suites) */
#ifndef NVB_FUSE_HANG_H
#define NVB_FUSE_HANG_H
#include <sys/types.h>

int fuse_hang_start(const char *mnt, pid_t *server);
int fuse_hang_start_for(const char *mnt, uid_t owner, pid_t *server);
void fuse_hang_stop(const char *mnt, pid_t server);
#endif
