// SPDX-License-Identifier: MIT
/*
 * Attack: make nvbridged spin by closing the event socket HELLO handed
 * out, and keeping the connection.
 *
 * The broker's end of a client's event socket (conn.c
 * make_event_socket()) is in its epoll set with no events asked (EPOLLOUT
 * only while events are queued), but epoll reports EPOLLHUP regardless:
 * once the client closes its end, level-triggered, at every epoll_wait().
 * main.c handed a TAG_EV event to ev_flush(), which had nothing to send
 * and left the fd in the set: epoll_wait() returns at once, for ever,
 * while the client stays connected.  One connection from any uid kept a
 * core busy (and, under a CPUQuota, the broker's own share); the hostile
 * suites' own rhello() closes the event socket, so every broker CPU
 * number measured beside a connected rhello() client included this spin
 * (attack_many_gids now uses rhello_keep()).
 *
 * A client of UID_ATTACK connects, says HELLO, closes the event socket and
 * holds the connection for HOLD_MS; the attack worked when the broker used
 * more than CPU_MS_MAX ms of CPU meanwhile (an idle loop uses none).
 *
 * Fixed (main.c): an EPOLLHUP/EPOLLERR on the event socket removes it
 * from the epoll set; ev_flush() drops what is queued, as send() fails.
 * Before: 700 ms of broker CPU over the 1 s held, now 0.
 *
 * Runs as root (becomes a uid) against the broker named in argv[1].
 * Exit 0: the attack worked (a hole); 1: it did not; 2: setup failed.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include "hostile.h"

#define HOLD_MS 1000
#define CPU_MS_MAX 100.0

int main(int argc, char **argv)
{
	int p[2], rc = 2;
	pid_t broker, c;
	double c0, c1;
	char sock[64];

	if (argc < 2 || pipe(p))
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(sock, sizeof(sock), "/tmp/nvb-evhup.%d.sock", getpid());
	unlink(sock);
	broker = start_broker_at(argv[1], sock);
	if (broker <= 0)
		return 2;
	c = fork();
	if (c == 0) {
		int s = -1;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* rhello() closes the event socket it is handed */
		ready_and_wait(p[1], !become(UID_ATTACK) && (s = rconnect()) >= 0 &&
				     !rhello(s, -1));
	}
	if (c < 0 || rready(p[0])) {
		printf("  setup failed\n");
		goto out;
	}
	usleep(50000);
	c0 = cpu_clock_ms(broker);
	usleep(HOLD_MS * 1000);
	c1 = cpu_clock_ms(broker);
	if (c0 < 0 || c1 < 0)
		goto out;
	printf("  broker CPU over %d ms beside one connected client whose event socket is "
	       "closed: %.1f ms (bound %.0f)\n", HOLD_MS, c1 - c0, CPU_MS_MAX);
	rc = c1 - c0 > CPU_MS_MAX ? 0 : 1;
out:
	if (c > 0)
		kill(c, SIGKILL), waitpid(c, NULL, 0);
	kill(broker, SIGTERM);
	waitpid(broker, NULL, 0);
	unlink(sock);
	return rc;
}
