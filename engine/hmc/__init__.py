"""The pieces of Hamiltonian Monte Carlo that ``engine.nuts`` assembles into Stan's NUTS.

One concern per module, as BlackJAX lays them out:

- ``integrator``: the leapfrog step (Neal 2011, sec. 5.2.3);
- ``metric``: the diagonal or dense Euclidean metric, momentum draws, kinetic energy, Welford's
  running variance and Stan's regularised metric estimate;
- ``tree``: one multinomial NUTS transition with iterative tree building and Stan's extra U-turn
  checks across merged subtrees (Betancourt 2017, appendix A; stan-dev/stan#2800);
- ``adaptation``: dual averaging of the step size (Hoffman & Gelman 2014, sec. 3.2), Stan's windowed
  metric schedule and its initial step-size heuristic.

Every function is a plain Numba kernel over arrays; the samplers built on them are ``engine.nuts``
(any log density) and the multilevel model's NUTS targets.
"""
