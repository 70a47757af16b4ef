"""The univariate imputation methods that ``engine.mice`` chains, one module per method family, as
R's mice keeps one file per ``mice.impute.*``:

- ``linear``: ``norm`` (Bayesian linear regression draw) and ``pmm`` (predictive mean matching);
- ``logistic``: ``logreg`` and ``polyreg`` (logistic / multinomial logit with mice's augmentation);
- ``polr``: the proportional-odds model for ordered factors;
- ``lda``: MASS's linear discriminant analysis with debiased posteriors;
- ``cart``: classification and regression trees (rpart's rules);
- ``lindep``: ``remove.lindep``, the choice of predictors each model keeps.

Each module holds Numba kernels over arrays (the design of the observed rows, the targets, and the
random numbers drawn beforehand by the caller) and no pandas; ``engine.mice`` does the bookkeeping.
"""
