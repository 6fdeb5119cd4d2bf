"""The value-check switch: NaN/inf and timestep-range checks on the hot paths.

A check of the values of a tensor (``torch.isfinite(x).all()``, ``t.min() >= 0``)
needs the result on the host: on a GPU it waits for every queued kernel (a host
synchronisation), and under :func:`torch.compile` it splits the graph. scalemix
therefore checks values only

* always, at the entry points that run a whole loop or a whole estimate
  (:func:`~scalemix.sample`, :func:`~scalemix.scale_space_sample`,
  :func:`~scalemix.training.train`, the estimators of :mod:`scalemix.metrics`);
* on CPU tensors in eager mode, for timestep ranges (there the check costs no
  synchronisation);
* everywhere, inside :func:`check_values`: the scheduler's and the degradations'
  methods, the losses built on them and the forwards of
  :class:`~scalemix.nn.MLPDenoiser`, :class:`~scalemix.nn.DualScaleDenoiser` and
  :class:`~scalemix.nn.FlexiUNet` then also check their tensor inputs for NaN/inf
  (and the scheduler its tensor timesteps' range), at the cost of one
  synchronisation per check.

Outside the switch, a timestep tensor on an accelerator that lies out of range gives
NaN coefficients (never an out-of-bounds read or a device-side assert) and the NaN
reaches the next entry-point check. The full policy is in the docs page
"Numerics and validation".

Example::

    with scalemix.debug.check_values():
        loss = loss_fn(model, scheduler, x0)   # raises ValueError at the first NaN
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["check_values", "values_checked"]

_depth = 0


@contextmanager
def check_values(enabled: bool = True) -> Iterator[None]:
    """Check every tensor input for NaN/inf and every tensor timestep for its range.

    A process-wide debugging switch (not thread-local); contexts nest, and
    ``check_values(False)`` is a no-op so that a caller can write
    ``with check_values(debug):``. The checks only raise errors: a call that passes
    them returns exactly what it returns outside the switch.

    Args:
        enabled: turn the checks on for the body of the ``with`` block.
    """
    global _depth
    if not enabled:
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def values_checked() -> bool:
    """Whether the code runs inside :func:`check_values` (checks on)."""
    return _depth > 0
