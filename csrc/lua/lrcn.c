/*
** lrcn.c: the neuromic.RCN type, the fused recurrent-chemical-network step
** of nm_rcn.c (forward and adjoint) for rules/rcn.lua.
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lnm.h"
#include "nm_math.h"
#include "nm_rcn.h"

#define RCN_T "neuromic.RCN"

/* User values of an RCN: 1 = trace scratch, 2 = work buffer. */
typedef struct lrcn {
  nm_rcn rcn;
} lrcn;

#define checkrcn(L, i) (&((lrcn *)luaL_checkudata(L, i, RCN_T))->rcn)

/* A buffer kept in user value `slot` of the RCN at index 1, of at least
** `bytes` bytes (replaced only when too small). */
static void *buffer(lua_State *L, int slot, size_t bytes) {
  return nm_scratch(L, 1, slot, bytes);
}

/* Raises "bad argument #1 to 'rcn_net' (msg)" with a formatted message. */
static int opt_error(lua_State *L, const char *msg) {
  return luaL_argerror(L, 1, msg);
}

/* A list field of numbers, exactly `count` long, into out. */
static void number_list(lua_State *L, const char *field, int count, double *out) {
  lua_getfield(L, 1, field);
  if (!lua_istable(L, -1)) {
    lua_pushfstring(L, "field '%s' must be a list of %d numbers", field, count);
    opt_error(L, lua_tostring(L, -1));
  }
  if (luaL_len(L, -1) != count) {
    lua_pushfstring(L, "field '%s' must hold %d numbers (one per chemical), got %d", field, count,
                    (int)luaL_len(L, -1));
    opt_error(L, lua_tostring(L, -1));
  }
  for (int i = 0; i < count; i++) {
    lua_geti(L, -1, i + 1);
    int isnum;
    out[i] = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !isfinite(out[i])) {
      lua_pushfstring(L, "%s[%d] must be a finite number", field, i + 1);
      opt_error(L, lua_tostring(L, -1));
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* nm.kernels.rcn_net{sizes = {n0, ..., nL}, beta = 10, feedback = "fa", dtype =
** "float32", chemicals = L, decay = {y_1..y_L}, gain = {z_1..z_L},
** motifs = {0-based indices}, momentum = false, neuron_bias = false} -> RCN. */
static int l_rcn_net(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  nm_rcn rcn;
  memset(&rcn, 0, sizeof rcn);
  nm_read_motif_net(L, 1, &rcn.net);
  lua_getfield(L, 1, "chemicals");
  int isnum;
  lua_Integer chem = lua_tointegerx(L, -1, &isnum);
  lua_pop(L, 1);
  if (!isnum || chem < 1 || chem > NM_RCN_MAXCHEM) {
    lua_pushfstring(L, "'chemicals' must be an integer in 1..%d", NM_RCN_MAXCHEM);
    return opt_error(L, lua_tostring(L, -1));
  }
  rcn.chemicals = (int)chem;
  number_list(L, "decay", rcn.chemicals, rcn.decay);
  number_list(L, "gain", rcn.chemicals, rcn.gain);
  lua_getfield(L, 1, "momentum");
  rcn.momentum = lua_toboolean(L, -1);
  lua_getfield(L, 1, "neuron_bias");
  rcn.neuron_bias = lua_toboolean(L, -1);
  lua_pop(L, 2);
  lua_getfield(L, 1, "motifs");
  if (lua_isnil(L, -1)) {
    for (int r = 0; r < NM_META_MOTIFS; r++) rcn.use[r] = 1;
  } else {
    if (!lua_istable(L, -1)) return opt_error(L, "'motifs' must be a list of motif indices 0..9");
    lua_Integer k = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= k; i++) {
      lua_geti(L, -1, i);
      lua_Integer r = lua_tointegerx(L, -1, &isnum);
      if (!isnum || r < 0 || r >= NM_META_MOTIFS)
        return opt_error(L, "'motifs' must be a list of motif indices 0..9");
      rcn.use[r] = 1;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  if (nm_rcn_check(&rcn) != NM_OK) return opt_error(L, "invalid network description");
  lrcn *u = (lrcn *)lua_newuserdatauv(L, sizeof(lrcn), 2);
  u->rcn = rcn;
  luaL_setmetatable(L, RCN_T);
  return 1;
}

static int m_info(lua_State *L) {
  const nm_rcn *rcn = checkrcn(L, 1);
  const nm_motif_net *net = &rcn->net;
  lua_createtable(L, 0, 12);
  nm_push_motif_sizes(L, net);
  lua_setfield(L, -2, "sizes");
  lua_pushnumber(L, net->beta);
  lua_setfield(L, -2, "beta");
  lua_pushstring(L, nm_feedback_name(net->feedback));
  lua_setfield(L, -2, "feedback");
  lua_pushstring(L, nm_dtype_name(net->dtype));
  lua_setfield(L, -2, "dtype");
  lua_pushinteger(L, rcn->chemicals);
  lua_setfield(L, -2, "chemicals");
  lua_pushboolean(L, rcn->momentum);
  lua_setfield(L, -2, "momentum");
  lua_pushboolean(L, rcn->neuron_bias);
  lua_setfield(L, -2, "neuron_bias");
  lua_createtable(L, rcn->chemicals, 0);
  for (int c = 0; c < rcn->chemicals; c++) {
    lua_pushnumber(L, rcn->decay[c]);
    lua_rawseti(L, -2, c + 1);
  }
  lua_setfield(L, -2, "decay");
  lua_createtable(L, rcn->chemicals, 0);
  for (int c = 0; c < rcn->chemicals; c++) {
    lua_pushnumber(L, rcn->gain[c]);
    lua_rawseti(L, -2, c + 1);
  }
  lua_setfield(L, -2, "gain");
  lua_newtable(L);
  for (int r = 0, k = 0; r < NM_META_MOTIFS; r++) {
    if (!rcn->use[r]) continue;
    lua_pushinteger(L, r);
    lua_rawseti(L, -2, ++k);
  }
  lua_setfield(L, -2, "motifs");
  lua_pushinteger(L, nm_rcn_trace_size(rcn));
  lua_setfield(L, -2, "trace_size");
  lua_pushinteger(L, nm_rcn_work_size(rcn));
  lua_setfield(L, -2, "work_size");
  return 1;
}

/* rcn:new_trace() -> a 1-D tensor that can hold one step's trace. */
static int m_new_trace(lua_State *L) {
  const nm_rcn *rcn = checkrcn(L, 1);
  int64_t n = nm_rcn_trace_size(rcn);
  nm_newtensor(L, rcn->net.dtype, 1, &n);
  return 1;
}

static int m_tostring(lua_State *L) {
  const nm_rcn *rcn = checkrcn(L, 1);
  const nm_motif_net *net = &rcn->net;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "neuromic.RCN(");
  nm_add_motif_sizes(L, &b, net);
  lua_pushfstring(L, ", %d chemicals%s%s, %s, %s)", rcn->chemicals,
                  rcn->momentum ? ", momentum" : "", rcn->neuron_bias ? ", neuron bias" : "",
                  nm_feedback_name(net->feedback), nm_dtype_name(net->dtype));
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  return 1;
}

/* A list of tensors at arg, one per layer, of shape [L x n_l x n_{l-1}]
** (chem = 1) or [n_l x n_{l-1}] (chem = 0). */
static void get_list(lua_State *L, int arg, const char *what, const nm_rcn *rcn, int chem,
                     const nm_tensor **out) {
  nm_motif_weight_list(L, arg, what, &rcn->net, chem ? rcn->chemicals : 0, 0, out);
}

/* A float64 meta-parameter field `key` of the table at arg, shared
** ([rows x cols], or [rows] when cols == 0) or per layer ([layers x rows x
** cols] / [layers x rows]); *stride gets the layer stride (0 if shared).
** A missing field gives NULL when optional, an error otherwise. The
** tensor stays referenced by the table. */
static double *get_param(lua_State *L, int arg, const char *table, const char *key,
                         const nm_rcn *rcn, int64_t rows, int64_t cols, int64_t *stride,
                         int optional) {
  lua_pushstring(L, key);    /* raw: no metamethod may close a checked tensor */
  lua_rawget(L, arg);
  if (lua_isnil(L, -1) && optional) {
    lua_pop(L, 1);
    *stride = 0;
    return NULL;
  }
  const nm_tensor *t = nm_totensor(L, -1);
  const int layers = rcn->net.layers;
  int shared = 0, ok = t != NULL && t->dtype == NM_FLOAT64 && nm_is_contiguous(t);
  if (ok) {
    if (cols == 0) {
      shared = t->ndim == 1 && t->size[0] == rows;
      ok = shared || (t->ndim == 2 && t->size[0] == layers && t->size[1] == rows);
    } else {
      shared = t->ndim == 2 && t->size[0] == rows && t->size[1] == cols;
      ok = shared || (t->ndim == 3 && t->size[0] == layers && t->size[1] == rows &&
                      t->size[2] == cols);
    }
  }
  if (!ok) {
    char got[96];
    if (t != NULL) nm_shape_str(t, got, sizeof got);
    if (cols == 0)
      lua_pushfstring(L, "%s.%s must be a contiguous float64 [%d] or [%d x %d] tensor, got %s%s%s",
                      table, key, (int)rows, layers, (int)rows,
                      t != NULL ? nm_dtype_name(t->dtype) : luaL_typename(L, -1),
                      t != NULL ? " " : "", t != NULL ? got : "");
    else
      lua_pushfstring(L, "%s.%s must be a contiguous float64 [%d x %d] or [%d x %d x %d] "
                      "tensor, got %s%s%s", table, key, (int)rows, (int)cols, layers, (int)rows,
                      (int)cols, t != NULL ? nm_dtype_name(t->dtype) : luaL_typename(L, -1),
                      t != NULL ? " " : "", t != NULL ? got : "");
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  *stride = shared ? 0 : rows * (cols == 0 ? 1 : cols);
  lua_pop(L, 1);
  return (double *)t->data;
}

/* The params table at arg ({P =, K =, v =, b =}) into p; neuron biases
** into bias[] (b: a list of [L x n_l x n_{l-1}] tensors). */
static void get_params(lua_State *L, int arg, const char *table, const nm_rcn *rcn,
                       nm_rcn_params *p, const nm_tensor **bias, int optional) {
  const int64_t C = rcn->chemicals;
  luaL_checktype(L, arg, LUA_TTABLE);
  p->P = get_param(L, arg, table, "P", rcn, C, NM_META_MOTIFS, &p->P_stride, optional);
  p->K = get_param(L, arg, table, "K", rcn, C, C, &p->K_stride, optional);
  p->v = get_param(L, arg, table, "v", rcn, C, 0, &p->v_stride, optional);
  p->b = NULL;
  p->b_stride = 0;
  p->bias = NULL;
  if (rcn->neuron_bias) {
    lua_pushliteral(L, "b");
    lua_rawget(L, arg);
    if (!lua_isnil(L, -1)) {
      int top = lua_gettop(L);
      char what[32];
      snprintf(what, sizeof what, "%s.b", table);
      get_list(L, top, what, rcn, 1, bias);
      p->bias = bias;
    } else if (!optional) {
      lua_pushfstring(L, "%s.b must be a list of per-synapse bias tensors (neuron_bias)", table);
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    lua_pop(L, 1);
  } else {
    p->b = get_param(L, arg, table, "b", rcn, C, 0, &p->b_stride, 1);
  }
}

/* The trace at arg (a tensor from rcn:new_trace()), or the net's scratch. */
static void *get_trace(lua_State *L, int arg, const nm_rcn *rcn) {
  return nm_motif_trace(L, arg, &rcn->net, nm_rcn_trace_size(rcn), "rcn:new_trace()");
}

/* Checks that the parameters are finite (a NaN would only spread). */
static void check_finite(lua_State *L, int arg, const nm_rcn *rcn, const nm_rcn_params *p) {
  const int C = rcn->chemicals;
  for (int l = 0; l < rcn->net.layers; l++) {
    int ok = 1;
    for (int k = 0; k < C * NM_META_MOTIFS; k++) ok &= isfinite(p->P[l * p->P_stride + k]) != 0;
    for (int k = 0; k < C * C; k++) ok &= isfinite(p->K[l * p->K_stride + k]) != 0;
    for (int k = 0; k < C; k++) ok &= isfinite(p->v[l * p->v_stride + k]) != 0;
    if (p->b != NULL) for (int k = 0; k < C; k++) ok &= isfinite(p->b[l * p->b_stride + k]) != 0;
    if (!ok) luaL_argerror(L, arg, "meta-parameters must be finite");
  }
}

/* rcn:forward(H_out, W_out, H_in, W_in, B, x, label, params [, trace]):
** one online step. H are lists of [L x n_l x n_{l-1}] chemical tensors, W
** lists of weights; the outputs may be the inputs (in place). params =
** {P = [L x 10] or [layers x L x 10], K = [L x L] or [layers x L x L],
** v = [L] or [layers x L], b = the same as v (or nil: 0), or with neuron
** biases a list of [L x n_l x n_{l-1}] tensors}, float64 but for the
** neuron biases (the net's dtype). label is 1-based. Allocates only the
** first time (scratch buffers). */
static int m_forward(lua_State *L) {
  const nm_rcn *rcn = checkrcn(L, 1);
  const nm_tensor *Hout[NM_META_MAXLAYERS], *Wout[NM_META_MAXLAYERS], *Hin[NM_META_MAXLAYERS];
  const nm_tensor *Win[NM_META_MAXLAYERS], *B[NM_META_MAXLAYERS], *bias[NM_META_MAXLAYERS];
  get_list(L, 2, "H_out", rcn, 1, Hout);
  get_list(L, 3, "W_out", rcn, 0, Wout);
  get_list(L, 4, "H_in", rcn, 1, Hin);
  get_list(L, 5, "W_in", rcn, 0, Win);
  nm_motif_feedback_list(L, 6, &rcn->net, B);
  const nm_tensor *x = nm_motif_input(L, 7, &rcn->net);
  int64_t label = nm_motif_label(L, 8, &rcn->net);
  nm_rcn_params p;
  get_params(L, 9, "params", rcn, &p, bias, 0);
  check_finite(L, 9, rcn, &p);
  for (int l = 0; l < rcn->net.layers; l++) {
    if (Hout[l]->data != Hin[l]->data && nm_overlap(Hout[l], Hin[l]))
      return luaL_argerror(L, 2, "H_out overlaps H_in other than in place");
    if (Wout[l]->data != Win[l]->data && nm_overlap(Wout[l], Win[l]))
      return luaL_argerror(L, 3, "W_out overlaps W_in other than in place");
    if (nm_overlap(Hout[l], Wout[l]) || nm_overlap(Hout[l], Win[l]) ||
        nm_overlap(Hin[l], Wout[l]))
      return luaL_argerror(L, 2, "chemicals and weights must not share memory");
  }
  void *trace = get_trace(L, 10, rcn);
  void *work = buffer(L, 2, (size_t)nm_rcn_work_size(rcn) * nm_dtype_size(rcn->net.dtype));
  int st = nm_rcn_forward(rcn, Hout, Wout, Hin, Win, B, x, label, &p, trace, work);
  if (st != NM_OK) return nm_status_error(L, st, "forward");
  return 0;
}

/* rcn:backward(Hbar, Wbar, H_in, W_in, B, trace, params, grads [, H_out]):
** the adjoint of forward. Hbar and Wbar hold dLoss/dH_out, dLoss/dW_out
** and become dLoss/dH_in, dLoss/dW_in (in place). grads = {P =, K =, v =,
** b =} shaped like params (shared or per layer; any may be nil) receive
** the meta-parameter gradients, added. H_out: the forward's output
** chemicals, which spare the adjoint recomputing the tanh (optional).
** Allocates nothing. */
static int m_backward(lua_State *L) {
  const nm_rcn *rcn = checkrcn(L, 1);
  const nm_tensor *Hb[NM_META_MAXLAYERS], *Wb[NM_META_MAXLAYERS], *Hin[NM_META_MAXLAYERS];
  const nm_tensor *Win[NM_META_MAXLAYERS], *B[NM_META_MAXLAYERS], *bias[NM_META_MAXLAYERS];
  const nm_tensor *gbias[NM_META_MAXLAYERS], *Hout[NM_META_MAXLAYERS];
  get_list(L, 2, "Hbar", rcn, 1, Hb);
  get_list(L, 3, "Wbar", rcn, 0, Wb);
  get_list(L, 4, "H_in", rcn, 1, Hin);
  get_list(L, 5, "W_in", rcn, 0, Win);
  nm_motif_feedback_list(L, 6, &rcn->net, B);
  if (lua_isnoneornil(L, 7)) return luaL_argerror(L, 7, "the trace of the forward step expected");
  const void *trace = get_trace(L, 7, rcn);
  nm_rcn_params p;
  get_params(L, 8, "params", rcn, &p, bias, 0);
  check_finite(L, 8, rcn, &p);
  nm_rcn_params gp;
  get_params(L, 9, "grads", rcn, &gp, gbias, 1);
  nm_rcn_grads g;
  g.P = (double *)(uintptr_t)gp.P;
  g.K = (double *)(uintptr_t)gp.K;
  g.v = (double *)(uintptr_t)gp.v;
  g.b = (double *)(uintptr_t)gp.b;
  g.P_stride = gp.P_stride;
  g.K_stride = gp.K_stride;
  g.v_stride = gp.v_stride;
  g.b_stride = gp.b_stride;
  g.bias = gp.bias;
  int have_out = !lua_isnoneornil(L, 10);
  if (have_out) get_list(L, 10, "H_out", rcn, 1, Hout);
  for (int l = 0; l < rcn->net.layers; l++) {
    if (nm_overlap(Hb[l], Hin[l]) || nm_overlap(Hb[l], Win[l]) || nm_overlap(Wb[l], Hin[l]) ||
        nm_overlap(Wb[l], Win[l]) || nm_overlap(Hb[l], Wb[l]) ||
        (have_out && (nm_overlap(Hb[l], Hout[l]) || nm_overlap(Wb[l], Hout[l]))))
      return luaL_argerror(L, 2, "the adjoints must not share memory with the inputs or each other");
  }
  void *work = buffer(L, 2, (size_t)nm_rcn_work_size(rcn) * nm_dtype_size(rcn->net.dtype));
  int st = nm_rcn_backward(rcn, Hb, Wb, Hin, Win, have_out ? Hout : NULL, B, trace, &p, &g, work);
  if (st != NM_OK) return nm_status_error(L, st, "backward");
  return 0;
}

static const luaL_Reg rcn_methods[] = {
  {"forward", m_forward},
  {"backward", m_backward},
  {"info", m_info},
  {"new_trace", m_new_trace},
  {NULL, NULL}
};

static const luaL_Reg rcn_metamethods[] = {
  {"__tostring", m_tostring},
  {"__index", NULL},
  {NULL, NULL}
};

void nm_open_rcn(lua_State *L, int module, int methods) {
  (void)methods;
  luaL_newmetatable(L, RCN_T);
  luaL_setfuncs(L, rcn_metamethods, 0);
  luaL_newlib(L, rcn_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_rcn_net);
  lua_setfield(L, module, "rcn_net");
}
