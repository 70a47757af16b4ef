"""Predictions of a fitted linear model with standard errors and intervals, as R's ``predict.lm``.

For new rows x (the fitted model's design on ``newdata``, :mod:`engine.newdata`) and the rank k
kept coefficients b (pivot order), R's stats/R/lm.R ``predict.lm(se.fit = TRUE, interval = ...)``:

    fit    = x' b
    se_fit = sqrt(s^2 |R^-T x|^2) = sqrt(x' (X'X)^-1 x) s,     s^2 = RSS / (n - k)
    confidence:  fit -/+ t_{1-a/2, n-k} se_fit
    prediction:  fit -/+ t_{1-a/2, n-k} sqrt(se_fit^2 + s^2)

with R the triangle of the fit's pivoted QR (the rank x rank block; never X'X). Without newdata
the rows are the fitted ones (R: Q's rows, i.e. the hat values times s^2). A rank-deficient fit
warns as R 4.2.2 does for new data; the aliased columns are left out (R's ``beta[piv]``).

Robust covariances: R's ``predict.lm`` ignores a sandwich covariance (it has no argument for one),
so by default neither does this. ``robust=True`` uses the fit's robust covariance V instead:
se_fit = sqrt(x' V x), intervals on the fit's inference degrees of freedom (G - 1 when clustered),
and the prediction interval adds s^2.
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from engine.errors import DataWarning, ModelSpecError, warn_user

INTERVALS = (None, "none", "confidence", "prediction")


def predict_ols(fit, newdata: pd.DataFrame | None = None, interval: str | None = None,
                level: float = 0.95, robust: bool = False) -> pd.DataFrame:
    """R's ``predict(fit, newdata, se.fit = TRUE, interval = interval, level = level)``.

    Returns a DataFrame indexed as ``newdata`` (or the fitted rows) with columns ``fit`` and
    ``se_fit``, plus ``lwr`` and ``upr`` for an interval; ``.attrs`` holds R's ``df`` and
    ``residual_scale``.
    """
    from scipy import stats

    from engine.newdata import fitted_terms, new_design
    from engine.ols import _back_substitute
    from engine.robust import leverages

    if interval not in INTERVALS:
        raise ModelSpecError(
            f"interval={interval!r}: use None, 'confidence' or 'prediction' (R's predict.lm)")
    if interval == "none":
        interval = None
    if not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
        raise ModelSpecError(f"level must lie strictly between 0 and 1, got {level!r}")
    if not isinstance(robust, bool):
        raise ModelSpecError(f"robust must be True or False, got {robust!r}")
    if robust and fit.robust is None:
        raise ModelSpecError("robust=True needs a fit with a robust covariance: ols(..., vcov='HC3') or cluster=")
    ls = fit._ls
    mf = fit.model_frame
    if mf is None:
        raise ModelSpecError("this fit keeps no model frame, so it cannot predict")
    if newdata is None:
        X = mf.X
        index = fit.resid.index
    else:
        X = new_design(fitted_terms(mf, fit._data_columns), newdata)
        index = newdata.index
    k = ls.rank
    if k < len(fit.column_names) and newdata is not None:  # R warns only for new data
        warn_user("prediction from a rank-deficient fit may be misleading", DataWarning)
    kept = ls.pivot[:k]
    Xk = X[:, kept]
    coef = ls.coef[kept]
    with np.errstate(invalid="ignore"):
        predictor = Xk @ coef if k else np.zeros(X.shape[0])
    res_var = ls.sigma ** 2
    df = ls.df_resid
    with np.errstate(invalid="ignore"):
        if robust and fit.robust is not None:
            V = fit.robust.vcov
            ip = np.einsum("ij,ij->i", Xk @ V, Xk)
            df = fit.robust.df
        else:
            rinv = _back_substitute(ls.qr.r[:k, :k], np.eye(k)) if k else np.zeros((0, 0))
            ip = leverages(Xk, rinv)[1] * res_var
    out = {"fit": predictor, "se_fit": np.sqrt(ip)}
    if interval is not None:
        if interval == "prediction" and newdata is None:
            warn_user("predictions on current data refer to _future_ responses", DataWarning)
        tq = stats.t.ppf((1.0 - float(level)) / 2.0, df) if df > 0 else np.nan
        with np.errstate(invalid="ignore"):
            hwid = tq * (np.sqrt(ip) if interval == "confidence" else np.sqrt(ip + res_var))
        out["lwr"] = predictor + hwid
        out["upr"] = predictor - hwid
    frame = pd.DataFrame(out, index=index)
    frame.attrs["df"] = int(df)
    frame.attrs["residual_scale"] = float(ls.sigma)
    return frame
