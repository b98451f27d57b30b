/*
** nm_nk.h: the NK model (Kauffman & Weinberger 1989) as a regression
** function, and the random hill climber of Bull's neuron autoencoders
** ("Toward neuromic computing: neurons as autoencoders", arXiv
** 2403.02331) for NN, NAN and ANN networks, with incremental evaluation
** of every candidate mutation. Never includes lua.h; every array lives
** in memory the caller provides.
*/
#ifndef NM_NK_H
#define NM_NK_H

#include <stddef.h>
#include <stdint.h>
#include "nm_tensor.h"
#include "nm_random.h"

/* ------------------------------------------------------------ NK model */

#define NM_NK_MAXK 31          /* patterns of K+1 bits fit in 32 bits */
#define NM_NK_MAXN 16383       /* see NM_NK_QMAX below */
/* Tables hold N * 2^(K+1) values. "auto" stores a table of at most this
** many entries (512 KB of doubles, a table that stays in cache): a larger
** one is slower to fill and to read at random than the hash itself
** (measured: N = 1000, K = 10, two data sets of 1000 genomes in 189 ms
** stored, 33 ms hashed). */
#define NM_NK_TABLE_AUTO ((size_t)1 << 16)
/* The largest table stored on request (256 MB of doubles). */
#define NM_NK_TABLE_MAX ((size_t)1 << 25)

/* Gene i has K partner genes and a table of 2^(K+1) values in [0, 1),
** indexed by the pattern (gene i, partner 1, ..., partner K) read as a
** binary number with gene i as its most significant bit. Entry (i, p) is
** by definition nm_nk_hash_entry(seed, i, p); `table`, when present,
** only caches those values, so a stored and an on-demand model with the
** same seed and partners are the same function. */
typedef struct nm_nk {
  int n, k;
  int adjacent;          /* 1: partners are the K genes after i (wrapping) */
  uint64_t seed;         /* the table entries' hash key */
  int32_t *partners;     /* n * k, caller's memory */
  uint64_t *keys;        /* n: gene i's hash key (the hash's first step), caller's memory */
  double *table;         /* n * 2^(k+1) entries, or NULL: on demand */
} nm_nk;

/* NULL when (n, k) is valid, else a message. */
const char *nm_nk_check(int n, int k);
/* n * 2^(k+1) (valid n and k). */
size_t nm_nk_table_entries(int n, int k);
/* Draws the hash seed (one raw output of g) and then, unless adjacent,
** each gene's partners: K distinct genes other than i, in draw order
** (uniform over the N-1 others, redrawn on repeats). Fills `table` when
** it is not NULL. partners holds n*k slots, keys n. */
void nm_nk_init(nm_nk *m, int n, int k, int adjacent, nm_rng *g,
                int32_t *partners, uint64_t *keys, double *table);
/* Table entry from the hash alone: U[0,1) with 53 random bits. */
double nm_nk_hash_entry(uint64_t seed, int gene, uint32_t pattern);
/* Table entry of gene i for a pattern, stored or computed. */
double nm_nk_entry(const nm_nk *m, int gene, uint32_t pattern);
/* The pattern of gene i in a genome of n bytes 0/1. */
uint32_t nm_nk_pattern(const nm_nk *m, const unsigned char *bits, int gene);
/* F(g) = (1/N) sum_i entry(i, pattern_i(g)). */
double nm_nk_fitness(const nm_nk *m, const unsigned char *bits);
/* S random genomes: x (S x N, either dtype, any strides) receives the
** genes with 0 written as -1.0, f (S elements, one dimension) their
** fitness. Bits come 64 to a raw draw of g: gene j of a genome is bit
** j % 64 of the genome's (j / 64)-th draw. `bits` holds n bytes of
** workspace. Returns NM_OK or NM_EINTR. */
int nm_nk_dataset(const nm_nk *m, nm_rng *g, const nm_tensor *x,
                  const nm_tensor *f, unsigned char *bits);

/* ------------------------------------------------- networks and climber */

typedef enum { NM_NK_NN = 0, NM_NK_NAN = 1, NM_NK_ANN = 2 } nm_nk_kind;
/* The parameter groups a mutation can touch. */
typedef enum { NM_NK_HIDDEN = 0, NM_NK_OUTPUT = 1, NM_NK_DECODER = 2 } nm_nk_group;

/* Hidden-layer weights and biases live on a grid of 2^-32 and are kept
** as integers, so a hidden pre-activation (a sum of +-weights, inputs
** being +-1) is an exact integer whatever the order of summation: the
** incremental update u + dw*x_j equals the full sum bit for bit. The
** magnitude is clamped to NM_NK_QMAX quanta (65536.0) so that a sum of
** NM_NK_MAXN + 1 of them cannot overflow. */
#define NM_NK_QBITS 32
#define NM_NK_QMAX ((int64_t)1 << 48)

/* Parameter layouts (row-major, 0-based):
**   hidden   H x (N+1)   row h: N input weights of hidden neuron h, bias
**   output   1 x (H+1)   H weights of the output node, bias
**   decoder  NAN: H x 2N row h: neuron h's N decoder weights, N biases
**            ANN: N x (H+1) row i: decoder node i's H weights, bias
**            NN: none
** Each node: sigmoid(bias + sum w * input). NAN decoder of neuron h:
** out_{h,i} = sigmoid(w_{h,i} * a_h + b_{h,i}).
** Arithmetic (the same in every path): parameters are kept in double
** (hidden ones as quanta); the sigmoid is nm_nk_sigmoid, in float32; a
** node's pre-activation is a float32 chain of fmaf from its bias over its
** inputs in index order, with the weights rounded to float (a hidden one
** is its exact sum of quanta, rounded to float); the squared errors are
** summed in double, over the samples in order, then over the outputs. */
/* The networks' transfer function 1 / (1 + e^-z) in float32: a few ulp
** from the exact value (below z = -87 it returns sigmoid(-87)). */
float nm_nk_sigmoid(float z);

typedef struct nm_nkhc {
  int kind, n, h, s;
  int np;                    /* N rounded up to 32: rows of decf and x */
  double range;              /* mutations are U[-range, range] */
  double t_scale, t_shift;   /* reconstruction target = t_scale*x + t_shift */
  /* parameters */
  int64_t *hid;              /* H x (N+1) quanta */
  double *out;               /* H+1 */
  double *dec;               /* NAN: H x 2N as above; ANN: (H+1) x N, row j<H
                             ** the weights from hidden j, row H the biases */
  float *decf;               /* dec rounded to float, kept in step with it,
                             ** in rows of np (NAN: np weights, np biases) */
  /* training data, copied in */
  float *x;                  /* S x np, each -1 or 1 (padding 0) */
  float *xt;                 /* the same, N x S */
  float *xb;                 /* the same in column blocks of 32: np/32 blocks
                             ** of S x 32 (padding 0) */
  double *f;                 /* S */
  /* caches, valid unless `dirty` */
  int64_t *u;                /* H x S hidden pre-activations (quanta) */
  float *a;                  /* H x S hidden activations */
  float *y;                  /* S outputs */
  double *col;               /* NAN: H x N, ANN: N: per-output sums of squared
                             ** reconstruction errors over the samples */
  double *rec;               /* NAN: H per-neuron errors, ANN: 1, NN: none */
  double task;               /* training MSE of the output */
  int dirty;
  /* scratch */
  int64_t *u_save;           /* S */
  float *a_save, *y_new, *zbuf;   /* S each */
  double *terms;             /* S: the output's squared errors */
  float *sqerr;              /* S: one column's squared errors */
  float *part;               /* NAN: H x np, ANN: np: the naive pass's block partial sums */
  double *col_new;           /* N */
  float *row;                /* N */
  float *nk_a;               /* H: naive evaluator's activations */
  double *nk_col;            /* NAN: H x N, ANN: N: naive evaluator's sums */
  double *nk_wd;             /* H x (N+1): the hidden quanta as doubles */
  double *nk_xd, *nk_ud;     /* 64 x N inputs, 64 x H pre-activations (quanta) */
  /* a test set kept with the network (ts samples, 0: none) */
  int ts;
  float *txt;                /* N x ts inputs, -1 or 1 */
  double *tf;                /* ts targets */
  int64_t *tu;               /* H x ts hidden pre-activations (quanta), valid
                             ** unless tdirty; kept changes of hidden weights
                             ** update them as they update u */
  int tdirty;
  /* counters */
  int64_t cycles, accepted, ties;
  /* the last cycle, for tests and traces */
  int last_group, last_i, last_j, last_autoenc, last_accepted, last_tie;
  double last_delta, last_before, last_after;
} nm_nkhc;

/* NULL when the sizes are valid, else a message. */
const char *nm_nkhc_check(int kind, int n, int h, int s);
/* Bytes of memory nm_nkhc_layout needs (ts: test samples kept, or 0). */
size_t nm_nkhc_bytes(int kind, int n, int h, int s, int ts);
/* Points the arrays into `mem` (nm_nkhc_bytes(...) bytes, 8-aligned),
** zeroes everything, range = 1, targets = inputs. Caches start dirty. */
void nm_nkhc_layout(nm_nkhc *c, int kind, int n, int h, int s, int ts, void *mem);
/* Every parameter U[-1, 1] (hidden ones rounded to the grid), in the
** order hidden, output, decoder, row-major. */
void nm_nkhc_init_weights(nm_nkhc *c, nm_rng *g);
/* Copies a training set: x S x N with entries -1 or 1, f S elements.
** Returns NM_OK or NM_EINVAL (an input that is not +-1). */
int nm_nkhc_set_data(nm_nkhc *c, const nm_tensor *x, const nm_tensor *f);
/* Recomputes every cache from the parameters (after set/perturb). */
void nm_nkhc_refresh(nm_nkhc *c);

/* Number of rows/cols of a group (0 rows when the network has none). */
void nm_nkhc_group_shape(const nm_nkhc *c, int group, int *rows, int *cols);
double nm_nkhc_get(const nm_nkhc *c, int group, int i, int j);
/* Sets a parameter (hidden ones rounded to the grid and clamped); marks
** the caches dirty. */
void nm_nkhc_set(nm_nkhc *c, int group, int i, int j, double v);
/* The value a mutation by `delta` gives a parameter: hidden ones add
** llround(delta * 2^32) quanta and clamp, the others add delta. */
double nm_nkhc_mutated(const nm_nkhc *c, int group, int i, int j, double delta);

/* Runs `cycles` hill-climbing cycles drawing from g. Per cycle, in this
** order: u = uniform; autoencoding (NN: hidden-layer) cycle when u < 0.5;
** the parameter: NAN autoencoding h = integer(0, H-1) then
** j = integer(0, 3N) (j <= N: hidden (h, j), else decoder (h, j-N-1));
** ANN autoencoding one integer over the H(N+1) hidden and N(H+1) decoder
** parameters (hidden first, row-major); NN hidden one integer over
** H(N+1); task cycles integer(0, H) of the output; then
** delta = range * (2 uniform - 1); on a tie one more uniform, kept when
** < 0.5. Candidates are scored incrementally from the caches. Returns
** NM_OK, or NM_EINTR when interrupted (after a whole cycle). */
int nm_nkhc_step(nm_nkhc *c, nm_rng *g, int64_t cycles);
/* The same cycles scored by nm_nkhc_naive full passes: the test oracle
** and the benchmark baseline. Leaves the caches dirty. */
int nm_nkhc_step_naive(nm_nkhc *c, nm_rng *g, int64_t cycles);

/* Full forward pass over the training set from the parameters alone
** (no caches): the training MSE and the reconstruction errors (NAN: H
** values, ANN: 1, NN: none), bit-identical to what the incremental
** path keeps. */
void nm_nkhc_naive(nm_nkhc *c, double *task, double *rec);
/* MSE of the output on another data set (x S2 x N of +-1, f S2), with
** the network's scratch arrays; returns NM_EINVAL (and *mse untouched) for
** an input that is not +-1. */
int nm_nkhc_task_error(nm_nkhc *c, const nm_tensor *x, const nm_tensor *f, double *mse);

/* Copies the kept test set (x ts x N of +-1, f ts elements; ts as laid
** out); NM_EINVAL for an input that is not +-1. */
int nm_nkhc_set_test(nm_nkhc *c, const nm_tensor *x, const nm_tensor *f);
/* MSE of the output on the kept test set: the same bits as
** nm_nkhc_task_error on it. Its hidden pre-activations are recomputed
** after a weight was set, else follow the climber's kept changes in
** O(ts) each, so an evaluation costs O(ts H) instead of O(ts N H). */
double nm_nkhc_test_mse(nm_nkhc *c);

#endif
