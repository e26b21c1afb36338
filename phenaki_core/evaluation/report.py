"""``phenaki eval``: measure a checkpoint on Shapes World and return a JSON-able report.

    tokenizer    reconstruction PSNR on held-out clips, and how the reconstructions read (a ceiling
                 on what generation can reach)
    canonical    prompt faithfulness: all 8 colours x 3 shapes x 7 motions, ``seeds`` seeds each
    shades       the same targets with the colour named by an everyday shade from the training
                 captions (crimson, navy, turquoise, ...) instead of its palette word
    heldout      the same targets worded with shades, nouns, phrases and sentence forms Shapes
                 World's captions never use
    chains       two-scene stories that change the motion of the same object: boundary jump
                 (fraction of the width) and whether scene 2 follows its own prompt
    diversity    spread of the first-frame centroid across seeds for the same prompt
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from typing import Any, Optional

import numpy as np
import torch

from ..data import COLOURS, MOTIONS, SHAPES, ShapesWorldConfig, ShapesWorldDataset, canonical_caption
from ..data.captions import evaluation_prompts
from ..guided import sample_ids
from ..pipeline import PhenakiPipeline, make_video
from ..sampling import SamplerConfig
from .reconstruction import psnr
from .shapes_judge import chain_continuity, confusion_table, frame_stats, read_clips, score_readings

logger = logging.getLogger(__name__)

TARGETS = {
    "psnr_db": 30.0, "colour": 0.97, "shape": 0.95, "motion": 0.95, "all_three": 0.90, "heldout_all_three": 0.50,
    "chain_jump_ok_share": 0.95, "chain_scene2_motion": 0.90,
}
JUMP_LIMIT = 0.06
EVAL_DATA_SEED = 424242
BATCH = 48


TOKENIZER_CLIPS = 192  # held-out clips for PSNR and readback (standard error of a share near 50%: 3.6 points)


@torch.no_grad()
def tokenizer_quality(pipe: PhenakiPipeline, clips: int = TOKENIZER_CLIPS) -> tuple[float, dict[str, float]]:
    """Reconstruction PSNR of held-out clips, and how their reconstructions read (colour, shape,
    motion against the clips' truth). The reading is a ceiling on generation: whatever the
    transformer picks, the tokenizer's decoder draws it."""
    cfg = pipe.model.config.cvivit
    data = ShapesWorldDataset(ShapesWorldConfig(image_size=cfg.image_size, num_frames=17,
                                                temporal_patch=cfg.temporal_patch_size), seed=EVAL_DATA_SEED)
    scores, readings, truth, area_ratios = [], [], [], []
    for start in range(0, clips, 16):
        items = [data[i] for i in range(start, min(clips, start + 16))]
        video = torch.stack([item["video"] for item in items])
        recon = pipe.decode(pipe.encode_video(video)).cpu()
        scores.append((psnr(video, recon), video.shape[0]))
        readings += read_clips(recon.float())
        truth += [(item["colour"], item["shape"], item["motion"]) for item in items]
        area_ratios += [frame_stats(r.float()).areas.sum() / max(frame_stats(v).areas.sum(), 1)
                        for r, v in zip(recon, video)]
    mean_psnr = sum(s * n for s, n in scores) / sum(n for _, n in scores)
    readback = score_readings(readings, truth)
    readback["area_ratio_median"] = float(np.median(area_ratios))  # drawn object area / true area
    return mean_psnr, readback


@torch.no_grad()
def generate(pipe: PhenakiPipeline, prompts: list[str], seed: int, sampler: SamplerConfig,
             frames: int = 17) -> torch.Tensor:
    """One clip per prompt, batched; returns (b, c, f, H, W) on the CPU."""
    out = []
    for start in range(0, len(prompts), BATCH):
        chunk = prompts[start:start + BATCH]
        text = pipe.encode_text(chunk)
        ids = sample_ids(pipe.model, text, num_frames=frames, sampler=sampler,
                         generator=pipe.generator(seed * 1000 + start), batch_size=len(chunk))
        out.append(pipe.decode(ids).cpu())
    return torch.cat(out)


def _faithfulness(pipe, targets, seeds, sampler) -> dict[str, Any]:
    readings, truth = [], []
    for seed in range(seeds):
        videos = generate(pipe, [t[0] for t in targets], seed, sampler)
        readings += read_clips(videos)
        truth += [t[1:] for t in targets]
    scores = score_readings(readings, truth)
    per_motion = {}
    for motion in MOTIONS:
        picked = [(r, t) for r, t in zip(readings, truth) if t[2] == motion]
        per_motion[motion] = sum(r.motion == motion for r, _ in picked) / max(1, len(picked))
    scores["motion_by_kind"] = per_motion
    for index, attribute in ((1, "shape"), (2, "motion")):  # a blank clip reads as "blank"
        scores[f"{attribute}_read_as"] = confusion_table(
            [t[index] for t in truth], ["blank" if r.blank else getattr(r, attribute) for r in readings])
    return scores


def _chains(pipe, seeds, sampler, quick: bool) -> dict[str, Any]:
    pairs = []
    for colour, shape in itertools.product(COLOURS[:4] if quick else COLOURS, SHAPES):
        for first, second in (("moving right", "moving up"), ("moving down", "moving left"),
                              ("standing still", "moving right"), ("moving left", "growing")):
            pairs.append((colour, shape, first, second))
    if quick:
        pairs = pairs[:6]
    jumps, correct = [], []
    for seed in range(seeds):
        for start in range(0, len(pairs), BATCH // 2):
            chunk = pairs[start:start + BATCH // 2]
            firsts = [canonical_caption(colour, shape, a) for colour, shape, a, _ in chunk]
            seconds = [canonical_caption(colour, shape, b) for colour, shape, _, b in chunk]
            texts = [pipe.encode_text(firsts), pipe.encode_text(seconds)]  # one story per row
            story = make_video(pipe.model, texts, 17, 5, sampler=sampler,
                               generator=pipe.generator(seed * 1000 + start))
            scene_a, scene_b = story.scenes[0].cpu(), story.scenes[1].cpu()  # b c f H W
            readings = read_clips(scene_b)
            for row, (_, _, _, second) in enumerate(chunk):
                jumps.append(chain_continuity(scene_a[row], scene_b[row]))
                correct.append(readings[row].motion == second)
    finite = [j for j in jumps if not math.isnan(j)]
    return {
        "stories": len(jumps),
        "jump_median": float(np.median(finite)) if finite else float("nan"),
        "jump_ok_share": sum(j <= JUMP_LIMIT for j in finite) / max(1, len(jumps)),
        "blank_boundaries": len(jumps) - len(finite),
        "scene2_motion": sum(correct) / max(1, len(correct)),
    }


def _diversity(pipe, sampler, seeds: int = 6) -> dict[str, Any]:
    prompts = ["a red circle moving right", "a blue square moving up", "a green triangle standing still"]
    spreads = []
    for prompt in prompts:
        starts = []
        for seed in range(seeds):
            video = generate(pipe, [prompt], 100 + seed, sampler)[0]
            stats = frame_stats(video)
            visible = [c for c in stats.centroids if not any(math.isnan(v) for v in c)]
            if visible:
                starts.append(visible[0])
        if len(starts) >= 2:
            spreads.append(float(np.linalg.norm(np.std(np.asarray(starts), axis=0))) / video.shape[-1])
    return {"start_spread_frac": float(np.mean(spreads)) if spreads else 0.0, "prompts": prompts, "seeds": seeds,
            "collapsed": (not spreads) or float(np.mean(spreads)) < 0.02}


def evaluate_checkpoint(checkpoint: Optional[str] = None, *, seeds: int = 2, device: str = "auto",
                        dtype: str = "auto", steps: int = 18, cond_scale: float = 3.0, remask: str = "confidence",
                        quick: bool = False, tokenizer_only: bool = False, prompts_only: bool = False,
                        t5_folder: Optional[str] = None) -> dict[str, Any]:
    """The report (see the module docstring). ``tokenizer_only`` measures stage 1 alone (seconds);
    ``prompts_only`` only the canonical, shade and held-out prompts (for comparing text conditioning)."""
    if tokenizer_only and prompts_only:
        raise ValueError("tokenizer_only and prompts_only measure different things; pass one")
    started = time.time()
    pipe = PhenakiPipeline.from_checkpoint(checkpoint, device=device, dtype=dtype, with_text=not tokenizer_only,
                                           t5_folder=t5_folder)
    if tokenizer_only:
        psnr, readback = tokenizer_quality(pipe, 16 if quick else TOKENIZER_CLIPS)
        return {"checkpoint": checkpoint or "bundled", "tokenizer_psnr_db": psnr, "tokenizer_readback": readback,
                "targets": {"psnr_db": [psnr, TARGETS["psnr_db"]]},
                "targets_met": {"psnr_db": psnr >= TARGETS["psnr_db"]}, "wall_time_s": round(time.time() - started, 1)}
    sampler = SamplerConfig(steps=steps, cond_scale=cond_scale, remask=remask)
    canonical = [(canonical_caption(c, s, m), c, s, m) for c, s, m in itertools.product(COLOURS, SHAPES, MOTIONS)]
    shades, heldout = ([(p.prompt, p.colour, p.shape, p.motion) for p in evaluation_prompts(kind)]
                       for kind in ("shades", "heldout"))
    if quick:
        canonical, shades, heldout, seeds = canonical[::28], shades[::14], heldout[::14], 1
    report: dict[str, Any] = {"checkpoint": checkpoint or "bundled", "sampler": sampler.__dict__, "seeds": seeds}
    if not prompts_only:
        psnr, readback = tokenizer_quality(pipe, 16 if quick else TOKENIZER_CLIPS)
        report["tokenizer_psnr_db"], report["tokenizer_readback"] = psnr, readback
        logger.info("tokenizer PSNR %.2f dB, reconstructions read as: %s", psnr, readback)
    report["canonical"] = _faithfulness(pipe, canonical, seeds, sampler)
    logger.info("canonical: %s", {k: v for k, v in report["canonical"].items() if k != "motion_by_kind"})
    report["shades"] = _faithfulness(pipe, shades, seeds, sampler)
    report["heldout"] = _faithfulness(pipe, heldout, seeds, sampler)
    c, h = report["canonical"], report["heldout"]
    targets = {
        "colour": [c["colour"], TARGETS["colour"]], "shape": [c["shape"], TARGETS["shape"]],
        "motion": [c["motion"], TARGETS["motion"]], "all_three": [c["all_three"], TARGETS["all_three"]],
        "heldout_all_three": [h["all_three"], TARGETS["heldout_all_three"]],
    }
    if not prompts_only:
        report["chains"] = ch = _chains(pipe, seeds, sampler, quick)
        report["diversity"] = _diversity(pipe, sampler, 3 if quick else 6)
        targets = {"psnr_db": [report["tokenizer_psnr_db"], TARGETS["psnr_db"]], **targets,
                   "chain_jump_ok_share": [ch["jump_ok_share"], TARGETS["chain_jump_ok_share"]],
                   "chain_scene2_motion": [ch["scene2_motion"], TARGETS["chain_scene2_motion"]]}
    report["targets"] = targets
    report["targets_met"] = {k: v[0] >= v[1] for k, v in targets.items()}
    if not prompts_only:
        report["targets_met"]["not_collapsed"] = not report["diversity"]["collapsed"]
    report["wall_time_s"] = round(time.time() - started, 1)
    return report
