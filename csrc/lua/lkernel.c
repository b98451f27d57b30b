/*
** lkernel.c: the neuromic.Kernel type, a compiled rule kernel (a function
** in a shared object written by nm.compile) and its calling convention:
**
**   int f(real *const *in, real *const *out, real *scratch, const double *sc)
**
**   local k, err = nm.kernels.load(path, symbol, key, layout)
**   k:call(tensors, scalars)     -- tensors: inputs, outputs, then scratch
**   local c = k:bind(tensors, scalars)   -- the same, checked once, for C
**   c:set_scalars(scalars)       -- callers in C (nm_kernel_call) read them
**
** layout = {dtype =, inputs = {numel, ...}, outputs = {numel, ...},
** scalars = n, scratch = numel, written = {i, ...}} (written: inputs the
** kernel writes in place, 1-based; checked like outputs). Every call checks each tensor (type,
** dtype, contiguity, element count) and that no output overlaps another
** tensor, so a generated kernel only ever sees arrays of the sizes it was
** generated for. Loading checks that the object exports `nm_kernel_key`
** equal to `key` (the hash of its source and build flags): a stale or
** foreign file in the cache is refused, and nm.compile rebuilds it.
*/
#include <string.h>

#include "lnm.h"
#include "nm_sys.h"

#define KERNEL_T "neuromic.Kernel"
#define KERNEL_CALL_T "neuromic.KernelCall"
#define KERNEL_MAXARGS 512

typedef struct {
  void *handle;
  nm_kernel_fn fn;
  nm_dtype dtype;
  int nin, nout, nscalar;
  int64_t scratch;
  int64_t numel[KERNEL_MAXARGS];   /* inputs then outputs */
  unsigned char written[KERNEL_MAXARGS];   /* inputs written in place */
} nm_kernel;

static nm_kernel *checkkernel(lua_State *L, int arg) {
  nm_kernel *k = (nm_kernel *)luaL_checkudata(L, arg, KERNEL_T);
  if (k->handle == NULL) luaL_argerror(L, arg, "attempt to use a closed kernel");
  return k;
}

static void release(nm_kernel *k) {
  if (k->handle) nm_dl_close(k->handle);
  k->handle = NULL;
  k->fn = NULL;
}

static int kernel_release(lua_State *L) {
  release((nm_kernel *)luaL_checkudata(L, 1, KERNEL_T));
  return 0;
}

/* Reads layout field `name` (a list of element counts) into k->numel. */
static int read_counts(lua_State *L, int layout, const char *name, nm_kernel *k, int at) {
  lua_getfield(L, layout, name);
  if (!lua_istable(L, -1)) return luaL_error(L, "nm.kernels.load: layout.%s must be a list", name);
  int n = (int)luaL_len(L, -1);
  if (at + n > KERNEL_MAXARGS) return luaL_error(L, "nm.kernels.load: more than %d tensors", KERNEL_MAXARGS);
  for (int i = 1; i <= n; i++) {
    lua_geti(L, -1, i);
    lua_Integer c = lua_tointeger(L, -1);
    if (!lua_isinteger(L, -1) || c < 1)
      return luaL_error(L, "nm.kernels.load: layout.%s[%d] must be a positive integer", name, i);
    k->numel[at + i - 1] = (int64_t)c;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return n;
}

/* nm.kernels.load(path, symbol, key, layout) -> kernel | nil, message */
static int kernel_load(lua_State *L) {
  const char *path = nm_checkpath(L, 1);
  const char *symbol = luaL_checkstring(L, 2);
  const char *key = luaL_checkstring(L, 3);
  luaL_checktype(L, 4, LUA_TTABLE);
  nm_kernel *k = (nm_kernel *)lua_newuserdatauv(L, sizeof(nm_kernel), 0);
  memset(k, 0, sizeof *k);                 /* safe empty state first */
  luaL_setmetatable(L, KERNEL_T);
  int ud = lua_gettop(L);
  k->dtype = nm_dtype_field(L, 4, NM_FLOAT64);
  k->nin = read_counts(L, 4, "inputs", k, 0);
  k->nout = read_counts(L, 4, "outputs", k, k->nin);
  lua_getfield(L, 4, "scalars");
  k->nscalar = (int)luaL_optinteger(L, -1, 0);
  lua_getfield(L, 4, "scratch");
  k->scratch = (int64_t)luaL_optinteger(L, -1, 0);
  lua_pop(L, 2);
  if (k->nscalar < 0 || k->nscalar > KERNEL_MAXARGS || k->scratch < 0)
    return luaL_error(L, "nm.kernels.load: bad layout (scalars or scratch)");
  lua_getfield(L, 4, "written");
  if (!lua_isnil(L, -1)) {
    if (!lua_istable(L, -1)) return luaL_error(L, "nm.kernels.load: layout.written must be a list");
    int n = (int)luaL_len(L, -1);
    for (int i = 1; i <= n; i++) {
      lua_geti(L, -1, i);
      lua_Integer w = lua_tointeger(L, -1);
      if (!lua_isinteger(L, -1) || w < 1 || w > k->nin)
        return luaL_error(L, "nm.kernels.load: layout.written[%d] must be an input's number", i);
      k->written[w - 1] = 1;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  char err[512];
  void *h = nm_dl_open(path, err, sizeof err);
  if (!h) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, err);
    return 2;
  }
  k->handle = h;                            /* from here __gc closes it */
  const char *have = (const char *)nm_dl_sym(h, "nm_kernel_key");
  if (have == NULL || strcmp(have, key) != 0) {
    release(k);
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: not the kernel expected (key %s)", path, have ? "differs" : "missing");
    return 2;
  }
  k->fn = (nm_kernel_fn)nm_dl_function(h, symbol);
  if (k->fn == NULL) {
    release(k);
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: no function '%s'", path, symbol);
    return 2;
  }
  lua_settop(L, ud);
  return 1;
}

static const char *const DTYPE_NAME[] = {"float32", "float64"};

/* A tensor's bytes [lo, hi) and whether the kernel writes it. */
typedef struct {
  const char *lo, *hi;
  int written, index;
} span;

/* Heapsort by start address: in place, no allocation (glibc's qsort
   allocates and took more time than the kernel of a small step). */
static void sift(span *sp, int root, int n) {
  for (;;) {
    int c = 2 * root + 1;
    if (c >= n) return;
    if (c + 1 < n && sp[c + 1].lo > sp[c].lo) c++;
    if (sp[root].lo >= sp[c].lo) return;
    span t = sp[root]; sp[root] = sp[c]; sp[c] = t;
    root = c;
  }
}

static void sort_spans(span *sp, int n) {
  for (int i = n / 2 - 1; i >= 0; i--) sift(sp, i, n);
  for (int end = n - 1; end > 0; end--) {
    span t = sp[0]; sp[0] = sp[end]; sp[end] = t;
    sift(sp, 0, end);
  }
}

/* The first pair (1-based tensor numbers) of spans that overlap where one
   is written, or 0: sorted by start, a span overlaps an earlier one iff it
   starts before the largest end so far (of any span if it is written, of
   the written ones if it is read). O(n log n): a scan step passes ~100. */
static int find_overlap(span *sp, int n, int *other) {
  sort_spans(sp, n);
  const char *end_all = NULL, *end_written = NULL;
  int who_all = 0, who_written = 0;
  for (int i = 0; i < n; i++) {
    const char *limit = sp[i].written ? end_all : end_written;
    if (limit != NULL && sp[i].lo < limit) {
      *other = sp[i].written ? who_all : who_written;
      return sp[i].index;
    }
    if (end_all == NULL || sp[i].hi > end_all) { end_all = sp[i].hi; who_all = sp[i].index; }
    if (sp[i].written && (end_written == NULL || sp[i].hi > end_written)) {
      end_written = sp[i].hi;
      who_written = sp[i].index;
    }
  }
  return 0;
}

/* Checks the tensors (table at 2) and scalars (table at 3) of a call of
** the kernel at 1 into ptr and sc; returns the number of tensors. */
static int check_args(lua_State *L, nm_kernel *k, void **ptr, double *sc) {
  luaL_checktype(L, 2, LUA_TTABLE);
  int nt = k->nin + k->nout + (k->scratch > 0);
  span sp[KERNEL_MAXARGS + 1];
  if ((int)luaL_len(L, 2) != nt)
    return luaL_error(L, "kernel: %d tensors expected (%d inputs, %d outputs%s), got %d", nt,
                      k->nin, k->nout, k->scratch > 0 ? ", scratch" : "", (int)luaL_len(L, 2));
  size_t esize = k->dtype == NM_FLOAT64 ? sizeof(double) : sizeof(float);
  for (int i = 0; i < nt; i++) {
    lua_geti(L, 2, i + 1);
    const nm_tensor *t = nm_totensor(L, -1);
    int64_t want = i < k->nin + k->nout ? k->numel[i] : k->scratch;
    const char *role = i < k->nin ? "input" : i < k->nin + k->nout ? "output" : "scratch";
    int idx = i < k->nin ? i + 1 : i < k->nin + k->nout ? i - k->nin + 1 : 1;
    if (t == NULL) return luaL_error(L, "kernel: %s %d is not a tensor", role, idx);
    if (t->dtype != k->dtype)
      return luaL_error(L, "kernel: %s %d is %s, the kernel is %s", role, idx,
                        DTYPE_NAME[t->dtype], DTYPE_NAME[k->dtype]);
    if (!nm_is_contiguous(t))
      return luaL_error(L, "kernel: %s %d is not contiguous", role, idx);
    int64_t n = nm_numel(t);
    if (n != want)
      return luaL_error(L, "kernel: %s %d has %I elements, %I expected", role, idx,
                        (lua_Integer)n, (lua_Integer)want);
    ptr[i] = t->data;
    sp[i].lo = (const char *)t->data;
    sp[i].hi = sp[i].lo + (size_t)n * esize;
    sp[i].written = i >= k->nin || k->written[i];
    sp[i].index = i + 1;
    lua_pop(L, 1);                          /* the table keeps it alive */
  }
  /* Outputs, scratch and inputs written in place must not overlap anything. */
  int other = 0, bad = find_overlap(sp, nt, &other);
  if (bad)
    return luaL_error(L, "kernel: tensor %d overlaps tensor %d (outputs must be distinct)",
                      other < bad ? other : bad, other < bad ? bad : other);
  if (k->nscalar > 0) {
    luaL_checktype(L, 3, LUA_TTABLE);
    for (int i = 0; i < k->nscalar; i++) {
      lua_geti(L, 3, i + 1);
      int ok;
      sc[i] = (double)lua_tonumberx(L, -1, &ok);
      if (!ok) return luaL_error(L, "kernel: scalar %d is not a number", i + 1);
      lua_pop(L, 1);
    }
  }
  return nt;
}

/* k:call(tensors, scalars): tensors = {inputs..., outputs..., scratch?} */
static int kernel_call(lua_State *L) {
  nm_kernel *k = checkkernel(L, 1);
  void *ptr[KERNEL_MAXARGS + 1];
  double sc[KERNEL_MAXARGS];
  int nt = check_args(L, k, ptr, sc);
  int status = k->fn(ptr, ptr + k->nin, k->scratch > 0 ? ptr[nt - 1] : NULL, sc);
  if (status != 0) return luaL_error(L, "kernel: failed with status %d", status);
  return 0;
}

/* k:bind(tensors, scalars) -> a KernelCall: the checked arguments of one
** call, kept (their storages and the kernel in its user value), for C code
** that runs the kernel itself (nm_tokernelcall; the microcircuit's
** dynamics call its rules' kernels at every Euler step). */
static int kernel_bind(lua_State *L) {
  nm_kernel *k = checkkernel(L, 1);
  void *ptr[KERNEL_MAXARGS + 1];
  double sc[KERNEL_MAXARGS];
  int nt = check_args(L, k, ptr, sc);
  nm_kernel_call *c = (nm_kernel_call *)lua_newuserdatauv(
      L, sizeof *c + (size_t)nt * sizeof(void *) + (size_t)(k->nscalar + 1) * sizeof(double), 1);
  void **args = (void **)(void *)(c + 1);
  double *scal = (double *)(void *)(args + nt);
  memcpy(args, ptr, (size_t)nt * sizeof(void *));
  memcpy(scal, sc, (size_t)k->nscalar * sizeof(double));
  c->fn = k->fn;
  c->in = args;
  c->out = args + k->nin;
  c->scratch = k->scratch > 0 ? args[nt - 1] : NULL;
  c->sc = scal;
  c->nscalar = k->nscalar;
  int ud = lua_gettop(L);
  /* user value: the kernel (its shared object stays loaded) and every
  ** tensor's storage (the memory outlives a t:close()) */
  lua_createtable(L, nt + 1, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  for (int i = 0; i < nt; i++) {
    lua_geti(L, 2, i + 1);
    lua_getiuservalue(L, -1, 1);
    lua_rawseti(L, -3, i + 2);
    lua_pop(L, 1);
  }
  lua_setiuservalue(L, ud, 1);
  luaL_setmetatable(L, KERNEL_CALL_T);
  return 1;
}

nm_kernel_call *nm_tokernelcall(lua_State *L, int arg) {
  return (nm_kernel_call *)luaL_checkudata(L, arg, KERNEL_CALL_T);
}

int nm_kernelcall_live(lua_State *L, int arg) {
  nm_tokernelcall(L, arg);
  int live = 0;
  if (lua_getiuservalue(L, arg, 1) == LUA_TTABLE && lua_rawgeti(L, -1, 1) == LUA_TUSERDATA) {
    nm_kernel *k = (nm_kernel *)luaL_testudata(L, -1, KERNEL_T);
    live = k != NULL && k->handle != NULL;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return live;
}

/* c:set_scalars(list): the scalars of the next calls. */
static int call_set_scalars(lua_State *L) {
  nm_kernel_call *c = nm_tokernelcall(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  for (int i = 0; i < c->nscalar; i++) {
    lua_geti(L, 2, i + 1);
    int ok;
    double v = (double)lua_tonumberx(L, -1, &ok);
    if (!ok) return luaL_error(L, "kernel call: scalar %d is not a number", i + 1);
    c->sc[i] = v;
    lua_pop(L, 1);
  }
  return 0;
}

/* c:run(): one call. */
static int call_run(lua_State *L) {
  nm_kernel_call *c = nm_tokernelcall(L, 1);
  lua_getiuservalue(L, 1, 1);
  lua_rawgeti(L, -1, 1);
  checkkernel(L, -1);                   /* not closed meanwhile */
  int status = c->fn(c->in, c->out, c->scratch, c->sc);
  if (status != 0) return luaL_error(L, "kernel: failed with status %d", status);
  return 0;
}

static int kernel_tostring(lua_State *L) {
  nm_kernel *k = (nm_kernel *)luaL_checkudata(L, 1, KERNEL_T);
  lua_pushfstring(L, "neuromic.Kernel (%s, %d inputs, %d outputs%s)", DTYPE_NAME[k->dtype],
                  k->nin, k->nout, k->handle ? "" : ", closed");
  return 1;
}

static const luaL_Reg kernel_meth[] = {
  {"call", kernel_call}, {"bind", kernel_bind}, {"close", kernel_release}, {NULL, NULL}
};

static const luaL_Reg call_meth[] = {
  {"set_scalars", call_set_scalars}, {"run", call_run}, {NULL, NULL}
};

static const luaL_Reg kernel_metameth[] = {
  {"__gc", kernel_release}, {"__close", kernel_release}, {"__tostring", kernel_tostring},
  {"__index", NULL}, {NULL, NULL}
};

static const luaL_Reg kernel_funcs[] = {
  {"load", kernel_load}, {NULL, NULL}
};

void nm_open_kernel(lua_State *L, int module, int methods) {
  (void)methods;
  luaL_newmetatable(L, KERNEL_T);
  luaL_setfuncs(L, kernel_metameth, 0);
  luaL_newlib(L, kernel_meth);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, KERNEL_CALL_T);
  luaL_newlib(L, call_meth);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushvalue(L, module);
  luaL_setfuncs(L, kernel_funcs, 0);
  lua_pop(L, 1);
}
