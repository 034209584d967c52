// SPDX-License-Identifier: MIT
/*
 * nvbridged's per-scope counters and id lists (daemon/visible.c), outside
 * the broker (lib-unit):
 *   oracle  (daemon_visible_oracle) INFO's count and LIST's pages equal
 *           a brute-force policy over the live entries, for random
 *           entries of every access, added and removed at random (some
 *           refused for memory: nothing counted), and callers with a few
 *           gids and with 5,000 (each side of the intersection the
 *           smaller), the override too; LIST never offers
 *           an entry may_use() refuses.
 *   memory  (daemon_visible_memory) the counters' arrays follow their
 *           entries: 100,000 entries, then all but 10 removed, leave less
 *           than 4 KiB charged (the arrays used to keep their peak until
 *           empty); again, for the halving's hysteresis.
 *   vorder  (daemon_visible_vorder) the ordered index of the group
 *           counters (daemon/vorder.c) against a bitmap (vorder_test()).
 * Exit 0 when all hold.  Linked with visible.c, vorder.c, hash.c, htable.c and
 * util.c (the memory budget); registry.c's two functions are the oracle's.
 */
#include "../../daemon/nvbridged.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * what visible.c uses from registry.c; the rest is the broker's own
 * (util.c: the memory budget, mem_used)
 */
/* the oracle: a scan, where registry.c bisects */
static bool holds(const struct client *c, gid_t g)
{
	if (c->egid == g)
		return true;
	for (int i = 0; i < c->ngroups; i++)
		if (c->groups[i] == g)
			return true;
	return false;
}

bool client_in_groups(const struct client *c, gid_t g)
{
	for (int i = 0; i < c->ngroups; i++)
		if (c->groups[i] == g)
			return true;
	return false;
}

static bool policy(const struct client *c, const struct entry *e)
{
	if (c->override || c->euid == e->euid)
		return true;
	switch (e->access) {
	case NVBRIDGE_ACCESS_SCOPE:
		return true;
	case NVBRIDGE_ACCESS_GROUP:
		return holds(c, e->egid);
	case NVBRIDGE_ACCESS_UID:
		return c->euid == e->puid;
	case NVBRIDGE_ACCESS_GID:
		return holds(c, e->pgid);
	}
	return false;
}

static unsigned long refused;	/* entries LIST offered that the policy refuses */

bool may_use(const struct client *c, const struct entry *e)
{
	bool ok = policy(c, e);

	refused += !ok;
	return ok;
}

#define NENT 3000
#define NUID 12
#define NGID 40
#define MANY 5000

static struct entry ents[NENT];
static bool live[NENT];
static int nents, nomem;	/* entries; of those, refused for memory */

static uint32_t rnd(uint32_t n)
{
	return (uint32_t)random() % n;
}

/* one more entry (the greatest id so far), live unless memory was refused */
static int add(struct scope *s)
{
	static const uint32_t acc[] = { NVBRIDGE_ACCESS_OWNER, NVBRIDGE_ACCESS_GROUP,
					NVBRIDGE_ACCESS_SCOPE, NVBRIDGE_ACCESS_UID,
					NVBRIDGE_ACCESS_GID };
	struct entry *e = &ents[nents];
	int r;

	memset(e, 0, sizeof(*e));
	e->scope = s;
	e->id = s->next_id++;
	e->access = acc[rnd(5)];
	e->euid = 1000 + rnd(NUID);
	e->egid = 2000 + rnd(NGID);
	e->puid = e->access == NVBRIDGE_ACCESS_UID ? 1000 + rnd(NUID) : 0;
	e->pgid = e->access == NVBRIDGE_ACCESS_GID ? 2000 + rnd(NGID) : 0;
	if (!rnd(10)) {		/* a refusal somewhere among its counters, or none */
		size_t real = mem_used, fake = ((size_t)cfg.max_memory_mb << 20) - rnd(200);

		mem_used = fake;
		r = visible_add(e);
		mem_used = real + (mem_used - fake);
	} else {
		r = visible_add(e);
	}
	if (r && r != -ENOMEM) {
		printf("    visible_add: %d\n", r);
		return -1;
	}
	live[nents++] = !r;
	nomem += !!r;
	return 0;
}

static int cmp_gid(const void *a, const void *b)
{
	gid_t x = *(const gid_t *)a, y = *(const gid_t *)b;

	return x < y ? -1 : x > y;
}

/* a random caller: a few gids of the pool, or MANY (the pool's among them), or the override */
static void caller(struct client *c, struct scope *s, gid_t *g)
{
	int kind = (int)rnd(5), n = 0;

	memset(c, 0, sizeof(*c));
	c->scope = s;
	c->euid = 1000 + rnd(NUID + 2);
	c->egid = 2000 + rnd(NGID + 4);
	c->override = kind == 4;
	if (kind >= 2) {
		for (int i = 0; i < MANY; i++)
			g[n++] = rnd(4) ? 100000 + (gid_t)i : 2000 + rnd(NGID);
	} else {
		for (int i = (int)rnd(6); i > 0; i--)
			g[n++] = 2000 + rnd(NGID + 4);
	}
	qsort(g, (size_t)n, sizeof(*g), cmp_gid);
	c->ngroups = 0;
	for (int i = 0; i < n; i++)	/* sorted, each once: as ident.c gives them */
		if (!i || g[i] != g[c->ngroups - 1])
			g[c->ngroups++] = g[i];
	c->groups = g;
}

/* c's count and LIST (pages of 1..8) against the oracle */
static int check(const struct client *c)
{
	uint32_t want = 0, k = 0;
	uint64_t after = 0;
	struct entry *page[8];
	int n;

	for (int i = 0; i < nents; i++)
		want += live[i] && policy(c, &ents[i]);
	if (visible_count(c) != want) {
		printf("    count %u, want %u (uid %u, %d gids, override %d, %u GACL)\n",
		       visible_count(c), want, c->euid, c->ngroups, c->override, c->scope->ngacl);
		return -1;
	}
	while ((n = visible_list(c, after, page, 1 + rnd(8))) > 0)
		for (int j = 0; j < n; j++) {
			while (k < (uint32_t)nents && !(live[k] && policy(c, &ents[k])))
				k++;
			if (k == (uint32_t)nents || page[j] != &ents[k]) {
				printf("    LIST gave id %llu, want %llu\n",
				       (unsigned long long)page[j]->id,
				       k < (uint32_t)nents ? (unsigned long long)ents[k].id : 0ULL);
				return -1;
			}
			after = ents[k++].id;
		}
	while (k < (uint32_t)nents && !(live[k] && policy(c, &ents[k])))
		k++;
	if (n < 0 || k != (uint32_t)nents) {
		printf("    LIST ended (%d) before id %llu\n", n,
		       k < (uint32_t)nents ? (unsigned long long)ents[k].id : 0ULL);
		return -1;
	}
	return 0;
}

static int oracle(void)
{
	static gid_t g[MANY];
	struct scope s = { .next_id = 1 };
	struct client c;
	int bad = 0, sides[2] = { 0, 0 };

	while (nents < NENT && !bad) {
		for (int i = 0; i < 50 && !bad; i++)
			bad = add(&s);
		for (int i = 0; i < 20; i++) {	/* removals, anywhere */
			int k = (int)rnd((uint32_t)nents);

			if (live[k]) {
				visible_del(&ents[k]);
				live[k] = false;
			}
		}
		for (int i = 0; i < 4 && !bad; i++) {
			caller(&c, &s, g);
			if (!c.override)
				sides[s.ngacl < (uint32_t)c.ngroups + 1]++;
			bad = check(&c);
		}
	}
	if (!bad && refused) {
		printf("    LIST offered %lu entries the policy refuses\n", refused);
		bad = 1;
	}
	if (!bad && !nomem) {
		printf("    no PUBLISH was refused for memory: the rollback untested\n");
		bad = 1;
	}
	if (!bad && (!sides[0] || !sides[1])) {
		printf("    the sum ran by gids %d times, by counters %d: both sides untested\n",
		       sides[0], sides[1]);
		bad = 1;
	}
	for (int i = 0; i < nents; i++)
		if (live[i])
			visible_del(&ents[i]);
	if (!bad && (mem_used || s.gacl || s.gown || s.ngacl)) {
		printf("    with no entries: %zu bytes charged, %u GACL counters\n", mem_used,
		       s.ngacl);
		bad = 1;
	}
	printf("#   %d entries (%d refused for memory), the sum by gids %d times, by counters %d\n",
	       nents, nomem, sides[0], sides[1]);
	return bad;
}

#define PEAK 100000
#define KEEP 10
#define AFTER_MAX 4096

static int memory(void)
{
	struct entry *e = calloc(PEAK, sizeof(*e));
	struct scope s = { .next_id = 1 };
	struct client c = { .scope = &s, .euid = 5 };
	size_t peak = 0, after[2] = { 0, 0 };
	int bad = 0;

	if (!e)
		return 1;
	for (int round = 0; round < 2 && !bad; round++) {
		for (int i = 0; i < PEAK; i++) {
			e[i].scope = &s;
			e[i].id = s.next_id++;
			e[i].access = NVBRIDGE_ACCESS_SCOPE;
			e[i].euid = 1;
			if (visible_add(&e[i])) {
				printf("    visible_add %d\n", i);
				return 1;
			}
		}
		peak = mem_used;
		for (int i = 0; i < PEAK - KEEP; i++)	/* the oldest first, as a scope ages */
			visible_del(&e[i]);
		after[round] = mem_used;
		bad = after[round] > AFTER_MAX || visible_count(&c) != KEEP ||
		      visible_find_id(&s, e[PEAK - 1].id) != &e[PEAK - 1] ||
		      visible_find_id(&s, e[0].id);
		for (int i = PEAK - KEEP; i < PEAK; i++)
			visible_del(&e[i]);
		bad |= mem_used != 0;
	}
	printf("#   %d entries: %zu bytes charged; all but %d removed: %zu, again %zu (bound %d)\n",
	       PEAK, peak, KEEP, after[0], after[1], AFTER_MAX);
	free(e);
	return bad;
}

/*
 * The ordered index (daemon/vorder.c) against a bitmap: random inserts
 * and deletes over VO_KEYS keys (chunks split, merged and dropped), then
 * its order, count, values, aux and forward seeks (from where the last
 * one stopped, as visect walks) checked; all gone leaves nothing charged.
 */
#define VO_KEYS 20000
#define VO_OPS 400000

static int vorder_check(const struct vorder *o, const bool *in)
{
	struct vorder_it it;
	uint64_t key, t = 0;
	void *val;
	uint32_t n = 0, want = 0;
	int64_t prev = -1;

	vorder_begin(&it, o);
	while (vorder_at(&it, &key, &val)) {
		if ((int64_t)key <= prev || key >= VO_KEYS || !in[key] ||
		    val != (void *)(uintptr_t)(key + 1) || vorder_aux_at(&it)->count != key * 3)
			return -1;
		prev = (int64_t)key;
		n++;
		vorder_next(&it);
	}
	for (int i = 0; i < VO_KEYS; i++)
		want += in[i];
	if (n != want || vorder_count(o) != want)
		return -1;
	vorder_begin(&it, o);
	while ((t += 1 + rnd(rnd(2) ? 4 : 2000)) < VO_KEYS + 10) {
		uint64_t w = t;
		bool f = vorder_seek(&it, t);

		while (w < VO_KEYS && !in[w])
			w++;
		if (f != (w < VO_KEYS) || (f && (!vorder_at(&it, &key, &val) || key != w)))
			return -1;
	}
	return 0;
}

static int vorder_test(void)
{
	static bool in[VO_KEYS];
	struct vorder *o = NULL;
	int bad = 0, nomem_o = 0;

	for (int r = 0; r < VO_OPS && !bad; r++) {
		uint64_t k = rnd(r < VO_OPS / 2 ? VO_KEYS : VO_KEYS / 8);	/* then dense deletes */

		if (in[k]) {
			vorder_delete(&o, k);
			in[k] = false;
		} else if (r < VO_OPS / 2 || !rnd(4)) {
			size_t real = mem_used, fake = ((size_t)cfg.max_memory_mb << 20) - rnd(64);
			bool refuse = !rnd(8);	/* refused: the index as it was */
			int e;

			if (refuse)
				mem_used = fake;
			e = vorder_insert(&o, k, (void *)(uintptr_t)(k + 1));
			if (refuse)
				mem_used = real + (mem_used - fake);
			if (e) {
				nomem_o++;
				continue;
			}
			in[k] = true;
			vorder_aux(o, k)->count = (uint32_t)k * 3;
		}
		if (!(r % 20000))
			bad = vorder_check(o, in);
	}
	bad = bad || vorder_check(o, in);
	for (uint64_t k = 0; k < VO_KEYS; k++)
		if (in[k])
			vorder_delete(&o, k);
	printf("#   vorder: %d ops, %d refused for memory; %s, %zu bytes left\n", VO_OPS, nomem_o,
	       bad ? "FAILED" : "ok", mem_used);
	return bad || o || mem_used || !nomem_o;
}

int main(int argc, char **argv)
{
	unsigned int seed = argc > 2 ? (unsigned int)strtoul(argv[2], NULL, 0) : (unsigned int)getpid();

	printf("#   seed %u (again: %s %s %u)\n", seed, argv[0], argc > 1 ? argv[1] : "?", seed);
	srandom(seed);
	khash_init();
	if (argc > 1 && !strcmp(argv[1], "oracle"))
		return oracle();
	if (argc > 1 && !strcmp(argv[1], "memory"))
		return memory();
	if (argc > 1 && !strcmp(argv[1], "vorder"))
		return vorder_test();
	fprintf(stderr, "usage: %s oracle|memory|vorder\n", argv[0]);
	return 2;
}
