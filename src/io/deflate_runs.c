/*
 * io/deflate_runs.c: a zlib stream of data made of byte runs (byte-shuffled label chunks), in
 * one pass and a few table builds.
 *
 * A label volume written with the shuffle and deflate filters is, per chunk, byte planes of
 * long runs: the high planes are all zero, the low ones change where a segment ends. zlib's
 * level 4 searches every byte position for matches: 2.5 s for the 1 GB of a 512^3 uint64
 * segmentation (its Z_RLE strategy 1.2 s), more than the segmentation takes. Here a run is found
 * 8 bytes a step, coded as one literal and distance-1 matches of up to 258 bytes (what Z_RLE
 * finds), and its Adler-32 share is computed in closed form; then one deflate block with its
 * own Huffman codes (RFC 1951 §3.2.7) is written from the token counts. The stream is
 * ordinary zlib, so libhdf5's filter and h5py read it; its size is that of Z_RLE's.
 */
#include "io/deflate_runs.h"

#include <stdbool.h>
#include <string.h>
#include <zlib.h>

enum {
    ADLER_MOD = 65521,
    MAX_MATCH = 258,
    NLIT = 286, /* literal/length symbols: 0-255 bytes, 256 end of block, 257-285 lengths */
    NCL = 19,   /* code-length symbols */
    LIT_LIMIT = 15,
    CL_LIMIT = 7,
    TOK_MATCH = 256,     /* a token t >= 256 is a match of t - 256 + 3 bytes */
    BLOCK_TOKENS = 16384 /* as zlib's (memLevel 8) */
};

static const uint16_t len_base[29] = {3,  4,  5,  6,   7,   8,   9,   10,  11, 13,
                                      15, 17, 19, 23,  27,  31,  35,  43,  51, 59,
                                      67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
/* The order in which the code-length code's lengths are sent. */
static const uint8_t cl_order[NCL] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                      11, 4,  12, 3, 13, 2, 14, 1, 15};

struct runs {
    uint16_t *tok;
    size_t ntok, cap;
    uint32_t a, b; /* Adler-32 so far (fast path) */
};

/* A run of `len` >= 1 bytes c as tokens: the literal, then matches at distance 1 (the last
 * one or two bytes as literals where a match would be shorter than 3). */
static inline bool runs_add(struct runs *r, uint8_t c, size_t len)
{
    size_t rem = len - 1;
    if (r->ntok + 3 + rem / MAX_MATCH > r->cap)
        return false;
    uint16_t *t = r->tok + r->ntok;
    *t++ = c;
    for (; rem >= MAX_MATCH; rem -= MAX_MATCH)
        *t++ = TOK_MATCH + MAX_MATCH - 3;
    if (rem >= 3)
        *t++ = (uint16_t)(TOK_MATCH + rem - 3);
    else
        for (; rem; rem--)
            *t++ = c;
    r->ntok = (size_t)(t - r->tok);
    return true;
}

/* Adler-32 after `n` more bytes c: a += n c, b += n a + c n (n + 1) / 2 (mod 65521). */
static inline void adler_run(uint32_t *a, uint32_t *b, uint32_t c, uint64_t n)
{
    uint64_t nm = n % ADLER_MOD;
    uint64_t tri =
        n % 2 == 0 ? (n / 2 % ADLER_MOD) * ((n + 1) % ADLER_MOD) : nm * ((n + 1) / 2 % ADLER_MOD);
    *b = (uint32_t)((*b + nm * *a + tri % ADLER_MOD * c) % ADLER_MOD);
    *a = (uint32_t)((*a + nm * c) % ADLER_MOD);
}

/* The end of the run that starts at i: the first j > i with s[j] != s[i], or n. */
static inline size_t run_end(const uint8_t *s, size_t i, size_t n)
{
    const uint64_t pat = 0x0101010101010101ull * s[i];
    size_t j = i + 1;
    uint64_t w[4];
    if (j + 8 <= n && (memcpy(w, s + j, 8), w[0] == pat)) /* long runs: 32 bytes a step */
        for (j += 8; j + 32 <= n; j += 32) {
            memcpy(w, s + j, sizeof w);
            if ((w[0] ^ pat) | (w[1] ^ pat) | (w[2] ^ pat) | (w[3] ^ pat))
                break;
        }
    for (; j + 8 <= n; j += 8) {
        memcpy(w, s + j, 8);
        if (w[0] != pat)
            return j + (size_t)(__builtin_ctzll(w[0] ^ pat) >> 3); /* little-endian */
    }
    while (j < n && s[j] == s[i])
        j++;
    return j;
}

static size_t run_end_ref(const uint8_t *s, size_t i, size_t n)
{
    size_t j = i + 1;
    while (j < n && s[j] == s[i])
        j++;
    return j;
}

/* Code lengths of a Huffman code for f[0, n) (0 for unused symbols); at least two used.
 * Returns the longest. Two queues: the leaves by weight, the merged nodes as made. */
static int huff_build(const uint32_t *f, int n, uint8_t *len)
{
    int sym[NLIT], m = 0;
    for (int i = 0; i < n; i++) {
        len[i] = 0;
        if (!f[i])
            continue;
        int k = m++; /* insertion sort by (weight, symbol) */
        for (; k > 0 && f[sym[k - 1]] > f[i]; k--)
            sym[k] = sym[k - 1];
        sym[k] = i;
    }
    uint64_t w[2 * NLIT];
    int parent[2 * NLIT], depth[2 * NLIT];
    for (int k = 0; k < m; k++)
        w[k] = f[sym[k]];
    int leaf = 0, node = m, nn = m;
    for (int t = 0; t + 1 < m; t++) {
        int x[2];
        for (int s = 0; s < 2; s++)
            x[s] = leaf < m && (node >= nn || w[leaf] <= w[node]) ? leaf++ : node++;
        w[nn] = w[x[0]] + w[x[1]];
        parent[x[0]] = parent[x[1]] = nn++;
    }
    int longest = 0;
    depth[nn - 1] = 0;
    for (int k = nn - 2; k >= 0; k--)
        depth[k] = depth[parent[k]] + 1;
    for (int k = 0; k < m; k++) {
        len[sym[k]] = (uint8_t)depth[k];
        longest = depth[k] > longest ? depth[k] : longest;
    }
    return longest;
}

/* Code lengths of at most `limit` bits: the weights are halved (kept >= 1) until they fit,
 * which they do once all are equal (286 symbols need 9 bits). */
static void huff_lengths(const uint32_t *freq, int n, int limit, uint8_t *len)
{
    uint32_t f[NLIT];
    memcpy(f, freq, (size_t)n * sizeof *f);
    while (huff_build(f, n, len) > limit)
        for (int i = 0; i < n; i++)
            f[i] = f[i] ? (f[i] >> 1) | 1 : 0;
}

/* The canonical codes of RFC 1951 §3.2.2, bit-reversed (deflate sends codes from their top bit
 * into a stream filled from the bottom). */
static void huff_codes(const uint8_t *len, int n, uint16_t *code)
{
    int count[16] = {0}, next[16] = {0};
    for (int i = 0; i < n; i++)
        count[len[i]]++;
    count[0] = 0;
    for (int b = 1, c = 0; b < 16; b++) {
        c = (c + count[b - 1]) << 1;
        next[b] = c;
    }
    for (int i = 0; i < n; i++) {
        code[i] = 0;
        if (!len[i])
            continue;
        unsigned c = (unsigned)next[len[i]]++, r = 0;
        for (int b = 0; b < len[i]; b++)
            r |= (c >> b & 1u) << (len[i] - 1 - b);
        code[i] = (uint16_t)r;
    }
}

/* The lengths' sequence lens[0, n) in code-length symbols (16: repeat the last 3-6 times, 17:
 * 3-10 zeros, 18: 11-138 zeros) with their extra-bit values. Returns the count. */
static int cl_rle(const uint8_t *lens, int n, uint8_t *sym, uint8_t *ext)
{
    int k = 0;
    for (int i = 0; i < n;) {
        int v = lens[i], r = 1, done = 0;
        while (i + r < n && lens[i + r] == v)
            r++;
        if (v == 0) {
            for (int t; r - done >= 11; done += t) {
                t = r - done < 138 ? r - done : 138;
                sym[k] = 18, ext[k++] = (uint8_t)(t - 11);
            }
            if (r - done >= 3) {
                sym[k] = 17, ext[k++] = (uint8_t)(r - done - 3);
                done = r;
            }
        } else {
            sym[k] = (uint8_t)v, ext[k++] = 0;
            done = 1;
            for (int t; r - done >= 3; done += t) {
                t = r - done < 6 ? r - done : 6;
                sym[k] = 16, ext[k++] = (uint8_t)(t - 3);
            }
        }
        for (; done < r; done++)
            sym[k] = (uint8_t)v, ext[k++] = 0;
        i += r;
    }
    return k;
}

struct bitw {
    uint8_t *p;
    uint64_t acc;
    int n;
};

/* Appends the low `n` bits of v (n <= 32); whole 32-bit words go out as they fill. */
static inline void put(struct bitw *w, uint64_t v, int n)
{
    w->acc |= v << w->n;
    w->n += n;
    if (w->n >= 32) {
        for (int k = 0; k < 4; k++)
            w->p[k] = (uint8_t)(w->acc >> (8 * k));
        w->p += 4;
        w->acc >>= 32;
        w->n -= 32;
    }
}

static const int cl_extra_bits[3] = {2, 3, 7}; /* of symbols 16, 17, 18 */

/* Writes tokens [k0, k1) as one block (with its own codes; `last`: the final one), unless that
 * would take the stream past cap - 4 bytes (the Adler-32 after it): then false. */
static bool block_emit(const struct runs *r, size_t k0, size_t k1, bool last, const uint8_t *lsym,
                       struct bitw *w, const uint8_t *dst, size_t cap)
{
    uint32_t freq[NLIT] = {0};
    uint64_t extra_bits = 0, nmatch = 0;
    for (size_t k = k0; k < k1; k++) {
        unsigned t = r->tok[k];
        if (t < TOK_MATCH) {
            freq[t]++;
            continue;
        }
        int i = lsym[t - TOK_MATCH + 3];
        freq[257 + i]++;
        extra_bits += len_extra[i];
        nmatch++;
    }
    freq[256] = 1; /* with a token: two symbols at least, as a code needs */
    uint8_t len[NLIT];
    uint16_t code[NLIT];
    huff_lengths(freq, NLIT, LIT_LIMIT, len);
    huff_codes(len, NLIT, code);
    int hlit = NLIT;
    while (hlit > 257 && !len[hlit - 1])
        hlit--;
    /* the lengths of both codes in one sequence; distance code: symbols 0 and 1 of 1 bit
     * (a complete code; every match uses symbol 0, distance 1) */
    uint8_t lens[NLIT + 2], cls[NLIT + 2], clx[NLIT + 2];
    memcpy(lens, len, (size_t)hlit);
    lens[hlit] = lens[hlit + 1] = 1;
    int ncl = cl_rle(lens, hlit + 2, cls, clx);
    uint32_t cfreq[NCL] = {0};
    for (int k = 0; k < ncl; k++)
        cfreq[cls[k]]++;
    int used = 0;
    for (int s = 0; s < NCL; s++)
        used += cfreq[s] > 0;
    if (used < 2) /* a code needs two symbols: give an unused one a length too */
        cfreq[cfreq[0] ? 1 : 0] = 1;
    uint8_t clen[NCL];
    uint16_t ccode[NCL];
    huff_lengths(cfreq, NCL, CL_LIMIT, clen);
    huff_codes(clen, NCL, ccode);
    int hclen = NCL;
    while (hclen > 4 && !clen[cl_order[hclen - 1]])
        hclen--;
    /* the exact size first, so the writes below need no checks */
    uint64_t bits = 3 + 5 + 5 + 4 + 3 * (uint64_t)hclen;
    for (int k = 0; k < ncl; k++)
        bits += clen[cls[k]] + (cls[k] >= 16 ? cl_extra_bits[cls[k] - 16] : 0);
    for (int s = 0; s < NLIT; s++)
        bits += (uint64_t)freq[s] * len[s];
    bits += extra_bits + nmatch; /* + one distance bit per match */
    if ((size_t)(w->p - dst) + (size_t)((w->n + bits + 7) / 8) + 4 > cap)
        return false;
    put(w, (uint64_t)last | 2 << 1, 3); /* dynamic codes */
    put(w, (uint64_t)(hlit - 257), 5);
    put(w, 1, 5); /* two distance codes */
    put(w, (uint64_t)(hclen - 4), 4);
    for (int k = 0; k < hclen; k++)
        put(w, clen[cl_order[k]], 3);
    for (int k = 0; k < ncl; k++) {
        put(w, ccode[cls[k]], clen[cls[k]]);
        if (cls[k] >= 16)
            put(w, clx[k], cl_extra_bits[cls[k] - 16]);
    }
    for (size_t k = k0; k < k1; k++) {
        unsigned t = r->tok[k];
        if (t < TOK_MATCH) {
            put(w, code[t], len[t]);
            continue;
        }
        int L = (int)t - TOK_MATCH + 3, i = lsym[L], s = 257 + i;
        uint64_t v = code[s] | (uint64_t)(L - len_base[i]) << len[s];
        put(w, v, len[s] + len_extra[i] + 1); /* the distance bit: 0 */
    }
    put(w, code[256], len[256]);
    return true;
}

/* The zlib stream of the tokens (adler: the data's Adler-32) in blocks of BLOCK_TOKENS, each
 * with the codes of its own counts (the planes of a chunk differ), or 0 past cap. */
static size_t runs_emit(const struct runs *r, uint32_t adler, uint8_t *dst, size_t cap)
{
    uint8_t lsym[MAX_MATCH + 1]; /* length -> index into len_base */
    for (int i = 0, L = 3; L <= MAX_MATCH; L++) {
        while (i < 28 && len_base[i + 1] <= L)
            i++;
        lsym[L] = (uint8_t)i;
    }
    if (cap < 2 + 4)
        return 0;
    dst[0] = 0x78, dst[1] = 0x01; /* deflate, 32 KiB window, no dictionary; (0x7801 % 31 == 0) */
    struct bitw w = {dst + 2, 0, 0};
    for (size_t k0 = 0; k0 < r->ntok; k0 += BLOCK_TOKENS) {
        size_t k1 = r->ntok - k0 > BLOCK_TOKENS ? k0 + BLOCK_TOKENS : r->ntok;
        if (!block_emit(r, k0, k1, k1 == r->ntok, lsym, &w, dst, cap))
            return 0;
    }
    for (; w.n > 0; w.n -= 8, w.acc >>= 8)
        *w.p++ = (uint8_t)w.acc;
    for (int k = 3; k >= 0; k--) /* Adler-32, big-endian */
        *w.p++ = (uint8_t)(adler >> (8 * k));
    return (size_t)(w.p - dst);
}

static size_t deflate_any(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, uint16_t *tok,
                          bool ref)
{
    struct runs r = {tok, 0, deflate_runs_tokens(n), 1, 0};
    for (size_t i = 0, j; i < n; i = j) {
        j = ref ? run_end_ref(src, i, n) : run_end(src, i, n);
        if (!runs_add(&r, src[i], j - i))
            return 0;
        if (!ref)
            adler_run(&r.a, &r.b, src[i], j - i);
    }
    uint32_t adler = ref ? (uint32_t)adler32_z(adler32_z(0, NULL, 0), src, n) : r.b << 16 | r.a;
    return runs_emit(&r, adler, dst, cap);
}

size_t deflate_runs(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, uint16_t *tok)
{
    return deflate_any(src, n, dst, cap, tok, false);
}

size_t deflate_runs_ref(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, uint16_t *tok)
{
    return deflate_any(src, n, dst, cap, tok, true);
}
