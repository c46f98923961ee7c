"""Where CaP's time goes on the 64-px ImageNet stand-in's ResNet-18: one compensation refit of a
last-stage consumer, at the `cpu` tier's calibration size.

ResNet-18's ``layer4.*.conv2`` read 512 × 3 × 3 = 4,608-wide patch vectors from a 2 × 2 map, 4 per
image: the tier's 20 % calibration (1,000 of 5,000 images) gives 4,000, and many columns never
vary (a channel that is zero at a border position, or everywhere), so Σ_SS is singular or
ill-conditioned for every kept set, the Cholesky solve is refused and the pseudo-inverse needs an
eigendecomposition per refit. This script reports, per kept fraction: the columns with zero
variance, the solve path ``_solve_psd`` takes, and the refit's seconds. The images are random
64-px tensors through a ResNet-18 with trained-looking BatchNorm statistics (the solve path depends
on the counts and the dead columns, not on the pictures).

    python benchmarks/cap_standin.py [--keep 0.9 0.6] [--layer layer4.1.conv2] [--images 1000]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision
from _common import trained_like, write_json

from methods.cap_compensation import collect_input_stats, column_mask, compensate, weight_matrix


def solve_path(stats, keep: torch.Tensor) -> str:
    """Which branch ``_solve_psd`` takes for this kept set (the same test it applies)."""
    s_ss = stats.sigma[keep][:, keep]
    scale = float(s_ss.diagonal().abs().max())
    chol, info = torch.linalg.cholesky_ex(s_ss)
    ok = int(info) == 0 and float(chol.diagonal().min()) ** 2 > 1e-10 * scale
    return "cholesky" if ok else "pseudo-inverse"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", type=float, nargs="+", default=[0.9, 0.6])
    p.add_argument("--layer", default="layer4.1.conv2")
    p.add_argument("--images", type=int, default=1000, help="the cpu tier's 20 %% of 5,000")
    p.add_argument("--out", default="results/benchmarks/cap_standin.json")
    args = p.parse_args()
    torch.manual_seed(0)
    model = trained_like(torchvision.models.resnet18(num_classes=20))
    module = model.get_submodule(args.layer)
    width = weight_matrix(module).shape[1]
    images = torch.randn(args.images, 3, 64, 64)
    stats = collect_input_stats(model, [args.layer], [(b,) for b in images.split(128)])[args.layer]
    rows = []
    for frac in args.keep:
        keep_ch = torch.zeros(module.in_channels, dtype=torch.bool)
        keep_ch[: round(frac * module.in_channels)] = True
        keep = column_mask(keep_ch, width // module.in_channels)
        start = time.perf_counter()
        compensate(weight_matrix(module), stats, keep, variance_rescale=True)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "images": args.images,
                "patch_vectors": stats.count,
                "width": width,
                "kept_fraction": frac,
                "kept_columns": int(keep.sum()),
                "zero_variance_columns": int((stats.sigma.diagonal()[keep] == 0).sum()),
                "path": solve_path(stats, keep),
                "refit_seconds": round(seconds, 3),
            }
        )
        print(rows[-1], flush=True)
    write_json(args.out, vars(args), refits=rows)


if __name__ == "__main__":
    main()
