/*
** lmlp.c: nm.kernels.mlp_step, the training step of nn.lua's MLP on one
** sample or one minibatch in one call (nm_mlp.c). nn.lua builds one per
** network and batch size from its own buffers and calls it from
** MLP:train_batch; the results are those of the step it replaces, bit for
** bit.
*/
#include <stddef.h>
#include <string.h>

#include "lnm.h"
#include "nm_math.h"
#include "nm_mlp.h"
#include "nm_plastic.h"

#define MLP_STEP_T "neuromic.MLPStep"
#define PER_LAYER 10             /* W b mask Mt A Y E a1 y1 e1 */
#define NET_TENSORS 5            /* X x1 T t1 ones */

/* The userdata: the network's headers point into the tensor userdata,
** which user value 1 keeps alive (a list: refs[i] at index 2i + 1, its
** storage at 2i + 2). */
typedef struct mlp_step {
  nm_mlp net;
  void *scratch;                 /* nm_mlp_rows_scratch elements (list.scratch) */
  int nrefs;
  nm_ltensor **refs;             /* into the same block, after the layers */
} mlp_step;

static const char *const act_names[] = {"identity", "relu", "sigmoid", "tanh", "softplus",
                                        "softmax", NULL};

/* The tensor in field `key` of the table at idx (NULL when nil and
** optional), recorded in the reference list at index `list`. */
static nm_tensor *field_tensor(lua_State *L, int idx, const char *key, int optional,
                               mlp_step *s, int list, const char *where) {
  lua_getfield(L, idx, key);
  if (optional && lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  nm_ltensor *lt = (nm_ltensor *)luaL_testudata(L, -1, NM_TENSOR_T);
  if (lt == NULL || nm_totensor(L, -1) == NULL)
    luaL_error(L, "mlp_step: %s.%s must be an open tensor", where, key);
  s->refs[s->nrefs++] = lt;
  lua_getiuservalue(L, -1, 1);           /* its storage */
  lua_rawseti(L, list, 2 * s->nrefs);
  lua_rawseti(L, list, 2 * s->nrefs - 1);
  return &lt->t;
}

/* nm.kernels.mlp_step{loss = "xent" | "mse", from_output = false,
**   X = [B x n_0], x1 = [n_0], T = [B x n_L], t1 = [n_L], ones = [B],
**   layers = {{W =, b =, mask =, Mt =, A =, Y =, E =, a1 =, y1 =, e1 =,
**              act = name, beta = 1}, ...}} -> a step object
** (see nm_mlp.h for the operands: the 1-D views x1, t1, a1, y1, e1 for
** B = 1 only, ones for B > 1 with biases); an error naming what does not
** fit. */
static int mlp_step_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "layers");
  luaL_argcheck(L, lua_istable(L, -1), 1, "field 'layers' must be a list");
  int layers = lua_gettop(L);
  lua_Integer nl = luaL_len(L, layers);
  luaL_argcheck(L, nl >= 1 && nl <= 4096, 1, "between 1 and 4096 layers expected");
  int L_ = (int)nl, cap = L_ * PER_LAYER + NET_TENSORS;
  size_t lay = sizeof(mlp_step) + (size_t)L_ * sizeof(nm_mlp_layer);
  size_t bytes = lay + (size_t)cap * sizeof(nm_ltensor *);
  mlp_step *s = (mlp_step *)lua_newuserdatauv(L, bytes, 2);
  memset(s, 0, bytes);
  int self = lua_gettop(L);
  s->net.L = L_;
  s->net.layer = (nm_mlp_layer *)(void *)(s + 1);
  s->refs = (nm_ltensor **)(void *)((char *)s + lay);
  lua_createtable(L, 2 * cap, 0);
  int list = lua_gettop(L);
  static const char *const losses[] = {"xent", "mse", NULL};
  lua_getfield(L, 1, "loss");
  s->net.loss = luaL_checkoption(L, -1, "xent", losses);
  lua_getfield(L, 1, "from_output");
  s->net.from_output = lua_toboolean(L, -1);
  lua_pop(L, 2);
  s->net.X = field_tensor(L, 1, "X", 0, s, list, "spec");
  s->net.x1 = field_tensor(L, 1, "x1", 1, s, list, "spec");
  s->net.T = field_tensor(L, 1, "T", 0, s, list, "spec");
  s->net.t1 = field_tensor(L, 1, "t1", 1, s, list, "spec");
  s->net.ones = field_tensor(L, 1, "ones", 1, s, list, "spec");
  for (int l = 0; l < L_; l++) {
    nm_mlp_layer *ly = &s->net.layer[l];
    lua_rawgeti(L, layers, l + 1);
    luaL_argcheck(L, lua_istable(L, -1), 1, "every layer must be a table");
    int t = lua_gettop(L);
    const char *w = "layer";
    ly->W = field_tensor(L, t, "W", 0, s, list, w);
    ly->b = field_tensor(L, t, "b", 1, s, list, w);
    ly->mask = field_tensor(L, t, "mask", 1, s, list, w);
    ly->Mt = field_tensor(L, t, "Mt", 1, s, list, w);
    ly->A = field_tensor(L, t, "A", 0, s, list, w);
    ly->Y = field_tensor(L, t, "Y", 0, s, list, w);
    ly->E = field_tensor(L, t, "E", 0, s, list, w);
    ly->a1 = field_tensor(L, t, "a1", 1, s, list, w);
    ly->y1 = field_tensor(L, t, "y1", 1, s, list, w);
    ly->e1 = field_tensor(L, t, "e1", 1, s, list, w);
    lua_getfield(L, t, "act");
    ly->act = luaL_checkoption(L, -1, NULL, act_names);
    lua_getfield(L, t, "beta");
    ly->beta = luaL_optnumber(L, -1, 1.0);
    lua_settop(L, list);
  }
  const char *msg = nm_mlp_check(&s->net);
  if (msg != NULL) return luaL_error(L, "mlp_step: %s", msg);
  /* The kernels write W, b, the buffers: none may share memory with
  ** another operand, except each buffer with its own 1-D view. */
  for (int i = 0; i < s->nrefs; i++)
    for (int j = i + 1; j < s->nrefs; j++) {
      const nm_tensor *a = &s->refs[i]->t, *b = &s->refs[j]->t;
      int view = a->data == b->data && nm_numel(a) == nm_numel(b);
      int shared = a == b;                     /* the same tensor twice (identity: Y is A) */
      if (!view && !shared && nm_overlap(a, b))
        return luaL_error(L, "mlp_step: operands share memory");
    }
  size_t es = nm_dtype_size(s->net.X->dtype);
  s->scratch = lua_newuserdatauv(L, nm_mlp_rows_scratch(&s->net) * es + es, 0);
  lua_setfield(L, list, "scratch");
  lua_pushvalue(L, list);
  lua_setiuservalue(L, self, 1);
  lua_pushvalue(L, self);
  luaL_setmetatable(L, MLP_STEP_T);
  return 1;
}

/* The learning rates from argument `arg` on (false: the layer does not
** learn) into e and on (64 layers; more in a userdata left on the stack:
** only for networks of over 64 layers does a step allocate). */
static void read_etas(lua_State *L, const mlp_step *s, int arg, double **e, int **on) {
  int L_ = s->net.L;
  if (L_ > 64) {
    *e = (double *)lua_newuserdatauv(L, (size_t)L_ * (sizeof(double) + sizeof(int)), 0);
    *on = (int *)(void *)(*e + L_);
  }
  for (int l = 0; l < L_; l++) {
    (*on)[l] = lua_toboolean(L, arg + l);
    (*e)[l] = (*on)[l] ? luaL_checknumber(L, arg + l) : 0.0;
  }
}

/* A step's status as run and run_rows return it: false for NM_EINVAL
** (nothing written), true for NM_OK, else an error. */
static int step_result(lua_State *L, int st) {
  if (st != NM_EINVAL && st != NM_OK) return nm_status_error(L, st, "mlp_step");
  lua_pushboolean(L, st == NM_OK);
  return 1;
}

/* 1 when tensor v shares memory with a tensor of the network other than
** `own` (the buffer it may be: exactly that view). */
static int shares_memory(const mlp_step *s, const nm_tensor *v, const nm_tensor *own) {
  if (v->data == own->data && nm_same_shape(v, own) &&
      memcmp(v->stride, own->stride, sizeof v->stride) == 0)
    return 0;
  for (int i = 0; i < s->nrefs; i++)
    if (nm_overlap(v, &s->refs[i]->t)) return 1;
  return 0;
}

/* An error when a tensor of the network was closed since the step was
** made (its memory is gone; the step must not write to it). */
static void check_open(lua_State *L, const mlp_step *s) {
  for (int i = 0; i < s->nrefs; i++)
    if (s->refs[i]->t.data == NULL) luaL_error(L, "mlp_step: a tensor of the network was closed");
}

/* step:run(x, t, eta_1, ..., eta_L) -> true, after one training step with
** learning rate eta_l for layer l (false: layer l does not learn): for a
** step over one-sample buffers on input x ([n_0] or [1 x n_0]) and target
** t ([n_L] or [1 x n_L]), for one over buffers of B > 1 rows on the batch
** X [B x n_0] and T [B x n_L] (X read in place when of the network's
** dtype and contiguous, else copied: the caller's forward pass sees the
** same); false, having written nothing, when x or t is not that
** (the caller takes its general path, which says what is wrong), or when
** a batch's X or T shares memory with the network's tensors. Allocates
** nothing. */
static int mlp_step_run(lua_State *L) {
  mlp_step *s = (mlp_step *)luaL_checkudata(L, 1, MLP_STEP_T);
  const nm_tensor *x = nm_totensor(L, 2), *t = nm_totensor(L, 3);
  double eta[64], *e = eta;
  int learn[64], *on = learn;
  int L_ = s->net.L;
  read_etas(L, s, 4, &e, &on);
  if (x == NULL || t == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  /* Every operand still open. (The list holds each one's storage too: a
  ** storage swapped by debug.setuservalue stays alive, written to.) */
  check_open(L, s);
  /* What the general path's kernels would copy first (an input sharing
  ** memory with what it is copied into, the target with the output
  ** error; for a batch, read in place, anything of the network's) goes
  ** that way. */
  const nm_mlp_layer *out = &s->net.layer[L_ - 1];
  int shared = s->net.X->size[0] > 1
               ? shares_memory(s, x, s->net.X) || shares_memory(s, t, s->net.T)
               : (x->data != s->net.X->data && nm_overlap(x, s->net.X)) ||
                 (t->data != s->net.T->data && nm_overlap(t, s->net.T)) ||
                 (t->data != out->E->data && nm_overlap(t, out->E));
  if (shared) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return step_result(L, nm_mlp_step(&s->net, x, t, e, on));
}

/* The rows of step:run_rows and step:run_order: false, having written
** nothing, when X or T is not a 2-D tensor or shares memory with the
** network's tensors (the caller takes the general way, which copies or
** reads them as it does), else nm_mlp_rows's result as step_result gives
** it; first 1-based. */
static int run_rows(lua_State *L, mlp_step *s, const nm_tensor *X, const nm_tensor *T,
                    lua_Integer first, lua_Integer count, const int64_t *order,
                    const double *e, const int *on) {
  check_open(L, s);
  if (X == NULL || T == NULL || first < 1) {
    lua_pushboolean(L, 0);
    return 1;
  }
  for (int i = 0; i < s->nrefs; i++)
    if (nm_overlap(X, &s->refs[i]->t) || nm_overlap(T, &s->refs[i]->t)) {
      lua_pushboolean(L, 0);
      return 1;
    }
  int64_t done;
  return step_result(L, nm_mlp_rows(&s->net, X, T, first - 1, count, order, e, on, s->scratch,
                                    &done));
}

/* step:run_rows(X, T, first, count, eta_1, ..., eta_L) -> true, after
** `count` training steps on rows first .. first + count - 1 (1-based) of
** X [N x n_0] and T [N x n_L] in order, each update fused with the next
** sample's forward pass (nm_mlp_rows): the results of step:run on each
** row in turn, bit for bit. false, having written nothing, when X or T
** does not fit, the rows are out of range, or the network does not
** (masks, or buffers of more than one row); the caller then takes the
** step one row at a time. Allocates nothing. */
static int mlp_step_run_rows(lua_State *L) {
  mlp_step *s = (mlp_step *)luaL_checkudata(L, 1, MLP_STEP_T);
  const nm_tensor *X = nm_totensor(L, 2), *T = nm_totensor(L, 3);
  lua_Integer first = luaL_checkinteger(L, 4), count = luaL_checkinteger(L, 5);
  double eta[64], *e = eta;
  int learn[64], *on = learn;
  read_etas(L, s, 6, &e, &on);
  /* shapes, the rows' range and the network's fit are nm_mlp_rows's checks
  ** (NM_EINVAL: false) */
  return run_rows(L, s, X, T, first, count, NULL, e, on);
}

/* step:run_order(X, T, order, first, count, eta_1, ..., eta_L) -> true,
** after `count` training steps as step:run_rows's, on rows order[first],
** ..., order[first + count - 1] of X and T: order a list of 1-based row
** numbers, read as B:index_rows reads one (an error for a position past
** its end, an index that is not an integer or not a row of X and T).
** false as step:run_rows. Allocates nothing once a stretch of `count`
** rows has been run (the 0-based rows are kept in the step's user value
** 2, grown when too small). */
static int mlp_step_run_order(lua_State *L) {
  mlp_step *s = (mlp_step *)luaL_checkudata(L, 1, MLP_STEP_T);
  const nm_tensor *X = nm_totensor(L, 2), *T = nm_totensor(L, 3);
  lua_Integer first = luaL_checkinteger(L, 5), count = luaL_checkinteger(L, 6);
  double eta[64], *e = eta;
  int learn[64], *on = learn;
  read_etas(L, s, 7, &e, &on);
  if (X == NULL || T == NULL || X->ndim != 2 || T->ndim != 2 || count < 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  luaL_checktype(L, 4, LUA_TTABLE);
  lua_Integer len = luaL_len(L, 4);
  if (first < 1 || first - 1 > len || count > len - (first - 1))
    return luaL_argerror(L, 4, lua_pushfstring(L, "%I rows from position %I need more than the "
                                                  "%I indices of the list", count, first, len));
  int64_t rows = X->size[0] < T->size[0] ? X->size[0] : T->size[0];
  int64_t *idx = (int64_t *)nm_scratch(L, 1, 2, (size_t)count * sizeof(int64_t));
  lua_getiuservalue(L, 1, 2);    /* kept on the stack: a metamethod may replace it */
  for (lua_Integer i = 0; i < count; i++)
    idx[i] = nm_gather_index(L, 4, NULL, first + i, rows);
  /* reading a list may run metamethods: run_rows checks every tensor is
  ** still open (X and T are read again; nm_mlp_rows checks the rows) */
  X = nm_totensor(L, 2);
  T = nm_totensor(L, 3);
  return run_rows(L, s, X, T, 1, count, idx, e, on);
}

static int mlp_step_tostring(lua_State *L) {
  mlp_step *s = (mlp_step *)luaL_checkudata(L, 1, MLP_STEP_T);
  lua_pushfstring(L, "neuromic.MLPStep (%d layers, batch %I)", s->net.L,
                  (lua_Integer)s->net.X->size[0]);
  return 1;
}

static const luaL_Reg step_meth[] = {{"run", mlp_step_run},
                                     {"run_rows", mlp_step_run_rows},
                                     {"run_order", mlp_step_run_order},
                                     {NULL, NULL}};
static const luaL_Reg step_metameth[] = {{"__tostring", mlp_step_tostring}, {NULL, NULL}};

void nm_open_mlp(lua_State *L, int kernels, int methods) {
  (void)methods;
  luaL_newmetatable(L, MLP_STEP_T);
  luaL_setfuncs(L, step_metameth, 0);
  luaL_newlib(L, step_meth);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, mlp_step_new);
  lua_setfield(L, kernels, "mlp_step");
}
