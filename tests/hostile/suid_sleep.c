// SPDX-License-Identifier: MIT
/*
 * Installed setuid root by run-hostile.sh: the program the setuid-exec
 * race execs right after HELLO.  It only has to live a little while (the
 * broker checks that the connecting process is alive) and do nothing.
 */
#include <time.h>

int main(void)
{
	struct timespec ts = { 0, 30 * 1000 * 1000 };

	nanosleep(&ts, 0);
	return 0;
}
