"""The multilevel model layer: sufficient statistics against brute force, nesting detection, names."""

import numpy as np
import pytest

from engine.errors import ModelSpecError, PriorError
from engine.multilevel import (
    SimpleFrame,
    SimpleGroup,
    build_model,
    nested_frame,
    parameter_names,
    ranef_names,
)
from engine.priors import prior


def _three_level_frame(seed=0, n=400):
    """Districts > schools > classes (codes unique within parent), two covariates."""
    rng = np.random.default_rng(seed)
    district = rng.integers(0, 3, n)
    school = district * 4 + rng.integers(0, 4, n)  # 12 schools, each in one district
    klass = school * 3 + rng.integers(0, 3, n)  # 36 classes, each in one school
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    y = X @ [1.0, 0.5, -0.3] + rng.normal(size=n)

    def group(name, codes):
        levels, inverse = np.unique(codes, return_inverse=True)
        return SimpleGroup(name, inverse.astype(np.int64), [str(v) for v in levels], len(levels))

    groups = [group("d", district), group("d:s", school), group("d:s:c", klass)]
    return SimpleFrame(y, X, ["(Intercept)", "x", "z1"], True, groups), district, school, klass


def test_sufficient_statistics_match_brute_force():
    frame, *_ = _three_level_frame()
    model = build_model(frame)
    Xc = frame.X[:, 1:] - frame.X[:, 1:].mean(axis=0)
    np.testing.assert_allclose(model.X_c, Xc, atol=1e-14)
    np.testing.assert_allclose(model.x_means, frame.X[:, 1:].mean(axis=0))
    for k in range(model.n_cells):
        rows = model.cell_of_row == k
        assert rows.any()
        # a cell is one combination of all groups' levels
        for g in range(model.n_groups):
            assert np.all(model.group_codes[rows, g] + model.level_offsets[g] == model.cell_levels[k, g])
        y, x = frame.y[rows], Xc[rows]
        assert model.cell_n[k] == rows.sum()
        np.testing.assert_allclose(model.cell_sum_y[k], y.sum(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(model.cell_sum_yy[k], (y**2).sum(), rtol=1e-12)
        np.testing.assert_allclose(model.cell_sum_x[k], x.sum(axis=0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(model.cell_sum_xy[k], x.T @ y, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(model.cell_sum_xx[k], x.T @ x, rtol=1e-12, atol=1e-12)
    # cells are distinct combinations
    assert len({tuple(row) for row in model.cell_levels}) == model.n_cells
    np.testing.assert_allclose(model.xtx, Xc.T @ Xc, rtol=1e-12)
    np.testing.assert_allclose(model.xty, Xc.T @ frame.y, rtol=1e-12)
    np.testing.assert_allclose(model.yty, frame.y @ frame.y, rtol=1e-12)
    np.testing.assert_allclose(model.sum_x, 0.0, atol=1e-10)
    for g in range(model.n_groups):
        for level in range(model.n_levels[g]):
            rows = model.group_codes[:, g] == level
            v = model.level_offsets[g] + level
            assert model.level_n[v] == rows.sum()
            np.testing.assert_allclose(model.level_sum_y[v], frame.y[rows].sum(), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(model.level_sum_x[v], Xc[rows].sum(axis=0), rtol=1e-12, atol=1e-12)


def test_nesting_detection_parents_and_ancestors():
    frame, district, school, klass = _three_level_frame()
    model = build_model(frame)
    assert model.nested.tolist() == [False, True, True]
    assert model.n_blocks == 1 and model.block_of_group.tolist() == [0, 0, 0]
    assert model.ancestors.shape == (model.n_levels_total, 2)
    off = model.level_offsets
    for i in range(len(frame.y)):
        d, s, c = (model.group_codes[i, g] + off[g] for g in range(3))
        assert model.parent[c] == s and model.parent[s] == d and model.parent[d] == -1
        assert model.ancestors[c].tolist() == [d, s]
        assert model.ancestors[s, 0] == d and model.ancestors[s, 1] == -1
    assert model.depth.tolist() == [0] * 3 + [1] * 12 + [2] * 36
    # the deepest level determines the cell
    assert model.n_cells == model.n_levels[2]


def test_crossed_factors_form_separate_blocks():
    rng = np.random.default_rng(3)
    n = 300
    a, b = rng.integers(0, 5, n), rng.integers(0, 7, n)
    groups = [SimpleGroup("a", a, [str(i) for i in range(5)], 5), SimpleGroup("b", b, [str(i) for i in range(7)], 7)]
    model = build_model(SimpleFrame(rng.normal(size=n), np.ones((n, 1)), ["(Intercept)"], True, groups))
    assert model.nested.tolist() == [False, False]
    assert model.block_of_group.tolist() == [0, 1] and model.n_blocks == 2
    assert np.all(model.parent == -1) and np.all(model.depth == 0)
    assert model.n_cells == len({(i, j) for i, j in zip(a, b)})
    assert model.n_coef == 0 and model.X_c.shape == (n, 0)
    assert parameter_names(model) == ["b_Intercept", "sd_a__Intercept", "sd_b__Intercept", "sigma"]


def test_brms_names_for_school_and_class():
    rng = np.random.default_rng(1)
    school = np.repeat([0, 1, 2], 10)
    klass = np.tile([0, 1], 15)
    X = np.column_stack([np.ones(30), rng.normal(size=30)])
    model = build_model(nested_frame(rng.normal(size=30), X, ["(Intercept)", "raven"], school, klass))
    assert parameter_names(model) == [
        "b_Intercept", "b_raven", "sd_schoolid__Intercept", "sd_schoolid:classid__Intercept", "sigma"]
    names = ranef_names(model)
    assert names[:3] == ["r_schoolid[1,Intercept]", "r_schoolid[2,Intercept]", "r_schoolid[3,Intercept]"]
    assert names[3:5] == ["r_schoolid:classid[1_1,Intercept]", "r_schoolid:classid[1_2,Intercept]"]
    assert len(names) == model.n_levels_total == 9
    assert model.n_params == 5


def test_no_intercept_is_not_centred_and_has_no_intercept_prior():
    rng = np.random.default_rng(2)
    n = 40
    X = np.column_stack([rng.integers(0, 2, n), rng.normal(size=n) + 3.0])
    X = np.column_stack([X[:, 0], 1 - X[:, 0], X[:, 1]])
    frame = SimpleFrame(rng.normal(size=n), X, ["male0", "male1", "raven"], False,
                        [SimpleGroup("g", np.arange(n) % 4, ["1", "2", "3", "4"], 4)])
    model = build_model(frame)
    np.testing.assert_array_equal(model.X_c, X)
    np.testing.assert_array_equal(model.x_means, 0.0)
    assert parameter_names(model)[:3] == ["b_male0", "b_male1", "b_raven"]
    assert model.intercept_prior[0] == 0 and model.priors.intercept is None
    with pytest.raises(PriorError, match="no intercept"):
        build_model(frame, [prior("normal(0, 1)", class_="Intercept")])


def test_prior_encodings():
    frame, *_ = _three_level_frame()
    model = build_model(frame, [
        prior("normal(0, 10)", class_="b"),
        prior("student_t(4, 1, 2)", class_="b", coef="z1"),
        prior("normal(0, 5)", class_="Intercept"),
        prior("cauchy(0, 10)", class_="sd"),
        prior("normal(0, 1)", class_="sd", group="d:s"),
        prior("exponential(2)", class_="sigma"),
    ])
    assert model.b_prior_family.tolist() == [1, 2]
    np.testing.assert_array_equal(model.b_prior_nu, [np.inf, 4.0])
    np.testing.assert_array_equal(model.b_prior_mu, [0.0, 1.0])
    np.testing.assert_array_equal(model.b_prior_scale, [10.0, 2.0])
    np.testing.assert_array_equal(model.intercept_prior, [1, np.inf, 0.0, 5.0])
    assert model.sd_prior_family.tolist() == [2, 1, 2]
    np.testing.assert_array_equal(model.sd_prior_nu, [1.0, np.inf, 1.0])
    np.testing.assert_array_equal(model.sd_prior_scale, [10.0, 1.0, 10.0])
    np.testing.assert_array_equal(model.sigma_prior, [3, 0.0, 0.0, 0.5])


def test_bad_models_raise_clear_errors():
    n = 20
    y, X = np.arange(n, dtype=float), np.ones((n, 1))
    one_level = SimpleGroup("schoolid", np.zeros(n, dtype=np.int64), ["1"], 1)
    with pytest.raises(ModelSpecError, match="'schoolid' has 1 level"):
        build_model(SimpleFrame(y, X, ["(Intercept)"], True, [one_level]))
    aliased = np.column_stack([np.ones(n), np.arange(n), 2.0 * np.arange(n)])
    with pytest.raises(ModelSpecError, match="rank deficient"):
        build_model(SimpleFrame(y, aliased, ["(Intercept)", "a", "b"], True, []))
    unused = SimpleGroup("g", np.zeros(n, dtype=np.int64) + (np.arange(n) % 2), ["1", "2", "3"], 3)
    with pytest.raises(ModelSpecError, match="levels without observations"):
        build_model(SimpleFrame(y, X, ["(Intercept)"], True, [unused]))
    with pytest.raises(PriorError, match="no grouping factor 'classid'"):
        build_model(SimpleFrame(y, X, ["(Intercept)"], True, [SimpleGroup("g", np.arange(n) % 2, ["1", "2"], 2)]),
                    [prior("normal(0, 1)", class_="sd", group="classid")])


def test_model_frame_from_formula_layer_builds():
    formula = pytest.importorskip("engine.formula")
    from engine.datasets import load_grit

    mf = formula.model_frame(
        "mathscore2 ~ 1 + male + raven + csize + belief_survey1 + mathscore1 + grit + (1 | schoolid/classid)",
        load_grit(), allow_random=True)
    model = build_model(mf)
    assert model.n_obs == 1180
    assert model.group_names == ("schoolid", "schoolid:classid")
    assert model.nested.tolist() == [False, True] and model.n_cells == model.n_levels[1]
    assert parameter_names(model)[-3:] == ["sd_schoolid__Intercept", "sd_schoolid:classid__Intercept", "sigma"]
    np.testing.assert_allclose(model.intercept_prior, [2, 3.0, -0.1, 2.5])
