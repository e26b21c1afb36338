"""The ``phenaki`` command: generate, train, eval, export, convert.

    phenaki generate "a red circle moving right" "a red circle moving up" -o story.webp
    phenaki train tokenizer runs/tok --steps 3000
    phenaki train transformer runs/t2v --tokenizer runs/tok/bundle.safetensors --steps 3000
    phenaki eval --out report.json
    phenaki export runs/t2v/bundle.safetensors model.safetensors --dtype fp16

Bad input ends with a one-line ``error: ...`` message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .errors import InputError, PhenakiError

# sampling.REMASK_MODES and SamplerConfig().remask, spelled out to keep torch out of --help
REMASK_CHOICES = ("auto", "confidence", "critic")
DEFAULT_REMASK = "confidence"
REMASK_HELP = ("which tokens to resample each step: confidence (the model's least sure; default), critic (the "
               "token critic's choice) or auto (the critic when the model has one)")

logger = logging.getLogger("phenaki_core.cli")


def _int_at_least(lowest: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be at least {lowest}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


# --- generate ---------------------------------------------------------------------------------------
def _add_sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=_positive_int, default=17,
                        help="frames per scene, prime included (1 + k*2; default 17)")
    parser.add_argument("--prime-frames", type=_non_negative_int, default=5,
                        help="frames carried into the next scene (0 = no priming; default 5)")
    parser.add_argument("--steps", type=_positive_int, default=18, help="sampling steps per scene (default 18)")
    parser.add_argument("--cond-scale", type=_finite_float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--temperature", type=_finite_float, default=0.9, help="starting token temperature")
    parser.add_argument("--remask", choices=REMASK_CHOICES, default=DEFAULT_REMASK, help=REMASK_HELP)
    parser.add_argument("--negative", default=None, help="negative prompt for guidance")
    parser.add_argument("--checkpoint", default=None, help="model bundle (.safetensors); default: the bundled model")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--t5-folder", default=None,
                        help="only for checkpoints trained with T5: the local folder that holds it")


def _sampler(args):
    from .sampling import SamplerConfig
    return SamplerConfig(steps=args.steps, cond_scale=args.cond_scale, temperature=args.temperature,
                         remask=args.remask)


def _read_batch_file(path: str) -> list[list[str]]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read batch file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not part of the first prompt
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InputError(f"batch file {path} is not UTF-8 text (bad byte on line {line}, offset {exc.start}); "
                         f"save it as UTF-8") from None
    stories = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        scenes = [scene.strip() for scene in line.split(" | ")]
        if any(not scene for scene in scenes):
            raise InputError(f"batch file {path}, line {number}: an empty scene; separate scenes with ' | '")
        stories.append(scenes)
    if not stories:
        raise InputError(f"batch file {path} has no stories (one per line, scenes separated by ' | ')")
    return stories


def _check_frames_early(args, stories: list[list[str]]) -> None:
    """Validate frame counts against the checkpoint's header, before the slow model load."""
    from .checkpoint import read_metadata
    from .pipeline import check_prime_length, default_checkpoint
    config, _, _ = read_metadata(args.checkpoint or default_checkpoint())
    config.cvivit.check_num_frames(args.frames, "--frames")
    if args.frames > config.max_frames:
        raise InputError(f"--frames {args.frames} is more than this model attends over ({config.max_frames})")
    multi_scene = any(len(scenes) > 1 for scenes in stories)
    if multi_scene and args.prime_frames:
        check_prime_length(args.prime_frames, args.frames, config.cvivit.temporal_patch_size, "--prime-frames")


def cmd_generate(args) -> int:
    from .pipeline import PhenakiPipeline
    from .text import clean_prompts
    from .video_io import check_output_path, save_video

    if bool(args.batch_file) == bool(args.prompts):
        raise InputError("give prompts, or --batch-file FILE --out-dir DIR, not both")
    if args.batch_file and not args.out_dir:
        raise InputError("--batch-file needs --out-dir DIR")
    if args.prompts:
        if not args.output:
            raise InputError("give an output path with -o, e.g. -o story.webp")
        check_output_path(args.output)  # unknown extensions and unwritable places fail before the model loads
        stories = [clean_prompts(args.prompts)]
    else:
        check_output_path(args.out_dir, kind="dir")
        stories = [clean_prompts(s) for s in _read_batch_file(args.batch_file)]
    if args.negative is not None and not args.negative.strip():
        raise InputError("--negative is empty; give a negative prompt or leave the option out")
    sampler = _sampler(args)
    _check_frames_early(args, stories)

    started = time.time()
    pipe = PhenakiPipeline.from_checkpoint(args.checkpoint, device=args.device, dtype=args.dtype,
                                           t5_folder=args.t5_folder)
    logger.info("model loaded in %.1f s", time.time() - started)

    def render(scenes: list[str], seed: int):
        steps_total = len(scenes) * sampler.steps

        def progress(scene, step):
            done = scene * sampler.steps + step.step + 1
            if sys.stderr.isatty():
                print(f"\rscene {scene + 1}/{len(scenes)}  step {done}/{steps_total}", end="", file=sys.stderr,
                      flush=True)

        story = pipe.make_video(scenes, num_frames=args.frames, prime_frames=args.prime_frames, sampler=sampler,
                                seed=seed, negative_prompt=args.negative, callback=progress)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        return story

    if args.prompts:
        story = render(stories[0], args.seed)
        path = save_video(args.output, story.video[0], fps=story.fps)
        print(f"wrote {path} ({story.video.shape[2]} frames, {len(stories[0])} scenes, "
              f"{time.time() - started:.1f} s)")
        return 0

    out_dir = Path(args.out_dir)
    for line_index, scenes in enumerate(stories):
        for s in range(args.seeds):
            seed = args.seed + s
            name = f"{line_index:04d}" if args.seeds == 1 else f"{line_index:04d}_s{s}"
            story = render(scenes, seed)
            save_video(out_dir / name, story.video[0], fps=story.fps)
            ends = story.boundaries[1:] + [story.video.shape[2]]
            record = {"prompts": scenes, "seed": seed, "fps": story.fps,
                      "settings": {"frames": args.frames, "prime_frames": args.prime_frames, "steps": args.steps,
                                   "cond_scale": args.cond_scale, "temperature": args.temperature,
                                   "remask": args.remask, "negative": args.negative,
                                   "checkpoint": args.checkpoint or "bundled"},
                      "scenes": [[start, end] for start, end in zip(story.boundaries, ends)]}
            (out_dir / f"{name}.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
            print(f"wrote {out_dir / name}/ ({story.video.shape[2]} frames)")
    return 0


# --- train ------------------------------------------------------------------------------------------
def _training_dataset(args, model_config):
    """The --data folder or --shards directory, or None for Shapes World."""
    if args.data and args.shards:
        raise InputError("pass either --data (a video folder) or --shards (precomputed tokens), not both")
    if args.shards:
        if args.stage != "transformer":
            raise InputError("--shards holds precomputed tokens: it trains stage 2 (transformer) only")
        from .data.shards import TokenShardDataset, collate_shards
        return TokenShardDataset(args.shards), collate_shards
    if args.data:
        return _video_folder(args.data, args, model_config), None
    return None, None


def _video_folder(root, args, model_config):
    from .data.video_folder import VideoFolderConfig, VideoFolderDataset
    overrides = {k: v for k, v in {"num_frames": args.frames, "fps": args.fps}.items() if v is not None}
    config = VideoFolderConfig.for_model(model_config, **overrides)
    model_config.cvivit.check_num_frames(config.num_frames, "--frames")
    return VideoFolderDataset(root, config, seed=args.data_seed or 0)


def cmd_train(args) -> int:
    import torch

    from .config import preset
    from .pipeline import resolve_device
    from .training import TrainConfig, Trainer
    from .training.distributed import init_distributed, launched_by_torchrun, shutdown_distributed

    overrides = {k: v for k, v in {
        "stage": args.stage, "steps": args.steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum,
        "lr": args.lr, "warmup_steps": args.warmup_steps, "ema_decay": args.ema_decay, "seed": args.seed,
        "data_seed": args.data_seed, "checkpoint_every": args.checkpoint_every, "preview_every": args.preview_every,
        "num_workers": args.num_workers, "precision": args.precision, "entropy_weight": args.entropy_weight,
        "commit_weight": args.commit_weight, "foreground_weight": args.foreground_weight,
        "halo_weight": args.halo_weight, "log_every": args.log_every, "text_token_drop": args.text_token_drop,
        "pooled_text_token": args.pooled_text_token, "text_pooled_only": args.text_pooled_only,
        "text_noise": args.text_noise,
        "decoder_only": args.decoder_only or None}.items() if v is not None}
    train_config = TrainConfig(**overrides)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = None
    if launched_by_torchrun():
        ctx = init_distributed(device.type)
        if device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
    try:
        model_config = preset(args.preset)
        dataset, collate_fn = _training_dataset(args, model_config)
        encoder = None
        if args.stage == "transformer":
            if not args.tokenizer and not args.init_from and not (Path(args.run_dir) / "train_state.safetensors").exists():
                raise InputError("stage 2 needs --tokenizer BUNDLE (the stage-1 result) or --init-from BUNDLE")
            from .text import load_minilm
            encoder = load_minilm(device=device)  # captions encode where the model trains
        trainer = Trainer(args.run_dir, model_config, train_config, device=device, init_from=args.init_from,
                          tokenizer_from=args.tokenizer, text_encoder=encoder, resume=not args.no_resume,
                          dataset=dataset, collate_fn=collate_fn, dist=ctx)
        if args.shards:
            dataset.index.check_model(trainer.model, trainer.text_spec if encoder is not None else None)
        result = trainer.run(max_minutes=args.max_minutes, stop_at=args.stop_at, on_step=_test_hold())
    finally:
        if ctx is not None:
            shutdown_distributed()
    if ctx is None or ctx.is_main:
        print(f"step {result.step}: loss {result.last_loss:.4f}; bundle at {result.bundle}")
    return 0


# For tests only: the crash-resume test kills training mid-run by construction, not by timing.
TEST_HOLD_ENV = "PHENAKI_TEST_HOLD_AT_STEP"


def _test_hold():
    """With ``PHENAKI_TEST_HOLD_AT_STEP=N`` set, the run computes step N and then waits, unsaved, until
    it is killed, so a test can kill it at a random moment without it ever reaching its last step.
    Not a user option: nothing else reads the variable."""
    import os

    value = os.environ.get(TEST_HOLD_ENV)
    if not value:
        return None
    hold = int(value)

    def on_step(step: int, loss: float) -> None:
        if step == hold:
            logger.warning("%s=%d: holding until killed", TEST_HOLD_ENV, hold)
            while True:
                time.sleep(60)
    return on_step


def cmd_precompute(args) -> int:
    import torch

    from .checkpoint import load_bundle
    from .data.shards import precompute_shards
    from .pipeline import resolve_device
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_bundle(args.tokenizer)
    device = resolve_device(args.device)
    model = bundle.model.to(device)
    dataset = _video_folder(args.data_dir, args, model.config)
    encoder = None
    if not model.config.maskgit.unconditional:
        from .text import load_text_encoder
        encoder = load_text_encoder(bundle.text_encoder, device="cpu")
        if args.pooled_text_token:
            encoder = encoder.with_pooled_token()
    index = precompute_shards(dataset, model, encoder, args.out_dir, batch_size=args.batch_size,
                              shard_size=args.shard_size, overwrite=args.overwrite)
    print(f"wrote {index.num_items} items in {len(index.shards)} shards to {args.out_dir}")
    return 0


# --- export -----------------------------------------------------------------------------------------
def cmd_export(args) -> int:
    import torch

    from .checkpoint import load_bundle, save_bundle
    bundle = load_bundle(args.source)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    extra = dict(bundle.extra)
    if args.note:
        extra["note"] = args.note
    path = save_bundle(args.target, bundle.model, bundle.text_encoder, dtype=dtype, extra=extra)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.dtype})")
    return 0


# --- eval -------------------------------------------------------------------------------------------
def cmd_eval(args) -> int:
    from .checkpoint import read_metadata
    from .data.shapes_world import MIN_IMAGE_SIZE
    from .evaluation.report import evaluate_checkpoint
    from .pipeline import default_checkpoint
    if args.out:  # before minutes of measuring, not after
        from .video_io import check_output_path
        check_output_path(args.out, kind="file")
    config, text_spec, _ = read_metadata(args.checkpoint or default_checkpoint())
    if args.text_probe:
        if args.tokenizer_only or args.prompts_only:
            raise InputError("--text-probe measures the text encoder alone; drop --tokenizer-only/--prompts-only")
        from .evaluation.text_probe import text_probe
        from .text import load_text_encoder
        report = text_probe(load_text_encoder(text_spec, device="cpu", t5_folder=args.t5_folder))
        return _write_report(report, args.out)
    if args.tokenizer_only and args.prompts_only:
        raise InputError("--tokenizer-only and --prompts-only measure different things; pass one")
    if config.cvivit.image_size < MIN_IMAGE_SIZE or config.max_frames < 17:
        raise InputError(f"phenaki eval measures 17-frame Shapes World clips of at least {MIN_IMAGE_SIZE}x"
                         f"{MIN_IMAGE_SIZE}; this checkpoint makes {config.max_frames} frames of "
                         f"{config.cvivit.image_size}x{config.cvivit.image_size}. Use `phenaki generate` with it")
    report = evaluate_checkpoint(args.checkpoint, seeds=args.seeds, device=args.device, dtype=args.dtype,
                                 steps=args.steps, cond_scale=args.cond_scale, remask=args.remask, quick=args.quick,
                                 tokenizer_only=args.tokenizer_only, prompts_only=args.prompts_only,
                                 t5_folder=args.t5_folder)
    return _write_report(report, args.out)


def _write_report(report: dict, out: Optional[str]) -> int:
    from .checkpoint import atomic_write
    text = json.dumps(report, indent=2)
    if out:
        atomic_write(Path(out), lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
        print(f"wrote {out}")
    print(text)
    return 0


# --- convert ----------------------------------------------------------------------------------------
def cmd_convert(args) -> int:
    from .checkpoint import load_bundle, save_bundle
    from .convert import load_peer_state_dict, split_peer_phenaki
    bundle = load_bundle(args.tokenizer)
    parts = split_peer_phenaki(load_peer_state_dict(args.source))
    model = bundle.model
    try:
        model.maskgit.load_state_dict(parts["maskgit"], strict=True)
        if model.critic is not None and parts["critic"]:
            model.critic.load_state_dict(parts["critic"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{args.source} does not fit the architecture of {args.tokenizer}: {first}") from None
    path = save_bundle(args.target, model, bundle.text_encoder, extra={"converted_from": Path(args.source).name})
    print(f"wrote {path}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage dump) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="phenaki", description="Phenaki text-to-video (phenaki_core)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="prompts -> video; each prompt is a scene, chained by priming")
    gen.add_argument("prompts", nargs="*", help="one prompt per scene")
    gen.add_argument("-o", "--output", help="output file (.gif .webp .png .mp4) or a directory for PNG frames")
    gen.add_argument("--seed", type=_non_negative_int, default=0)
    gen.add_argument("--batch-file", help="one story per line, scenes separated by ' | '")
    gen.add_argument("--out-dir", help="output directory for --batch-file")
    gen.add_argument("--seeds", type=_positive_int, default=1, help="render each batch line with N seeds")
    _add_sampling_args(gen)
    gen.set_defaults(func=cmd_generate)

    train = sub.add_parser("train", help="train stage 1 (tokenizer) or stage 2 (transformer); torchrun for several processes")
    train.add_argument("stage", choices=("tokenizer", "transformer"))
    train.add_argument("run_dir", help="run directory (checkpoints, previews, metrics); resumes if present")
    train.add_argument("--preset", default="shapes64", help="model config preset (default shapes64)")
    train.add_argument("--tokenizer", help="stage 2: the stage-1 bundle whose tokenizer to freeze")
    train.add_argument("--init-from", help="warm-start from a bundle with the same architecture")
    train.add_argument("--data", help="a folder of captioned clips to train on (default: Shapes World)")
    train.add_argument("--shards", help="stage 2: token shards written by `phenaki precompute`")
    train.add_argument("--frames", type=_positive_int, help="--data: frames per clip, 1 + k * temporal patch")
    train.add_argument("--fps", type=_finite_float, help="--data: sample clips at this frame rate")
    train.add_argument("--data-seed", type=_non_negative_int, help="data order and clip offsets")
    train.add_argument("--steps", type=_positive_int)
    train.add_argument("--batch-size", type=_positive_int,
                       help="global batch per optimizer step (all processes and micro-batches)")
    train.add_argument("--grad-accum", type=_positive_int, help="micro-batches accumulated per step, per process")
    train.add_argument("--lr", type=_finite_float)
    train.add_argument("--warmup-steps", type=_non_negative_int)
    train.add_argument("--ema-decay", type=_finite_float)
    train.add_argument("--seed", type=_non_negative_int)
    train.add_argument("--checkpoint-every", type=_positive_int)
    train.add_argument("--preview-every", type=_positive_int)
    train.add_argument("--num-workers", type=_non_negative_int)
    train.add_argument("--precision", choices=("auto", "fp32", "bf16"))
    train.add_argument("--entropy-weight", type=_finite_float, help="stage 1: LFQ entropy loss weight")
    train.add_argument("--commit-weight", type=_finite_float, help="stage 1: LFQ commitment loss weight")
    train.add_argument("--foreground-weight", type=_finite_float,
                       help="stage 1: extra weight of foreground pixels (sparse content on a flat background)")
    train.add_argument("--halo-weight", type=_finite_float,
                       help="stage 1: extra weight of background pixels the reconstruction draws as foreground "
                            "(set it to --foreground-weight to keep objects from bloating)")
    train.add_argument("--decoder-only", action="store_true",
                       help="stage 1: fine-tune only the decoder of the --init-from model; its token ids stay the "
                            "same, so the transformer it carries keeps working and needs no retraining")
    train.add_argument("--log-every", type=_positive_int, help="steps between metrics.jsonl lines")
    train.add_argument("--device", default="auto")
    train.add_argument("--threads", type=_positive_int, help="CPU threads for torch")
    train.add_argument("--text-token-drop", type=_finite_float,
                       help="stage 2: hide each caption token but the first with this probability (0 to 1)")
    train.add_argument("--pooled-text-token", action="store_true", default=None,
                       help="stage 2: start the text condition with the prompt's mean-pooled sentence embedding "
                            "(helps wording the model never saw; kept by warm starts from such a model)")
    train.add_argument("--text-pooled-only", type=_finite_float, metavar="P",
                       help="stage 2, with --pooled-text-token: with this probability show a caption only "
                            "through its pooled token (0 to 1)")
    train.add_argument("--text-noise", type=_finite_float, metavar="SIGMA",
                       help="stage 2: add Gaussian noise of SIGMA times each caption token's RMS to its embedding")
    train.add_argument("--max-minutes", type=_finite_float, help="checkpoint and stop after this long")
    train.add_argument("--stop-at", type=_positive_int, metavar="STEP",
                       help="checkpoint and stop at this step; the schedule still runs to --steps (resume to go on)")
    train.add_argument("--no-resume", action="store_true", help="start over even if the run directory has a state")
    train.set_defaults(func=cmd_train)

    pre = sub.add_parser("precompute", help="tokenize a video folder and encode its captions once (stage-2 shards)")
    pre.add_argument("data_dir", help="a folder of captioned clips")
    pre.add_argument("out_dir", help="where the shards go")
    pre.add_argument("--tokenizer", required=True, help="the stage-1 bundle whose tokenizer (and text encoder) to use")
    pre.add_argument("--frames", type=_positive_int, help="frames per clip, 1 + k * temporal patch")
    pre.add_argument("--fps", type=_finite_float, help="sample clips at this frame rate")
    pre.add_argument("--data-seed", type=_non_negative_int, default=0)
    pre.add_argument("--batch-size", type=_positive_int, default=8)
    pre.add_argument("--shard-size", type=_positive_int, default=1024)
    pre.add_argument("--overwrite", action="store_true", help="replace existing shards in out_dir")
    pre.add_argument("--pooled-text-token", action="store_true",
                     help="encode captions with the pooled sentence token first, for `train --pooled-text-token`")
    pre.add_argument("--device", default="auto")
    pre.add_argument("--threads", type=_positive_int, help="CPU threads for torch")
    pre.set_defaults(func=cmd_precompute)

    ev = sub.add_parser("eval", help="measure a checkpoint on Shapes World, write a JSON report")
    ev.add_argument("--checkpoint", default=None)
    ev.add_argument("--seeds", type=_positive_int, default=2)
    ev.add_argument("--steps", type=_positive_int, default=18)
    ev.add_argument("--cond-scale", type=_finite_float, default=3.0)
    ev.add_argument("--remask", choices=REMASK_CHOICES, default=DEFAULT_REMASK, help=REMASK_HELP)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    ev.add_argument("--quick", action="store_true", help="a few prompts only (smoke test)")
    ev.add_argument("--tokenizer-only", action="store_true",
                    help="measure only the tokenizer: PSNR and how its reconstructions read (stage-1 runs)")
    ev.add_argument("--prompts-only", action="store_true",
                    help="measure only the canonical and held-out prompts (skip the tokenizer, chains and "
                         "diversity; about 40%% of the time)")
    ev.add_argument("--text-probe", action="store_true",
                    help="measure only the text encoder: how well linear probes fitted on the generator's "
                         "captions read the held-out wording (a ceiling for the held-out prompts; no video)")
    ev.add_argument("--t5-folder", help="the local folder of the T5 encoder a T5-conditioned checkpoint needs")
    ev.add_argument("--out", help="write the JSON report here")
    ev.set_defaults(func=cmd_eval)

    ex = sub.add_parser("export", help="re-save a bundle (e.g. EMA weights in fp16 for shipping)")
    ex.add_argument("source")
    ex.add_argument("target")
    ex.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp16")
    ex.add_argument("--note", help="a note stored in the bundle's metadata")
    ex.set_defaults(func=cmd_export)

    conv = sub.add_parser("convert", help="phenaki-pytorch .pt state dict -> bundle (reads weights_only=True)")
    conv.add_argument("source", help="the phenaki-pytorch Phenaki state dict (.pt)")
    conv.add_argument("target", help="output bundle (.safetensors)")
    conv.add_argument("--tokenizer", required=True, help="a bundle whose tokenizer and config to use")
    conv.set_defaults(func=cmd_convert)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not args.verbose:
        for noisy in ("transformers", "huggingface_hub", "httpx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        if args.command in ("generate", "eval", "train"):
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()  # the CLI owns the terminal; library use is untouched
    try:
        return args.func(args)
    except PhenakiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file-system problem the checks could not foresee (disk full, permissions, ...)
        logger.debug("file-system error", exc_info=True)
        what = f"cannot use {exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        print(f"error: {what}; check the path, its permissions and the free disk space", file=sys.stderr)
        return 1
    except FloatingPointError as exc:  # training diverged; the message says what to change
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
