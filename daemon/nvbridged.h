/* SPDX-License-Identifier: MIT */
/* nvbridged internals shared by its files (main.c has the overview). */
#ifndef NVBRIDGED_H
#define NVBRIDGED_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <linux/nvbridge.h>
#include "nvb_wire.h"

#define MAX_MAP 340
#define MAX_PIDNS 33
#define MSG_MAX (NVBRIDGE_WIRE_HDR_SIZE + NVBRIDGE_WIRE_ARG_MAX + NVBRIDGE_WIRE_DATA_MAX)
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77		/* Linux 6.5 */
#endif
/* epoll tags: a client pointer, | TAG_EV for its event socket; or these */
#define TAG_LISTEN 1
#define TAG_SIGNAL 2
#define TAG_EV 4
#define TAG_PID 8	/* the client's pidfd: its process has exited */
#define TAG_CLOSER 3	/* closer.c: closes completed */

/* Every limit, per client, per uid and global (see usage() and nvbridged(8)). */
struct config {
	const char *socket;
	mode_t mode;
	gid_t group;
	bool have_group;
	uint32_t max_entries_per_user;
	uint32_t max_bytes_per_user;	/* blob bytes */
	uint32_t max_blob_size;
	uint32_t max_events;
	uint32_t max_watches;		/* per connection */
	uint32_t max_watches_per_user;
	uint32_t max_waiters;		/* parked FETCH_WAITs per connection */
	uint32_t max_waiters_per_user;
	uint32_t max_waiters_total;
	uint32_t max_conns_per_user;
	uint32_t max_conns;		/* 0: from RLIMIT_NOFILE at start */
	/* per tenant (a uid and the user namespaces it owns, ident.c) */
	uint32_t max_conns_per_tenant;
	uint32_t max_bytes_per_tenant;
	uint32_t max_waiters_per_tenant;
	uint32_t max_queued;		/* replies queued per connection */
	uint32_t max_queued_kb;		/* their bytes, per connection */
	uint32_t max_queued_kb_per_user;
	uint32_t max_fds_in_flight;	/* per connection: sent, not yet received */
	uint32_t max_fds_in_flight_per_user;
	uint32_t max_closes_per_user;	/* client files whose close has not completed */
	uint32_t max_closes_per_tenant;
	uint32_t max_closes;		/* in total; 0: from RLIMIT_NOFILE at start */
	uint32_t max_memory_mb;		/* queued replies, blobs, event queues */
	uint32_t hello_timeout_ms;
	uint32_t chrdev_majors[16];	/* publishable character devices */
	uint32_t nchrdev_majors;
	int verbose;
};

extern struct config cfg;
extern uint32_t overflowuid, overflowgid;
extern int ep;
extern uint64_t msg_gen;
extern bool have_pidfd_signal;
extern size_t mem_used;		/* bytes counted against max_memory_mb */

void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* rate-limited: what a client can make the broker say */
void logmsg_rl(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int64_t now_ns(void);
bool mem_charge(size_t n);
void mem_uncharge(size_t n);
void *mem_calloc(size_t n);

/* ---- closer.c: closing client-supplied files in closer processes ---- */
int closer_reserve(void);
int closer_init(void);
struct user;
/* registry.c: a memfd, tmpfs or hugetlbfs file, told without asking its file system */
bool fd_cheap_close(int fd, bool known_memory);
void closer_close(int fd, struct user *u, struct user *t);
/* closer_close() for a file known (classify_fd) to be one whose close may block */
void closer_queue(int fd, struct user *u, struct user *t);
void closer_completions(void);
void closer_reap(void);
void closer_tick(int64_t now, int64_t *next);
unsigned int closer_pending(void);
void closer_exit(void);

/*
 * ---- per uid and per tenant accounting (conn.c) ----
 * A tenant is a uid of our user namespace together with every uid of the
 * user namespaces it owns (a rootless container's subuid range): one
 * record per uid, one per tenant, the same struct in two tables.
 */
struct user {
	struct user *next;
	uid_t uid;		/* the tenant's: its owner uid */
	bool is_tenant;
	uint32_t conns;		/* live connections (the bound) */
	uint32_t refs;		/* client structs, dropped ones included */
	uint32_t entries, watches, waiters, fds_in_flight;
	uint32_t closes;	/* closes of files it sent, submitted and not completed */
	/* a tenant's closes (closer.c): queued, running, its place in the round */
	struct close_req *cq, **cq_tail;
	uint32_t closing;
	bool cq_ready;
	struct user *ready_next;
	uint64_t bytes;		/* blob bytes of its entries */
	size_t queued;		/* bytes of its connections' queued replies */
};
struct user *user_get(uid_t uid);
struct user *tenant_get(uid_t uid);
void user_put(struct user *u);

/*
 * ---- htable.c: chained tables that double as they fill ----
 * A node is embedded in its element (container_of); a table starts with
 * static buckets, a power of 2: static struct hnode *b[4096]; ... = HTABLE(b).
 */
struct hnode {
	struct hnode *next, **pprev;
	uint32_t hash;
};
struct htable {
	struct hnode **b;
	uint32_t mask, n;
	struct hnode **fixed;	/* the first buckets, never freed */
};
#define HTABLE(arr) { (arr), (uint32_t)(sizeof(arr) / sizeof((arr)[0])) - 1, 0, (arr) }
#define container_of(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))
void htable_add(struct htable *t, struct hnode *x);
void htable_del(struct htable *t, struct hnode *x);
struct hnode *htable_chain(const struct htable *t, uint32_t h);

/* ---- scopes (registry.c): one per IPC namespace seen ---- */
struct vcount;
struct vorder;
struct scope {
	struct scope *next;
	dev_t dev;
	ino_t ino;
	int nsfd;		/* pins the namespace: its inode number is not reused meanwhile */
	uint32_t refs;
	uint64_t next_id;
	struct entry *entries, **tail;	/* in id order */
	/* visible.c: its GACL counters by gid, GOWN by uid << 32 | gid */
	struct vorder *gacl, *gown;
	uint32_t ngacl;		/* GACL counters */
};
struct scope *scope_get(int nsfd);
void scope_put(struct scope *s);

/* ---- data ---- */
struct idmap {
	uint32_t n;
	struct { uint32_t in, out, count; } e[MAX_MAP];
};

struct entry;
struct outmsg {
	struct outmsg *next;
	size_t len;
	struct entry *fd_entry;	/* its file goes with the message (a reference) */
	unsigned char buf[];
};

struct waiter {
	struct hnode hn;		/* in the table by name (hash: name_hash()) */
	struct waiter *cnext;		/* the client's list */
	struct client *c;
	size_t heap_idx;		/* in the deadline heap, or SIZE_MAX */
	uint32_t seq;
	uint32_t size;		/* request's struct size */
	struct nvbridge_fetch f;
	int64_t deadline;	/* CLOCK_MONOTONIC ns, or -1 */
};

struct watch {
	struct hnode hn;		/* in its index (hash: name_hash() of its name) */
	struct watch *cnext;		/* the client's list */
	struct client *c;
	uint64_t id;
	uint32_t flags;
	char name[NVBRIDGE_NAME_MAX];
};

struct client {
	struct client *next, **pprev;
	int fd, evfd;
	int pidfd;		/* the kernel's pidfd of the connecting process (SO_PEERPIDFD) */
	bool hello;
	struct client *ph_next, **ph_pprev;	/* on the pre-HELLO list */
	int64_t hello_deadline;		/* CLOCK_MONOTONIC ns: HELLO must come by then */
	bool dead;
	bool exited;			/* its pidfd became readable (epoll): ask about reaping */
	bool reaped;			/* its process is gone: report pid 0 */
	uint64_t alive_gen;		/* msg_gen when last seen alive */
	uint64_t serial;		/* accept order, for eviction */
	/* identity, fixed at accept (ident.c) */
	pid_t pid;
	uid_t euid;
	gid_t egid;
	gid_t *groups;
	int ngroups;
	bool override;			/* euid 0 in our user ns: every policy admits it */
	struct scope *scope;
	ino_t pidns[MAX_PIDNS];		/* pid ns inos, outermost (ours) first */
	pid_t nspid[MAX_PIDNS];
	int npidns;
	struct idmap uidmap, gidmap;
	struct user *user;
	uid_t tenant_uid;		/* the owner of its user ns below ours, or its euid */
	struct user *tenant;
	/* watches and events (events.c) */
	struct watch *watches;
	uint32_t nwatches;
	uint64_t next_watch_id;
	struct nvbridge_event *evq;	/* ring of max_events + 1, allocated at the first WATCH */
	uint32_t evq_head, evq_len;
	uint32_t ev_sent_bound;		/* >= records sent and not yet read by the client */
	uint64_t ev_seq;
	uint32_t lost;
	uint64_t lost_seq;
	bool ev_epollout;
	struct client *lost_next;	/* on the list of clients owing an OVERFLOW record */
	bool on_lost_list;
	/* replies (conn.c) */
	struct outmsg *outq, **outq_tail;
	uint32_t outq_len;
	size_t outq_bytes;
	uint32_t fds_in_flight;		/* sent with a reply, maybe not yet received */
	bool fd_throttled;		/* on the throttled list: waits for its reader */
	struct client *throttle_next;
	bool close_paused;		/* on the list of those not read for their uid's closes */
	struct client *cpause_next;
	uint32_t epoll_events;
	struct waiter *waiters;
	uint32_t nwaiters;
	struct entry *owned, **owned_tail;	/* its entries, id order (registry.c) */
};

/*
 * What a published file is, found once at PUBLISH (registry.c classify_fd)
 * and kept: freeing the entry needs to know whether its close may block,
 * and asking the file again cost 2 or 3 system calls per entry.
 */
enum fd_kind {
	FD_KIND_NONE,		/* no file */
	FD_KIND_MEMORY,		/* memfd, tmpfs, hugetlbfs: no ->flush; closed on the loop
				   when small (fd_cheap_close) */
	FD_KIND_CHRDEV,		/* a driver's release may wait: closed by a closer */
	FD_KIND_DMABUF,		/* its exporter's release may wait: closed by a closer */
};

struct entry {
	/* unlinked in O(1): a walk per revocation made a disconnect quadratic */
	struct entry *next, **pprev;	/* in its scope, id order */
	struct hnode hn;		/* in the table by name (hash: name_hash()) */
	struct entry *onext, **opprev;	/* in its owner's, id order */
	uint32_t refs;			/* the registry's, plus queued replies' */
	bool revoked;
	uint8_t fd_kind;		/* enum fd_kind: what classify_fd found at PUBLISH */
	uint64_t id;
	char name[NVBRIDGE_NAME_MAX];
	struct scope *scope;
	struct client *owner;
	int fd;
	void *blob;
	uint32_t blob_len;
	uint32_t access;
	uid_t puid;		/* policy ids, in our namespace */
	gid_t pgid;
	uid_t euid;
	gid_t egid;
	uid_t tuid;		/* its publisher's tenant: pays for its close */
};

extern struct client *clients;
extern unsigned int nclients, pre_hello;

/* ---- ident.c ---- */
int ident_at_accept(struct client *c, int fd);
uint32_t map_to(const struct idmap *m, uint32_t id, uint32_t over);
int64_t map_from(const struct idmap *m, uint32_t id);
bool pub_alive(struct client *pub);
uint32_t pid_for(const struct client *viewer, struct client *pub);
uint16_t exit_reason(struct client *c);

/* ---- hash.c: the keyed hash of every table keyed by what clients choose ---- */
struct khash {
	uint64_t v[4];
	uint64_t m;		/* the bytes of an unfinished word */
	uint64_t len;
};
void khash_init(void);
void khash_start(struct khash *st);
void khash_byte(struct khash *st, uint8_t b);
void khash_u64(struct khash *st, uint64_t x);
uint64_t khash_end(const struct khash *st);
/* for the vectors' test (tests/unit/khash.c) only */
void khash_set_key(const uint64_t k[2]);
void khash_rounds(int c, int d);

/* ---- vorder.c: an ordered index of (u64 key, value) (visible.c's group counters) ---- */
struct vorder;
/* beside each key: the counter's count and its live ids' least and greatest */
struct vorder_aux {
	uint64_t head, tail;
	uint32_t count;
};
struct vorder_it {
	const struct vorder *o;
	uint32_t c, i;
};
uint32_t vorder_count(const struct vorder *o);
/*
 * The body of a function returning the first i in [from, n) with
 * AT(i) >= t (n if none): probes from + 1, 3, 7, ... then bisects between
 * the last two, O(log distance).  AT(i) is a key, ascending in i.
 */
#define GALLOP_FIRST_GE(AT, from, n, t)					\
	do {								\
		uint32_t lo_ = (from), step_ = 1, hi_;			\
									\
		while (lo_ < (n) && AT(lo_) < (t)) {			\
			lo_ += step_;					\
			step_ *= 2;					\
		}							\
		hi_ = lo_ < (n) ? lo_ + 1 : (n);			\
		lo_ -= step_ / 2;	/* the last probe below t, or from */ \
		while (lo_ < hi_) {					\
			uint32_t mid_ = lo_ + (hi_ - lo_) / 2;		\
									\
			if (AT(mid_) < (t))				\
				lo_ = mid_ + 1;				\
			else						\
				hi_ = mid_;				\
		}							\
		return lo_;						\
	} while (0)
int vorder_insert(struct vorder **o, uint64_t key, void *val);
void vorder_delete(struct vorder **o, uint64_t key);
void vorder_begin(struct vorder_it *it, const struct vorder *o);
bool vorder_seek(struct vorder_it *it, uint64_t t);
bool vorder_at(const struct vorder_it *it, uint64_t *key, void **val);
void vorder_next(struct vorder_it *it);
const struct vorder_aux *vorder_aux_at(const struct vorder_it *it);
struct vorder_aux *vorder_aux(struct vorder *o, uint64_t key);

/* ---- registry.c ---- */
/* the scope's address, then the name's bytes (events.c hashes prefixes by khash_end) */
static inline void name_hash_start(struct khash *st, const struct scope *s)
{
	khash_start(st);
	khash_u64(st, (uint64_t)(uintptr_t)s);
}

uint32_t name_hash(const struct scope *s, const char *name, size_t len);
bool client_in_groups(const struct client *c, gid_t g);
bool may_use(const struct client *c, const struct entry *e);
void entry_put(struct entry *e);
int do_publish(struct client *c, struct nvbridge_publish *p, const void *data,
	       uint32_t data_len, int *fdp);
void do_fetch(struct client *c, uint32_t seq, uint32_t size, struct nvbridge_fetch *f);
int do_unpublish(struct client *c, struct nvbridge_unpublish *u);
void do_list(struct client *c, uint32_t seq, uint32_t size, struct nvbridge_list *l);
void fill_info(struct client *c, struct nvbridge_info *i);
void waiters_expire(int64_t now);
int64_t waiters_next_deadline(void);
void waiter_cancel(struct client *c, uint32_t seq);
void client_release_registry(struct client *c, uint16_t reason);
void registry_exit(void);

/* ---- visible.c: INFO's count, kept per scope ---- */
int visible_add(struct entry *e);
void visible_del(const struct entry *e);
uint32_t visible_count(const struct client *c);
/* ---- and the entries by id: UNPUBLISH by id, LIST ---- */
struct entry *visible_find_id(const struct scope *s, uint64_t id);
int visible_list(const struct client *c, uint64_t after, struct entry **out, uint32_t max);

/* ---- events.c ---- */
int do_watch(struct client *c, struct nvbridge_watch *w);
int do_unwatch(struct client *c, struct nvbridge_watch *w);
void notify(const struct entry *e, uint16_t type, uint16_t reason, const struct client *skip);
void ev_flush(struct client *c);
void ev_overflows(void);
bool ev_overflow_pending(void);
void watches_release(struct client *c);
void events_init(void);

/* ---- conn.c ---- */
void reply(struct client *c, uint32_t type, uint32_t cmd, uint32_t seq, int32_t result,
	   const void *arg, uint32_t arg_size, const void *data, uint32_t data_len,
	   struct entry *fd_entry);
void drop_client(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void handle_message(struct client *c, const unsigned char *buf, size_t n, int *fds, int nfds,
		    bool truncated);
void client_read(struct client *c);
void client_write(struct client *c);
void client_free(struct client *c);
void accept_client(int listen_fd);
struct client *client_new(int fd, struct user *u);
void conns_tick(int64_t now, int64_t *next);
void throttled_tick(void);
bool conns_throttled(void);
bool user_closes_paused(const struct user *u);
bool client_closes_paused(const struct client *c);
void conns_closes_resume(void);
void conn_limits_init(void);
void conns_exit(void);

#endif /* NVBRIDGED_H */
