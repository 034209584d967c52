/* SPDX-License-Identifier: MIT */
#ifndef NVB_BENCH_PNG_H
#define NVB_BENCH_PNG_H

struct plot_series {
	const char *label;	/* short: about 17 characters fit */
	int n;
	const double *x;	/* bytes (log2 axis) */
	const double *y;	/* GB/s */
};

/* Writes a PNG line chart to path.  0 or -1. */
int png_plot(const char *path, const char *title, const struct plot_series *s, int ns);

#endif
