/*
** nm_simd.h: the one rule for multiversioning hot kernels. A hot kernel is
** compiled once per x86-64 ISA level and the loader picks, once, the best
** version the CPU supports. The levels are tested by CPU feature (GCC's
** resolver calls __builtin_cpu_supports("x86-64-v4") and so on), never by
** CPU model, so AMD and Intel CPUs alike get their AVX2 or AVX-512 code
** (an "arch=haswell" clone is only ever selected on Intel Haswell and
** later Intel models, not on a Zen 4).
**   NM_HOT     x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA), baseline
**   NM_HOT_V3  x86-64-v3, baseline: for kernels whose AVX-512 version was
**              measured slower (experiments/bench/isa.lua)
** The results are the same bits on every level: ISO C mode keeps
** -ffp-contract=off, so no version fuses a multiply and an add.
** nm_isa_level() says which version of each set runs here.
*/
#ifndef NM_SIMD_H
#define NM_SIMD_H

/* NM_CLONES_MAX caps the levels built, to measure one level against
** another (make CLONES=3: no AVX-512 versions; CLONES=0: the baseline only). */
#ifndef NM_CLONES_MAX
#define NM_CLONES_MAX 4
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && NM_CLONES_MAX >= 3
#if NM_CLONES_MAX >= 4
#define NM_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NM_HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
#define NM_HOT_V3 __attribute__((target_clones("arch=x86-64-v3", "default")))
#define NM_HAVE_CLONES 1
#else
#define NM_HOT
#define NM_HOT_V3
#define NM_HAVE_CLONES 0
#endif

/* The clone sets, as nm_isa_level takes them. */
enum { NM_CLONES_V4 = 4, NM_CLONES_V3 = 3 };

/* The ISA level whose version of a kernel of clone set `set` runs on this
** CPU: 4 (x86-64-v4), 3 (x86-64-v3) or 0 (the baseline build, x86-64-v2
** with this Makefile); the same test the loader makes. */
int nm_isa_level(int set);

#endif
