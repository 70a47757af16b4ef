"""Rubin's rules for m complete-data analyses, with Barnard-Rubin degrees of freedom (as R's mice).

For each coefficient Q with estimates Q_l and squared standard errors U_l from the m fits
(Rubin 1987, sec. 3.1; van Buuren, *Flexible Imputation of Missing Data*, 2nd ed., sec. 5.2):

    qbar   = mean(Q_l)                    pooled estimate
    ubar   = mean(U_l)                    within-imputation variance
    b      = var(Q_l)  (divisor m - 1)    between-imputation variance
    t      = ubar + (1 + 1/m) b           total variance; std.error = sqrt(t)
    riv    = (1 + 1/m) b / ubar           relative increase in variance
    lambda = (1 + 1/m) b / t              proportion of variance due to missingness
    df     = Barnard & Rubin (1999): nu_old nu_obs / (nu_old + nu_obs) with
             nu_old = (m - 1) / lambda^2 and nu_obs = (dfcom + 1)/(dfcom + 3) dfcom (1 - lambda)
    fmi    = (riv + 2/(df + 3)) / (riv + 1)

as mice 3.15's ``pool()`` / ``barnard.rubin()``: lambda is floored at 1e-4 before the df (so B = 0
gives a finite df, essentially the observed-data df nu_obs); dfcom, the complete-data residual df,
comes from the first fit. The limit dfcom = inf gives the old Rubin df (m - 1)/lambda^2 (R's
formula yields NaN there: inf/inf). Test statistic estimate/std.error with a t(df) reference,
two-sided p-values from the upper tail (accurate when tiny), intervals estimate +- t_{df}(0.975) se.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from engine.errors import EngineInputError
from engine.rcompat.numbers import format_percent
from engine.rcompat.print_pool import mipo_text, pooled_summary_text

__all__ = ["LAMBDA_FLOOR", "PooledResult", "PooledSummary", "barnard_rubin_df", "pool"]
from engine.validate import check_pool_inputs, checked_arguments

#: mice floors lambda at this value before computing the Barnard-Rubin df.
LAMBDA_FLOOR = 1e-4


def barnard_rubin_df(m: int, b: np.ndarray, t: np.ndarray, dfcom: float) -> np.ndarray:
    """Barnard & Rubin (1999) small-sample df, exactly as mice's ``barnard.rubin()``.

    ``b``, ``t``: between and total variances per coefficient; ``dfcom``: complete-data df
    (``math.inf`` for a large-sample analysis, which gives the old Rubin df (m - 1)/lambda^2).
    """
    b = np.asarray(b, dtype=float)
    t = np.asarray(t, dtype=float)
    lam = (1.0 + 1.0 / m) * b / t
    lam = np.where(lam < LAMBDA_FLOOR, LAMBDA_FLOOR, lam)
    df_old = (m - 1) / lam**2
    if math.isinf(dfcom):
        return df_old
    df_obs = (dfcom + 1.0) / (dfcom + 3.0) * dfcom * (1.0 - lam)
    return df_old * df_obs / (df_old + df_obs)


def _fit_parts(fit: Any, index: int) -> tuple[pd.Series, pd.Series, float | None]:
    """(estimates, standard errors, residual df) of one complete-data fit."""
    params = getattr(fit, "params", None)
    if params is None:
        raise EngineInputError(
            f"pool(): fit {index} has no 'params'; pass fitted models (engine.ols results or any "
            "object with params and bse or vcov)"
        )
    if not isinstance(params, pd.Series):
        params = pd.Series(np.asarray(params, dtype=float),
                           index=[f"x{j}" for j in range(np.size(params))])
    bse = getattr(fit, "bse", None)
    if bse is None:
        vcov = getattr(fit, "vcov", None)
        if callable(vcov):
            vcov = vcov()
        if vcov is None:
            cov_params = getattr(fit, "cov_params", None)
            vcov = cov_params() if callable(cov_params) else None
        if vcov is None:
            raise EngineInputError(f"pool(): fit {index} has neither 'bse' nor 'vcov'")
        bse = np.sqrt(np.diag(np.asarray(vcov, dtype=float)))
    if not isinstance(bse, pd.Series):
        bse = pd.Series(np.asarray(bse, dtype=float), index=params.index)
    df_resid = getattr(fit, "df_resid", None)
    if df_resid is None:
        df_resid = getattr(fit, "df_residual", None)
    if callable(df_resid):
        df_resid = df_resid()
    check_pool_inputs(params.to_numpy(), bse.to_numpy(), list(params.index), index)  # before casting
    return params.astype(float), bse.astype(float), (None if df_resid is None else float(df_resid))


@dataclass(frozen=True)
class PooledResult:
    """Pooled estimates (mice's ``mipo``); ``pooled`` is mice's ``$pooled`` table.

    Fields per coefficient (arrays in ``terms`` order): estimate (qbar), ubar, b, t, dfcom, df,
    riv, lambda_ (``lambda``), fmi; ``estimates`` / ``std_errors``: (m, p) per-fit values.
    """

    m: int
    terms: list[str]
    estimate: np.ndarray
    ubar: np.ndarray
    b: np.ndarray
    t: np.ndarray
    dfcom: float
    df: np.ndarray
    riv: np.ndarray
    lambda_: np.ndarray
    fmi: np.ndarray
    estimates: np.ndarray
    std_errors: np.ndarray

    @property
    def std_error(self) -> np.ndarray:
        return np.sqrt(self.t)

    @property
    def pooled(self) -> pd.DataFrame:
        """mice's ``pool(fit)$pooled``: term, m, estimate, ubar, b, t, dfcom, df, riv, lambda, fmi."""
        return pd.DataFrame({
            "term": self.terms, "m": self.m, "estimate": self.estimate, "ubar": self.ubar,
            "b": self.b, "t": self.t, "dfcom": self.dfcom, "df": self.df, "riv": self.riv,
            "lambda": self.lambda_, "fmi": self.fmi,
        })

    def summary(self, conf_int: bool = True, conf_level: float = 0.95) -> "PooledSummary":
        """mice's ``summary(pool(fit), conf.int = TRUE, conf.level = 0.95)`` as a DataFrame.

        Columns: term, estimate, std.error, statistic, df, p.value and, with ``conf_int``, the
        interval bounds named like R (``"2.5 %"``, ``"97.5 %"``). Prints like R's data frame.
        """
        if not 0.0 < conf_level < 1.0:
            raise EngineInputError(f"conf_level must lie in (0, 1), got {conf_level!r}")
        se = self.std_error
        statistic = self.estimate / se
        p_value = 2.0 * stats.t.sf(np.abs(statistic), self.df)
        table = {
            "term": list(self.terms), "estimate": self.estimate, "std.error": se,
            "statistic": statistic, "df": self.df, "p.value": p_value,
        }
        if conf_int:
            crit = stats.t.ppf((1.0 + conf_level) / 2.0, self.df)
            lo_name, hi_name = format_percent([(1.0 - conf_level) / 2.0, (1.0 + conf_level) / 2.0])
            table[lo_name] = self.estimate - crit * se
            table[hi_name] = self.estimate + crit * se
        return PooledSummary(table)

    def __repr__(self) -> str:
        return mipo_text(self.pooled, self.m)


@checked_arguments
def pool(fits: Sequence[Any], dfcom: float | None = None) -> PooledResult:
    """Pool m complete-data fits by Rubin's rules (see the module docstring).

    ``fits``: a list (or ``MiceFits``) of fitted models, each with ``params`` (a Series named by
    term) and ``bse`` or ``vcov``, plus ``df_resid`` for the complete-data df. ``dfcom``: override
    the complete-data df (default: the first fit's residual df; ``math.inf`` for large samples,
    which is also used when the fits carry no residual df).
    """
    if isinstance(fits, (str, bytes, pd.DataFrame)) or not hasattr(fits, "__iter__"):
        raise EngineInputError(f"pool() needs a list of fitted models, got {type(fits).__name__}")
    fits = list(fits)
    m = len(fits)
    if m < 2:
        raise EngineInputError(f"pool() needs at least 2 fits (m >= 2), got m = {m}")
    parts = [_fit_parts(fit, i) for i, fit in enumerate(fits)]
    terms = list(parts[0][0].index)
    for i, (params, bse, _) in enumerate(parts[1:], start=1):
        if list(params.index) != terms or list(bse.index) != terms:
            raise EngineInputError(
                f"pool(): fit {i} has terms {list(params.index)}, fit 0 has {terms}; "
                "pooling needs the same model on every imputed data set"
            )
    estimates = np.vstack([p.to_numpy() for p, _, _ in parts])
    std_errors = np.vstack([s.to_numpy() for _, s, _ in parts])
    check_pool_inputs(estimates, std_errors, terms)
    if dfcom is None:
        dfcom = parts[0][2] if parts[0][2] is not None else math.inf
    dfcom = float(dfcom)
    if not dfcom > 0:
        raise EngineInputError(f"dfcom must be positive, got {dfcom!r}")
    qbar = estimates.mean(axis=0)
    ubar = (std_errors**2).mean(axis=0)
    b = estimates.var(axis=0, ddof=1)
    t = ubar + (1.0 + 1.0 / m) * b
    df = barnard_rubin_df(m, b, t, dfcom)
    with np.errstate(divide="ignore", invalid="ignore"):
        riv = (1.0 + 1.0 / m) * b / ubar
    lam = (1.0 + 1.0 / m) * b / t
    fmi = (riv + 2.0 / (df + 3.0)) / (riv + 1.0)
    return PooledResult(m=m, terms=terms, estimate=qbar, ubar=ubar, b=b, t=t, dfcom=dfcom, df=df,
                        riv=riv, lambda_=lam, fmi=fmi, estimates=estimates, std_errors=std_errors)


class PooledSummary(pd.DataFrame):
    """``summary(pool(fit))`` as a DataFrame that prints like R's data frame."""

    @property
    def _constructor(self):
        return pd.DataFrame

    def __repr__(self) -> str:
        return pooled_summary_text(self)

    def __str__(self) -> str:
        return pooled_summary_text(self)

    def to_r_string(self) -> str:
        return pooled_summary_text(self)


from engine._callable_module import make_module_callable  # noqa: E402

make_module_callable(__name__, "pool")
