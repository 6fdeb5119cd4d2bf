"""A conformance kit for denoisers, degradations and schedulers (``scalemix[testing]``).

Property checks built on hypothesis: each ``check_*`` function draws inputs, tests the
invariants a component must satisfy to plug into scalemix's samplers and losses, and
raises an :class:`AssertionError` naming the property, the (shrunk) input that broke it
and the size of the violation. The strategies are public so that users can write their
own property tests with the same inputs.

Importing this package needs hypothesis (``pip install 'scalemix[testing]'``);
``import scalemix`` alone never imports it. The checks run their own hypothesis loop
and write no example database; to call one inside a ``@given`` test, suppress
``HealthCheck.nested_given`` on that test.
"""

from __future__ import annotations

try:
    import hypothesis as _hypothesis  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "scalemix.testing needs hypothesis; install the extra with "
        "`pip install 'scalemix[testing]'`"
    ) from err

from .conditional import check_conditional_denoiser as check_conditional_denoiser
from .degradation import check_linear_degradation as check_linear_degradation
from .denoiser import TimestepForm as TimestepForm
from .denoiser import check_denoiser as check_denoiser
from .scheduler import check_scheduler as check_scheduler
from .strategies import batches as batches
from .strategies import class_labels as class_labels
from .strategies import scale_space_degradations as scale_space_degradations
from .strategies import scheduler_configs as scheduler_configs
from .strategies import schedulers as schedulers
from .strategies import step_pairs as step_pairs
from .strategies import timesteps as timesteps

__all__ = [
    "TimestepForm",
    "batches",
    "check_conditional_denoiser",
    "check_denoiser",
    "check_linear_degradation",
    "check_scheduler",
    "class_labels",
    "scale_space_degradations",
    "scheduler_configs",
    "schedulers",
    "step_pairs",
    "timesteps",
]
