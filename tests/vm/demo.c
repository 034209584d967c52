// SPDX-License-Identifier: GPL-2.0
/*
 * Demo: two processes exchange a memfd buffer through /dev/nvbridge and say
 * what they do.  The producer (root) fills a 1 MiB memfd and publishes it as
 * "demo/buffer" for everyone in its IPC namespace, with a small blob that
 * describes it.  The consumer (another uid) waits for the name, receives the
 * fd, checks the data, writes a reply into the same buffer and publishes a
 * marker "demo/ack".  The producer, watching "demo/", sees the marker, reads
 * the reply from its own mapping and exits; the consumer, watching the
 * buffer, is told the entry was revoked and why.
 */
#define _GNU_SOURCE
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "nvbtest.h"

#define BUF_SIZE (1u << 20)
#define CONSUMER_UID 1000

struct meta {			/* the blob published with the buffer */
	uint64_t size;
	uint64_t checksum;	/* of bytes 4096..size */
	char what[48];
};

static const char *who = "producer";

__attribute__((format(printf, 1, 2)))
static void say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	n = snprintf(line, sizeof(line), "[%s pid %d uid %d] ", who, getpid(), getuid());
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	printf("%s\n", line);
	fflush(stdout);
}

static uint64_t checksum(const unsigned char *p, size_t len)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

static const char *reason_name(unsigned int r)
{
	switch (r) {
	case NVBRIDGE_REVOKE_UNPUBLISHED:
		return "unpublished";
	case NVBRIDGE_REVOKE_CLOSED:
		return "publisher closed its file";
	case NVBRIDGE_REVOKE_EXITED:
		return "publisher exited";
	default:
		return "?";
	}
}

static int consumer(void)
{
	struct nvbridge_fetch f;
	struct nvbridge_event ev;
	struct meta m;
	unsigned char *buf;
	long fd;
	int dfd, w;

	who = "consumer";
	if (setgroups(0, NULL) || setresgid(CONSUMER_UID, CONSUMER_UID, CONSUMER_UID) ||
	    setresuid(CONSUMER_UID, CONSUMER_UID, CONSUMER_UID)) {
		say("cannot drop privileges: %s", strerror(errno));
		return 1;
	}
	dfd = nvb_open(0);
	w = nvb_open(O_NONBLOCK);
	if (dfd < 0 || w < 0) {
		say("open %s: %s", NVB_DEV, strerror(-(dfd < 0 ? dfd : w)));
		return 1;
	}
	if (nvb_watch(w, "demo/buffer", 0, NULL))
		return 1;
	say("waiting for \"demo/buffer\" (FETCH with NVBRIDGE_FETCH_WAIT, 10 s)");
	fd = nvb_fetch_ex(dfd, "demo/buffer", NVBRIDGE_FETCH_WAIT, 10000000000ll,
			  &m, sizeof(m), &f);
	if (fd <= 0) {
		say("fetch failed: %s", fd < 0 ? strerror((int)-fd) : "no fd");
		return 1;
	}
	say("received fd %ld: entry id %llu from pid %u uid %u, blob %u bytes: \"%s\", %llu bytes",
	    fd, (unsigned long long)f.id, f.pid, f.uid, f.blob_len, m.what,
	    (unsigned long long)m.size);
	buf = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, (int)fd, 0);
	if (buf == MAP_FAILED) {
		say("mmap: %s", strerror(errno));
		return 1;
	}
	say("buffer says: \"%s\"", (char *)buf);
	if (checksum(buf + 4096, BUF_SIZE - 4096) != m.checksum) {
		say("checksum MISMATCH");
		return 1;
	}
	say("checksum of %u random bytes matches the blob", BUF_SIZE - 4096);
	snprintf((char *)buf + 2048, 2048, "hello back from the consumer, pid %d uid %d",
		 getpid(), getuid());
	if (nvb_publish(dfd, "demo/ack", NVBRIDGE_NO_FD, NVBRIDGE_ACCESS_SCOPE, NULL)) {
		say("publish demo/ack failed");
		return 1;
	}
	say("wrote a reply into the shared buffer and published \"demo/ack\"");
	while (nvb_next_event(w, &ev, 10000) == 0) {
		if (ev.type == NVBRIDGE_EVENT_REVOKED) {
			say("event: \"%s\" revoked (%s)", ev.name, reason_name(ev.reason));
			say("the mapping stays valid: \"%s\"", (char *)buf);
			return 0;
		}
	}
	say("no revoke event");
	return 1;
}

int main(void)
{
	struct nvbridge_event ev;
	struct meta m;
	unsigned char *buf;
	uint64_t id;
	int mfd, dfd, w, st;
	pid_t pid;

	setvbuf(stdout, NULL, _IOLBF, 0);
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		_exit(consumer());
	nvb_sleep_ms(200);	/* let the consumer wait first */

	mfd = memfd_create("demo-buffer", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, BUF_SIZE) < 0)
		return 1;
	buf = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (buf == MAP_FAILED)
		return 1;
	snprintf((char *)buf, 2048, "hello from the producer, pid %d", getpid());
	nvb_random(buf + 4096, BUF_SIZE - 4096);
	memset(&m, 0, sizeof(m));
	m.size = BUF_SIZE;
	m.checksum = checksum(buf + 4096, BUF_SIZE - 4096);
	snprintf(m.what, sizeof(m.what), "memfd, greeting + random bytes");
	say("filled a %u-byte memfd", BUF_SIZE);

	dfd = nvb_open(0);
	w = nvb_open(O_NONBLOCK);
	if (dfd < 0 || w < 0) {
		say("open %s: %s", NVB_DEV, strerror(-(dfd < 0 ? dfd : w)));
		return 1;
	}
	if (nvb_watch(w, "demo/ack", 0, NULL))
		return 1;
	if (nvb_publish_ex(dfd, "demo/buffer", mfd, NVBRIDGE_ACCESS_SCOPE, 0, 0, &m,
			   sizeof(m), &id)) {
		say("publish failed");
		return 1;
	}
	say("published \"demo/buffer\" (entry id %llu, access SCOPE, %zu-byte blob)",
	    (unsigned long long)id, sizeof(m));
	if (nvb_next_event(w, &ev, 15000) || ev.type != NVBRIDGE_EVENT_PUBLISHED) {
		say("no ack from the consumer");
		kill(pid, SIGKILL);
		return 1;
	}
	say("event: \"%s\" published by pid %u uid %u", ev.name, ev.pid, ev.uid);
	say("reply found in my own mapping: \"%s\"", (char *)buf + 2048);
	say("closing /dev/nvbridge: the entry is revoked");
	close(dfd);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
		say("the consumer failed");
		return 1;
	}
	say("done: one buffer, two processes, two uids, no socket");
	return 0;
}
