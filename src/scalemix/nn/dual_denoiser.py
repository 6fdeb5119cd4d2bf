r"""The 2D study's dual-scale denoiser, with both branches run as one batched MLP.

"Adaptive Dual-Scale Denoising" (eq. 1) with the structure of its published code: two
copies of :class:`~scalemix.nn.MLPDenoiser`, the global one on :math:`x` and the local
one on :math:`u(x)` (a learned affine map), sharing the coordinate embedding function
(the same sinusoidal features at scale 25, applied to :math:`x` and to :math:`u(x)`) and
one time embedding :math:`e(t)`, which also feeds the gate:

.. math::
    \hat\epsilon(x, t) = w_g(t)\, g\big(e(x), e(t)\big) + w_l(t)\, l\big(e(u(x)), e(t)\big),
    \qquad (w_g, w_l) = \operatorname{gate}(e(t)).

The two MLPs have the same architecture, so each hidden layer of both is one
:class:`~scalemix.nn.StackedLinear` (weights ``(2, in, out)``, one ``baddbmm``). Work
that depends only on :math:`t` (the time embedding, the gate, and the time part of
both branches' first layer, :math:`[W^g_t; W^l_t]\, e(t)`, as one matmul) is done
once when the batch shares one timestep (a 0-d ``t``, or an expanded one as the
samplers pass), once per distinct timestep for CPU tensors in eager mode, and per
item otherwise (a data-dependent :func:`torch.unique` would synchronise a GPU and
break a compiled graph). The
coordinate part of the first layer is split per branch so that no gradient is
computed for the global branch's (constant) input features. Without autograd, eager
CPU batches of more than ``scalemix.nn.mlp.NO_GRAD_BLOCK`` (256) rows (sampling, the
evaluation loss) run in blocks of that many rows through two reused buffers that stay
in the cache; each row sees the same operations, so the output is the same. The result
equals the unbatched model to float rounding: :meth:`DualScaleDenoiser.to_block` returns the
equivalent :class:`~scalemix.nn.DualScaleBlock` of two ``MLPDenoiser``.

Built with ``num_classes=K``, the model is class-conditional: both branches read
``emb = time_embed(t) + class_embed(y)``, :math:`e(t) + c(y)` in place of :math:`e(t)`,
with ``class_embed`` an ``nn.Embedding(K + 1, E)`` whose row ``K`` is the learned null
class. The gate keeps reading :math:`e(t)` alone: the mixing weights stay the paper's
function of the timestep (:meth:`DualScaleDenoiser.alpha` takes no label), and are
still computed once per distinct timestep. As the first layer is linear, its class part
:math:`[W^g_t; W^l_t]\, c(y)` is added per item to the time part.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, cast, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils import check_choice
from .._validation import check_input_dtype, class_labels_of, model_timesteps, timestep_batch
from ._conditioning import class_embedding, make_class_embedding
from ._config_json import Decoder
from ._dual_no_grad import forward_blocks, trunk_no_grad
from ._module_config import build_module, module_config
from ._pretrained import PretrainedMixin
from ._time_rows import distinct_timesteps, spread
from .batched import StackedLinear
from .dual_scale import DualScaleBlock
from .embedding import SinusoidalEmbedding
from .gate import TimestepGate
from .mlp import (
    MLP_CONFIG_FIELDS,
    MLPDenoiser,
    MLPResidualBlock,
    check_vector_inputs,
    check_widths,
    mlp_config,
    no_grad_block_rows,
)
from .rescale import LearnedAffineUpscale

__all__ = ["DualScaleDenoiser", "DualScalePreset"]

DualScalePreset = Literal["fixed", "learned", "adaptive", "adaptive_deep"]
_PRESET_GATES: dict[str, tuple[Literal["fixed", "learned", "mlp", "deep"], float]] = {
    "fixed": ("fixed", 0.5),
    "learned": ("learned", 0.5),
    "adaptive": ("mlp", 0.5),
    "adaptive_deep": ("deep", 0.5),
}


class DualScaleDenoiser(PretrainedMixin, nn.Module):
    r"""Global + local MLP noise predictors mixed by a timestep gate (module docstring).

    ``save_pretrained(folder)`` / ``DualScaleDenoiser.from_pretrained(folder_or_repo_id)``
    store it as ``config.json`` (the six sizes and scales, the gate and the upscale as
    nested objects, so a model built by :meth:`from_preset` comes back with its gate)
    and ``model.safetensors`` (:class:`~scalemix.nn.PretrainedMixin`; extra
    ``scalemix[hub]``). The upscale must then be a :class:`LearnedAffineUpscale` or a
    :class:`~scalemix.nn.ScaleUpscale`.

    Args:
        embedding_dim: size ``E`` of every sinusoidal embedding (128).
        hidden_dim: MLP width ``H`` (256).
        num_blocks: residual layers per branch (3).
        input_dim: data dimension ``d`` (2).
        time_scale: time embedding scale (1).
        coord_scale: coordinate embedding scale (25).
        gate: a two-branch :class:`TimestepGate` reading the ``E``-dimensional time
            embedding; default: the published ``"mlp"`` gate.
        upscale: a module mapping ``(b, d) -> (b, d)``; default
            :class:`LearnedAffineUpscale` ``(d)`` with PyTorch's initialisation.
        num_classes: ``K`` for a class-conditional model (``class_embed``, an
            ``nn.Embedding(K + 1, E)`` added to the branches' time embedding, row ``K``
            the null class; the gate reads the time embedding alone); ``None``:
            unconditional.

    Shape:
        - ``x``: ``(b, d)``; ``t``: ``(b,)`` (or 0-d); ``class_labels``: optional int64
          ``(b,)`` in ``[0, K]``.
        - output: ``(b, d)`` predicted noise.

    Raises:
        ValueError: invalid sizes, a gate with ``!= 2`` branches or another embedding
            size, an unknown preset, inputs of the wrong shape.
    """

    _config_fields: ClassVar[Mapping[str, Decoder]] = {
        **MLP_CONFIG_FIELDS,
        "gate": build_module,
        "upscale": build_module,
    }

    def __init__(
        self,
        embedding_dim: int = 128,
        hidden_dim: int = 256,
        num_blocks: int = 3,
        input_dim: int = 2,
        time_scale: float = 1.0,
        coord_scale: float = 25.0,
        *,
        gate: TimestepGate | None = None,
        upscale: nn.Module | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        check_widths(embedding_dim, hidden_dim, num_blocks, input_dim)
        if gate is None:
            gate = TimestepGate("mlp", embedding_dim=embedding_dim, time_scale=time_scale)
        if not isinstance(gate, TimestepGate):
            raise TypeError(f"gate must be a TimestepGate, got {type(gate).__name__}")
        if gate.num_branches != 2 or gate.embedding_dim != embedding_dim:
            raise ValueError(
                f"the gate must have 2 branches and embedding_dim={embedding_dim}; got "
                f"{gate.num_branches} branches and embedding_dim={gate.embedding_dim}"
            )
        self.input_dim = input_dim
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.time_embedding = SinusoidalEmbedding(embedding_dim, time_scale)
        self.coord_embedding = SinusoidalEmbedding(embedding_dim, coord_scale)
        self.upscale = upscale if upscale is not None else LearnedAffineUpscale(input_dim)
        self.gate = gate
        # first layer of both branches, split into its coordinate and time parts
        n_in = (input_dim + 1) * embedding_dim
        self.coord_layer = StackedLinear(2, input_dim * embedding_dim, hidden_dim, bias=False)
        self.time_layer = nn.Linear(embedding_dim, 2 * hidden_dim)
        bound = n_in**-0.5  # nn.Linear(n_in, hidden_dim)'s initialisation, as published
        for param in (self.coord_layer.weight, self.time_layer.weight, self.time_layer.bias):
            nn.init.uniform_(param, -bound, bound)
        self.blocks = nn.ModuleList(
            StackedLinear(2, hidden_dim, hidden_dim) for _ in range(num_blocks)
        )
        self.output_layer = StackedLinear(2, hidden_dim, input_dim, layout="out_in")
        # last, so that the other layers draw the initialisation of the unconditional net
        self.class_embed = make_class_embedding(num_classes, embedding_dim)
        self.num_classes = None if self.class_embed is None else self.class_embed.num_embeddings - 1

    def _constructor_config(self) -> dict[str, Any]:
        return {
            **mlp_config(self),
            "gate": module_config(self.gate, "gate"),
            "upscale": module_config(self.upscale, "upscale"),
        }

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_preset(cls, name: DualScalePreset, **kwargs: Any) -> DualScaleDenoiser:
        """Build one of the study's variants; ``kwargs`` go to the constructor.

        * ``"fixed"``: :math:`\\alpha = 0.5` for every ``t``;
        * ``"learned"``: one learned :math:`\\alpha` (initialised at 0.5);
        * ``"adaptive"``: the published gate ``Linear(E,256)-ReLU-Linear(256,2)-softmax``;
        * ``"adaptive_deep"``: the deeper LeakyReLU gate.
        """
        check_choice("preset", name, get_args(DualScalePreset))
        mode, value = _PRESET_GATES[name]
        embedding_dim = int(kwargs.get("embedding_dim", 128))
        time_scale = float(kwargs.get("time_scale", 1.0))
        gate = TimestepGate(mode, value=value, embedding_dim=embedding_dim, time_scale=time_scale)
        return cls(gate=gate, **kwargs)

    @classmethod
    def from_branches(
        cls,
        global_branch: MLPDenoiser,
        local_branch: MLPDenoiser,
        gate: TimestepGate,
        upscale: nn.Module,
    ) -> DualScaleDenoiser:
        """Stack two :class:`MLPDenoiser` of equal configuration into one batched model.

        Weights are copied; ``gate`` and ``upscale`` are used as given (not copied).
        Class-conditional branches must have equal ``class_embed`` weights, which the
        model shares.
        """
        g, loc = global_branch, local_branch
        if g.num_classes != loc.num_classes or (
            g.class_embed is not None
            and loc.class_embed is not None
            and not torch.equal(g.class_embed.weight, loc.class_embed.weight)
        ):
            raise ValueError(
                "the two branches must have the same num_classes and equal class_embed "
                "weights (the model has one class embedding)"
            )
        sizes = (g.embedding_dim, g.hidden_dim, len(g.blocks), g.input_dim)
        scales = (g.time_embedding.scale, g.coord_embedding.scale)
        if sizes != (loc.embedding_dim, loc.hidden_dim, len(loc.blocks), loc.input_dim) or (
            scales != (loc.time_embedding.scale, loc.coord_embedding.scale)
        ):
            raise ValueError("the two branches must have the same sizes and embedding scales")
        model = cls(*sizes, *scales, gate=gate, upscale=upscale, num_classes=g.num_classes)
        model.to(device=g.input_layer.weight.device, dtype=g.input_layer.weight.dtype)
        if model.class_embed is not None and g.class_embed is not None:
            with torch.no_grad():
                model.class_embed.weight.copy_(g.class_embed.weight)
        n_coord, hid = model.input_dim * model.embedding_dim, model.hidden_dim
        for index, branch in enumerate((g, loc)):
            with torch.no_grad():
                rows = slice(index * hid, (index + 1) * hid)
                coord = model.coord_layer.matrices()[index]
                coord.copy_(branch.input_layer.weight[:, :n_coord].t())
                model.time_layer.weight[rows].copy_(branch.input_layer.weight[:, n_coord:])
                model.time_layer.bias[rows].copy_(branch.input_layer.bias)
            for stacked, block in zip(model.blocks, branch.blocks, strict=True):
                cast(StackedLinear, stacked).load_linear(
                    index, cast(MLPResidualBlock, block).linear
                )
            model.output_layer.load_linear(index, branch.output_layer)
        return model

    def branch(self, index: Literal[0, 1]) -> MLPDenoiser:
        """Return branch ``index`` (0 global, 1 local) as a standalone ``MLPDenoiser`` copy."""
        check_choice("branch index", index, (0, 1))
        out = MLPDenoiser(
            self.embedding_dim,
            self.hidden_dim,
            len(self.blocks),
            self.input_dim,
            self.time_embedding.scale,
            self.coord_embedding.scale,
            num_classes=self.num_classes,
        ).to(device=self.time_layer.weight.device, dtype=self.time_layer.weight.dtype)
        rows = slice(index * self.hidden_dim, (index + 1) * self.hidden_dim)
        with torch.no_grad():
            coord_weight = self.coord_layer.matrices()[index].t()
            out.input_layer.weight.copy_(torch.cat((coord_weight, self.time_layer.weight[rows]), 1))
            out.input_layer.bias.copy_(self.time_layer.bias[rows])
            if out.class_embed is not None and self.class_embed is not None:
                out.class_embed.weight.copy_(self.class_embed.weight)
        for block, stacked in zip(out.blocks, self.blocks, strict=True):
            cast(MLPResidualBlock, block).linear = cast(StackedLinear, stacked).to_linear(index)
        out.output_layer = self.output_layer.to_linear(index)
        return out

    def to_block(self) -> DualScaleBlock:
        """The equivalent unbatched :class:`DualScaleBlock` (copies of every module).

        Raises:
            ValueError: a class-conditional model (a ``DualScaleBlock`` passes no labels;
                :meth:`branch` gives each conditional branch).
        """
        if self.num_classes is not None:
            raise ValueError(
                "a class-conditional DualScaleDenoiser has no DualScaleBlock equivalent "
                "(DualScaleBlock passes no class_labels); use branch(0) and branch(1)"
            )
        return DualScaleBlock(
            self.branch(0), self.branch(1), copy.deepcopy(self.gate), copy.deepcopy(self.upscale)
        )

    # ------------------------------------------------------------------- forward
    def gate_weights(self, t: Tensor | int) -> Tensor:
        """``(b, 2)`` weights ``(w_global, w_local)`` at timesteps ``t`` of shape ``(b,)``
        (a number or a 0-d tensor: ``b = 1``)."""
        t = model_timesteps(t, timestep_batch(t), self.time_layer.weight.device)
        weights: Tensor = self.gate(t, self.time_embedding(t))
        return weights

    def alpha(self, t: Tensor | int) -> Tensor:
        r"""The global weight :math:`\alpha(t)`, shape ``(b,)``."""
        return self.gate_weights(t)[:, 0]

    def forward_branches(
        self, x: Tensor, t: Tensor, *, class_labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run both branches: returns ``(outputs (2, b, d), weights (b, 2))``.

        ``outputs[0]`` is the global prediction, ``outputs[1]`` the local one;
        ``class_labels`` as in :meth:`forward` (they change the outputs, not the weights).
        """
        t = check_vector_inputs(x, t, self.input_dim)
        check_input_dtype("x", x, self.time_layer.weight)
        up = self.upscale(x)
        if up.shape != x.shape:
            raise ValueError(f"upscale must return shape {tuple(x.shape)}, got {tuple(up.shape)}")
        # everything that depends on t alone, once per distinct timestep
        rows, inverse = distinct_timesteps(t)
        t_emb = self.time_embedding(rows)  # (u, E)
        weights = spread(self.gate(rows, t_emb), inverse, x.shape[0])  # (b, 2)
        h_time = self.time_layer(t_emb)  # (u, 2H): [g | l]
        labels = class_labels_of(
            class_labels, x.shape[0], self.num_classes, x.device, owner="DualScaleDenoiser"
        )
        if labels is not None:  # + [W_g; W_l] c(y), per item: (b, 2H)
            h_time = spread(h_time, inverse, x.shape[0]) + self._class_part(labels)
            inverse = None
        block_rows = no_grad_block_rows(x)
        if block_rows is not None:
            return forward_blocks(self, x, up, h_time, inverse, block_rows), weights
        h_time = spread(h_time, inverse, x.shape[0])  # (b, 2H): [g | l]
        # unbind (not slicing) so that the backward pass stacks the two gradients
        # instead of scattering each into a zero-filled buffer
        t_global, t_local = h_time.view(-1, 2, self.hidden_dim).unbind(1)
        coords_global = self.coord_embedding(x).flatten(1)  # (b, d E)
        coords_local = self.coord_embedding(up).flatten(1)
        tracing: bool = torch.jit.is_tracing()  # type: ignore[attr-defined, no-untyped-call]
        # (torch.jit.trace checks a trace by re-running it without autograd: one path)
        if torch.is_grad_enabled() or tracing:
            w_global, w_local = self.coord_layer.matrices().unbind(0)
            h = torch.stack(
                (
                    torch.addmm(t_global, coords_global, w_global),
                    torch.addmm(t_local, coords_local, w_local),
                )
            )  # (2, b, H)
            for block in self.blocks:
                h = block(torch.relu(h)).add_(h)
            features = torch.relu(h)
        else:
            h = coords_global.new_empty((2, x.shape[0], self.hidden_dim))
            features = trunk_no_grad(self, t_global, t_local, coords_global, coords_local, h)
        out: Tensor = self.output_layer(features)
        return out, weights

    def _class_part(self, labels: Tensor) -> Tensor:
        r"""The class part ``(b, 2H)`` of the first layer, :math:`[W^g_t; W^l_t]\, c(y)`
        (once for a batch sharing its label, e.g. the null class of ``labels=None``)."""
        if self.class_embed is None:  # pragma: no cover - labels imply a class embedding
            raise RuntimeError("an unconditional model has no class part")
        shared = labels.shape[0] > 0 and labels.stride(0) == 0
        rows = class_embedding(self.class_embed, labels[:1] if shared else labels)
        part = F.linear(rows.to(self.time_layer.weight.dtype), self.time_layer.weight)
        return part.expand(labels.shape[0], -1)

    def forward(self, x: Tensor, t: Tensor, *, class_labels: Tensor | None = None) -> Tensor:
        r"""Predict :math:`\hat\epsilon = w_g g + w_l l`: ``(b, d), (b,) -> (b, d)``.

        ``class_labels`` (int64, shape ``(b,)``, in ``[0, K]``; ``None``: the null class
        ``K`` for every item) condition a model built with ``num_classes=K``: the
        branches read ``emb = time_embed(t) + class_embed(y)``, the gate ``e(t)`` alone.

        Raises:
            ValueError: inputs of the wrong shape, labels outside ``[0, K]``, or labels
                for a model built without ``num_classes``.
            TypeError: ``x`` not floating point, or labels that are no integer tensor.
        """
        out, weights = self.forward_branches(x, t, class_labels=class_labels)
        mixed: Tensor = weights[:, 0:1] * out[0] + weights[:, 1:2] * out[1]
        return mixed
