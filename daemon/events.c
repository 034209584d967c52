// SPDX-License-Identifier: MIT
/*
 * nvbridged: watches and events.
 *
 * Watches are indexed by (scope, name) for exact watches and by (scope,
 * prefix) for prefix watches, so a PUBLISH or revocation looks up its
 * name and each of its at most NVBRIDGE_NAME_MAX prefixes (hash.c: one
 * byte more and a finalization each) and visits only the watches that
 * match: its cost does not
 * grow with the number of clients or watches.  Watches are bounded per
 * connection (max_watches, -ENOSPC as the module) and per uid
 * (max_watches_per_user, -ENOSPC).
 */
#include "nvbridged.h"
#include "nvb_name.h"
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>

static struct hnode *exact0[4096], *prefix0[4096];
static struct htable exact = HTABLE(exact0), prefix = HTABLE(prefix0);
static struct client *lost_list;	/* clients owing an OVERFLOW record */
static size_t ev_truesize;		/* SIOCOUTQ bytes per queued event record */

void events_init(void)
{
	int sv[2], q = 0;
	struct nvbridge_event r = { .size = NVBRIDGE_EVENT_SIZE };

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		return;
	if (send(sv[0], &r, sizeof(r), 0) == sizeof(r) && !ioctl(sv[0], SIOCOUTQ, &q) && q > 0)
		ev_truesize = (size_t)q;
	close(sv[0]);
	close(sv[1]);
}

/* Records sent on the event socket and not yet read: measured (SIOCOUTQ). */
static uint32_t ev_in_flight(struct client *c)
{
	int q = 0;

	if (!ev_truesize || ioctl(c->evfd, SIOCOUTQ, &q) < 0 || q <= 0)
		q = 0;
	c->ev_sent_bound = (uint32_t)(((size_t)q + ev_truesize - 1) / (ev_truesize ? ev_truesize : 1));
	return c->ev_sent_bound;
}

void ev_flush(struct client *c)
{
	bool want;

	while (c->evq_len) {
		struct nvbridge_event *r = &c->evq[c->evq_head];
		ssize_t n = send(c->evfd, r, sizeof(*r), MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0 && errno == EAGAIN)
			break;
		if (n >= 0)
			c->ev_sent_bound++;
		/* else: the reader closed its end; drop silently */
		c->evq_head = (c->evq_head + 1) % (cfg.max_events + 1);
		c->evq_len--;
	}
	want = c->evq_len > 0;
	if (want != c->ev_epollout) {
		struct epoll_event ev = { .events = want ? EPOLLOUT : 0,
					  .data.u64 = (uint64_t)(uintptr_t)c | TAG_EV };

		epoll_ctl(ep, EPOLL_CTL_MOD, c->evfd, &ev);
		c->ev_epollout = want;
	}
}

static void ev_push(struct client *c, const struct nvbridge_event *r)
{
	uint32_t tail = (c->evq_head + c->evq_len) % (cfg.max_events + 1);

	c->evq[tail] = *r;
	c->evq_len++;
}

/*
 * Records queued here plus records in flight.  Measuring the latter costs a
 * syscall per event; as long as the upper bound (every record sent since
 * the last measurement still unread) keeps us below max_events, the exact
 * number cannot change a decision, so it is only measured near the limit.
 */
static uint32_t ev_depth(struct client *c)
{
	if (c->evq_len + c->ev_sent_bound < cfg.max_events)
		return c->evq_len + c->ev_sent_bound;
	return c->evq_len + ev_in_flight(c);
}

static void lost_list_del(struct client *c)
{
	struct client **pp;

	if (!c->on_lost_list)
		return;
	for (pp = &lost_list; *pp; pp = &(*pp)->lost_next)
		if (*pp == c) {
			*pp = c->lost_next;
			break;
		}
	c->on_lost_list = false;
}

/* Emits the OVERFLOW record once everything before it was read. */
static void ev_check_overflow(struct client *c)
{
	if (c->lost && c->evq_len == 0 && ev_in_flight(c) == 0) {
		struct nvbridge_event r = {
			.size = NVBRIDGE_EVENT_SIZE, .type = NVBRIDGE_EVENT_OVERFLOW,
			.seq = c->lost_seq, .lost = c->lost,
		};

		ev_push(c, &r);
		c->lost = 0;
		lost_list_del(c);
		ev_flush(c);
	}
}

void ev_overflows(void)
{
	for (struct client *c = lost_list, *nx; c; c = nx) {
		nx = c->lost_next;
		ev_check_overflow(c);
	}
}

bool ev_overflow_pending(void)
{
	return lost_list != NULL;
}

static void ev_emit(struct client *c, struct nvbridge_event *r)
{
	r->seq = ++c->ev_seq;
	if (c->lost)
		ev_check_overflow(c);
	if (c->lost || ev_depth(c) >= cfg.max_events) {
		if (!c->on_lost_list) {
			c->lost_next = lost_list;
			lost_list = c;
			c->on_lost_list = true;
		}
		c->lost++;
		c->lost_seq = r->seq;
		return;
	}
	ev_push(c, r);
	ev_flush(c);
}

static void emit_for(struct watch *w, const struct entry *e, uint16_t type, uint16_t reason,
		     const struct client *skip)
{
	struct client *c = w->c;
	struct nvbridge_event r;

	if (c == skip || c->dead || c->scope != e->scope || !may_use(c, e))
		return;
	memset(&r, 0, sizeof(r));
	r.size = NVBRIDGE_EVENT_SIZE;
	r.type = type;
	r.reason = reason;
	r.id = e->id;
	r.watch_id = w->id;
	r.pid = pid_for(c, e->owner);
	r.uid = map_to(&c->uidmap, e->euid, overflowuid);
	r.gid = map_to(&c->gidmap, e->egid, overflowgid);
	memcpy(r.name, e->name, NVBRIDGE_NAME_MAX);
	ev_emit(c, &r);
}

void notify(const struct entry *e, uint16_t type, uint16_t reason, const struct client *skip)
{
	size_t len = strlen(e->name);
	struct khash st;
	uint32_t h;
	struct hnode *x, *nx;

	name_hash_start(&st, e->scope);
	for (size_t l = 0;; l++) {
		/* the prefix e->name[0..l): name_hash() of it */
		h = (uint32_t)khash_end(&st);
		for (x = htable_chain(&prefix, h); x; x = nx) {
			struct watch *w = container_of(x, struct watch, hn);

			nx = x->next;
			if (x->hash == h && w->c->scope == e->scope && strlen(w->name) == l &&
			    !strncmp(w->name, e->name, l))
				emit_for(w, e, type, reason, skip);
		}
		if (l == len)
			break;
		khash_byte(&st, (uint8_t)e->name[l]);
	}
	for (x = htable_chain(&exact, h); x; x = nx) {
		struct watch *w = container_of(x, struct watch, hn);

		nx = x->next;
		if (x->hash == h && w->c->scope == e->scope && !strcmp(w->name, e->name))
			emit_for(w, e, type, reason, skip);
	}
}

int do_watch(struct client *c, struct nvbridge_watch *w)
{
	struct watch *nw;
	bool pfx;

	if (w->flags & ~NVBRIDGE_WATCH_FLAGS_ALL)
		return -EINVAL;
	pfx = w->flags & NVBRIDGE_WATCH_PREFIX;
	if (nvb_name_valid(w->name, pfx))
		return -EINVAL;
	for (struct watch *o = c->watches; o; o = o->cnext)
		if (o->flags == w->flags && !strcmp(o->name, w->name))
			return -EEXIST;
	if (c->nwatches >= cfg.max_watches || c->user->watches >= cfg.max_watches_per_user)
		return -ENOSPC;
	if (!c->evq) {
		/* the event ring costs ~115 KiB at the default depth: only for watchers */
		size_t sz = (cfg.max_events + 1) * sizeof(*c->evq);

		if (!mem_charge(sz))
			return -ENOMEM;
		c->evq = calloc(cfg.max_events + 1, sizeof(*c->evq));
		if (!c->evq) {
			mem_uncharge(sz);
			return -ENOMEM;
		}
	}
	if (!mem_charge(sizeof(*nw)))
		return -ENOMEM;
	nw = calloc(1, sizeof(*nw));
	if (!nw) {
		mem_uncharge(sizeof(*nw));
		return -ENOMEM;
	}
	nw->c = c;
	nw->id = ++c->next_watch_id;
	nw->flags = w->flags;
	strcpy(nw->name, w->name);
	nw->hn.hash = name_hash(c->scope, nw->name, strlen(nw->name));
	htable_add(pfx ? &prefix : &exact, &nw->hn);
	nw->cnext = c->watches;
	c->watches = nw;
	c->nwatches++;
	c->user->watches++;
	w->id = nw->id;
	return 0;
}

static void watch_free(struct client *c, struct watch *w)
{
	htable_del(w->flags & NVBRIDGE_WATCH_PREFIX ? &prefix : &exact, &w->hn);
	c->nwatches--;
	c->user->watches--;
	mem_uncharge(sizeof(*w));
	free(w);
}

int do_unwatch(struct client *c, struct nvbridge_watch *w)
{
	if (w->flags)
		return -EINVAL;
	for (int i = 0; i < NVBRIDGE_NAME_MAX; i++)
		if (w->name[i])
			return -EINVAL;
	for (struct watch **pp = &c->watches; *pp; pp = &(*pp)->cnext)
		if ((*pp)->id == w->id) {
			struct watch *o = *pp;

			*pp = o->cnext;
			watch_free(c, o);
			return 0;
		}
	return -ENOENT;
}

/* The connection is going: its watches vanish first (it gets no events about its own entries). */
void watches_release(struct client *c)
{
	while (c->watches) {
		struct watch *o = c->watches;

		c->watches = o->cnext;
		watch_free(c, o);
	}
	lost_list_del(c);
	c->lost = 0;
	if (c->evq) {
		mem_uncharge((cfg.max_events + 1) * sizeof(*c->evq));
		free(c->evq);
		c->evq = NULL;
	}
}
