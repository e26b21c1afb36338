"""Where a C-ViViT tokenizer loses Shapes World's clean edges: a diagnosis in numbers.

    python bench/tokenizer_diagnosis.py [--checkpoint BUNDLE] [--clips 192] [--json OUT]

Reconstructs held-out clips of the generator and of the independent renderer and reports:

* per frame index: PSNR and the share of frames that read as another shape than the clip's truth
  (frame 0 is patched alone; frames 1-2, 3-4, ... share a tubelet);
* by position inside the spatial patch: the mean squared error and the share of halo pixels
  (visible colour on the background) in each row/column of the patch, so errors that sit on
  patch borders show up;
* by object size (half-extent bins): PSNR over the object's box and the shape read per frame;
* codebook use: distinct codes over the clips, and the entropy of their use, in bits;
* the same clips with one pixel of edge softening in the *input* (does the encoder or the decoder
  lose the edge? a decoder that cannot draw a sharp edge loses it either way).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phenaki_core.data import ShapesWorldConfig, ShapesWorldDataset  # noqa: E402
from phenaki_core.evaluation.independent_clips import independent_clips  # noqa: E402
from phenaki_core.evaluation.reconstruction import psnr_from_mse  # noqa: E402
from phenaki_core.evaluation.shapes_judge import HALO_THRESHOLD, SHAPE_FILL, frame_stats  # noqa: E402
from phenaki_core.pipeline import PhenakiPipeline  # noqa: E402


def _shape_of(fill: float) -> str | None:
    if math.isnan(fill):
        return None
    return min(SHAPE_FILL, key=lambda s: abs(SHAPE_FILL[s] - fill))


@torch.no_grad()
def diagnose(pipe: PhenakiPipeline, video: torch.Tensor, shapes: list[str]) -> dict:
    cfg = pipe.model.config.cvivit
    patch = cfg.patch_size
    recon, ids = [], []
    for i in range(0, len(video), 16):
        codes = pipe.encode_video(video[i:i + 16])
        ids.append(codes.reshape(-1).cpu())
        recon.append(pipe.decode(codes).cpu().float().clamp(0, 1))
    recon = torch.cat(recon)
    error = (recon - video).pow(2).mean(1)                                      # b f h w
    b, f, h, w = error.shape
    per_frame_psnr = [psnr_from_mse(error[:, t].mean().item()) for t in range(f)]
    wrong_shape = np.zeros(f)
    sizes, size_err, size_wrong = [], [], []
    for k in range(b):
        truth, stats = frame_stats(video[k]), frame_stats(recon[k])
        for t in range(f):
            read = _shape_of(stats.fills[t])
            wrong = read != shapes[k]
            wrong_shape[t] += wrong
            side = math.sqrt(truth.areas[t] / SHAPE_FILL[shapes[k]])               # ~ object width
            sizes.append(side / 2)
            size_wrong.append(wrong)
            size_err.append(error[k, t].mean().item())
    background = video.amax(1) == 0                                            # b f h w: black in the clip
    halo = ((recon.amax(1) * 255 > HALO_THRESHOLD) & background).float()
    rows = [error[:, :, r::patch, :].mean().item() for r in range(patch)]
    rows_halo = [halo[:, :, r::patch, :].mean().item() for r in range(patch)]
    cols_halo = [halo[:, :, :, c::patch].mean().item() for c in range(patch)]
    bins = [(2, 4), (4, 6), (6, 8), (8, 10), (10, 15)]
    by_size = {}
    sizes_a, wrong_a = np.asarray(sizes), np.asarray(size_wrong)
    for lo, hi in bins:
        pick = (sizes_a >= lo) & (sizes_a < hi)
        if pick.any():
            by_size[f"{lo}-{hi}px"] = {"frames": int(pick.sum()), "shape_wrong": round(float(wrong_a[pick].mean()), 3)}
    codes = torch.cat(ids)
    counts = torch.bincount(codes, minlength=2 ** int(math.log2(pipe.model.config.cvivit.codebook_size)))
    p = counts[counts > 0].double() / counts.sum()
    return {
        "clips": b,
        "psnr_db": round(psnr_from_mse(error.mean().item()), 3),
        "psnr_by_frame": [round(v, 2) for v in per_frame_psnr],
        "shape_wrong_by_frame": [round(v / b, 3) for v in wrong_shape],
        "mse_by_patch_row": [round(v * 1e3, 3) for v in rows],
        "halo_share_by_patch_row": [round(v, 4) for v in rows_halo],
        "halo_share_by_patch_col": [round(v, 4) for v in cols_halo],
        "shape_wrong_by_half_extent": by_size,
        "codes_used": int((counts > 0).sum()), "codebook": int(counts.numel()),
        "code_entropy_bits": round(float(-(p * p.log2()).sum()), 2),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--clips", type=int, default=192)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    pipe = PhenakiPipeline.from_checkpoint(args.checkpoint, device="cpu", dtype="fp32", with_text=False)
    data = ShapesWorldDataset(ShapesWorldConfig(), seed=424242)
    items = [data[i] for i in range(args.clips)]
    own = torch.stack([it["video"] for it in items])
    other, truth = independent_clips(args.clips, seed=424242)
    report = {"checkpoint": args.checkpoint or "bundled",
              "generator": diagnose(pipe, own, [it["shape"] for it in items]),
              "independent": diagnose(pipe, other, [t[1] for t in truth])}
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
