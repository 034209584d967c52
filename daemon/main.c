// SPDX-License-Identifier: MIT
/*
 * nvbridged: the user-space nvbridge broker.  Same semantics as the kernel
 * module (Documentation/semantics.md), over a SOCK_SEQPACKET Unix socket
 * speaking the UAPI structs inside the framing of common/nvb_wire.h.
 * Single-threaded, epoll driven.  main.c: options, setup, the loop;
 * conn.c: connections, framing, replies; ident.c: who a peer is;
 * registry.c: entries and access; events.c: watches and events.
 */
#include "nvbridged.h"

struct config cfg = {
	.socket = "/run/nvbridge/nvbridged.sock",
	.mode = 0666,
	.max_entries_per_user = 1024,
	.max_blob_size = 4096,
	.max_events = 1024,
	.max_watches = 64,
	.max_conns_per_user = 1024,
	.hello_timeout_ms = 5000,
};

uint32_t overflowuid = 65534, overflowgid = 65534;
size_t ev_truesize;	/* SIOCOUTQ bytes per queued event record */
int listen_fd = -1, ep = -1, sig_fd = -1;
bool socket_activated;
uint64_t next_entry_id = 1;
struct stat listen_st;
dev_t nvbridge_rdev;	/* /dev/nvbridge's device number, if any */
dev_t anon_dev;		/* st_dev of anonymous-inode files (io_uring, eventfd...) */
unsigned int total_waiters;
uint64_t msg_gen = 1;	/* bumped per message handled (see pub_alive) */
bool have_pidfd_signal;	/* pidfd_send_signal(sig 0) works here (probed at start) */
unsigned int lost_clients;	/* clients owing an OVERFLOW record */
unsigned int pre_hello;		/* connections that have not said HELLO yet */
int reserve_fd = -1;		/* spent to shed a connection at EMFILE */
int64_t listen_paused_until;	/* no reserve either: accept() again after this */
int64_t last_shed_log;
struct client *clients;
struct entry *entries, **entries_tail = &entries;
unsigned int nclients;

void logmsg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "nvbridged: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- setup ---- */
void measure_truesize(void)
{
	int sv[2], q = 0;
	struct nvbridge_event r = { .size = NVBRIDGE_EVENT_SIZE };

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		return;
	if (send(sv[0], &r, sizeof(r), 0) == sizeof(r) && !ioctl(sv[0], SIOCOUTQ, &q) && q > 0)
		ev_truesize = (size_t)q;
	close(sv[0]);
	close(sv[1]);
}

void read_u32(const char *path, uint32_t *v)
{
	FILE *f = fopen(path, "re");

	if (f) {
		unsigned int x;

		if (fscanf(f, "%u", &x) == 1)
			*v = x;
		fclose(f);
	}
}

int setup_listener(void)
{
	const char *lp = getenv("LISTEN_PID"), *lf = getenv("LISTEN_FDS");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int one = 1, type = 0;
	socklen_t tl = sizeof(type);

	if (lp && lf && atoi(lp) == getpid() && atoi(lf) >= 1) {
		listen_fd = 3;	/* SD_LISTEN_FDS_START */
		if (getsockopt(listen_fd, SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_SEQPACKET) {
			logmsg("LISTEN_FDS: fd 3 is not a SOCK_SEQPACKET socket");
			return -1;
		}
		fcntl(listen_fd, F_SETFD, FD_CLOEXEC);
		socket_activated = true;
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_FDNAMES");
		{
			struct sockaddr_un a;
			socklen_t al = sizeof(a);
			static char path[sizeof(a.sun_path) + 1];

			if (!getsockname(listen_fd, (struct sockaddr *)&a, &al) &&
			    al > offsetof(struct sockaddr_un, sun_path) && a.sun_path[0]) {
				snprintf(path, sizeof(path), "%s", a.sun_path);
				cfg.socket = path;
			}
		}
		if (cfg.verbose)
			logmsg("socket activated: %s", cfg.socket);
	} else {
		char dir[sizeof(sa.sun_path)];
		char *slash;

		if (strlen(cfg.socket) >= sizeof(sa.sun_path)) {
			logmsg("socket path too long: %s", cfg.socket);
			return -1;
		}
		strcpy(sa.sun_path, cfg.socket);
		strcpy(dir, cfg.socket);
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = 0;
			if (mkdir(dir, 0755) && errno != EEXIST) {
				logmsg("mkdir %s: %s", dir, strerror(errno));
				return -1;
			}
		}
		listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (listen_fd < 0)
			return -1;
		/* a stale socket from a dead broker: replace it; a live one: refuse */
		{
			int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

			if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
				logmsg("%s: another nvbridged is listening", cfg.socket);
				close(probe);
				return -1;
			}
			if (probe >= 0)
				close(probe);
		}
		unlink(cfg.socket);
		mode_t old = umask(0777);	/* no window where the socket is too open */

		if (bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa))) {
			umask(old);
			logmsg("bind %s: %s", cfg.socket, strerror(errno));
			return -1;
		}
		umask(old);
		if (cfg.have_group && chown(cfg.socket, (uid_t)-1, cfg.group)) {
			logmsg("chown %s: %s", cfg.socket, strerror(errno));
			return -1;
		}
		if (chmod(cfg.socket, cfg.mode)) {
			logmsg("chmod %s: %s", cfg.socket, strerror(errno));
			return -1;
		}
		/* before listen(): connections inherit the listener's flag at connect() */
		setsockopt(listen_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
		if (listen(listen_fd, 512)) {
			logmsg("listen: %s", strerror(errno));
			return -1;
		}
	}
	/* activated: set it too (accept_client sets it on every connection anyway) */
	setsockopt(listen_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	fstat(listen_fd, &listen_st);
	return 0;
}

void usage(FILE *f)
{
	fprintf(f,
		"usage: nvbridged [options]\n"
		"  --socket PATH            listen on PATH (default /run/nvbridge/nvbridged.sock;\n"
		"                           ignored under systemd socket activation, LISTEN_FDS)\n"
		"  --mode OCTAL             socket mode (default 0666: every request is checked per\n"
		"                           entry, like /dev/nvbridge; 0660 + --group to narrow)\n"
		"  --group NAME|GID         socket group\n"
		"  --max-entries-per-user N (default 1024)\n"
		"  --max-blob-size N        (default 4096, at most %d)\n"
		"  --max-events N           (default 1024)\n"
		"  --max-watches N          (default 64)\n"
		"  --max-connections-per-user N  connections one non-root euid may hold (default 1024)\n"
		"  --hello-timeout-ms N     drop a connection that sends no HELLO by then (default 5000)\n"
		"  -v, --verbose\n"
		"  -h, --help\n", NVBRIDGE_BLOB_MAX);
}

int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 0);

	if (!*s || *end || v < lo || v > hi)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "mode", required_argument, NULL, 'm' },
		{ "group", required_argument, NULL, 'g' },
		{ "max-entries-per-user", required_argument, NULL, 'E' },
		{ "max-blob-size", required_argument, NULL, 'B' },
		{ "max-events", required_argument, NULL, 'V' },
		{ "max-watches", required_argument, NULL, 'W' },
		{ "max-connections-per-user", required_argument, NULL, 'C' },
		{ "hello-timeout-ms", required_argument, NULL, 'H' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	/* the numeric limits, with the module parameters' ranges */
	static const struct limit_opt {
		int opt;
		uint32_t min, max;
		uint32_t *val;
	} limit_opts[] = {
		{ 'E', 1, 1048576, &cfg.max_entries_per_user },
		{ 'B', 0, NVBRIDGE_BLOB_MAX, &cfg.max_blob_size },
		{ 'V', 1, 65536, &cfg.max_events },
		{ 'W', 1, 4096, &cfg.max_watches },
		{ 'C', 1, 1048576, &cfg.max_conns_per_user },
		{ 'H', 1, 3600000, &cfg.hello_timeout_ms },
	};
	struct epoll_event ev;
	sigset_t ss;
	int o;
	bool stop = false;

	while ((o = getopt_long(argc, argv, "s:m:g:vh", lo, NULL)) != -1) {
		uint32_t v;

		switch (o) {
		case 's':
			cfg.socket = optarg;
			break;
		case 'm':
			if (parse_u32(optarg, 0, 0777, &v) || optarg[0] != '0') {
				logmsg("--mode wants an octal mode such as 0660");
				return 2;
			}
			cfg.mode = (mode_t)strtoul(optarg, NULL, 8);
			break;
		case 'g': {
			struct group *gr = getgrnam(optarg);

			if (gr) {
				cfg.group = gr->gr_gid;
			} else if (!parse_u32(optarg, 0, 0xfffffffe, &v)) {
				cfg.group = v;
			} else {
				logmsg("--group %s: no such group", optarg);
				return 2;
			}
			cfg.have_group = true;
			break;
		}
		case 'E': case 'B': case 'V': case 'W': case 'C': case 'H': {
			const struct limit_opt *l = limit_opts;

			while (l->opt != o)
				l++;
			if (parse_u32(optarg, l->min, l->max, l->val))
				goto badval;
			break;
		}
		case 'v':
			cfg.verbose++;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		continue;
badval:
		logmsg("bad value: %s", optarg);
		return 2;
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	{
		/* every client costs ~3 fds and every published file one: use what we may */
		struct rlimit rl;

		if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	read_u32("/proc/sys/kernel/overflowuid", &overflowuid);
	read_u32("/proc/sys/kernel/overflowgid", &overflowgid);
	{
		uint32_t maj = 0, min = 0;
		FILE *f = fopen("/sys/class/misc/nvbridge/dev", "re");

		if (f) {
			if (fscanf(f, "%u:%u", &maj, &min) == 2)
				nvbridge_rdev = makedev(maj, min);
			fclose(f);
		}
	}
	measure_truesize();
	{
		/* sig 0 to ourselves must succeed; a seccomp EPERM/ENOSYS would be ambiguous later */
		int self = (int)syscall(SYS_pidfd_open, getpid(), 0);

		have_pidfd_signal = self >= 0 && syscall(SYS_pidfd_send_signal, self, 0, NULL, 0) == 0;
		if (self >= 0)
			close(self);
		if (!have_pidfd_signal)
			logmsg("pidfd_send_signal unavailable: a publisher's pid reads 0 from its exit, not its reaping");
	}
	{
		struct stat st;
		int efd = eventfd(0, EFD_CLOEXEC);

		if (efd >= 0 && !fstat(efd, &st))
			anon_dev = st.st_dev;
		if (efd >= 0)
			close(efd);
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || setup_listener())
		return 1;
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	sig_fd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
	ev.events = EPOLLIN;
	ev.data.u64 = TAG_LISTEN;
	epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
	ev.data.u64 = TAG_SIGNAL;
	epoll_ctl(ep, EPOLL_CTL_ADD, sig_fd, &ev);
	if (cfg.verbose)
		logmsg("listening on %s (mode %04o)", cfg.socket, (unsigned int)cfg.mode);

	while (!stop) {
		struct epoll_event evs[64];
		int64_t now = now_ns(), next = -1;
		int timeout = -1, n;
		bool overflow_pending = false;

		for (struct client *c = total_waiters || lost_clients ? clients : NULL; c; c = c->next) {
			for (struct waiter *w = c->waiters; w; w = w->next)
				if (w->deadline >= 0 && (next < 0 || w->deadline < next))
					next = w->deadline;
			if (c->lost)
				overflow_pending = true;
		}
		if (next >= 0) {
			int64_t ms = next <= now ? 0 : (next - now) / 1000000 + 1;

			timeout = ms > INT32_MAX ? INT32_MAX : (int)ms;
		}
		if (overflow_pending && (timeout < 0 || timeout > 5))
			timeout = 5;
		if (pre_hello || listen_paused_until) {
			int64_t t = listen_paused_until ? listen_paused_until : INT64_MAX;

			for (struct client *c = pre_hello ? clients : NULL; c; c = c->next)
				if (!c->hello && !c->dead && c->hello_deadline < t)
					t = c->hello_deadline;
			if (t != INT64_MAX) {
				int64_t ms = t <= now ? 0 : (t - now) / 1000000 + 1;

				if (timeout < 0 || ms < timeout)
					timeout = (int)ms;
			}
		}
		n = epoll_wait(ep, evs, 64, timeout);
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;

			if (tag != TAG_LISTEN && tag != TAG_SIGNAL &&
			    ((struct client *)(uintptr_t)(tag & ~(uint64_t)4))->dead)
				continue;
			if (tag == TAG_LISTEN) {
				accept_client();
			} else if (tag == TAG_SIGNAL) {
				struct signalfd_siginfo si;

				if (read(sig_fd, &si, sizeof(si)) == sizeof(si)) {
					logmsg("signal %u: shutting down", si.ssi_signo);
					stop = true;
				}
			} else if (tag & 4) {
				struct client *c = (struct client *)(uintptr_t)(tag & ~(uint64_t)4);

				ev_flush(c);
			} else {
				struct client *c = evs[i].data.ptr;

				if (evs[i].events & EPOLLOUT)
					flush_out(c);
				else if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					client_read(c);
			}
		}
		/* timeouts and overflow records */
		now = now_ns();
		if (listen_paused_until && listen_paused_until <= now) {
			struct epoll_event lev = { .events = EPOLLIN, .data.u64 = TAG_LISTEN };

			epoll_ctl(ep, EPOLL_CTL_MOD, listen_fd, &lev);
			listen_paused_until = 0;
		}
		for (struct client *c = pre_hello ? clients : NULL; c; c = c->next)
			if (!c->hello && !c->dead && c->hello_deadline <= now)
				drop_client(c, "no HELLO within %u ms", cfg.hello_timeout_ms);
		for (struct client *c = total_waiters || lost_clients ? clients : NULL; c; c = c->next) {
			struct waiter *w, *nx;

			for (w = c->waiters; w; w = nx) {
				nx = w->next;
				if (w->deadline >= 0 && w->deadline <= now) {
					reply(c, NVBRIDGE_WIRE_REPLY, NVBRIDGE_IOC_FETCH, w->seq,
					      -ETIMEDOUT, NULL, 0, NULL, 0, -1);
					waiter_free(c, w);
				}
			}
			if (c->lost)
				ev_check_overflow(c);
		}
		for (struct client *c = clients, *nx; c; c = nx) {
			nx = c->next;
			if (c->dead)
				client_free(c);
		}
	}
	while (clients)
		client_free(clients);
	while (entries) {
		struct entry *e = entries;

		entries = e->next;
		entry_free(e);
	}
	close(listen_fd);
	if (!socket_activated)
		unlink(cfg.socket);
	close(sig_fd);
	close(ep);
	if (reserve_fd >= 0)
		close(reserve_fd);
	return 0;
}
