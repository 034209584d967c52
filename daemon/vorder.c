// SPDX-License-Identifier: MIT
/*
 * nvbridged: an ordered index of (key, value), keys unique, for INFO and
 * LIST's intersection of a caller's sorted gids with a scope's group
 * counters (visible.c).  A caller of 65,536 gids in a scope of 65,536
 * GACL counters cost the loop 19 ms per INFO and 49 ms per LIST when
 * each gid was a hash lookup (attack_many_gids, crowded scope); walking
 * both sides in order, galloping over what the other side lacks, costs
 * a few ns per step and O(small x log(large / small)) where one side is
 * small.
 *
 * Each key has an aux beside it, where visible.c keeps the counter's
 * count and its first and last ids: INFO's sum read the count through
 * the value, a cache miss per counter, and that was 94% of its time;
 * LIST's cursors the same.
 *
 * Chunks of up to VCH keys in order, in an array of chunks in order: an
 * insert or delete moves at most VCH slots and, when a chunk splits or
 * goes, the array of chunk pointers (n / (VCH / 4) of them at most).  A
 * chunk that falls below a quarter full is merged with a neighbour that
 * has room, so that chunks stay a quarter full on average (no chunk but
 * the ones beside a fuller one is that empty) and the memory follows the
 * keys; every allocation is charged to the broker's budget (util.c).
 */
#include "nvbridged.h"

#define VCH 64

struct vchunk {
	uint32_t n;
	uint64_t key[VCH];
	void *val[VCH];
	struct vorder_aux aux[VCH];	/* the caller's, beside the key: no miss on val */
};

struct vorder {
	struct vchunk **c;
	uint32_t nc, cap, n;
};

uint32_t vorder_count(const struct vorder *o)
{
	return o ? o->n : 0;
}

static uint64_t vlast(const struct vchunk *c)
{
	return c->key[c->n - 1];
}

/* the first i in [from, n) with k[i] >= t (n if none) */
static uint32_t gallop_u64(const uint64_t *k, uint32_t from, uint32_t n, uint64_t t)
{
#define KEY_AT(i) k[i]
	GALLOP_FIRST_GE(KEY_AT, from, n, t);
#undef KEY_AT
}

/* the first chunk from from whose last key is >= t (o->nc if none) */
static uint32_t gallop_chunk(const struct vorder *o, uint32_t from, uint64_t t)
{
#define LAST_AT(i) vlast(o->c[i])
	GALLOP_FIRST_GE(LAST_AT, from, o->nc, t);
#undef LAST_AT
}

void vorder_begin(struct vorder_it *it, const struct vorder *o)
{
	*it = (struct vorder_it){ o, 0, 0 };
}

/* moves it forward to the first key >= t: whether there is one */
bool vorder_seek(struct vorder_it *it, uint64_t t)
{
	const struct vorder *o = it->o;

	if (!o || it->c >= o->nc)
		return false;
	if (vlast(o->c[it->c]) < t) {
		it->c = gallop_chunk(o, it->c + 1, t);
		it->i = 0;
		if (it->c >= o->nc)
			return false;
	}
	it->i = gallop_u64(o->c[it->c]->key, it->i, o->c[it->c]->n, t);
	return true;	/* the chunk's last key is >= t */
}

/* it's key and value: whether it is at one */
bool vorder_at(const struct vorder_it *it, uint64_t *key, void **val)
{
	const struct vchunk *c;

	if (!it->o || it->c >= it->o->nc)
		return false;
	c = it->o->c[it->c];
	*key = c->key[it->i];
	*val = c->val[it->i];
	return true;
}

/* it's aux (it at a key: vorder_at()) */
const struct vorder_aux *vorder_aux_at(const struct vorder_it *it)
{
	return &it->o->c[it->c]->aux[it->i];
}

/* key's aux, for the caller to set (NULL: key not in o) */
struct vorder_aux *vorder_aux(struct vorder *o, uint64_t key)
{
	struct vchunk *c;
	uint32_t ci, i;

	if (!o || (ci = gallop_chunk(o, 0, key)) == o->nc)
		return NULL;
	c = o->c[ci];
	i = gallop_u64(c->key, 0, c->n, key);
	return c->key[i] == key ? &c->aux[i] : NULL;
}

void vorder_next(struct vorder_it *it)
{
	if (++it->i >= it->o->c[it->c]->n) {
		it->c++;
		it->i = 0;
	}
}

/* room for one more chunk pointer: 0 or -ENOMEM */
static int vgrow(struct vorder *o)
{
	uint32_t cap = o->cap ? 2 * o->cap : 4;
	struct vchunk **n;

	if (o->nc < o->cap)
		return 0;
	if (!mem_charge((size_t)(cap - o->cap) * sizeof(*n)))
		return -ENOMEM;
	n = realloc(o->c, (size_t)cap * sizeof(*n));
	if (!n) {
		mem_uncharge((size_t)(cap - o->cap) * sizeof(*n));
		return -ENOMEM;
	}
	o->c = n;
	o->cap = cap;
	return 0;
}

/* chunk i goes (empty, or merged into another) */
static void vdrop(struct vorder *o, uint32_t i)
{
	struct vchunk **n;

	free(o->c[i]);
	mem_uncharge(sizeof(struct vchunk));
	memmove(&o->c[i], &o->c[i + 1], (o->nc - i - 1) * sizeof(*o->c));
	o->nc--;
	/* halve while a quarter or less is used */
	if (o->cap > 4 && o->nc <= o->cap / 4 && (n = realloc(o->c, o->cap / 2 * sizeof(*n)))) {
		mem_uncharge(o->cap / 2 * sizeof(*n));
		o->c = n;
		o->cap /= 2;
	}
}

/* o (with no keys) goes */
static void vorder_free(struct vorder **op)
{
	struct vorder *o = *op;

	mem_uncharge(sizeof(*o) + (size_t)o->cap * sizeof(*o->c));
	free(o->c);
	free(o);
	*op = NULL;
}

static int vinsert(struct vorder *o, uint64_t key, void *val)
{
	struct vchunk *c;
	uint32_t ci, i;

	if (!o->nc) {
		if (vgrow(o) || !(c = mem_calloc(sizeof(*c))))
			return -ENOMEM;
		o->c[o->nc++] = c;	/* no chunk is ever empty: vlast() reads its last key */
		c->key[0] = key;
		c->val[0] = val;
		c->aux[0] = (struct vorder_aux){ 0 };
		c->n = 1;
		o->n = 1;
		return 0;
	}
	ci = gallop_chunk(o, 0, key);
	if (ci == o->nc)
		ci--;		/* above every key: the last chunk */
	c = o->c[ci];
	if (c->n == VCH) {	/* split: the upper half to a new chunk after it */
		struct vchunk *h;

		if (vgrow(o) || !(h = mem_calloc(sizeof(*h))))
			return -ENOMEM;
		h->n = VCH / 2;
		memcpy(h->key, &c->key[VCH / 2], VCH / 2 * sizeof(h->key[0]));
		memcpy(h->val, &c->val[VCH / 2], VCH / 2 * sizeof(h->val[0]));
		memcpy(h->aux, &c->aux[VCH / 2], VCH / 2 * sizeof(h->aux[0]));
		c->n = VCH / 2;
		memmove(&o->c[ci + 2], &o->c[ci + 1], (o->nc - ci - 1) * sizeof(*o->c));
		o->c[ci + 1] = h;
		o->nc++;
		if (key > vlast(c))
			c = h;
	}
	i = gallop_u64(c->key, 0, c->n, key);
	memmove(&c->key[i + 1], &c->key[i], (c->n - i) * sizeof(c->key[0]));
	memmove(&c->val[i + 1], &c->val[i], (c->n - i) * sizeof(c->val[0]));
	memmove(&c->aux[i + 1], &c->aux[i], (c->n - i) * sizeof(c->aux[0]));
	c->key[i] = key;
	c->val[i] = val;
	c->aux[i] = (struct vorder_aux){ 0 };
	c->n++;
	o->n++;
	return 0;
}

/* key (not in *op) with val: 0, or -ENOMEM with *op unchanged */
int vorder_insert(struct vorder **op, uint64_t key, void *val)
{
	int r;

	if (!*op && !(*op = mem_calloc(sizeof(**op))))
		return -ENOMEM;
	r = vinsert(*op, key, val);
	if (r && !(*op)->n)
		vorder_free(op);
	return r;
}

/* chunk a takes chunk a + 1's keys, which then goes */
static void vmerge(struct vorder *o, uint32_t a)
{
	struct vchunk *x = o->c[a], *y = o->c[a + 1];

	memcpy(&x->key[x->n], y->key, y->n * sizeof(y->key[0]));
	memcpy(&x->val[x->n], y->val, y->n * sizeof(y->val[0]));
	memcpy(&x->aux[x->n], y->aux, y->n * sizeof(y->aux[0]));
	x->n += y->n;
	vdrop(o, a + 1);
}

/* key leaves o (nothing if it is not there); o goes with its last key */
void vorder_delete(struct vorder **op, uint64_t key)
{
	struct vorder *o = *op;
	struct vchunk *c;
	uint32_t ci, i;

	if (!o)
		return;
	ci = gallop_chunk(o, 0, key);
	if (ci == o->nc)
		return;
	c = o->c[ci];
	i = gallop_u64(c->key, 0, c->n, key);
	if (c->key[i] != key)
		return;
	memmove(&c->key[i], &c->key[i + 1], (c->n - i - 1) * sizeof(c->key[0]));
	memmove(&c->val[i], &c->val[i + 1], (c->n - i - 1) * sizeof(c->val[0]));
	memmove(&c->aux[i], &c->aux[i + 1], (c->n - i - 1) * sizeof(c->aux[0]));
	c->n--;
	o->n--;
	if (!c->n)
		vdrop(o, ci);
	else if (c->n < VCH / 4 && ci + 1 < o->nc && c->n + o->c[ci + 1]->n <= 3 * VCH / 4)
		vmerge(o, ci);
	else if (c->n < VCH / 4 && ci > 0 && c->n + o->c[ci - 1]->n <= 3 * VCH / 4)
		vmerge(o, ci - 1);
	if (!o->n)
		vorder_free(op);
}
