"""The engine's building blocks, for a loop of your own.

``jaxgauss.fit`` and ``jaxgauss.sweep`` are built from these: the carry of a guarded
scan (estimator state, the first rejected row, the last valid estimate), its
initialiser, the compiled scan over whole batches, and the block length the engine
picks for a blocked update. Use them inside your own ``jit``/``vmap`` where ``fit``'s
host-side stream is not wanted.

Example:
  >>> import jax, jax.numpy as jnp
  >>> import jaxgauss as jg
  >>> from jaxgauss.engine import init_carry, scan_batches
  >>> est = jg.welford()
  >>> carry = init_carry(est.init(jg.Gaussian(jnp.zeros(2), jnp.eye(2))))
  >>> x = jax.random.normal(jax.random.key(0), (100, 2))
  >>> carry, _ = jax.jit(scan_batches, static_argnums=0)(est, carry, x.reshape(10, 10, 2))
  >>> int(carry.diverged_at), est.estimate(carry.state).mean.shape
  (-1, (2,))
"""

from jaxgauss._engine import FitCarry, default_block_rows, init_carry, scan_batches

__all__ = ["FitCarry", "default_block_rows", "init_carry", "scan_batches"]
