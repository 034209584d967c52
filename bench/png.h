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

/* An n x n matrix drawn as coloured cells with their values (NAN: no value). */
struct heat_map {
	const char *label;
	int n;
	const double *v;	/* row-major */
};

/* Writes nm heat maps side by side; ids label rows and columns.  0 or -1. */
int png_heatmap(const char *path, const char *title, const struct heat_map *m, int nm,
		const int *ids);

#endif
