// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench: the parent's side: samples into medians and spreads,
 * goals, tables, JSON.
 */
#define _GNU_SOURCE
#include "bench.h"

struct bench_info info;
struct result results[2048];
int nresults;
const char *json_extra;

void scopy(char *d, size_t n, const char *s)
{
	size_t l = strlen(s);

	if (l >= n)
		l = n - 1;
	memcpy(d, s, l);
	d[l] = 0;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* r (in the free slot) is one sample: a new figure or one more sample of one. */
void add_sample(struct result *r)
{
	struct result *e = NULL;
	int i;

	for (i = 0; i < nresults; i++)
		if (!strcmp(results[i].key, r->key) && !strcmp(results[i].method, r->method) &&
		    results[i].size == r->size) {
			e = &results[i];
			break;
		}
	if (!e) {
		e = r;
		e->n = 0;
		nresults++;
	}
	if (e->n < MAX_SAMPLES)
		e->v[e->n++] = r->value;
}

/* value = median of the samples; min and max kept for the spread. */
void finish_samples(void)
{
	int i;

	for (i = 0; i < nresults; i++) {
		struct result *r = &results[i];
		double t[MAX_SAMPLES];

		memcpy(t, r->v, sizeof(double) * (size_t)r->n);
		qsort(t, (size_t)r->n, sizeof(double), cmp_dbl);
		r->min = t[0];
		r->max = t[r->n - 1];
		r->value = r->n % 2 ? t[r->n / 2] : (t[r->n / 2 - 1] + t[r->n / 2]) / 2;
	}
}

/* "1.23 (1.1-1.4)": median and the range of the samples. */
static const char *med_spread(const struct result *r, char *buf, size_t n)
{
	if (r->n > 1)
		snprintf(buf, n, "%.3g (%.3g-%.3g)", r->value, r->min, r->max);
	else
		snprintf(buf, n, "%.3g", r->value);
	return buf;
}

const struct result *find(const char *key, const char *method, uint64_t size)
{
	int i;

	for (i = 0; i < nresults; i++)
		if (!strcmp(results[i].key, key) && !strcmp(results[i].method, method) &&
		    (size == 0 || results[i].size == size))
			return &results[i];
	return NULL;
}

/* Best nvbridge-* value for key/size (max for GB/s, min for times). */
static const struct result *best(const char *key, uint64_t size, int lower_is_better)
{
	const struct result *b = NULL;
	int i;

	for (i = 0; i < nresults; i++) {
		const struct result *r = &results[i];

		if (strcmp(r->key, key) || r->size != size || strncmp(r->method, "nvbridge", 8) ||
		    strchr(r->method, '!'))
			continue;
		if (!b || (lower_is_better ? r->value < b->value : r->value > b->value))
			b = r;
	}
	return b;
}

/*
 * A one-way transfer rate above what the link carries (a 1 GiB
 * same-process copy, same run) is a broken measurement, not a result: mark
 * it ('!' suffix), keep it out of the goals, and say so.
 */
char invalid_note[512];

void invalidate_impossible(void)
{
	int i;

	for (i = 0; i < nresults; i++) {
		struct result *r = &results[i];
		const struct result *w;

		if (strcmp(r->key, "xfer") || strncmp(r->method, "nvbridge", 8))
			continue;
		w = find("write", "same-process", GiB);
		if (w && r->value > 1.02 * w->value && strlen(r->method) + 2 < sizeof(r->method)) {
			size_t n = strlen(invalid_note);

			snprintf(invalid_note + n, sizeof(invalid_note) - n, "%s%s@%lluB %.0f GB/s",
				 n ? ", " : "", r->method, (unsigned long long)r->size, r->value);
			strcat(r->method, "!");
		}
	}
}


void print_goals(FILE *f, struct goal_row *rows, int n)
{
	int i;

	fprintf(f, "values: median (min-max) of %u trials\n", opt.trials);
	fprintf(f, "%-40s %-28s %26s  %-22s %26s %8s  %-22s %s\n", "metric", "nvbridge (method)",
		"value", "baseline", "value", "ratio", "goal", "met");
	for (i = 0; i < n; i++) {
		struct goal_row *r = &rows[i];
		char nv[56] = "-", bv[56] = "-", ra[16] = "-";

		char t[40];

		if (r->nvb)
			snprintf(nv, sizeof(nv), "%s %s", med_spread(r->nvb, t, sizeof(t)), r->nvb->unit);
		if (r->base)
			snprintf(bv, sizeof(bv), "%s %s", med_spread(r->base, t, sizeof(t)), r->base->unit);
		if (r->ratio > 0)
			snprintf(ra, sizeof(ra), "%.2fx", r->ratio);
		fprintf(f, "%-40s %-28s %26s  %-22s %26s %8s  %-22s %s\n", r->metric,
			r->nvb ? r->nvb->method : "-", nv, r->base_name, bv, ra, r->goal,
			r->met < 0 ? "n/a" : r->met ? "yes" : "NO");
	}
}

int build_goals(struct goal_row *rows)
{
	const struct result *n, *b;
	int k = 0;
	char key[48];

#define ROW(m, nv, bs, bn, rt, g, mt) do { rows[k].metric = (m); rows[k].nvb = (nv); \
	rows[k].base = (bs); rows[k].base_name = (bn); rows[k].ratio = (rt); \
	rows[k].goal = (g); rows[k].met = (mt); k++; } while (0)
	n = best("write", GiB, 0);
	b = find("write", "same-process", GiB);
	ROW("cross-process write, 1 GiB", n, b, "same-process copy",
	    n && b ? n->value / b->value : 0, ">= 0.99x", n && b ? n->value >= 0.99 * b->value : -1);
	n = best("read", GiB, 0);
	b = find("read", "same-process", GiB);
	ROW("cross-process read, 1 GiB", n, b, "same-process copy",
	    n && b ? n->value / b->value : 0, ">= 0.99x", n && b ? n->value >= 0.99 * b->value : -1);
	n = best("bidir", GiB, 0);
	b = find("bidir", "same-process", GiB);
	ROW("bidirectional, 1 GiB each way (total)", n, b, "same-process both push",
	    n && b ? n->value / b->value : 0, ">= 0.99x", n && b ? n->value >= 0.99 * b->value : -1);
	snprintf(key, sizeof(key), "blocks_write_%u", opt.blk_count);
	n = find(key, "nvbridge-auto", 65536);
	b = find("write", "same-process", GiB);
	/* against the same run's link rate: the batch baseline swings 2x between runs */
	ROW("1024 x 64 KiB scattered blocks, one call", n, b, "1 GiB same-process copy",
	    n && b ? n->value / b->value : 0, ">= 0.95x", n && b ? n->value >= 0.95 * b->value : -1);
	n = best("put4k_us", 4096, 1);
	ROW("4 KiB put, pipelined", n, NULL, "-", 0, "<= 1.9 us", n ? n->value <= 1.9 : -1);
	n = best("put_signal_us", 4096, 1);
	b = find("put_signal_us", "nccl", 4096);
	ROW("4 KiB put + completion seen by peer", n, b, "NCCL send/recv",
	    n && b ? b->value / n->value : 0, "<= 6 us", n ? n->value <= 6 : -1);
	n = best("xfer", MiB, 0);
	b = find("xfer", "nccl", MiB);
	ROW("1 MiB transfer + completion", n, b, "NCCL send/recv",
	    n && b ? n->value / b->value : 0, ">= 4x NCCL", n && b ? n->value >= 4 * b->value : -1);
	n = best("xfer", 16 * MiB, 0);
	b = find("xfer", "nccl", 16 * MiB);
	ROW("16 MiB transfer + completion", n, b, "NCCL send/recv",
	    n && b ? n->value / b->value : 0, ">= 1.25x NCCL", n && b ? n->value >= 1.25 * b->value : -1);
	n = find("import_ms", "nvbridge-late", 0);
	b = find("import_ms", "legacy-ipc", 0);
	ROW("first import + map, 1 GiB (same point)", n, b, "cuIpcOpenMemHandle",
	    n && b ? b->value / n->value : 0, "<= legacy IPC", n && b ? n->value <= b->value : -1);
	n = find("import_ms", "nvbridge", 0);
	ROW("first import, first thing in the process", n, b, "cuIpcOpenMemHandle",
	    n && b ? b->value / n->value : 0, "(information)", -1);
	n = find("reimport_us", "nvbridge", 0);
	ROW("cached re-import", n, NULL, "-", 0, "<= 5 us", n ? n->value <= 5 : -1);
#undef ROW
	return k;
}

void print_sweep(FILE *f)
{
	static const char *cols[][2] = {
		{ "write", "nvbridge-ce" }, { "write", "nvbridge-ce-4streams" }, { "write", "nvbridge-sm" },
		{ "write", "nvbridge-hybrid20" }, { "write", "same-process" }, { "read", "nvbridge-ce" },
		{ "read", "nvbridge-sm" }, { "read", "nvbridge-hybrid20" },
		{ "read", "same-process" }, { "bidir", "nvbridge-ce" }, { "bidir", "nvbridge-hybrid20" }, { "bidir", "same-process" },
		{ "xfer", "nvbridge-ce" }, { "xfer", "nvbridge-ce-pipe" }, { "xfer", "nvbridge-sm" },
		{ "xfer", "nvbridge-proxy" }, { "xfer", "nccl" },
	};
	uint64_t s;
	size_t c;
	char buf[32];

	fprintf(f, "\nGB/s by size (xfer = n one-way transfers, each with a completion flag: first issue by the\n"
		"sender to the last flag seen by the receiver, host monotonic clock)\n");
	fprintf(f, "%-9s", "size");
	for (c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
		snprintf(buf, sizeof(buf), "%s/%s", cols[c][0], cols[c][1]);
		fprintf(f, " %*s", (int)(strlen(buf) > 10 ? strlen(buf) : 10), buf);
	}
	fprintf(f, "\n");
	for (s = opt.min_size; s <= opt.max_size; s *= 4) {
		fmt_size(buf, sizeof(buf), s);
		fprintf(f, "%-9s", buf);
		for (c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
			const struct result *r = find(cols[c][0], cols[c][1], s);
			char h[48];
			int w;

			snprintf(h, sizeof(h), "%s/%s", cols[c][0], cols[c][1]);
			w = (int)(strlen(h) > 10 ? strlen(h) : 10);
			if (r)
				fprintf(f, " %*.1f", w, r->value);
			else
				fprintf(f, " %*s", w, "-");
		}
		fprintf(f, "\n");
	}
}

void print_blocks(FILE *f)
{
	int i;

	char t[40];

	fprintf(f, "\nscattered blocks (%u per call), GB/s, median (min-max)\n", opt.blk_count);
	fprintf(f, "%-22s %-10s %-22s %10s\n", "direction", "block", "method", "GB/s");
	for (i = 0; i < nresults; i++) {
		char b[32];

		if (strncmp(results[i].key, "blocks_", 7))
			continue;
		fmt_size(b, sizeof(b), results[i].size);
		fprintf(f, "%-22s %-10s %-22s %24s\n", results[i].key + 7, b, results[i].method,
			med_spread(&results[i], t, sizeof(t)));
	}
	fprintf(f, "\nlatencies\n");
	for (i = 0; i < nresults; i++)
		if (!strcmp(results[i].unit, "us") || !strcmp(results[i].unit, "ms"))
			if (strcmp(results[i].key, "xfer_us"))
				fprintf(f, "%-22s %-24s %24s %s\n", results[i].key,
					results[i].method, med_spread(&results[i], t, sizeof(t)),
					results[i].unit);
}

/* Both sides of the co-run phase: what the transfer gets, what it costs the GEMM. */
void print_corun(FILE *f)
{
	const struct result *solo = find("corun_gemm_tflops", "solo", 0);
	char a[40], b[56], c[56];
	int i;

	if (!solo)
		return;
	fprintf(f, "\nco-run: a bf16 GEMM (8192^3, cuBLAS) on the importer's GPU beside each method\n"
		"GEMM alone: %s TFLOP/s; median (min-max) of %u trials\n",
		med_spread(solo, a, sizeof(a)), opt.trials);
	fprintf(f, "%-34s %24s %24s %24s %s\n", "method", "GEMM vs alone", "transfer alone",
		"transfer beside GEMM", "goal GEMM >= 0.95x");
	for (i = 0; i < nresults; i++) {
		const struct result *r = &results[i], *x, *y;
		int lat;

		if (strcmp(r->key, "corun_gemm_ratio"))
			continue;
		lat = find("solo_lat_us", r->method, 0) != NULL;
		x = find(lat ? "solo_lat_us" : "solo_xfer_GBs", r->method, 0);
		y = find(lat ? "corun_lat_us" : "corun_xfer_GBs", r->method, 0);
		strcpy(b, "-");
		strcpy(c, "-");
		if (x)
			snprintf(b, sizeof(b), "%s %s", med_spread(x, a, sizeof(a)), x->unit);
		if (y)
			snprintf(c, sizeof(c), "%s %s", med_spread(y, a, sizeof(a)), y->unit);
		fprintf(f, "%-34s %24s %24s %24s %s\n", r->method, med_spread(r, a, sizeof(a)), b, c,
			r->value >= 0.95 ? "yes" : "NO");
	}
}

/* phase_vmm.c: where opening K allocations goes, per variant (us, sums over the K). */
void print_vmm(FILE *f)
{
	static const char *const methods[] = { "separate", "one-reservation", "legacy-ipc" };
	static const char *const keys[] = { "vmm_import_us", "vmm_reserve_us", "vmm_map_us",
					    "vmm_access_us", "vmm_total_us" };
	const struct result *ve = find("vmm_export_us", "nvbridge", 0);
	const struct result *ge = find("vmm_export_us", "legacy-ipc", 0);
	char a[40];
	unsigned int m, k;

	if (!ve || !ge)
		return;
	fprintf(f, "\nopening %u fresh allocations of 1 GiB, raw driver calls, us summed over them;\n"
		"median (min-max) of %d trials, the variant that goes first alternating\n",
		(unsigned int)(ve->size / GiB), ve->n);
	fprintf(f, "%-16s %22s %22s %22s %22s %22s\n", "variant", "import", "reserve", "map",
		"cuMemSetAccess", "total");
	for (m = 0; m < 3; m++) {
		fprintf(f, "%-16s", methods[m]);
		for (k = 0; k < 5; k++) {
			const struct result *r = find(keys[k], methods[m], 0);

			fprintf(f, " %22s", r ? med_spread(r, a, sizeof(a)) : "-");
		}
		fprintf(f, "\n");
	}
	fprintf(f, "legacy-ipc is %u x cuIpcOpenMemHandle (its total); the exporter's side: "
		"nvb_gpu_export %s us,", (unsigned int)(ve->size / GiB), med_spread(ve, a, sizeof(a)));
	fprintf(f, " cuIpcGetMemHandle %s us\n", med_spread(ge, a, sizeof(a)));
}

/* A JSON number, or null for what JSON cannot write (inf, nan: a rate timed at zero). */
static const char *jnum(char *buf, size_t len, const char *fmt, double v)
{
	if (!isfinite(v))
		return "null";
	snprintf(buf, len, fmt, v);
	return buf;
}

void print_json(FILE *f, struct goal_row *rows, int n)
{
	char j1[32], j2[32], j3[32];
	char date[64];
	time_t t = time(NULL);
	int i;

	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
	fprintf(f, "{\n  \"device\": \"%s\",\n  \"driver\": %d,\n  \"date\": \"%s\",\n"
		"  \"backend\": \"%s\",\n  \"alloc\": \"%s\",\n  \"import\": \"%s\",\n"
		"  \"gpus\": [%d, %d],\n  \"sm_kernel\": %d,\n  \"nccl_note\": \"%s\",\n"
		"  \"trials\": %u,\n  \"corun_note\": \"%s\",\n%s"
		"  \"goals\": [\n", info.device, info.driver, date, info.backend, info.alloc,
		info.import, opt.gpu_a, opt.gpu_b, info.kernel, info.nccl_note, opt.trials,
		info.corun_note, json_extra ? json_extra : "");
	for (i = 0; i < n; i++)
		fprintf(f, "    {\"metric\": \"%s\", \"method\": \"%s\", \"value\": %s, "
			"\"baseline\": \"%s\", \"baseline_value\": %s, \"ratio\": %s, "
			"\"goal\": \"%s\", \"met\": %s}%s\n", rows[i].metric,
			rows[i].nvb ? rows[i].nvb->method : "",
			jnum(j1, sizeof(j1), "%.6g", rows[i].nvb ? rows[i].nvb->value : 0),
			rows[i].base_name,
			jnum(j2, sizeof(j2), "%.6g", rows[i].base ? rows[i].base->value : 0),
			jnum(j3, sizeof(j3), "%.4g", rows[i].ratio),
			rows[i].goal, rows[i].met < 0 ? "null" : rows[i].met ? "true" : "false",
			i + 1 < n ? "," : "");
	fprintf(f, "  ],\n  \"results\": [\n");
	for (i = 0; i < nresults; i++)
		fprintf(f, "    {\"metric\": \"%s\", \"method\": \"%s\", \"size\": %llu, "
			"\"value\": %s, \"min\": %s, \"max\": %s, \"n\": %d, \"unit\": \"%s\"}%s\n",
			results[i].key, results[i].method, (unsigned long long)results[i].size,
			jnum(j1, sizeof(j1), "%.6g", results[i].value),
			jnum(j2, sizeof(j2), "%.6g", results[i].min),
			jnum(j3, sizeof(j3), "%.6g", results[i].max),
			results[i].n, results[i].unit, i + 1 < nresults ? "," : "");
	fprintf(f, "  ]\n}\n");
}
