/*
** nm_pool.h: neuromic's own worker threads. A kernel that is worth
** splitting cuts its work into a fixed number of parts that depends on the
** shape of the work only, never on the thread count, and hands them to
** nm_pool_run; the calling thread and the workers take parts until none
** is left. Each part computes its outputs exactly as it would alone, so
** results are the same bits for any thread count (the products' parts are
** single-threaded BLAS calls: OpenBLAS stays at one thread, see nm_math.h).
**
** Workers spin briefly after a job and then sleep on a condition
** variable, so an idle pool costs nothing. nm_pool_run from inside a part
** (or from another thread while a job runs) runs its parts in the caller.
** Never includes lua.h.
*/
#ifndef NM_POOL_H
#define NM_POOL_H

#include <stdint.h>

/* Most threads a pool may have (the caller included). */
#define NM_POOL_MAX 256

/* Sets the number of threads that run parts, the caller included (n - 1
** workers), starting or stopping workers. 1 <= n <= NM_POOL_MAX, else
** NM_EINVAL; NM_ENOMEM when a thread cannot be started (the pool keeps
** the workers it has). */
int nm_pool_set_threads(int n);
/* The thread count set (1 at start). */
int nm_pool_threads(void);
/* Processors this process may run on (sched_getaffinity; at least 1). */
int nm_pool_cores(void);

/* Runs fn(ctx, p) for p = 0 .. parts - 1, on the pool's threads and the
** caller, and returns when all have finished. Parts must be independent. */
typedef void (*nm_pool_fn)(void *ctx, int64_t part);
void nm_pool_run(int64_t parts, nm_pool_fn fn, void *ctx);

/* A task run beside the caller: nm_pool_start hands fn(ctx) to a pool
** worker and returns at once, so that the caller goes on (with its own
** parallel jobs, whose parts the worker takes again once the task is
** done); nm_pool_wait returns when the task has run. With no worker (one
** thread), from inside a part, or while another task waits for a worker,
** the task runs in nm_pool_start itself. A task not yet taken by a worker
** when nm_pool_wait is called runs in the caller there. The caller keeps
** the task and everything fn reads or writes alive, and touches none of
** what fn writes, until nm_pool_wait returns. One task per nm_task at a
** time; waiting on a task never started, or already waited for, returns. */
typedef struct nm_task {
  void (*fn)(void *ctx);
  int (*step)(void *ctx);
  void *ctx;
  _Atomic int state;            /* see nm_pool.c */
  int on_worker;                /* the last run was on a worker (after nm_pool_wait) */
} nm_task;
void nm_task_init(nm_task *t);
void nm_pool_start(nm_task *t, void (*fn)(void *ctx), void *ctx);
void nm_pool_wait(nm_task *t);
/* The same for a task in steps: step(ctx) does a short piece of the work
** and returns 1 when none is left, else 0. A worker running the task stops
** between two steps when the caller starts a parallel job (nm_pool_run),
** takes the job's parts, and then goes on with the task; the caller waiting
** for it runs the steps left. So a task started just before a job delays
** none of its parts by more than one step. */
void nm_pool_start_steps(nm_task *t, int (*step)(void *ctx), void *ctx);

/* Work handed to the workers since the process started: *jobs, the
** nm_pool_run calls whose parts the workers were offered (those run in
** the caller alone are not counted), *tasks, the nm_pool_start tasks
** posted for a worker (not those run in the caller at once). Work that
** reaches neither counter never wakes or occupies a worker: a batch-1
** training step counts none (spec/threads_spec.lua). */
void nm_pool_counts(int64_t *jobs, int64_t *tasks);

/* Part p's first item when n items are cut into `parts` near-equal parts
** whose bounds (but the last) are multiples of `align` (>= 1). */
int64_t nm_pool_bound(int64_t n, int64_t parts, int64_t align, int64_t p);

#endif
