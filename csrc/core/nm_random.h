/*
** nm_random.h: seeded random generators (xoshiro256** seeded through
** splitmix64) and the fills of nm_tensor built on them. Every result is
** a function of the seed alone: integer arithmetic plus correctly
** rounded IEEE operations, so a seed gives the same stream on every
** machine. Never includes lua.h.
*/
#ifndef NM_RANDOM_H
#define NM_RANDOM_H

#include <stddef.h>
#include <stdint.h>
#include "nm_tensor.h"

/* The whole state of one generator; copying the struct clones it. The
** second value of each Marsaglia polar pair is kept so that a saved state
** reproduces the normal stream exactly. */
typedef struct nm_rng {
  uint64_t s[4];          /* xoshiro256** state, never all zero */
  int has_normal;         /* 1 when `normal` holds an unused deviate */
  double normal;
} nm_rng;

/* splitmix64: advances *x and returns the next output. */
uint64_t nm_splitmix64(uint64_t *x);

/* Seeds s[0..3] with four successive splitmix64 outputs of `seed`. */
void nm_rng_seed(nm_rng *g, uint64_t seed);
/* Next raw 64-bit output of xoshiro256**. */
uint64_t nm_rng_next(nm_rng *g);
/* Advances the state by 2^128 outputs (the reference jump polynomial):
** successive jumps of one generator give non-overlapping substreams.
** Drops a cached normal deviate, so each substream starts clean. */
void nm_rng_jump(nm_rng *g);

/* Uniform double in [0, 1): the top 53 bits of one output times 2^-53. */
double nm_rng_uniform(nm_rng *g);
/* Standard normal deviate (Marsaglia polar method, with a portable
** logarithm so the values do not depend on the platform's libm). */
double nm_rng_normal(nm_rng *g);
/* 1 with probability p (one uniform u, returns u < p); p in [0, 1]. */
int nm_rng_bernoulli(nm_rng *g, double p);
/* Uniform integer in [0, n) for n >= 1, without modulo bias (Lemire's
** multiply-and-reject). n == 0 means the full 64-bit range. */
uint64_t nm_rng_below(nm_rng *g, uint64_t n);
/* Uniform integer in [lo, hi] (lo <= hi), without bias. */
int64_t nm_rng_integer(nm_rng *g, int64_t lo, int64_t hi);

/* out[0..n-1] = a uniform random permutation of 0..n-1 (Fisher-Yates). */
void nm_rng_permutation(nm_rng *g, int64_t *out, int64_t n);
/* Shuffles out[0..n-1] in place (Fisher-Yates). */
void nm_rng_shuffle(nm_rng *g, int64_t *out, int64_t n);
/* Number of int64 workspace slots nm_rng_sample needs for k draws. */
size_t nm_rng_sample_workspace(int64_t k);
/* out[0..k-1] = k distinct values of 0..n-1 (0 <= k <= n), every
** k-subset and every order equally likely: Floyd's algorithm over a hash
** set in `work` (nm_rng_sample_workspace(k) slots), then a shuffle.
** Time and memory O(k), independent of n. */
void nm_rng_sample(nm_rng *g, int64_t n, int64_t k, int64_t *out, int64_t *work);

/* In-place fills of a (possibly strided) tensor of either dtype, in
** row-major order of its indices, so a view receives the same values as
** a contiguous tensor of its shape. float32 elements are the float64
** values rounded (uniform results are kept below b after rounding).
** Return NM_OK, NM_EINVAL for bad parameters (non-finite, a > b,
** std < 0, p outside [0, 1]) or NM_EINTR when interrupted. */
int nm_rng_fill_uniform(nm_rng *g, const nm_tensor *t, double a, double b);
int nm_rng_fill_normal(nm_rng *g, const nm_tensor *t, double mean, double std);
int nm_rng_fill_bernoulli(nm_rng *g, const nm_tensor *t, double p);

/* The state as text, for checkpoints:
**   "xoshiro256** <s0> <s1> <s2> <s3> <normal>"
** each s as 16 hex digits, <normal> the 16 hex digits of the cached
** deviate's bits or "-" when none. NM_RNG_STATE_LEN counts the NUL. */
#define NM_RNG_STATE_LEN 98
void nm_rng_get_state(const nm_rng *g, char buf[NM_RNG_STATE_LEN]);
/* Parses a string made by nm_rng_get_state (exactly `len` bytes). On
** failure leaves g untouched, writes the reason into err and returns
** NM_EINVAL. */
int nm_rng_set_state(nm_rng *g, const char *str, size_t len, char *err, size_t errlen);

#endif
