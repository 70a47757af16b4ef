"""A slow, line-by-line NumPy transcription of R loo 2.5.1's PSIS-LOO (R/psis.R, R/gpdfit.R,
R/effective_sample_sizes.R, R/loo.R), used to test the fast kernel of ``engine.loo``.

Every step is written the way loo writes it in R (full sort, FFT autocovariances, vectorised grid),
with no attempt at speed, so that it can be read side by side with loo's source.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, ndtri


def fft_next_good_size(n: int) -> int:
    if n <= 2:
        return 2
    while True:
        m = n
        for f in (2, 3, 5):
            while m % f == 0:
                m //= f
        if m <= 1:
            return n
        n += 1


def autocovariance(y: np.ndarray) -> np.ndarray:
    n = y.size
    mt2 = 2 * fft_next_good_size(n)
    yc = np.concatenate([y - y.mean(), np.zeros(mt2 - n)])
    f = np.fft.fft(yc)
    ac = np.fft.ifft(np.conj(f) * f) * mt2  # R's inverse fft is unnormalised
    return ac.real[:n] / (n * n * 2)


def ess_rfun(sims: np.ndarray) -> float:
    """sims: (n draws, chains)."""
    n, chains = sims.shape
    acov = np.column_stack([autocovariance(sims[:, i]) for i in range(chains)])
    chain_mean = sims.mean(axis=0)
    mean_var = acov[0].mean() * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if chains > 1:
        var_plus += np.var(chain_mean, ddof=1)
    rho = np.zeros(n)
    t = 0
    even = 1.0
    rho[0] = even
    odd = 1 - (mean_var - acov[1].mean()) / var_plus
    rho[1] = odd
    while t < n - 5 and not np.isnan(even + odd) and even + odd > 0:
        t += 2
        even = 1 - (mean_var - acov[t].mean()) / var_plus
        odd = 1 - (mean_var - acov[t + 1].mean()) / var_plus
        if even + odd >= 0:
            rho[t] = even
            rho[t + 1] = odd
    max_t = t
    if even > 0:
        rho[max_t] = even
    t = 0
    while t <= max_t - 4:
        t += 2
        if rho[t] + rho[t + 1] > rho[t - 2] + rho[t - 1]:
            rho[t] = (rho[t - 2] + rho[t - 1]) / 2
            rho[t + 1] = rho[t]
    ess = chains * n
    head = rho[0] if max_t == 0 else rho[:max_t].sum()  # R's rho_hat_t[1:max_t]
    tau = -1 + 2 * head + rho[max_t]
    tau = max(tau, 1 / np.log10(ess))
    return ess / tau


def relative_eff(x: np.ndarray) -> np.ndarray:
    """x: (chains, draws, N) on the natural scale."""
    s = x.shape[0] * x.shape[1]
    return np.array([ess_rfun(x[:, :, i].T) for i in range(x.shape[2])]) / s


def gpdfit(x: np.ndarray) -> tuple[float, float]:
    n = x.size
    m = 30 + int(np.floor(np.sqrt(n)))
    jj = np.arange(1, m + 1)
    xstar = x[int(np.floor(n / 4 + 0.5)) - 1]
    theta = 1 / x[n - 1] + (1 - np.sqrt(m / (jj - 0.5))) / 3 / xstar
    a = -theta
    k = np.array([np.mean(np.log1p(ai * x)) for ai in a])
    l_theta = n * (np.log(a / k) - k - 1)
    w = np.exp(l_theta - logsumexp(l_theta))
    theta_hat = np.sum(theta * w)
    k = np.mean(np.log1p(-theta_hat * x))
    sigma = -k / theta_hat
    k = k * n / (n + 10) + 10 * 0.5 / (n + 10)
    if np.isnan(k):
        k = np.inf
    return k, sigma


def psis_column(log_ratios: np.ndarray, tail_len: int) -> tuple[np.ndarray, float]:
    s = log_ratios.size
    lw = log_ratios - log_ratios.max()
    khat = np.inf
    if tail_len >= 5:
        order = np.argsort(lw, kind="stable")
        xs = lw[order]
        tail_ids = np.arange(s - tail_len, s)
        lw_tail = xs[tail_ids]
        if abs(lw_tail.max() - lw_tail.min()) >= np.finfo(float).eps / 100:
            cutoff = xs[tail_ids[0] - 1]
            x = np.exp(lw_tail) - np.exp(cutoff)
            k, sigma = gpdfit(x)
            if np.isfinite(k):
                p = (np.arange(1, tail_len + 1) - 0.5) / tail_len
                qq = sigma * np.expm1(-k * np.log1p(-p)) / k + np.exp(cutoff)
                lw[order[tail_ids]] = np.log(qq)
            khat = k
    lw[lw > 0] = 0
    return lw + log_ratios.max(), khat


def loo(ll_array: np.ndarray, r_eff: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """ll_array: (chains, draws, N). Returns the pointwise quantities and r_eff."""
    c, d, n = ll_array.shape
    s = c * d
    if r_eff is None:
        r_eff = relative_eff(np.exp(ll_array))
    ll = ll_array.reshape(s, n)
    tail_len = np.ceil(np.minimum(0.2 * s, 3 * np.sqrt(s / r_eff))).astype(int)
    elpd, p_loo, k, mcse, n_eff = (np.empty(n) for _ in range(5))
    r = np.arange(1, 1001)
    zn = ndtri((r - 3 / 8) / (1000 - 2 * 3 / 8 + 1))
    for i in range(n):
        lw, k[i] = psis_column(-ll[:, i], tail_len[i])
        lw = lw - logsumexp(lw)
        elpd[i] = logsumexp(ll[:, i] + lw)
        p_loo[i] = logsumexp(ll[:, i]) - np.log(s) - elpd[i]
        w = np.exp(lw)
        e = np.exp(elpd[i])
        sd = np.sqrt(np.sum(w**2 * (np.exp(ll[:, i]) - e) ** 2))
        z = e + sd * zn
        zpos = z[z > 0]  # R's var() of fewer than two values is NA
        mcse[i] = np.sqrt(np.var(np.log(zpos), ddof=1) / r_eff[i]) if zpos.size > 1 else np.nan
        n_eff[i] = r_eff[i] / np.sum(w**2)
    return {"elpd_loo": elpd, "p_loo": p_loo, "pareto_k": k, "mcse_elpd_loo": mcse, "n_eff": n_eff,
            "r_eff": r_eff, "tail_len": tail_len}
