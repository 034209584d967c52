// SPDX-License-Identifier: MIT
/*
 * nvbridged: INFO's count of the entries a caller may fetch, without a
 * walk.  Counting by walking the scope cost the loop 1.9 ms per INFO with
 * 204,800 entries (measured), which any client could repeat.
 *
 * may_use() (registry.c) admits an entry to a caller that published it,
 * for SCOPE, for UID naming the caller, for GROUP/GID granting a gid the
 * caller holds (egid or supplementary), and to the override.  So per scope
 * the broker keeps counters of live entries:
 *   ALL         every entry                        (the override's count)
 *   SCOPE       access SCOPE
 *   OWN(u)      published by u, not SCOPE
 *   UACL(u)     access UID naming u, published by another
 *   GACL(g)     access GROUP (the publisher's egid g) or GID (g)
 *   GOWN(u, g)  those of GACL(g) that u published
 * and a caller u with distinct gids G sees
 *   SCOPE + OWN(u) + UACL(u) + sum over g in G of (GACL(g) - GOWN(u, g)):
 * each entry once, its own ones through OWN only.  A PUBLISH or
 * revocation costs at most five lookups.  The sum over G visits the
 * smaller side: the caller's gids (a lookup each), or the scope's GACL
 * counters (s->gacl, a bisection of the caller's sorted gids each).  A
 * caller in a user namespace of its own may hold NGROUPS_MAX (65,536)
 * gids, and a lookup per gid (with may_use()'s scan of them, now a
 * bisection) cost the loop 8.8 ms of CPU per INFO + LIST, 400x a
 * three-gid caller's, where a scope had a few GACL (attack_many_gids).
 * Left: a caller holding many gids in a scope with many GACL counters
 * (Documentation/security-model.rst).
 *
 * Each counter but GOWN also keeps its entries in id order (an array;
 * ids only grow, so a PUBLISH appends), which answers LIST and
 * UNPUBLISH by id without a walk of the scope: UNPUBLISH finds the id in
 * ALL by bisection, and LIST merges, from the cursor on, the lists of
 * what the caller may see (ALL for the override).  Walking the scope's
 * list cost the loop 1.5 ms per request with 100 uids x 1024 entries,
 * and an honest uid's LIST + UNPUBLISH 2.6 ms instead of 0.02 ms
 * (attack_scope_walk).  A removal leaves a hole, which keeps its id for
 * the bisection; the array is compacted when a quarter of it is holes,
 * and then halved while a quarter of it or less is used, so that its
 * memory follows the counter's entries (amortised: a compaction follows
 * len / 4 removals, a halving leaves it at most half full).
 */
#include "nvbridged.h"

enum { V_ALL, V_SCOPE, V_OWN, V_UACL, V_GACL, V_GOWN };

struct vslot {
	uint64_t id;
	struct entry *e;	/* NULL: a hole, removed */
};

struct vcount {
	struct hnode hn;		/* in vtab (hash: vhash()) */
	const struct scope *s;
	uint32_t kind, a, b;
	/*
	 * the entries, id order: len - holes of them counted (vlive()).
	 * GOWN keeps none (v NULL, cap 0): len is its count.
	 */
	struct vslot *v;
	uint32_t len, cap, holes;
	struct vcount *gnext, **gpprev;	/* GACL: in s->gacl */
};

#define VCAP_MIN 8

static uint32_t vlive(const struct vcount *v)
{
	return v->len - v->holes;
}

struct vkey {
	uint32_t kind, a, b;
};

static struct hnode *vtab0[8192];
static struct htable vtab = HTABLE(vtab0);

/*
 * Keyed (hash.c, the names' hash): a client chooses a and b (the uids and
 * gids its entries name), and the former hash (fixed constants,
 * XOR-combined, XOR-folded) let it compute offline which ids share a
 * bucket whatever the scope's address: 48 uids x 1024 entries in one
 * bucket cost the loop 14 s of CPU (hostile info_counter_collisions).
 */
static uint32_t vhash(const struct scope *s, const struct vkey *k)
{
	struct khash st;

	khash_start(&st);
	khash_u64(&st, (uint64_t)(uintptr_t)s);
	khash_u64(&st, (uint64_t)k->kind << 32 | k->a);
	khash_u64(&st, k->b);
	return (uint32_t)khash_end(&st);
}

static struct vcount *vfind(const struct scope *s, const struct vkey *k, uint32_t h)
{
	for (struct hnode *x = htable_chain(&vtab, h); x; x = x->next) {
		struct vcount *v = container_of(x, struct vcount, hn);

		if (x->hash == h && v->s == s && v->kind == k->kind && v->a == k->a &&
		    v->b == k->b)
			return v;
	}
	return NULL;
}

static struct vcount *vslot(const struct scope *s, const struct vkey *k)
{
	return vfind(s, k, vhash(s, k));
}

static uint32_t vget(const struct scope *s, uint32_t kind, uint32_t a, uint32_t b)
{
	struct vkey k = { kind, a, b };
	struct vcount *v = vslot(s, &k);

	return v ? vlive(v) : 0;
}

/* the counters e is in */
static int entry_keys(const struct entry *e, struct vkey *k)
{
	int n = 0;

	k[n++] = (struct vkey){ V_ALL, 0, 0 };
	if (e->access == NVBRIDGE_ACCESS_SCOPE) {
		k[n++] = (struct vkey){ V_SCOPE, 0, 0 };
		return n;
	}
	k[n++] = (struct vkey){ V_OWN, e->euid, 0 };
	if (e->access == NVBRIDGE_ACCESS_UID && e->puid != e->euid)
		k[n++] = (struct vkey){ V_UACL, e->puid, 0 };
	if (e->access == NVBRIDGE_ACCESS_GROUP || e->access == NVBRIDGE_ACCESS_GID) {
		uint32_t g = e->access == NVBRIDGE_ACCESS_GROUP ? e->egid : e->pgid;

		k[n++] = (struct vkey){ V_GACL, g, 0 };
		k[n++] = (struct vkey){ V_GOWN, e->euid, g };
	}
	return n;
}

/* the first slot of v with an id above id (v->len if none) */
static uint32_t vfirst_above(const struct vcount *v, uint64_t id)
{
	uint32_t lo = 0, hi = v->len;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (v->v[mid].id <= id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* halves v's array while a quarter of it or less is used (not below VCAP_MIN) */
static void vlist_shrink(struct vcount *v)
{
	uint32_t cap = v->cap;
	struct vslot *n;

	while (cap > VCAP_MIN && v->len <= cap / 4)
		cap /= 2;
	if (cap == v->cap)
		return;
	n = realloc(v->v, (size_t)cap * sizeof(*n));
	if (!n)
		return;		/* the larger array still serves */
	mem_uncharge((size_t)(v->cap - cap) * sizeof(*n));
	v->v = n;
	v->cap = cap;
}

/* e leaves v: a hole; compacted (and shrunk) when a quarter of it is holes */
static void vlist_del(struct vcount *v, const struct entry *e)
{
	uint32_t i, k = 0;

	if (v->kind == V_GOWN) {
		v->len--;
		return;
	}
	i = vfirst_above(v, e->id);
	if (!i || v->v[i - 1].e != e)
		return;		/* cannot happen: vlist_add() put it there */
	v->v[i - 1].e = NULL;
	if (++v->holes <= v->len / 4)
		return;
	for (uint32_t j = 0; j < v->len; j++)
		if (v->v[j].e)
			v->v[k++] = v->v[j];
	v->len = k;
	v->holes = 0;
	vlist_shrink(v);
}

/* e has the greatest id of its scope so far: it goes last */
static int vlist_add(struct vcount *v, struct entry *e)
{
	if (v->kind == V_GOWN) {
		v->len++;
		return 0;
	}
	if (v->len == v->cap) {
		uint32_t cap = v->cap ? 2 * v->cap : VCAP_MIN;
		struct vslot *n;

		if (!mem_charge((size_t)(cap - v->cap) * sizeof(*n)))
			return -ENOMEM;
		n = realloc(v->v, (size_t)cap * sizeof(*n));
		if (!n) {
			mem_uncharge((size_t)(cap - v->cap) * sizeof(*n));
			return -ENOMEM;
		}
		v->v = n;
		v->cap = cap;
	}
	v->v[v->len++] = (struct vslot){ e->id, e };
	return 0;
}

/* v, which counts nothing, goes */
static void vfree(struct scope *s, struct vcount *v)
{
	htable_del(&vtab, &v->hn);
	if (v->kind == V_GACL) {
		*v->gpprev = v->gnext;
		if (v->gnext)
			v->gnext->gpprev = v->gpprev;
		s->ngacl--;
	}
	mem_uncharge(sizeof(*v) + (size_t)v->cap * sizeof(*v->v));
	free(v->v);
	free(v);
}

static void vdec(struct scope *s, const struct vkey *k, const struct entry *e)
{
	struct vcount *v = vslot(s, k);

	if (!v)
		return;		/* cannot happen: every counter was made by vinc() */
	vlist_del(v, e);
	if (!vlive(v))
		vfree(s, v);
}

static int vinc(struct scope *s, const struct vkey *k, struct entry *e)
{
	uint32_t h = vhash(s, k);
	struct vcount *v = vfind(s, k, h);

	if (!v) {
		v = mem_calloc(sizeof(*v));
		if (!v)
			return -ENOMEM;
		v->s = s;
		v->kind = k->kind;
		v->a = k->a;
		v->b = k->b;
		v->hn.hash = h;
		htable_add(&vtab, &v->hn);
		if (v->kind == V_GACL) {
			v->gnext = s->gacl;
			if (s->gacl)
				s->gacl->gpprev = &v->gnext;
			v->gpprev = &s->gacl;
			s->gacl = v;
			s->ngacl++;
		}
	}
	if (vlist_add(v, e)) {
		if (!vlive(v))
			vfree(s, v);
		return -ENOMEM;
	}
	return 0;
}

/* e (its scope, access and ids set) becomes visible: 0, or -ENOMEM with nothing counted */
int visible_add(struct entry *e)
{
	struct vkey k[5];
	int n = entry_keys(e, k);

	for (int i = 0; i < n; i++)
		if (vinc(e->scope, &k[i], e)) {
			while (i--)
				vdec(e->scope, &k[i], e);
			return -ENOMEM;
		}
	return 0;
}

void visible_del(const struct entry *e)
{
	struct vkey k[5];
	int n = entry_keys(e, k);

	for (int i = 0; i < n; i++)
		vdec(e->scope, &k[i], e);
}

/*
 * Whether c's egid is not among its supplementary gids, so counts once
 * more.  c's distinct gids are those and this one.
 */
static bool egid_extra(const struct client *c)
{
	return !client_in_groups(c, c->egid);
}

/* c's distinct gids, egid included */
static uint32_t ngids(const struct client *c)
{
	return (uint32_t)c->ngroups + egid_extra(c);
}

/* the smaller side of the sum over c's gids: the scope's GACL counters */
static bool by_counters(const struct client *c)
{
	return c->scope->ngacl < ngids(c);
}

static int64_t vgroup(const struct client *c, gid_t g)
{
	return (int64_t)vget(c->scope, V_GACL, g, 0) - vget(c->scope, V_GOWN, c->euid, g);
}

/* sum over c's distinct gids g of GACL(g) - GOWN(c, g), from the smaller side */
static int64_t vgroups(const struct client *c)
{
	int64_t n = 0;

	if (by_counters(c)) {
		for (const struct vcount *v = c->scope->gacl; v; v = v->gnext)
			if (v->a == c->egid || client_in_groups(c, v->a))
				n += (int64_t)vlive(v) - vget(c->scope, V_GOWN, c->euid, v->a);
		return n;
	}
	for (int i = 0; i < c->ngroups; i++)
		n += vgroup(c, c->groups[i]);
	if (egid_extra(c))
		n += vgroup(c, c->egid);
	return n;
}

/* what may_use() admits, counted */
uint32_t visible_count(const struct client *c)
{
	const struct scope *s = c->scope;

	if (c->override)
		return vget(s, V_ALL, 0, 0);
	return (uint32_t)((int64_t)vget(s, V_SCOPE, 0, 0) + vget(s, V_OWN, c->euid, 0) +
			  vget(s, V_UACL, c->euid, 0) + vgroups(c));
}

/* the entry of s with id id, whoever may see it, or NULL */
struct entry *visible_find_id(const struct scope *s, uint64_t id)
{
	struct vkey k = { V_ALL, 0, 0 };
	struct vcount *v = vslot(s, &k);
	uint32_t i;

	if (!v)
		return NULL;
	i = vfirst_above(v, id);
	return i && v->v[i - 1].id == id ? v->v[i - 1].e : NULL;
}

struct vcursor {
	const struct vcount *v;
	uint32_t i;
};

static void vcursor_add(struct vcursor *cur, int *n, const struct scope *s, uint32_t kind,
			uint32_t a, uint64_t after)
{
	struct vkey k = { kind, a, 0 };
	const struct vcount *v = vslot(s, &k);

	if (v) {
		cur[*n] = (struct vcursor){ v, vfirst_above(v, after) };
		(*n)++;
	}
}

/*
 * Up to max entries c may use, ids above after, in id order, into out:
 * how many, or -ENOMEM.  The merge of the lists of what c may see: each
 * candidate costs a step per list (1 + 1 + 1 + c's gids that entries
 * name), none is an entry c may not see.  The GACL lists are found from
 * the smaller side, as INFO's sum (vgroups()).
 */
int visible_list(const struct client *c, uint64_t after, struct entry **out, uint32_t max)
{
	const struct scope *s = c->scope;
	struct vcursor few[16], *cur = few;
	int nc = 0;
	uint32_t n = 0;

	if (!c->override) {
		bool counters = by_counters(c);
		uint32_t ncur = 3 + (counters ? s->ngacl : ngids(c));

		if (ncur > 16 && !(cur = malloc(sizeof(*cur) * (size_t)ncur)))
			return -ENOMEM;
		vcursor_add(cur, &nc, s, V_SCOPE, 0, after);
		vcursor_add(cur, &nc, s, V_OWN, c->euid, after);
		vcursor_add(cur, &nc, s, V_UACL, c->euid, after);
		if (counters) {
			for (const struct vcount *v = s->gacl; v; v = v->gnext)
				if (v->a == c->egid || client_in_groups(c, v->a))
					cur[nc++] = (struct vcursor){ v, vfirst_above(v, after) };
		} else {
			for (int i = 0; i < c->ngroups; i++)
				vcursor_add(cur, &nc, s, V_GACL, c->groups[i], after);
			if (egid_extra(c))
				vcursor_add(cur, &nc, s, V_GACL, c->egid, after);
		}
	} else {
		vcursor_add(cur, &nc, s, V_ALL, 0, after);
	}
	while (n < max) {
		struct entry *best = NULL;

		/* the least id at the lists' heads (holes skipped); one entry can head two */
		for (int i = 0; i < nc; i++) {
			while (cur[i].i < cur[i].v->len && !cur[i].v->v[cur[i].i].e)
				cur[i].i++;
			if (cur[i].i < cur[i].v->len &&
			    (!best || cur[i].v->v[cur[i].i].id < best->id))
				best = cur[i].v->v[cur[i].i].e;
		}
		if (!best)
			break;
		for (int i = 0; i < nc; i++)
			if (cur[i].i < cur[i].v->len && cur[i].v->v[cur[i].i].e == best)
				cur[i].i++;
		if (may_use(c, best))	/* always, by the lists' making */
			out[n++] = best;
	}
	if (cur != few)
		free(cur);
	return (int)n;
}
