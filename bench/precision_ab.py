#!/usr/bin/env python3
"""Is bf16 safe? Train each stage from the same seed in fp32 and in bf16 autocast, and sample the
bundled model in fp32 and bf16 weights; compare.

    python bench/precision_ab.py --steps 300 --json bench/results/precision_ab_cpu.json
    python bench/precision_ab.py --quick        # CI-sized: tiny-shapes, a few steps (asserts nothing)

Training (Shapes World, the bundled model's size ``shapes64`` unless ``--preset``): per stage three
runs of ``--steps`` steps: fp32 seed 0, bf16 seed 0, and fp32 seed 1. The last one is the yardstick:
bf16 is as safe as fp32 when its final loss differs from fp32's (same seed) by no more than fp32's
own differs between two seeds (the noise any single run carries anyway), or by at most 2% of how
far the loss fell. The final loss is the mean of the logged losses over the last ``--tail`` steps;
the total and each logged term (stage 1: recon, entropy; stage 2: token, critic) are compared.
Stage 2 trains on the bundled model's frozen tokenizer and MiniLM.

Generation: the bundled model samples the same prompts from the same seeds in fp32 and in bf16
weights (18 steps, guidance 3): the share of identical tokens (MaskGIT decoding is sequential: one
early flip changes every later step's context, so this is a lower bound on closeness), and the
Shapes World reader's scores (colour, shape, motion, all three) of both, which is what matters.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from phenaki_core import PhenakiPipeline, SamplerConfig, load_minilm, preset, read_metadata, sample_ids  # noqa: E402
from phenaki_core.data import COLOURS, MOTIONS, SHAPES, canonical_caption  # noqa: E402
from phenaki_core.evaluation.shapes_judge import read_clips, score_readings  # noqa: E402
from phenaki_core.pipeline import default_checkpoint  # noqa: E402
from phenaki_core.precision import cpu_bf16_units  # noqa: E402
from phenaki_core.training import TrainConfig, Trainer  # noqa: E402

RUNS = (("fp32", 0), ("bf16", 0), ("fp32", 1))  # (precision, seed)
TERMS = {"tokenizer": ("recon", "entropy"), "transformer": ("token", "critic")}  # metrics.jsonl loss terms


def train_run(run_dir: Path, stage: str, model_preset: str, precision: str, seed: int, steps: int, batch: int,
              tokenizer: Path | None, text_encoder=None) -> dict:
    cfg = TrainConfig(stage=stage, steps=steps, batch_size=batch, warmup_steps=min(50, steps // 4), log_every=1,
                      checkpoint_every=10 ** 9, preview_every=10 ** 9, seed=seed, precision=precision)
    config = read_metadata(tokenizer)[0] if tokenizer is not None else preset(model_preset)
    started = time.perf_counter()
    trainer = Trainer(run_dir, config, cfg, progress=False, tokenizer_from=tokenizer, text_encoder=text_encoder)
    trainer.run()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    run = {"precision": precision, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
           "losses": [round(line["loss"], 5) for line in lines]}
    for term in TERMS[stage]:
        if all(term in line for line in lines):
            run[term] = [round(line[term], 5) for line in lines]
    return run


def final(losses: list[float], tail: int) -> float:
    return statistics.fmean(losses[-tail:])


def compare(runs: list[dict], key: str, tail: int) -> dict:
    """Final values (mean of the last ``tail`` steps) of ``key`` in the three runs, and the verdict:
    bf16 within the two fp32 seeds' distance of fp32, or within 2% of how far the term moved."""
    fp32, bf16, fp32_other = (final(r[key], tail) for r in runs)
    start = statistics.fmean(runs[0][key][:max(1, tail // 5)])
    gap, floor = abs(bf16 - fp32), abs(fp32_other - fp32)
    return {"fp32": round(fp32, 5), "bf16": round(bf16, 5), "fp32_seed1": round(fp32_other, 5),
            "start": round(start, 5), "bf16_gap": round(gap, 5), "seed_gap": round(floor, 5),
            "within_tolerance": gap <= max(floor, 0.02 * abs(start - fp32))}


def compare_stage(runs: list[dict], stage: str, tail: int) -> dict:
    keys = ["losses"] + [term for term in TERMS[stage] if all(term in r for r in runs)]
    return {"final": {("loss" if key == "losses" else key): compare(runs, key, tail) for key in keys},
            "bf16_speedup": round(runs[0]["seconds"] / runs[1]["seconds"], 2)}


def sampling_ab(prompts: list[str], targets: list[tuple[str, str, str]], seeds: int, steps: int,
                threads_note: str) -> dict:
    sampler = SamplerConfig(steps=steps, cond_scale=3.0)
    out = {}
    ids_by = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        pipe = PhenakiPipeline.from_checkpoint(default_checkpoint(), device="cpu", dtype=dtype)
        all_ids, videos, started = [], [], time.perf_counter()
        for seed in range(seeds):
            for start in range(0, len(prompts), 8):
                chunk = prompts[start:start + 8]
                ids = sample_ids(pipe.model, pipe.encode_text(chunk), num_frames=17, sampler=sampler,
                                 generator=pipe.generator(seed * 1000 + start), batch_size=len(chunk))
                all_ids.append(ids)
                videos.append(pipe.decode(ids).float().cpu())
        ids_by[name] = torch.cat(all_ids)
        scores = score_readings(read_clips(torch.cat(videos)), targets * seeds)
        out[name] = {k: round(v, 4) for k, v in scores.items() if isinstance(v, float)}
        out[name]["seconds"] = round(time.perf_counter() - started, 1)
    same = (ids_by["fp32"] == ids_by["bf16"])
    out["token_agreement"] = round(same.float().mean().item(), 4)
    out["first_token_frame_agreement"] = round(same[:, 0].float().mean().item(), 4)
    out["clips"] = len(prompts) * seeds
    out["note"] = threads_note
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per training run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--preset", default="shapes64", help="model size of the stage-1 runs")
    parser.add_argument("--tail", type=int, default=50, help="the final loss averages this many last steps")
    parser.add_argument("--stages", default="tokenizer,transformer,sample")
    parser.add_argument("--sample-seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny-shapes, 4 steps, 2 prompts")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    stages = args.stages.split(",")
    if args.quick:
        args.steps, args.batch_size, args.preset, args.tail = 4, 2, "tiny-shapes", 2
        stages = [s for s in stages if s == "tokenizer"]
    report = {"device": f"cpu ({cpu_bf16_units() or 'no bf16 units'}), {args.threads} thread(s)",
              "torch": torch.__version__, "steps": args.steps, "batch_size": args.batch_size, "tail": args.tail,
              "command": " ".join(["python"] + sys.argv)}
    with tempfile.TemporaryDirectory() as tmp:
        for stage in ("tokenizer", "transformer"):
            if stage not in stages:
                continue
            tokenizer = default_checkpoint() if stage == "transformer" else None
            encoder = load_minilm() if stage == "transformer" else None
            runs = [train_run(Path(tmp) / f"{stage}-{p}-{s}", stage, args.preset, p, s, args.steps, args.batch_size,
                              tokenizer, encoder) for p, s in RUNS]
            report[stage] = {"runs": runs, **compare_stage(runs, stage, args.tail)}
            logging.info("%s: %s", stage, {k: v for k, v in report[stage].items() if k != "runs"})
            if args.json:  # each stage's result is kept even if a later one fails
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, indent=2))
    if "sample" in stages:
        targets = [(c, s, m) for c, s, m in itertools.product(COLOURS, SHAPES, MOTIONS)][::7]  # 24 of 168
        prompts = [canonical_caption(*t) for t in targets]
        report["sample"] = sampling_ab(prompts, targets, args.sample_seeds, 18, report["device"])
        logging.info("sample: %s", report["sample"])
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
