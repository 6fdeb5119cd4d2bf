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
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, cast, get_args

import torch
from torch import Tensor, nn

from .._utils import check_choice
from .._validation import check_input_dtype, model_timesteps, timestep_batch
from ._config_json import Decoder
from ._module_config import build_module, module_config
from ._pretrained import PretrainedMixin
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


def _is_vmapped(t: Tensor) -> bool:
    """Whether ``t`` is a batched tensor of :func:`torch.vmap` (e.g. in ``train_ensemble``)."""
    return bool(torch._C._functorch.is_batchedtensor(t))


def _distinct_timesteps(t: Tensor) -> tuple[Tensor, Tensor | None]:
    """The rows of ``t`` to compute time-only work for, and how to spread them back.

    * a broadcast timestep (stride 0, e.g. from a 0-d ``t`` or a sampler): one row;
    * a CPU tensor in eager mode: the distinct values and the inverse index
      (:func:`torch.unique` needs no device synchronisation there);
    * otherwise (an accelerator, under :func:`torch.compile` or :func:`torch.vmap`,
      where the data-dependent size of ``unique`` would synchronise, break the graph or
      fail): every row.
    """
    if _is_vmapped(t):
        return t, None
    if t.shape[0] > 0 and t.stride(0) == 0:
        return t[:1], None
    if t.device.type == "cpu" and not torch.compiler.is_compiling():
        rows, inverse = torch.unique(t, return_inverse=True)
        return rows, inverse
    return t, None


def _spread(values: Tensor, inverse: Tensor | None, batch: int) -> Tensor:
    """Rows of ``values`` (one per entry of ``_distinct_timesteps``) for the whole batch."""
    if inverse is not None:
        # index_select, whose backward (index_add) is much faster than indexing's
        return values.index_select(0, inverse)
    return values.expand(batch, -1)


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

    Shape:
        - ``x``: ``(b, d)``; ``t``: ``(b,)`` (or 0-d).
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
        """
        g, loc = global_branch, local_branch
        sizes = (g.embedding_dim, g.hidden_dim, len(g.blocks), g.input_dim)
        scales = (g.time_embedding.scale, g.coord_embedding.scale)
        if sizes != (loc.embedding_dim, loc.hidden_dim, len(loc.blocks), loc.input_dim) or (
            scales != (loc.time_embedding.scale, loc.coord_embedding.scale)
        ):
            raise ValueError("the two branches must have the same sizes and embedding scales")
        model = cls(*sizes, *scales, gate=gate, upscale=upscale)
        model.to(device=g.input_layer.weight.device, dtype=g.input_layer.weight.dtype)
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
        ).to(device=self.time_layer.weight.device, dtype=self.time_layer.weight.dtype)
        rows = slice(index * self.hidden_dim, (index + 1) * self.hidden_dim)
        with torch.no_grad():
            coord_weight = self.coord_layer.matrices()[index].t()
            out.input_layer.weight.copy_(torch.cat((coord_weight, self.time_layer.weight[rows]), 1))
            out.input_layer.bias.copy_(self.time_layer.bias[rows])
        for block, stacked in zip(out.blocks, self.blocks, strict=True):
            cast(MLPResidualBlock, block).linear = cast(StackedLinear, stacked).to_linear(index)
        out.output_layer = self.output_layer.to_linear(index)
        return out

    def to_block(self) -> DualScaleBlock:
        """The equivalent unbatched :class:`DualScaleBlock` (copies of every module)."""
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

    def forward_branches(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Run both branches: returns ``(outputs (2, b, d), weights (b, 2))``.

        ``outputs[0]`` is the global prediction, ``outputs[1]`` the local one.
        """
        t = check_vector_inputs(x, t, self.input_dim)
        check_input_dtype("x", x, self.time_layer.weight)
        up = self.upscale(x)
        if up.shape != x.shape:
            raise ValueError(f"upscale must return shape {tuple(x.shape)}, got {tuple(up.shape)}")
        # everything that depends on t alone, once per distinct timestep
        rows, inverse = _distinct_timesteps(t)
        t_emb = self.time_embedding(rows)  # (u, E)
        weights = _spread(self.gate(rows, t_emb), inverse, x.shape[0])  # (b, 2)
        h_time = self.time_layer(t_emb)  # (u, 2H): [g | l]
        block_rows = no_grad_block_rows(x)
        if block_rows is not None:
            return self._forward_blocks(x, up, h_time, inverse, block_rows), weights
        h_time = _spread(h_time, inverse, x.shape[0])  # (b, 2H): [g | l]
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
            features = self._trunk_no_grad(t_global, t_local, coords_global, coords_local, h)
        out: Tensor = self.output_layer(features)
        return out, weights

    def _forward_blocks(
        self, x: Tensor, up: Tensor, h_time: Tensor, inverse: Tensor | None, rows: int
    ) -> Tensor:
        """The no-grad outputs ``(2, b, d)``, computed in blocks of ``rows`` rows.

        ``h_time`` holds the ``(u, 2H)`` time part of the first layer of the ``u``
        distinct timesteps, spread to each block's rows. Every row sees the operations
        of the unblocked path in the same order, so the result equals it; two
        ``(2, rows, H)`` buffers serve every block and stay in the cache.
        """
        n_rows = h_time.shape[0]
        batch, block = x.shape[0], min(rows, x.shape[0])
        h_buffer = x.new_empty((2, block, self.hidden_dim))
        feature_buffer = torch.empty_like(h_buffer)
        outputs = []
        for start in range(0, batch, block):
            stop = min(start + block, batch)
            if inverse is not None:
                rows_time = h_time.index_select(0, inverse[start:stop])
            else:
                rows_time = h_time.expand(stop - start, -1) if n_rows == 1 else h_time[start:stop]
            t_global, t_local = rows_time.view(-1, 2, self.hidden_dim).unbind(1)
            features = self._trunk_no_grad(
                t_global,
                t_local,
                self.coord_embedding(x[start:stop]).flatten(1),
                self.coord_embedding(up[start:stop]).flatten(1),
                h_buffer[:, : stop - start],
                feature_buffer[:, : stop - start],
            )
            outputs.append(self.output_layer(features))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

    def _trunk_no_grad(
        self,
        t_global: Tensor,
        t_local: Tensor,
        coords_global: Tensor,
        coords_local: Tensor,
        h: Tensor,
        features: Tensor | None = None,
    ) -> Tensor:
        """The hidden layers without autograd, updating two ``(2, b, H)`` buffers in place.

        ``h`` (and ``features``, default a new one) are the ``(2, b, H)`` buffers; reusing
        them avoids allocating (and faulting in) fresh tensors for every layer.
        """
        w_global, w_local = self.coord_layer.matrices().unbind(0)
        torch.addmm(t_global, coords_global, w_global, out=h[0])
        torch.addmm(t_local, coords_local, w_local, out=h[1])
        if features is None:
            features = torch.empty_like(h)
        for module in self.blocks:
            block = cast(StackedLinear, module)
            torch.clamp_min(h, 0.0, out=features)
            h.baddbmm_(features, block.matrices())  # h += relu(h) W
            if block.bias is not None:
                h.add_(block.bias)
        return torch.clamp_min(h, 0.0, out=features)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        r"""Predict :math:`\hat\epsilon = w_g g + w_l l`: ``(b, d), (b,) -> (b, d)``."""
        out, weights = self.forward_branches(x, t)
        mixed: Tensor = weights[:, 0:1] * out[0] + weights[:, 1:2] * out[1]
        return mixed
