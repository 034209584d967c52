// SPDX-License-Identifier: MIT
#include "nvbridged.h"

/* ---- events ---- */
/* Records sent on the event socket and not yet read: measured (SIOCOUTQ). */
uint32_t ev_in_flight(struct client *c)
{
	int q = 0;

	if (!ev_truesize || ioctl(c->evfd, SIOCOUTQ, &q) < 0 || q <= 0)
		q = 0;
	c->ev_sent_bound = (uint32_t)(((size_t)q + ev_truesize - 1) / (ev_truesize ? ev_truesize : 1));
	return c->ev_sent_bound;
}

void ev_flush(struct client *c)
{
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
	bool want = c->evq_len > 0;

	if (want != c->ev_epollout) {
		struct epoll_event ev = { .events = want ? EPOLLOUT : 0,
					  .data.u64 = (uint64_t)(uintptr_t)c | 4 };

		epoll_ctl(ep, EPOLL_CTL_MOD, c->evfd, &ev);
		c->ev_epollout = want;
	}
}

void ev_push(struct client *c, const struct nvbridge_event *r)
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
uint32_t ev_depth(struct client *c)
{
	if (c->evq_len + c->ev_sent_bound < cfg.max_events)
		return c->evq_len + c->ev_sent_bound;
	return c->evq_len + ev_in_flight(c);
}

/* Emits the OVERFLOW record once everything before it was read. */
void ev_check_overflow(struct client *c)
{
	if (c->lost && c->evq_len == 0 && ev_in_flight(c) == 0) {
		struct nvbridge_event r = {
			.size = NVBRIDGE_EVENT_SIZE, .type = NVBRIDGE_EVENT_OVERFLOW,
			.seq = c->lost_seq, .lost = c->lost,
		};

		ev_push(c, &r);
		c->lost = 0;
		lost_clients--;
		ev_flush(c);
	}
}

void ev_emit(struct client *c, struct nvbridge_event *r)
{
	uint32_t depth;

	r->seq = ++c->ev_seq;
	if (c->lost)
		ev_check_overflow(c);
	depth = ev_depth(c);
	if (c->lost || depth >= cfg.max_events) {
		if (!c->lost)
			lost_clients++;
		c->lost++;
		c->lost_seq = r->seq;
		return;
	}
	ev_push(c, r);
	ev_flush(c);
}

void notify(const struct entry *e, uint16_t type, uint16_t reason, const struct client *skip)
{
	for (struct client *c = clients; c; c = c->next) {
		if (!c->hello || c->dead || c == skip || !same_scope(c, e) || !c->nwatches)
			continue;
		if (!may_use(c, e))
			continue;
		for (uint32_t i = 0; i < c->nwatches; i++) {
			struct watch *w = &c->watches[i];
			bool match = (w->flags & NVBRIDGE_WATCH_PREFIX) ?
				!strncmp(e->name, w->name, strlen(w->name)) :
				!strcmp(e->name, w->name);
			struct nvbridge_event r;

			if (!match)
				continue;
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
	}
}


int do_watch(struct client *c, struct nvbridge_watch *w)
{
	bool prefix;
	int ret;

	if (w->flags & ~NVBRIDGE_WATCH_FLAGS_ALL)
		return -EINVAL;
	prefix = w->flags & NVBRIDGE_WATCH_PREFIX;
	ret = check_name(w->name, prefix);
	if (ret)
		return ret;
	for (uint32_t i = 0; i < c->nwatches; i++)
		if (c->watches[i].flags == w->flags && !strcmp(c->watches[i].name, w->name))
			return -EEXIST;
	if (c->nwatches >= cfg.max_watches)
		return -ENOSPC;
	struct watch *nw = realloc(c->watches, (c->nwatches + 1) * sizeof(*nw));

	if (!nw)
		return -ENOMEM;
	c->watches = nw;
	nw[c->nwatches].id = ++c->next_watch_id;
	nw[c->nwatches].flags = w->flags;
	memset(nw[c->nwatches].name, 0, NVBRIDGE_NAME_MAX);
	strcpy(nw[c->nwatches].name, w->name);
	w->id = nw[c->nwatches].id;
	c->nwatches++;
	return 0;
}

int do_unwatch(struct client *c, struct nvbridge_watch *w)
{
	if (w->flags)
		return -EINVAL;
	for (int i = 0; i < NVBRIDGE_NAME_MAX; i++)
		if (w->name[i])
			return -EINVAL;
	for (uint32_t i = 0; i < c->nwatches; i++)
		if (c->watches[i].id == w->id) {
			c->watches[i] = c->watches[--c->nwatches];
			return 0;
		}
	return -ENOENT;
}
