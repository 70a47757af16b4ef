"""The HTML report: self-contained, every figure and table present, readable without matplotlib."""

import re

import numpy as np
import pytest

from engine.report import BayesTrace, ImputationTrace, PosteriorCheck, ReportContent, render_html, write_report


def _content():
    rng = np.random.default_rng(20261130)
    effects = [
        dict(model="OLS model1", method="OLS", estimate=0.339, std_error=0.050, lower=0.240, upper=0.438),
        dict(model="Pooled model1", method="MI", estimate=0.293, std_error=0.045, lower=0.204, upper=0.382),
    ]
    tables = [("OLS model1", "Coefficients:\n  x <- 1 & 2"), ("Pooled model1", "term estimate")]
    bayes = [BayesTrace("school model", rng.normal(size=(4, 50, 3)), ["b_Intercept", "b_x", "sigma"])]
    imputations = [ImputationTrace(
        "mice",
        chain_means={"x": rng.normal(size=(5, 5)), "y": rng.normal(size=(5, 5))},
        chain_vars={"x": rng.random((5, 5)), "y": rng.random((5, 5))},
        observed={"x": rng.normal(size=100), "y": rng.normal(size=100)},
        imputed={"x": [rng.normal(size=10) for _ in range(5)], "y": [rng.normal(size=10) for _ in range(5)]},
    )]
    checks = [
        PosteriorCheck("school model", rng.normal(size=60), rng.normal(size=(10, 60)), "elpd_loo  -80.1  5.2"),
        PosteriorCheck("binary model", rng.integers(0, 2, 60), rng.integers(0, 2, (10, 60)), "elpd_loo <-1>"),
    ]
    return ReportContent("Test report", "intro", effects, tables, bayes, imputations, checks)


def test_report_with_figures_has_every_figure_and_table(tmp_path):
    pytest.importorskip("matplotlib")
    path = write_report(_content(), tmp_path / "report")
    page = open(path, encoding="utf-8").read()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    alts = [alt for alt, _ in images]
    # forest plot, trace + rank per Bayesian fit, convergence + distributions per imputation
    assert alts == [
        "Forest plot: the grit effect in every model",
        "Trace plot: school model", "Rank plot: school model",
        "Posterior predictive check: school model", "Posterior predictive check: binary model",
        "Imputation convergence: mice", "Observed and imputed values: mice",
    ]
    assert all(len(data) > 1000 for _, data in images)
    assert 'id="treatment-effects"' in page
    assert page.count("<pre>") == 2
    assert "x &lt;- 1 &amp; 2" in page  # tables are escaped, not interpreted
    assert page.count('<pre class="loo"') == 2 and "elpd_loo &lt;-1&gt;" in page
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert 'id="no-figures"' not in page


def test_report_without_matplotlib_says_how_to_get_figures():
    page = render_html(_content(), with_figures=False)
    assert "<img" not in page
    assert 'id="no-figures"' in page and "engine[report]" in page
    assert page.count("<pre>") == 2
    assert "0.3390" in page and "0.2930" in page  # the effects table is still there
    assert page.count('<pre class="loo"') == 2  # and the LOO tables
