/*
** lbmvr.c: the nm.kernels.bmvr table: fused BMVR and backprop training loops over
** a whole epoch, forward pass, evaluation, the gain-control and
** teaching-signal measures (C core in nm_bmvr.c; the eigensolver and the
** RRR solver are nm.symeig and nm.rrr, ltensor_linalg.c).
**
** A network is a Lua table with tensor fields W1 [k x n], W2T [k x m],
** Q [k x k], R [k x k] (decoupled variant), zbar [k] (ReLU) and work
** (scratch, created on first use and kept in the table). Options come from
** an options table, or from the network table itself when none is given:
**   relu (false), gate ("u" | "z" | "none", "u"), mean ("after" | "before",
**   "after": z = relu(u) - zbar or relu(u - zbar)), decoupled (false),
**   track_mean (true), mean_eps (1e-4), eta_w1, eta_w2, eta_q,
**   t0 (0: no decay; else eta / (1 + t/t0)), t (samples seen so far, 0).
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lnm.h"
#include "nm_bmvr.h"

/* Pushes field `name` of the table at `tab` and returns it as a live
** tensor, or NULL when the field is nil and !required. The value stays
** on the stack, so the tensor lives at least as long as this call. */
static nm_tensor *tensor_field(lua_State *L, int arg, int tab, const char *name,
                               int required) {
  lua_getfield(L, tab, name);
  if (lua_isnil(L, -1) && !required) return NULL;
  nm_tensor *t = nm_totensor(L, -1);
  if (t == NULL) {
    lua_pushfstring(L, "field '%s' must be a tensor, got %s", name, luaL_typename(L, -1));
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  return t;
}

static double number_field(lua_State *L, int arg, int tab, const char *name, double def,
                           int required) {
  lua_getfield(L, tab, name);
  int isnum = 0;
  double v = lua_tonumberx(L, -1, &isnum);
  if (!isnum) {
    if (!lua_isnil(L, -1) || required) {
      lua_pushfstring(L, "option '%s' must be a number, got %s", name, luaL_typename(L, -1));
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    v = def;
  }
  lua_pop(L, 1);
  return v;
}

static int bool_field(lua_State *L, int tab, const char *name, int def) {
  lua_getfield(L, tab, name);
  int v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Options from the table at `tab` (the options argument, or the network
** when that is absent). `rates`: 0 none required, 1 eta_w1/eta_w2, 2 also
** eta_q. */
static void read_opts(lua_State *L, int arg, int tab, nm_bmvr_opts *o, int64_t *t, int rates) {
  memset(o, 0, sizeof *o);
  o->relu = bool_field(L, tab, "relu", 0);
  o->decoupled = bool_field(L, tab, "decoupled", 0);
  o->track_mean = bool_field(L, tab, "track_mean", 1);
  lua_getfield(L, tab, "gate");
  const char *gate = lua_isnil(L, -1) ? "u" : lua_tostring(L, -1);
  if (gate != NULL && strcmp(gate, "u") == 0) o->gate = NM_BMVR_GATE_U;
  else if (gate != NULL && strcmp(gate, "z") == 0) o->gate = NM_BMVR_GATE_Z;
  else if (gate != NULL && strcmp(gate, "none") == 0) o->gate = NM_BMVR_GATE_NONE;
  else luaL_argerror(L, arg, "option 'gate' must be \"u\", \"z\" or \"none\"");
  lua_pop(L, 1);
  lua_getfield(L, tab, "mean");
  const char *mean = lua_isnil(L, -1) ? "after" : lua_tostring(L, -1);
  if (mean != NULL && strcmp(mean, "after") == 0) o->mean_before = 0;
  else if (mean != NULL && strcmp(mean, "before") == 0) o->mean_before = 1;
  else luaL_argerror(L, arg, "option 'mean' must be \"after\" or \"before\"");
  lua_pop(L, 1);
  o->mean_eps = number_field(L, arg, tab, "mean_eps", 1e-4, 0);
  o->eta_w1 = number_field(L, arg, tab, "eta_w1", 0, rates >= 1);
  o->eta_w2 = number_field(L, arg, tab, "eta_w2", 0, rates >= 1);
  o->eta_q = number_field(L, arg, tab, "eta_q", 0, rates >= 2);
  o->t0 = number_field(L, arg, tab, "t0", 0, 0);
  double tt = number_field(L, arg, tab, "t", 0, 0);
  if (!(tt >= 0 && tt < 9e15)) luaL_argerror(L, arg, "option 't' must be a count >= 0");
  if (t != NULL) *t = (int64_t)tt;
  if (!(o->mean_eps >= 0 && o->mean_eps <= 1))
    luaL_argerror(L, arg, "option 'mean_eps' must be in [0, 1]");
  if (!isfinite(o->eta_w1) || !isfinite(o->eta_w2) || !isfinite(o->eta_q) || !isfinite(o->t0))
    luaL_argerror(L, arg, "learning rates and t0 must be finite");
}

static void check_weight(lua_State *L, int arg, const char *name, const nm_tensor *t,
                         int64_t rows, int64_t cols, nm_dtype dt) {
  if (t->ndim != 2 || t->size[0] != rows || t->size[1] != cols || t->dtype != dt ||
      !nm_is_contiguous(t)) {
    char expect[96];
    snprintf(expect, sizeof expect, "a contiguous %s [%lld x %lld]", nm_dtype_name(dt),
             (long long)rows, (long long)cols);
    nm_shape_argerror(L, arg, name, t, expect);
  }
}

/* Reads the network at `arg` (need_q: Q, and R when decoupled), checking
** every shape against W1 and W2T. Creates net.work when missing. */
static void read_net(lua_State *L, int arg, nm_bmvr_net *net, const nm_bmvr_opts *o,
                     int need_q) {
  luaL_checktype(L, arg, LUA_TTABLE);
  luaL_checkstack(L, 16, "bmvr");
  memset(net, 0, sizeof *net);
  net->W1 = tensor_field(L, arg, arg, "W1", 1);
  net->W2T = tensor_field(L, arg, arg, "W2T", 1);
  const nm_tensor *W1 = net->W1, *W2T = net->W2T;
  if (W1->ndim != 2 || !nm_is_contiguous(W1)) nm_shape_argerror(L, arg, "W1", W1, "a contiguous matrix");
  const nm_dtype dt = W1->dtype;
  const int64_t k = W1->size[0], n = W1->size[1];
  if (k < 1 || n < 1 || k > 1 << 20 || n > 1 << 24)
    nm_shape_argerror(L, arg, "W1", W1, "a non-empty matrix");
  if (W2T->ndim != 2 || W2T->size[0] < 1)
    nm_shape_argerror(L, arg, "W2T", W2T, "a matrix with W1's rows");
  const int64_t m = W2T->size[1];
  if (m < 1 || m > 1 << 20) nm_shape_argerror(L, arg, "W2T", W2T, "a non-empty matrix");
  check_weight(L, arg, "W2T", W2T, k, m, dt);
  if (need_q) {
    net->Q = tensor_field(L, arg, arg, "Q", 1);
    check_weight(L, arg, "Q", net->Q, k, k, dt);
    if (o->decoupled) {
      net->R = tensor_field(L, arg, arg, "R", 1);
      check_weight(L, arg, "R", net->R, k, k, dt);
    }
  }
  if (o->relu) {
    net->zbar = tensor_field(L, arg, arg, "zbar", 1);
    const nm_tensor *zb = net->zbar;
    if (zb->ndim != 1 || zb->size[0] != k || zb->dtype != dt || !nm_is_contiguous(zb)) {
      char expect[64];
      snprintf(expect, sizeof expect, "a %s vector of size %lld", nm_dtype_name(dt),
               (long long)k);
      nm_shape_argerror(L, arg, "zbar", zb, expect);
    }
  }
  const nm_tensor *w = tensor_field(L, arg, arg, "work", 0);
  int64_t need = nm_bmvr_work_size(k, m);
  if (w == NULL || w->dtype != dt || !nm_is_contiguous(w) || nm_numel(w) < need) {
    lua_pop(L, 1);
    w = nm_newtensor(L, dt, 1, &need);
    lua_pushvalue(L, -1);
    lua_setfield(L, arg, "work");
  }
  net->work = w;
}

/* Data rows: 2-D, dtype of the weights, `cols` columns, unit column stride. */
static const nm_tensor *check_data(lua_State *L, int arg, const char *name, int64_t cols,
                                   nm_dtype dt, int64_t rows) {
  const nm_tensor *t = nm_checktensor(L, arg);
  char expect[128];
  snprintf(expect, sizeof expect, "a %s [T x %lld] matrix with contiguous rows",
           nm_dtype_name(dt), (long long)cols);
  if (rows >= 0)
    snprintf(expect, sizeof expect, "a %s [%lld x %lld] matrix with contiguous rows",
             nm_dtype_name(dt), (long long)rows, (long long)cols);
  if (t->ndim != 2 || t->dtype != dt || t->size[1] != cols ||
      (rows >= 0 && t->size[0] != rows) || (t->size[1] > 1 && t->stride[1] != 1) ||
      (t->size[0] > 1 && t->stride[0] < cols) || t->stride[0] > INT32_MAX)
    nm_shape_argerror(L, arg, name, t, expect);
  return t;
}

/* Raises when a buffer the loops write (the work buffer; the weights and
** zbar when `trains`) shares memory with any other operand (it would be
** read after it was overwritten), or when an operand was closed while the
** options were read (through metamethods). The net is argument 1, X 2,
** Y 3, order 5. */
static void check_operands(lua_State *L, const nm_bmvr_net *net, const nm_tensor *X,
                           const nm_tensor *Y, const nm_tensor *order, int trains) {
  static const int args[9] = {1, 1, 1, 1, 1, 1, 2, 3, 5};
  static const char *const names[9] = {"field 'work'", "W1", "W2T", "Q", "R", "zbar",
                                       "X", "Y", "order"};
  const nm_tensor *ts[9] = {net->work, net->W1, net->W2T, net->Q, net->R, net->zbar,
                            X, Y, order};
  nm_check_disjoint(L, trains ? 6 : 1, 9, args, names, ts);
  nm_check_open(L, 9, args, names, ts);
}

/* The options table: argument `arg` when it is a table, else the net. */
static int opts_index(lua_State *L, int arg, int net_arg) {
  if (lua_istable(L, arg)) return arg;
  if (!lua_isnoneornil(L, arg)) luaL_typeerror(L, arg, "table of options");
  return net_arg;
}

/* train(net, X, Y[, opts[, order[, count]]]) and backprop(...) ->
** t (samples seen, to store back in opts.t), finite (false when a weight
** became NaN or infinite; the network is then unusable). */
static int train_common(lua_State *L, int backprop, const char *fname) {
  nm_bmvr_opts o;
  nm_bmvr_net net;
  int64_t t;
  int oi = opts_index(L, 4, 1);
  luaL_checktype(L, 1, LUA_TTABLE);
  read_opts(L, oi, oi, &o, &t, backprop ? 1 : 2);
  if (backprop) o.decoupled = 0;
  const nm_tensor *X = nm_checktensor(L, 2), *Y = nm_checktensor(L, 3);
  const nm_tensor *order = lua_isnoneornil(L, 5) ? NULL : nm_checktensor(L, 5);
  lua_settop(L, 6);
  read_net(L, 1, &net, &o, !backprop);
  const int64_t k = net.W1->size[0], n = net.W1->size[1], m = net.W2T->size[1];
  (void)k;
  X = check_data(L, 2, "X", n, net.W1->dtype, -1);
  Y = check_data(L, 3, "Y", m, net.W1->dtype, X->size[0]);
  const int64_t T = X->size[0];
  int64_t count;
  if (order != NULL && order->ndim != 1) nm_shape_argerror(L, 5, "order", order, "a 1-D tensor of row numbers");
  int64_t avail = order != NULL ? order->size[0] : T;
  lua_Integer c = luaL_optinteger(L, 6, (lua_Integer)avail);
  if (c < 0 || c > avail) {
    lua_pushfstring(L, "count %I out of range [0, %I]", (LUAI_UACINT)c, (LUAI_UACINT)avail);
    return luaL_argerror(L, 6, lua_tostring(L, -1));
  }
  count = (int64_t)c;
  /* Fetched again: reading the net may have run metamethods. */
  order = lua_isnoneornil(L, 5) ? NULL : nm_checktensor(L, 5);
  check_operands(L, &net, X, Y, order, 1);
  if (order != NULL)
    for (int64_t s = 0; s < count; s++) {
      int64_t idx = s;
      double v = nm_get(order, &idx);
      if (!(v >= 1 && v <= (double)T && v == floor(v))) {
        lua_pushfstring(L, "order[%I] = %f is not a row number in [1, %I]",
                        (LUAI_UACINT)(s + 1), (lua_Number)v, (LUAI_UACINT)T);
        return luaL_argerror(L, 5, lua_tostring(L, -1));
      }
    }
  int st = backprop ? nm_bmvr_backprop_train(&net, &o, X, Y, order, count, &t)
                    : nm_bmvr_train(&net, &o, X, Y, order, count, &t);
  if (st != NM_OK && st != NM_ENONFINITE) return nm_status_error(L, st, fname);
  lua_pushinteger(L, (lua_Integer)t);
  lua_pushboolean(L, st == NM_OK);
  return 2;
}

static int l_train(lua_State *L) { return train_common(L, 0, "bmvr.train"); }
static int l_backprop(lua_State *L) { return train_common(L, 1, "bmvr.backprop"); }

/* The arguments of the measures below, f(net, X[, Y][, opts]) (Y when
** the Y pointer is not NULL): reads the options, the network (need_q: Q,
** and R when decoupled) and the data, and checks them all. The tables and
** tensors stay on the stack. */
static const nm_tensor *measure_args(lua_State *L, int need_q, nm_bmvr_net *net,
                                     nm_bmvr_opts *o, const nm_tensor **Y) {
  const int with_y = Y != NULL, opts_arg = with_y ? 4 : 3;
  int oi = opts_index(L, opts_arg, 1);
  luaL_checktype(L, 1, LUA_TTABLE);
  read_opts(L, oi, oi, o, NULL, 0);
  nm_checktensor(L, 2);
  if (with_y) nm_checktensor(L, 3);
  lua_settop(L, opts_arg);
  read_net(L, 1, net, o, need_q);
  const nm_tensor *X = check_data(L, 2, "X", net->W1->size[1], net->W1->dtype, -1);
  const nm_tensor *Yd = NULL;
  if (with_y) *Y = Yd = check_data(L, 3, "Y", net->W2T->size[1], net->W1->dtype, X->size[0]);
  check_operands(L, net, X, Yd, NULL, 0);
  return X;
}

/* forward(net, X[, opts]) -> Yhat [T x m], Z [T x k]. Allocates both. */
static int l_forward(lua_State *L) {
  nm_bmvr_opts o;
  nm_bmvr_net net;
  const nm_tensor *X = measure_args(L, 0, &net, &o, NULL);
  int64_t zs[2] = {X->size[0], net.W1->size[0]}, ys[2] = {X->size[0], net.W2T->size[1]};
  nm_tensor *Yhat = nm_newtensor(L, net.W1->dtype, 2, ys);
  nm_tensor *Z = nm_newtensor(L, net.W1->dtype, 2, zs);
  int st = nm_bmvr_forward(&net, &o, X, Z, Yhat);
  if (st != NM_OK) return nm_status_error(L, st, "bmvr.forward");
  return 2;
}

/* evaluate(net, X, Y[, opts]) -> mean ||y - yhat||^2, accuracy (argmax
** of yhat equal to argmax of y), number correct. */
static int l_evaluate(lua_State *L) {
  nm_bmvr_opts o;
  nm_bmvr_net net;
  const nm_tensor *Y;
  const nm_tensor *X = measure_args(L, 0, &net, &o, &Y);
  double sq = 0;
  int64_t correct = 0;
  int st = nm_bmvr_evaluate(&net, &o, X, Y, &sq, &correct);
  if (st != NM_OK) return nm_status_error(L, st, "bmvr.evaluate");
  lua_pushnumber(L, sq);
  lua_pushnumber(L, X->size[0] > 0 ? (double)correct / (double)X->size[0] : 0);
  lua_pushinteger(L, (lua_Integer)correct);
  return 3;
}

/* hidden_cov(net, X[, opts]) -> C = (1/T) sum z z^T, float64 [k x k]. */
static int l_hidden_cov(lua_State *L) {
  nm_bmvr_opts o;
  nm_bmvr_net net;
  const nm_tensor *X = measure_args(L, 0, &net, &o, NULL);
  int64_t cs[2] = {net.W1->size[0], net.W1->size[0]};
  nm_tensor *C = nm_newtensor(L, NM_FLOAT64, 2, cs);
  int st = nm_bmvr_hidden_cov(&net, &o, X, C);
  if (st != NM_OK) return nm_status_error(L, st, "bmvr.hidden_cov");
  return 1;
}

/* alignment(net, X, Y[, opts]) -> mean per-sample cos(c, d), cos of the
** summed W1 updates (c = BMVR teaching signal, d = backprop error). */
static int l_alignment(lua_State *L) {
  nm_bmvr_opts o;
  nm_bmvr_net net;
  const nm_tensor *Y;
  const nm_tensor *X = measure_args(L, 1, &net, &o, &Y);
  double mean_cos = 0, update_cos = 0;
  int st = nm_bmvr_alignment(&net, &o, X, Y, &mean_cos, &update_cos);
  if (st != NM_OK) return nm_status_error(L, st, "bmvr.alignment");
  lua_pushnumber(L, mean_cos);
  lua_pushnumber(L, update_cos);
  return 2;
}

static const luaL_Reg bmvr_funcs[] = {
  {"train", l_train},
  {"backprop", l_backprop},
  {"forward", l_forward},
  {"evaluate", l_evaluate},
  {"hidden_cov", l_hidden_cov},
  {"alignment", l_alignment},
  {NULL, NULL}
};

void nm_open_bmvr(lua_State *L, int module, int methods) {
  (void)methods;
  luaL_newlib(L, bmvr_funcs);
  lua_setfield(L, module, "bmvr");
}
