// SPDX-License-Identifier: MIT
/*
 * nvbridge-bench: GPU-to-GPU throughput and latency between two processes
 * that share memory through nvbridge, against the baselines a user would
 * otherwise use, all measured in the same run:
 *   same-process peer copy, legacy CUDA IPC, NCCL send/recv (dlopen of
 *   libnccl.so.2), cuMemcpyBatchAsync for scattered blocks.
 *
 * The parent spawns an exporter (GPU A) and an importer (GPU B); both
 * publish a buffer and import the other's (rendezvous through libnvbridge,
 * or --rdv socketpair for a stand-in).  The importer drives, the exporter
 * follows a fixed script; results stream to the parent as text records.
 */
#define _GNU_SOURCE
#include "bench.h"
#include "seg.h"

struct bench_opt opt = { .gpu_a = 0, .gpu_b = 1, .use_lib = 1, .min_size = 4096, .max_size = GiB,
	.blk_size = 64 * 1024, .blk_count = 1024, .timeout_s = 600, .vmm_parts = 3 };


static void usage(void)
{
	printf("usage: nvbridge-bench [options]\n"
	       "  --gpus A,B          exporter and importer GPUs (default 0,1); with the\n"
	       "                      modes below, the GPUs to use (default: all)\n"
	       "  --rdv nvb|socketpair  rendezvous through libnvbridge (default) or a socketpair stand-in\n"
	       "  --socket PATH       nvbridged socket (default: library default / NVBRIDGE_SOCKET)\n"
	       "  --min-size N --max-size N   sweep bounds in bytes (default 4096 .. 1 GiB, x4 steps)\n"
	       "  --block-size N --block-count N   scattered blocks (default 65536 x 1024)\n"
	       "  --nccl PATH | --no-nccl   libnccl.so.2 to dlopen (default: libnccl.so.2, NVB_NCCL_LIB)\n"
	       "  --json              JSON on stdout instead of the table\n"
	       "  --json-out FILE     also write the JSON to FILE\n"
	       "  (plots: bench/plot FILE.json PREFIX, from --json-out)\n"
	       "  --quick             fewer iterations\n"
	       "  --proxy-ctas N      CTAs of the put proxy (default 0: the library's default)\n"
	       "  --trials N          samples of every figure: median and spread (default 5, --quick 3)\n"
	       "  --same-gpu G        both processes on GPU G (the default on a one-GPU host)\n"
	       "  --no-corun          skip the co-run phase (a bf16 GEMM beside each transfer method)\n"
	       "  --cublas PATH       libcublas to dlopen for the co-run GEMM (default: NVB_CUBLAS_LIB,\n"
	       "                      libcublas.so.13, libcublas.so.12)\n"
	       "  --timeout S         kill the run after S seconds (default 600)\n"
	       "  --vmm-parts K       each trial, open K fresh 1 GiB allocations with raw driver\n"
	       "                      calls: K reservations and K cuMemSetAccess, or one of each,\n"
	       "                      vs K cuIpcOpenMemHandle (bench/phase_vmm.c; default 3, 0: off)\n"

	       "any number of GPUs (one process per GPU; combine freely):\n"
	       "  --all-pairs         every ordered pair: write, read, bidirectional matrices\n"
	       "  --fan-out K,...|all one exporter, K importers reading it at once (all: 1,2,4,..,N-1)\n"
	       "  --many-publishers N each process publishes N buffers, all others import them all\n"
	       "  --pair-size N       bytes per copy for --all-pairs/--fan-out (default 1 GiB)\n"
	       "  --pub-size N        bytes per buffer for --many-publishers (default 16 MiB)\n"
	       "segments and transfer batches against legacy IPC (bench/phase_seg.c):\n"
	       "  --segments N        N processes (2..16), one segment each, all open all; then\n"
	       "                      process 0 moves batches to process 1's segment; the setup:\n"
	       "                      a warm-up trial, then --trials (fresh buffers and names,\n"
	       "                      methods alternating first), median (min-max)\n"
	       "  --seg-size N --seg-batch B --seg-block S --seg-threads T --seg-read-pct R\n"
	       "  --seg-batches K     (defaults 1 GiB, 1024, 64 KiB, 4, 50, 50)\n"
	       "  --seg-sm-ctas N     the library's SM budget (nvb_gpu_opts.sm_ctas; default 0: its own)\n"
	       "  --seg-sm-yield      SM kernels at the lowest stream priority, one CTA a piece\n"
	       "                      (NVB_GPU_OPEN_SM_YIELD; no CTA cap unless --seg-sm-ctas)\n"
	       "a KV cache moved by request (bench/phase_kv.c; alone: --segments 2 without its batches):\n"
	       "  --kv L,B,S          L arrays of B blocks of S bytes a process, array-major (vLLM's\n"
	       "                      paged cache: a [B,S] array for K and one for V a layer, so\n"
	       "                      L = 2 x layers); process 0 pulls k random blocks of every\n"
	       "                      array of process 1's cache: nvb_gpu_xfer_submit, legacy IPC +\n"
	       "                      cuMemcpyDtoDAsync per block, one large copy, NCCL (two GPUs)\n"
	       "  --kv-blocks K,...   blocks per request (default 16,64,256)\n"
	       "  --kv-threads T      host threads (a stream each) for nvbridge and legacy IPC (default 4)\n"
	       "  --kv-requests R     requests per trial, the trial their median (default 5);\n"
	       "                      --trials, --gpus, --nccl, --no-nccl, --json, --json-out apply\n");
}

/* "a,b,c" into v (at most MULTI_MAXG), each >= min, distinct if asked. */
static int parse_list(const char *s, int *v, int *n, int min, int distinct)
{
	char *e;
	int i;

	*n = 0;
	for (;;) {
		long x = strtol(s, &e, 10);

		if (e == s || x < min || x > 1023 || *n == MULTI_MAXG)
			return -1;
		for (i = 0; distinct && i < *n; i++)
			if (v[i] == x)
				return -1;
		v[(*n)++] = (int)x;
		if (!*e)
			return 0;
		if (*e != ',')
			return -1;
		s = e + 1;
	}
}

static uint64_t parse_size(const char *s)
{
	char *e;
	double v = strtod(s, &e);

	if (*e == 'K' || *e == 'k')
		v *= 1024;
	else if (*e == 'M' || *e == 'm')
		v *= MiB;
	else if (*e == 'G' || *e == 'g')
		v *= GiB;
	return (uint64_t)v;
}

/* --kv L,B,S */
static int parse_kv(const char *s, struct seg_opts *so)
{
	unsigned long l, b;
	char *e;

	l = strtoul(s, &e, 10);
	if (e == s || *e != ',' || !l || l > 1024)
		return -1;
	s = e + 1;
	b = strtoul(s, &e, 10);
	if (e == s || *e != ',' || !b || b > (1ul << 20))
		return -1;
	so->kv_layers = (unsigned int)l;
	so->kv_nblocks = (unsigned int)b;
	so->kv_block = parse_size(e + 1);
	if (!so->kv_block || so->kv_block % 256 || so->kv_block > 64 * MiB ||
	    (uint64_t)l * b * so->kv_block > 64 * GiB)
		return -1;
	return 0;
}

/* --kv-blocks K,K,... */
static int parse_kv_blocks(const char *s, struct seg_opts *so)
{
	unsigned long k;
	char *e;
	int i;

	for (so->kv_nk = 0;; s = e + 1) {
		k = strtoul(s, &e, 10);
		if (e == s || !k || k > 65536 || so->kv_nk == KV_MAXK)
			return -1;
		for (i = 0; i < so->kv_nk; i++)	/* one row per size */
			if (so->kv_k[i] == k)
				return -1;
		so->kv_k[so->kv_nk++] = (unsigned int)k;
		if (!*e)
			return 0;
		if (*e != ',')
			return -1;
	}
}

/* What --kv needs of the other options (after all of them are read). */
static int kv_check_opts(const struct seg_opts *so)
{
	int i;

	for (i = 0; i < so->kv_nk; i++)
		if (so->kv_k[i] > so->kv_nblocks) {
			fprintf(stderr, "--kv-blocks: %u blocks per request, but the cache has %u "
				"blocks per array\n", so->kv_k[i], so->kv_nblocks);
			return -1;
		}
	if (!so->kv_threads || so->kv_threads > SEG_MAXT || !so->kv_requests ||
	    so->kv_requests > 64) {
		fprintf(stderr, "--kv-threads: 1..%d; --kv-requests: 1..64\n", SEG_MAXT);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "gpus", 1, 0, 'g' }, { "rdv", 1, 0, 'r' }, { "socket", 1, 0, 'S' },
		{ "min-size", 1, 0, 'm' }, { "max-size", 1, 0, 'M' }, { "block-size", 1, 0, 'b' },
		{ "block-count", 1, 0, 'c' }, { "nccl", 1, 0, 'n' }, { "no-nccl", 0, 0, 'N' },
		{ "json", 0, 0, 'j' }, { "png", 1, 0, 'p' }, { "quick", 0, 0, 'q' },
		{ "timeout", 1, 0, 't' }, { "json-out", 1, 0, 'J' }, { "help", 0, 0, 'h' },
		{ "proxy-ctas", 1, 0, 'P' }, { "all-pairs", 0, 0, 'A' }, { "fan-out", 1, 0, 'F' },
		{ "many-publishers", 1, 0, 'Y' }, { "pair-size", 1, 0, 'Z' }, { "pub-size", 1, 0, 'U' },
		{ "trials", 1, 0, 'T' }, { "same-gpu", 1, 0, 'G' }, { "no-corun", 0, 0, 'C' },
		{ "cublas", 1, 0, 'B' },
		{ "segments", 1, 0, 1000 }, { "seg-size", 1, 0, 1001 }, { "seg-batch", 1, 0, 1002 },
		{ "seg-block", 1, 0, 1003 }, { "seg-threads", 1, 0, 1004 },
		{ "seg-read-pct", 1, 0, 1005 }, { "seg-batches", 1, 0, 1006 },
		{ "kv", 1, 0, 1007 }, { "kv-blocks", 1, 0, 1008 }, { "kv-threads", 1, 0, 1009 },
		{ "kv-requests", 1, 0, 1010 }, { "seg-sm-ctas", 1, 0, 1011 },
		{ "vmm-parts", 1, 0, 1012 }, { "seg-sm-yield", 0, 0, 1013 },
		{ 0, 0, 0, 0 },
	};
	int c, ctl[2], resp[2], st, failed = 0, nrows;
	pid_t pa, pb;
	char tag[32], line[512];
	struct goal_row rows[24];
	double t0 = now_s(), deadline;
	FILE *rf;
	struct multi_opts mo;
	struct seg_opts so = { .seg_size = GiB, .batch = 1024, .block = 64 << 10,
			       .threads = 4, .read_pct = 50, .batches = 50,
			       .kv_k = { 16, 64, 256 }, .kv_nk = 3, .kv_threads = 4,
			       .kv_requests = 5 };
	int multi = 0;

	memset(&mo, 0, sizeof(mo));
	mo.size = GiB;
	mo.pub_size = 16 * MiB;
#ifndef NVB_BENCH_LIB
	opt.use_lib = 0;
#endif
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'g':
			if (parse_list(optarg, mo.gpus, &mo.ngpus, 0, 1)) {
				fprintf(stderr, "--gpus: a list of distinct GPU numbers, e.g. 0,1 or 0,2,3\n");
				return 2;
			}
			break;
		case 'A': mo.all_pairs = multi = 1; break;
		case 'F':
			multi = 1;
			if (!strcmp(optarg, "all")) {
				mo.nfan = 1;
				mo.fan[0] = 0;
			} else if (parse_list(optarg, mo.fan, &mo.nfan, 1, 0)) {
				fprintf(stderr, "--fan-out: 'all' or a list of importer counts >= 1, "
					"e.g. 1,2,4,7\n");
				return 2;
			}
			break;
		case 'Y':
			multi = 1;
			mo.npub = (unsigned int)atoi(optarg);
			if (mo.npub < 1 || mo.npub > MULTI_MAXPUB) {
				fprintf(stderr, "--many-publishers: 1 to %d buffers per process\n",
					MULTI_MAXPUB);
				return 2;
			}
			break;
		case 'Z': mo.size = parse_size(optarg); break;
		case 'U': mo.pub_size = parse_size(optarg); break;
		case 'r':
			opt.use_lib = !strcmp(optarg, "nvb");
#ifndef NVB_BENCH_LIB
			if (opt.use_lib) {
				fprintf(stderr, "built without libnvbridge: only --rdv socketpair\n");
				return 2;
			}
#endif
			break;
		case 'S': opt.socket = optarg; break;
		case 'm': opt.min_size = parse_size(optarg); break;
		case 'M': opt.max_size = parse_size(optarg); break;
		case 'b': opt.blk_size = parse_size(optarg); break;
		case 'c': opt.blk_count = (unsigned int)atoi(optarg); break;
		case 'n': opt.nccl = optarg; break;
		case 'N': opt.no_nccl = 1; break;
		case 'j': opt.json = 1; break;
		case 'J': opt.json_out = optarg; break;
		case 'p':
			fprintf(stderr, "--png: gone; write --json-out FILE and draw it with bench/plot "
				"(matplotlib)\n");
			return 2;
		case 'q': opt.quick = 1; break;
		case 't': opt.timeout_s = atoi(optarg); break;
		case 'P': opt.proxy_ctas = (unsigned int)atoi(optarg); break;
		case 'T':
			opt.trials = (unsigned int)atoi(optarg);
			if (opt.trials < 1 || opt.trials > MAX_SAMPLES) {
				fprintf(stderr, "--trials: 1 to %d\n", MAX_SAMPLES);
				return 2;
			}
			break;
		case 'G':
			opt.gpu_a = opt.gpu_b = atoi(optarg);
			opt.gpus_given = 1;
			break;
		case 'C': opt.no_corun = 1; break;
		case 1012: {
			char *end;
			unsigned long k = strtoul(optarg, &end, 10);

			opt.vmm_parts = (unsigned int)k;
			if (*end || end == optarg || k > VMM_MAXK) {
				fprintf(stderr, "--vmm-parts: 0 to %d allocations\n", VMM_MAXK);
				return 2;
			}
			break;
		}
		case 'B': opt.cublas = optarg; break;
		case 1000: so.nproc = atoi(optarg); break;
		case 1001: so.seg_size = parse_size(optarg); break;
		case 1002: so.batch = (unsigned int)atoi(optarg); break;
		case 1003: so.block = parse_size(optarg); break;
		case 1004: so.threads = (unsigned int)atoi(optarg); break;
		case 1005: so.read_pct = (unsigned int)atoi(optarg); break;
		case 1006: so.batches = (unsigned int)atoi(optarg); break;
		case 1007:
			if (parse_kv(optarg, &so)) {
				fprintf(stderr, "--kv L,B,S: L arrays (1..1024) of B blocks (1..1048576) "
					"of S bytes (a multiple of 256, at most 64 MiB), at most 64 GiB "
					"in all, e.g. 64,1024,32K\n");
				return 2;
			}
			break;
		case 1008:
			if (parse_kv_blocks(optarg, &so)) {
				fprintf(stderr, "--kv-blocks: 1 to %d distinct request sizes in "
					"blocks, each 1..65536, e.g. 16,64,256\n", KV_MAXK);
				return 2;
			}
			break;
		case 1009: so.kv_threads = (unsigned int)atoi(optarg); break;
		case 1010: so.kv_requests = (unsigned int)atoi(optarg); break;
		case 1011: so.sm_ctas = (unsigned int)atoi(optarg); break;
		case 1013: so.sm_yield = 1; break;
		default:
			usage();
			return c == 'h' ? 0 : 2;
		}
	}
	if (so.kv_layers && !so.nproc) {	/* --kv alone: two processes, no transfer phase */
		so.nproc = 2;
		so.kv_only = 1;
	}
	if (so.kv_layers && kv_check_opts(&so))
		return 2;
	if (so.nproc) {
		if (so.nproc < 2 || so.nproc > 16 || so.seg_size < 4096 || so.seg_size > 16 * GiB ||
		    !so.block || so.block > so.seg_size || !so.batch || so.batch > 65536 ||
		    !so.threads || so.threads > SEG_MAXT || so.read_pct > 100 || !so.batches) {
			fprintf(stderr, "--segments: 2..16 processes, --seg-size 4 KiB..16 GiB, "
				"--seg-block within it, --seg-batch 1..65536, --seg-threads 1..%d, "
				"--seg-read-pct 0..100\n", SEG_MAXT);
			return 2;
		}
		if (!opt.use_lib) {
			fprintf(stderr, "--segments: segments rendezvous through libnvbridge only\n");
			return 2;
		}
		so.ngpus = mo.ngpus;
		memcpy(so.gpus, mo.gpus, sizeof(so.gpus));
		so.socket = opt.socket;
		so.json = opt.json;
		so.json_out = opt.json_out;
		so.timeout_s = opt.timeout_s;
		so.trials = opt.trials ? opt.trials : opt.quick ? 3 : 5;
		return seg_main(&so);
	}
	if (multi) {
		if (!opt.use_lib) {
			fprintf(stderr, "the multi-GPU modes rendezvous through libnvbridge only\n");
			return 2;
		}
		/* a GPU holds 3 x pair-size, 5 x while a same-process baseline runs */
		if (mo.size < 4096 || mo.size % 4096 || mo.size > 8 * GiB ||
		    mo.pub_size < 4096 || mo.pub_size % 4096 || mo.pub_size > GiB) {
			fprintf(stderr, "--pair-size and --pub-size: multiples of 4 KiB, "
				"at most 8 GiB and 1 GiB\n");
			return 2;
		}
		if (mo.npub && mo.npub * mo.pub_size > 16 * GiB) {
			fprintf(stderr, "--many-publishers x --pub-size: at most 16 GiB per GPU "
				"(twice that with the legacy IPC copies)\n");
			return 2;
		}
		if (mo.ngpus == 1) {
			fprintf(stderr, "--gpus: the multi-GPU modes need two GPUs or more\n");
			return 2;
		}
		mo.socket = opt.socket;
		mo.json = opt.json;
		mo.json_out = opt.json_out;
		mo.quick = opt.quick;
		mo.timeout_s = opt.timeout_s;
#ifdef NVB_BENCH_LIB
		return multi_main(&mo);
#endif
	}
	if (mo.ngpus) {
		if (mo.ngpus != 2) {
			fprintf(stderr, "--gpus A,B: two GPUs (more only with --all-pairs, "
				"--fan-out, --many-publishers)\n");
			return 2;
		}
		opt.gpu_a = mo.gpus[0];
		opt.gpu_b = mo.gpus[1];
		opt.gpus_given = 1;
	}
	if (!opt.trials)
		opt.trials = opt.quick ? 3 : 5;
	if (opt.min_size < 4 || opt.max_size < opt.min_size || opt.max_size > 4 * GiB ||
	    !opt.blk_size || !opt.blk_count) {
		fprintf(stderr, "bad sizes\n");
		return 2;
	}
	setenv("NCCL_NVLS_ENABLE", "0", 1);
	signal(SIGPIPE, SIG_IGN);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) || pipe2(resp, O_CLOEXEC)) {
		perror("socketpair");
		return 1;
	}
	snprintf(tag, sizeof(tag), "%d", (int)getpid());
	pa = fork();
	if (pa == 0) {
		close(ctl[1]);
		close(resp[0]);
		child(0, ctl[0], resp[1], tag);
	}
	pb = fork();
	if (pb == 0) {
		close(ctl[0]);
		close(resp[0]);
		child(1, ctl[1], resp[1], tag);
	}
	close(ctl[0]);
	close(ctl[1]);
	close(resp[1]);
	rf = fdopen(resp[0], "r");
	deadline = t0 + opt.timeout_s;
	alarm((unsigned int)opt.timeout_s);
	while (fgets(line, sizeof(line), rf)) {
		struct result *r = &results[nresults];
		unsigned long long sz;

		line[strcspn(line, "\n")] = 0;
		if (line[0] == 'R' && nresults < (int)(sizeof(results) / sizeof(results[0])) &&
		    sscanf(line, "R %47s %39s %llu %lf %7s", r->key, r->method, &sz, &r->value, r->unit) >= 4) {
			r->size = sz;
			add_sample(r);
		} else if (!strncmp(line, "I gpus ", 7)) {
			sscanf(line + 7, "%d %d", &opt.gpu_a, &opt.gpu_b);
		} else if (line[0] == 'P') {
			fprintf(stderr, "\r[%5.1fs] %-40s results: %d   ", now_s() - t0, line + 2, nresults);
		} else if (line[0] == 'I') {
			if (!strncmp(line, "I device ", 9))
				scopy(info.device, sizeof(info.device), line + 9);
			else if (!strncmp(line, "I driver ", 9))
				info.driver = atoi(line + 9);
			else if (!strncmp(line, "I kernel ", 9))
				info.kernel = atoi(line + 9);
			else if (!strncmp(line, "I backend ", 10))
				scopy(info.backend, sizeof(info.backend), line + 10);
			else if (!strncmp(line, "I alloc ", 8))
				scopy(info.alloc, sizeof(info.alloc), line + 8);
			else if (!strncmp(line, "I import ", 9))
				scopy(info.import, sizeof(info.import), line + 9);
		} else if (line[0] == 'N') {
			scopy(info.nccl_note, sizeof(info.nccl_note), line + 2);
		} else if (line[0] == 'C') {
			scopy(info.corun_note, sizeof(info.corun_note), line + 2);
		} else if (line[0] == 'E') {
			fprintf(stderr, "\nnvbridge-bench: %s\n", line + 2);
			failed = 1;
			kill(pa, SIGKILL);
			kill(pb, SIGKILL);
		}
		if (now_s() > deadline)
			break;
	}
	alarm(0);
	fprintf(stderr, "\r[%5.1fs] done, %d results%40s\n", now_s() - t0, nresults, "");
	kill(pa, SIGKILL);	/* no-op when they exited */
	kill(pb, SIGKILL);
	waitpid(pa, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		failed = 1;
	waitpid(pb, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		failed = 1;
	if (!info.backend[0])
		snprintf(info.backend, sizeof(info.backend), "socketpair stand-in");
	finish_samples();
	invalidate_impossible();
	nrows = build_goals(rows);
	if (opt.json) {
		print_json(stdout, rows, nrows);
	} else {
		char date[64];
		time_t t = time(NULL);

		strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&t));
		printf("nvbridge-bench: %s, GPU %d (exporter) <-> GPU %d (importer)%s, driver %d.%d, %s\n",
		       info.device, opt.gpu_a, opt.gpu_b,
		       opt.gpu_a == opt.gpu_b ? " (two processes on one GPU)" : "",
		       info.driver / 1000, (info.driver % 1000) / 10, date);
		printf("rendezvous: %s; allocation: %s; import via %s; SM kernel: %s\n",
		       info.backend, info.alloc, info.import, info.kernel ? "yes" : "no");
		if (info.nccl_note[0])
			printf("%s\n", info.nccl_note);
		if (info.corun_note[0])
			printf("%s\n", info.corun_note);
		if (invalid_note[0])
			printf("INVALID (above the link's copy rate, excluded): %s\n", invalid_note);
		printf("\n");
		print_goals(stdout, rows, nrows);
		print_sweep(stdout);
		print_blocks(stdout);
		print_corun(stdout);
		print_vmm(stdout);
	}
	if (opt.json_out) {
		FILE *jf = fopen(opt.json_out, "w");

		if (jf) {
			print_json(jf, rows, nrows);
			fclose(jf);
		} else {
			perror(opt.json_out);
		}
	}
	if (!opt.no_corun && !failed && !find("corun_gemm_tflops", "solo", 0)) {
		fprintf(stderr, "nvbridge-bench: the co-run phase did not run: %s\n",
			info.corun_note[0] ? info.corun_note : "no reason reported");
		failed = 1;
	}
	if (!nresults && !failed) {
		fprintf(stderr, "nvbridge-bench: no results\n");
		failed = 1;
	}
	return failed;
}

