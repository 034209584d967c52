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
 * each entry once, its own ones through OWN only.  An INFO costs one
 * lookup per gid the caller holds; a PUBLISH or revocation at most five.
 */
#include "nvbridged.h"

#define VBUCKETS 8192

enum { V_ALL, V_SCOPE, V_OWN, V_UACL, V_GACL, V_GOWN };

struct vcount {
	struct vcount *next;
	const struct scope *s;
	uint32_t kind, a, b;
	uint32_t n;
};

struct vkey {
	uint32_t kind, a, b;
};

static struct vcount *vtab[VBUCKETS];

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
	return (uint32_t)(khash_end(&st) % VBUCKETS);
}

static struct vcount **vslot(const struct scope *s, const struct vkey *k)
{
	struct vcount **pp;

	for (pp = &vtab[vhash(s, k)]; *pp; pp = &(*pp)->next)
		if ((*pp)->s == s && (*pp)->kind == k->kind && (*pp)->a == k->a && (*pp)->b == k->b)
			break;
	return pp;
}

static uint32_t vget(const struct scope *s, uint32_t kind, uint32_t a, uint32_t b)
{
	struct vkey k = { kind, a, b };
	struct vcount *v = *vslot(s, &k);

	return v ? v->n : 0;
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

static void vdec(const struct scope *s, const struct vkey *k)
{
	struct vcount **pp = vslot(s, k), *v = *pp;

	if (!v)
		return;		/* cannot happen: every counter was made by vinc() */
	if (--v->n)
		return;
	*pp = v->next;
	mem_uncharge(sizeof(*v));
	free(v);
}

static int vinc(const struct scope *s, const struct vkey *k)
{
	struct vcount **pp = vslot(s, k), *v = *pp;

	if (!v) {
		v = mem_calloc(sizeof(*v));
		if (!v)
			return -ENOMEM;
		v->s = s;
		v->kind = k->kind;
		v->a = k->a;
		v->b = k->b;
		*pp = v;
	}
	v->n++;
	return 0;
}

/* e (its scope, access and ids set) becomes visible: 0, or -ENOMEM with nothing counted */
int visible_add(const struct entry *e)
{
	struct vkey k[5];
	int n = entry_keys(e, k);

	for (int i = 0; i < n; i++)
		if (vinc(e->scope, &k[i])) {
			while (i--)
				vdec(e->scope, &k[i]);
			return -ENOMEM;
		}
	return 0;
}

void visible_del(const struct entry *e)
{
	struct vkey k[5];
	int n = entry_keys(e, k);

	for (int i = 0; i < n; i++)
		vdec(e->scope, &k[i]);
}

static int cmp_gid(const void *a, const void *b)
{
	gid_t x = *(const gid_t *)a, y = *(const gid_t *)b;

	return x < y ? -1 : x > y;
}

/* what may_use() admits, counted: -1 when out of memory (the caller walks instead) */
int64_t visible_count(const struct client *c)
{
	const struct scope *s = c->scope;
	gid_t one[64], *g = one;
	int ng = c->ngroups + 1;
	int64_t n;

	if (c->override)
		return vget(s, V_ALL, 0, 0);
	n = (int64_t)vget(s, V_SCOPE, 0, 0) + vget(s, V_OWN, c->euid, 0) +
	    vget(s, V_UACL, c->euid, 0);
	if (ng > (int)(sizeof(one) / sizeof(one[0])) && !(g = malloc(sizeof(*g) * (size_t)ng)))
		return -1;
	g[0] = c->egid;
	if (c->ngroups)
		memcpy(g + 1, c->groups, sizeof(*g) * (size_t)c->ngroups);
	qsort(g, (size_t)ng, sizeof(*g), cmp_gid);
	for (int i = 0; i < ng; i++)
		if (!i || g[i] != g[i - 1])
			n += (int64_t)vget(s, V_GACL, g[i], 0) - vget(s, V_GOWN, c->euid, g[i]);
	if (g != one)
		free(g);
	return n;
}
