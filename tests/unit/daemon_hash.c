// SPDX-License-Identifier: MIT
/*
 * nvbridged's hashing, outside the broker (lib-unit):
 *   vectors  (daemon_siphash_vectors) the keyed hash (daemon/hash.c)
 *            against SipHash's reference vectors (veorq/SipHash
 *            vectors.h: key 00..0f, messages 00, 00 01, ...; 2-4 rounds,
 *            the ones published), fed a byte at a time and a word at a
 *            time, and with the broker's 1-3 rounds against a published
 *            SipHash-1-3 value;
 *   htable   (daemon_htable_grows) the tables (daemon/htable.c) double as
 *            they fill, keep every node findable in its chain, keep
 *            chains short, and stay as they are when memory is refused.
 * Exit 0 when all hold.
 */
#include "../../daemon/nvbridged.h"
#include <sys/random.h>

/* what hash.c and htable.c use, in the broker from util.c */
void logmsg(const char *fmt, ...)
{
	(void)fmt;
}

int64_t now_ns(void)
{
	return 0;
}

static size_t charged, charge_cap = SIZE_MAX;

bool mem_charge(size_t n)
{
	if (charged + n > charge_cap)
		return false;
	charged += n;
	return true;
}

void mem_uncharge(size_t n)
{
	charged -= n;
}

static const uint64_t v24[64] = {
	0x726fdb47dd0e0e31ULL, 0x74f839c593dc67fdULL, 0x0d6c8009d9a94f5aULL, 0x85676696d7fb7e2dULL,
	0xcf2794e0277187b7ULL, 0x18765564cd99a68dULL, 0xcbc9466e58fee3ceULL, 0xab0200f58b01d137ULL,
	0x93f5f5799a932462ULL, 0x9e0082df0ba9e4b0ULL, 0x7a5dbbc594ddb9f3ULL, 0xf4b32f46226bada7ULL,
	0x751e8fbc860ee5fbULL, 0x14ea5627c0843d90ULL, 0xf723ca908e7af2eeULL, 0xa129ca6149be45e5ULL,
	0x3f2acc7f57c29bdbULL, 0x699ae9f52cbe4794ULL, 0x4bc1b3f0968dd39cULL, 0xbb6dc91da77961bdULL,
	0xbed65cf21aa2ee98ULL, 0xd0f2cbb02e3b67c7ULL, 0x93536795e3a33e88ULL, 0xa80c038ccd5ccec8ULL,
	0xb8ad50c6f649af94ULL, 0xbce192de8a85b8eaULL, 0x17d835b85bbb15f3ULL, 0x2f2e6163076bcfadULL,
	0xde4daaaca71dc9a5ULL, 0xa6a2506687956571ULL, 0xad87a3535c49ef28ULL, 0x32d892fad841c342ULL,
	0x7127512f72f27cceULL, 0xa7f32346f95978e3ULL, 0x12e0b01abb051238ULL, 0x15e034d40fa197aeULL,
	0x314dffbe0815a3b4ULL, 0x027990f029623981ULL, 0xcadcd4e59ef40c4dULL, 0x9abfd8766a33735cULL,
	0x0e3ea96b5304a7d0ULL, 0xad0c42d6fc585992ULL, 0x187306c89bc215a9ULL, 0xd4a60abcf3792b95ULL,
	0xf935451de4f21df2ULL, 0xa9538f0419755787ULL, 0xdb9acddff56ca510ULL, 0xd06c98cd5c0975ebULL,
	0xe612a3cb9ecba951ULL, 0xc766e62cfcadaf96ULL, 0xee64435a9752fe72ULL, 0xa192d576b245165aULL,
	0x0a8787bf8ecb74b2ULL, 0x81b3e73d20b49b6fULL, 0x7fa8220ba3b2eceaULL, 0x245731c13ca42499ULL,
	0xb78dbfaf3a8d83bdULL, 0xea1ad565322a1a0bULL, 0x60e61c23a3795013ULL, 0x6606d7e446282b93ULL,
	0x6ca4ecb15c5f91e1ULL, 0x9f626da15c9625f3ULL, 0xe51b38608ef25f57ULL, 0x958a324ceb064572ULL,
};

static int vectors(void)
{
	const uint64_t k[2] = { 0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL }, zero[2] = { 0, 0 };
	struct khash st, w;
	int bad = 0;

	khash_set_key(k);
	khash_rounds(2, 4);
	khash_start(&st);
	for (int n = 0; n < 64; n++) {
		if (khash_end(&st) != v24[n]) {
			printf("FAIL SipHash-2-4 of %d bytes: %016llx, want %016llx\n", n,
			       (unsigned long long)khash_end(&st), (unsigned long long)v24[n]);
			bad++;
		}
		/* the same message a word at a time, where it is whole words */
		if (n % 8 == 0) {
			khash_start(&w);
			for (int i = 0; i < n; i += 8) {
				uint64_t x = 0;

				for (int j = 0; j < 8; j++)
					x |= (uint64_t)(uint8_t)(i + j) << (8 * j);
				khash_u64(&w, x);
			}
			if (khash_end(&w) != v24[n]) {
				printf("FAIL SipHash-2-4 of %d bytes by words\n", n);
				bad++;
			}
		}
		khash_byte(&st, (uint8_t)n);
	}
	/* SipHash-1-3, key 0, empty message: 0xd1fba762150c532c (as RustCrypto's sip_hash tests print it) */
	khash_set_key(zero);
	khash_rounds(1, 3);
	khash_start(&st);
	if (khash_end(&st) != 0xd1fba762150c532cULL) {
		printf("FAIL SipHash-1-3 of nothing: %016llx\n", (unsigned long long)khash_end(&st));
		bad++;
	}
	return bad ? 1 : 0;
}

#define HN 200000

struct item {
	struct hnode hn;
	uint32_t id;
};

/* the longest chain of t, and whether every node's pprev and bucket are right */
static uint32_t longest(const struct htable *t, int *bad)
{
	uint32_t most = 0;

	for (uint32_t i = 0; i <= t->mask; i++) {
		uint32_t len = 0;

		for (struct hnode *const *pp = &t->b[i]; *pp; pp = &(*pp)->next) {
			*bad += (*pp)->pprev != pp || ((*pp)->hash & t->mask) != i;
			len++;
		}
		most = len > most ? len : most;
	}
	return most;
}

static int htable(void)
{
	static struct hnode *b0[4096];
	static struct htable t = HTABLE(b0);
	struct item *it = calloc(HN, sizeof(*it));
	int bad = 0;
	uint32_t most, found = 0;

	if (!it)
		return 1;
	for (uint32_t i = 0; i < HN; i++) {
		if (getrandom(&it[i].hn.hash, sizeof(it[i].hn.hash), 0) != sizeof(it[i].hn.hash))
			return 1;
		it[i].id = i;
		htable_add(&t, &it[i].hn);
	}
	most = longest(&t, &bad);
	/* 200,000 nodes: 131,072 buckets (doubled at 2 per bucket), not 4,096 */
	if (t.mask + 1 != 131072 || t.n != HN || bad || most > 16) {
		printf("FAIL after %d adds: %u buckets, %u nodes, %d misplaced, longest chain %u\n",
		       HN, t.mask + 1, t.n, bad, most);
		return 1;
	}
	if (charged != 131072 * sizeof(struct hnode *)) {
		printf("FAIL %zu bytes charged for 131072 buckets\n", charged);
		return 1;
	}
	for (uint32_t i = 0; i < HN; i += 7)
		for (struct hnode *x = htable_chain(&t, it[i].hn.hash); x; x = x->next)
			if (container_of(x, struct item, hn)->id == i) {
				found++;
				break;
			}
	if (found != (HN + 6) / 7) {
		printf("FAIL %u of %u nodes found in their chains\n", found, (HN + 6) / 7);
		return 1;
	}
	/* every other node goes; the rest stay findable and linked */
	for (uint32_t i = 0; i < HN; i += 2)
		htable_del(&t, &it[i].hn);
	longest(&t, &bad);
	if (t.n != HN / 2 || bad) {
		printf("FAIL after deletes: %u nodes, %d misplaced\n", t.n, bad);
		return 1;
	}
	/* no memory for more buckets: the table stays, and takes the nodes */
	charge_cap = charged;
	for (uint32_t i = 0; i < HN; i += 2)
		htable_add(&t, &it[i].hn);
	most = longest(&t, &bad);
	if (t.mask + 1 != 131072 || t.n != HN || bad) {
		printf("FAIL refused growth: %u buckets, %u nodes, %d misplaced\n", t.mask + 1, t.n,
		       bad);
		return 1;
	}
	charge_cap = SIZE_MAX;
	free(it);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "vectors"))
		return vectors();
	if (argc == 2 && !strcmp(argv[1], "htable"))
		return htable();
	fprintf(stderr, "usage: %s vectors|htable\n", argv[0]);
	return 2;
}
