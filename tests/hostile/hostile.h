/* SPDX-License-Identifier: MIT */
/* Shared helpers of the hostile suite (tests/hostile/): raw broker clients. */
#ifndef NVB_HOSTILE_H
#define NVB_HOSTILE_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "nvb_wire.h"

#define UID_HONEST 2001
#define UID_VICTIM 2002
#define UID_ATTACK 2003
#define UID_MANY   3000	/* 3000.. for floods from many uids */

int64_t now_ns(void);
double cpu_ms_of(pid_t pid);
double cpu_clock_ms(pid_t pid);
int become(uid_t uid);
int raise_nofile(unsigned int n);
pid_t start_broker_at(const char *bin, const char *sock);
int rconnect(void);
int rhello(int s, int fd);
int rhello_keep(int s, int *evfd);
int rsend(int s, uint16_t type, uint32_t cmd, uint32_t seq, const void *arg, uint32_t asz,
	  const void *data, uint32_t dlen, int fd);
int rrecv(int s, struct nvbridge_wire_hdr *h, void *arg, size_t cap, int *fd, int timeout_ms);
int rfetch_req(int s, uint32_t seq, const char *name, uint32_t flags, int64_t timeout_ns);
int rwatch(int s, uint32_t seq, const char *name, uint32_t flags);
int rpublish(int s, uint32_t seq, const char *name, int fd, uint32_t access);
int rpublish_refused(int s, uint32_t seq, const char *name, int fd);
pid_t rfile_sender(uid_t u, const char *file, int n, int ready);
double rhonest_ms(int rounds, int wait_ms);
pid_t ppid_of(pid_t pid);
/* processes of their own (util.c): a held connection; a publisher of n entries */
pid_t rholder(uid_t u, int ready);
pid_t rpublisher(uid_t u, char (*names)[24], int n, int ready);
int rready(int rd);
void ready_and_wait(int ready, bool ok) __attribute__((noreturn));
double median_round_ms(uid_t u, double (*round)(int s), int n);

/* hostile.c: ms of CPU the broker has used; one honest round (ms, or -1) */
double broker_cpu_ms(void);
double honest_once(void);

/* evict.c: the hostile case newest_not_evicted */
int t_newest_not_evicted(void);
/* entries.c: the hostile case many_entries */
int t_many_entries(void);
void entries_publisher(uid_t u, int ready, const char *prefix, const uint32_t *puids);
int hang_up_all(const pid_t *kids, int n, double ms_bound, double cpu_bound);
/* review_broker.c: the hostile case info_counter_collisions */
int t_info_counter_collisions(void);

#include "fuse_hang.h"
/* util.c: who FLUSHed the scene's file; an attack's teardown (returns rc) */
int flushed_by_closer(const struct fuse_hang_seen *seen, pid_t broker, int wait_ms);
int attack_end(struct fuse_scene *sc, pid_t att, pid_t broker, int rc);
#endif
