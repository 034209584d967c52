// SPDX-License-Identifier: MIT
/*
 * nvbridged: the one hash of every table whose keys clients choose (names
 * of entries, waiters and watches in registry.c and events.c; INFO's
 * counters in visible.c).
 *
 * A client that can compute which keys share a bucket makes every lookup
 * of that bucket, by everyone, walk its entries: the names' former hash
 * (FNV-1a seeded with the scope's address, 4096 buckets by its low 12
 * bits) depended only on the address's page offset, which ASLR leaves
 * alone (hostile attack_name_hash).  So the hash is keyed with a secret
 * drawn at start, and is a pseudorandom function: SipHash-1-3
 * (Aumasson and Bernstein; the rounds CPython's str hash and Rust's
 * HashMap use), whose every output bit depends on every key bit, so any
 * bits of it make a bucket index.  Nothing the broker links (libc only)
 * provides one.  Checked against the reference implementation's vectors
 * with 2-4 rounds (lib-unit daemon_siphash_vectors).
 */
#include "nvbridged.h"
#include <sys/random.h>

static uint64_t key[2];
static bool keyed;

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

static void sipround(uint64_t v[4])
{
	v[0] += v[1];
	v[1] = ROTL(v[1], 13);
	v[1] ^= v[0];
	v[0] = ROTL(v[0], 32);
	v[2] += v[3];
	v[3] = ROTL(v[3], 16);
	v[3] ^= v[2];
	v[0] += v[3];
	v[3] = ROTL(v[3], 21);
	v[3] ^= v[0];
	v[2] += v[1];
	v[1] = ROTL(v[1], 17);
	v[1] ^= v[2];
	v[2] = ROTL(v[2], 32);
}

/* (c, d) = (1, 3) in the broker; the vectors' test asks for (2, 4) */
static int crounds = 1, drounds = 3;

void khash_rounds(int c, int d)
{
	crounds = c;
	drounds = d;
}

/* the key: once, at start (main); getrandom() waits for the kernel's pool at early boot */
void khash_init(void)
{
	uint8_t *p = (uint8_t *)key;
	size_t got = 0;

	while (got < sizeof(key)) {
		ssize_t n = getrandom(p + got, sizeof(key) - got, 0);

		if (n > 0) {
			got += (size_t)n;
		} else if (n < 0 && errno != EINTR) {
			logmsg("getrandom: %s: name hashes keyed from the clock and addresses",
			       strerror(errno));
			key[0] ^= (uint64_t)now_ns() ^ (uint64_t)(uintptr_t)&got;
			key[1] ^= (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)key;
			break;
		}
	}
	keyed = true;
}

void khash_set_key(const uint64_t k[2])
{
	key[0] = k[0];
	key[1] = k[1];
	keyed = true;
}

void khash_start(struct khash *st)
{
	if (!keyed)
		khash_init();	/* a harness that has no main(): the fuzzer */
	st->v[0] = key[0] ^ 0x736f6d6570736575ULL;
	st->v[1] = key[1] ^ 0x646f72616e646f6dULL;
	st->v[2] = key[0] ^ 0x6c7967656e657261ULL;
	st->v[3] = key[1] ^ 0x7465646279746573ULL;
	st->m = 0;
	st->len = 0;
}

void khash_byte(struct khash *st, uint8_t b)
{
	st->m |= (uint64_t)b << (8 * (st->len & 7));
	if ((++st->len & 7) == 0) {
		st->v[3] ^= st->m;
		for (int i = 0; i < crounds; i++)
			sipround(st->v);
		st->v[0] ^= st->m;
		st->m = 0;
	}
}

void khash_u64(struct khash *st, uint64_t x)
{
	for (int i = 0; i < 8; i++)
		khash_byte(st, (uint8_t)(x >> (8 * i)));
}

/* the hash of what st has taken so far; st itself can take more (prefixes: events.c) */
uint64_t khash_end(const struct khash *st)
{
	uint64_t v[4] = { st->v[0], st->v[1], st->v[2], st->v[3] };
	uint64_t b = (uint64_t)st->len << 56 | st->m;

	v[3] ^= b;
	for (int i = 0; i < crounds; i++)
		sipround(v);
	v[0] ^= b;
	v[2] ^= 0xff;
	for (int i = 0; i < drounds; i++)
		sipround(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}
