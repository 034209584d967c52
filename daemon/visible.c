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
 * revocation costs at most five lookups, and two steps in the scope's
 * ordered indexes (vorder.c): GACL by gid, GOWN by uid << 32 | gid, each
 * key with its counter's count and first and last ids beside it.  The
 * sum over G walks c's sorted gids and those indexes in order together,
 * each side galloping over what the other lacks (visect): O(smaller x
 * log(larger / smaller)) steps, a few ns each.  A caller may hold
 * NGROUPS_MAX (65,536) gids in a user namespace of its own, and a scope
 * as many GACL counters (64 uids x 1,024 entries of a subuid range): a
 * lookup per gid or per counter cost the loop 19 ms per INFO and 49 ms
 * per LIST there, 0.6 and 0.8 ms now (attack_many_gids, crowded scope).
 *
 * Each counter but GOWN also keeps its entries in id order (an array;
 * ids only grow, so a PUBLISH appends), which answers LIST and
 * UNPUBLISH by id without a walk of the scope: UNPUBLISH finds the id in
 * ALL by bisection, and LIST merges, from the cursor on, the lists of
 * what the caller may see (ALL for the override) through a min-heap
 * (O(log lists) a record).  Walking the scope's list cost the loop
 * 1.5 ms per request with 100 uids x 1024 entries,
 * and an honest uid's LIST + UNPUBLISH 2.6 ms instead of 0.02 ms
 * (attack_scope_walk).  A removal leaves a hole, which keeps its id for
 * the bisection (a trailing one is dropped at once, so the last slot is
 * live, and the first live slot is kept); the array is compacted when a quarter of it is holes,
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
	uint32_t first;		/* the first slot that is not a hole (v[len - 1] never is) */
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
	v->holes++;
	/* the first and last live slots, for vsync(): each hole passed once between compactions */
	while (v->len && !v->v[v->len - 1].e) {
		v->len--;
		v->holes--;
	}
	while (v->first < v->len && !v->v[v->first].e)
		v->first++;
	if (v->holes <= v->len / 4)
		return;
	for (uint32_t j = 0; j < v->len; j++)
		if (v->v[j].e)
			v->v[k++] = v->v[j];
	v->len = k;
	v->holes = 0;
	v->first = 0;
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
		vorder_delete(&s->gacl, v->a);
		s->ngacl--;
	} else if (v->kind == V_GOWN) {
		vorder_delete(&s->gown, (uint64_t)v->a << 32 | v->b);
	}
	mem_uncharge(sizeof(*v) + (size_t)v->cap * sizeof(*v->v));
	free(v->v);
	free(v);
}

/*
 * v's count and first and last ids, copied beside its key in s's order
 * (vorder_aux()), where INFO and LIST read them without touching v
 */
static void vsync(struct scope *s, const struct vcount *v)
{
	struct vorder_aux *aux = v->kind == V_GACL ? vorder_aux(s->gacl, v->a) :
		v->kind == V_GOWN ? vorder_aux(s->gown, (uint64_t)v->a << 32 | v->b) : NULL;

	if (!aux)
		return;
	aux->count = vlive(v);
	if (v->kind == V_GACL && v->len) {
		aux->head = v->v[v->first].id;
		aux->tail = v->v[v->len - 1].id;
	}
}

static void vdec(struct scope *s, const struct vkey *k, const struct entry *e)
{
	struct vcount *v = vslot(s, k);

	if (!v)
		return;		/* cannot happen: every counter was made by vinc() */
	vlist_del(v, e);
	if (!vlive(v))
		vfree(s, v);
	else
		vsync(s, v);
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
		if ((v->kind == V_GACL && vorder_insert(&s->gacl, v->a, v)) ||
		    (v->kind == V_GOWN && vorder_insert(&s->gown, (uint64_t)v->a << 32 | v->b, v))) {
			mem_uncharge(sizeof(*v));
			free(v);
			return -ENOMEM;
		}
		htable_add(&vtab, &v->hn);
		s->ngacl += v->kind == V_GACL;
	}
	if (vlist_add(v, e)) {
		if (!vlive(v))
			vfree(s, v);
		return -ENOMEM;
	}
	vsync(s, v);
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

static int64_t vgroup(const struct client *c, gid_t g)
{
	return (int64_t)vget(c->scope, V_GACL, g, 0) - vget(c->scope, V_GOWN, c->euid, g);
}

/* the first i in [from, n) with g[i] >= t (n if none) */
static int gallop_gid(const gid_t *g, int from, int n, gid_t t)
{
#define GID_AT(i) g[i]
	GALLOP_FIRST_GE(GID_AT, (uint32_t)from, (uint32_t)n, t);
#undef GID_AT
}

/*
 * The counters of o keyed base | g for each g of c's supplementary gids
 * (sorted, each once: ident.c), visited in gid order: both sides walked
 * in order, each galloping over what the other lacks, so O(smaller side
 * x log(larger / smaller)) steps, never a lookup per gid.
 */
struct visect {
	const struct client *c;
	const struct vorder *o;
	uint64_t base;
	struct vorder_it it;
	int i;
};

static void visect_start(struct visect *x, const struct client *c, const struct vorder *o,
			 uint64_t base)
{
	*x = (struct visect){ .c = c, .o = o, .base = base };
	vorder_begin(&x->it, o);
}

/* the next counter, or NULL; *aux: its count and ids (from the order, not the counter) */
static struct vcount *visect_next(struct visect *x, const struct vorder_aux **aux)
{
	const gid_t *g = x->c->groups;
	uint64_t key;
	void *val;

	while (x->i < x->c->ngroups && vorder_seek(&x->it, x->base | g[x->i]) &&
	       vorder_at(&x->it, &key, &val) && key >> 32 == x->base >> 32) {
		gid_t k = (gid_t)key;

		if (k == g[x->i]) {
			x->i++;
			*aux = vorder_aux_at(&x->it);
			vorder_next(&x->it);
			return val;
		}
		x->i = gallop_gid(g, x->i, x->c->ngroups, k);	/* g[i] < k: to k */
	}
	return NULL;
}

/* sum over c's distinct gids g of GACL(g) - GOWN(c, g) */
static int64_t vgroups(const struct client *c)
{
	const struct vorder_aux *a;
	struct visect x;
	int64_t n = 0;

	visect_start(&x, c, c->scope->gacl, 0);
	while (visect_next(&x, &a))
		n += a->count;
	visect_start(&x, c, c->scope->gown, (uint64_t)c->euid << 32);
	while (visect_next(&x, &a))
		n -= a->count;
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
	uint64_t id;		/* v->v[i].id, here for the heap: no miss per comparison */
	const struct vcount *v;
	uint32_t i;		/* VLAZY: v->first, not read until the cursor heads the heap */
};

#define VLAZY UINT32_MAX

static uint64_t vcur_id(const struct vcursor *c)
{
	return c->id;
}

/* c moved past holes: whether it still has an entry */
static bool vcur_live(struct vcursor *c)
{
	while (c->i < c->v->len && !c->v->v[c->i].e)
		c->i++;
	if (c->i == c->v->len)
		return false;
	c->id = c->v->v[c->i].id;
	return true;
}

static void vcursor_push(struct vcursor *cur, int *n, const struct vcount *v, uint64_t after)
{
	struct vcursor c = { 0, v, vfirst_above(v, after) };

	if (vcur_live(&c))
		cur[(*n)++] = c;
}

static void vcursor_add(struct vcursor *cur, int *n, const struct scope *s, uint32_t kind,
			uint32_t a, uint64_t after)
{
	struct vkey k = { kind, a, 0 };
	const struct vcount *v = vslot(s, &k);

	if (v)
		vcursor_push(cur, n, v, after);
}

/* the min-heap of n cursors by head id: h[i] sifted down */
static void vheap_down(struct vcursor *h, int n, int i)
{
	struct vcursor x = h[i];

	for (;;) {
		int k = 2 * i + 1;

		if (k >= n)
			break;
		if (k + 1 < n && vcur_id(&h[k + 1]) < vcur_id(&h[k]))
			k++;
		if (vcur_id(&h[k]) >= vcur_id(&x))
			break;
		h[i] = h[k];
		i = k;
	}
	h[i] = x;
}

/*
 * Up to max entries c may use, ids above after, in id order, into out:
 * how many, or -ENOMEM.  The merge of the lists of what c may see (ALL
 * for the override), a min-heap of their heads: a returned entry costs
 * O(log lists), where a scan of every list per entry cost the loop 49 ms
 * per LIST of 64 for a caller of 65,536 gids among 65,536 GACL counters
 * (attack_many_gids).  The GACL lists are found by visect, as INFO's.
 */
int visible_list(const struct client *c, uint64_t after, struct entry **out, uint32_t max)
{
	/*
	 * kept between calls: 1.5 MiB of cursors malloc'd and freed per LIST
	 * went to mmap and page faults, 3-5 ms of a 65,536-gid caller's LIST
	 */
	static struct vcursor *cur;
	static uint32_t cap;
	const struct scope *s = c->scope;
	const struct entry *prev = NULL;
	int nc = 0;
	uint32_t n = 0;

	if (!c->override) {
		uint32_t ng = (uint32_t)c->ngroups, ncur;
		const struct vorder_aux *a;
		struct visect x;
		struct vcount *v;

		ncur = 4 + (s->ngacl < ng ? s->ngacl : ng);
		if (ncur > cap) {
			struct vcursor *m = malloc(sizeof(*cur) * (size_t)ncur);

			if (!m)
				return -ENOMEM;
			free(cur);
			cur = m;
			cap = ncur;
		}
		vcursor_add(cur, &nc, s, V_SCOPE, 0, after);
		vcursor_add(cur, &nc, s, V_OWN, c->euid, after);
		vcursor_add(cur, &nc, s, V_UACL, c->euid, after);
		visect_start(&x, c, s->gacl, 0);
		/* from the ids beside the order: v itself only where its ids straddle after */
		while ((v = visect_next(&x, &a)))
			if (a->head > after)
				cur[nc++] = (struct vcursor){ a->head, v, VLAZY };
			else if (a->tail > after)
				vcursor_push(cur, &nc, v, after);
		if (egid_extra(c))
			vcursor_add(cur, &nc, s, V_GACL, c->egid, after);
	} else {
		if (!cap && !(cur = malloc(sizeof(*cur) * (cap = 16)))) {
			cap = 0;
			return -ENOMEM;
		}
		vcursor_add(cur, &nc, s, V_ALL, 0, after);
	}
	for (int i = nc / 2 - 1; i >= 0; i--)
		vheap_down(cur, nc, i);
	while (n < max && nc) {
		struct entry *e;

		if (cur[0].i == VLAZY)
			cur[0].i = cur[0].v->first;
		e = cur[0].v->v[cur[0].i].e;

		/* one entry can head two lists (its owner's and a group's): then adjacent */
		if (e != prev && may_use(c, e))	/* always, by the lists' making */
			out[n++] = e;
		prev = e;
		cur[0].i++;
		if (!vcur_live(&cur[0]))
			cur[0] = cur[--nc];
		if (nc)
			vheap_down(cur, nc, 0);
	}
	return (int)n;
}
