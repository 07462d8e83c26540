"""jaxgauss's benchmarks against peers, run from a checkout: ``python -m benchmarks``.

* ``benchmarks.speed``: rows per second of ``jaxgauss.fit`` and of peers (NumPy loops,
  river, PyTorch, a Python loop of a jitted step, batch ``np.cov`` and ``X.T @ X``),
  side by side in one process on the same data; writes ``results/<backend>.json`` and
  ``.md``.
* ``benchmarks.efficiency``: statistical efficiency of each estimator against the
  number of rows and the condition number; writes ``results/efficiency.json``,
  ``.md`` and ``.png``.
* ``benchmarks.bench_sweep``: ``jaxgauss.sweep`` against a loop of ``fit`` calls.

The peers are optional (``pip install ".[bench]"``); a missing one is reported as
skipped. ``jaxgauss bench`` times jaxgauss's own cases from the installed package.
"""
