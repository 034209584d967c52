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
 * SCOPE, OWN and UACL are hashed by uid; GACL and GOWN are in red-black
 * trees by gid and by uid << 32 | gid (s->vgacl, s->vgown), and the sum
 * walks the opener's sorted group_info beside them in order
 * (nvb_visect()).  An opener in a user namespace of its own may hold
 * NGROUPS_MAX (65,536) gids, and a lookup per gid cost 5.3 ms of CPU
 * under the lock per INFO + LIST where a scope had a few GACL, 270x a
 * three-gid opener's (conformance many_gids_cost, in the VM); where the
 * scope had 65,536 GACL counters too, in the same 256 hash chains, 8.2 s
 * per INFO (many_gids_crowded_cost, TCG VM), 14-16 ms with the trees.
 * The counters an entry is in are made (GFP_KERNEL_ACCOUNT) when it is
 * reserved, where PUBLISH may still fail, so that making it visible
 * cannot; they go when their last entry is unlinked.  All under s->lock.
 *
 * Each counter but GOWN also holds its entries by id (an xarray), so that
 * LIST visits only what the opener may see: it merges, from the cursor
 * on, the id orders of the counters the opener's policy admits through a
 * min-heap (nvb_vlist_*): 2.4 s per LIST among 65,536 GACL counters when
 * every cursor was scanned per entry, 20-22 ms now (TCG VM).  Before
 * the merge, a walk of the scope's ids went through every entry the
 * opener may not see, under the lock (1,000 LISTs beside 50 x 1,024
 * entries of others: 15 s in the TCG VM, against 3.7 ms in an empty
 * scope).
 */
#include <linux/cred.h>
#include <linux/hashtable.h>
#include <linux/jhash.h>
#include <linux/slab.h>
#include "nvbridge_internal.h"

enum { NVB_V_SCOPE, NVB_V_OWN, NVB_V_UACL, NVB_V_GACL, NVB_V_GOWN };

struct nvb_vcount {
	union {
		struct hlist_node node;	/* SCOPE, OWN, UACL: in scope->vcounts */
		struct rb_node rb;	/* GACL, GOWN: in scope->vgacl / vgown by key */
	};
	/* what INFO and LIST's walk read, in the rb_node's cache line */
	u64 key;			/* GACL: gid; GOWN: uid << 32 | gid */
	unsigned int live;		/* of refs, live: what is counted */
	u32 kind;
	/*
	 * GACL: the least id in ids, and one at least the greatest (an
	 * unlink leaves it), so that LIST's cursors need not search ids
	 */
	unsigned long head, tail;
	unsigned int refs;		/* entries linked: reserved or live */
	u32 a, b;
	struct xarray ids;		/* those entries by id (not for GOWN) */
};

static bool nvb_vordered(u32 kind)
{
	return kind == NVB_V_GACL || kind == NVB_V_GOWN;
}

static u64 nvb_vkey(u32 kind, u32 a, u32 b)
{
	return kind == NVB_V_GOWN ? (u64)a << 32 | b : a;
}

static struct rb_root *nvb_vroot(struct nvb_scope *s, u32 kind)
{
	return kind == NVB_V_GACL ? &s->vgacl : &s->vgown;
}

/*
 * Seeded per scope: a publisher chooses a (the uid its entry names), and
 * with a fixed seed it could compute offline which ids share one of the
 * 256 buckets and make every PUBLISH, revocation and INFO under the
 * scope's lock walk one chain (the broker's hostile case
 * info_counter_collisions: 14 s of its loop with an unkeyed hash).
 */
static u32 nvb_vhash(const struct nvb_scope *s, u32 kind, u32 a, u32 b)
{
	return jhash_3words(kind, a, b, s->vseed);
}

/* The first counter of @root with a key >= @key, or NULL. */
static struct rb_node *nvb_vfirst_ge(struct rb_root *root, u64 key)
{
	struct rb_node *n = root->rb_node, *best = NULL;

	while (n) {
		struct nvb_vcount *v = rb_entry(n, struct nvb_vcount, rb);

		if (v->key >= key) {
			best = n;
			n = n->rb_left;
		} else {
			n = n->rb_right;
		}
	}
	return best;
}

static struct nvb_vcount *nvb_vfind(struct nvb_scope *s, u32 kind, u32 a, u32 b)
{
	struct nvb_vcount *v;

	if (nvb_vordered(kind)) {
		u64 key = nvb_vkey(kind, a, b);
		struct rb_node *n = nvb_vfirst_ge(nvb_vroot(s, kind), key);

		v = n ? rb_entry(n, struct nvb_vcount, rb) : NULL;
		return v && v->key == key ? v : NULL;
	}
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

/* @v (not in it) into its ordered tree */
static void nvb_vinsert(struct nvb_scope *s, struct nvb_vcount *v)
{
	struct rb_root *root = nvb_vroot(s, v->kind);
	struct rb_node **p = &root->rb_node, *parent = NULL;

	while (*p) {
		parent = *p;
		if (v->key < rb_entry(parent, struct nvb_vcount, rb)->key)
			p = &parent->rb_left;
		else
			p = &parent->rb_right;
	}
	rb_link_node(&v->rb, parent, p);
	rb_insert_color(&v->rb, root);
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
	if (nvb_vordered(v->kind))
		rb_erase(&v->rb, nvb_vroot(s, v->kind));
	else
		hash_del(&v->node);
	if (v->kind == NVB_V_GACL)
		WRITE_ONCE(s->nvgacl, s->nvgacl - 1);
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
		if (--v->refs) {
			if (v->head == e->id) {		/* the next id, O(log) */
				unsigned long idx = e->id;

				if (xa_find_after(&v->ids, &idx, ULONG_MAX, XA_PRESENT))
					v->head = idx;
			}
			continue;
		}
		WARN_ON(v->live);
		nvb_vfree(s, v);
	}
}

/* A counter for (@k), made and hashed or put in its tree: NULL for no memory. */
static struct nvb_vcount *nvb_vnew(struct nvb_scope *s, const u32 k[3])
{
	struct nvb_vcount *v = kzalloc(sizeof(*v), GFP_KERNEL_ACCOUNT);

	if (!v)
		return NULL;
	v->kind = k[0];
	v->a = k[1];
	v->b = k[2];
	v->key = nvb_vkey(v->kind, v->a, v->b);
	xa_init(&v->ids);
	if (nvb_vordered(v->kind))
		nvb_vinsert(s, v);
	else
		hash_add(s->vcounts, &v->node, nvb_vhash(s, v->kind, v->a, v->b));
	if (v->kind == NVB_V_GACL)
		WRITE_ONCE(s->nvgacl, s->nvgacl + 1);
	return v;
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

		if (!v)
			v = nvb_vnew(s, k[i]);
		if (!v) {
			nvb_visible_unlink(s, e);
			return -ENOMEM;
		}
		if (v->kind != NVB_V_GOWN &&
		    xa_insert(&v->ids, e->id, e, GFP_KERNEL_ACCOUNT)) {
			if (!v->refs)
				nvb_vfree(s, v);
			nvb_visible_unlink(s, e);
			return -ENOMEM;
		}
		if (!v->refs || e->id < v->head)
			v->head = e->id;
		v->tail = max_t(unsigned long, v->tail, e->id);
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

static u32 nvb_gi_at(const struct group_info *gi, unsigned int i)
{
	return __kgid_val(gi->gid[i]);
}

/* The first i in [@from, @n) with gid[i] >= @t (@n if none): probes from + 1, 3, 7, ... */
static unsigned int nvb_gi_gallop(const struct group_info *gi, unsigned int from,
				  unsigned int n, u32 t)
{
	unsigned int lo = from, step = 1, hi;

	while (lo < n && nvb_gi_at(gi, lo) < t) {
		lo += step;
		step *= 2;
	}
	hi = lo < n ? lo + 1 : n;
	lo -= step / 2;		/* the last probe below t, or from */
	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (nvb_gi_at(gi, mid) < t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* How many rb_next() steps before a search from the root is cheaper */
#define NVB_VWALK 4

/*
 * Calls @fn on each counter of @root keyed @base | g for g a gid of
 * @gi, in gid order, each once.  group_info is sorted (groups_sort()),
 * and the tree is walked in order beside it: where one side lacks what
 * the other has, the gids gallop and the tree steps NVB_VWALK nodes
 * before a search from the root, so O(smaller side x log larger) and
 * linear where both are dense.  A lookup per gid through the counters'
 * hash (256 chains, shared by every counter of the scope) cost each INFO
 * of an opener of 65,536 gids, among 65,536 GACL counters, all of its
 * time under the scope's lock.  Inlined: @fn is known at each call, not
 * an indirect call per counter.
 */
static __always_inline void nvb_visect(struct rb_root *root, u64 base,
				       const struct group_info *gi,
				       void (*fn)(struct nvb_vcount *v, void *arg), void *arg)
{
	unsigned int i = 0, ng = gi ? gi->ngroups : 0, j;
	struct rb_node *n = ng ? nvb_vfirst_ge(root, base | nvb_gi_at(gi, 0)) : NULL;

	while (n && i < ng) {
		struct nvb_vcount *v = rb_entry(n, struct nvb_vcount, rb);
		u32 g = nvb_gi_at(gi, i);

		if (v->key >> 32 != base >> 32)
			break;
		if ((u32)v->key == g) {
			fn(v, arg);
			while (i < ng && nvb_gi_at(gi, i) == g)	/* held twice: adjacent */
				i++;
			n = rb_next(n);
		} else if ((u32)v->key > g) {
			i = nvb_gi_gallop(gi, i, ng, (u32)v->key);
		} else {
			for (j = 0; j < NVB_VWALK && n &&
			     rb_entry(n, struct nvb_vcount, rb)->key < (base | g); j++)
				n = rb_next(n);
			if (n && rb_entry(n, struct nvb_vcount, rb)->key < (base | g))
				n = nvb_vfirst_ge(root, base | g);
		}
	}
}

static void nvb_vsum_add(struct nvb_vcount *v, void *arg)
{
	*(long *)arg += v->live;
}

static void nvb_vsum_sub(struct nvb_vcount *v, void *arg)
{
	*(long *)arg -= v->live;
}

/* Whether @cred's egid is not among its supplementary gids, so counts once more. */
static bool nvb_egid_extra(const struct cred *cred)
{
	const struct group_info *gi = cred->group_info;
	u32 eg = __kgid_val(cred->egid);
	unsigned int ng = gi ? gi->ngroups : 0, i = ng ? nvb_gi_gallop(gi, 0, ng, eg) : 0;

	return i == ng || nvb_gi_at(gi, i) != eg;
}

/* Live entries of @s that @cred's policy admits (not the CAP_IPC_OWNER override). */
unsigned int nvb_visible_count(struct nvb_scope *s, const struct cred *cred)
{
	u32 u = __kuid_val(cred->euid), eg = __kgid_val(cred->egid);
	long n;

	lockdep_assert_held(&s->lock);
	n = (long)nvb_vget(s, NVB_V_SCOPE, 0, 0) + nvb_vget(s, NVB_V_OWN, u, 0) +
	    nvb_vget(s, NVB_V_UACL, u, 0);
	/* sum over the distinct gids g held of GACL(g) - GOWN(u, g) */
	nvb_visect(&s->vgacl, 0, cred->group_info, nvb_vsum_add, &n);
	nvb_visect(&s->vgown, (u64)u << 32, cred->group_info, nvb_vsum_sub, &n);
	if (nvb_egid_extra(cred))
		n += (long)nvb_vget(s, NVB_V_GACL, eg, 0) - nvb_vget(s, NVB_V_GOWN, u, eg);
	/* GOWN(u, g) counts some of GACL(g)'s entries: a sum below 0 is a counter bug */
	if (WARN_ON_ONCE(n < 0))
		return 0;
	return (unsigned int)n;
}

/*
 * LIST's merge: one cursor per counter the opener's policy admits, in a
 * min-heap by the id each is at, so that an entry listed costs O(log
 * cursors) where a scan of every cursor per entry cost O(cursors).
 * lib/min_heap.h is not used: its API changed in 6.11 (callbacks gained
 * an argument, min_heapify became min_heap_sift_down), and its compare
 * is an indirect call; this sift-down is the one operation needed.
 */
struct nvb_vlist {
	unsigned int n, cap;
	struct nvb_entry *last;		/* the last returned: an entry in two counters */
	struct nvb_vlist_cur {
		unsigned long idx;	/* the id it is at */
		struct xarray *xa;
		struct nvb_entry *e;	/* NULL: not looked up yet (a GACL counter's head) */
	} c[];
};

/* The cursors @cred's policy may need in @s: SCOPE, OWN, UACL and its gids' GACL. */
static unsigned int nvb_vlist_need(struct nvb_scope *s, const struct cred *cred)
{
	return 3 + min(READ_ONCE(s->nvgacl), nvb_ngids(cred));
}

/*
 * Room for the cursors @cred's policy needs in @s, sized without the lock
 * (nvb_vlist_start() checks it again under the lock); @worst: for every
 * gid @cred holds, room that no change of @s can outgrow (a publisher
 * adding group counters between the sizing and the lock cannot push
 * LIST back to the scope walk); NULL: no memory.
 */
struct nvb_vlist *nvb_vlist_alloc(struct nvb_scope *s, const struct cred *cred, bool worst)
{
	unsigned int cap = worst ? 3 + nvb_ngids(cred) : nvb_vlist_need(s, cred);
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
	c = &l->c[l->n];
	c->xa = &v->ids;
	if (v->kind == NVB_V_GACL && v->tail <= after)
		return;		/* all at or below the cursor: not even looked at */
	if (v->kind == NVB_V_GACL && v->head > after) {
		c->idx = v->head;	/* its first: looked up when it heads the heap */
		c->e = NULL;
	} else {
		c->idx = after;
		c->e = xa_find_after(c->xa, &c->idx, ULONG_MAX, XA_PRESENT);
		if (!c->e)
			return;
	}
	l->n++;
}

static void nvb_vlist_add(struct nvb_vlist *l, struct nvb_scope *s, u32 kind, u32 a,
			  unsigned long after)
{
	struct nvb_vcount *v = nvb_vfind(s, kind, a, 0);

	if (v)
		nvb_vlist_cur(l, v, after);
}

struct nvb_vlist_gid {
	struct nvb_vlist *l;
	unsigned long after;
};

static void nvb_vlist_gid(struct nvb_vcount *v, void *arg)
{
	struct nvb_vlist_gid *a = arg;

	nvb_vlist_cur(a->l, v, a->after);
}

/* The heap's order at @i restored, its children's subtrees being heaps */
static void nvb_vlist_down(struct nvb_vlist *l, unsigned int i)
{
	struct nvb_vlist_cur x = l->c[i];

	for (;;) {
		unsigned int k = 2 * i + 1;

		if (k >= l->n)
			break;
		if (k + 1 < l->n && l->c[k + 1].idx < l->c[k].idx)
			k++;
		if (l->c[k].idx >= x.idx)
			break;
		l->c[i] = l->c[k];
		i = k;
	}
	l->c[i] = x;
}

/*
 * Points @l at the entries with ids above @after that @cred's policy
 * admits: 0, or -EAGAIN when @l has too little room for them (the scope
 * gained GACL counters since nvb_vlist_alloc()).
 */
int nvb_vlist_start(struct nvb_vlist *l, struct nvb_scope *s, const struct cred *cred,
		    unsigned long after)
{
	struct nvb_vlist_gid a = { .l = l, .after = after };
	u32 u = __kuid_val(cred->euid);
	unsigned int i;

	lockdep_assert_held(&s->lock);
	if (nvb_vlist_need(s, cred) > l->cap)
		return -EAGAIN;
	l->n = 0;
	l->last = NULL;
	nvb_vlist_add(l, s, NVB_V_SCOPE, 0, after);
	nvb_vlist_add(l, s, NVB_V_OWN, u, after);
	nvb_vlist_add(l, s, NVB_V_UACL, u, after);
	nvb_visect(&s->vgacl, 0, cred->group_info, nvb_vlist_gid, &a);
	if (nvb_egid_extra(cred))
		nvb_vlist_add(l, s, NVB_V_GACL, __kgid_val(cred->egid), after);
	for (i = l->n / 2; i-- > 0;)
		nvb_vlist_down(l, i);
	return 0;
}

/*
 * The entry with the least id left in @l's counters, or NULL; each entry
 * once, although it can be in two of them (its owner's and a group's):
 * those two head the heap one after the other.
 */
struct nvb_entry *nvb_vlist_next(struct nvb_vlist *l)
{
	while (l->n) {
		struct nvb_vlist_cur *c = &l->c[0];
		struct nvb_entry *e = c->e ? c->e : xa_load(c->xa, c->idx);

		c->e = xa_find_after(c->xa, &c->idx, ULONG_MAX, XA_PRESENT);
		if (!c->e)
			l->c[0] = l->c[--l->n];
		if (l->n)
			nvb_vlist_down(l, 0);
		if (!e || e == l->last)		/* !e: a head not kept up: cannot happen */
			continue;
		l->last = e;
		return e;
	}
	return NULL;
}
