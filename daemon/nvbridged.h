/* SPDX-License-Identifier: MIT */
/* nvbridged internals shared by its files (main.c has the overview). */
#ifndef NVBRIDGED_H
#define NVBRIDGED_H

#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/nsfs.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <linux/nvbridge.h>
#include "nvb_wire.h"

#define CAP_IPC_OWNER_BIT 15
#define MAX_WAITERS 1024
#define MAX_OUTQ 256
#define MAX_MAP 340
#define MAX_PIDNS 33
#define MSG_MAX (NVBRIDGE_WIRE_HDR_SIZE + NVBRIDGE_WIRE_ARG_MAX + NVBRIDGE_WIRE_DATA_MAX)
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77		/* Linux 6.5 */
#endif
/* ep tags: low bits */
#define TAG_LISTEN 1
#define TAG_SIGNAL 2

struct config {
	const char *socket;
	mode_t mode;
	gid_t group;
	bool have_group;
	uint32_t max_entries_per_user;
	uint32_t max_blob_size;
	uint32_t max_events;
	uint32_t max_watches;
	uint32_t max_conns_per_user;
	uint32_t hello_timeout_ms;
	int verbose;
};

extern struct config cfg;
extern uint32_t overflowuid, overflowgid;
extern size_t ev_truesize;
extern int listen_fd, ep, sig_fd;
extern bool socket_activated;
extern uint64_t next_entry_id;
extern struct stat listen_st;
extern dev_t nvbridge_rdev, anon_dev;
extern unsigned int total_waiters;
extern uint64_t msg_gen;
extern bool have_pidfd_signal;
extern unsigned int lost_clients, pre_hello;
extern int reserve_fd;
extern int64_t listen_paused_until, last_shed_log;

void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int64_t now_ns(void);

/* ---- data ---- */
struct idmap {
	uint32_t n;
	struct { uint32_t in, out, count; } e[MAX_MAP];
};

struct outmsg {
	struct outmsg *next;
	size_t len;
	int fd;
	unsigned char buf[];
};

struct waiter {
	struct waiter *next;
	uint32_t seq;
	uint32_t size;		/* request's struct size */
	struct nvbridge_fetch f;
	int64_t deadline;	/* CLOCK_MONOTONIC ns, or -1 */
};

struct watch {
	uint64_t id;
	uint32_t flags;
	char name[NVBRIDGE_NAME_MAX];
};

struct client {
	struct client *next;
	int fd, evfd, pidfd;
	int peer_pidfd;		/* SO_PEERPIDFD: the kernel's pidfd of the connecting process, or -1 */
	bool hello;
	int64_t hello_deadline;		/* CLOCK_MONOTONIC ns: HELLO must come by then */
	bool dead;
	bool reaped;			/* its process is gone: report pid 0 */
	uint64_t alive_gen;		/* msg_gen when last seen alive */
	pid_t pid;
	uid_t euid;
	gid_t egid;
	gid_t *groups;
	int ngroups;
	dev_t ipc_dev;
	ino_t ipc_ino;
	ino_t pidns[MAX_PIDNS];		/* pid ns inos, outermost (ours) first */
	pid_t nspid[MAX_PIDNS];
	int npidns;
	struct idmap uidmap, gidmap;
	bool cap_ipc_owner;
	ino_t evend_ino;		/* the client's end of the event socket */
	uint32_t ev_sent_bound;		/* >= records sent and not yet read by the client */
	/* watches */
	struct watch *watches;
	uint32_t nwatches;
	uint64_t next_watch_id;
	/* events */
	struct nvbridge_event *evq;	/* ring of max_events + 1 */
	uint32_t evq_head, evq_len;
	uint64_t ev_seq;
	uint32_t lost;
	uint64_t lost_seq;
	bool ev_epollout;
	/* replies */
	struct outmsg *outq, **outq_tail;
	uint32_t outq_len;
	bool epollout;
	struct waiter *waiters;
	uint32_t nwaiters;
};

struct entry {
	struct entry *next;
	uint64_t id;
	char name[NVBRIDGE_NAME_MAX];
	dev_t ipc_dev;
	ino_t ipc_ino;
	struct client *owner;
	int fd;
	void *blob;
	uint32_t blob_len;
	uint32_t access;
	uid_t puid;		/* policy ids, in our namespace */
	gid_t pgid;
	uid_t euid;
	gid_t egid;
};


extern struct client *clients;
extern struct entry *entries, **entries_tail;
extern unsigned int nclients;

int read_idmap(int procfd, const char *file, struct idmap *m);
uint32_t map_to(const struct idmap *m, uint32_t id, uint32_t over);
int64_t map_from(const struct idmap *m, uint32_t id);
bool pub_alive(struct client *pub);
uint32_t pid_for(const struct client *viewer, struct client *pub);
int fdinfo_pid(int fd);
int ns_ino(int procfd, const char *ns, struct stat *st);
int identify(struct client *c, int procfd);
bool in_groups(const struct client *c, gid_t g);
bool may_use(const struct client *c, const struct entry *e);
bool same_scope(const struct client *c, const struct entry *e);
struct entry *find_entry(const struct client *c, const char *name);
void entry_free(struct entry *e);
void entry_revoke(struct entry *e, uint16_t reason, const struct client *skip);
int get_struct(void *dst, size_t ksize, size_t ver0, const void *src, uint32_t usize);
int check_name(const char *n, bool prefix);
uint32_t user_entries(uid_t euid);
bool refused_file(int fd);
int do_publish(struct client *c, struct nvbridge_publish *p, const void *data,
		      uint32_t data_len, int *fdp);
void fetch_reply(struct client *c, uint32_t seq, uint32_t size,
			struct nvbridge_fetch *f, struct entry *e);
void waiter_free(struct client *c, struct waiter *w);
void wake_waiters(struct entry *e);
void do_fetch(struct client *c, uint32_t seq, uint32_t size, struct nvbridge_fetch *f);
int do_unpublish(struct client *c, struct nvbridge_unpublish *u);
void do_list(struct client *c, uint32_t seq, uint32_t size, struct nvbridge_list *l);
void fill_info(struct client *c, struct nvbridge_info *i);
uint32_t ev_in_flight(struct client *c);
void ev_flush(struct client *c);
void ev_push(struct client *c, const struct nvbridge_event *r);
uint32_t ev_depth(struct client *c);
void ev_check_overflow(struct client *c);
void ev_emit(struct client *c, struct nvbridge_event *r);
void notify(const struct entry *e, uint16_t type, uint16_t reason, const struct client *skip);
int do_watch(struct client *c, struct nvbridge_watch *w);
int do_unwatch(struct client *c, struct nvbridge_watch *w);
void set_epoll(struct client *c);
int send_iov(int fd, struct iovec *iov, size_t niov, int pass_fd);
void flush_out(struct client *c);
void reply(struct client *c, uint32_t type, uint32_t cmd, uint32_t seq, int32_t result,
		  const void *arg, uint32_t arg_size, const void *data, uint32_t data_len,
		  int pass_fd);
int make_event_socket(struct client *c, int *client_end);
void do_hello(struct client *c, const struct nvbridge_wire_hdr *h, const void *arg,
		     int *fdp, const struct ucred *scm);
void handle_request(struct client *c, const struct nvbridge_wire_hdr *h,
			   const unsigned char *arg, const unsigned char *data, int *fdp);
void handle_cancel(struct client *c, const struct nvbridge_wire_hdr *h);
void client_free(struct client *c);
void drop_client(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void client_read(struct client *c);
unsigned int conns_of(uid_t uid);
void shed_connection(int err);
void accept_client(void);
void measure_truesize(void);
void read_u32(const char *path, uint32_t *v);
int setup_listener(void);
void usage(FILE *f);
int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out);

#endif /* NVBRIDGED_H */
