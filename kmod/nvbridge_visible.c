// SPDX-License-Identifier: GPL-2.0
/*
 * nvbridge: INFO's count of the entries the opener may fetch, without a
 * walk of the scope under its lock (one INFO cost a walk of every entry
 * of the scope, repeatable by anyone in it, holding the lock that every
 * PUBLISH, FETCH and revocation there takes).  The same scheme as the
 * broker's daemon/visible.c, so both count alike.
 *
 * nvb_policy_allows() admits an entry to its publisher's euid, for SCOPE,
 * for UID naming the opener's euid, and for GROUP/GID granting a gid the
 * opener holds (egid or supplementary).  Per scope, counters of live
 * entries:
 *   SCOPE       access SCOPE
 *   OWN(u)      published by u, not SCOPE
 *   UACL(u)     access UID naming u, published by another
 *   GACL(g)     access GROUP (publisher's egid g) or GID (g)
 *   GOWN(u, g)  those of GACL(g) that u published
 * An opener u holding the distinct gids G sees
 *   SCOPE + OWN(u) + UACL(u) + sum over g in G of (GACL(g) - GOWN(u, g)).
 * The sum visits the smaller side: the opener's gids (a lookup each), or
 * the scope's GACL counters (s->vgacl, a bisection of the opener's sorted
 * group_info each).  An opener in a user namespace of its own may hold
 * NGROUPS_MAX (65,536) gids, and a lookup per gid cost 5.3 ms of CPU
 * under the lock per INFO + LIST where a scope had a few GACL, 270x a
 * three-gid opener's (conformance many_gids_cost, in the VM).
 * The counters an entry is in are made (GFP_KERNEL_ACCOUNT) when it is
 * reserved, where PUBLISH may still fail, so that making it visible
 * cannot; they go when their last entry is unlinked.  All under s->lock.
 *
 * Each counter but GOWN also holds its entries by id (an xarray), so that
 * LIST visits only what the opener may see: it merges, from the cursor
 * on, the id orders of the counters the opener's policy admits
 * (nvb_vlist_*), where the walk of the scope's ids went through every
 * entry the opener may not see, under the lock (1,000 LISTs beside 50 x
 * 1,024 entries of others: 15 s in the TCG VM, against 3.7 ms in an
 * empty scope).
 */
#include <linux/cred.h>
#include <linux/hashtable.h>
#include <linux/jhash.h>
#include <linux/slab.h>
#include "nvbridge_internal.h"

enum { NVB_V_SCOPE, NVB_V_OWN, NVB_V_UACL, NVB_V_GACL, NVB_V_GOWN };

struct nvb_vcount {
	struct hlist_node node;		/* in scope->vcounts */
	u32 kind, a, b;
	struct list_head gnode;		/* GACL: in scope->vgacl */
	unsigned int refs;		/* entries linked: reserved or live */
	unsigned int live;		/* of those, live: what is counted */
	struct xarray ids;		/* those entries by id (not for GOWN) */
};

/*
 * Seeded per scope: a publisher chooses a and b (the uid or gid its entry
 * names), and with a fixed seed it could compute offline which ids share
 * one of the 256 buckets and make every PUBLISH, revocation and INFO under
 * the scope's lock walk one chain (the broker's hostile case
 * info_counter_collisions: 14 s of its loop with an unkeyed hash).
 */
static u32 nvb_vhash(const struct nvb_scope *s, u32 kind, u32 a, u32 b)
{
	return jhash_3words(kind, a, b, s->vseed);
}

static struct nvb_vcount *nvb_vfind(struct nvb_scope *s, u32 kind, u32 a, u32 b)
{
	struct nvb_vcount *v;

	hash_for_each_possible(s->vcounts, v, node, nvb_vhash(s, kind, a, b))
		if (v->kind == kind && v->a == a && v->b == b)
			return v;
	return NULL;
}

static unsigned int nvb_vget(struct nvb_scope *s, u32 kind, u32 a, u32 b)
{
	struct nvb_vcount *v = nvb_vfind(s, kind, a, b);

	return v ? v->live : 0;
}

/* The counters @e belongs in, as (kind, a, b): how many. */
static int nvb_vkeys(const struct nvb_entry *e, u32 k[NVB_VC_MAX][3])
{
	u32 u = __kuid_val(e->pub_uid), g;
	int n = 0;

	if (e->access == NVBRIDGE_ACCESS_SCOPE) {
		k[0][0] = NVB_V_SCOPE;
		k[0][1] = 0;
		k[0][2] = 0;
		return 1;
	}
	k[n][0] = NVB_V_OWN;
	k[n][1] = u;
	k[n++][2] = 0;
	if (e->access == NVBRIDGE_ACCESS_UID && !uid_eq(e->acl_uid, e->pub_uid)) {
		k[n][0] = NVB_V_UACL;
		k[n][1] = __kuid_val(e->acl_uid);
		k[n++][2] = 0;
	}
	if (e->access == NVBRIDGE_ACCESS_GROUP || e->access == NVBRIDGE_ACCESS_GID) {
		g = __kgid_val(e->access == NVBRIDGE_ACCESS_GROUP ? e->pub_gid : e->acl_gid);
		k[n][0] = NVB_V_GACL;
		k[n][1] = g;
		k[n++][2] = 0;
		k[n][0] = NVB_V_GOWN;
		k[n][1] = u;
		k[n++][2] = g;
	}
	return n;
}

/* @v, which no entry is linked to, goes. */
static void nvb_vfree(struct nvb_scope *s, struct nvb_vcount *v)
{
	hash_del(&v->node);
	if (v->kind == NVB_V_GACL) {
		list_del(&v->gnode);
		WRITE_ONCE(s->nvgacl, s->nvgacl - 1);
	}
	xa_destroy(&v->ids);
	kfree(v);
}

/* Unlinks @e from its counters; frees those it was the last of. */
void nvb_visible_unlink(struct nvb_scope *s, struct nvb_entry *e)
{
	lockdep_assert_held(&s->lock);
	while (e->nvc) {
		struct nvb_vcount *v = e->vc[--e->nvc];

		if (v->kind != NVB_V_GOWN)
			xa_erase(&v->ids, e->id);
		if (--v->refs)
			continue;
		WARN_ON(v->live);
		nvb_vfree(s, v);
	}
}

/*
 * Links reserved @e (its id set) to its counters, made as needed: 0 or
 * -ENOMEM (nothing linked).
 */
int nvb_visible_link(struct nvb_scope *s, struct nvb_entry *e)
{
	u32 k[NVB_VC_MAX][3];
	int i, n = nvb_vkeys(e, k);

	lockdep_assert_held(&s->lock);
	for (i = 0; i < n; i++) {
		struct nvb_vcount *v = nvb_vfind(s, k[i][0], k[i][1], k[i][2]);

		if (!v) {
			v = kzalloc(sizeof(*v), GFP_KERNEL_ACCOUNT);
			if (!v) {
				nvb_visible_unlink(s, e);
				return -ENOMEM;
			}
			v->kind = k[i][0];
			v->a = k[i][1];
			v->b = k[i][2];
			xa_init(&v->ids);
			hash_add(s->vcounts, &v->node, nvb_vhash(s, v->kind, v->a, v->b));
			if (v->kind == NVB_V_GACL) {
				list_add(&v->gnode, &s->vgacl);
				WRITE_ONCE(s->nvgacl, s->nvgacl + 1);
			}
		}
		if (v->kind != NVB_V_GOWN &&
		    xa_insert(&v->ids, e->id, e, GFP_KERNEL_ACCOUNT)) {
			if (!v->refs)
				nvb_vfree(s, v);
			nvb_visible_unlink(s, e);
			return -ENOMEM;
		}
		v->refs++;
		e->vc[e->nvc++] = v;
	}
	return 0;
}

/* @e became live (@live true) or stops being live. */
void nvb_visible_set(struct nvb_entry *e, bool live)
{
	int i;

	for (i = 0; i < e->nvc; i++) {
		if (live)
			e->vc[i]->live++;
		else
			e->vc[i]->live--;
	}
}

/* @cred's gids, egid included, duplicates counted: at least its distinct ones */
static unsigned int nvb_ngids(const struct cred *cred)
{
	return (cred->group_info ? cred->group_info->ngroups : 0) + 1;
}

/* What nvb_visit_gids() does with a gid @g: @v its GACL counter, or NULL: to be looked up */
struct nvb_gid_visit {
	void (*fn)(struct nvb_scope *s, struct nvb_vcount *v, u32 g, struct nvb_gid_visit *w);
};

/*
 * Visits with @w each distinct gid @cred holds (egid included) that may
 * have a GACL counter, from the smaller side: the counters of @s that
 * @cred holds, or @cred's gids.
 */
static void nvb_visit_gids(struct nvb_scope *s, const struct cred *cred, struct nvb_gid_visit *w)
{
	const struct group_info *gi = cred->group_info;
	u32 eg = __kgid_val(cred->egid);
	bool egid_seen = false;
	struct nvb_vcount *v;
	int i;

	if (s->nvgacl < nvb_ngids(cred)) {
		list_for_each_entry(v, &s->vgacl, gnode)
			if (nvb_cred_has_gid(cred, KGIDT_INIT(v->a)))
				w->fn(s, v, v->a, w);
		return;
	}
	/* group_info is sorted (groups_sort()): a gid held twice is adjacent */
	for (i = 0; gi && i < gi->ngroups; i++) {
		u32 g = __kgid_val(gi->gid[i]);

		if (i && gid_eq(gi->gid[i], gi->gid[i - 1]))
			continue;
		egid_seen |= g == eg;
		w->fn(s, NULL, g, w);
	}
	if (!egid_seen)
		w->fn(s, NULL, eg, w);
}

struct nvb_vsum {
	struct nvb_gid_visit w;
	u32 uid;
	long n;
};

static void nvb_vsum_gid(struct nvb_scope *s, struct nvb_vcount *v, u32 g,
			 struct nvb_gid_visit *w)
{
	struct nvb_vsum *sum = container_of(w, struct nvb_vsum, w);

	sum->n += (long)(v ? v->live : nvb_vget(s, NVB_V_GACL, g, 0)) -
		  nvb_vget(s, NVB_V_GOWN, sum->uid, g);
}

/* Live entries of @s that @cred's policy admits (not the CAP_IPC_OWNER override). */
unsigned int nvb_visible_count(struct nvb_scope *s, const struct cred *cred)
{
	struct nvb_vsum sum = { .w.fn = nvb_vsum_gid, .uid = __kuid_val(cred->euid) };

	lockdep_assert_held(&s->lock);
	sum.n = (long)nvb_vget(s, NVB_V_SCOPE, 0, 0) + nvb_vget(s, NVB_V_OWN, sum.uid, 0) +
		nvb_vget(s, NVB_V_UACL, sum.uid, 0);
	nvb_visit_gids(s, cred, &sum.w);
	/* GOWN(u, g) counts some of GACL(g)'s entries: a sum below 0 is a counter bug */
	if (WARN_ON_ONCE(sum.n < 0))
		return 0;
	return (unsigned int)sum.n;
}

/* LIST's merge: one cursor per counter the opener's policy admits */
struct nvb_vlist {
	unsigned int n, cap;
	struct nvb_vlist_cur {
		struct xarray *xa;
		unsigned long idx;
		struct nvb_entry *e;
	} c[];
};

/* The cursors @cred's policy may need in @s: SCOPE, OWN, UACL and its gids' GACL. */
static unsigned int nvb_vlist_need(struct nvb_scope *s, const struct cred *cred)
{
	return 3 + min(READ_ONCE(s->nvgacl), nvb_ngids(cred));
}

/*
 * Room for the cursors @cred's policy needs in @s, sized without the lock
 * (nvb_vlist_start() checks it again under the lock); NULL: no memory.
 */
struct nvb_vlist *nvb_vlist_alloc(struct nvb_scope *s, const struct cred *cred)
{
	unsigned int cap = nvb_vlist_need(s, cred);
	struct nvb_vlist *l = kvmalloc(struct_size(l, c, cap), GFP_KERNEL_ACCOUNT);

	if (l)
		l->cap = cap;
	return l;
}

/* @v's entries with ids above @after, into @l (which has room: nvb_vlist_start()) */
static void nvb_vlist_cur(struct nvb_vlist *l, struct nvb_vcount *v, unsigned long after)
{
	struct nvb_vlist_cur *c;

	if (WARN_ON_ONCE(l->n == l->cap))	/* nvb_vlist_start() made room */
		return;
	c = &l->c[l->n++];
	c->xa = &v->ids;
	c->idx = after;
	c->e = xa_find_after(c->xa, &c->idx, ULONG_MAX, XA_PRESENT);
}

static void nvb_vlist_add(struct nvb_vlist *l, struct nvb_scope *s, u32 kind, u32 a,
			  unsigned long after)
{
	struct nvb_vcount *v = nvb_vfind(s, kind, a, 0);

	if (v)
		nvb_vlist_cur(l, v, after);
}

struct nvb_vlist_gid {
	struct nvb_gid_visit w;
	struct nvb_vlist *l;
	unsigned long after;
};

static void nvb_vlist_gid(struct nvb_scope *s, struct nvb_vcount *v, u32 g,
			  struct nvb_gid_visit *w)
{
	struct nvb_vlist_gid *a = container_of(w, struct nvb_vlist_gid, w);

	if (v)
		nvb_vlist_cur(a->l, v, a->after);
	else
		nvb_vlist_add(a->l, s, NVB_V_GACL, g, a->after);
}

/*
 * Points @l at the entries with ids above @after that @cred's policy
 * admits: 0, or -EAGAIN when @l has too little room for them (the scope
 * gained GACL counters since nvb_vlist_alloc()).
 */
int nvb_vlist_start(struct nvb_vlist *l, struct nvb_scope *s, const struct cred *cred,
		    unsigned long after)
{
	struct nvb_vlist_gid a = { .w.fn = nvb_vlist_gid, .l = l, .after = after };
	u32 u = __kuid_val(cred->euid);

	lockdep_assert_held(&s->lock);
	if (nvb_vlist_need(s, cred) > l->cap)
		return -EAGAIN;
	l->n = 0;
	nvb_vlist_add(l, s, NVB_V_SCOPE, 0, after);
	nvb_vlist_add(l, s, NVB_V_OWN, u, after);
	nvb_vlist_add(l, s, NVB_V_UACL, u, after);
	nvb_visit_gids(s, cred, &a.w);
	return 0;
}

/*
 * The entry with the least id left in @l's counters, or NULL; each entry
 * once, although it can be in two of them (its owner's and a group's).
 */
struct nvb_entry *nvb_vlist_next(struct nvb_vlist *l)
{
	struct nvb_entry *best = NULL;
	unsigned int i;

	for (i = 0; i < l->n; i++)
		if (l->c[i].e && (!best || l->c[i].e->id < best->id))
			best = l->c[i].e;
	for (i = 0; best && i < l->n; i++)
		if (l->c[i].e == best)
			l->c[i].e = xa_find_after(l->c[i].xa, &l->c[i].idx, ULONG_MAX,
						  XA_PRESENT);
	return best;
}
