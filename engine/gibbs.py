"""Blocked Gibbs sampler for the Gaussian multilevel model of engine.multilevel (random intercepts).

One iteration (all draws exact, from full conditionals):

1. **Location block** (engine.multilevel.location). Given (tau, sigma) the location parameters
   theta = (gamma, r), gamma = (b0_c, beta) the centred intercept and coefficients and r every random
   intercept, are Gaussian; one leaves-up elimination over each nested block of groups draws them
   jointly and exactly from the cell sufficient statistics. Cost per iteration
   O(L (D^2 + D q + q^2) + K q + q^3), L levels, D nesting depth, K cells: independent of N.

   **Crossed factors.** Blocks that are not nested in one another (``(1 | a) + (1 | b)``) are drawn
   one after the other, each *jointly with gamma* given the other blocks' current effects (whose
   contribution per cell is constant, so it enters through the cell sums). Each step is an exact
   conditional draw; the sweep is a valid blocked Gibbs sampler (mixing slower than a joint draw when
   the crossed effects are strongly correlated).

2. **Prior auxiliaries of gamma.** A Student-t prior t_nu(mu, s) on the intercept or a coefficient is
   the normal scale mixture b | lambda ~ N(mu, s^2 lambda), lambda ~ IG(nu/2, nu/2); lambda | b ~
   IG((nu + 1)/2, (nu + (b - mu)^2 / s^2) / 2). Normal priors are conjugate; flat priors add nothing.

3. **Scales** tau_g (one per group) and sigma. Half-t_nu(0, A) (half-Cauchy: nu = 1) through the
   scale mixture of inverse gammas (Wand et al. 2011, "Mean field variational Bayes for elaborate
   distributions", Bayesian Analysis 6(4); Makalic & Schmidt 2016, "A simple sampler for the
   horseshoe estimator", IEEE SPL 23(1)): tau^2 | a ~ IG(nu/2, nu/a), a ~ IG(1/2, 1/A^2), so with K
   effects of sum of squares SS, tau^2 | a, r ~ IG((nu + K)/2, nu/a + SS/2) and a | tau^2 ~
   IG((nu + 1)/2, nu/tau^2 + 1/A^2). sigma the same with N residuals and the residual sum of
   squares from the cell sums. A flat prior on a scale gives tau^2 | r ~ IG((K - 1)/2, SS/2). Other
   priors (half-normal, a Student-t or normal with non-zero location truncated at 0, exponential)
   take one slice-sampling update (Neal 2003, "Slice sampling", Ann. Statist. 31(3), stepping out
   and shrinkage) of log tau, which leaves the exact conditional invariant.

4. **Group SDs jointly with their effects** (default ``collapse=True``). Centred Gibbs mixes slowly
   for a group SD near zero (tau | r and r | tau pin each other). After step 3 each pair
   (tau_g, r_g) is drawn jointly given everything else (partially collapsed Gibbs; van Dyk & Park
   2008, JASA 103): tau_g from its conditional with r_g integrated out -- the level means m_v of the
   partial residuals are independent N(0, tau_g^2 + sigma^2 / n_v) -- by one slice update of
   log tau_g under its prior density, then r_g | tau_g from its Gaussian conditional. The half-t
   auxiliary of tau_g is left as is: the next touch of it is its redraw a | tau_g (step 3), and no
   update in between depends on it. Alternatively (``interweave=True``) the ASIS step of Yu & Meng
   (2011, "To center or not to center", JCGS 20(3)): tau_g drawn given the non-centred effects
   r_g / tau_g, under which the likelihood is Gaussian in tau_g. Both are exact conditional
   draws.

5. **Top-level SD with the whole nested block integrated out** (``collapse=True``). For a block of
   nested groups, (tau_top, all the block's effects) is drawn jointly given gamma, sigma and the
   deeper SDs: one leaves-up elimination with gamma fixed leaves each top level j with the
   Gaussian factor exp(-A_j u^2 / 2 + B_j u) of its integrated subtree, so log tau_top takes one
   slice update under prod_j (1 + A_j tau^2)^(-1/2) exp(B_j^2 tau^2 / (2 (1 + A_j tau^2))) times its
   prior (O(J) per evaluation), and the block's effects are redrawn from their exact conditional.
   This removes the school/class split dependence (u_j + v_k pinned by the class means).

On the study's nested model (4 chains x 1,000 kept draws) the minimum bulk ESS (sd_schoolid) is
about 130 with centred updates only, 390 with ASIS, 860 with step 4 and about 2,100 with steps 4 + 5
(the default); with 150,000 simulated students in the same 16 schools / 41 classes, 300 -> 1,500.

Draws are reported in the canonical order of engine.multilevel.parameter_names (b_Intercept on the
original scale, b0_c - xbar'beta), random effects in global level order (ranef_names). One Numba
kernel runs a whole chain without the GIL, so chains run in threads.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.errors import ModelSpecError, SamplerError
from engine.multilevel.covariance import log_scale_prior as _log_scale_prior
from engine.multilevel.location import (
    LocationData,
    PriorArrays,
    _location_block,
    location_data,
    location_inputs,
    make_work,
    store_location_draw,
)
from engine.multilevel.model import MultilevelModel
from engine.multilevel.priors import FLAT as _FLAT
from engine.multilevel.priors import NORMAL as _NORMAL
from engine.multilevel.priors import STUDENT_T as _STUDENT_T
from engine.multilevel.sampler import ChainResult, register_sampler

__all__ = ["GIBBS", "GibbsSampler", "sample_chain"]


class LevelSizes(NamedTuple):
    """Each group's distinct level sizes (for the collapsed SD step): level_size (L,) index of each
    level's size among its group's sizes; size_offsets (G + 1,); size_value (S,) the sizes n;
    size_count (S,) how many levels have that size."""

    level_size: np.ndarray
    size_offsets: np.ndarray
    size_value: np.ndarray
    size_count: np.ndarray


class GibbsSettings(NamedTuple):
    """What one chain does: iterations, warm-up, thinning and which optional exact steps run."""

    n_iter: int
    n_warmup: int
    thin: int
    update_scales: bool
    interweave: bool
    collapse: bool
    save_ranef: bool


class GibbsData(NamedTuple):
    """Everything the chain kernel reads besides its settings and starting scales.

    location: engine.multilevel.location.LocationData; sizes: LevelSizes; yty, n_obs: floats;
    x_means: (p,); has_intercept: bool; n_blocks: int; gamma_prior: PriorArrays (q,);
    sd_prior: PriorArrays (G,); sigma_prior: (4,) [family, nu, mu, scale].
    """

    location: LocationData
    sizes: LevelSizes
    yty: float
    n_obs: float
    x_means: np.ndarray
    has_intercept: bool
    n_blocks: int
    gamma_prior: PriorArrays
    sd_prior: PriorArrays
    sigma_prior: np.ndarray


def _distinct_level_sizes(model: MultilevelModel) -> LevelSizes:
    """Per group, the distinct level sizes n (size_value, size_count, offsets (G + 1,)) and each level's index."""
    level_size = np.zeros(model.n_levels_total, dtype=np.int64)
    values, counts, offsets = [], [], [0]
    for g in range(model.n_groups):
        lo, hi = model.level_offsets[g], model.level_offsets[g + 1]
        distinct, inverse, count = np.unique(model.level_n[lo:hi], return_inverse=True, return_counts=True)
        level_size[lo:hi] = offsets[-1] + inverse.reshape(-1)
        values.append(distinct)
        counts.append(count.astype(np.float64))
        offsets.append(offsets[-1] + len(distinct))
    value = np.concatenate(values) if values else np.zeros(0)
    count = np.concatenate(counts) if counts else np.zeros(0)
    return LevelSizes(level_size, np.array(offsets, dtype=np.int64), value.astype(np.float64), count)


# ------------------------------------------------------------------------------ numba pieces


@numba.njit(cache=True, nogil=True)
def _inverse_gamma(rng, shape, rate):
    """One draw of IG(shape, rate) (density proportional to x^(-shape-1) exp(-rate/x))."""
    return rate / rng.standard_gamma(shape)


@numba.njit(cache=True, nogil=True)
def _log_scale_target(eta, mode, first, second, family, nu, mu, scale):
    """log p(eta | ...) for eta = log tau, up to a constant, Jacobian included.

    mode 0 (centred: K effects N(0, tau^2) with sum of squares SS; first = K, second = SS):
        -K eta - SS exp(-2 eta) / 2;
    mode 1 (non-centred: the likelihood is Gaussian in tau with precision first and linear term second):
        -first tau^2 / 2 + second tau.
    """
    tau = np.exp(eta)
    if mode == 0:
        value = -first * eta - 0.5 * second * np.exp(-2.0 * eta)
    else:
        value = -0.5 * first * tau * tau + second * tau
    return value + eta + _log_scale_prior(tau, family, nu, mu, scale)


@numba.njit(cache=True, nogil=True)
def _log_collapsed_target(eta, counts, sums_of_squares, variances, family, nu, mu, scale):
    """log p(eta = log tau | rest) with the group's effects integrated out, prior and Jacobian added.

    The level means m_v of the partial residuals are independent N(0, tau^2 + sigma^2 / n_v); levels
    of equal size n share a variance, so the sum runs over the distinct sizes (count, sum of m_v^2,
    variance sigma^2 / n per size): O(distinct sizes) per evaluation, however many levels.
    """
    tau2 = np.exp(2.0 * eta)
    value = 0.0
    for s in range(counts.shape[0]):
        total = tau2 + variances[s]
        value -= 0.5 * (counts[s] * np.log(total) + sums_of_squares[s] / total)
    return value + eta + _log_scale_prior(np.exp(eta), family, nu, mu, scale)


@numba.njit(cache=True, nogil=True)
def _level_partial_residual_sums(g, gamma, r, data, lo, hi, level_total):
    """level_total[v] for the levels v in [lo, hi) of group g: the sum over level v's rows of y minus
    the fixed part (gamma'w) and every other group's effect, from the per-cell sums (data: LocationData)."""
    cell_n, cell_sum_y, cell_w, cell_levels = data.cell_n, data.cell_sum_y, data.cell_w, data.cell_levels
    n_cells, n_groups = cell_levels.shape
    q = gamma.shape[0]
    for v in range(lo, hi):
        level_total[v] = 0.0
    for k in range(n_cells):
        others = 0.0
        for h in range(n_groups):
            if h != g:
                others += r[cell_levels[k, h]]
        fitted = 0.0
        for a in range(q):
            fitted += gamma[a] * cell_w[k, a]
        level_total[cell_levels[k, g]] += cell_sum_y[k] - fitted - cell_n[k] * others


@numba.njit(cache=True, nogil=True)
def _collapsed_scale_step(rng, g, gamma, r, tau, sigma2, data, sizes, level_total, size_work, sd_prior):
    """Draw (tau_g, r_g) jointly given everything else: tau_g from its distribution with r_g
    integrated out (one slice update of log tau_g), then r_g | tau_g from its Gaussian conditional.

    Given the other terms, level v's effect sees only the mean partial residual m_v (n_v rows):
    m_v | r_v ~ N(r_v, sigma^2 / n_v), r_v ~ N(0, tau^2). A blocked Gibbs step of the pair (van Dyk
    & Park 2008, partially collapsed Gibbs): exact, and free of the tau-r dependence.
    data: LocationData; sizes: LevelSizes; level_total (L,), size_work (S,) work arrays; sd_prior:
    PriorArrays of the group SDs.
    """
    level_offsets, level_n = data.level_offsets, data.level_n
    level_size, size_offsets, size_value, size_count = sizes.level_size, sizes.size_offsets, sizes.size_value, sizes.size_count
    family, nu, mu, scale = sd_prior.family[g], sd_prior.nu[g], sd_prior.mu[g], sd_prior.scale[g]
    lo, hi = level_offsets[g], level_offsets[g + 1]
    s_lo, s_hi = size_offsets[g], size_offsets[g + 1]
    _level_partial_residual_sums(g, gamma, r, data, lo, hi, level_total)
    for s in range(s_lo, s_hi):
        size_work[s] = 0.0
    for v in range(lo, hi):
        level_total[v] /= level_n[v]  # now the level mean m_v
        size_work[level_size[v]] += level_total[v] * level_total[v]
    counts = size_count[s_lo:s_hi]
    sums_of_squares = size_work[s_lo:s_hi]
    variances = sigma2 / size_value[s_lo:s_hi]
    # slice update of log tau_g on the collapsed target (Neal 2003)
    eta0 = np.log(tau[g])
    log_level = _log_collapsed_target(eta0, counts, sums_of_squares, variances, family, nu, mu, scale) \
        - rng.standard_exponential()
    left = eta0 - rng.random()
    right = left + 1.0
    steps = 60
    while steps > 0 and _log_collapsed_target(left, counts, sums_of_squares, variances, family, nu, mu, scale) > log_level:
        left -= 1.0
        steps -= 1
    steps = 60
    while steps > 0 and _log_collapsed_target(right, counts, sums_of_squares, variances, family, nu, mu, scale) > log_level:
        right += 1.0
        steps -= 1
    eta_new = eta0
    for _ in range(200):
        eta = left + (right - left) * rng.random()
        if _log_collapsed_target(eta, counts, sums_of_squares, variances, family, nu, mu, scale) > log_level:
            eta_new = eta
            break
        if eta < eta0:
            left = eta
        else:
            right = eta
    tau2 = np.exp(2.0 * eta_new)
    tau[g] = np.exp(eta_new)
    for v in range(lo, hi):
        variance = sigma2 / level_n[v]
        shrink = tau2 / (tau2 + variance)
        r[v] = shrink * level_total[v] + np.sqrt(shrink * variance) * rng.standard_normal()


@numba.njit(cache=True, nogil=True)
def _slice_log_scale(rng, tau, mode, first, second, family, nu, mu, scale):
    """One slice-sampling update of log tau (Neal 2003, stepping out with width 1, then shrinkage)."""
    eta0 = np.log(tau)
    log_level = _log_scale_target(eta0, mode, first, second, family, nu, mu, scale) - rng.standard_exponential()
    width = 1.0
    left = eta0 - width * rng.random()
    right = left + width
    steps = 60
    while steps > 0 and _log_scale_target(left, mode, first, second, family, nu, mu, scale) > log_level:
        left -= width
        steps -= 1
    steps = 60
    while steps > 0 and _log_scale_target(right, mode, first, second, family, nu, mu, scale) > log_level:
        right += width
        steps -= 1
    for _ in range(200):
        eta = left + (right - left) * rng.random()
        if _log_scale_target(eta, mode, first, second, family, nu, mu, scale) > log_level:
            return np.exp(eta)
        if eta < eta0:
            left = eta
        else:
            right = eta
    return tau  # shrinkage exhausted (interval collapsed on eta0): keep the current value


@numba.njit(cache=True, nogil=True)
def _interweave_scale(rng, g, gamma, r, tau, sigma2, data, level_total, sd_prior):
    """ASIS step for tau_g (Yu & Meng 2011): redraw tau_g given the non-centred effects r_g / tau_g.

    With u = r_g / tau_g fixed (prior N(0, 1), free of tau_g), the likelihood is Gaussian in tau_g:
    precision P = sum_v n_v u_v^2 / sigma^2, linear term sum_v u_v R_v / sigma^2, R_v the sum over
    level v of y minus every other term of the linear predictor. One slice update of log tau_g under
    that likelihood and the prior; then r_g = tau_g' u. Exact (a Gibbs step in the non-centred
    parametrisation), and it breaks the tau-r dependence that slows centred Gibbs when tau is small.
    """
    level_offsets, level_n = data.level_offsets, data.level_n
    family, nu, mu, scale = sd_prior.family[g], sd_prior.nu[g], sd_prior.mu[g], sd_prior.scale[g]
    lo, hi = level_offsets[g], level_offsets[g + 1]
    _level_partial_residual_sums(g, gamma, r, data, lo, hi, level_total)
    old = tau[g]
    precision = 0.0
    linear = 0.0
    for v in range(lo, hi):
        u = r[v] / old
        precision += level_n[v] * u * u
        linear += u * level_total[v]
    new = _slice_log_scale(rng, old, np.int64(1), precision / sigma2, linear / sigma2, family, nu, mu, scale)
    ratio = new / old
    for v in range(lo, hi):
        r[v] *= ratio
    tau[g] = new


@numba.njit(cache=True, nogil=True)
def _draw_scale(rng, tau, aux, n_effects, sum_squares, family, nu, mu, scale):
    """Draw a standard deviation tau of n_effects N(0, tau^2) effects from its full conditional.

    Returns (tau, aux); aux is the inverse-gamma mixing variable of a half-t prior (else unchanged).
    """
    if family == _STUDENT_T and mu == 0.0:
        aux = _inverse_gamma(rng, 0.5 * (nu + 1.0), nu / (tau * tau) + 1.0 / (scale * scale))
        tau2 = _inverse_gamma(rng, 0.5 * (nu + n_effects), nu / aux + 0.5 * sum_squares)
        return np.sqrt(tau2), aux
    if family == _FLAT:
        tau2 = _inverse_gamma(rng, 0.5 * (n_effects - 1.0), 0.5 * sum_squares)
        return np.sqrt(tau2), aux
    return _slice_log_scale(rng, tau, np.int64(0), n_effects, sum_squares, family, nu, mu, scale), aux


@numba.njit(cache=True, nogil=True)
def _log_subtree_target(eta, precisions, linears, family, nu, mu, scale):
    """log p(eta = log tau_top | gamma, sigma, deeper SDs) with the block's effects integrated out.

    Top level j carries the Gaussian factor exp(-A_j u^2 / 2 + B_j u) of its integrated subtree;
    with u ~ N(0, tau^2): (1 + A_j tau^2)^(-1/2) exp(B_j^2 tau^2 / (2 (1 + A_j tau^2))).
    """
    tau2 = np.exp(2.0 * eta)
    value = 0.0
    for j in range(precisions.shape[0]):
        denominator = 1.0 + precisions[j] * tau2
        value += -0.5 * np.log(denominator) + 0.5 * linears[j] * linears[j] * tau2 / denominator
    return value + eta + _log_scale_prior(np.exp(eta), family, nu, mu, scale)


@numba.njit(cache=True, nogil=True)
def _collapsed_top_step(rng, block, g_top, gamma, r, tau, sigma2, zeros_q, data, work, sd_prior):
    """Draw (tau_top, every effect of a nested block) | gamma, sigma, the deeper SDs, other blocks.

    tau of the block's top group (schools) from its conditional with *all* the block's effects
    (schools and the classes within them) integrated out -- one leaves-up elimination with gamma
    fixed gives each school's integrated Gaussian factor (A_j, B_j); one slice update of log tau
    costs O(J) per evaluation -- then the block's effects from their Gaussian conditional (a second
    elimination and the roots-first draw). Removes the school/class split dependence that slows
    the per-level steps when classes pin u_j + v_k tightly (large N). data: LocationData; work:
    LocationWork; sd_prior: PriorArrays of the group SDs.
    """
    family, nu, mu, scale = sd_prior.family[g_top], sd_prior.nu[g_top], sd_prior.mu[g_top], sd_prior.scale[g_top]
    a_diag, level_rhs, b_rows = work.a_diag, work.level_rhs, work.b_rows
    lo, hi = data.level_offsets[g_top], data.level_offsets[g_top + 1]
    # bool()/np.int64() at kernel call sites: a literal argument compiles one specialisation per value (issue 16)
    _location_block(rng, block, bool(False), bool(True), gamma, r, tau, sigma2, zeros_q, zeros_q, data, work)
    q = gamma.shape[0]
    precisions = np.empty(hi - lo)
    linears = np.empty(hi - lo)
    prior_precision = 1.0 / (tau[g_top] * tau[g_top])
    for j in range(lo, hi):
        precisions[j - lo] = max(a_diag[j] - prior_precision, 0.0)
        value = level_rhs[j]
        for a in range(q):
            value -= b_rows[j, a] * gamma[a]
        linears[j - lo] = value
    eta0 = np.log(tau[g_top])
    log_level = _log_subtree_target(eta0, precisions, linears, family, nu, mu, scale) - rng.standard_exponential()
    left = eta0 - rng.random()
    right = left + 1.0
    steps = 60
    while steps > 0 and _log_subtree_target(left, precisions, linears, family, nu, mu, scale) > log_level:
        left -= 1.0
        steps -= 1
    steps = 60
    while steps > 0 and _log_subtree_target(right, precisions, linears, family, nu, mu, scale) > log_level:
        right += 1.0
        steps -= 1
    for _ in range(200):
        eta = left + (right - left) * rng.random()
        if _log_subtree_target(eta, precisions, linears, family, nu, mu, scale) > log_level:
            tau[g_top] = np.exp(eta)
            break
        if eta < eta0:
            left = eta
        else:
            right = eta
    _location_block(rng, block, bool(False), bool(False), gamma, r, tau, sigma2, zeros_q, zeros_q, data, work)


@numba.njit(cache=True, nogil=True)
def _residual_sum_of_squares(gamma, r, data, yty):
    """sum_i (y_i - w_i'gamma - c_i)^2 from the cell sums (data: LocationData), c_i the sum of the
    row's random effects."""
    cell_n, cell_sum_y, cell_w, cell_levels, wtw, wty = data.cell_n, data.cell_sum_y, data.cell_w, data.cell_levels, data.wtw, data.wty
    q = gamma.shape[0]
    n_cells, n_groups = cell_levels.shape
    rss = yty
    for a in range(q):
        rss -= 2.0 * gamma[a] * wty[a]
        for b in range(q):
            rss += gamma[a] * wtw[a, b] * gamma[b]
    for k in range(n_cells):
        c = 0.0
        for g in range(n_groups):
            c += r[cell_levels[k, g]]
        fitted = 0.0
        for a in range(q):
            fitted += gamma[a] * cell_w[k, a]
        rss += -2.0 * c * (cell_sum_y[k] - fitted) + cell_n[k] * c * c
    return max(rss, 0.0)


@numba.njit(cache=True, nogil=True)
def _gibbs_chain(rng, settings, data, init_sd, init_sigma):
    """Run one chain (settings: GibbsSettings; data: GibbsData; init_sd (G,), init_sigma);
    returns (draws (n_kept, n_params), ranef (n_kept, L or 0))."""
    n_iter, n_warmup, thin = settings.n_iter, settings.n_warmup, settings.thin
    update_scales, interweave, collapse, save_ranef = (settings.update_scales, settings.interweave,
                                                        settings.collapse, settings.save_ranef)
    location, sizes, sd_prior, sigma_prior = data.location, data.sizes, data.sd_prior, data.sigma_prior
    gamma_family, gamma_nu, gamma_mu, gamma_scale = (data.gamma_prior.family, data.gamma_prior.nu,
                                                     data.gamma_prior.mu, data.gamma_prior.scale)
    level_offsets, block_of_group = location.level_offsets, location.block_of_group
    x_means, n_blocks = data.x_means, data.n_blocks
    q = gamma_family.shape[0]
    n_groups = init_sd.shape[0]
    n_total = location.level_n.shape[0]
    n_kept = (n_iter - n_warmup + thin - 1) // thin
    n_params = q + n_groups + 1
    draws = np.empty((n_kept, n_params))
    ranef = np.empty((n_kept, n_total if save_ranef else 0))

    gamma = np.zeros(q)
    r = np.zeros(n_total)
    tau = init_sd.copy()
    sigma = init_sigma
    tau_aux = np.ones(n_groups)
    sigma_aux = 1.0
    mixing = np.ones(q)  # lambda of Student-t priors on gamma
    gamma_precision = np.zeros(q)
    gamma_prior_mean = np.zeros(q)
    for a in range(q):
        if gamma_family[a] != _FLAT:
            gamma_prior_mean[a] = gamma_mu[a]
    work = make_work(location, q)  # work arrays of the location block
    size_work = np.zeros(sizes.size_value.shape[0])
    zeros_q = np.zeros(q)

    kept = 0
    for iteration in range(n_iter):
        for a in range(q):
            if gamma_family[a] == _NORMAL:
                gamma_precision[a] = 1.0 / (gamma_scale[a] * gamma_scale[a])
            elif gamma_family[a] == _STUDENT_T:
                gamma_precision[a] = 1.0 / (gamma_scale[a] * gamma_scale[a] * mixing[a])
        sigma2 = sigma * sigma
        for block in range(max(n_blocks, 1)):
            _location_block(rng, block, bool(True), bool(False), gamma, r, tau, sigma2, gamma_precision, gamma_prior_mean,
                            location, work)
        for a in range(q):
            if gamma_family[a] == _STUDENT_T:
                z = (gamma[a] - gamma_mu[a]) / gamma_scale[a]
                mixing[a] = _inverse_gamma(rng, 0.5 * (gamma_nu[a] + 1.0), 0.5 * (gamma_nu[a] + z * z))
        if update_scales:
            for g in range(n_groups):
                ss = 0.0
                for v in range(level_offsets[g], level_offsets[g + 1]):
                    ss += r[v] * r[v]
                tau[g], tau_aux[g] = _draw_scale(rng, tau[g], tau_aux[g], float(level_offsets[g + 1] - level_offsets[g]),
                                                 ss, sd_prior.family[g], sd_prior.nu[g], sd_prior.mu[g],
                                                 sd_prior.scale[g])
                if collapse:
                    _collapsed_scale_step(rng, g, gamma, r, tau, sigma2, location, sizes, work.level_rhs, size_work,
                                          sd_prior)
                if interweave:
                    _interweave_scale(rng, g, gamma, r, tau, sigma2, location, work.level_rhs, sd_prior)
            if collapse:
                for g in range(n_groups):
                    if (g == 0 or block_of_group[g] != block_of_group[g - 1]) and g + 1 < n_groups \
                            and block_of_group[g + 1] == block_of_group[g]:
                        _collapsed_top_step(rng, block_of_group[g], g, gamma, r, tau, sigma2, zeros_q, location, work,
                                            sd_prior)
            rss = _residual_sum_of_squares(gamma, r, location, data.yty)
            sigma, sigma_aux = _draw_scale(rng, sigma, sigma_aux, data.n_obs, rss, int(sigma_prior[0]),
                                           sigma_prior[1], sigma_prior[2], sigma_prior[3])
        if iteration >= n_warmup and (iteration - n_warmup) % thin == 0:
            store_location_draw(draws[kept], gamma, x_means, data.has_intercept)
            for g in range(n_groups):
                draws[kept, q + g] = tau[g]
            draws[kept, q + n_groups] = sigma
            if save_ranef:
                for v in range(n_total):
                    ranef[kept, v] = r[v]
            kept += 1
    return draws, ranef


# --------------------------------------------------------------------------------- front end


def gibbs_data(model: MultilevelModel) -> GibbsData:
    """The model's arrays arranged for _gibbs_chain."""
    inputs = location_inputs(model)
    return GibbsData(location_data(model, inputs), _distinct_level_sizes(model), float(model.yty),
                     float(model.n_obs), np.ascontiguousarray(model.x_means, dtype=np.float64),
                     bool(model.has_intercept), int(model.n_blocks), inputs.gamma_prior,
                     PriorArrays(model.sd_prior_family, model.sd_prior_nu, model.sd_prior_mu, model.sd_prior_scale),
                     np.ascontiguousarray(model.sigma_prior, dtype=np.float64))


def _initial_scales(model: MultilevelModel, rng: np.random.Generator, init) -> tuple[np.ndarray, float]:
    """Starting sd and sigma: from ``init`` (dict with "sd" (S,) and/or "sigma"), else dispersed
    around the response's SD (divided by a slope column's SD for a slope's sd; random effects start
    at 0 and are drawn first, so no other start)."""
    spread = float(np.std(model.y)) or 1.0
    sd = spread * 0.5 * np.exp(rng.uniform(-1.0, 1.0, size=model.n_sd))
    if model.has_slopes:
        column_sd = np.std(model.Z, axis=0)
        sd = sd / np.where(column_sd > 0, column_sd, 1.0)
    sigma = spread * np.exp(rng.uniform(-0.5, 0.5))
    if init is not None:
        unknown = set(init) - {"sd", "sigma"}
        if unknown:
            raise ModelSpecError(f"init: unknown entries {sorted(unknown)}; the Gibbs sampler starts from 'sd' and 'sigma'")
        if "sd" in init:
            sd = np.asarray(init["sd"], dtype=np.float64).reshape(-1)
            if sd.shape != (model.n_sd,) or not np.all(sd > 0):
                raise ModelSpecError(f"init['sd'] must hold {model.n_sd} positive values")
        if "sigma" in init:
            sigma = float(init["sigma"])
            if not sigma > 0:
                raise ModelSpecError("init['sigma'] must be positive")
    return np.ascontiguousarray(sd), float(sigma)


def sample_chain(model: MultilevelModel, n_iter: int, n_warmup: int, seed: np.random.SeedSequence | int | None = None,
                 init: dict | None = None, thin: int = 1, save_ranef: bool = True,
                 update_scales: bool = True, collapse: bool = True, interweave: bool = False) -> ChainResult:
    """Run one Gibbs chain of ``n_iter`` iterations, keeping every ``thin``-th after ``n_warmup``.

    ``seed``: a numpy SeedSequence (engine.parallel.child_seeds gives one per chain) or an int.
    ``init``: optional {"sd": (G,), "sigma": float} starting scales. ``update_scales=False`` holds
    tau and sigma at their starting values (the location block alone: used to test exactness).
    ``collapse`` (default) and ``interweave``: after each centred update of a group SD, one more
    exact update of it, jointly with the group's effects with those integrated out (collapse), or
    in the non-centred parametrisation (ASIS, interweave). They change no distribution, only mixing.
    A model with random slopes runs engine.gibbs_slopes: there ``collapse`` is its step 0 (every (sd,
    correlation) and sigma by Metropolis-Hastings with gamma and the random coefficients integrated
    out, where the groups form one block); interweave does not apply. The result's stats then hold
    ``collapsed_acceptance`` (the step's post-warm-up acceptance rate).
    Returns ChainResult(draws (n_kept, n_params), ranef (n_kept, L), stats {}), n_kept =
    ceil((n_iter - n_warmup) / thin).
    """
    if not isinstance(model, MultilevelModel):
        raise ModelSpecError("sample_chain needs a MultilevelModel (engine.multilevel.build_model)")
    n_iter, n_warmup, thin = int(n_iter), int(n_warmup), int(thin)
    if n_warmup < 0 or n_iter <= n_warmup:
        raise ModelSpecError(f"n_warmup must be in 0..n_iter-1 (got n_iter={n_iter}, n_warmup={n_warmup})")
    if thin < 1:
        raise ModelSpecError(f"thin must be a positive integer, got {thin}")
    if model.n_groups == 0 and np.all(model.b_prior_family == _FLAT) and model.intercept_prior[0] == _FLAT:
        pass  # ordinary Bayesian regression: proper posterior whenever X has full rank (checked when built)
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng = np.random.Generator(np.random.PCG64(sequence))
    init_sd, init_sigma = _initial_scales(model, rng, init)
    if model.has_slopes:
        from engine.gibbs_slopes import run_slopes_chain_counts, slopes_data

        draws, ranef, counts = run_slopes_chain_counts(rng, n_iter, n_warmup, thin, bool(update_scales),
                                                       bool(save_ranef), slopes_data(model),
                                                       np.ascontiguousarray(init_sd), init_sigma, bool(collapse),
                                                       bool(True))
        if not np.all(np.isfinite(draws)):
            raise SamplerError("the Gibbs sampler produced non-finite draws (check the data's scale and the priors)")
        stats = {"collapsed_acceptance": np.float64(counts[1] / counts[0])} if counts[0] else {}
        return ChainResult(draws, ranef, stats)
    draws, ranef = _gibbs_chain(rng, GibbsSettings(n_iter, n_warmup, thin, bool(update_scales), bool(interweave),
                                                   bool(collapse), bool(save_ranef)),
                                gibbs_data(model), init_sd, init_sigma)
    if not np.all(np.isfinite(draws)):
        raise SamplerError("the Gibbs sampler produced non-finite draws (check the data's scale and the priors)")
    return ChainResult(draws, ranef, {})


class GibbsSampler:
    """The blocked Gibbs sampler as an engine.multilevel.sampler.Sampler (``sampler="gibbs"``)."""

    name = "gibbs"
    options = {"init": None, "save_ranef": True, "update_scales": True, "collapse": True, "interweave": False}

    def run_chain(self, model, n_iter, n_warmup, seed, thin=1, **options) -> ChainResult:
        return sample_chain(model, n_iter, n_warmup, seed, thin=thin, **options)


GIBBS = register_sampler(GibbsSampler())
