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
import contextlib
import dataclasses
import json
import logging
import math
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from .checkpoint import DTYPES
from .errors import InputError, PhenakiError
from .sampling import REMASK_MODES, SamplerConfig

DEFAULT_REMASK = SamplerConfig().remask
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
    parser.add_argument("--remask", choices=REMASK_MODES, default=DEFAULT_REMASK, help=REMASK_HELP)
    parser.add_argument("--negative", default=None, help="negative prompt for guidance")
    parser.add_argument("--checkpoint", default=None, help="model bundle (.safetensors); default: the bundled model")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--dtype", default="auto", choices=("auto", *DTYPES))
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
    path = args.checkpoint or default_checkpoint()
    config, _, extra = read_metadata(path)
    _check_transformer_trained(path, extra)
    config.cvivit.check_num_frames(args.frames, "--frames")
    if args.frames > config.max_frames:
        raise InputError(f"--frames {args.frames} is more than this model attends over ({config.max_frames})")
    multi_scene = any(len(scenes) > 1 for scenes in stories)
    if multi_scene and args.prime_frames:
        check_prime_length(args.prime_frames, args.frames, config.cvivit.temporal_patch_size, "--prime-frames")


def _check_transformer_trained(path, extra: dict) -> None:
    """Refuse a bundle whose training history has no stage-2 run: its transformer makes noise."""
    history = extra.get("history")
    if not isinstance(history, list) or not history or "converted_from" in extra:
        return  # no record (a converted or hand-made bundle): nothing to judge by
    if not any(isinstance(h, dict) and h.get("stage") == "transformer" for h in history):
        raise InputError(f"{path} holds a trained tokenizer only: its transformer was never trained, so it would "
                         f"generate noise. Train stage 2 first: phenaki train transformer RUN_DIR --tokenizer {path}")


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
                                seed=seed, negative_prompt=args.negative, callback=progress,
                                compile=args.compile)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        return story

    if args.prompts:
        story = render(stories[0], args.seed)
        path = save_video(args.output, story.video[0], fps=story.fps)
        count = len(stories[0])
        print(f"wrote {path} ({story.video.shape[2]} frames, {count} scene{'s' if count != 1 else ''}, "
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
DEFAULT_PRESET = "shapes64"


def preset_table() -> str:
    """The presets, one line each: frame size, frames, tokens, parameters, text width, use."""
    import torch

    from .config import PRESETS
    from .phenaki import Phenaki
    rows = [("preset", "frames", "tokens/frame", "tokens/clip", "tokenizer", "transformer", "text", "for")]
    for name, size in PRESETS.items():
        config = size()
        with torch.device("meta"):  # counts parameters without allocating them
            model = Phenaki(config)
        cv = config.cvivit
        tokenizer = sum(p.numel() for p in model.cvivit.parameters())
        rest = sum(p.numel() for p in model.parameters()) - tokenizer
        grid = cv.image_size // cv.patch_size
        rows.append((name, f"{config.max_frames} x {cv.image_size}x{cv.image_size}", f"{grid}x{grid}",
                     str(cv.num_tokens(config.max_frames)), f"{tokenizer / 1e6:.2f}M", f"{rest / 1e6:.2f}M",
                     f"{config.maskgit.text_dim}-d", size.use))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows)


def _add_train_config_args(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field (but ``stage``), its help and default from the field."""
    from .training.config import TrainConfig
    for f in dataclasses.fields(TrainConfig):
        if f.name == "stage":
            continue
        meta, default, flag = f.metadata, f.default, "--" + f.name.replace("_", "-")
        shown = "off" if default is False else f"{default:g}" if isinstance(default, float) else default
        help_text = f"{meta['help']} (default: {shown})"
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif isinstance(default, int):
            parser.add_argument(flag, type=_int_at_least(int(meta["low"])), metavar="N", help=help_text)
        elif isinstance(default, float):
            parser.add_argument(flag, type=_finite_float, metavar="X", help=help_text)
        else:
            parser.add_argument(flag, choices=meta["choices"], help=help_text)


def _train_config(args):
    from .training import TrainConfig
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "stage"]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return TrainConfig(stage=args.stage, **given)


def _model_config(args):
    """The model to train: a resumed run's own; else --preset; else the --init-from bundle's, or in
    stage 2 the --tokenizer bundle's; else the default preset."""
    from .checkpoint import read_metadata
    from .config import PhenakiConfig, preset
    from .training import STATE_FILE
    from .training.state import read_state_header
    state = Path(args.run_dir) / STATE_FILE
    if not args.no_resume and state.is_file():
        config = PhenakiConfig.from_dict(read_state_header(state)[1]["model_config"])
        if args.preset and preset(args.preset) != config:
            logger.warning("%s continues its own model; --preset %s is ignored", args.run_dir, args.preset)
        return config
    if args.preset:
        config = preset(args.preset)
    else:
        bundle = args.init_from or (args.tokenizer if args.stage == "transformer" else None)
        config = read_metadata(bundle)[0] if bundle else preset(DEFAULT_PRESET)
    if args.pixel_refiner is not None:
        if args.stage != "tokenizer":
            raise InputError("--pixel-refiner changes the tokenizer's decoder: train it in stage 1 (tokenizer)")
        config = config.replace(cvivit=dataclasses.replace(config.cvivit, pixel_refiner=args.pixel_refiner))
    return config


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
        return _video_folder(args.data, args, model_config, seed=args.data_seed or 0), None
    return None, None


def _video_folder(root, args, model_config, seed: int, **settings):
    from .data.video_folder import VideoFolderConfig, VideoFolderDataset
    overrides = {k: v for k, v in {"num_frames": args.frames, "fps": args.fps}.items() if v is not None}
    config = VideoFolderConfig.for_model(model_config, **overrides, **settings)
    model_config.cvivit.check_num_frames(config.num_frames, "--frames")
    return VideoFolderDataset(root, config, seed=seed)


def _resume_command(argv: Sequence[str]) -> str:
    """The command that continues this run: the same one, without --stop-at and --no-resume."""
    from .training.distributed import launched_by_torchrun
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--stop-at":
            skip = True
        elif arg != "--no-resume" and not arg.startswith("--stop-at="):
            kept.append(arg)
    launcher = ["torchrun", "[your torchrun options]", "-m", "phenaki_core.cli"] if launched_by_torchrun() else ["phenaki"]
    return shlex.join([*launcher, *kept])


class _StopRequest(threading.Event):
    """Set by SIGINT/SIGTERM; ``signum`` says which."""

    signum: int = signal.SIGINT


@contextlib.contextmanager
def _save_on_signals(stop: _StopRequest):
    """SIGINT (Ctrl-C) and SIGTERM set ``stop``: the trainer checkpoints after the current step and
    returns. A second signal stops at once (KeyboardInterrupt), without saving."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.signum = signum
        stop.set()
        logger.warning("%s: saving a checkpoint after this step (again to stop at once, unsaved)",
                       signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_train(args) -> int:
    if args.list_presets:
        print(preset_table())
        return 0
    if not args.stage or not args.run_dir:
        raise InputError("give the stage and the run directory: phenaki train tokenizer|transformer RUN_DIR "
                         "(--list-presets shows the model sizes)")
    import torch

    from .pipeline import resolve_device
    from .training.distributed import init_distributed, launched_by_torchrun, shutdown_distributed

    train_config = _train_config(args)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = None
    if launched_by_torchrun():
        ctx = init_distributed(device.type)
        if device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
        if not ctx.is_main:  # rank 0 reports; the others would repeat every line
            logging.getLogger().setLevel(logging.ERROR)
    stop = _StopRequest()
    try:
        with _save_on_signals(stop):  # from here: a signal during the set-up stops before the first step
            result, trainer = _train(args, train_config, device, ctx, stop)
    finally:
        if ctx is not None:
            shutdown_distributed()
    if ctx is not None and not ctx.is_main:
        return 0
    return _report_training(args, trainer, result, stop)


def _train(args, train_config, device, ctx, stop: _StopRequest):
    """Build the data, text encoder and trainer; run. Returns (result, trainer)."""
    from .training import Trainer
    model_config = _model_config(args)
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
    result = trainer.run(max_minutes=args.max_minutes, stop_at=args.stop_at, on_step=_test_hold(stop), stop=stop)
    return result, trainer


def _report_training(args, trainer, result, stop: _StopRequest) -> int:
    """The result lines, and the exit status (128 + the signal's number when one stopped the run)."""
    steps = trainer.train_config.steps
    if result.finished_before:
        print(f"{args.run_dir} already finished: step {result.step} of {steps}; bundle at {result.bundle}. "
              f"To train on, raise --steps; to start over, add --no-resume or use another run directory")
        return 0
    if result.stopped == "signal" and result.step == trainer.start_step:
        print(f"stopped by {signal.Signals(stop.signum).name} before the first step (at step {result.step} of "
              f"{steps}): nothing new to save; resume with: {_resume_command(args.argv)}")
        return 128 + stop.signum
    print(f"step {result.step}: loss {result.last_loss:.4f}; bundle at {result.bundle}")
    if result.stopped is None:
        return 0
    why = {"signal": f"stopped by {signal.Signals(stop.signum).name}",
           "time": f"stopped after --max-minutes {args.max_minutes}",
           "stop_at": "stopped at --stop-at"}[result.stopped]
    print(f"{why} at step {result.step} of {steps}, checkpoint saved; resume with: {_resume_command(args.argv)}")
    return 128 + stop.signum if result.stopped == "signal" else 0


# For tests only: the crash-resume tests stop training mid-run by construction, not by timing.
TEST_HOLD_ENV = "PHENAKI_TEST_HOLD_AT_STEP"


def _test_hold(stop: threading.Event):
    """With ``PHENAKI_TEST_HOLD_AT_STEP=N`` set, the run computes step N and then waits, unsaved, until
    it is killed or signalled (SIGINT/SIGTERM set ``stop``: the run then saves step N and returns), so
    a test can stop it at a random moment without it ever reaching its last step. Not a user
    option: nothing else reads the variable."""
    value = os.environ.get(TEST_HOLD_ENV)
    if not value:
        return None
    hold = int(value)

    def on_step(step: int, loss: float) -> None:
        if step == hold:
            logger.warning("%s=%d: holding until killed", TEST_HOLD_ENV, hold)
            while not stop.is_set():
                time.sleep(0.05)
    return on_step


def cmd_precompute(args) -> int:
    import torch

    from .checkpoint import load_bundle
    from .data.shards import check_output_folder, precompute_shards
    from .pipeline import resolve_device
    check_output_folder(args.out_dir, args.overwrite)  # before the model loads
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    bundle = load_bundle(args.tokenizer)
    model = bundle.model.to(device)
    dataset = _video_folder(args.data_dir, args, model.config, seed=args.data_seed, offset=args.offset)
    encoder = None
    if not model.config.maskgit.unconditional:
        from .text import load_text_encoder
        encoder = load_text_encoder(bundle.text_encoder, device="cpu")
    index = precompute_shards(dataset, model, encoder, args.out_dir, batch_size=args.batch_size,
                              shard_size=args.shard_size, overwrite=args.overwrite)
    print(f"wrote {index.num_items} items in {len(index.shards)} shards to {args.out_dir}")
    return 0


# --- export -----------------------------------------------------------------------------------------
def cmd_export(args) -> int:
    from .checkpoint import load_bundle, save_bundle, with_decoder_from
    bundle = load_bundle(args.source)
    if args.decoder_from:
        bundle = with_decoder_from(bundle, load_bundle(args.decoder_from))
    dtype = DTYPES[args.dtype]
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
    if args.data:
        return _write_report(_eval_folder(args), args.out)
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


def _eval_folder(args) -> dict:
    """``eval --tokenizer-only --data FOLDER``: the tokenizer's reconstruction PSNR on the folder's clips."""
    if not args.tokenizer_only or args.prompts_only or args.text_probe:
        raise InputError("--data measures a tokenizer's reconstructions of your clips: pass it with --tokenizer-only "
                         "(and without --prompts-only/--text-probe)")
    from .checkpoint import load_bundle
    from .evaluation.reconstruction import folder_reconstruction
    from .pipeline import default_checkpoint, resolve_device
    device = resolve_device(args.device)
    path = args.checkpoint or default_checkpoint()
    bundle = load_bundle(path, device=device, dtype="fp32")
    dataset = _video_folder(args.data, args, bundle.model.config, seed=0, offset="center")
    started = time.time()
    report = folder_reconstruction(bundle.model.cvivit, dataset, device=device)
    return {"checkpoint": str(path), "data": str(dataset.root), "frames": dataset.config.num_frames,
            "fps": dataset.config.fps, "image_size": dataset.config.image_size, **report,
            "folder": dataset.report().summary(), "seconds": round(time.time() - started, 1)}


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


def _add_generate_parser(sub) -> None:
    gen = sub.add_parser("generate", help="prompts -> video; each prompt is a scene, chained by priming")
    gen.add_argument("prompts", nargs="*", help="one prompt per scene")
    gen.add_argument("-o", "--output", help="output file (.gif .webp .png .mp4) or a directory for PNG frames")
    gen.add_argument("--seed", type=_non_negative_int, default=0)
    gen.add_argument("--batch-file", help="one story per line, scenes separated by ' | '")
    gen.add_argument("--out-dir", help="output directory for --batch-file")
    gen.add_argument("--seeds", type=_positive_int, default=1, help="render each batch line with N seeds")
    gen.add_argument("--compile", action="store_true",
                     help="CUDA: record each scene's sampling once as CUDA graphs and replay them (fastest for "
                          "several stories or seeds; the first scene of a shape records); ignored on the CPU")
    _add_sampling_args(gen)
    gen.set_defaults(func=cmd_generate)


def _add_train_parser(sub) -> None:
    train = sub.add_parser("train", help="train stage 1 (tokenizer) or stage 2 (transformer); torchrun for several "
                                         "processes",
                           description="Train stage 1 (tokenizer) or stage 2 (transformer). Re-running the same "
                                       "command resumes; Ctrl-C and SIGTERM save a checkpoint first.")
    train.add_argument("stage", nargs="?", choices=("tokenizer", "transformer"),
                       help="tokenizer (stage 1: C-ViViT) or transformer (stage 2: MaskGit and critic)")
    train.add_argument("run_dir", nargs="?", help="run directory (checkpoints, previews, metrics); resumes if present")
    train.add_argument("--list-presets", action="store_true", help="show the model presets and exit")
    train.add_argument("--preset", help=f"model size (--list-presets). Default: a resumed run's own model; else "
                                        f"the --init-from bundle's, or in stage 2 the --tokenizer bundle's; else "
                                        f"{DEFAULT_PRESET}")
    train.add_argument("--tokenizer", metavar="BUNDLE", help="stage 2: the stage-1 bundle whose tokenizer to freeze")
    train.add_argument("--init-from", metavar="BUNDLE", help="warm-start from a bundle with the same architecture")
    train.add_argument("--pixel-refiner", type=_non_negative_int, metavar="K",
                       help="stage 1: give the decoder a pixel refiner of width K (0: none); added to an --init-from "
                            "model without one, it starts as the identity (with --decoder-only the token ids stay)")
    train.add_argument("--data", metavar="FOLDER", help="a folder of captioned clips to train on (default: Shapes World)")
    train.add_argument("--shards", metavar="FOLDER", help="stage 2: token shards written by `phenaki precompute`")
    train.add_argument("--frames", type=_positive_int, metavar="N", help="--data: frames per clip, 1 + k * temporal patch "
                                                             "(default: 17, or fewer if the model makes fewer)")
    train.add_argument("--fps", type=_finite_float, metavar="X", help="--data: sample clips at this frame rate (default: the "
                                                          "model's)")
    settings = train.add_argument_group("training settings (TrainConfig; a resumed run keeps its own, but for "
                                        "--steps, --grad-accum, --num-workers and the intervals)")
    _add_train_config_args(settings)
    train.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    train.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads for torch (default: torch's choice)")
    train.add_argument("--max-minutes", type=_finite_float, metavar="X", help="checkpoint and stop after this long")
    train.add_argument("--stop-at", type=_positive_int, metavar="STEP",
                       help="checkpoint and stop at this step; the schedule still runs to --steps (resume to go on)")
    train.add_argument("--no-resume", action="store_true", help="start over even if the run directory has a state")
    train.set_defaults(func=cmd_train)


def _add_precompute_parser(sub) -> None:
    pre = sub.add_parser("precompute", help="tokenize a video folder and encode its captions once (stage-2 shards)")
    pre.add_argument("data_dir", help="a folder of captioned clips")
    pre.add_argument("out_dir", help="where the shards go")
    pre.add_argument("--tokenizer", required=True, help="the stage-1 bundle whose tokenizer (and text encoder) to use")
    pre.add_argument("--frames", type=_positive_int, help="frames per clip, 1 + k * temporal patch (default: 17, "
                                                           "or fewer if the model makes fewer)")
    pre.add_argument("--fps", type=_finite_float, help="sample clips at this frame rate (default: the model's)")
    pre.add_argument("--offset", choices=("random", "start", "center"), default="random",
                     help="where in each clip the window starts: drawn once with --data-seed, the first or the "
                          "middle possible frame; frozen into the shards (default: random)")
    pre.add_argument("--data-seed", type=_non_negative_int, default=0, help="the random offsets (default: 0)")
    pre.add_argument("--batch-size", type=_positive_int, default=8, help="clips tokenized at once (default: 8)")
    pre.add_argument("--shard-size", type=_positive_int, default=1024, help="clips per shard file (default: 1024)")
    pre.add_argument("--overwrite", action="store_true", help="replace existing shards in out_dir")
    pre.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    pre.add_argument("--threads", type=_positive_int, help="CPU threads for torch")
    pre.set_defaults(func=cmd_precompute)


def _add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="measure a checkpoint on Shapes World (or a tokenizer on your clips), write a "
                                     "JSON report")
    ev.add_argument("--checkpoint", default=None)
    ev.add_argument("--seeds", type=_positive_int, default=2)
    ev.add_argument("--steps", type=_positive_int, default=18)
    ev.add_argument("--cond-scale", type=_finite_float, default=3.0)
    ev.add_argument("--remask", choices=REMASK_MODES, default=DEFAULT_REMASK, help=REMASK_HELP)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--dtype", default="auto", choices=("auto", *DTYPES))
    ev.add_argument("--quick", action="store_true", help="a few prompts only (smoke test)")
    ev.add_argument("--tokenizer-only", action="store_true",
                    help="measure only the tokenizer: PSNR and how its reconstructions read (stage-1 runs); "
                         "with --data, its PSNR on your clips")
    ev.add_argument("--data", metavar="FOLDER",
                    help="with --tokenizer-only: measure reconstruction on this folder of clips instead of "
                         "Shapes World (keep some clips out of training for an honest number)")
    ev.add_argument("--frames", type=_positive_int, help="--data: frames per clip (default: 17, or fewer if the "
                                                          "model makes fewer)")
    ev.add_argument("--fps", type=_finite_float, help="--data: sample clips at this frame rate (default: the "
                                                       "model's)")
    ev.add_argument("--prompts-only", action="store_true",
                    help="measure only the canonical, shade and held-out prompts (skip the tokenizer, chains and "
                         "diversity; about 40%% of the time)")
    ev.add_argument("--text-probe", action="store_true",
                    help="measure only the text encoder: how well linear probes fitted on Shapes World's "
                         "captions read the held-out wording (a ceiling for the held-out prompts; no video)")
    ev.add_argument("--t5-folder", help="the local folder of the T5 encoder a T5-conditioned checkpoint needs")
    ev.add_argument("--out", help="write the JSON report here")
    ev.set_defaults(func=cmd_eval)


def _add_export_parser(sub) -> None:
    ex = sub.add_parser("export", help="re-save a bundle (e.g. EMA weights in fp16 for shipping)")
    ex.add_argument("source")
    ex.add_argument("target")
    ex.add_argument("--dtype", choices=tuple(DTYPES), default="fp16")
    ex.add_argument("--note", help="a note stored in the bundle's metadata")
    ex.add_argument("--decoder-from", metavar="BUNDLE",
                    help="take the tokenizer's decoder from this bundle: a --decoder-only run of the source's own "
                         "tokenizer (the encoders must be identical, so the token ids keep their meaning)")
    ex.set_defaults(func=cmd_export)


def _add_convert_parser(sub) -> None:
    conv = sub.add_parser("convert", help="phenaki-pytorch .pt state dict -> bundle (reads weights_only=True)")
    conv.add_argument("source", help="the phenaki-pytorch Phenaki state dict (.pt)")
    conv.add_argument("target", help="output bundle (.safetensors)")
    conv.add_argument("--tokenizer", required=True, help="a bundle whose tokenizer and config to use")
    conv.set_defaults(func=cmd_convert)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="phenaki", description="Phenaki text-to-video (phenaki_core)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_generate_parser, _add_train_parser, _add_precompute_parser, _add_eval_parser,
                _add_export_parser, _add_convert_parser):
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not args.verbose:
        for noisy in ("transformers", "huggingface_hub", "httpx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        if args.command in ("generate", "eval", "train", "precompute"):
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
        saved = " (the run directory keeps its last checkpoint: re-run the command to resume)" \
            if args.command == "train" else ""
        print(f"error: interrupted{saved}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
