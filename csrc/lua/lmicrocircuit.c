/*
** lmicrocircuit.c: the neuromic.Microcircuit Lua type, a compiled view of
** a dendritic-microcircuit network (C core in nm_microcircuit.c) whose
** Euler steps run in C, many per call.
**
**   local mc = nm.kernels.microcircuit{
**     sizes = {n0, n1, ..., nN},
**     dt, g_lk, g_B, g_A, g_D, g_som, sigma, tau_in, tau_trgt, tau_w, gamma, beta,
**       theta
**       (numbers), noise = "sqrt_dt" | "dt", rate = "softplus" | "logistic",
**     r0 = [n0], ut = [nN],
**     layers = {{u, r, vB, W_up, D_up, [b_up, Db_up], eta_up,
**                vA, vD, uI, rI, vI, W_down, D_down, W_pi, D_pi, W_ip, D_ip,
**                [b_ip, Db_ip], eta_down, eta_pi, eta_ip}, ..., {output layer}}}
**   mc:run(steps, x [, target [, gen [, learn]]])
**   mc:refresh();  mc:set{sigma = 0, ...};  mc:set_eta(k, "up", eta);  mc:params()
**   mc:set_rule(k, "up", call | nil)   -- the compiled step (KernelCall) mc:run
**     takes for that connection (nil: none; learning with eta != 0 then errs)
**   mc:begin_step(x [, target]); (the rules' steps) ...;
**     mc:end_step(nudged [, gen]); ... mc:finish()   (mc:run's steps in parts)
**
** Every tensor must be a contiguous float64 tensor of the shape the layer
** sizes give. The object keeps the tensors' storage alive and works on it
** in place: change weights and state with t:copy(...), never by binding a
** new tensor to the Lua field (the object would not see it).
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lnm.h"
#include "nm_microcircuit.h"

#define MICROCIRCUIT_T "neuromic.Microcircuit"
#define GENERATOR_T "neuromic.Generator"

/* The userdata: the network, then its scratch (net.work), then the
** identities of the tensor storages it works on, which user value 1 (a
** list) keeps alive. */
typedef struct lmc {
  nm_mc_net net;
  lua_Integer nkeep;
  const void **keep;
} lmc;

/* The network at i, once its storages are checked to be still the ones
** it was built on: the debug library can replace or empty the list
** (debug.setuservalue, debug.getuservalue), and the collector would then
** free memory the network writes to. */
static nm_mc_net *checkmc(lua_State *L, int i) {
  lmc *m = (lmc *)luaL_checkudata(L, i, MICROCIRCUIT_T);
  int ok = lua_getiuservalue(L, i, 1) == LUA_TTABLE && lua_rawlen(L, -1) == (lua_Unsigned)m->nkeep;
  for (lua_Integer k = 0; ok && k < m->nkeep; k++) {
    lua_rawgeti(L, -1, k + 1);
    ok = lua_touserdata(L, -1) == m->keep[k];
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (!ok)
    luaL_error(L, "microcircuit: the storage of the network's tensors was replaced "
               "(debug.setuservalue); the network cannot be used");
  return &m->net;
}

/* ------------------------------------------------------------ spec reading */

/* Raises "bad argument #<arg> to '<function>' (<where>field '<name>' ...)":
** arg is the spec's argument, tab (a stack index) the table read, the spec
** itself or one of its layer tables. */
static int field_error(lua_State *L, int arg, const char *where, const char *name,
                       const char *msg) {
  lua_pushfstring(L, "%sfield '%s' %s", where, name, msg);
  return luaL_argerror(L, arg, lua_tostring(L, -1));
}

static double num_field(lua_State *L, int arg, int tab, const char *name, const char *where) {
  lua_getfield(L, tab, name);
  int ok = 0;
  double v = lua_tonumberx(L, -1, &ok);
  if (!ok || !isfinite(v)) field_error(L, arg, where, name, "must be a finite number");
  lua_pop(L, 1);
  return v;
}

static int choice_field(lua_State *L, int arg, int tab, const char *name, const char *where,
                        const char *const names[], const char *expect) {
  lua_getfield(L, tab, name);
  const char *s = lua_tostring(L, -1);
  for (int i = 0; s && names[i]; i++)
    if (strcmp(s, names[i]) == 0) { lua_pop(L, 1); return i; }
  field_error(L, arg, where, name, expect);
  return 0;
}

/* A float64 tensor field of shape [rows] (cols < 0) or [rows x cols];
** NULL when absent and optional. Its storage goes into the table at
** `keep` (one more reference), so the memory outlives a t:close(). */
static double *tensor_field(lua_State *L, int tab, const char *name, const char *where,
                            int64_t rows, int64_t cols, int required, int keep) {
  lua_getfield(L, tab, name);
  if (lua_isnil(L, -1) && !required) { lua_pop(L, 1); return NULL; }
  nm_tensor *t = nm_totensor(L, -1);
  int ndim = cols < 0 ? 1 : 2;
  int ok = t != NULL && t->dtype == NM_FLOAT64 && t->ndim == ndim && nm_is_contiguous(t) &&
           t->size[0] == rows && (ndim == 1 || t->size[1] == cols);
  if (!ok) {
    char want[64], got[96];
    if (ndim == 1) snprintf(want, sizeof want, "[%lld]", (long long)rows);
    else snprintf(want, sizeof want, "[%lld x %lld]", (long long)rows, (long long)cols);
    if (t) {
      char shape[80];
      nm_shape_str(t, shape, sizeof shape);
      snprintf(got, sizeof got, "%s %s%s", nm_dtype_name(t->dtype), shape,
               nm_is_contiguous(t) ? "" : " (strided)");
    } else {
      snprintf(got, sizeof got, "%s", luaL_typename(L, -1));
    }
    lua_pushfstring(L, "must be a contiguous float64 tensor %s, got %s", want, got);
    field_error(L, 1, where, name, lua_tostring(L, -1));
  }
  lua_getiuservalue(L, -1, 1);                  /* the storage */
  lua_rawseti(L, keep, (lua_Integer)lua_rawlen(L, keep) + 1);
  lua_pop(L, 1);
  return (double *)t->data;
}

static void read_params(lua_State *L, int tab, nm_mc_params *p, const char *where) {
  static const char *const noises[] = {"sqrt_dt", "dt", NULL};
  static const char *const rates[] = {"softplus", "logistic", NULL};
  p->dt = num_field(L, 1, tab, "dt", where);
  p->g_lk = num_field(L, 1, tab, "g_lk", where);
  p->g_B = num_field(L, 1, tab, "g_B", where);
  p->g_A = num_field(L, 1, tab, "g_A", where);
  p->g_D = num_field(L, 1, tab, "g_D", where);
  p->g_som = num_field(L, 1, tab, "g_som", where);
  p->sigma = num_field(L, 1, tab, "sigma", where);
  p->tau_in = num_field(L, 1, tab, "tau_in", where);
  p->tau_trgt = num_field(L, 1, tab, "tau_trgt", where);
  p->tau_w = num_field(L, 1, tab, "tau_w", where);
  p->gamma = num_field(L, 1, tab, "gamma", where);
  p->beta = num_field(L, 1, tab, "beta", where);
  p->theta = num_field(L, 1, tab, "theta", where);
  p->noise = (nm_mc_noise)choice_field(L, 1, tab, "noise", where, noises,
                                       "must be \"sqrt_dt\" or \"dt\"");
  p->rate = (nm_mc_rate)choice_field(L, 1, tab, "rate", where, rates,
                                     "must be \"softplus\" or \"logistic\"");
}

static void check_params(lua_State *L, const nm_mc_params *p, int arg) {
  const char *what = "?";
  if (nm_mc_check_params(p, &what) != NM_OK) {
    lua_pushfstring(L, "bad value of '%s' (dt, tau_w, beta > 0; conductances, sigma, "
                    "tau_in, tau_trgt >= 0)", what);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
}

/* ------------------------------------------------------------ aliasing */

/* The arrays a network works on, as byte ranges with the spec field that
** gave them (layer 0: r0, ut). The kernels write most of them while they
** read the others, so two that share memory would give silently wrong
** numbers (and break the restrict promises of the plasticity loops). */
typedef struct mc_array {
  const char *name;
  int layer;
  uintptr_t lo, hi;
} mc_array;

#define MC_MAX_ARRAYS (2 + 20 * NM_MC_MAXLAYERS)

static void add_array(mc_array *a, int *n, const char *name, int layer, const double *p,
                      int64_t count) {
  if (p == NULL) return;
  a[*n].name = name;
  a[*n].layer = layer;
  a[*n].lo = (uintptr_t)p;
  a[*n].hi = (uintptr_t)(p + count);
  (*n)++;
}

static int mc_arrays(const nm_mc_net *net, mc_array *a) {
  int n = 0, N = net->N;
  add_array(a, &n, "r0", 0, net->r0, net->n0);
  add_array(a, &n, "ut", 0, net->ut, net->layer[N].n);
  for (int k = 1; k <= N; k++) {
    const nm_mc_layer *Lk = &net->layer[k];
    int64_t m = Lk->n, pre = k == 1 ? net->n0 : net->layer[k - 1].n;
    add_array(a, &n, "u", k, Lk->u, m);
    add_array(a, &n, "r", k, Lk->r, m);
    add_array(a, &n, "vB", k, Lk->vB, m);
    add_array(a, &n, "W_up", k, Lk->W_up, m * pre);
    add_array(a, &n, "D_up", k, Lk->D_up, m * pre);
    add_array(a, &n, "b_up", k, Lk->b_up, m);
    add_array(a, &n, "Db_up", k, Lk->Db_up, m);
    if (k == N) break;
    int64_t next = net->layer[k + 1].n;
    add_array(a, &n, "vA", k, Lk->vA, m);
    add_array(a, &n, "vD", k, Lk->vD, m);
    add_array(a, &n, "uI", k, Lk->uI, next);
    add_array(a, &n, "rI", k, Lk->rI, next);
    add_array(a, &n, "vI", k, Lk->vI, next);
    add_array(a, &n, "W_down", k, Lk->W_down, m * next);
    add_array(a, &n, "D_down", k, Lk->D_down, m * next);
    add_array(a, &n, "W_pi", k, Lk->W_pi, m * next);
    add_array(a, &n, "D_pi", k, Lk->D_pi, m * next);
    add_array(a, &n, "W_ip", k, Lk->W_ip, next * m);
    add_array(a, &n, "D_ip", k, Lk->D_ip, next * m);
    add_array(a, &n, "b_ip", k, Lk->b_ip, next);
    add_array(a, &n, "Db_ip", k, Lk->Db_ip, next);
  }
  return n;
}

/* Pushes "layers[k] field 'name'" (or "field 'name'" for layer 0). */
static void push_array_name(lua_State *L, const mc_array *a) {
  if (a->layer == 0) lua_pushfstring(L, "field '%s'", a->name);
  else lua_pushfstring(L, "layers[%d] field '%s'", a->layer, a->name);
}

static int ranges_overlap(uintptr_t lo1, uintptr_t hi1, uintptr_t lo2, uintptr_t hi2) {
  return lo1 < hi2 && lo2 < hi1;
}

/* Raises an argument error at arg when two arrays of the network share
** memory. */
static void check_arrays_disjoint(lua_State *L, const nm_mc_net *net, int arg) {
  mc_array a[MC_MAX_ARRAYS];
  int n = mc_arrays(net, a);
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      if (ranges_overlap(a[i].lo, a[i].hi, a[j].lo, a[j].hi)) {
        push_array_name(L, &a[j]);
        push_array_name(L, &a[i]);
        lua_pushfstring(L, "%s shares memory with %s", lua_tostring(L, -2), lua_tostring(L, -1));
        luaL_argerror(L, arg, lua_tostring(L, -1));
      }
}

/* Raises an argument error at arg when the input vector v (n doubles, read
** at every step) shares memory with an array the network writes. */
static void check_input_disjoint(lua_State *L, const nm_mc_net *net, int arg, const char *what,
                                 const double *v, int64_t n) {
  mc_array a[MC_MAX_ARRAYS];
  int count = mc_arrays(net, a);
  uintptr_t lo = (uintptr_t)v, hi = (uintptr_t)(v + n);
  for (int i = 0; i < count; i++)
    if (ranges_overlap(lo, hi, a[i].lo, a[i].hi)) {
      push_array_name(L, &a[i]);
      lua_pushfstring(L, "%s shares memory with the network's %s", what, lua_tostring(L, -1));
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
}

/* nm.kernels.microcircuit(spec) -> a Microcircuit bound to the spec's tensors. */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_newtable(L);                              /* 2: storages kept alive */
  int keep = 2;
  nm_mc_net net;
  memset(&net, 0, sizeof net);
  int64_t size[NM_MC_MAXLAYERS + 1];

  lua_getfield(L, 1, "sizes");
  if (!lua_istable(L, -1)) field_error(L, 1, "", "sizes", "must be a list of layer sizes");
  int nsizes = (int)lua_rawlen(L, -1);
  if (nsizes < 2 || nsizes > NM_MC_MAXLAYERS + 1) {
    lua_pushfstring(L, "must list 2 to %d layer sizes, got %d", NM_MC_MAXLAYERS + 1, nsizes);
    field_error(L, 1, "", "sizes", lua_tostring(L, -1));
  }
  for (int k = 0; k < nsizes; k++) {
    lua_rawgeti(L, -1, k + 1);
    int isint = 0;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (!isint || v < 1 || v > (1 << 24)) field_error(L, 1, "", "sizes", "must hold positive integers");
    size[k] = v;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  net.N = nsizes - 1;
  net.n0 = size[0];
  int N = net.N;

  read_params(L, 1, &net.p, "");
  check_params(L, &net.p, 1);
  net.r0 = tensor_field(L, 1, "r0", "", size[0], -1, 1, keep);
  net.ut = tensor_field(L, 1, "ut", "", size[N], -1, 1, keep);

  lua_getfield(L, 1, "layers");
  if (!lua_istable(L, -1) || (int)lua_rawlen(L, -1) != N) {
    lua_pushfstring(L, "must be a list of %d layer tables", N);
    field_error(L, 1, "", "layers", lua_tostring(L, -1));
  }
  int layers = lua_gettop(L);
  for (int k = 1; k <= N; k++) {
    char where[32];
    snprintf(where, sizeof where, "layers[%d] ", k);
    lua_rawgeti(L, layers, k);
    if (!lua_istable(L, -1)) field_error(L, 1, "", "layers", "must hold tables");
    int tab = lua_gettop(L);
    nm_mc_layer *Lk = &net.layer[k];
    int64_t n = size[k], npre = size[k - 1];
    Lk->n = n;
    Lk->u = tensor_field(L, tab, "u", where, n, -1, 1, keep);
    Lk->r = tensor_field(L, tab, "r", where, n, -1, 1, keep);
    Lk->vB = tensor_field(L, tab, "vB", where, n, -1, 1, keep);
    Lk->W_up = tensor_field(L, tab, "W_up", where, n, npre, 1, keep);
    Lk->D_up = tensor_field(L, tab, "D_up", where, n, npre, 1, keep);
    Lk->b_up = tensor_field(L, tab, "b_up", where, n, -1, 0, keep);
    if (Lk->b_up) Lk->Db_up = tensor_field(L, tab, "Db_up", where, n, -1, 1, keep);
    Lk->eta_up = num_field(L, 1, tab, "eta_up", where);
    if (k < N) {
      int64_t nn = size[k + 1];
      Lk->vA = tensor_field(L, tab, "vA", where, n, -1, 1, keep);
      Lk->vD = tensor_field(L, tab, "vD", where, n, -1, 1, keep);
      Lk->uI = tensor_field(L, tab, "uI", where, nn, -1, 1, keep);
      Lk->rI = tensor_field(L, tab, "rI", where, nn, -1, 1, keep);
      Lk->vI = tensor_field(L, tab, "vI", where, nn, -1, 1, keep);
      Lk->W_down = tensor_field(L, tab, "W_down", where, n, nn, 1, keep);
      Lk->D_down = tensor_field(L, tab, "D_down", where, n, nn, 1, keep);
      Lk->W_pi = tensor_field(L, tab, "W_pi", where, n, nn, 1, keep);
      Lk->D_pi = tensor_field(L, tab, "D_pi", where, n, nn, 1, keep);
      Lk->W_ip = tensor_field(L, tab, "W_ip", where, nn, n, 1, keep);
      Lk->D_ip = tensor_field(L, tab, "D_ip", where, nn, n, 1, keep);
      Lk->b_ip = tensor_field(L, tab, "b_ip", where, nn, -1, 0, keep);
      if (Lk->b_ip) Lk->Db_ip = tensor_field(L, tab, "Db_ip", where, nn, -1, 1, keep);
      Lk->eta_down = num_field(L, 1, tab, "eta_down", where);
      Lk->eta_pi = num_field(L, 1, tab, "eta_pi", where);
      Lk->eta_ip = num_field(L, 1, tab, "eta_ip", where);
    }
    lua_settop(L, layers);
  }
  lua_settop(L, keep);
  check_arrays_disjoint(L, &net, 1);

  /* The scratch lives in the same userdata, after the struct, then the
  ** storages' identities. */
  int64_t work = nm_mc_work_size(&net);
  lua_Integer nkeep = (lua_Integer)lua_rawlen(L, keep);
  lmc *m = (lmc *)lua_newuserdatauv(L, sizeof(lmc) + (size_t)work * sizeof(double) +
                                           (size_t)nkeep * sizeof(void *), 2);
  nm_mc_net *obj = &m->net;
  memcpy(obj, &net, sizeof net);
  obj->work = (double *)(void *)(m + 1);
  memset(obj->work, 0, (size_t)work * sizeof(double));
  m->nkeep = nkeep;
  m->keep = (const void **)(void *)(obj->work + work);
  for (lua_Integer k = 0; k < nkeep; k++) {
    lua_rawgeti(L, keep, k + 1);
    m->keep[k] = lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  lua_pushvalue(L, keep);
  lua_setiuservalue(L, -2, 1);
  lua_newtable(L);                              /* user value 2: the rules' calls */
  lua_setiuservalue(L, -2, 2);
  luaL_setmetatable(L, MICROCIRCUIT_T);
  nm_mc_refresh(obj);
  return 1;
}

/* ------------------------------------------------------------ methods */

/* A contiguous float64 vector of n elements at arg (or NULL when nil and
** optional). */
static const double *checkvec(lua_State *L, int arg, int64_t n, int optional) {
  if (optional && lua_isnoneornil(L, arg)) return NULL;
  nm_tensor *t = nm_checktensor(L, arg);
  if (t->dtype != NM_FLOAT64 || t->ndim != 1 || t->size[0] != n || !nm_is_contiguous(t)) {
    char shape[80];
    nm_shape_str(t, shape, sizeof shape);
    lua_pushfstring(L, "contiguous float64 tensor [%I] expected, got %s %s%s", (lua_Integer)n,
                    nm_dtype_name(t->dtype), shape, nm_is_contiguous(t) ? "" : " (strided)");
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  return (const double *)t->data;
}

/* Raises an error when a compiled rule's kernel was closed (its code
** unloaded) while the network still calls it. */
static void check_rules(lua_State *L, int i) {
  if (lua_getiuservalue(L, i, 2) != LUA_TTABLE) luaL_error(L, "microcircuit: rules table missing");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (!nm_kernelcall_live(L, lua_gettop(L)))
      luaL_error(L, "microcircuit: the kernel of a compiled rule was closed");
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* A run's status as Lua sees it: nothing, or an error. */
static int run_status(lua_State *L, int status) {
  if (status == NM_ENONFINITE)
    return luaL_error(L, "microcircuit: a membrane potential became NaN or infinite "
                         "(learning rates or weights too large?)");
  if (status != NM_OK) return nm_status_error(L, status, "microcircuit");
  return 0;
}

/* mc:run(steps, x [, target [, gen [, learn]]]): `steps` Euler steps with
** input x [n0] and target potentials [nN] (nil: no nudging); gen draws the
** noise (required when sigma > 0); learn (default true) switches the
** plasticity. Allocates nothing. */
static int m_run(lua_State *L) {
  nm_mc_net *net = checkmc(L, 1);
  lua_Integer steps = luaL_checkinteger(L, 2);
  luaL_argcheck(L, steps >= 0, 2, "number of steps must be >= 0");
  const double *x = checkvec(L, 3, net->n0, 0);
  const double *target = checkvec(L, 4, net->layer[net->N].n, 1);
  nm_rng *g = NULL;
  if (!lua_isnoneornil(L, 5)) g = (nm_rng *)luaL_checkudata(L, 5, GENERATOR_T);
  if (g == NULL && net->p.sigma > 0)
    luaL_argerror(L, 5, "a generator is needed when sigma > 0");
  int learn = lua_isnoneornil(L, 6) ? 1 : lua_toboolean(L, 6);
  check_input_disjoint(L, net, 3, "x", x, net->n0);
  if (target) check_input_disjoint(L, net, 4, "target", target, net->layer[net->N].n);
  if (learn) {
    int k;
    nm_mc_pathway kind;
    check_rules(L, 1);
    if (!nm_mc_rules_ready(net, &k, &kind)) {
      static const char *const names[] = {"up", "ip", "pi", "down"};
      return luaL_error(L, "microcircuit: W_%s%d learns (eta ~= 0) but has no rule bound "
                           "(mc:set_rule)", names[kind], k);
    }
  }
  return run_status(L, nm_mc_run(net, (int64_t)steps, x, target, g, learn));
}

/* mc:refresh(): rates and dendritic potentials from the present state. */
static int m_refresh(lua_State *L) {
  nm_mc_refresh(checkmc(L, 1));
  return 0;
}

/* mc:set{name = value, ...}: changes constants (the names of the spec);
** all or nothing. */
static int m_set(lua_State *L) {
  nm_mc_net *net = checkmc(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  nm_mc_params p = net->p;
  static const char *const names[] = {"dt", "g_lk", "g_B", "g_A", "g_D", "g_som", "sigma",
                                      "tau_in", "tau_trgt", "tau_w", "gamma", "beta", "theta",
                                      NULL};
  double *slots[] = {&p.dt, &p.g_lk, &p.g_B, &p.g_A, &p.g_D, &p.g_som, &p.sigma,
                     &p.tau_in, &p.tau_trgt, &p.tau_w, &p.gamma, &p.beta, &p.theta};
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int found = 0;
    for (int i = 0; key && names[i]; i++) {
      if (strcmp(key, names[i]) == 0) {
        int ok = 0;
        double v = lua_tonumberx(L, -1, &ok);
        if (!ok) {
          lua_pushfstring(L, "'%s' must be a number", key);
          luaL_argerror(L, 2, lua_tostring(L, -1));
        }
        *slots[i] = v;
        found = 1;
      }
    }
    if (key && strcmp(key, "noise") == 0) {
      const char *s = lua_tostring(L, -1);
      if (s && strcmp(s, "sqrt_dt") == 0) p.noise = NM_MC_NOISE_SQRT_DT;
      else if (s && strcmp(s, "dt") == 0) p.noise = NM_MC_NOISE_DT;
      else luaL_argerror(L, 2, "'noise' must be \"sqrt_dt\" or \"dt\"");
      found = 1;
    } else if (key && strcmp(key, "rate") == 0) {
      const char *s = lua_tostring(L, -1);
      if (s && strcmp(s, "softplus") == 0) p.rate = NM_MC_SOFTPLUS;
      else if (s && strcmp(s, "logistic") == 0) p.rate = NM_MC_LOGISTIC;
      else luaL_argerror(L, 2, "'rate' must be \"softplus\" or \"logistic\"");
      found = 1;
    }
    if (!found) {
      lua_pushfstring(L, "unknown constant '%s'", key ? key : luaL_typename(L, -2));
      luaL_argerror(L, 2, lua_tostring(L, -1));
    }
    lua_pop(L, 1);
  }
  check_params(L, &p, 2);
  net->p = p;
  return 0;
}

/* The layer (at arg) and pathway (at arg + 1) of a connection, checked
** against the network: k in [1, N], and only "up" on the output layer. */
static nm_mc_pathway check_connection(lua_State *L, const nm_mc_net *net, int arg, int *k) {
  static const char *const kinds[] = {"up", "ip", "pi", "down", NULL};
  lua_Integer layer = luaL_checkinteger(L, arg);
  int kind = luaL_checkoption(L, arg + 1, NULL, kinds);
  if (layer < 1 || layer > net->N) {
    lua_pushfstring(L, "layer %I out of range [1, %d]", layer, net->N);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  if (kind > 0 && layer == net->N) luaL_argerror(L, arg, "the output layer has only W_up");
  *k = (int)layer;
  return (nm_mc_pathway)kind;
}

/* A finite learning rate at arg. */
static double check_eta(lua_State *L, int arg) {
  double eta = luaL_checknumber(L, arg);
  luaL_argcheck(L, isfinite(eta), arg, "learning rate must be finite");
  return eta;
}

/* mc:set_eta(k, "up" | "ip" | "pi" | "down", eta) */
static int m_set_eta(lua_State *L) {
  nm_mc_net *net = checkmc(L, 1);
  int k;
  nm_mc_pathway kind = check_connection(L, net, 2, &k);
  double eta = check_eta(L, 4);
  nm_mc_layer *Lk = &net->layer[k];
  double *slot[] = {&Lk->eta_up, &Lk->eta_ip, &Lk->eta_pi, &Lk->eta_down};
  *slot[kind] = eta;
  return 0;
}

/* mc:set_rule(k, "up" | "ip" | "pi" | "down", call | nil): the compiled
** step (a KernelCall bound to this network's tensors) that mc:run takes
** for that connection; nil: none. */
static int m_set_rule(lua_State *L) {
  nm_mc_net *net = checkmc(L, 1);
  int k;
  nm_mc_pathway kind = check_connection(L, net, 2, &k);
  nm_mc_rule *r = &net->layer[k].rule[kind];
  int reset = lua_isnoneornil(L, 4);
  nm_kernel_call *c = NULL;
  if (!reset) {
    c = nm_tokernelcall(L, 4);
    if (!nm_kernelcall_live(L, 4)) luaL_argerror(L, 4, "the kernel was closed");
  }
  lua_settop(L, 4);
  lua_getiuservalue(L, 1, 2);
  if (reset) {
    memset(r, 0, sizeof *r);
  } else {
    r->fn = (nm_mc_rule_fn)c->fn;
    r->in = c->in;
    r->scratch = c->scratch;
    r->sc = c->sc;
  }
  lua_pushvalue(L, 4);
  lua_rawseti(L, -2, k * 4 + (int)kind);       /* kept alive while set */
  return 0;
}

/* mc:begin_step(x [, target]): the first part of one Euler step (input
** low-pass, rates and potentials refreshed). */
static int m_begin_step(lua_State *L) {
  nm_mc_net *net = checkmc(L, 1);
  const double *x = checkvec(L, 2, net->n0, 0);
  const double *target = checkvec(L, 3, net->layer[net->N].n, 1);
  check_input_disjoint(L, net, 2, "x", x, net->n0);
  if (target) check_input_disjoint(L, net, 3, "target", target, net->layer[net->N].n);
  nm_mc_begin_step(net, x, target);
  return 0;
}

/* mc:end_step(nudged [, gen]): the rest of the step (the potentials). */
static int m_end_step(lua_State *L) {
  nm_mc_net *net = checkmc(L, 1);
  int nudged = lua_toboolean(L, 2);
  nm_rng *g = NULL;
  if (!lua_isnoneornil(L, 3)) g = (nm_rng *)luaL_checkudata(L, 3, GENERATOR_T);
  if (g == NULL && net->p.sigma > 0)
    luaL_argerror(L, 3, "a generator is needed when sigma > 0");
  int status = nm_mc_end_step(net, nudged, g);
  if (status == NM_EINTR) nm_mc_refresh(net);
  if (status != NM_OK) return nm_status_error(L, status, "microcircuit");
  return 0;
}

/* mc:finish(): refresh after the last step; an error when a potential is
** not finite. */
static int m_finish(lua_State *L) {
  return run_status(L, nm_mc_finish(checkmc(L, 1)));
}

/* mc:params() -> table of the constants and the learning rates. */
static int m_params(lua_State *L) {
  nm_mc_net *net = checkmc(L, 1);
  const nm_mc_params *p = &net->p;
  lua_createtable(L, 0, 20);
  const char *names[] = {"dt", "g_lk", "g_B", "g_A", "g_D", "g_som", "sigma",
                         "tau_in", "tau_trgt", "tau_w", "gamma", "beta", "theta"};
  double vals[] = {p->dt, p->g_lk, p->g_B, p->g_A, p->g_D, p->g_som, p->sigma,
                   p->tau_in, p->tau_trgt, p->tau_w, p->gamma, p->beta, p->theta};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    lua_pushnumber(L, vals[i]);
    lua_setfield(L, -2, names[i]);
  }
  lua_pushstring(L, p->noise == NM_MC_NOISE_DT ? "dt" : "sqrt_dt");
  lua_setfield(L, -2, "noise");
  lua_pushstring(L, p->rate == NM_MC_LOGISTIC ? "logistic" : "softplus");
  lua_setfield(L, -2, "rate");
  lua_createtable(L, net->N, 0);
  for (int k = 1; k <= net->N; k++) {
    const nm_mc_layer *Lk = &net->layer[k];
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, Lk->eta_up);
    lua_setfield(L, -2, "up");
    if (k < net->N) {
      lua_pushnumber(L, Lk->eta_ip);
      lua_setfield(L, -2, "ip");
      lua_pushnumber(L, Lk->eta_pi);
      lua_setfield(L, -2, "pi");
      lua_pushnumber(L, Lk->eta_down);
      lua_setfield(L, -2, "down");
    }
    lua_rawseti(L, -2, k);
  }
  lua_setfield(L, -2, "eta");
  return 1;
}

/* nm.kernels.mc_phi(r, u, spec): r = phi(u) for float64 tensors with the rate
** function of spec (rate, gamma, beta, theta), as the C dynamics use it. */
static int l_phi(lua_State *L) {
  /* The spec first: reading it may run metamethods (that could close r or
  ** u); the tensors are checked after, right before the kernel. */
  luaL_checktype(L, 3, LUA_TTABLE);
  nm_mc_params p;
  memset(&p, 0, sizeof p);
  static const char *const rates[] = {"softplus", "logistic", NULL};
  p.rate = (nm_mc_rate)choice_field(L, 3, 3, "rate", "", rates, "must be \"softplus\" or \"logistic\"");
  p.gamma = num_field(L, 3, 3, "gamma", "");
  p.beta = num_field(L, 3, 3, "beta", "");
  p.theta = num_field(L, 3, 3, "theta", "");
  luaL_argcheck(L, p.beta > 0, 3, "beta must be > 0");
  nm_tensor *r = nm_checktensor(L, 1), *u = nm_checktensor(L, 2);
  if (r->dtype != NM_FLOAT64 || u->dtype != NM_FLOAT64 || !nm_is_contiguous(r) ||
      !nm_is_contiguous(u))
    luaL_argerror(L, 1, "contiguous float64 tensors expected");
  nm_check_same_shape(L, 2, r, u);
  if (r->data != u->data) {         /* in place is fine; a shifted overlap is not */
    const int args[] = {1, 2};
    const char *const names[] = {"r", "u"};
    const nm_tensor *const ts[] = {r, u};
    nm_check_disjoint(L, 1, 2, args, names, ts);
  }
  nm_mc_phi(&p, (double *)r->data, (const double *)u->data, nm_numel(u));
  lua_settop(L, 1);
  return 1;
}

static int m_tostring(lua_State *L) {
  nm_mc_net *net = checkmc(L, 1);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, MICROCIRCUIT_T " ");
  lua_pushfstring(L, "%I", (lua_Integer)net->n0);
  luaL_addvalue(&b);
  for (int k = 1; k <= net->N; k++) {
    lua_pushfstring(L, "-%I", (lua_Integer)net->layer[k].n);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return 1;
}

static const luaL_Reg mc_methods[] = {
  {"run", m_run},
  {"refresh", m_refresh},
  {"set", m_set},
  {"set_eta", m_set_eta},
  {"set_rule", m_set_rule},
  {"begin_step", m_begin_step},
  {"end_step", m_end_step},
  {"finish", m_finish},
  {"params", m_params},
  {NULL, NULL}
};

static const luaL_Reg mc_metamethods[] = {
  {"__tostring", m_tostring},
  {"__index", NULL},
  {NULL, NULL}
};

static const luaL_Reg mc_functions[] = {
  {"microcircuit", l_new},
  {"mc_phi", l_phi},
  {NULL, NULL}
};

void nm_open_microcircuit(lua_State *L, int module, int methods) {
  (void)methods;
  luaL_newmetatable(L, MICROCIRCUIT_T);
  luaL_setfuncs(L, mc_metamethods, 0);
  luaL_newlib(L, mc_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushvalue(L, module);
  luaL_setfuncs(L, mc_functions, 0);
  lua_pop(L, 1);
}
