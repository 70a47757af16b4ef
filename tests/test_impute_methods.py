"""Tests of engine.impute.lindep's remove.lindep kernel and of the LAPACK routines it uses
(engine._lapack), each against an independent, slow numpy reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.impute import lindep
from engine import _lapack as lapack

EPS = 1e-4
MAXCOR = 0.99


# --------------------------------------------------------------------------------------------
# Slow references


def literal_remove_lindep(x, y, eps=EPS, maxcor=MAXCOR):
    """mice 3.15's ``remove.lindep`` (R/internal.R) in numpy, line by line: drop everything when
    var(y) < eps; keep predictors with var > eps and cor(x, y) < maxcor; then, while
    lambda_min / lambda_max of the kept predictors' correlation matrix is < eps, drop the one with
    the largest |component| in the eigenvector of lambda_min. The eigen-decomposition is of the
    predictors still kept: R's ``cx[keep[keep], keep[keep]]`` indexes with a logical vector of all
    TRUE one element short, which R recycles, so R re-uses the first matrix; the intended rule is
    the one engine implements. A single predictor is kept, as engine does (older mice)."""
    n, p = x.shape
    keep = np.zeros(p, dtype=bool)
    if n < 2 or np.var(y, ddof=1) < eps:
        return keep
    with np.errstate(all="ignore"):
        var = x.var(axis=0, ddof=1)
        xc = x - x.mean(axis=0)
        yc = y - y.mean()
        cor = xc.T @ yc / np.sqrt((xc * xc).sum(axis=0) * (yc @ yc))
    keep = (var > eps) & (np.nan_to_num(cor, nan=np.inf) < maxcor)
    if p == 1:
        keep[0] = True
        return keep
    live = list(np.flatnonzero(keep))
    if len(live) < 2:
        return keep
    cx = np.corrcoef(x[:, live], rowvar=False)
    sub = list(range(len(live)))
    while len(sub) > 1:
        values, vectors = np.linalg.eigh(cx[np.ix_(sub, sub)])
        if values[0] / values[-1] >= eps:
            break
        j = int(np.argmax(np.abs(vectors[:, 0])))
        keep[live[sub[j]]] = False
        del sub[j]
    return keep


def eigen_rounds(x, keep_start, eps=EPS):
    """The eigenvalue rule's rounds from keep_start: (ratio, |largest| / |second| component)."""
    live = list(np.flatnonzero(keep_start))
    cx = np.corrcoef(x[:, live], rowvar=False)
    sub = list(range(len(live)))
    rounds = []
    while len(sub) > 1:
        values, vectors = np.linalg.eigh(cx[np.ix_(sub, sub)])
        top2 = np.sort(np.abs(vectors[:, 0]))[-2:]
        rounds.append((values[0] / values[-1], top2[1] / top2[0]))
        if values[0] / values[-1] >= eps:
            break
        del sub[int(np.argmax(np.abs(vectors[:, 0])))]
    return rounds


def design_with_near_dependencies(rng, n=400):
    """Numeric columns and 0/1 dummies (a 4-level factor, two binary ones) with two planted
    near-dependencies: a column equal to an equally weighted sum of 5 to 8 standardised others
    plus a little noise, so that mice's eigenvalue rule has something to drop, in random order."""
    numeric = rng.standard_normal((n, 6))
    factor = rng.integers(0, 4, n)
    dummies = np.column_stack([factor == level for level in (1, 2, 3)] +
                              [rng.random(n) < 0.3, rng.random(n) < 0.6]).astype(float)
    columns = [numeric, dummies]
    for _ in range(2):
        members = rng.choice(numeric.shape[1] + dummies.shape[1], size=rng.integers(5, 9), replace=False)
        base = np.column_stack([numeric, dummies])[:, members]
        base = (base - base.mean(axis=0)) / base.std(axis=0)
        noise = 10.0 ** rng.uniform(-2.0, -1.5)
        columns.append((base.sum(axis=1) + noise * np.sqrt(len(members)) * rng.standard_normal(n))[:, None])
    x = np.column_stack(columns)
    return x[:, rng.permutation(x.shape[1])], rng.standard_normal(n)


def cholesky_pass_drops_nothing(x, keep, eps=EPS, margin=2.0):
    """True when every residual variance of the kept columns given the earlier ones (Cholesky pivot
    of their correlation matrix, column order) is above margin * eps * lambda_max, so that the
    kernel's Cholesky pass cannot drop a column and its keep set must equal mice's rule exactly."""
    cx = np.corrcoef(x[:, keep], rowvar=False)
    pivots = np.diag(np.linalg.cholesky(cx)) ** 2
    return bool(pivots.min() > max(1e-8, margin * eps * np.linalg.eigvalsh(cx)[-1]))


# --------------------------------------------------------------------------------------------
# lindep_keep


def lindep_keep(x, y, eps, maxcor):
    """The kernel on C-ordered arrays, as engine.mice.remove_lindep calls it (one compiled
    signature)."""
    return lindep.lindep_keep(np.ascontiguousarray(x, dtype=float), np.ascontiguousarray(y, dtype=float), eps, maxcor)


def test_lindep_keep_equals_literal_mice_rule_on_planted_near_dependencies():
    rng = np.random.default_rng(20240611)
    compared = dropped = multi_round = 0
    for _ in range(400):
        x, y = design_with_near_dependencies(rng)
        reference = literal_remove_lindep(x, y)
        start = literal_remove_lindep(x, y, eps=0.0)  # the variance / correlation filter only
        if not cholesky_pass_drops_nothing(x, start):
            continue
        rounds = eigen_rounds(x, start)
        # decisions at rounding level (ratio within 1% of eps, or two components within 1%) are
        # not meaningful for any implementation: skip such draws
        if any(abs(ratio / EPS - 1.0) < 0.01 or margin < 1.01 for ratio, margin in rounds):
            continue
        kernel = lindep_keep(x, y, EPS, MAXCOR)
        np.testing.assert_array_equal(kernel, reference)
        compared += 1
        dropped += int((start & ~reference).any())
        multi_round += int((start & ~reference).sum() >= 2)
        if compared == 60:
            break
    assert compared == 60 and dropped >= 45 and multi_round >= 10, (compared, dropped, multi_round)


def test_lindep_keep_exact_dependencies_keep_the_column_space():
    """Exactly dependent columns are dropped in column order by the Cholesky pass, where mice's rule
    may drop another member of the dependency: the kept columns span the same space (centred, as
    correlations see them), and the kept correlation matrix meets mice's stopping rule."""
    rng = np.random.default_rng(7)
    for _ in range(30):
        n = 300
        base = rng.standard_normal((n, 5))
        factor = rng.integers(0, 3, n)
        full_dummies = np.column_stack([factor == level for level in range(3)]).astype(float)
        x = np.column_stack([base, full_dummies, base[:, :2] @ rng.standard_normal(2),
                             base[:, 2] - base[:, 3], base[:, 4], full_dummies.sum(axis=1) * 2.0 + base[:, 0]])
        x = x[:, rng.permutation(x.shape[1])]
        y = rng.standard_normal(n)
        kernel = lindep_keep(x, y, EPS, MAXCOR)
        reference = literal_remove_lindep(x, y)
        xc = x - x.mean(axis=0)
        rank = np.linalg.matrix_rank
        assert kernel.sum() == reference.sum() == rank(xc[:, kernel]) == rank(xc[:, reference]) == rank(xc)
        assert rank(np.column_stack([xc[:, kernel], xc[:, reference]])) == kernel.sum()
        values = np.linalg.eigvalsh(np.corrcoef(x[:, kernel], rowvar=False))
        assert values[0] / values[-1] >= EPS


def test_lindep_keep_edge_cases():
    rng = np.random.default_rng(3)
    n = 200
    a, b = rng.standard_normal((2, n))
    y = rng.standard_normal(n)
    # k = 2: nearly collinear (ratio ~ 5e-6 < eps) -> the later one goes; well conditioned -> both
    near = a + 3e-3 * rng.standard_normal(n)
    np.testing.assert_array_equal(lindep_keep(np.column_stack([a, near]), y, EPS, MAXCOR), [True, False])
    np.testing.assert_array_equal(lindep_keep(np.column_stack([a, b]), y, EPS, MAXCOR), [True, True])
    # duplicated, constant and all-zero columns; a predictor too correlated with y
    x = np.column_stack([a, a, np.ones(n), np.zeros(n), b, y + 1e-3 * a])
    np.testing.assert_array_equal(lindep_keep(x, y, EPS, MAXCOR), [True, False, False, False, True, False])
    # (mice's rule drops one of the two copies too; which one is a rounding tie in its eigenvector)
    assert literal_remove_lindep(x, y).sum() == 2
    # constant target: nothing; all predictors constant: nothing; one predictor: kept (as mice)
    assert not lindep_keep(x, np.full(n, 2.0), EPS, MAXCOR).any()
    assert not lindep_keep(np.ones((n, 3)), y, EPS, MAXCOR).any()
    np.testing.assert_array_equal(lindep_keep(np.ones((n, 1)), y, EPS, MAXCOR), [True])
    assert not lindep_keep(x[:1], y[:1], EPS, MAXCOR).any()
    # every column a copy of the first: one survives
    np.testing.assert_array_equal(lindep_keep(np.column_stack([a] * 4), y, EPS, MAXCOR), [True, False, False, False])
    # cross-products that overflow: an error as from numpy's eigh, not a hang or a silent result
    with pytest.raises(np.linalg.LinAlgError):
        lindep_keep(np.column_stack([a * 1e200, b * 1e200, a]), y, EPS, MAXCOR)
    # a singular block of dummies (all levels plus their sum) among 60 columns
    factor = rng.integers(0, 5, n)
    dummies = np.column_stack([factor == level for level in range(5)]).astype(float)
    wide = np.column_stack([rng.standard_normal((n, 50)), dummies, dummies.sum(axis=1), dummies[:, :2] * 3.0])
    keep = lindep_keep(wide, y, EPS, MAXCOR)
    centred = wide - wide.mean(axis=0)
    assert np.linalg.matrix_rank(centred[:, keep]) == keep.sum() == np.linalg.matrix_rank(centred)


def test_lindep_fallback_round_by_full_eigh_matches_reference():
    """The full eigen-decomposition round (used should LAPACK's bisection or inverse iteration
    fail) picks the literal rule's column."""
    rng = np.random.default_rng(13)
    x, y = design_with_near_dependencies(rng)
    live = np.flatnonzero(literal_remove_lindep(x, y, eps=0.0))
    corr = np.corrcoef(x[:, live], rowvar=False)
    values, vectors = np.linalg.eigh(corr)
    assert values[0] / values[-1] < EPS
    positions = np.arange(live.size)
    assert lindep._lindep_drop_by_eigh(corr, positions, EPS) == np.argmax(np.abs(vectors[:, 0]))
    assert lindep._lindep_drop_by_eigh(corr, positions, values[0] / values[-1] / 2) == -1


def test_lindep_correlations_equal_numpy_corrcoef():
    """The correlation matrix built from sparse/dense cross-products equals np.corrcoef."""
    rng = np.random.default_rng(11)
    n = 500
    x = np.column_stack([rng.standard_normal((n, 4)), (rng.random((n, 6)) < [0.05, 0.2, 0.5, 0.7, 0.9, 0.4]),
                         rng.integers(0, 3, (n, 2)) * (rng.random((n, 2)) < 0.3)]).astype(float)
    idx = np.array([0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    means = x.mean(axis=0)
    ss = ((x - means) ** 2).sum(axis=0)
    corr = lindep._lindep_correlations(x, idx, means, ss, (x != 0).sum(axis=0))
    np.testing.assert_allclose(corr, np.corrcoef(x[:, idx], rowvar=False), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(corr, corr.T)


def test_lindep_ratio_decision_matches_eigenvalues():
    rng = np.random.default_rng(5)
    decided = 0
    for _ in range(200):
        m = int(rng.integers(2, 40))
        d = rng.uniform(0.0, 3.0, m)
        e = rng.standard_normal(m - 1) * 10.0 ** rng.uniform(-3, 0)
        t = np.diag(d) + np.diag(e, 1) + np.diag(e, -1)
        values = np.linalg.eigvalsh(t)
        eps = 10.0 ** rng.uniform(-5, -1)
        ratio = values[0] / values[-1]
        below, bound = lindep._lindep_ratio_below(d, e, eps)
        assert values[-1] <= bound <= values[-1] * (1 + 1e-3) + 1e-15
        if abs(ratio / eps - 1.0) > 1e-8:
            assert below == (ratio < eps)
            decided += 1
    assert decided > 190


# --------------------------------------------------------------------------------------------
# engine._lapack


def random_symmetric(rng, m, kind):
    if kind == "random":
        a = rng.standard_normal((m, m))
        return (a + a.T) / 2
    if kind == "correlation":  # near-singular: one near dependency
        x = rng.standard_normal((3 * m + 5, m))
        x[:, -1] = x[:, :-1].sum(axis=1) + 1e-4 * rng.standard_normal(x.shape[0])
        return np.atleast_2d(np.corrcoef(x, rowvar=False))
    # block diagonal with a repeated eigenvalue: T splits into blocks
    a = np.zeros((m, m))
    half = m // 2
    b = rng.standard_normal((half, half))
    a[:half, :half] = b + b.T
    a[half:, half:] = np.eye(m - half) * 2.0
    return a


@pytest.mark.parametrize("m", [1, 2, 3, 17, 150])
@pytest.mark.parametrize("kind", ["random", "correlation", "blocks"])
def test_lapack_extreme_eigenpairs_match_numpy_eigh(m, kind):
    rng = np.random.default_rng(m * 7 + len(kind))
    a = random_symmetric(rng, m, kind)
    values, vectors = np.linalg.eigh(a)
    scale = np.abs(values).max() + 1.0
    buf = a.copy().ravel()
    d, e, tau, info = lapack.tridiagonalize(buf, m)
    assert info == 0
    tri = np.diag(d) + np.diag(e[:m - 1], 1) + np.diag(e[:m - 1], -1)
    np.testing.assert_allclose(np.linalg.eigvalsh(tri), values, rtol=0, atol=1e-12 * scale)
    for index in sorted({1, 2, m} & set(range(1, m + 1))):
        value, iblock, isplit, info = lapack.tridiagonal_eigenvalue(d[:m], e[:max(m - 1, 1)], index)
        assert info == 0
        assert abs(value - values[index - 1]) <= 1e-12 * scale
        z, info = lapack.tridiagonal_eigenvector(d[:m], e[:max(m - 1, 1)], value, iblock, isplit)
        assert info == 0
        v, info = lapack.apply_q(buf, tau, z)
        assert info == 0
        assert abs(np.linalg.norm(v) - 1.0) < 1e-12
        np.testing.assert_allclose(a @ v, value * v, rtol=0, atol=1e-11 * scale)
        gap = np.min(np.abs(np.delete(values, index - 1) - values[index - 1])) if m > 1 else np.inf
        if gap > 1e-6 * scale:  # a simple eigenvalue: the vector is unique up to sign
            reference = vectors[:, index - 1]
            assert min(np.abs(v - reference).max(), np.abs(v + reference).max()) < 1e-9
    # Sturm counts, away from the eigenvalues
    for x in np.concatenate([values - 1e-6 * scale, values + 1e-6 * scale]):
        assert lapack.tridiagonal_count_below(d[:m], e[:max(m - 1, 1)], x) == np.sum(values < x)
    # positive-definiteness test by Cholesky, either side of lambda_min
    for shift, expect_pd in ((values[0] - 1e-6 * scale, True), (values[0] + 1e-6 * scale, False)):
        shifted = (a - shift * np.eye(m)).ravel()
        assert (lapack.cholesky_info(shifted, m) == 0) == expect_pd


def test_lapack_kernels_load_from_cache_in_a_fresh_process():
    """The LAPACK symbols are registered by name at import, so cached machine code loads in a new
    process without recompiling (no raw address is baked into it)."""
    script = (
        "import numpy as np\n"
        "from engine import _lapack as lapack\n"
        "a = np.array([[2.0, 1.0], [1.0, 3.0]])\n"
        "d, e, tau, info = lapack.tridiagonalize(a.copy().ravel(), 2)\n"
        "value = lapack.tridiagonal_eigenvalue(d, e, 1)[0]\n"
        "assert abs(value - (5 - np.sqrt(5)) / 2) < 1e-14\n"
        "s = lapack.tridiagonalize.stats\n"
        "print(sum(s.cache_hits.values()), sum(s.cache_misses.values()))\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=root,
                           timeout=120) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    hits, misses = runs[1].stdout.split()
    assert int(hits) > 0 and int(misses) == 0, runs[1].stdout
