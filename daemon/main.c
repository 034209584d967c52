// SPDX-License-Identifier: MIT
/*
 * nvbridged: the user-space nvbridge broker.  Same semantics as the kernel
 * module (Documentation/semantics.md), over a SOCK_SEQPACKET Unix socket
 * speaking the UAPI structs inside the framing of common/nvb_wire.h.
 * Single-threaded, epoll driven; nothing a client sends can block the loop
 * (closer.c closes client files in child processes) or make it walk more than the work the message names.
 *
 * main.c: options, the listening socket, the loop.  conn.c: connections,
 * framing, replies and their bounds; ident.c: who a peer is (fixed at
 * accept); registry.c: entries, access, waiters; events.c: watches and
 * events; closer.c: closing client files off the loop.
 */
#include "nvbridged.h"
#include <getopt.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/fsuid.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>

static int listen_fd = -1, sig_fd = -1;
static bool socket_activated;

static void read_u32(const char *path, uint32_t *v)
{
	FILE *f = fopen(path, "re");

	if (f) {
		unsigned int x;

		if (fscanf(f, "%u", &x) == 1)
			*v = x;
		fclose(f);
	}
}

static int socket_activation(void)
{
	struct sockaddr_un a;
	socklen_t al = sizeof(a);
	static char path[sizeof(a.sun_path) + 1];
	int type = 0;
	socklen_t tl = sizeof(type);

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
	if (!getsockname(listen_fd, (struct sockaddr *)&a, &al) &&
	    al > offsetof(struct sockaddr_un, sun_path) && a.sun_path[0]) {
		snprintf(path, sizeof(path), "%s", a.sun_path);
		cfg.socket = path;
	}
	if (cfg.verbose)
		logmsg("socket activated: %s", cfg.socket);
	return 0;
}

/*
 * The process that listens on the socket probe connected to is alive.
 * A broker killed while one of its closers hangs in a FUSE FLUSH leaves
 * its fd table, the listening socket included, to that closer: connect()
 * succeeds into a backlog nobody accepts (attack fuse_flush, C).  The
 * listener's pid is the process that called listen(): alive, or not.
 */
static bool listener_alive(int probe)
{
	struct ucred cr;
	socklen_t len = sizeof(int);
	int pidfd = -1;

	if (!getsockopt(probe, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len)) {
		struct pollfd pf = { .fd = pidfd, .events = POLLIN };
		bool alive = poll(&pf, 1, 0) == 0;	/* readable: it has exited */

		close(pidfd);
		return alive;
	}
	if (errno != ENOPROTOOPT)
		return errno != EINVAL && errno != ESRCH;	/* no task left: dead */
	len = sizeof(cr);
	if (getsockopt(probe, SOL_SOCKET, SO_PEERCRED, &cr, &len) || cr.pid <= 0)
		return true;	/* cannot tell: as before, refuse */
	return !(kill(cr.pid, 0) && errno == ESRCH);
}

/*
 * The socket is created with its final mode and group, with no path
 * operation after bind(): bind() takes the mode from the socket inode
 * (fchmod() before bind) minus the umask (0 meanwhile) and the group from
 * the fsgid.  A chmod()/chown() by path afterwards would follow a symlink
 * that another user planted at the path in a shared directory.
 */
static int bind_listener(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[sizeof(sa.sun_path)];
	char *slash;
	mode_t old;
	int probe, ret;
	uid_t oldgid = 0;

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
	probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    listener_alive(probe)) {
		logmsg("%s: another nvbridged is listening", cfg.socket);
		close(probe);
		return -1;
	}
	if (probe >= 0)
		close(probe);
	unlink(cfg.socket);	/* removes a symlink itself, never its target */
	if (fchmod(listen_fd, cfg.mode)) {
		logmsg("fchmod: %s", strerror(errno));
		return -1;
	}
	if (cfg.have_group) {
		oldgid = (uid_t)setfsgid(cfg.group);
		if ((gid_t)setfsgid((uid_t)-1) != cfg.group) {	/* the way to ask whether it took */
			logmsg("--group %u: cannot create the socket with that group (not a member, "
			       "no CAP_SETGID)", (unsigned int)cfg.group);
			return -1;
		}
	}
	old = umask(0);
	ret = bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (cfg.have_group)
		setfsgid(oldgid);
	if (ret) {
		logmsg("bind %s: %s", cfg.socket, strerror(errno));
		return -1;
	}
	if (listen(listen_fd, 512)) {
		logmsg("listen: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: nvbridged [options]\n"
		"  --socket PATH            listen on PATH (default /run/nvbridge/nvbridged.sock;\n"
		"                           ignored under systemd socket activation, LISTEN_FDS)\n"
		"  --mode OCTAL             socket mode (default 0666: every request is checked per\n"
		"                           entry, like /dev/nvbridge; 0660 + --group to narrow)\n"
		"  --group NAME|GID         socket group\n"
		"  --publish-chrdev-majors LIST  character devices that may be published, by major\n"
		"                           (comma-separated, default 195: /dev/nvidia*; \"\" for none)\n"
		"limits (per connection, per uid, in total):\n"
		"  --max-entries-per-user N (default 1024)      --max-bytes-per-user N (default 1048576)\n"
		"  --max-blob-size N        (default 4096, at most %d)\n"
		"  --max-events N           event queue per connection (default 1024)\n"
		"  --max-watches N          per connection (default 64)\n"
		"  --max-watches-per-user N (default 65536)\n"
		"  --max-waiters N          parked FETCH_WAITs per connection (default 256)\n"
		"  --max-waiters-per-user N (default 1024)      --max-waiters-total N (default 65536)\n"
		"  --max-connections-per-user N  for a non-root euid (default 256)\n"
		"tenants (a uid and the uids of the user namespaces it owns: a rootless container's\n"
		"subuid range; for peers of our own user namespace, the uid):\n"
		"  --max-connections-per-tenant N  for a peer not euid 0 here (default 256)\n"
		"  --max-bytes-per-tenant N  blob bytes (default 1048576)\n"
		"  --max-waiters-per-tenant N (default 1024)\n"
		"  --max-pending-closes-per-tenant N  closes of files a tenant sent, not completed\n"
		"                           (default 64; as --max-pending-closes-per-user)\n"
		"  --max-connections N      in total (default (RLIMIT_NOFILE - 128) / 4)\n"
		"  --max-queued-replies N   per connection, then it is dropped (default 256)\n"
		"  --max-queued-kb N        their bytes per connection (default 1024)\n"
		"  --max-queued-kb-per-user N  of all connections of a uid (default 16384)\n"
		"  --max-fds-in-flight N    sent and not yet received, per connection (default 64)\n"
		"  --max-fds-in-flight-per-user N (default 256)\n"
		"  --max-pending-closes-per-user N  closes of files a uid sent, not completed: at this\n"
		"                           its connections are not read, new ones refused (default 64)\n"
		"  --max-pending-closes N   in total; uids with closes pending are paused at this\n"
		"                           (default RLIMIT_NOFILE / 8, at least 64)\n"
		"  --max-memory-mb N        queued replies, blobs, event queues (default 1024)\n"
		"  --hello-timeout-ms N     drop a connection that sends no HELLO by then (default 5000)\n"
		"  -v, --verbose\n"
		"  -h, --help\n", NVBRIDGE_BLOB_MAX);
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 0);

	if (!*s || *end || v < lo || v > hi)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int parse_majors(char *s)
{
	cfg.nchrdev_majors = 0;
	for (char *t = strtok(s, ","); t; t = strtok(NULL, ",")) {
		if (cfg.nchrdev_majors == sizeof(cfg.chrdev_majors) / sizeof(cfg.chrdev_majors[0]) ||
		    parse_u32(t, 0, 4095, &cfg.chrdev_majors[cfg.nchrdev_majors]))
			return -1;
		cfg.nchrdev_majors++;
	}
	return 0;
}

static int parse_options(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "mode", required_argument, NULL, 'm' },
		{ "group", required_argument, NULL, 'g' },
		{ "publish-chrdev-majors", required_argument, NULL, 'J' },
		{ "max-entries-per-user", required_argument, NULL, 'E' },
		{ "max-bytes-per-user", required_argument, NULL, 'Y' },
		{ "max-blob-size", required_argument, NULL, 'B' },
		{ "max-events", required_argument, NULL, 'V' },
		{ "max-watches", required_argument, NULL, 'W' },
		{ "max-watches-per-user", required_argument, NULL, 'X' },
		{ "max-waiters", required_argument, NULL, 'a' },
		{ "max-waiters-per-user", required_argument, NULL, 'b' },
		{ "max-waiters-total", required_argument, NULL, 'c' },
		{ "max-connections-per-user", required_argument, NULL, 'C' },
		{ "max-connections-per-tenant", required_argument, NULL, 'T' },
		{ "max-bytes-per-tenant", required_argument, NULL, 'y' },
		{ "max-waiters-per-tenant", required_argument, NULL, 'w' },
		{ "max-connections", required_argument, NULL, 'D' },
		{ "max-queued-replies", required_argument, NULL, 'Q' },
		{ "max-queued-kb", required_argument, NULL, 'K' },
		{ "max-queued-kb-per-user", required_argument, NULL, 'k' },
		{ "max-fds-in-flight", required_argument, NULL, 'F' },
		{ "max-fds-in-flight-per-user", required_argument, NULL, 'G' },
		{ "max-pending-closes-per-user", required_argument, NULL, 'P' },
		{ "max-pending-closes", required_argument, NULL, 'p' },
		{ "max-pending-closes-per-tenant", required_argument, NULL, 'q' },
		{ "max-memory-mb", required_argument, NULL, 'M' },
		{ "hello-timeout-ms", required_argument, NULL, 'H' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	/* the numeric limits, with the module parameters' ranges where it has them */
	static const struct limit_opt {
		int opt;
		uint32_t min, max;
		uint32_t *val;
	} limit_opts[] = {
		{ 'E', 1, 1048576, &cfg.max_entries_per_user },
		{ 'Y', 0, UINT32_MAX, &cfg.max_bytes_per_user },
		{ 'B', 0, NVBRIDGE_BLOB_MAX, &cfg.max_blob_size },
		{ 'V', 1, 65536, &cfg.max_events },
		{ 'W', 1, 4096, &cfg.max_watches },
		{ 'X', 1, 1048576, &cfg.max_watches_per_user },
		{ 'a', 1, 1048576, &cfg.max_waiters },
		{ 'b', 1, 1048576, &cfg.max_waiters_per_user },
		{ 'c', 1, 16777216, &cfg.max_waiters_total },
		{ 'C', 1, 1048576, &cfg.max_conns_per_user },
		{ 'T', 1, 1048576, &cfg.max_conns_per_tenant },
		{ 'y', 0, UINT32_MAX, &cfg.max_bytes_per_tenant },
		{ 'w', 1, 1048576, &cfg.max_waiters_per_tenant },
		{ 'D', 1, 1048576, &cfg.max_conns },
		{ 'Q', 1, 65536, &cfg.max_queued },
		{ 'K', 128, 1048576, &cfg.max_queued_kb },
		{ 'k', 128, 16777216, &cfg.max_queued_kb_per_user },
		{ 'F', 1, 65536, &cfg.max_fds_in_flight },
		{ 'G', 1, 1048576, &cfg.max_fds_in_flight_per_user },
		{ 'P', 1, 1048576, &cfg.max_closes_per_user },
		{ 'p', 1, 1048576, &cfg.max_closes },
		{ 'q', 1, 1048576, &cfg.max_closes_per_tenant },
		{ 'M', 1, 1048576, &cfg.max_memory_mb },
		{ 'H', 1, 3600000, &cfg.hello_timeout_ms },
	};
	int o;

	while ((o = getopt_long(argc, argv, "s:m:g:vh", lo, NULL)) != -1) {
		const struct limit_opt *l = limit_opts;
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
		case 'J':
			if (parse_majors(optarg)) {
				logmsg("--publish-chrdev-majors wants up to 16 numbers, comma-separated");
				return 2;
			}
			break;
		case 'v':
			cfg.verbose++;
			break;
		case 'h':
			usage(stdout);
			return 1;
		case '?':
			usage(stderr);
			return 2;
		default:
			while (l < limit_opts + sizeof(limit_opts) / sizeof(limit_opts[0]) && l->opt != o)
				l++;
			if (l == limit_opts + sizeof(limit_opts) / sizeof(limit_opts[0]) ||
			    parse_u32(optarg, l->min, l->max, l->val)) {
				logmsg("bad value: %s", optarg);
				return 2;
			}
			break;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	return 0;
}

static void probe_host(void)
{
	struct rlimit rl;
	int self;

	/* every client costs ~3 fds and every published file one: use what we may */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	read_u32("/proc/sys/kernel/overflowuid", &overflowuid);
	read_u32("/proc/sys/kernel/overflowgid", &overflowgid);
	/* sig 0 to ourselves must succeed; a seccomp EPERM/ENOSYS would be ambiguous later */
	self = (int)syscall(SYS_pidfd_open, getpid(), 0);
	have_pidfd_signal = self >= 0 && syscall(SYS_pidfd_send_signal, self, 0, NULL, 0) == 0;
	if (self >= 0)
		close(self);
	if (!have_pidfd_signal)
		logmsg("pidfd_send_signal unavailable: a publisher's pid reads 0 from its exit, not its reaping");
}

static void loop(void)
{
	struct epoll_event ev;
	bool stop = false;

	ev.events = EPOLLIN;
	ev.data.u64 = TAG_LISTEN;
	epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
	ev.data.u64 = TAG_SIGNAL;
	epoll_ctl(ep, EPOLL_CTL_ADD, sig_fd, &ev);
	while (!stop) {
		struct epoll_event evs[64];
		int64_t now = now_ns(), next = waiters_next_deadline();
		int timeout = -1, n;

		conns_tick(now, &next);
		closer_tick(now, &next);
		if (next >= 0) {
			int64_t ms = next <= now ? 0 : (next - now) / 1000000 + 1;

			timeout = ms > INT32_MAX ? INT32_MAX : (int)ms;
		}
		/* OVERFLOW records and fds held back wait for the client's reader: look again soon */
		if ((ev_overflow_pending() || conns_throttled()) && (timeout < 0 || timeout > 5))
			timeout = 5;
		n = epoll_wait(ep, evs, 64, timeout);
		/* exits first: a FETCH in the same batch must see its publisher gone */
		for (int i = 0; i < n; i++)
			if (evs[i].data.u64 > TAG_SIGNAL && (evs[i].data.u64 & TAG_PID)) {
				struct client *c = (void *)(uintptr_t)(evs[i].data.u64 & ~(uint64_t)TAG_PID);

				c->exited = true;
				msg_gen++;
			}
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			struct client *c = (struct client *)(uintptr_t)(tag & ~(uint64_t)TAG_EV);

			if (tag == TAG_LISTEN) {
				accept_client(listen_fd);
			} else if (tag == TAG_CLOSER) {
				closer_completions();
			} else if (tag == TAG_SIGNAL) {
				struct signalfd_siginfo si;

				if (read(sig_fd, &si, sizeof(si)) != sizeof(si))
					continue;
				if (si.ssi_signo == SIGCHLD) {
					closer_reap();
				} else {
					logmsg("signal %u: shutting down", si.ssi_signo);
					stop = true;
				}
			} else if ((tag & TAG_PID) || c->dead) {
				continue;
			} else if (tag & TAG_EV) {
				/*
				 * The client closed its end: no reader ever again, and
				 * the EPOLLHUP, level-triggered and reported whatever
				 * was asked, would end every wait at once while it stays
				 * connected (attack_evfd_hangup).  ev_flush() drops what
				 * is queued (send() fails) and its EPOLL_CTL_MOD fails.
				 */
				if (evs[i].events & (EPOLLHUP | EPOLLERR))
					epoll_ctl(ep, EPOLL_CTL_DEL, c->evfd, NULL);
				ev_flush(c);
			} else {
				if (evs[i].events & EPOLLOUT)
					client_write(c);
				if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
					client_read(c);
			}
		}
		now = now_ns();
		waiters_expire(now);
		ev_overflows();
		throttled_tick();
	}
}

int main(int argc, char **argv)
{
	const char *lp = getenv("LISTEN_PID"), *lf = getenv("LISTEN_FDS");
	sigset_t ss;
	int r = parse_options(argc, argv);

	if (r)
		return r == 1 ? 0 : r;
	signal(SIGPIPE, SIG_IGN);
	probe_host();
	if (closer_reserve())	/* may lower RLIMIT_NOFILE: before the limits read it */
		return 1;
	conn_limits_init();
	events_init();
	khash_init();
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || closer_init())
		return 1;
	if (lp && lf && atoi(lp) == getpid() && atoi(lf) >= 1 ? socket_activation() : bind_listener())
		return 1;
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGCHLD);	/* a closer process ended (closer.c) */
	sigprocmask(SIG_BLOCK, &ss, NULL);
	sig_fd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
	if (cfg.verbose)
		logmsg("listening on %s (mode %04o), at most %u connections", cfg.socket,
		       (unsigned int)cfg.mode, cfg.max_conns);
	loop();
	conns_exit();
	/* closes still pending are the closers': they end with us (closer.c) */
	registry_exit();
	closer_exit();
	close(listen_fd);
	if (!socket_activated)
		unlink(cfg.socket);
	close(sig_fd);
	close(ep);
	return 0;
}
