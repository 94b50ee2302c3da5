/*
 * The native reference for the bench's pure-lookup figures (bench/run.ts, lookupBench): a
 * chained hash table of the shape Chains uses (a power-of-two bucket array of one word each, an
 * entry slab of ENTRY_WORDS 32-bit words holding the cached hash, the next link and a
 * TUPLE_WORDS tuple), filled with n entries, then looked up in random order with the hash
 * precomputed, like `find only`. Prints the median lookups per second of `runs` passes.
 *   cc -O2 -o lookup lookup.c && ./lookup N RUNS
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ENTRY_WORDS 52
#define TUPLE_WORDS 12
#define E_HASH 0
#define E_NEXT 1
#define E_TUPLE 2

static uint32_t xs = 2463534242u;
static uint32_t rnd(void) { xs ^= xs << 13; xs ^= xs >> 17; xs ^= xs << 5; return xs; }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000;
  int runs = argc > 2 ? atoi(argv[2]) : 5;
  if (n <= 0 || runs <= 0 || runs > 64) return 2;
  uint32_t nb = 1;
  while (nb < (uint32_t)n) nb <<= 1; /* buckets: the next power of two, as the table sizes them */
  int32_t *buckets = malloc(sizeof(int32_t) * nb);
  int32_t *slab = malloc(sizeof(int32_t) * ENTRY_WORDS * (size_t)n);
  int32_t *keys = malloc(sizeof(int32_t) * TUPLE_WORDS * (size_t)n);
  uint32_t *hashes = malloc(sizeof(uint32_t) * (size_t)n);
  uint32_t *order = malloc(sizeof(uint32_t) * (size_t)n);
  if (!buckets || !slab || !keys || !hashes || !order) return 3;
  memset(buckets, 0xff, sizeof(int32_t) * nb);
  for (long i = 0; i < n; i++) {
    int32_t *k = keys + i * TUPLE_WORDS;
    for (int w = 0; w < TUPLE_WORDS; w++) k[w] = (int32_t)rnd();
    hashes[i] = rnd();
    int32_t *e = slab + i * ENTRY_WORDS;
    e[E_HASH] = (int32_t)hashes[i];
    memcpy(e + E_TUPLE, k, sizeof(int32_t) * TUPLE_WORDS);
    uint32_t b = hashes[i] & (nb - 1);
    e[E_NEXT] = buckets[b];
    buckets[b] = (int32_t)i;
    order[i] = (uint32_t)i;
  }
  for (long i = n - 1; i > 0; i--) { uint32_t j = rnd() % (uint32_t)(i + 1); uint32_t t = order[i]; order[i] = order[j]; order[j] = t; }
  double rates[64];
  volatile long sink = 0;
  for (int r = -1; r < runs; r++) { /* one warm-up pass */
    long found = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
      uint32_t k = order[i];
      uint32_t h = hashes[k];
      const int32_t *key = keys + (size_t)k * TUPLE_WORDS;
      for (int32_t ref = buckets[h & (nb - 1)]; ref >= 0;) {
        const int32_t *e = slab + (size_t)ref * ENTRY_WORDS;
        if (e[E_HASH] == (int32_t)h && memcmp(e + E_TUPLE, key, sizeof(int32_t) * TUPLE_WORDS) == 0) { found++; break; }
        ref = e[E_NEXT];
      }
    }
    double dt = now_s() - t0;
    if (found != n) { fprintf(stderr, "found %ld of %ld\n", found, n); return 4; }
    sink += found;
    if (r >= 0) rates[r] = n / dt;
  }
  qsort(rates, runs, sizeof(double), cmp);
  printf("%.0f\n", rates[runs / 2]);
  return 0;
}
