// SPDX-License-Identifier: MIT
/*
 * A tiny PNG writer (stored deflate blocks, CRC-32, Adler-32), a line plot
 * with a log2 x axis, a linear y axis and a 5x7 bitmap font, and heat maps,
 * so that nvbridge-bench draws its charts with no library at all.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "png.h"

struct canvas {
	int w, h;
	uint8_t *px;	/* RGB */
};

static uint32_t crc_table[256];

static void crc_init(void)
{
	uint32_t c;
	int n, k;

	for (n = 0; n < 256; n++) {
		c = (uint32_t)n;
		for (k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[n] = c;
	}
}

static uint32_t crc(uint32_t c, const uint8_t *b, size_t n)
{
	c ^= 0xffffffffu;
	while (n--)
		c = crc_table[(c ^ *b++) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

static void be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static int chunk(FILE *f, const char *type, const uint8_t *data, uint32_t len)
{
	uint8_t hdr[8], tail[4];
	uint32_t c;

	be32(hdr, len);
	memcpy(hdr + 4, type, 4);
	c = crc(0, hdr + 4, 4);
	c = crc(c, data, len);
	be32(tail, c);
	return fwrite(hdr, 1, 8, f) != 8 || (len && fwrite(data, 1, len, f) != len) ||
	       fwrite(tail, 1, 4, f) != 4;
}

static int png_write(const char *path, const struct canvas *cv)
{
	static const uint8_t sig[8] = { 137, 80, 78, 71, 13, 10, 26, 10 };
	size_t raw_len = (size_t)cv->h * (cv->w * 3 + 1), nblk, i, o = 0, r;
	uint8_t ihdr[13], *raw, *z;
	uint32_t a = 1, b = 0;
	int y, err;
	FILE *f;

	crc_init();
	raw = malloc(raw_len);
	nblk = (raw_len + 65534) / 65535;
	z = malloc(raw_len + nblk * 5 + 6);
	if (!raw || !z) {
		free(raw);
		free(z);
		return -1;
	}
	for (y = 0; y < cv->h; y++) {
		raw[(size_t)y * (cv->w * 3 + 1)] = 0;
		memcpy(raw + (size_t)y * (cv->w * 3 + 1) + 1, cv->px + (size_t)y * cv->w * 3,
		       (size_t)cv->w * 3);
	}
	for (i = 0; i < raw_len; i++) {
		a = (a + raw[i]) % 65521;
		b = (b + a) % 65521;
	}
	z[o++] = 0x78;
	z[o++] = 0x01;
	for (i = 0; i < raw_len; i += r) {
		r = raw_len - i > 65535 ? 65535 : raw_len - i;
		z[o++] = (i + r == raw_len);
		z[o++] = r & 0xff;
		z[o++] = r >> 8;
		z[o++] = ~r & 0xff;
		z[o++] = (~r >> 8) & 0xff;
		memcpy(z + o, raw + i, r);
		o += r;
	}
	be32(z + o, (b << 16) | a);
	o += 4;
	be32(ihdr, (uint32_t)cv->w);
	be32(ihdr + 4, (uint32_t)cv->h);
	ihdr[8] = 8;
	ihdr[9] = 2;
	ihdr[10] = ihdr[11] = ihdr[12] = 0;
	f = fopen(path, "wb");
	err = !f;
	if (f) {
		err = fwrite(sig, 1, 8, f) != 8 || chunk(f, "IHDR", ihdr, 13) ||
		      chunk(f, "IDAT", z, (uint32_t)o) || chunk(f, "IEND", NULL, 0);
		err |= fclose(f) != 0;
	}
	free(raw);
	free(z);
	return err ? -1 : 0;
}

static void put(struct canvas *cv, int x, int y, uint32_t rgb)
{
	uint8_t *p;

	if (x < 0 || y < 0 || x >= cv->w || y >= cv->h)
		return;
	p = cv->px + ((size_t)y * cv->w + x) * 3;
	p[0] = rgb >> 16;
	p[1] = rgb >> 8;
	p[2] = rgb;
}

static void line(struct canvas *cv, int x0, int y0, int x1, int y1, uint32_t rgb, int thick)
{
	int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1;
	int sy = y0 < y1 ? 1 : -1, e = dx + dy, t, u;

	for (;;) {
		for (t = -thick / 2; t <= thick / 2; t++)
			for (u = -thick / 2; u <= thick / 2; u++)
				put(cv, x0 + t, y0 + u, rgb);
		if (x0 == x1 && y0 == y1)
			break;
		int e2 = 2 * e;

		if (e2 >= dy) {
			e += dy;
			x0 += sx;
		}
		if (e2 <= dx) {
			e += dx;
			y0 += sy;
		}
	}
}

/* 5x7 glyphs, one byte per row, bit 4 = leftmost column. */
static const char *const font_chars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:/()-+x%";
static const uint8_t font[][7] = {
	{14, 17, 19, 21, 25, 17, 14}, {4, 12, 4, 4, 4, 4, 14}, {14, 17, 1, 2, 4, 8, 31},
	{31, 2, 4, 2, 1, 17, 14}, {2, 6, 10, 18, 31, 2, 2}, {31, 16, 30, 1, 1, 17, 14},
	{6, 8, 16, 30, 17, 17, 14}, {31, 1, 2, 4, 8, 8, 8}, {14, 17, 17, 14, 17, 17, 14},
	{14, 17, 17, 15, 1, 2, 12}, {14, 17, 17, 31, 17, 17, 17}, {30, 17, 17, 30, 17, 17, 30},
	{14, 17, 16, 16, 16, 17, 14}, {28, 18, 17, 17, 17, 18, 28}, {31, 16, 16, 30, 16, 16, 31},
	{31, 16, 16, 30, 16, 16, 16}, {14, 17, 16, 23, 17, 17, 15}, {17, 17, 17, 31, 17, 17, 17},
	{14, 4, 4, 4, 4, 4, 14}, {7, 2, 2, 2, 2, 18, 12}, {17, 18, 20, 24, 20, 18, 17},
	{16, 16, 16, 16, 16, 16, 31}, {17, 27, 21, 21, 17, 17, 17}, {17, 17, 25, 21, 19, 17, 17},
	{14, 17, 17, 17, 17, 17, 14}, {30, 17, 17, 30, 16, 16, 16}, {14, 17, 17, 17, 21, 18, 13},
	{30, 17, 17, 30, 20, 18, 17}, {15, 16, 16, 14, 1, 1, 30}, {31, 4, 4, 4, 4, 4, 4},
	{17, 17, 17, 17, 17, 17, 14}, {17, 17, 17, 17, 17, 10, 4}, {17, 17, 17, 21, 21, 21, 10},
	{17, 17, 10, 4, 10, 17, 17}, {17, 17, 10, 4, 4, 4, 4}, {31, 1, 2, 4, 8, 16, 31},
	{0, 0, 0, 0, 0, 12, 12}, {0, 0, 0, 0, 12, 4, 8}, {0, 12, 12, 0, 12, 12, 0},
	{1, 1, 2, 4, 8, 16, 16}, {2, 4, 8, 8, 8, 4, 2}, {8, 4, 2, 2, 2, 4, 8},
	{0, 0, 0, 31, 0, 0, 0}, {0, 4, 4, 31, 4, 4, 0}, {0, 0, 17, 10, 4, 10, 17},
	{24, 25, 2, 4, 8, 19, 3},
};

static void text(struct canvas *cv, int x, int y, const char *s, uint32_t rgb, int scale)
{
	for (; *s; s++, x += 6 * scale) {
		char c = *s >= 'a' && *s <= 'z' ? (char)(*s - 32) : *s;
		const char *p = strchr(font_chars, c);
		int r, col, i, j;

		if (!p || c == 0)
			continue;
		for (r = 0; r < 7; r++)
			for (col = 0; col < 5; col++)
				if (font[p - font_chars][r] & (16 >> col))
					for (i = 0; i < scale; i++)
						for (j = 0; j < scale; j++)
							put(cv, x + col * scale + i, y + r * scale + j, rgb);
	}
}

static const uint32_t palette[] = {
	0x1f77b4, 0xd62728, 0x2ca02c, 0xff7f0e, 0x9467bd, 0x8c564b, 0xe377c2, 0x17becf,
};

static void size_label(char *buf, size_t len, double bytes)
{
	if (bytes >= 1 << 30)
		snprintf(buf, len, "%gG", bytes / (1 << 30));
	else if (bytes >= 1 << 20)
		snprintf(buf, len, "%gM", bytes / (1 << 20));
	else
		snprintf(buf, len, "%gK", bytes / 1024);
}

int png_plot(const char *path, const char *title, const struct plot_series *s, int ns)
{
	const int W = 1000, H = 640, L = 80, R = 260, T = 50, B = 60;
	struct canvas cv = { W, H, NULL };
	double xmin = 1e300, xmax = 0, ymax = 0, lx0, lx1, v;
	int i, j, x, y, px = 0, py = 0, err;
	char buf[64];

	cv.px = malloc((size_t)W * H * 3);
	if (!cv.px)
		return -1;
	memset(cv.px, 255, (size_t)W * H * 3);
	for (i = 0; i < ns; i++)
		for (j = 0; j < s[i].n; j++) {
			if (s[i].x[j] < xmin)
				xmin = s[i].x[j];
			if (s[i].x[j] > xmax)
				xmax = s[i].x[j];
			if (s[i].y[j] > ymax)
				ymax = s[i].y[j];
		}
	if (xmax <= xmin || ymax <= 0) {
		xmin = 4096;
		xmax = 1 << 30;
		ymax = 100;
	}
	ymax = ymax * 1.1;
	v = 50;
	while (ymax / v > 10)
		v *= 2;
	ymax = (double)((int)(ymax / v) + 1) * v;
	lx0 = log2(xmin);
	lx1 = log2(xmax);
#define PX(xx) (L + (int)((log2(xx) - lx0) / (lx1 - lx0) * (W - L - R)))
#define PY(yy) (H - B - (int)((yy) / ymax * (H - T - B)))
	for (v = 0; v <= ymax + 1e-9; v += ymax / 10) {
		y = PY(v);
		line(&cv, L, y, W - R, y, 0xe0e0e0, 1);
		snprintf(buf, sizeof(buf), "%g", v);
		text(&cv, L - 8 - 6 * 2 * (int)strlen(buf), y - 7, buf, 0x000000, 2);
	}
	for (v = xmin; v <= xmax * 1.001; v *= 4) {
		x = PX(v);
		line(&cv, x, T, x, H - B, 0xe0e0e0, 1);
		size_label(buf, sizeof(buf), v);
		text(&cv, x - 6 * (int)strlen(buf), H - B + 10, buf, 0x000000, 2);
	}
	line(&cv, L, T, L, H - B, 0, 1);
	line(&cv, L, H - B, W - R, H - B, 0, 1);
	text(&cv, L, 15, title, 0, 2);
	text(&cv, (W - R) / 2 - 60, H - 25, "TRANSFER SIZE", 0, 2);
	text(&cv, 5, T - 25, "GB/S", 0, 2);
	for (i = 0; i < ns; i++) {
		uint32_t c = palette[i % 8];

		for (j = 0; j < s[i].n; j++) {
			x = PX(s[i].x[j]);
			y = PY(s[i].y[j]);
			if (j)
				line(&cv, px, py, x, y, c, 3);
			line(&cv, x - 3, y, x + 3, y, c, 3);
			px = x;
			py = y;
		}
		line(&cv, W - R + 15, T + 10 + i * 24, W - R + 40, T + 10 + i * 24, c, 3);
		text(&cv, W - R + 48, T + 4 + i * 24, s[i].label, 0, 2);
	}
#undef PX
#undef PY
	err = png_write(path, &cv);
	free(cv.px);
	return err;
}

static void rect(struct canvas *cv, int x, int y, int w, int h, uint32_t rgb)
{
	int i, j;

	for (j = 0; j < h; j++)
		for (i = 0; i < w; i++)
			put(cv, x + i, y + j, rgb);
}

/* White (t = 0) to dark blue (t = 1). */
static uint32_t shade(double t)
{
	static const int lo[3] = { 0xf7, 0xfb, 0xff }, hi[3] = { 0x08, 0x30, 0x6b };
	uint32_t c = 0;
	int k;

	if (!(t >= 0))
		t = 0;
	if (t > 1)
		t = 1;
	for (k = 0; k < 3; k++)
		c = c << 8 | (uint32_t)(lo[k] + (hi[k] - lo[k]) * t);
	return c;
}

int png_heatmap(const char *path, const char *title, const struct heat_map *m, int nm,
		const int *ids)
{
	const int n = nm ? m[0].n : 0;
	const int cell = n <= 4 ? 80 : n <= 8 ? 56 : 40, L = 70, T = 90, gap = 40;
	const int pw = L + n * cell;
	struct canvas cv;
	char buf[32];
	int p, i, j, err;

	if (n < 1 || n > 64)
		return -1;
	cv.w = 20 + nm * (pw + gap);
	if (cv.w < 700)
		cv.w = 700;
	cv.h = T + n * cell + 60;
	cv.px = malloc((size_t)cv.w * cv.h * 3);
	if (!cv.px)
		return -1;
	memset(cv.px, 255, (size_t)cv.w * cv.h * 3);
	text(&cv, 20, 15, title, 0, 2);
	text(&cv, 20, 40, "ROW: GPU DRIVING THE COPY. COLUMN: GPU OWNING THE BUFFER", 0x555555, 1);
	for (p = 0; p < nm; p++) {
		int x0 = 20 + p * (pw + gap);
		double vmax = 0, vmin = 1e300;
		int ts = cell >= 80 ? 2 : 1;

		for (i = 0; i < n * n; i++)
			if (!isnan(m[p].v[i])) {
				vmax = fmax(vmax, m[p].v[i]);
				vmin = fmin(vmin, m[p].v[i]);
			}
		/* shades span the panel's own range; an even panel is mid blue */
		text(&cv, x0 + L, T - 35, m[p].label, 0, 2);
		snprintf(buf, sizeof(buf), "%.0f - %.0f", vmin < vmax ? vmin : 0, vmax);
		text(&cv, x0 + L, T + n * cell + 12, buf, 0x555555, 1);
		for (i = 0; i < n; i++) {
			snprintf(buf, sizeof(buf), "GPU%d", ids[i]);
			text(&cv, x0, T + i * cell + cell / 2 - 4, buf, 0, 1);
			text(&cv, x0 + L + i * cell + 4, T - 12, buf, 0, 1);
		}
		for (i = 0; i < n; i++)
			for (j = 0; j < n; j++) {
				double v = m[p].v[i * n + j];
				double t = vmax - vmin > 0.01 * vmax ?
					   0.25 + 0.75 * (v - vmin) / (vmax - vmin) : 0.6;
				int x = x0 + L + j * cell, y = T + i * cell;

				if (isnan(v)) {
					rect(&cv, x + 1, y + 1, cell - 2, cell - 2, 0xdddddd);
					continue;
				}
				rect(&cv, x + 1, y + 1, cell - 2, cell - 2, shade(t));
				snprintf(buf, sizeof(buf), "%.0f", v);
				text(&cv, x + (cell - 6 * ts * (int)strlen(buf)) / 2, y + cell / 2 - 4 * ts,
				     buf, t > 0.55 ? 0xffffff : 0, ts);
			}
	}
	err = png_write(path, &cv);
	free(cv.px);
	return err;
}
