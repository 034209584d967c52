// SPDX-License-Identifier: MIT
/* nvbridgectl: inspect and script nvbridge (kernel module or nvbridged). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <nvbridge.h>

/* exit codes: documented in usage() and the man page */
enum {
	EX_OK = 0, EX_ERR = 1, EX_USAGE = 2, EX_NOENT = 3, EX_ACCES = 4, EX_TIMEOUT = 5,
	EX_EXIST = 6, EX_NOBACKEND = 7, EX_ABI = 8, EX_NOTUNIQ = 9,
};

static int json;
static volatile sig_atomic_t stop;

static void on_sig(int s) { (void)s; stop = 1; }

static void usage(FILE *f)
{
	fprintf(f,
"usage: nvbridgectl [--json] [--backend auto|kernel|broker] [--socket PATH] COMMAND ...\n"
"\n"
"commands:\n"
"  info                     backend, ABI version, limits, entry counts\n"
"  list                     entries you may fetch in your scope\n"
"  watch [PREFIX]           stream events for PREFIX (default: all) until interrupted;\n"
"                           --count N stops after N events, --timeout SEC after SEC\n"
"  publish NAME [--file PATH] [--blob STRING | --blob-file PATH] [--access POLICY]\n"
"                           [--for SEC]\n"
"                           publish and keep the entry until interrupted (or SEC);\n"
"                           POLICY: owner (default), group, scope, uid:N, gid:N.\n"
"                           Prints one line (or JSON object) once published.\n"
"  fetch NAME [--wait] [--timeout SEC] [--expect-uid UID] [--out PATH]\n"
"        [--blob-out PATH|-]\n"
"                           fetch; --out copies the file's contents to PATH;\n"
"                           --expect-uid: UID's entry of NAME only (others' are not seen)\n"
"\n"
"exit codes: 0 ok, 1 other error, 2 usage, 3 not found (or not yours to fetch),\n"
"            4 permission denied (device or broker socket), 5 timed out,\n"
"            6 name exists (yours), 7 no nvbridge backend, 8 ABI mismatch,\n"
"            9 several users publish NAME (choose with --expect-uid)\n");
}

static int code_for(int err)
{
	switch (err) {
	case 0: return EX_OK;
	case -ENOENT: return EX_NOENT;
	case -EACCES: case -EPERM: return EX_ACCES;
	case -ETIMEDOUT: return EX_TIMEOUT;
	case -EEXIST: return EX_EXIST;
	case -ENOTUNIQ: return EX_NOTUNIQ;
	case -EPROTO: return EX_ABI;
	default: return EX_ERR;
	}
}

static int fail(struct nvb *h, const char *what, int err)
{
	const char *msg = h ? nvb_last_error(h) : nvb_open_error();

	if (json)
		printf("{\"error\":\"%s\",\"errno\":%d,\"message\":\"%s\"}\n", what, -err,
		       *msg ? msg : nvb_strerror(err));
	else
		fprintf(stderr, "nvbridgectl: %s: %s\n", what, *msg ? msg : nvb_strerror(err));
	return code_for(err);
}

static const char *access_str(uint32_t a)
{
	static const char *const n[] = { "owner", "group", "scope", "uid", "gid" };

	return a < 5 ? n[a] : "unknown";
}

static int cmd_info(struct nvb *h)
{
	struct nvb_info i = { .sz = sizeof(i) };
	int ret = nvb_info(h, &i);

	if (ret)
		return fail(h, "info", ret);
	if (json) {
		printf("{\"backend\":\"%s\",\"abi_version\":%u,\"name_max\":%u,\"max_blob_size\":%u,"
		       "\"max_entries_per_user\":%u,\"max_events\":%u,\"max_watches\":%u,"
		       "\"entries\":%u,\"user_entries\":%u}\n",
		       nvb_backend_name((int)i.backend), i.abi_version, i.name_max, i.max_blob_size,
		       i.max_entries_per_user, i.max_events, i.max_watches, i.entries, i.user_entries);
	} else {
		printf("backend               %s\n", nvb_backend_name((int)i.backend));
		printf("abi_version           %u\n", i.abi_version);
		printf("name_max              %u\n", i.name_max);
		printf("max_blob_size         %u\n", i.max_blob_size);
		printf("max_entries_per_user  %u\n", i.max_entries_per_user);
		printf("max_events            %u\n", i.max_events);
		printf("max_watches           %u\n", i.max_watches);
		printf("entries (your scope)  %u\n", i.entries);
		printf("user_entries (yours)  %u\n", i.user_entries);
	}
	return 0;
}

static void print_entry(const struct nvb_entry *e, int first)
{
	if (json)
		printf("%s{\"id\":%llu,\"name\":\"%s\",\"pid\":%u,\"uid\":%u,\"gid\":%u,"
		       "\"access\":\"%s\",\"has_fd\":%s,\"own\":%s,\"blob_len\":%u}",
		       first ? "" : ",", (unsigned long long)e->id, e->name, e->pid, e->uid, e->gid,
		       access_str(e->access), e->flags & NVB_ENTRY_HAS_FD ? "true" : "false",
		       e->flags & NVB_ENTRY_OWN ? "true" : "false", e->blob_len);
	else
		printf("%-8llu %-40s %7u %6u %6u %-6s %-3s %u\n", (unsigned long long)e->id, e->name,
		       e->pid, e->uid, e->gid, access_str(e->access),
		       e->flags & NVB_ENTRY_HAS_FD ? "yes" : "no", e->blob_len);
}

static int cmd_list(struct nvb *h)
{
	struct nvb_entry e[64];
	uint64_t cur = 0;
	int n, first = 1;

	if (json)
		printf("[");
	else
		printf("%-8s %-40s %7s %6s %6s %-6s %-3s %s\n", "ID", "NAME", "PID", "UID", "GID",
		       "ACCESS", "FD", "BLOB");
	while ((n = nvb_list(h, &cur, e, 64)) > 0)
		for (int i = 0; i < n; i++, first = 0)
			print_entry(&e[i], first);
	if (json)
		printf("]\n");
	if (n < 0)
		return fail(h, "list", n);
	return 0;
}

static int cmd_watch(struct nvb *h, const char *prefix, long count, double timeout)
{
	static const char *const type[] = { "unknown", "published", "revoked", "overflow" };
	static const char *const reason[] = { "none", "unpublished", "closed", "exited" };
	struct nvb_event ev[16];
	struct timespec t0, t;
	long seen = 0;
	int ret = nvb_watch(h, prefix, NVB_WATCH_PREFIX, NULL);

	if (ret)
		return fail(h, "watch", ret);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!stop && (count < 0 || seen < count)) {
		int64_t wait = 200000000LL;

		if (timeout >= 0) {
			clock_gettime(CLOCK_MONOTONIC, &t);
			double el = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;

			if (el >= timeout)
				return seen ? 0 : EX_TIMEOUT;
			if ((timeout - el) * 1e9 < (double)wait)
				wait = (int64_t)((timeout - el) * 1e9) + 1;
		}
		int n = nvb_event_read(h, ev, 16, wait);

		if (n == -ETIMEDOUT || n == -EINTR)
			continue;
		if (n < 0)
			return fail(h, "watch", n);
		for (int i = 0; i < n && (count < 0 || seen < count); i++, seen++) {
			const struct nvb_event *e = &ev[i];
			const char *ty = type[e->type <= 3 ? e->type : 0];
			const char *re = reason[e->reason <= 3 ? e->reason : 0];

			if (json)
				printf("{\"seq\":%llu,\"type\":\"%s\",\"name\":\"%s\",\"id\":%llu,"
				       "\"pid\":%u,\"uid\":%u,\"gid\":%u,\"reason\":\"%s\",\"lost\":%u}\n",
				       (unsigned long long)e->seq, ty, e->name, (unsigned long long)e->id,
				       e->pid, e->uid, e->gid, re, e->lost);
			else if (e->type == NVB_EVENT_OVERFLOW)
				printf("%llu overflow lost=%u\n", (unsigned long long)e->seq, e->lost);
			else
				printf("%llu %s %s id=%llu pid=%u uid=%u gid=%u%s%s\n",
				       (unsigned long long)e->seq, ty, e->name, (unsigned long long)e->id,
				       e->pid, e->uid, e->gid, e->type == NVB_EVENT_REVOKED ? " reason=" : "",
				       e->type == NVB_EVENT_REVOKED ? re : "");
		}
		fflush(stdout);
	}
	return 0;
}

static int parse_access(const char *s, struct nvb_publish_opts *o)
{
	char *end;

	if (!strcmp(s, "owner"))
		o->access = NVB_ACCESS_OWNER;
	else if (!strcmp(s, "group"))
		o->access = NVB_ACCESS_GROUP;
	else if (!strcmp(s, "scope"))
		o->access = NVB_ACCESS_SCOPE;
	else if (!strncmp(s, "uid:", 4) && s[4]) {
		o->access = NVB_ACCESS_UID;
		o->uid = (uint32_t)strtoul(s + 4, &end, 10);
		if (*end)
			return -1;
	} else if (!strncmp(s, "gid:", 4) && s[4]) {
		o->access = NVB_ACCESS_GID;
		o->gid = (uint32_t)strtoul(s + 4, &end, 10);
		if (*end)
			return -1;
	} else
		return -1;
	return 0;
}

static int read_all(const char *path, unsigned char **buf, size_t *len)
{
	int fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : 0;
	size_t cap = 4096;

	if (fd < 0)
		return -errno;
	*buf = malloc(cap);
	*len = 0;
	for (;;) {
		ssize_t n = -1;
		int err = ENOMEM;

		if (*len == cap) {
			unsigned char *nb = *buf ? realloc(*buf, cap * 2) : NULL;

			if (nb) {
				*buf = nb;
				cap *= 2;
			} else {
				free(*buf);
				*buf = NULL;
			}
		}
		if (*buf) {
			n = read(fd, *buf + *len, cap - *len);
			err = errno;
		}
		if (n < 0) {
			if (fd)
				close(fd);
			free(*buf);
			*buf = NULL;
			return -err;
		}
		if (n == 0)
			break;
		*len += (size_t)n;
	}
	if (fd)
		close(fd);
	return 0;
}

static int cmd_publish(struct nvb *h, const char *name, const char *file, const char *blob,
		       const char *blob_file, const char *access, double hold)
{
	struct nvb_publish_opts o = { .sz = sizeof(o) };
	unsigned char *b = NULL;
	size_t blen = 0;
	uint64_t id;
	int fd = -1, ret;

	if (access && parse_access(access, &o)) {
		fprintf(stderr, "nvbridgectl: bad --access %s\n", access);
		return EX_USAGE;
	}
	if (file) {
		fd = open(file, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "nvbridgectl: %s: %s\n", file, strerror(errno));
			return EX_ERR;
		}
	}
	if (blob) {
		b = (unsigned char *)strdup(blob);
		if (!b) {
			fprintf(stderr, "nvbridgectl: out of memory\n");
			return EX_ERR;
		}
		blen = strlen(blob);
	} else if (blob_file && (ret = read_all(blob_file, &b, &blen))) {
		fprintf(stderr, "nvbridgectl: %s: %s\n", blob_file, strerror(-ret));
		return EX_ERR;
	}
	ret = nvb_publish(h, name, fd, b, blen, &o, &id);
	free(b);
	if (fd >= 0)
		close(fd);	/* the entry holds its own reference */
	if (ret)
		return fail(h, "publish", ret);
	if (json)
		printf("{\"published\":\"%s\",\"id\":%llu}\n", name, (unsigned long long)id);
	else
		printf("published %s id %llu\n", name, (unsigned long long)id);
	fflush(stdout);
	if (hold < 0) {
		while (!stop)
			pause();
	} else {
		struct timespec ts = { (time_t)hold, (long)((hold - (double)(time_t)hold) * 1e9) };

		while (!stop && nanosleep(&ts, &ts) && errno == EINTR)
			;
	}
	return 0;
}

static long expect_uid = -1;	/* --expect-uid */

static int parse_uid(const char *s)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (!*s || *end || v > 0xfffffffeUL || *s == '-') {
		fprintf(stderr, "nvbridgectl: --expect-uid wants a numeric uid, not %s\n", s);
		return -1;
	}
	expect_uid = (long)v;
	return 0;
}

static int cmd_fetch(struct nvb *h, const char *name, int wait, double timeout, const char *out,
		     const char *blob_out)
{
	struct nvb_fetch_opts o = { .sz = sizeof(o), .timeout_ns = -1 };
	struct nvb_info i = { .sz = sizeof(i) };
	struct nvb_entry e;
	unsigned char *b;
	int fd, ret;

	if (wait)
		o.flags |= NVB_FETCH_WAIT;
	if (expect_uid >= 0) {
		o.flags |= NVB_FETCH_EXPECT_UID;
		o.expect_uid = (uint32_t)expect_uid;
	}
	if (timeout >= 0)
		o.timeout_ns = (int64_t)(timeout * 1e9);
	if (nvb_info(h, &i))
		i.max_blob_size = 65536;
	b = malloc(i.max_blob_size + 1);
	if (!b) {
		fprintf(stderr, "nvbridgectl: out of memory\n");
		return EX_ERR;
	}
	ret = nvb_fetch(h, name, &o, b, i.max_blob_size, &e, &fd);
	if (ret == -ENOTUNIQ && !json) {
		free(b);
		fprintf(stderr, "nvbridgectl: fetch: several users publish '%s' that you may fetch; "
			"say whose with --expect-uid UID ('nvbridgectl list' shows their uids)\n", name);
		return EX_NOTUNIQ;
	}
	if (ret) {
		free(b);
		return fail(h, "fetch", ret);
	}
	if (out && fd >= 0) {
		int ofd = strcmp(out, "-") ? open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : 1;
		char buf[65536];
		off_t off = 0;
		ssize_t n;

		if (ofd < 0) {
			fprintf(stderr, "nvbridgectl: %s: %s\n", out, strerror(errno));
			free(b);
			return EX_ERR;
		}
		while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
			if (write(ofd, buf, (size_t)n) != n) {
				n = -1;
				break;
			}
			off += n;
		}
		if (ofd != 1)
			close(ofd);
		if (n < 0) {	/* a short copy is an error, not a smaller file */
			fprintf(stderr, "nvbridgectl: %s: %s\n", out, strerror(errno));
			free(b);
			close(fd);
			return EX_ERR;
		}
	}
	if (blob_out) {
		int bfd = strcmp(blob_out, "-") ? open(blob_out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : 1;

		if (bfd < 0 || write(bfd, b, e.blob_len) != (ssize_t)e.blob_len) {
			fprintf(stderr, "nvbridgectl: %s: %s\n", blob_out, strerror(errno));
			free(b);
			return EX_ERR;
		}
		if (bfd != 1)
			close(bfd);
	}
	if (json) {
		print_entry(&e, 1);
		printf("\n");
	} else if (!(blob_out && !strcmp(blob_out, "-")) && !(out && !strcmp(out, "-"))) {
		printf("%s id %llu pid %u uid %u gid %u access %s file %s blob %u bytes\n", e.name,
		       (unsigned long long)e.id, e.pid, e.uid, e.gid, access_str(e.access),
		       fd >= 0 ? "yes" : "no", e.blob_len);
	}
	if (fd >= 0)
		close(fd);
	free(b);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "backend", required_argument, NULL, 'B' },
		{ "socket", required_argument, NULL, 'S' },
		{ "file", required_argument, NULL, 'f' },
		{ "blob", required_argument, NULL, 'b' },
		{ "blob-file", required_argument, NULL, 'F' },
		{ "access", required_argument, NULL, 'a' },
		{ "for", required_argument, NULL, 'H' },
		{ "wait", no_argument, NULL, 'w' },
		{ "timeout", required_argument, NULL, 't' },
		{ "count", required_argument, NULL, 'c' },
		{ "out", required_argument, NULL, 'o' },
		{ "blob-out", required_argument, NULL, 'O' },
		{ "expect-uid", required_argument, NULL, 'U' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct nvb_opts opts = { .sz = sizeof(opts) };
	const char *file = NULL, *blob = NULL, *blob_file = NULL, *access = NULL, *out = NULL,
		   *blob_out = NULL, *cmd;
	double hold = -1, timeout = -1;
	long count = -1;
	const char *pos[3] = { NULL, NULL, NULL };
	int wait = 0, o, ret, np = 0;
	struct nvb *h;
	struct sigaction sa = { .sa_handler = on_sig };

	/* options anywhere: before the command, between and after its operands */
	while (optind < argc) {
		o = getopt_long(argc, argv, "+jh", lo, NULL);
		if (o == -1) {	/* the command, then at most two operands */
			if (np >= 3) {
				usage(stderr);
				return EX_USAGE;
			}
			pos[np++] = argv[optind++];
			continue;
		}
		switch (o) {
		case 'j': json = 1; break;
		case 'B':
			if (!strcmp(optarg, "kernel"))
				opts.backend = NVB_BACKEND_KERNEL;
			else if (!strcmp(optarg, "broker"))
				opts.backend = NVB_BACKEND_BROKER;
			else if (strcmp(optarg, "auto")) {
				usage(stderr);
				return EX_USAGE;
			}
			break;
		case 'S': opts.socket_path = optarg; break;
		case 'f': file = optarg; break;
		case 'b': blob = optarg; break;
		case 'F': blob_file = optarg; break;
		case 'a': access = optarg; break;
		case 'H': hold = atof(optarg); break;
		case 'w': wait = 1; break;
		case 't': timeout = atof(optarg); break;
		case 'c': count = atol(optarg); break;
		case 'o': out = optarg; break;
		case 'O': blob_out = optarg; break;
		case 'U': if (parse_uid(optarg)) return EX_USAGE; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EX_USAGE;
		}
	}
	if (!np) {
		usage(stderr);
		return EX_USAGE;
	}
	cmd = pos[0];
	argv[0] = (char *)pos[1];
	argv[1] = (char *)pos[2];
	argc = np - 1;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(cmd, "info") && strcmp(cmd, "list") && strcmp(cmd, "watch") &&
	    strcmp(cmd, "publish") && strcmp(cmd, "fetch")) {
		fprintf(stderr, "nvbridgectl: unknown command %s\n", cmd);
		usage(stderr);
		return EX_USAGE;
	}
	if ((!strcmp(cmd, "publish") || !strcmp(cmd, "fetch")) && argc != 1) {
		fprintf(stderr, "nvbridgectl: %s needs exactly one NAME\n", cmd);
		return EX_USAGE;
	}
	ret = nvb_open(&opts, &h);
	if (ret) {
		int c = fail(NULL, "open", ret);

		return ret == -EPROTO ? EX_ABI : c == EX_ERR || c == EX_NOENT ? EX_NOBACKEND : c;
	}
	if (!strcmp(cmd, "info"))
		ret = cmd_info(h);
	else if (!strcmp(cmd, "list"))
		ret = cmd_list(h);
	else if (!strcmp(cmd, "watch"))
		ret = cmd_watch(h, argc ? argv[0] : "", count, timeout);
	else if (!strcmp(cmd, "publish"))
		ret = cmd_publish(h, argv[0], file, blob, blob_file, access, hold);
	else
		ret = cmd_fetch(h, argv[0], wait, timeout, out, blob_out);
	nvb_close(h);
	return ret;
}
