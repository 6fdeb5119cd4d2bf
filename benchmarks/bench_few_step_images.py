"""Few-step sampling of image models: ancestral versus DDIM (eta = 0) at 10, 20, 50 calls.

Two parts, chosen by the first argument.

``gaussian`` (exact, no training, a few seconds): Gaussian "images" x0 ~ N(0, Sigma)
with a stationary covariance (DCT power spectrum (1 + f^2 / f0^2)^-1.5, pixel variance
0.25), the exact denoiser E[D_{0:t-1} x0 | x_t] of each forward process, and the exact
law of the samples: every step is affine in (x_t, noise), so the law N(m, C) is pushed
through the sampler step by step (scalemix.degradation.reverse_step / ddim_step). For a
Scale Space Diffusion pyramid and for the one-level DDPM it prints, per sampler and
number of model calls, KL(data || samples) and KL(samples || 250-call ancestral) in
nats and the relative Frobenius error of the covariance. It measures the samplers'
discretisation error alone (the denoiser is exact).

``kid`` (trained models): trains a small FlexiUNet on Fashion-MNIST with the scale-space
loss for the pyramid and for one level (DDPM with an x0 prediction), or loads the EMA
weights of ``train_images`` checkpoint directories (``--ssd-run``, ``--ddpm-run``; give
the architecture with the model options), then draws ``--num-samples`` images per
sampler and number of calls and prints KID x 1000 (with its jackknife standard error)
against the 250-call ancestral samples of the same model and against held-out test
images. ``--features inception`` uses the FID Inception network (``scalemix[fid]``),
``--features pixels`` the raw pixels (a cheap proxy, not comparable to published KID).

Usage::

    nice -n 15 python benchmarks/bench_few_step_images.py gaussian
    nice -n 15 python benchmarks/bench_few_step_images.py kid --train-steps 20000 \\
        --num-samples 2000 --features inception --device cuda
    nice -n 15 python benchmarks/bench_few_step_images.py kid --ssd-run RUN/checkpoints \\
        --ddpm-run RUN2/checkpoints --base-channels 64 --channel-mult 1 2 2 --levels 3

One torch thread unless ``--threads``. Calls count model evaluations: the base steps
plus the resolution-change steps the respacing keeps (the nearest count that is
reachable is used and printed).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from scalemix import FlexiUNet, ScaleSpaceDegradation, scale_space_sample
from scalemix.degradation import ddim_step, reverse_step
from scalemix.degradation.blur import dct_matrix
from scalemix.metrics import gaussian_kl, kid_from_features

F64 = torch.float64
CALLS = (10, 20, 50)
REFERENCE_CALLS = 250
SAMPLERS: dict[str, float | None] = {"ancestral": None, "ddim": 0.0}  # name -> eta
KID_SAMPLERS: dict[str, float | None] = {**SAMPLERS, "ddim_eta0.5": 0.5}

Denoiser = Callable[[Tensor, Tensor, int | None], Tensor]


def steps_for_calls(deg: ScaleSpaceDegradation, calls: int) -> tuple[int, int]:
    """The base step count whose respaced schedule has ``calls`` entries (else the nearest)."""
    best = (1, len(deg.timesteps(1)))
    for k in range(max(1, calls - len(deg.change_steps)), min(calls, deg.num_train_timesteps) + 1):
        n = len(deg.timesteps(k))
        if abs(n - calls) < abs(best[1] - calls):
            best = (k, n)
        if n == calls:
            break
    return best


# ---------------------------------------------------------------- gaussian (exact)
def dense(op: Callable[[Tensor], Tensor], n: int) -> Tensor:
    """Matrix ``(out_dim, n*n)`` of a linear map on ``(b, 1, n, n)`` images."""
    eye = torch.eye(n * n, dtype=F64).reshape(n * n, 1, n, n)
    out = op(eye)
    return out.reshape(n * n, -1).T


def stationary_covariance(n: int, f0: float, variance: float) -> Tensor:
    """``(n*n, n*n)`` covariance with DCT power spectrum ``(1 + f^2/f0^2)^-1.5``."""
    k = torch.arange(n, dtype=F64)
    power = (1 + (k[:, None] ** 2 + k[None, :] ** 2) / f0**2) ** -1.5
    power *= variance * n * n / power.sum()
    c = dct_matrix(n)
    basis = torch.kron(c, c)  # rows: the 2-D DCT basis images
    return basis.T @ torch.diag(power.reshape(-1)) @ basis


def gaussian_oracle(deg: ScaleSpaceDegradation, cov: Tensor) -> Denoiser:
    """The exact ``E[D_{0:t-1} x0 | x_t]`` for ``x0 ~ N(0, cov)`` (1-channel images)."""
    n = deg.image_size
    first = {r: deg.resolution_table.tolist().index(r) for r in deg.resolutions}
    down = {r: dense(lambda v, t=t: deg.degrade(v, t), n) for r, t in first.items()}  # type: ignore[misc]
    cache: dict[int, Tensor] = {}

    def model(x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        tt = int(t[0])
        if tt not in cache:
            abar = float(deg.alphas_cumprod[tt])
            k, p = math.sqrt(abar) * down[deg.resolution(tt)], down[deg.resolution(tt - 1)]
            cov_t = k @ cov @ k.T + (1 - abar) * torch.eye(k.shape[0], dtype=F64)
            cache[tt] = torch.linalg.solve(cov_t, k @ cov @ p.T).T  # p cov k^T cov_t^-1
        out = x.reshape(x.shape[0], -1) @ cache[tt].T
        return out.reshape(x.shape[0], 1, out_size, out_size)  # type: ignore[arg-type]

    return model


def sampler_law(
    deg: ScaleSpaceDegradation, model: Denoiser, steps: int, eta: float | None
) -> tuple[Tensor, Tensor]:
    """Exact law ``N(m, C)`` of the samples of an affine denoiser (``eta=None``: ancestral)."""
    ts = [int(v) for v in deg.timesteps(steps).tolist()]
    d = math.prod(deg.spatial_shape(ts[0]))
    m, root = torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64)
    for t, s in zip(ts, [*ts[1:], -1], strict=True):
        sh_t, sh_s = deg.spatial_shape(t), deg.spatial_shape(s)
        d_s = math.prod(sh_s) if s >= 0 else 0
        k = root.shape[1]
        x_t = torch.cat([m[None], m + root.T, m.expand(d_s, -1)]).reshape(-1, 1, *sh_t)
        xi = torch.zeros(x_t.shape[0], 1, *sh_s, dtype=F64)
        xi[k + 1 :] = torch.eye(d_s, dtype=F64).reshape(d_s, 1, *sh_s)
        pred = model(x_t, torch.full((x_t.shape[0],), t), sh_s[-1])
        if eta is None:
            out = reverse_step(deg, pred, t, x_t, prev_t=s, noise=xi).prev_sample
        else:
            out = ddim_step(deg, pred, t, x_t, prev_t=s, eta=eta, noise=xi).prev_sample
        out = out.reshape(out.shape[0], -1)
        m, cols = out[0], out[1:] - out[0]
        ev, v = torch.linalg.eigh(cols.T @ cols)
        root = v * ev.clamp(min=0.0).sqrt()
    return m, root @ root.T


def run_gaussian(args: argparse.Namespace) -> list[dict[str, Any]]:
    n = args.image_size
    cov = stationary_covariance(n, args.f0, 0.25)
    zero = torch.zeros(n * n, dtype=F64)
    rows: list[dict[str, Any]] = []
    for levels in (args.levels, 1):
        deg = ScaleSpaceDegradation(n, levels)
        model = gaussian_oracle(deg, cov)
        ref_steps, ref_calls = steps_for_calls(deg, REFERENCE_CALLS)
        ref_m, ref_c = sampler_law(deg, model, ref_steps, None)
        name = f"SSD {levels} levels" if levels > 1 else "DDPM (1 level)"
        print(f"\n{name}, {n}x{n}, change steps {deg.change_steps}")
        head = f"{'KL(data||law)':>14} {'KL(law||ref)':>13} {'cov err':>8}"
        print(f"{'sampler':>10} {'calls':>5} {head}")
        plan = [(s, c) for c in CALLS for s in SAMPLERS] + [("ancestral", REFERENCE_CALLS)]
        for sampler, calls in plan:
            steps, got = steps_for_calls(deg, calls)
            t0 = time.perf_counter()
            mean, law = sampler_law(deg, model, steps, SAMPLERS[sampler])
            kl_data = float(gaussian_kl(zero, cov, mean, law))
            kl_ref = float(gaussian_kl(mean, law, ref_m, ref_c))
            err = float(torch.linalg.norm(law - cov) / torch.linalg.norm(cov))
            print(
                f"{sampler:>10} {got:>5} {kl_data:>14.4f} {kl_ref:>13.4f} {err:>8.4f}"
                f"   ({time.perf_counter() - t0:.1f} s)"
            )
            rows.append(
                {
                    "part": "gaussian",
                    "model": name,
                    "sampler": sampler,
                    "calls": got,
                    "kl_data_law": kl_data,
                    "kl_law_ref": kl_ref,
                    "cov_rel_err": err,
                    "reference_calls": ref_calls,
                }
            )
    return rows


# ---------------------------------------------------------------- kid (trained models)
def build_model(args: argparse.Namespace) -> FlexiUNet:
    return FlexiUNet(
        in_channels=1,
        base_channels=args.base_channels,
        channel_mult=tuple(args.channel_mult),
        num_res_blocks=args.num_res_blocks,
        attention_resolutions=tuple(args.attention),
        image_size=args.image_size,
        num_heads=1,
    )


def load_run(args: argparse.Namespace, run: Path, device: torch.device) -> nn.Module:
    """The EMA weights of the newest valid checkpoint of a ``train_images`` directory."""
    from scalemix.training.checkpoint import find_latest_checkpoint, load_checkpoint

    path = find_latest_checkpoint(run)
    if path is None:
        raise SystemExit(f"no checkpoint under {run}")
    ckpt = load_checkpoint(path, map_location="cpu")
    model = build_model(args)
    model.load_state_dict(ckpt.weights["ema"])
    print(f"loaded {path} (step {ckpt.step})")
    return model.to(device).eval()


def train_model(
    args: argparse.Namespace, deg: ScaleSpaceDegradation, data: Tensor, device: torch.device
) -> nn.Module:
    from torch.utils.data import DataLoader

    from scalemix.scale_space import scale_space_loss
    from scalemix.training import ImageTrainConfig, train_images

    torch.manual_seed(args.seed)
    model = build_model(args).to(device)
    loader: DataLoader[Tensor] = DataLoader(
        data,  # type: ignore[arg-type]
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    config = ImageTrainConfig(
        steps=args.train_steps, lr=args.lr, ema_decay=args.ema_decay, warmup_steps=args.warmup
    )

    def loss(net: nn.Module, x0: Tensor, gen: torch.Generator) -> Tensor:
        return scale_space_loss(net, deg, x0, generator=gen)

    gen = torch.Generator(device=device).manual_seed(args.seed)
    t0 = time.perf_counter()
    result = train_images(
        model,
        loss,  # type: ignore[arg-type]
        loader,
        config,
        generator=gen,
        device=device,
        find_unused_parameters=True,
    )
    print(f"trained {args.train_steps} steps in {time.perf_counter() - t0:.0f} s")
    ema = result.ema
    module = ema.module if isinstance(ema, torch.optim.swa_utils.AveragedModel) else ema
    return module.eval()


def features(args: argparse.Namespace, images: Tensor, device: torch.device) -> Any:
    if args.features == "pixels":
        return images.reshape(images.shape[0], -1).double().cpu().numpy()
    from scalemix.metrics.fid import inception_features, load_inception

    if not hasattr(features, "net"):
        features.net = load_inception(device)  # type: ignore[attr-defined]
    return inception_features(images, features.net)  # type: ignore[attr-defined]


def draw(
    model: nn.Module,
    deg: ScaleSpaceDegradation,
    args: argparse.Namespace,
    steps: int,
    sampler: str,
    device: torch.device,
    seed: int,
) -> Tensor:
    """``--num-samples`` images; every sampler and count of one model starts from ``seed``."""
    eta = KID_SAMPLERS[sampler]
    out = []
    gen = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, args.num_samples, args.sample_batch):
        b = min(args.sample_batch, args.num_samples - start)
        kw: dict[str, Any] = {} if eta is None else {"sampler": "ddim", "eta": eta}
        out.append(
            scale_space_sample(
                model, deg, b, channels=1, steps=steps, generator=gen, device=device, **kw
            ).cpu()
        )
    return torch.cat(out)


def run_kid(args: argparse.Namespace) -> list[dict[str, Any]]:
    from scalemix.datasets import FashionMNIST

    device = torch.device(args.device)
    resize: Literal["pad", "bilinear"] = "pad" if args.image_size >= 28 else "bilinear"
    rows: list[dict[str, Any]] = []
    test = FashionMNIST(split="test", image_size=args.image_size, resize=resize)
    test_images = test.tensors(0, args.num_samples)
    f_test = features(args, test_images, device)
    plan = {"ssd": (args.levels, args.ssd_run), "ddpm": (1, args.ddpm_run)}
    for levels, run in (plan[m] for m in args.models):
        deg = ScaleSpaceDegradation(args.image_size, levels)
        name = f"SSD {levels} levels" if levels > 1 else "DDPM (1 level)"
        cache = None if args.model_cache is None else args.model_cache / f"{levels}_levels.pt"
        if run is not None:
            model = load_run(args, Path(run), device)
        elif cache is not None and cache.is_file():
            model = build_model(args).to(device).eval()
            model.load_state_dict(torch.load(cache, map_location=device, weights_only=True))
            print(f"loaded {cache}")
        else:
            train = FashionMNIST(split="train", image_size=args.image_size, resize=resize)
            data = train.tensors(0, args.train_images)
            model = train_model(args, deg, data, device)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), cache)
        ref_steps, ref_calls = steps_for_calls(deg, REFERENCE_CALLS)
        t0 = time.perf_counter()
        f_ref = features(
            args, draw(model, deg, args, ref_steps, "ancestral", device, args.seed + 2), device
        )
        print(f"\n{name}: {ref_calls}-call ancestral reference in {time.perf_counter() - t0:.0f} s")
        ref_vs_test = kid_from_features(f_ref, f_test, num_subsets=0)
        print(
            f"  reference vs test: KID x1000 = {1e3 * ref_vs_test.value:.2f} "
            f"+- {1e3 * ref_vs_test.se:.2f}"
        )
        rows.append(
            {
                "part": "kid",
                "model": name,
                "sampler": "ancestral",
                "calls": ref_calls,
                "kid_ref": 0.0,
                "kid_ref_se": 0.0,
                "kid_test": ref_vs_test.value,
                "kid_test_se": ref_vs_test.se,
                "features": args.features,
                "num_samples": args.num_samples,
                "reference": True,
            }
        )
        print(f"{'sampler':>10} {'calls':>5} {'KID vs ref':>16} {'KID vs test':>16}")
        for calls in args.calls:
            steps, got = steps_for_calls(deg, calls)
            for sampler in args.samplers:
                f = features(
                    args, draw(model, deg, args, steps, sampler, device, args.seed + 1), device
                )
                a = kid_from_features(f, f_ref, num_subsets=0)
                b = kid_from_features(f, f_test, num_subsets=0)
                print(
                    f"{sampler:>10} {got:>5} {1e3 * a.value:>9.2f} +-{1e3 * a.se:5.2f}"
                    f" {1e3 * b.value:>9.2f} +-{1e3 * b.se:5.2f}"
                )
                rows.append(
                    {
                        "part": "kid",
                        "model": name,
                        "sampler": sampler,
                        "calls": got,
                        "kid_ref": a.value,
                        "kid_ref_se": a.se,
                        "kid_test": b.value,
                        "kid_test_se": b.se,
                        "features": args.features,
                        "num_samples": args.num_samples,
                        "reference": False,
                    }
                )
                print(f"    ({time.perf_counter() - t0:.0f} s since the reference started)")
    return rows


# ---------------------------------------------------------------- report (from --json files)
def run_report(args: argparse.Namespace) -> None:
    """Merge the rows of ``kid`` runs (``--inputs``), print a table, plot KID against calls."""
    rows = [r for path in args.inputs for r in json.loads(Path(path).read_text())]
    unique: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:  # a row measured by two runs (the reference of each) is kept once
        if r["part"] == "kid":
            unique.setdefault((r["model"], r["sampler"], r["calls"], r["reference"]), r)
    rows = list(unique.values())
    if not rows:
        raise SystemExit("no kid rows in the inputs")
    print("| model | sampler | calls | KID x1e3 vs test | KID x1e3 vs 250-call ancestral |")
    print("|---|---|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["model"], r["sampler"], r["calls"])):
        vs_ref = (
            "reference"
            if r["reference"]
            else f"{1e3 * r['kid_ref']:.2f} ± {1e3 * r['kid_ref_se']:.2f}"
        )
        print(
            f"| {r['model']} | {r['sampler']} | {r['calls']} "
            f"| {1e3 * r['kid_test']:.2f} ± {1e3 * r['kid_test_se']:.2f} | {vs_ref} |"
        )
    if args.plot is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        ref = next(r for r in rows if r["model"] == model and r["reference"])
        labels = {"ancestral": "ancestral", "ddim": "DDIM, eta = 0", "ddim_eta0.5": "eta = 0.5"}
        for sampler, label in labels.items():
            pts = sorted(
                (r["calls"], 1e3 * r["kid_test"], 1e3 * r["kid_test_se"])
                for r in rows
                if r["model"] == model and r["sampler"] == sampler and not r["reference"]
            )
            if pts:
                c, v, e = zip(*pts, strict=True)
                ax.errorbar(c, v, yerr=e, fmt="o-", ms=4, capsize=3, label=label)
        lo, hi = (
            1e3 * (ref["kid_test"] - ref["kid_test_se"]),
            1e3 * (ref["kid_test"] + ref["kid_test_se"]),
        )
        ax.axhspan(lo, hi, color="k", alpha=0.15, label=f"ancestral, {ref['calls']} calls (± se)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("network calls")
        ax.set_ylabel(f"KID x 1000 vs test ({ref['features']})")
        ax.set_title(model)
        ax.legend(fontsize=8)
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=120)
    print(f"wrote {args.plot}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("gaussian", "kid", "report"))
    parser.add_argument(
        "--models", nargs="+", choices=("ssd", "ddpm"), default=["ssd", "ddpm"], help="kid: which"
    )
    parser.add_argument("--inputs", nargs="+", default=[], help="report: --json files of kid")
    parser.add_argument("--calls", type=int, nargs="+", default=list(CALLS), help="kid")
    parser.add_argument(
        "--samplers", nargs="+", choices=tuple(KID_SAMPLERS), default=list(SAMPLERS), help="kid"
    )
    parser.add_argument(
        "--model-cache", type=Path, default=None, help="kid: keep / reuse the trained models here"
    )
    parser.add_argument("--plot", type=Path, default=None, help="report: write the figure here")
    parser.add_argument("--image-size", type=int, default=None, help="side (gaussian: 16, kid: 32)")
    parser.add_argument("--levels", type=int, default=None, help="pyramid levels (3 / 2)")
    parser.add_argument("--f0", type=float, default=2.0, help="gaussian: spectrum knee")
    parser.add_argument("--ssd-run", default=None, help="kid: train_images checkpoint dir")
    parser.add_argument("--ddpm-run", default=None, help="kid: train_images checkpoint dir")
    parser.add_argument("--features", choices=("inception", "pixels"), default="inception")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--sample-batch", type=int, default=250)
    parser.add_argument("--train-steps", type=int, default=2000)
    parser.add_argument("--train-images", type=int, default=60000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--warmup", type=int, default=100, help="kid: linear warm-up steps")
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--channel-mult", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--num-res-blocks", type=int, default=1)
    parser.add_argument("--attention", type=int, nargs="*", default=[])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the rows to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.image_size is None:
        args.image_size = 16 if args.part == "gaussian" else 32
    if args.levels is None:
        args.levels = 3 if args.part == "gaussian" else 2
    if args.part == "report":
        run_report(args)
        return
    rows = run_gaussian(args) if args.part == "gaussian" else run_kid(args)
    if args.json is not None:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
