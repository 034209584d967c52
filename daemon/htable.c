// SPDX-License-Identifier: MIT
/*
 * nvbridged: the chained hash tables of entries, waiters, watches and
 * INFO's counters, which double as they fill.
 *
 * Keyed hashes (hash.c) keep a client from choosing keys that share a
 * bucket, but a fixed table still grows chains with its load: the
 * entries of a scope are bounded only per uid, and a rootless container's
 * 65,536 subuids (one tenant) may each publish 1,024, up to
 * --max-memory-mb, so 4,096 buckets would give every lookup, by everyone,
 * a walk of hundreds of entries.  A table doubles when it holds twice as
 * many nodes as buckets (a rehash of its nodes, O(n) now and then,
 * O(1) amortized); it never shrinks.  Its buckets count against
 * --max-memory-mb: a table that cannot grow stays as it is, and works.
 */
#include "nvbridged.h"

#define HT_MAX_BITS 26

static void grow(struct htable *t, uint32_t nb)
{
	struct hnode **b;

	if (!mem_charge((size_t)nb * sizeof(*b)))
		return;
	b = calloc(nb, sizeof(*b));
	if (!b) {
		mem_uncharge((size_t)nb * sizeof(*b));
		return;
	}
	for (uint32_t i = 0; i <= t->mask; i++)
		while (t->b[i]) {
			struct hnode *x = t->b[i], **to = &b[x->hash & (nb - 1)];

			t->b[i] = x->next;
			x->next = *to;
			if (x->next)
				x->next->pprev = &x->next;
			x->pprev = to;
			*to = x;
		}
	if (t->b != t->fixed) {
		mem_uncharge(((size_t)t->mask + 1) * sizeof(*b));
		free(t->b);
	}
	t->b = b;
	t->mask = nb - 1;
}

/* x->hash set; a table starts with its static buckets (HTABLE()), so this cannot fail */
void htable_add(struct htable *t, struct hnode *x)
{
	struct hnode **to;

	if (t->n >= 2 * (t->mask + 1) && t->mask + 1 < (1u << HT_MAX_BITS))
		grow(t, 2 * (t->mask + 1));
	to = &t->b[x->hash & t->mask];
	x->next = *to;
	if (x->next)
		x->next->pprev = &x->next;
	x->pprev = to;
	*to = x;
	t->n++;
}

void htable_del(struct htable *t, struct hnode *x)
{
	*x->pprev = x->next;
	if (x->next)
		x->next->pprev = x->pprev;
	t->n--;
}

/* the chain where the nodes of hash h are */
struct hnode *htable_chain(const struct htable *t, uint32_t h)
{
	return t->b[h & t->mask];
}
