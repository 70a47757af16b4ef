"""OLS speed and accuracy: engine's one-pass QR vs the usual Python least-squares routes.

    python benchmarks/bench_ols.py                 # n = 1,500 x p = 7 and n = 1,000,000 x p = 50
    python benchmarks/bench_ols.py --sizes 1500x7  # small case only
    python benchmarks/bench_ols.py --formula-only  # only the model-frame split (issue 18)
    python benchmarks/bench_ols.py --formula-only --clock cpu  # ... timed by CPU time

For each size, one design with a known truth: an intercept and p - 1 columns Z C, Z standard
normal and C = Q diag(logspace(0, -5)) Q' (condition number about 1e5), y = X beta exactly. Every
method fits the same arrays; the table gives wall seconds, the ratio to engine (peer / engine:
above 1 means engine is faster) and the coefficient error ||b - beta|| / ||beta||:

- engine kernel: ``engine.ols.least_squares`` (one-pass TSQR + R's dqrdc2 rank rule on the
  triangle, coefficients, residuals, every summary statistic); its QR part is shown apart.
- engine.ols(formula, DataFrame): the same plus ``model_frame`` (formula -> X); shown apart.
- R's lm.fit and lm(formula, data) when Rscript is installed, timed inside R on R's own draw of
  the same construction (R's random numbers, so the same conditioning, not the same numbers).
- numpy.linalg.lstsq (LAPACK gelsd, SVD based), scipy.linalg.qr(mode="economic") +
  solve_triangular (forms Q), Cholesky of X'X (normal equations: the speed floor, but the error
  grows with the square of the condition number), statsmodels OLS (pinv).

The model-frame split (``run_formula_designs``): for numeric designs of the sizes above, the Exam
data (mlmRev, factors and interactions), the grit replication's designs and simulated designs with
factors, interactions, ``I()``, ``log()`` and missing values at n = 1e4 and 1e6: ``model_frame``
against the previous implementation (tests/reference_model_frame.py) in the same run, the kernel
(QR, residual pass) and ``engine.ols`` end to end, statsmodels' formula API and R's ``lm(formula)``.

Numba compile time is reported apart: a cold compile (fresh cache folder, in a subprocess) and
the cache load of the first call in this process. The peers' BLAS/LAPACK (numpy, scipy) and the
OPENBLAS_CORETYPE setting are printed first. Small sizes are repeated and the best time kept;
at n = 1e6 the best of two runs (statsmodels: one run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import scipy
import scipy.linalg

from common import (  # noqa: F401  (importing common puts the repo on sys.path)
    REPO_ROOT, print_table, ratio, rscript_available, run_rscript, timed)

import engine  # noqa: E402
from engine.ols import least_squares  # noqa: E402


def blas_report() -> str:
    lines = []
    for name, module in (("numpy", np), ("scipy", scipy)):
        try:
            config = module.show_config(mode="dicts")
            blas = config["Build Dependencies"]["blas"]
            lapack = config["Build Dependencies"]["lapack"]
            lines.append(f"{name} {module.__version__}: BLAS {blas.get('name')} {blas.get('version')}"
                         f" ({blas.get('openblas configuration', '').strip()}); "
                         f"LAPACK {lapack.get('name')} {lapack.get('version')}")
        except Exception as exc:  # pragma: no cover - depends on the build
            lines.append(f"{name} {module.__version__}: BLAS unknown ({exc})")
    lines.append(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
                 f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}, "
                 f"CPUs={os.cpu_count()}")
    return "\n".join(lines)


def design(n: int, p: int, seed: int = 20240601):
    """X (n, p) C-contiguous with an intercept, condition number ~1e5; beta known; y = X beta."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((p - 1, p - 1)))
    mix = (q * np.logspace(0, -5, p - 1)) @ q.T
    X = np.empty((n, p))
    X[:, 0] = 1.0
    X[:, 1:] = rng.standard_normal((n, p - 1)) @ mix
    beta = rng.uniform(-2, 2, p)
    y = X @ beta
    return X, y, beta


def fit_lstsq(X, y):
    return np.linalg.lstsq(X, y, rcond=None)[0]


def fit_scipy_qr(X, y):
    q, r = scipy.linalg.qr(X, mode="economic", check_finite=False)
    return scipy.linalg.solve_triangular(r, q.T @ y, check_finite=False)


def fit_cholesky(X, y):
    factor = scipy.linalg.cho_factor(X.T @ X, check_finite=False)
    return scipy.linalg.cho_solve(factor, X.T @ y, check_finite=False)


def fit_statsmodels(X, y):
    import statsmodels.api as sm

    return np.asarray(sm.OLS(y, X).fit().params)


R_CODE = """
set.seed(20240601); n <- {n}; p <- {p}
q <- qr.Q(qr(matrix(rnorm((p - 1)^2), p - 1)))
mix <- q %*% diag(10^seq(0, -5, length.out = p - 1)) %*% t(q)
X <- cbind(1, matrix(rnorm(n * (p - 1)), n) %*% mix)
beta <- runif(p, -2, 2); y <- drop(X %*% beta)
err <- function(b) sqrt(sum((b - beta)^2)) / sqrt(sum(beta^2))
reps <- {reps}
t1 <- system.time(for (r in 1:reps) fit <- lm.fit(X, y))[["elapsed"]] / reps
d <- data.frame(X[, -1]); names(d) <- paste0("x", 1:(p - 1)); d$y <- y
f <- as.formula(paste("y ~", paste(names(d)[1:(p - 1)], collapse = " + ")))
t2 <- system.time(for (r in 1:reps) fit2 <- lm(f, data = d))[["elapsed"]] / reps
cat("RESULT", t1, err(fit$coefficients), t2, err(coef(fit2)), "\n")
cat("BLAS", extSoftVersion()[["BLAS"]], La_library(), "\n")
"""


def r_rows(n: int, p: int, t_engine: float) -> list[dict]:
    """R's lm.fit (LINPACK dqrdc2) and lm(formula, data) on R's own draw of the same design
    (same construction and conditioning, R's random numbers); timed inside R."""
    reps = 1 if n * p > 5_000_000 else 200  # mean of 200 calls (R's timer ticks in ms)
    try:
        stdout, _ = run_rscript(R_CODE.format(n=n, p=p, reps=reps), timeout=900)
    except Exception as exc:  # pragma: no cover - depends on the machine
        print(f"R peer skipped: {exc}")
        return []
    result = next(line.split()[1:] for line in stdout.splitlines() if line.startswith("RESULT"))
    blas = next((line[5:] for line in stdout.splitlines() if line.startswith("BLAS")), "?")
    print(f"R peer BLAS/LAPACK: {blas.strip()}")
    t_fit, e_fit, t_lm, e_lm = (float(v) for v in result)
    return [{"method": "R lm.fit (own draw, in R)", "seconds": t_fit,
             "vs engine": ratio(t_fit, t_engine), "coef rel. error": e_fit},
            {"method": "R lm(formula, data) (in R)", "seconds": t_lm,
             "vs engine": ratio(t_lm, t_engine), "coef rel. error": e_lm}]


def cold_compile_seconds() -> float:
    """First call in a fresh process with an empty Numba cache folder (a cold compile)."""
    code = (
        "import time, numpy as np\n"
        "from engine.ols import least_squares\n"
        "X = np.random.default_rng(0).standard_normal((200, 4)); y = X[:, 0]\n"
        "t = time.perf_counter(); least_squares(X, y); a = time.perf_counter() - t\n"
        "t = time.perf_counter(); least_squares(X, y); b = time.perf_counter() - t\n"
        "print(a - b)\n"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(REPO_ROOT))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return float(done.stdout.strip().splitlines()[-1])


def run_size(n: int, p: int, skip_statsmodels: bool, with_r: bool = True) -> None:
    print(f"\n== n = {n:,}, p = {p} ==", flush=True)
    X, y, beta = design(n, p)
    repeat = 2 if n * p > 5_000_000 else 20  # best of 2 (statsmodels: 1) for the large case

    def err(b):
        return float(np.linalg.norm(np.asarray(b) - beta) / np.linalg.norm(beta))

    rows = []
    fit, t_engine = None, float("inf")
    for _ in range(repeat):  # keep the best run and its own breakdown
        start = time.perf_counter()
        candidate = least_squares(X, y)
        seconds = time.perf_counter() - start
        if seconds < t_engine:
            fit, t_engine = candidate, seconds
    rows.append({"method": "engine kernel (least_squares)", "seconds": t_engine,
                 "vs engine": "1.0x", "coef rel. error": err(fit.coef)})
    rows.append({"method": "  of which QR + solve", "seconds": fit.seconds_qr,
                 "vs engine": "", "coef rel. error": None})
    rows.append({"method": "  of which residual pass", "seconds": fit.seconds_resid,
                 "vs engine": "", "coef rel. error": None})

    names = [f"x{j}" for j in range(1, p)]
    frame = pd.DataFrame(X[:, 1:], columns=names).assign(y=y)
    formula = "y ~ " + " + ".join(names)
    res, t_formula = None, float("inf")
    for _ in range(max(1, repeat // 4)):
        start = time.perf_counter()
        candidate = engine.ols(formula, frame)
        seconds = time.perf_counter() - start
        if seconds < t_formula:
            res, t_formula = candidate, seconds
    rows.append({"method": "engine.ols(formula, data)", "seconds": t_formula,
                 "vs engine": ratio(t_formula, t_engine), "coef rel. error": err(res.params)})
    rows.append({"method": "  of which model_frame", "seconds": res.timings["model_frame"],
                 "vs engine": "", "coef rel. error": None})
    del frame, res

    peers = [("numpy.linalg.lstsq", fit_lstsq), ("scipy qr(economic) + solve", fit_scipy_qr),
             ("Cholesky of X'X", fit_cholesky)]
    if not skip_statsmodels:
        peers.append(("statsmodels OLS (pinv)", fit_statsmodels))
    for label, fn in peers:
        reps = 1 if (fn is fit_statsmodels and n * p > 5_000_000) else repeat
        b, seconds = timed(fn, X, y, repeat=reps)
        rows.append({"method": label, "seconds": seconds, "vs engine": ratio(seconds, t_engine),
                     "coef rel. error": err(b)})
    if with_r and rscript_available():
        rows.extend(r_rows(n, p, t_engine))
    print_table(rows, ["method", "seconds", "vs engine", "coef rel. error"])
    lstsq_s = next(r["seconds"] for r in rows if r["method"] == "numpy.linalg.lstsq")
    print(f"engine kernel vs numpy lstsq: {ratio(lstsq_s, t_engine)} faster "
          f"(issue goal: >= 4x at n = 1e6, p = 50)", flush=True)


# --------------------------------------------------------------------------------------------
# The formula layer: model_frame vs the kernel it feeds, on designs with factors and interactions
# --------------------------------------------------------------------------------------------

EXAM_CSV = "/work/shared/data/mlmRev_Exam.csv"
EXAM_FORMULA = "normexam ~ standLRT * sex + schgend + vr + intake + type + schavg:intake"
FACTOR_FORMULA = "y ~ x1 + x2 * f1 + f2:f3 + x3 + I(x4^2) + log(x5)"
FACTOR_PATSY = "y ~ x1 + x2 * f1 + f2:f3 + x3 + I(x4**2) + np.log(x5)"
FACTOR_R = """
set.seed(20240601); n <- {n}
d <- data.frame(x1 = rnorm(n), x2 = rnorm(n), x3 = rnorm(n), x4 = rnorm(n), x5 = runif(n, 0.5, 2),
                f1 = factor(sample(c("a", "b", "c", "d", "e"), n, TRUE)),
                f2 = sample(c("lo", "mid", "hi"), n, TRUE), f3 = sample(c(FALSE, TRUE), n, TRUE))
d$x1[runif(n) < 0.05] <- NA
d$y <- d$x1 + d$x2 + rnorm(n)
"""


def factor_frame(n: int, seed: int = 20240601) -> pd.DataFrame:
    """x1..x5 numeric (5% of x1 missing), f1 categorical (5 levels), f2 string (3), f3 bool."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{j}": rng.standard_normal(n) for j in range(1, 5)})
    frame["x5"] = rng.uniform(0.5, 2.0, n)
    frame["f1"] = pd.Categorical(rng.choice(list("abcde"), n))
    frame["f2"] = rng.choice(["lo", "mid", "hi"], n).astype(object)
    frame["f3"] = rng.random(n) < 0.5
    frame.loc[rng.random(n) < 0.05, "x1"] = np.nan
    frame["y"] = frame["x1"].fillna(0) + frame["x2"] + rng.standard_normal(n)
    return frame


def formula_designs(sizes: list[tuple[int, int]]):
    """(label, formula, patsy formula or None, frame, R code making `d` or None, repeats)."""
    from engine import datasets, replicate

    out = []
    for n, p in sizes:
        X, y, _ = design(n, p)
        names = [f"x{j}" for j in range(1, p)]
        frame = pd.DataFrame(X[:, 1:], columns=names).assign(y=y)
        formula = "y ~ " + " + ".join(names)
        r_code = (f"set.seed(1); n <- {n}; d <- data.frame(matrix(rnorm(n * {p - 1}), n)); "
                  f"names(d) <- paste0('x', 1:{p - 1}); d$y <- rnorm(n)\n")
        big = n * p > 5_000_000
        out.append((f"numeric n = {n:,}, p = {p}", formula, None if big else formula, frame,
                    r_code, 2 if big else 50))
    exam = pd.read_csv(EXAM_CSV)
    out.append(("Exam (mlmRev), factors + interactions", EXAM_FORMULA, EXAM_FORMULA, exam,
                f"d <- read.csv('{EXAM_CSV}', stringsAsFactors = TRUE)\n", 30))
    grit = datasets.load_grit()
    model4 = dict(replicate.OLS_MODELS)["model4"]
    out.append(("grit model4 (factors, no intercept)", model4, None, grit, None, 50))
    out.append(("grit nested (1 | schoolid/classid)", replicate.NESTED_FORMULA, None, grit, None, 50))
    for n in (10_000, 1_000_000):
        big = n >= 1_000_000
        out.append((f"factors + interactions n = {n:,}", FACTOR_FORMULA,
                    None if big else FACTOR_PATSY, factor_frame(n), FACTOR_R.format(n=n),
                    2 if big else 20))
    return out


R_LM_TIMER = """
{make}
f <- as.formula("{formula}")
reps <- {reps}
t <- system.time(for (r in 1:reps) fit <- lm(f, data = d))[["elapsed"]] / reps
cat("RESULT", t, "\n")
"""


def r_lm_seconds(make: str, formula: str, reps: int) -> float | None:
    try:
        stdout, _ = run_rscript(R_LM_TIMER.format(make=make, formula=formula, reps=reps), timeout=900)
    except Exception as exc:  # pragma: no cover - depends on the machine
        print(f"R peer skipped: {exc}")
        return None
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT"))
    return float(line.split()[1])


def _timed_clock(clock, fn, *args, repeat: int = 1, **kwargs):
    """(last result, best seconds of ``repeat`` calls) on ``clock`` (time.perf_counter: wall, or
    time.process_time: this process's CPU time, which a loaded machine disturbs less)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = clock()
        result = fn(*args, **kwargs)
        best = min(best, clock() - start)
    return result, best


def run_formula_designs(sizes, with_r: bool, skip_statsmodels: bool, clock: str = "wall") -> None:
    """The split of engine.ols(formula, data): model_frame (and the previous implementation,
    kept in tests/reference_model_frame.py, in the same run), kernel (QR, residual pass);
    statsmodels' formula API and R's lm(formula, data) on the same data (R: its own draw for the
    simulated designs, the same file for Exam)."""
    import statsmodels.formula.api as smf

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import reference_model_frame as previous

    from engine.formula import model_frame

    allow = {"allow_random": True}
    tick = time.process_time if clock == "cpu" else time.perf_counter

    def timed(fn, *args, repeat=1, **kwargs):  # noqa: F811 - the chosen clock
        return _timed_clock(tick, fn, *args, repeat=repeat, **kwargs)

    print(f"clock: {clock} ({tick.__name__}); the kernel's QR / residual split is wall time "
          "measured inside least_squares")
    for label, formula, patsy_formula, frame, r_make, reps in formula_designs(sizes):
        print(f"\n== model frame: {label} ==", flush=True)
        random = "|" in formula
        mf, t_mf = timed(model_frame, formula, frame, repeat=reps, **(allow if random else {}))
        _, t_prev = timed(previous.model_frame, formula, frame, repeat=max(1, reps // 2),
                          **(allow if random else {}))
        n, p = mf.X.shape
        rows = [{"step": f"model_frame (n = {n:,}, p = {p})", "seconds": t_mf, "vs previous": ""},
                {"step": "  previous model_frame (tests/reference_model_frame.py)",
                 "seconds": t_prev, "vs previous": ratio(t_prev, t_mf)}]
        if not random:
            fit, t_kernel = None, float("inf")
            for _ in range(reps):
                start = tick()
                candidate = least_squares(mf.X, mf.y, has_intercept=mf.has_intercept)
                seconds = tick() - start
                if seconds < t_kernel:
                    fit, t_kernel = candidate, seconds
            _, t_ols = timed(engine.ols, formula, frame, repeat=reps)
            rows += [{"step": "kernel (least_squares)", "seconds": t_kernel, "vs previous": ""},
                     {"step": "  of which QR + solve", "seconds": fit.seconds_qr, "vs previous": ""},
                     {"step": "  of which residual pass", "seconds": fit.seconds_resid,
                      "vs previous": ""},
                     {"step": "engine.ols(formula, data) end to end", "seconds": t_ols,
                      "vs previous": f"{t_ols / t_kernel:.2f}x the kernel"}]
            if patsy_formula and not skip_statsmodels:
                _, t_sm = timed(lambda f=patsy_formula, d=frame: smf.ols(f, d).fit(),
                                repeat=max(1, reps // 5))
                rows.append({"step": "statsmodels smf.ols(formula, data).fit()", "seconds": t_sm,
                             "vs previous": f"engine.ols {ratio(t_sm, t_ols)} faster"})
            if with_r and r_make and rscript_available():
                t_r = r_lm_seconds(r_make, formula, reps=max(1, reps))
                if t_r is not None:
                    rows.append({"step": "R lm(formula, data) (in R)", "seconds": t_r,
                                 "vs previous": f"engine.ols {ratio(t_r, t_ols)} faster"})
        print_table(rows, ["step", "seconds", "vs previous"])
        del mf


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1500x7,1000000x50",
                        help="comma-separated n x p list (default: 1500x7,1000000x50)")
    parser.add_argument("--skip-statsmodels", action="store_true")
    parser.add_argument("--skip-r", action="store_true", help="do not time R's lm (Rscript)")
    parser.add_argument("--formula-only", action="store_true",
                        help="only the model-frame split (numeric, Exam, grit, factor designs)")
    parser.add_argument("--no-formula", action="store_true", help="skip the model-frame split")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="clock of the model-frame split (cpu: time.process_time; R's lm is "
                             "timed by R's elapsed time either way)")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes.split(",")]
    if args.formula_only:
        print(blas_report())
        from engine.formula import model_frame  # warm the Numba kernels (cache load)

        model_frame("y ~ x1 + x2 * f1 + f2:f3 + I(x4^2) + log(x5)", factor_frame(100))
        least_squares(*design(300, 5)[:2])
        run_formula_designs(sizes, with_r=not args.skip_r, skip_statsmodels=args.skip_statsmodels,
                            clock=args.clock)
        return 0
    print(blas_report())
    print(f"numba {__import__('numba').__version__}; engine block {engine.ols.BLOCK_ROWS} rows, "
          f"chunk {engine.ols.CHUNK_ROWS} rows")
    cold = cold_compile_seconds()
    # warm-up on more than one chunk, so that every kernel (the chunk merge too) is compiled or
    # loaded from the cache before anything is timed
    X, y, _ = design(2 * engine.ols.CHUNK_ROWS + 5, 5)
    start = time.perf_counter()
    least_squares(X, y)
    first = time.perf_counter() - start
    _, steady = timed(least_squares, X, y, repeat=5)
    print(f"compile: cold (empty cache, subprocess) {cold:.2f} s; this process's first call "
          f"{first:.3f} s (cache load or compile) vs {steady * 1e3:.2f} ms steady "
          f"(n = {X.shape[0]:,}, p = 5)")
    for size in args.sizes.split(","):
        n, p = (int(v) for v in size.lower().split("x"))
        run_size(n, p, args.skip_statsmodels, with_r=not args.skip_r)
    if not args.no_formula:
        run_formula_designs(sizes, with_r=not args.skip_r, skip_statsmodels=args.skip_statsmodels,
                            clock=args.clock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
