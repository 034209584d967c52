/* SPDX-License-Identifier: MIT */
/* fuse_hang.c: a FUSE mount whose FLUSH never answers (hostile and conformance suites) */
#ifndef NVB_FUSE_HANG_H
#define NVB_FUSE_HANG_H
#include <sys/types.h>

int fuse_hang_start(const char *mnt, pid_t *server);
int fuse_hang_start_for(const char *mnt, uid_t owner, pid_t *server);
void fuse_hang_stop(const char *mnt, pid_t server);
/*
 * What the last started server was asked (shared with it): FLUSHes and the
 * pid (the caller's thread group) of the last, RELEASEs.  Who closed a
 * file shows who would have slept in its FLUSH.
 */
struct fuse_hang_seen {
	volatile unsigned int flushes, releases;
	volatile pid_t flush_pid;
};
const struct fuse_hang_seen *fuse_hang_seen(void);

/* the attacks' scene: a temporary dir holding the hung mount (file: its "f") and a socket path */
struct fuse_scene {
	char dir[32], mnt[64], file[80], sock[64];
	pid_t srv;
};
/* 0; 2: no temporary dir; 77: no FUSE here (said on stdout) */
int fuse_scene_start(struct fuse_scene *sc);
void fuse_scene_end(struct fuse_scene *sc);
#endif
