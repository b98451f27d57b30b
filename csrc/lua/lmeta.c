/*
** lmeta.c: the neuromic.MotifNet type, the fused motif plasticity step of
** nm_meta.c (forward, adjoint, query loss) for rules/motifs.lua and
** lua/nm/models/meta.lua.
*/
#include <math.h>
#include <string.h>

#include "lnm.h"
#include "nm_math.h"
#include "nm_meta.h"

#define MOTIFNET_T "neuromic.MotifNet"

/* User values of a MotifNet: 1 = trace scratch, 2 = work buffer, 3 =
** query work (grown on demand), 4 = query labels (grown on demand). */
typedef struct lmotifnet {
  nm_motif_net net;
} lmotifnet;

#define checknet(L, i) (&((lmotifnet *)luaL_checkudata(L, i, MOTIFNET_T))->net)

/* A buffer kept in user value `slot` of the net at index 1, of at least
** `bytes` bytes (replaced only when too small). */
static void *buffer(lua_State *L, int slot, size_t bytes) {
  return nm_scratch(L, 1, slot, bytes);
}

static const char *const feedback_names[] = {"fa", "bp", "bp_detached", NULL};

const char *nm_feedback_name(nm_feedback fb) { return feedback_names[fb]; }

void nm_read_motif_net(lua_State *L, int arg, nm_motif_net *net) {
  memset(net, 0, sizeof *net);
  lua_getfield(L, arg, "sizes");
  if (!lua_istable(L, -1)) luaL_argerror(L, arg, "field 'sizes' must be a list of layer widths");
  lua_Integer count = luaL_len(L, -1);
  if (count < 2 || count > NM_META_MAXLAYERS + 1) {
    lua_pushfstring(L, "'sizes' must list 2 to %d layer widths, got %d", NM_META_MAXLAYERS + 1,
                    (int)count);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  net->layers = (int)count - 1;
  for (int l = 0; l <= net->layers; l++) {
    lua_geti(L, -1, l + 1);
    int isnum;
    lua_Integer v = lua_tointegerx(L, -1, &isnum);
    if (!isnum || v < 1 || v > (1 << 24)) {
      lua_pushfstring(L, "sizes[%d] must be an integer in 1..16777216", l + 1);
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    net->sizes[l] = v;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_getfield(L, arg, "beta");
  net->beta = luaL_optnumber(L, -1, 10.0);
  lua_pop(L, 1);
  if (!(net->beta > 0) || net->beta > 1e6) luaL_argerror(L, arg, "'beta' must be positive");
  lua_getfield(L, arg, "feedback");
  const char *fb = luaL_optstring(L, -1, "fa");
  int which = -1;
  for (int i = 0; feedback_names[i] != NULL; i++)
    if (strcmp(fb, feedback_names[i]) == 0) which = i;
  lua_pop(L, 1);
  if (which < 0) luaL_argerror(L, arg, "'feedback' must be \"fa\", \"bp\" or \"bp_detached\"");
  net->feedback = (nm_feedback)which;
  net->dtype = nm_dtype_field(L, arg, NM_FLOAT32);
}

void nm_push_motif_sizes(lua_State *L, const nm_motif_net *net) {
  lua_createtable(L, net->layers + 1, 0);
  for (int l = 0; l <= net->layers; l++) {
    lua_pushinteger(L, net->sizes[l]);
    lua_rawseti(L, -2, l + 1);
  }
}

void nm_add_motif_sizes(lua_State *L, luaL_Buffer *b, const nm_motif_net *net) {
  for (int l = 0; l <= net->layers; l++) {
    if (l > 0) luaL_addchar(b, '-');
    lua_pushinteger(L, net->sizes[l]);
    luaL_addvalue(b);
  }
}

void nm_motif_weight_list(lua_State *L, int arg, const char *what, const nm_motif_net *net,
                          int chemicals, int allow_nil, const nm_tensor **out) {
  if (!lua_istable(L, arg)) {
    lua_pushfstring(L, "%s must be a list of %d tensors, got %s", what, net->layers,
                    luaL_typename(L, arg));
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  for (int l = 1; l <= net->layers; l++) {
    lua_rawgeti(L, arg, l);   /* raw: no metamethod may close a checked tensor */
    if (allow_nil && lua_isnil(L, -1)) {
      out[l - 1] = NULL;
      lua_pop(L, 1);
      continue;
    }
    const nm_tensor *t = nm_totensor(L, -1);
    int ok = t != NULL && t->dtype == net->dtype && nm_is_contiguous(t);
    if (ok && chemicals > 0)
      ok = t->ndim == 3 && t->size[0] == chemicals && t->size[1] == net->sizes[l] &&
           t->size[2] == net->sizes[l - 1];
    else if (ok)
      ok = t->ndim == 2 && t->size[0] == net->sizes[l] && t->size[1] == net->sizes[l - 1];
    if (!ok) {
      char got[96];
      if (t != NULL) nm_shape_str(t, got, sizeof got);
      const char *got_dtype = t != NULL ? nm_dtype_name(t->dtype) : luaL_typename(L, -1);
      if (chemicals > 0)
        lua_pushfstring(L, "%s[%d] must be a contiguous %s [%d x %d x %d] tensor, got %s%s%s",
                        what, l, nm_dtype_name(net->dtype), chemicals, (int)net->sizes[l],
                        (int)net->sizes[l - 1], got_dtype, t != NULL ? " " : "",
                        t != NULL ? got : "");
      else
        lua_pushfstring(L, "%s[%d] must be a contiguous %s [%d x %d] tensor, got %s%s%s", what,
                        l, nm_dtype_name(net->dtype), (int)net->sizes[l], (int)net->sizes[l - 1],
                        got_dtype, t != NULL ? " " : "", t != NULL ? got : "");
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    out[l - 1] = t;
    lua_pop(L, 1);
  }
}

void nm_motif_feedback_list(lua_State *L, int arg, const nm_motif_net *net,
                            const nm_tensor **B) {
  if (net->feedback == NM_FEEDBACK_FA) {
    if (lua_isnoneornil(L, arg)) luaL_argerror(L, arg, "feedback matrices B expected (FA mode)");
    nm_motif_weight_list(L, arg, "B", net, 0, 0, B);
  } else {
    for (int l = 0; l < net->layers; l++) B[l] = NULL;
  }
}

void *nm_motif_trace(lua_State *L, int arg, const nm_motif_net *net, int64_t need,
                     const char *maker) {
  if (lua_isnoneornil(L, arg)) return nm_scratch(L, 1, 1, (size_t)need * nm_dtype_size(net->dtype));
  nm_tensor *t = nm_checktensor(L, arg);
  if (t->ndim != 1 || t->dtype != net->dtype || !nm_is_contiguous(t) || t->size[0] < need) {
    lua_pushfstring(L, "trace must be a contiguous 1-D %s tensor of at least %d elements (%s)",
                    nm_dtype_name(net->dtype), (int)need, maker);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  return t->data;
}

const nm_tensor *nm_motif_input(lua_State *L, int arg, const nm_motif_net *net) {
  const nm_tensor *x = nm_checktensor(L, arg);
  if (x->ndim != 1 || x->size[0] != net->sizes[0] || x->dtype != net->dtype) {
    char s[96];
    lua_pushfstring(L, "x must be a 1-D %s tensor of %d values, got %s %s",
                    nm_dtype_name(net->dtype), (int)net->sizes[0], nm_dtype_name(x->dtype),
                    nm_shape_str(x, s, sizeof s));
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  return x;
}

int64_t nm_motif_label(lua_State *L, int arg, const nm_motif_net *net) {
  lua_Integer label = luaL_checkinteger(L, arg);
  const int64_t classes = net->sizes[net->layers];
  if (label < 1 || label > classes) {
    lua_pushfstring(L, "label %d is not a class in 1..%d", (int)label, (int)classes);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  return label - 1;
}

/* nm.kernels.motif_net{sizes = {n0, ..., nL}, beta = 10, feedback = "fa"|"bp"|
** "bp_detached", dtype = "float32"} -> MotifNet. */
static int l_motif_net(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  nm_motif_net net;
  nm_read_motif_net(L, 1, &net);
  if (nm_motif_check(&net) != NM_OK) return luaL_argerror(L, 1, "invalid network description");
  lmotifnet *u = (lmotifnet *)lua_newuserdatauv(L, sizeof(lmotifnet), 4);
  u->net = net;
  luaL_setmetatable(L, MOTIFNET_T);
  return 1;
}

/* The layer widths as a table. */
static int m_sizes(lua_State *L) {
  nm_push_motif_sizes(L, checknet(L, 1));
  return 1;
}

static int m_info(lua_State *L) {
  const nm_motif_net *net = checknet(L, 1);
  lua_createtable(L, 0, 5);
  nm_push_motif_sizes(L, net);
  lua_setfield(L, -2, "sizes");
  lua_pushnumber(L, net->beta);
  lua_setfield(L, -2, "beta");
  lua_pushstring(L, nm_feedback_name(net->feedback));
  lua_setfield(L, -2, "feedback");
  lua_pushstring(L, nm_dtype_name(net->dtype));
  lua_setfield(L, -2, "dtype");
  lua_pushinteger(L, nm_motif_trace_size(net));
  lua_setfield(L, -2, "trace_size");
  return 1;
}

/* net:new_trace() -> a 1-D tensor that can hold one step's trace. */
static int m_new_trace(lua_State *L) {
  const nm_motif_net *net = checknet(L, 1);
  int64_t n = nm_motif_trace_size(net);
  nm_newtensor(L, net->dtype, 1, &n);
  return 1;
}

static int m_tostring(lua_State *L) {
  const nm_motif_net *net = checknet(L, 1);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "neuromic.MotifNet(");
  nm_add_motif_sizes(L, &b, net);
  lua_pushfstring(L, ", %s, %s, beta %f)", nm_feedback_name(net->feedback),
                  nm_dtype_name(net->dtype), net->beta);
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  return 1;
}

/* theta at arg: a tensor of 10 numbers or a list of 10 numbers. */
static void get_theta(lua_State *L, int arg, double *theta) {
  const nm_tensor *t = nm_totensor(L, arg);
  if (t != NULL) {
    if (t->ndim != 1 || t->size[0] != NM_META_MOTIFS) {
      char s[96];
      lua_pushfstring(L, "theta must hold %d values, got %s", NM_META_MOTIFS,
                      nm_shape_str(t, s, sizeof s));
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    for (int64_t r = 0; r < NM_META_MOTIFS; r++) theta[r] = nm_get(t, &r);
  } else if (lua_istable(L, arg)) {
    if ((lua_Integer)lua_rawlen(L, arg) != NM_META_MOTIFS) {
      lua_pushfstring(L, "theta must hold %d values", NM_META_MOTIFS);
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    for (int r = 0; r < NM_META_MOTIFS; r++) {
      lua_rawgeti(L, arg, r + 1);
      int isnum;
      theta[r] = lua_tonumberx(L, -1, &isnum);
      if (!isnum) luaL_argerror(L, arg, "theta must hold numbers");
      lua_pop(L, 1);
    }
  } else {
    luaL_typeerror(L, arg, "tensor or list of 10 numbers");
  }
  for (int r = 0; r < NM_META_MOTIFS; r++)
    if (!isfinite(theta[r])) luaL_argerror(L, arg, "theta must be finite");
}

/* The trace at arg (a tensor from net:new_trace()), or the net's own
** scratch when absent. */
static void *get_trace(lua_State *L, int arg, const nm_motif_net *net) {
  return nm_motif_trace(L, arg, net, nm_motif_trace_size(net), "net:new_trace()");
}

/* net:forward(W_out, W_in, B, x, label, theta [, trace]): one online
** step, W_out = W_in + sum_r theta_r F^r (W_out may be W_in). B is
** ignored (may be nil) in the backprop modes. label is 1-based. Allocates
** nothing. */
static int m_forward(lua_State *L) {
  const nm_motif_net *net = checknet(L, 1);
  const nm_tensor *Wout[NM_META_MAXLAYERS], *Win[NM_META_MAXLAYERS], *B[NM_META_MAXLAYERS];
  nm_motif_weight_list(L, 2, "W_out", net, 0, 0, Wout);
  nm_motif_weight_list(L, 3, "W_in", net, 0, 0, Win);
  nm_motif_feedback_list(L, 4, net, B);
  const nm_tensor *x = nm_motif_input(L, 5, net);
  int64_t label = nm_motif_label(L, 6, net);
  double theta[NM_META_MOTIFS];
  get_theta(L, 7, theta);
  for (int l = 0; l < net->layers; l++) {
    if (Wout[l]->data != Win[l]->data && nm_overlap(Wout[l], Win[l]))
      return luaL_argerror(L, 2, "W_out overlaps W_in other than in place");
  }
  void *trace = get_trace(L, 8, net);
  int st = nm_motif_forward(net, Wout, Win, B, x, label, theta, trace);
  if (st != NM_OK) return nm_status_error(L, st, "forward");
  return 0;
}

/* net:backward(G, W_in, B, trace, theta, theta_bar [, need [, Bbar]]):
** the adjoint of forward. G holds dLoss/dW_out and becomes dLoss/dW_in
** (in place); theta_bar (float64, 10 values) gets dLoss/dtheta added where
** need (a list of 10 booleans; all when nil) is true. Bbar (FA, optional
** list, nil entries allowed) gets dLoss/dB added. Allocates nothing. */
static int m_backward(lua_State *L) {
  const nm_motif_net *net = checknet(L, 1);
  const nm_tensor *G[NM_META_MAXLAYERS], *Win[NM_META_MAXLAYERS], *B[NM_META_MAXLAYERS];
  const nm_tensor *Bbar[NM_META_MAXLAYERS];
  nm_motif_weight_list(L, 2, "G", net, 0, 0, G);
  nm_motif_weight_list(L, 3, "W_in", net, 0, 0, Win);
  nm_motif_feedback_list(L, 4, net, B);
  if (lua_isnoneornil(L, 5)) return luaL_argerror(L, 5, "the trace of the forward step expected");
  void *trace = get_trace(L, 5, net);
  double theta[NM_META_MOTIFS];
  get_theta(L, 6, theta);
  nm_tensor *tb = nm_checktensor(L, 7);
  if (tb->ndim != 1 || tb->size[0] != NM_META_MOTIFS || tb->dtype != NM_FLOAT64)
    return luaL_argerror(L, 7, "theta_bar must be a float64 tensor of 10 values");
  int need[NM_META_MOTIFS];
  for (int r = 0; r < NM_META_MOTIFS; r++) need[r] = 1;
  if (!lua_isnoneornil(L, 8)) {
    luaL_checktype(L, 8, LUA_TTABLE);
    for (int r = 0; r < NM_META_MOTIFS; r++) {
      lua_rawgeti(L, 8, r + 1);
      need[r] = lua_toboolean(L, -1);
      lua_pop(L, 1);
    }
  }
  int have_bbar = !lua_isnoneornil(L, 9);
  if (have_bbar) {
    if (net->feedback != NM_FEEDBACK_FA)
      return luaL_argerror(L, 9, "Bbar only exists with FA feedback");
    nm_motif_weight_list(L, 9, "Bbar", net, 0, 1, Bbar);
  }
  for (int l = 0; l < net->layers; l++)
    if (nm_overlap(G[l], Win[l])) return luaL_argerror(L, 2, "G must not share memory with W_in");
  void *work = buffer(L, 2, (size_t)nm_motif_work_size(net) * nm_dtype_size(net->dtype));
  double bar[NM_META_MOTIFS] = {0};
  int st = nm_motif_backward(net, G, Win, B, trace, theta, need, bar, have_bbar ? Bbar : NULL,
                             work);
  if (st != NM_OK) return nm_status_error(L, st, "backward");
  for (int64_t r = 0; r < NM_META_MOTIFS; r++) nm_set(tb, &r, nm_get(tb, &r) + bar[r]);
  return 0;
}

/* net:query(W, X, labels [, G]) -> loss, correct: mean cross-entropy of
** the rows of X (m x n0) against labels (a list of 1-based classes), the
** number classified right, and dLoss/dW into G (a list, overwritten).
** Allocates only when its work buffers must grow. */
static int m_query(lua_State *L) {
  const nm_motif_net *net = checknet(L, 1);
  const nm_tensor *W[NM_META_MAXLAYERS], *G[NM_META_MAXLAYERS];
  nm_motif_weight_list(L, 2, "W", net, 0, 0, W);
  const nm_tensor *X = nm_checktensor(L, 3);
  if (X->ndim != 2 || X->size[1] != net->sizes[0] || X->dtype != net->dtype ||
      X->size[0] < 1 || (X->size[1] > 1 && X->stride[1] != 1) ||
      (X->size[0] > 1 && X->stride[0] < X->size[1])) {
    char s[96];
    lua_pushfstring(L, "X must be a %s [m x %d] tensor with contiguous rows, got %s %s",
                    nm_dtype_name(net->dtype), (int)net->sizes[0], nm_dtype_name(X->dtype),
                    nm_shape_str(X, s, sizeof s));
    return luaL_argerror(L, 3, lua_tostring(L, -1));
  }
  int64_t m = X->size[0];
  luaL_checktype(L, 4, LUA_TTABLE);
  if ((lua_Integer)lua_rawlen(L, 4) != m) {
    lua_pushfstring(L, "%d labels for %d rows", (int)(lua_Integer)lua_rawlen(L, 4), (int)m);
    return luaL_argerror(L, 4, lua_tostring(L, -1));
  }
  int have_g = !lua_isnoneornil(L, 5);
  if (have_g) nm_motif_weight_list(L, 5, "G", net, 0, 0, G);
  int64_t *labels = (int64_t *)buffer(L, 4, (size_t)m * sizeof(int64_t));
  for (int64_t i = 0; i < m; i++) {
    lua_rawgeti(L, 4, i + 1);
    int isnum;
    lua_Integer c = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || c < 1 || c > net->sizes[net->layers]) {
      lua_pushfstring(L, "label %d is not a class in 1..%d", (int)(i + 1),
                      (int)net->sizes[net->layers]);
      return luaL_argerror(L, 4, lua_tostring(L, -1));
    }
    labels[i] = c - 1;
  }
  void *work = buffer(L, 3, (size_t)nm_motif_query_work_size(net, m) * nm_dtype_size(net->dtype));
  double loss;
  int64_t correct;
  int st = nm_motif_query(net, W, X, labels, &loss, &correct, have_g ? G : NULL, work);
  if (st != NM_OK) return nm_status_error(L, st, "query");
  lua_pushnumber(L, loss);
  lua_pushinteger(L, correct);
  return 2;
}

static const luaL_Reg net_methods[] = {
  {"forward", m_forward},
  {"backward", m_backward},
  {"query", m_query},
  {"sizes", m_sizes},
  {"info", m_info},
  {"new_trace", m_new_trace},
  {NULL, NULL}
};

static const luaL_Reg net_metamethods[] = {
  {"__tostring", m_tostring},
  {"__index", NULL},
  {NULL, NULL}
};

void nm_open_meta(lua_State *L, int module, int methods) {
  (void)methods;
  luaL_newmetatable(L, MOTIFNET_T);
  luaL_setfuncs(L, net_metamethods, 0);
  luaL_newlib(L, net_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_motif_net);
  lua_setfield(L, module, "motif_net");
}
