/*
** nm_pool.c: the worker threads of nm_pool.h.
**
** One job at a time. The caller publishes a job by writing its fields and
** then making the generation counter even and new; a worker that sees a
** new even generation registers in `active`, checks the generation again
** (it may have moved on) and takes parts from the shared counter `next`.
** Before the fields of the next job are written, the caller makes the
** generation odd and waits until no worker is active, so that no worker
** ever reads a job half written. All shared counters are sequentially
** consistent atomics.
**
** Beside the jobs, one slot `side` holds a task (nm_pool_start) that no
** worker has taken yet; an idle worker takes it (compare-and-swap to
** NULL), runs it and marks it done. nm_pool_wait takes it back the same
** way when no worker has, and runs it in the caller. A worker running a
** task in steps puts it back into the slot (compare-and-swap from NULL)
** when a job was published since it looked, takes the job's parts first,
** and takes the task again after; workers look for a job before a task.
*/
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include "nm_pool.h"
#include "nm_tensor.h"

/* Spins (pause instructions) before a worker sleeps, or before the caller
** yields the processor while waiting for the last parts. */
#define SPINS 4000

static struct {
  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_t tid[NM_POOL_MAX];
  int workers;                 /* started */
  int threads;                 /* set: workers + 1 */
  atomic_uint gen;             /* even: a job may be read; odd: being written */
  atomic_int active;           /* workers inside a job */
  atomic_int sleepers;
  atomic_int stop_from;        /* workers with index >= this exit */
  atomic_int busy;             /* a job is running (nested calls run inline) */
  /* the job */
  nm_pool_fn fn;
  void *ctx;
  int64_t parts;
  atomic_llong next, left;
  _Atomic(nm_task *) side;     /* a task waiting for a worker */
  atomic_llong jobs, tasks;    /* nm_pool_counts */
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 1, 0, 0, 0,
       NM_POOL_MAX, 0, NULL, NULL, 0, 0, 0, NULL, 0, 0};

/* nm_task states */
enum { TASK_IDLE = 0, TASK_POSTED = 1, TASK_DONE = 2 };

static _Thread_local int in_part;

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Takes and runs parts of the current job until none is left. */
static void take_parts(void) {
  int64_t p;
  while ((p = atomic_fetch_add(&P.next, 1)) < P.parts) {
    in_part = 1;
    P.fn(P.ctx, p);
    in_part = 0;
    atomic_fetch_sub(&P.left, 1);
  }
}

/* Runs the waiting task, if any and if this thread takes it first. A task
** in steps goes back into the slot, not done, when the job generation
** moved from `seen` (a job to take first) and the slot is free. */
static int take_side(unsigned seen) {
  nm_task *t = atomic_load(&P.side);
  if (t == NULL || !atomic_compare_exchange_strong(&P.side, &t, NULL)) return 0;
  in_part = 1;                          /* its pool calls run inline */
  t->on_worker = 1;
  if (t->step == NULL) {
    t->fn(t->ctx);
  } else {
    while (!t->step(t->ctx)) {
      nm_task *none = NULL;
      if (atomic_load(&P.gen) != seen && atomic_compare_exchange_strong(&P.side, &none, t)) {
        in_part = 0;
        return 1;                       /* still TASK_POSTED, back in the slot */
      }
    }
  }
  in_part = 0;
  atomic_store(&t->state, TASK_DONE);
  return 1;
}

/* Runs what is left of task t in the caller. */
static void run_rest(nm_task *t) {
  if (t->step == NULL) t->fn(t->ctx);
  else while (!t->step(t->ctx)) {}
}

static void *worker(void *arg) {
  int index = (int)(intptr_t)arg;
  unsigned seen = atomic_load(&P.gen);
  for (;;) {
    unsigned g;
    int spins = 0;
    for (;;) {
      if (index >= atomic_load(&P.stop_from)) return NULL;
      g = atomic_load(&P.gen);
      if (g != seen && !(g & 1u)) break;          /* a job's parts before a task */
      if (take_side(seen)) { spins = 0; continue; }
      if (++spins < SPINS) { relax(); continue; }
      pthread_mutex_lock(&P.lock);
      atomic_fetch_add(&P.sleepers, 1);
      for (;;) {
        g = atomic_load(&P.gen);
        if ((g != seen && !(g & 1u)) || index >= atomic_load(&P.stop_from) ||
            atomic_load(&P.side) != NULL)
          break;
        pthread_cond_wait(&P.wake, &P.lock);
      }
      atomic_fetch_sub(&P.sleepers, 1);
      pthread_mutex_unlock(&P.lock);
      spins = 0;
    }
    seen = g;
    atomic_fetch_add(&P.active, 1);
    if (atomic_load(&P.gen) == g) take_parts();
    atomic_fetch_sub(&P.active, 1);
  }
}

static void wake_all(void) {
  if (atomic_load(&P.sleepers) > 0) {
    pthread_mutex_lock(&P.lock);
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.lock);
  }
}

/* Stops and joins workers from index `from` on. */
static void stop_workers(int from) {
  if (from >= P.workers) return;
  atomic_store(&P.stop_from, from);
  pthread_mutex_lock(&P.lock);
  pthread_cond_broadcast(&P.wake);
  pthread_mutex_unlock(&P.lock);
  for (int i = from; i < P.workers; i++) pthread_join(P.tid[i], NULL);
  P.workers = from;
  atomic_store(&P.stop_from, NM_POOL_MAX);
}

int nm_pool_set_threads(int n) {
  if (n < 1 || n > NM_POOL_MAX) return NM_EINVAL;
  if (atomic_load(&P.busy) || in_part) return NM_EINVAL;
  P.threads = n;
  stop_workers(n - 1);
  while (P.workers < n - 1) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)1 << 20);
    int err = pthread_create(&P.tid[P.workers], &attr, worker, (void *)(intptr_t)P.workers);
    pthread_attr_destroy(&attr);
    if (err != 0) {
      P.threads = P.workers + 1;
      return NM_ENOMEM;
    }
    P.workers++;
  }
  return NM_OK;
}

int nm_pool_threads(void) { return P.threads; }

int nm_pool_cores(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n >= 1 ? (int)n : 1;
}

void nm_pool_run(int64_t parts, nm_pool_fn fn, void *ctx) {
  if (parts <= 0) return;
  int expected = 0;
  if (parts == 1 || P.workers == 0 || in_part ||
      !atomic_compare_exchange_strong(&P.busy, &expected, 1)) {
    for (int64_t p = 0; p < parts; p++) fn(ctx, p);
    return;
  }
  /* odd: no worker may start reading; wait for stragglers of the last job */
  atomic_fetch_add(&P.gen, 1);
  while (atomic_load(&P.active) > 0) relax();
  P.fn = fn;
  P.ctx = ctx;
  P.parts = parts;
  atomic_store(&P.left, parts);
  atomic_store(&P.next, 0);
  atomic_fetch_add(&P.gen, 1);           /* even: published */
  atomic_fetch_add(&P.jobs, 1);
  wake_all();
  take_parts();
  int spins = 0;
  while (atomic_load(&P.left) > 0) {
    if (++spins < SPINS) relax();
    else sched_yield();                  /* a worker was descheduled mid-part */
  }
  atomic_store(&P.busy, 0);
}

void nm_task_init(nm_task *t) {
  t->fn = NULL;
  t->step = NULL;
  t->ctx = NULL;
  t->on_worker = 0;
  atomic_store(&t->state, TASK_IDLE);
}

static void start(nm_task *t, void (*fn)(void *ctx), int (*step)(void *ctx), void *ctx) {
  nm_pool_wait(t);
  t->fn = fn;
  t->step = step;
  t->ctx = ctx;
  t->on_worker = 0;
  nm_task *none = NULL;
  if (P.workers == 0 || in_part) {
    run_rest(t);
    atomic_store(&t->state, TASK_DONE);
    return;
  }
  atomic_store(&t->state, TASK_POSTED);
  if (!atomic_compare_exchange_strong(&P.side, &none, t)) {   /* the slot is taken */
    run_rest(t);
    atomic_store(&t->state, TASK_DONE);
    return;
  }
  atomic_fetch_add(&P.tasks, 1);
  wake_all();
}

void nm_pool_start(nm_task *t, void (*fn)(void *ctx), void *ctx) { start(t, fn, NULL, ctx); }

void nm_pool_start_steps(nm_task *t, int (*step)(void *ctx), void *ctx) {
  start(t, NULL, step, ctx);
}

void nm_pool_wait(nm_task *t) {
  int spins = 0;
  while (atomic_load(&t->state) == TASK_POSTED) {
    nm_task *mine = t;
    if (atomic_compare_exchange_strong(&P.side, &mine, NULL)) {   /* in the slot: ours now */
      run_rest(t);
      break;
    }
    if (++spins < SPINS) relax();        /* a worker runs it (or a step of it) */
    else sched_yield();
  }
  atomic_store(&t->state, TASK_IDLE);
}

void nm_pool_counts(int64_t *jobs, int64_t *tasks) {
  *jobs = atomic_load(&P.jobs);
  *tasks = atomic_load(&P.tasks);
}

int64_t nm_pool_bound(int64_t n, int64_t parts, int64_t align, int64_t p) {
  if (p <= 0) return 0;
  if (p >= parts) return n;
  int64_t b = (n * p / parts + align / 2) / align * align;
  return b < n ? b : n;
}
