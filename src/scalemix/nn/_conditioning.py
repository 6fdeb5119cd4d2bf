r"""Class conditioning of the networks: a learned embedding added to the timestep's.

A network built with ``num_classes=K`` owns ``class_embed = nn.Embedding(K + 1, D)``
(``D`` the width of its timestep embedding) and conditions on

.. math::
    \mathrm{emb} = \mathrm{time\_embed}(t) + \mathrm{class\_embed}(y),

as guided-diffusion does. Row ``K`` is the learned null class: the unconditional
prediction of classifier-free guidance is the prediction with ``y = K``, and a call
without labels uses it for every item. The rows are initialised from
:math:`\mathcal{N}(0, 1)` (PyTorch's default), so the label changes the output from
the first step.
"""

from __future__ import annotations

from torch import Tensor, nn

from .._utils import range_checked
from .._validation import check_num_classes, class_labels_valid

__all__ = ["class_embedding", "make_class_embedding"]


def make_class_embedding(num_classes: int | None, dim: int) -> nn.Embedding | None:
    """``nn.Embedding(num_classes + 1, dim)`` (row ``num_classes`` the null class), or
    ``None`` for an unconditional network.

    Raises:
        TypeError: ``num_classes`` is neither ``None`` nor an int.
        ValueError: ``num_classes`` below 1.
    """
    k = check_num_classes(num_classes)
    return None if k is None else nn.Embedding(k + 1, dim)


def class_embedding(embed: nn.Embedding, labels: Tensor) -> Tensor:
    """The rows ``embed.weight[labels]``, shape ``(b, dim)``.

    ``labels`` come from :func:`scalemix._validation.class_labels_of`. Where their
    range was not checked (an accelerator, :func:`torch.compile`), an out-of-range label
    gives a row of NaN instead of an out-of-bounds read, without host synchronisation.
    """
    if range_checked(labels):
        rows: Tensor = embed(labels)
        return rows
    num_classes = embed.num_embeddings - 1
    rows = embed(labels.clamp(0, num_classes))
    return rows.masked_fill(~class_labels_valid(labels, num_classes).unsqueeze(-1), float("nan"))
