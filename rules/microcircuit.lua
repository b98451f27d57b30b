-- rules/microcircuit.lua: the four plasticity rules of dendritic cortical
-- microcircuits (Sacramento, Costa, Bengio & Senn 2018). Each is
-- Urbanczik-Senn dendritic prediction learning: a synapse onto a
-- compartment changes so that the compartment's own input predicts the
-- somatic rate (or, for the interneuron-to-apical synapses, so that the
-- apical potential is silenced). Chosen with the parameter `pathway`:
--
--   up:   dW_up[k]   = eta (phi(u_k) - phi(vhatB_k)) r_{k-1}^T,   vhatB_k = cB_k vB_k
--   ip:   dW_ip[k]   = eta (phi(uI_k) - phi(vhatI_k)) r_k^T,      vhatI_k = cD vI_k
--   pi:   dW_pi[k]   = eta (0 - vA_k) rI_k^T
--   down: dW_down[k] = eta (phi(u_k) - phi(W_down[k] r_{k+1})) r_{k+1}^T
--
-- with cB_k = g_B / (g_lk + g_B + g_A) (output layer: g_B / (g_lk + g_B))
-- and cD = g_D / (g_lk + g_D). Biases (a presynaptic rate of 1) follow the
-- same rule. In continuous time each induction term T is low-pass
-- filtered, tau_w dD/dt = -D + T, and dW/dt = eta D; one forward Euler
-- step of length dt is
--
--   W += dt eta D;   D += (dt / tau_w) (T - D)
--
-- With tau_w = 0 there is no filter: W += eta T, applied once per pattern
-- as the steady-state ("simplified") dynamics do.
--
-- Quantities (rows are samples; T is the batch mean over rows): pre
-- [B x n_pre]; post [B x n] (phi(u), the somatic rate) and pred [B x n]
-- (the rate the dendrite predicts) for up/ip/down; apical [B x n] (vA) for
-- pi; error [B x n] and error_t (scratch the rule writes: post - pred, or
-- -vA); ones [B] (biases). The network (lua/nm/models/microcircuit.lua) fills
-- them. In the full dynamics the four rules run fused inside the C Euler
-- step (nm.microcircuit, csrc/models/nm_microcircuit.c) on the same traces D;
-- spec/microcircuit_spec.lua checks that step against a plain-Lua
-- transcription of these equations and these functions against hand
-- computation.

local PATHWAYS = {up = true, ip = true, pi = true, down = true}

-- error = post - pred (dendritic prediction error), or -vA for pi.
local function mismatch(q, p)
  if p.pathway == "pi" then
    q.error:neg(q.apical)                       -- 0 - vA: silence the apical dendrite
  else
    q.error:sub(q.post, q.pred)                 -- phi(u) - phi(vhat)
  end
end

return {
  kind = "connection",
  name = "microcircuit",
  equation = "dW = eta (phi(u) - phi(vhat)) r_pre^T  (pi: dW = eta (0 - vA) rI^T), " ..
             "low-pass: tau_w dD/dt = -D + that term, dW/dt = eta D",
  paper = "Sacramento, Costa, Bengio & Senn 2018, Dendritic cortical microcircuits " ..
          "approximate the backpropagation algorithm, NeurIPS 31 (arXiv:1810.11393); " ..
          "Urbanczik & Senn 2014, Learning by the dendritic prediction of somatic spiking, " ..
          "Neuron 81:521-528",
  bias = true,
  needs = {"pre", "error"},
  params = {
    pathway = {default = "up", doc = "which synapses: 'up' (W_up, bottom-up onto basal), " ..
                                     "'ip' (pyramidal -> interneuron), 'pi' (interneuron -> " ..
                                     "apical), 'down' (top-down onto apical)"},
    eta = {default = 0.0011875, doc = "learning rate (per ms with tau_w > 0, per pattern with " ..
                                      "tau_w = 0); Fig. 2 eta_up[1] = eta_ip"},
    tau_w = {default = 30, doc = "low-pass time constant of the induction term in ms; 0: none"},
    dt = {default = 0.1, doc = "Euler step in ms (used with tau_w > 0)"},
  },
  check = function(p)
    if not PATHWAYS[p.pathway] then
      return false, "parameter 'pathway' must be 'up', 'ip', 'pi' or 'down'"
    end
    if p.tau_w < 0 then return false, "parameter 'tau_w' must be >= 0" end
    if p.tau_w > 0 and not (p.dt > 0 and p.dt <= p.tau_w) then
      return false, "parameter 'dt' must be in (0, tau_w]"
    end
    return true
  end,
  -- The low-pass traces D (and Db for a bias), and scratch for the term.
  init = function(conn)
    return {D = conn.W:clone():zero(), T = conn.W:clone():zero(),
            Db = conn.b and conn.b:clone():zero() or nil,
            Tb = conn.b and conn.b:clone():zero() or nil}
  end,
  update = function(q, p)
    mismatch(q, p)
    local B = q.batch
    if p.tau_w == 0 then
      q.dW:addmm(p.eta / B, q.error_t, q.pre, 0)                -- eta <e r_pre^T>
      if q.db then q.db:addmv(p.eta / B, q.error_t, q.ones, 0) end
      return
    end
    local st, a, c = q.state, p.dt / p.tau_w, p.dt * p.eta
    st.T:addmm(1 / B, q.error_t, q.pre, 0)                      -- T = <e r_pre^T>
    q.dW:scale(st.D, c)                                         -- dW = dt eta D
    st.D:scale(1 - a):axpy(a, st.T)                             -- D += a (T - D)
    if q.db and st.Db then
      st.Tb:addmv(1 / B, q.error_t, q.ones, 0)
      q.db:scale(st.Db, c)
      st.Db:scale(1 - a):axpy(a, st.Tb)
    end
  end,
}
