"""Glue between the node classes and ``phenaki_core``: loading and caching, input checks, priming,
progress/preview/cancel per sampling step, and IMAGE <-> video layout.

Layouts: ComfyUI IMAGE is ``[frames, H, W, C]`` float in 0..1; phenaki_core video is
``(b, c, f, H, W)``. Every check that can fail runs before a model is moved to its device.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import weakref
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from . import comfy_adapter as adapter
from .sockets import ManagedModules, PhenakiCond, PhenakiModel, PhenakiTokens
from ..phenaki_core import (CheckpointError, InputError, PhenakiConfig, PhenakiError, PhenakiPipeline, SamplerConfig,
                            SamplerStep, Story, TextCondition, default_checkpoint, fit_video, read_metadata)
from ..phenaki_core.checkpoint import DTYPES
from ..phenaki_core.guided import sample_ids
from ..phenaki_core.pipeline import check_prime_length, check_seed, resolve_device, resolve_dtype
from ..phenaki_core.sampling import REMASK_MODES
from ..phenaki_core.text import clean_prompts
from ..phenaki_core.validation import is_int, is_number
from ..phenaki_core.video_io import contact_sheet, to_uint8_frames

logger = logging.getLogger("phenaki_comfyui")

BUNDLED = "(bundled) shapes64"
CHECKPOINT_SUFFIX = ".safetensors"
PREVIEWS_PER_SCENE = 6  # at most this many decoded previews while one scene samples
EXAMPLE_CLIP_FPS = 8.0  # the example clips are Shapes World clips, made at 8 fps
CROP_MODES = ("center", "pad", "fit")  # Encode Video: how a frame becomes the model's square

# Loaded models, reused while anything (ComfyUI's output cache, a node) still holds them.
_loaded: "weakref.WeakValueDictionary[tuple, PhenakiModel]" = weakref.WeakValueDictionary()


# --- loading -------------------------------------------------------------------------------------
def checkpoint_choices() -> list[str]:
    """The loader's list: the bundled model first, then every .safetensors in models/phenaki."""
    return [BUNDLED] + [n for n in adapter.list_model_files() if n.lower().endswith(CHECKPOINT_SUFFIX)]


def checkpoint_path(name: str) -> Path:
    if name == BUNDLED:
        try:
            return default_checkpoint()
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}. In ComfyUI: update or reinstall the Phenaki pack, or pick a checkpoint "
                                  f"from models/phenaki") from None
    path = adapter.model_file_path(name)
    if path is None:
        raise CheckpointError(f"checkpoint {name!r} is not in the phenaki model folder (models/phenaki); "
                              f"put the .safetensors file there and refresh, or pick {BUNDLED!r}")
    return Path(path)


def checkpoint_fingerprint(name: str) -> tuple:
    """What identifies a checkpoint's contents without reading it: path, mtime and size (the name
    alone when it cannot be found, and the loader then says why, or when a link feeds it: None)."""
    if not isinstance(name, str):
        return (name,)
    try:
        path = checkpoint_path(name)
        stat = path.stat()
    except (PhenakiError, OSError):
        return (name,)
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return adapter.load_device()
    if device == "cuda" and adapter.load_device().type == "cuda":
        return adapter.load_device()  # the GPU ComfyUI was started on
    return resolve_device(device)


def load_model(ckpt_name: str, device: str = "auto", dtype: str = "auto", t5_folder: str = "") -> PhenakiModel:
    """Load a checkpoint and the text encoder it names, or reuse it if it is already loaded."""
    path = checkpoint_path(ckpt_name)
    load = pick_device(device)
    torch_dtype = resolve_dtype(dtype, load)
    t5_folder = t5_folder.strip() or None
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(load), torch_dtype, t5_folder)
    model = _loaded.get(key)
    if model is not None:
        return model
    offload = adapter.offload_device(load)
    pipeline = PhenakiPipeline.from_checkpoint(path, device=offload, dtype=torch_dtype, t5_folder=t5_folder)
    model = PhenakiModel(pipeline, ckpt_name, path, load, torch_dtype)
    model.patcher = adapter.manage_modules(ManagedModules(pipeline), load, offload)
    _loaded[key] = model
    return model


def ready(*models: PhenakiModel) -> None:
    """Bring the models onto their devices (through ComfyUI's model management when present)."""
    adapter.load_modules(m.patcher for m in models)


# --- checks --------------------------------------------------------------------------------------
def frames_word(count: int) -> str:
    return f"{count} frame" if count == 1 else f"{count} frames"


def check_frames(config: PhenakiConfig, frames: int, what: str = "frames") -> None:
    """A clip length the model can make at once (``what``: the widget's name, which names the node)."""
    config.cvivit.check_num_frames(frames, what)
    limit = config.max_frames
    if frames > limit:
        if what == "frames_per_scene":
            raise InputError(f"frames_per_scene is {frames} but this model makes at most {limit} frames per scene; "
                             f"use at most {limit}, and add scenes (one prompt per line) for a longer video")
        raise InputError(f"{what} is {frames} but this model makes at most {limit} frames at once; use at most "
                         f"{limit}, or Phenaki Chain Scenes for a longer video")


def check_prime_frames(config: PhenakiConfig, prime_frames: int, frames: int, what: str = "frames") -> None:
    """``prime_frames`` of a scene of ``frames`` frames, when a prime is connected or carried."""
    if is_int(prime_frames) and 0 < frames <= prime_frames:
        raise InputError(f"prime_frames ({prime_frames}) must be shorter than the scene ({what} is {frames}), "
                         f"or the scene has nothing new to generate")
    check_prime_length(prime_frames, frames, config.cvivit.temporal_patch_size, "prime_frames")


def check_prime_setting(config: PhenakiConfig, prime_frames: int, frames: int, what: str = "frames") -> None:
    """``prime_frames`` when a prime is connected: not 0, and a valid prime for the scene."""
    if prime_frames == 0:
        raise InputError("prime_frames is 0 but a prime is connected; set prime_frames to the number of frames "
                         "to continue from (e.g. 5), or disconnect the prime for a fresh scene")
    check_prime_frames(config, prime_frames, frames, what)


def check_prime(model: PhenakiModel, prime: PhenakiTokens, prime_frames: int, frames: int,
                what: str = "frames") -> None:
    check_prime_setting(model.config, prime_frames, frames, what)
    if prime_frames > prime.num_frames:
        raise InputError(f"prime_frames ({prime_frames}) is longer than the prime clip "
                         f"({frames_word(prime.num_frames)}); use at most {prime.num_frames}")


def check_prompt(prompt: str) -> str:
    """Encode Text's one prompt, cleaned (line breaks become spaces)."""
    if isinstance(prompt, str) and not prompt.strip():
        raise InputError("prompt is empty; describe the scene, e.g. 'a red circle moving right'")
    return clean_prompts(prompt)[0]


# --- checks before the graph runs (validate_inputs) -----------------------------------------------
_configs: dict[tuple, PhenakiConfig] = {}  # (path, mtime, size) -> config read from the file's header


def listed_configs() -> list[PhenakiConfig]:
    """The configs of every checkpoint Load Phenaki offers, one per distinct frame rule.

    Only the files' headers are read (and cached). Files that cannot be read are skipped: the
    loader reports them when they are picked.
    """
    rules: dict[tuple[int, int], PhenakiConfig] = {}
    for name in checkpoint_choices():
        try:
            path = checkpoint_path(name)
            stat = path.stat()
            key = (str(path), stat.st_mtime_ns, stat.st_size)
            if key not in _configs:
                _configs[key] = read_metadata(path)[0]
        except (PhenakiError, OSError) as exc:
            logger.debug("pre-run checks skip %s: %s", name, exc)
            continue
        config = _configs[key]
        rules.setdefault((config.cvivit.temporal_patch_size, config.max_frames), config)
    return list(rules.values())


def precheck(check: Callable[[PhenakiConfig], None]) -> Optional[str]:
    """Run a frame check before the graph runs, when the model (a linked input) is not known yet.

    The check passes when it passes for any checkpoint the loader lists, so a valid graph is never
    refused; with one frame rule (the bundled model alone, say) it catches exactly what the node
    would refuse when it runs, with the same message. Returns that message, or None.
    """
    errors = []
    for config in listed_configs():
        try:
            check(config)
            return None
        except PhenakiError as exc:
            errors.append(str(exc))
    return errors[0] if errors else None


def text_for(model: PhenakiModel, cond: PhenakiCond) -> tuple[Optional[TextCondition], Optional[TextCondition]]:
    """The cond's (text, negative) for ``model``; a clear error when they do not belong together."""
    spec = model.text_spec
    if spec is None:
        logger.warning("%s is unconditional; the prompt %r is ignored", model.name, cond.prompt)
        return None, None
    if cond.text is None or cond.encoder is None:
        raise InputError(f"this PHENAKI_COND holds no text (it was encoded with an unconditional model), but "
                         f"{model.name} needs a prompt; encode the prompt with this model's Phenaki Encode Text")
    if not spec.matches(cond.encoder):
        raise InputError(f"the prompt was encoded with {cond.encoder.describe()} but {model.name} needs "
                         f"{spec.describe()}; feed this model into the Phenaki Encode Text node")
    return cond.text, cond.negative


DEFAULT_REMASK = SamplerConfig().remask


def sampler_config(steps: int, cond_scale: float, temperature: float, critic_noise: float,
                   remask: Optional[str] = None) -> SamplerConfig:
    """The nodes' sampling widgets -> SamplerConfig; ``remask`` None (a graph without that input) takes the default."""
    extra = {} if remask is None else {"remask": remask}
    return SamplerConfig(steps=steps, cond_scale=cond_scale, temperature=temperature, critic_noise=critic_noise, **extra)


# --- progress ------------------------------------------------------------------------------------
class StepProgress:
    """Per sampling step: check Cancel, advance the progress bar, now and then a decoded preview.

    Previews (only when the user has live previews on) come every ``ceil(steps / 6)`` steps, never
    after the last step of a Sample Scene: its output follows at once. Each shows the clip with
    the prime it continues (``SamplerStep.prime``).
    """

    def __init__(self, model: PhenakiModel, steps: int, scenes: int = 1):
        self.model = model
        self.steps = steps
        self.bar = adapter.ProgressBar(steps * scenes)
        self.every = -(-steps // PREVIEWS_PER_SCENE) if adapter.previews_enabled() else 0  # ceil: <= 6 per scene

    def __call__(self, step: SamplerStep, scene: int = 0) -> None:
        adapter.check_interrupted()
        preview = None
        if self.every and (step.step + 1) % self.every == 0 and step.step + 1 < step.steps:
            preview = self.preview(step)
        self.bar.update_absolute(scene * self.steps + step.step + 1, None, preview)

    def scene_callback(self, scene: int, step: SamplerStep) -> None:
        self(step, scene)

    @torch.no_grad()
    def decode(self, step: SamplerStep) -> torch.Tensor:
        """The first clip's current tokens, after its prime's -> (c, f, H, W)."""
        cvivit = self.model.pipeline.model.cvivit
        grid = cvivit.config.grid_size
        ids = step.ids[:1].view(1, -1, grid, grid)
        if step.prime is not None:
            ids = torch.cat((step.prime[:1].to(ids), ids), dim=1)
        return cvivit.decode_from_ids(ids)[0].float()

    def preview(self, step: SamplerStep) -> tuple[str, Image.Image, int]:
        return self.sheet(self.decode(step))

    @staticmethod
    def sheet(video: torch.Tensor) -> tuple[str, Image.Image, int]:
        """(c, f, H, W) -> ComfyUI's preview: a contact sheet of the frames."""
        return "JPEG", Image.fromarray(contact_sheet(to_uint8_frames(video))), adapter.preview_max_size()


class StoryProgress(StepProgress):
    """Chain Scenes' progress: a preview also after each scene's last step (the finished scene with
    its prime, exactly as the pipeline decodes it), as the next scene starts from it."""

    def scene_callback(self, scene: int, step: SamplerStep) -> None:
        adapter.check_interrupted()
        preview = None
        if self.every and (step.step + 1 == step.steps or (step.step + 1) % self.every == 0):
            preview = self.preview(step)
        self.bar.update_absolute(scene * self.steps + step.step + 1, None, preview)


# --- the node bodies -----------------------------------------------------------------------------
def encode_text(model: PhenakiModel, prompt: str, negative_prompt: str = "") -> PhenakiCond:
    prompt = check_prompt(prompt)
    negative_prompt = " ".join(negative_prompt.split())
    if model.text_spec is None:
        logger.warning("%s is unconditional; the prompt is ignored", model.name)
        return PhenakiCond(prompt, negative_prompt, None, None, None)
    ready(model)
    pipeline = model.pipeline
    text = pipeline.encode_text([prompt]).to("cpu")
    negative = pipeline.encode_text([negative_prompt]).to("cpu") if negative_prompt else None
    return PhenakiCond(prompt, negative_prompt, text, negative, model.text_spec)


def prime_video(tokens: PhenakiTokens) -> torch.Tensor:
    """The prime clip's pixels (b, c, f, H, W) in [0, 1] on the CPU: its source frames, or decoded."""
    if tokens.source is not None:
        return tokens.source
    ready(tokens.model)
    return tokens.model.pipeline.decode(tokens.ids).cpu()


def prime_ids(model: PhenakiModel, prime: PhenakiTokens, prime_frames: int) -> torch.Tensor:
    """Token ids of the prime's last ``prime_frames`` frames, encoded by ``model``'s tokenizer.

    A whole clip from the same model is reused as it is. A tail is decoded (or taken from the
    clip's source frames) and re-encoded, as scene chaining does: the tail's tokens are not a
    suffix of the clip's. This also lets one model continue another model's clip.
    """
    if prime.model is model and prime_frames == prime.num_frames:
        return prime.ids
    clip = prime_video(prime)[:, :, -prime_frames:]
    ready(model)
    return model.pipeline.encode_video(clip)


def sample_scene(model: PhenakiModel, cond: PhenakiCond, frames: int, sampler: SamplerConfig, seed: int,
                 prime: Optional[PhenakiTokens] = None, prime_frames: int = 0) -> PhenakiTokens:
    """One scene of ``frames`` frames, its first ``prime_frames`` taken from ``prime`` when given."""
    check_frames(model.config, frames)
    check_seed(seed)
    if prime is None:
        prime_frames = 0
    else:
        check_prime(model, prime, prime_frames, frames)
    text, negative = text_for(model, cond)
    primed = prime_ids(model, prime, prime_frames) if prime_frames else None
    ready(model)
    pipeline = model.pipeline
    progress = StepProgress(model, sampler.steps)
    ids = sample_ids(pipeline.model, text, num_frames=frames - prime_frames, prime_ids=primed, negative=negative,
                     sampler=sampler, generator=pipeline.generator(seed), callback=progress)
    return PhenakiTokens(ids.cpu(), model, prime_frames)


def story_prompts(prompts: str) -> list[str]:
    if not isinstance(prompts, str):
        raise InputError(f"prompts must be text (one prompt per line), got {type(prompts).__name__}")
    lines = [line.strip() for line in prompts.splitlines() if line.strip()]
    if not lines:
        raise InputError("prompts is empty; write one prompt per line, one line per scene")
    return clean_prompts(lines)


def check_story(config: PhenakiConfig, scenes: int, frames: int, prime_frames: int) -> None:
    check_frames(config, frames, "frames_per_scene")
    if scenes > 1:
        check_prime_frames(config, prime_frames, frames, "frames_per_scene")


def chain_scenes(model: PhenakiModel, prompts: str, frames: int, prime_frames: int, sampler: SamplerConfig,
                 seed: int, negative_prompt: str = "", prime: Optional[PhenakiTokens] = None) -> Story:
    """A story: one scene per prompt line, each primed with the last ``prime_frames`` of the one before."""
    scenes = story_prompts(prompts)
    check_story(model.config, len(scenes), frames, prime_frames)
    check_seed(seed)
    initial = None
    if prime is not None:
        check_prime(model, prime, prime_frames, frames, "frames_per_scene")
        initial = prime_video(prime)[:, :, -prime_frames:]
    ready(model)
    progress = StoryProgress(model, sampler.steps, len(scenes))
    return model.pipeline.make_video(scenes, num_frames=frames, prime_frames=prime_frames, sampler=sampler,
                                     seed=seed, negative_prompt=" ".join(negative_prompt.split()) or None,
                                     initial_prime=initial, callback=progress.scene_callback)


def check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"expected IMAGE frames [frames, height, width, channels], got {shape}")
    if images.shape[0] == 0:
        raise InputError("the IMAGE batch has no frames")
    if images.shape[-1] not in (1, 3, 4):
        raise InputError(f"IMAGE has {images.shape[-1]} channels; use RGB (3) or RGBA (4) frames")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise InputError(f"IMAGE frames are {images.shape[2]}x{images.shape[1]} pixels; connect non-empty frames")
    if not images.is_floating_point():
        raise InputError(f"IMAGE is {images.dtype}, not float frames in 0..1; connect a node that outputs IMAGE "
                         f"(Load Image, Get Video Components, ...)")
    if not bool(torch.isfinite(images).all()):
        raise InputError("IMAGE holds NaN or infinite values; check the nodes that made these frames")


def images_to_video(images: torch.Tensor) -> torch.Tensor:
    """IMAGE [f, H, W, C] (C = 1, 3 or 4) -> (1, 3, f, H, W) float32 in [0, 1] on the CPU."""
    check_images(images)
    images = images[..., :3] if images.shape[-1] == 4 else images.expand(-1, -1, -1, 3)  # RGBA and grey -> RGB
    return images.detach().to("cpu", torch.float32).clamp(0, 1).permute(3, 0, 1, 2).unsqueeze(0)


def resample_indices(count: int, source_fps: float, target_fps: float) -> list[int]:
    """Which of ``count`` frames at ``source_fps`` to show at ``target_fps``, the last frame kept.

    Frame k from the end of the result shows the source at time ``end - k / target_fps`` (the
    nearest frame): 24 fps to 8 fps keeps every third frame, 4 fps to 8 fps shows each frame twice.
    """
    ratio = source_fps / target_fps  # source frames per model frame
    indices = []
    k = 0
    while True:
        position = (count - 1) - k * ratio
        if position < -0.5 + 1e-6:
            break
        indices.append(max(0, int(math.floor(position + 0.5))))
        k += 1
    return indices[::-1]


def fit_frames(video: torch.Tensor, size: int, crop: str) -> tuple[torch.Tensor, str]:
    """(b, c, f, H, W) -> (b, c, f, size, size) and what was done, in words.

    center: resize the short side to ``size`` and cut the long side's ends (``fit_video``);
    pad: resize the long side to ``size`` and add black bars; fit: stretch the whole frame.
    """
    if crop not in CROP_MODES:
        raise InputError(f"unknown crop {crop!r}; use one of {', '.join(CROP_MODES)}")
    b, c, f, h, w = video.shape
    if h == w:
        return fit_video(video, size), (f"{w}x{h} resized to {size}x{size}" if h != size else f"{w}x{h} as is")
    if crop == "center":
        side = min(h, w)
        cut = (max(h, w) - side) / 2
        where = "left and right" if w > h else "top and bottom"
        resized = f", resized to {size}x{size}" if side != size else ""
        return fit_video(video, size), (f"{w}x{h} centre-cropped to its middle {side}x{side} (about {cut:.0f} px "
                                        f"cut at the {where}){resized}")
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w).float()
    if crop == "fit":
        frames = torch.nn.functional.interpolate(frames, size=(size, size), mode="bilinear", antialias=True,
                                                 align_corners=False)
        note = f"{w}x{h} stretched to {size}x{size} (the whole frame, aspect ratio not kept)"
    else:
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        inner = torch.nn.functional.interpolate(frames, size=(nh, nw), mode="bilinear", antialias=True,
                                                align_corners=False)
        frames = frames.new_zeros(b * f, c, size, size)
        top, left = (size - nh) // 2, (size - nw) // 2
        frames[:, :, top:top + nh, left:left + nw] = inner
        where = "top and bottom" if w > h else "left and right"
        note = f"{w}x{h} resized to {nw}x{nh} and padded to {size}x{size} with black bars at the {where}"
    frames = frames.clamp(0, 1).reshape(b, f, c, size, size).permute(0, 2, 1, 3, 4)
    return frames, note


def encode_images(model: PhenakiModel, images: torch.Tensor, crop: str = "center",
                  source_fps: float = 0.0) -> tuple[PhenakiTokens, str]:
    """A user's clip -> tokens usable as a prime, and a one-line report of what was kept.

    Rules, in order:
    1. ``source_fps`` > 0 and not the model's rate: the clip is resampled to the model's rate
       (nearest frame, the last frame kept), so a continuation moves at the clip's speed.
    2. The clip keeps its LAST ``1 + k*pt`` frames, at most the model's ``max_frames`` (the end is
       what a continuation starts from, and no prime can be longer).
    3. Each frame becomes the model's square: ``crop`` center, pad or fit (see ``fit_frames``).
    """
    check_images(images)
    if crop not in CROP_MODES:
        raise InputError(f"unknown crop {crop!r}; use one of {', '.join(CROP_MODES)}")
    if not is_number(source_fps, 0):
        raise InputError(f"source_fps must be a frame rate >= 0 (0: the frames are already at the model's rate), "
                         f"got {source_fps!r}")
    config = model.config
    pt = config.cvivit.temporal_patch_size
    total = images.shape[0]
    notes = []
    order = list(range(total))
    if source_fps and abs(source_fps - config.fps) > 1e-3:
        order = resample_indices(total, float(source_fps), float(config.fps))
        notes.append(f"resampled {source_fps:g} fps to the model's {config.fps:g} fps ({frames_word(total)} -> "
                     f"{len(order)})")
    count = len(order)
    keep = min(1 + (count - 1) // pt * pt, config.max_frames)
    if keep < count:
        notes.append(f"kept the last {frames_word(keep)} of {count}, dropped {count - keep} from the start (clips "
                     f"have 1 + k*{pt} frames, at most {config.max_frames})")
    else:
        notes.append(f"kept all {frames_word(keep)}" if keep > 1 else "kept the one frame")
    order = order[count - keep:]
    video = images_to_video(images[order] if order != list(range(total)) else images)
    video, fitted = fit_frames(video, config.cvivit.image_size, crop)
    notes.append(fitted)
    report = "Phenaki Encode Video: " + "; ".join(notes)
    if keep < count or "cut" in fitted:
        logger.warning("%s", report)
    else:
        logger.info("%s", report)
    ready(model)
    ids = model.pipeline.encode_video(video)
    return PhenakiTokens(ids.cpu(), model, 0, source=video), report


def video_to_images(video: torch.Tensor) -> torch.Tensor:
    """(b, c, f, H, W) -> IMAGE [b*f, H, W, c] on ComfyUI's intermediate device and dtype."""
    images = video.permute(0, 2, 3, 4, 1).flatten(0, 1).clamp(0, 1)
    return images.to(adapter.intermediate_device(), adapter.intermediate_dtype()).contiguous()


def decode_tokens(tokens: PhenakiTokens, include_prime: bool = True) -> torch.Tensor:
    ready(tokens.model)
    video = tokens.model.pipeline.decode(tokens.ids)
    if not include_prime:
        video = video[:, :, tokens.prime_frames:]
    return video_to_images(video)


# --- the example clip and picture -----------------------------------------------------------------
EXAMPLE_CLIPS = Path(__file__).resolve().parent / "example_clips"
EXAMPLE_IMAGE = EXAMPLE_CLIPS / "phenaki_example_image.png"  # the image-to-video template's Load Image


def example_clip_choices() -> list[str]:
    return sorted(p.name for p in EXAMPLE_CLIPS.glob("*.gif")) if EXAMPLE_CLIPS.is_dir() else []


def load_example_clip(name: str) -> tuple[torch.Tensor, float]:
    """One of the pack's example clips: IMAGE [f, H, W, 3] and its frame rate."""
    path = EXAMPLE_CLIPS / name
    if name not in example_clip_choices():
        raise InputError(f"no example clip {name!r} in the pack (nodes/example_clips); pick one of "
                         f"{', '.join(example_clip_choices()) or 'none: reinstall the pack'}")
    frames = []
    with Image.open(path) as image:
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            frames.append(torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255))
    # GIF stores delays in 10 ms steps (125 ms is written as 120 or 130): the rate is the clip's, not the file's
    return video_to_images(torch.stack(frames).permute(3, 0, 1, 2).unsqueeze(0)), EXAMPLE_CLIP_FPS


def provide_example_image(input_dir: Optional[str]) -> Optional[Path]:
    """Copy the pack's example picture into ComfyUI's input folder, where Load Image looks, so the
    image-to-video template runs as opened. Only when no file of that name is there: a file the
    user put (or replaced) there is never overwritten. The copy is written to a temporary name and
    renamed, so Load Image never lists a half-written file. Returns the path, or None when there is
    no input folder or it cannot be written (logged in one line; the other templates still work)."""
    if not input_dir:
        return None
    target = Path(input_dir) / EXAMPLE_IMAGE.name
    if os.path.lexists(target):
        return target
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EXAMPLE_IMAGE, partial)
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        logger.warning("Phenaki: could not copy the example picture into ComfyUI's input folder (%s); the "
                       "image-to-video template needs a picture picked in Load Image", exc)
        return None
    logger.info("Phenaki: copied the example picture %s into ComfyUI's input folder", target.name)
    return target
