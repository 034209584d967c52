// SPDX-License-Identifier: MIT
/*
 * hostile case newest_not_evicted: at --max-connections, eviction must
 * take only from a tenant holding more than its fair share.
 *
 * The broker's last resort used to be: when no tenant holds more than one
 * connection more than the newcomer, a tenant's first connection takes
 * the newest connection of all.  So a flood of one connection per uid
 * (here root switching among 600 uids in the broker's own user namespace:
 * 600 tenants) evicts whoever connected last, an honest client included:
 * the flood fills the bound, lets one slot go, an honest uid connects
 * into it and publishes, and the flood's next uid takes the honest
 * connection (its entry is revoked with it).  Checked: the honest
 * connection still answers INFO after 20 more flood uids.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include "hostile.h"

#define EV_FLOOD 600
#define EV_MORE 20

static int flood_socks[EV_FLOOD + EV_MORE], nflood;

/* one connection (with HELLO) from each of n new uids, as root with a saved uid of 0 */
static int flood_uids(int n)
{
	int got = 0;

	for (int i = 0; i < n; i++) {
		uid_t u = UID_MANY + 2000 + (uid_t)nflood;
		int s;

		if (setresgid((gid_t)-1, u, 0) || setresuid((uid_t)-1, u, 0))
			return -1;
		s = rconnect();
		if (s >= 0 && rhello(s, -1)) {
			close(s);
			s = -1;
		}
		flood_socks[nflood++] = s;
		got += s >= 0;
		if (setresuid((uid_t)-1, 0, 0) || setresgid((gid_t)-1, 0, 0))
			return -1;
	}
	return got;
}

/* closes one flood connection the broker still holds: a free slot */
static int free_one(void)
{
	for (int i = 0; i < nflood; i++) {
		struct pollfd pf = { .fd = flood_socks[i], .events = POLLIN };

		if (flood_socks[i] < 0 || (poll(&pf, 1, 0) == 1 && (pf.revents & (POLLHUP | POLLERR))))
			continue;
		close(flood_socks[i]);
		flood_socks[i] = -1;
		return 0;
	}
	return -1;
}

/* the attacker: commands from cmd ('f' flood, 'c' free a slot, 'm' more), one byte back each */
static void attacker(int cmd, int res)
{
	struct rlimit rl = { 4096, 4096 };
	char c;

	setrlimit(RLIMIT_NOFILE, &rl);
	while (read(cmd, &c, 1) == 1) {
		int r = c == 'f' ? flood_uids(EV_FLOOD) : c == 'c' ? free_one() : flood_uids(EV_MORE);
		char a = r < 0 ? 'n' : 'y';

		usleep(200000);	/* the broker has handled them */
		if (write(res, &a, 1) != 1)
			break;
	}
	_exit(0);
}

static int info_answered(int s)
{
	struct nvbridge_info i = { .size = sizeof(i) };
	struct nvbridge_wire_hdr h;
	int fd;

	return !rsend(s, NVBRIDGE_WIRE_REQUEST, NVBRIDGE_IOC_INFO, 77, &i, sizeof(i), NULL, 0, -1) &&
	       !rrecv(s, &h, &i, sizeof(i), &fd, 1000) && h.seq == 77 && !h.result;
}

/* the honest uid: connects and publishes ('k' or 'n'), then on 'q' answers 'y' if still served */
static void honest(int cmd, int res)
{
	struct nvbridge_wire_hdr h;
	int s = -1, fd;
	char c = 'n';

	if (!become(UID_HONEST) && (s = rconnect()) >= 0 && !rhello(s, -1) &&
	    !rpublish(s, 1, "ev.honest", -1, NVBRIDGE_ACCESS_SCOPE) &&
	    !rrecv(s, &h, NULL, 0, &fd, 3000) && !h.result)
		c = 'k';
	if (write(res, &c, 1) != 1 || c != 'k' || read(cmd, &c, 1) != 1)
		_exit(1);
	c = info_answered(s) ? 'y' : 'n';
	_exit(write(res, &c, 1) == 1 ? 0 : 1);
}

static pid_t start(void (*fn)(int, int), int *cmd, int *res)
{
	int a[2], b[2];
	pid_t p;

	if (pipe(a) || pipe(b))
		return -1;
	p = fork();
	if (p == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(a[1]);
		close(b[0]);
		fn(a[0], b[1]);
		_exit(0);
	}
	close(a[0]);
	close(b[1]);
	*cmd = a[1];
	*res = b[0];
	return p;
}

static char ask(int cmd, int res, char c)
{
	struct pollfd pf = { .fd = res, .events = POLLIN };

	if (write(cmd, &c, 1) != 1 || poll(&pf, 1, 60000) != 1 || read(res, &c, 1) != 1)
		return 0;
	return c;
}

int t_newest_not_evicted(void)
{
	int acmd, ares, hcmd, hres, ok = 1;
	pid_t att = start(attacker, &acmd, &ares), hon = -1;
	char r;

	if (att < 0 || ask(acmd, ares, 'f') != 'y' || ask(acmd, ares, 'c') != 'y') {
		printf("    the flood did not run\n");
		ok = 0;
		goto out;
	}
	hon = start(honest, &hcmd, &hres);
	r = 0;
	if (hon < 0 || read(hres, &r, 1) != 1 || r != 'k') {
		printf("    the honest uid was not served in the free slot\n");
		ok = 0;
		goto out;
	}
	if (ask(acmd, ares, 'm') != 'y')
		printf("    (the %d more flood uids could not be run)\n", EV_MORE);
	r = ask(hcmd, hres, 'q');
	printf("    honest uid %d, connected in the slot the flood of %d uids left, after %d more "
	       "flood uids: %s\n", UID_HONEST, EV_FLOOD, EV_MORE,
	       r == 'y' ? "still served" : "EVICTED (its entry revoked)");
	ok = r == 'y';
out:
	for (int i = 0; i < 2; i++) {
		pid_t p = i ? hon : att;

		if (p > 0) {
			kill(p, SIGKILL);
			waitpid(p, NULL, 0);
		}
	}
	return ok ? 0 : 1;
}
