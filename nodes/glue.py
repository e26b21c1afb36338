"""Glue between the node classes and ``phenaki_core``: loading and caching, input checks, priming,
progress/preview/cancel per sampling step, and IMAGE <-> video layout.

Layouts: ComfyUI IMAGE is ``[frames, H, W, C]`` float in 0..1; phenaki_core video is
``(b, c, f, H, W)``. Every check that can fail runs before a model is moved to its device.
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Optional

import torch
from PIL import Image

from . import comfy_adapter as adapter
from .sockets import ManagedModules, PhenakiCond, PhenakiModel, PhenakiTokens
from ..phenaki_core import (CheckpointError, InputError, PhenakiPipeline, SamplerConfig, SamplerStep, Story,
                            TextCondition, default_checkpoint, fit_video)
from ..phenaki_core.pipeline import check_prime_length, check_seed, resolve_device, resolve_dtype
from ..phenaki_core.sampling import REMASK_MODES
from ..phenaki_core.text import clean_prompts
from ..phenaki_core.video_io import contact_sheet, to_uint8_frames

logger = logging.getLogger("phenaki_comfyui")

BUNDLED = "(bundled) shapes64"
CHECKPOINT_SUFFIX = ".safetensors"
PREVIEWS_PER_SCENE = 6  # fewer decoded previews than this while one scene samples

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
def check_frames(model: PhenakiModel, frames: int, what: str = "frames") -> None:
    config = model.config
    config.cvivit.check_num_frames(frames, what)
    if frames > config.max_frames:
        raise InputError(f"{what} is {frames} but this model makes at most {config.max_frames} frames at once; "
                         f"use fewer frames, or Phenaki Chain Scenes for a longer video")


def check_prime(model: PhenakiModel, prime: PhenakiTokens, prime_frames: int, frames: int) -> None:
    if prime_frames < 1:
        raise InputError("prime_frames is 0 but a prime is connected; set prime_frames to the number of frames "
                         "to continue from (e.g. 5), or disconnect the prime for a fresh scene")
    check_prime_length(prime_frames, frames, model.config.cvivit.temporal_patch_size, "prime_frames")
    if prime_frames > prime.num_frames:
        raise InputError(f"prime_frames ({prime_frames}) is longer than the prime clip ({prime.num_frames} frames); "
                         f"use at most {prime.num_frames}")


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
    """The nodes' sampling widgets -> SamplerConfig; ``remask`` None (an older graph) takes the default."""
    extra = {} if remask is None else {"remask": remask}
    return SamplerConfig(steps=steps, cond_scale=cond_scale, temperature=temperature, noise_k=critic_noise, **extra)


# --- progress ------------------------------------------------------------------------------------
class StepProgress:
    """Per sampling step: check Cancel, advance the progress bar, now and then a decoded preview."""

    def __init__(self, model: PhenakiModel, steps: int, scenes: int = 1,
                 prime_ids: Optional[torch.Tensor] = None):
        self.model = model
        self.steps = steps
        self.bar = adapter.ProgressBar(steps * scenes)
        self.every = -(-steps // PREVIEWS_PER_SCENE) if adapter.previews_enabled() else 0  # ceil: < 6 per scene
        self.prime_ids = prime_ids  # (b, t, y, x): decoded in front of the new tokens for previews

    def __call__(self, step: SamplerStep, scene: int = 0) -> None:
        adapter.check_interrupted()
        preview = None
        if self.every and (step.step + 1) % self.every == 0 and step.step + 1 < step.steps:
            preview = self.preview(step.ids)
        self.bar.update_absolute(scene * self.steps + step.step + 1, None, preview)

    def scene_callback(self, scene: int, step: SamplerStep) -> None:
        self(step, scene)

    def preview(self, ids: torch.Tensor) -> tuple[str, Image.Image, int]:
        """The current tokens (b, n) of the first clip, decoded into a contact sheet of its frames."""
        cvivit = self.model.pipeline.model.cvivit
        grid = cvivit.config.grid_size
        ids = ids[:1].view(1, -1, grid, grid)
        if self.prime_ids is not None:
            ids = torch.cat((self.prime_ids[:1].to(ids), ids), dim=1)
        video = cvivit.decode_from_ids(ids)[0]
        return "JPEG", Image.fromarray(contact_sheet(to_uint8_frames(video))), adapter.preview_max_size()


# --- the node bodies -----------------------------------------------------------------------------
def encode_text(model: PhenakiModel, prompt: str, negative_prompt: str = "") -> PhenakiCond:
    prompt = clean_prompts(prompt)[0]
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
    check_frames(model, frames)
    check_seed(seed)
    if prime is None:
        prime_frames = 0
    else:
        check_prime(model, prime, prime_frames, frames)
    text, negative = text_for(model, cond)
    primed = prime_ids(model, prime, prime_frames) if prime_frames else None
    ready(model)
    pipeline = model.pipeline
    progress = StepProgress(model, sampler.steps, prime_ids=primed)
    ids = pipeline.model.sample(text, num_frames=frames - prime_frames, prime_ids=primed, negative=negative,
                                sampler=sampler, generator=pipeline.generator(seed), callback=progress)
    return PhenakiTokens(ids.cpu(), model, prime_frames)


def story_prompts(prompts: str) -> list[str]:
    if not isinstance(prompts, str):
        raise InputError(f"prompts must be text (one prompt per line), got {type(prompts).__name__}")
    lines = [line.strip() for line in prompts.splitlines() if line.strip()]
    if not lines:
        raise InputError("prompts is empty; write one prompt per line, one line per scene")
    return clean_prompts(lines)


def chain_scenes(model: PhenakiModel, prompts: str, frames: int, prime_frames: int, sampler: SamplerConfig,
                 seed: int, negative_prompt: str = "", prime: Optional[PhenakiTokens] = None) -> Story:
    """A story: one scene per prompt line, each primed with the last ``prime_frames`` of the one before."""
    scenes = story_prompts(prompts)
    check_frames(model, frames, "frames_per_scene")
    check_seed(seed)
    pt = model.config.cvivit.temporal_patch_size
    if len(scenes) > 1:
        check_prime_length(prime_frames, frames, pt, "prime_frames")
    initial = None
    if prime is not None:
        check_prime(model, prime, prime_frames, frames)
        initial = prime_video(prime)[:, :, -prime_frames:]
    ready(model)
    progress = StepProgress(model, sampler.steps, scenes=len(scenes))
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
                         f"(Load Image, Load Video, ...)")
    if not bool(torch.isfinite(images).all()):
        raise InputError("IMAGE holds NaN or infinite values; check the nodes that made these frames")


def images_to_video(images: torch.Tensor) -> torch.Tensor:
    """IMAGE [f, H, W, C] (C = 1, 3 or 4) -> (1, 3, f, H, W) float32 in [0, 1] on the CPU."""
    check_images(images)
    images = images[..., :3] if images.shape[-1] == 4 else images.expand(-1, -1, -1, 3)  # RGBA and grey -> RGB
    return images.detach().to("cpu", torch.float32).clamp(0, 1).permute(3, 0, 1, 2).unsqueeze(0)


def encode_images(model: PhenakiModel, images: torch.Tensor) -> PhenakiTokens:
    """A user's clip -> tokens usable as a prime.

    Rule: the clip keeps its LAST ``1 + k*pt`` frames, at most the model's ``max_frames`` (the
    end is what a continuation starts from, and no prime can be longer); each frame is resized
    so its short side is the model's size (bilinear, antialiased) and centre-cropped to a square.
    """
    check_images(images)
    config = model.config
    pt = config.cvivit.temporal_patch_size
    total = images.shape[0]
    keep = min(1 + (total - 1) // pt * pt, config.max_frames)
    if keep < total:
        logger.info("Phenaki Encode Video: using the last %d of %d frames (clips have 1 + k*%d frames, at most %d)",
                    keep, total, pt, config.max_frames)
    video = fit_video(images_to_video(images[total - keep:]), config.cvivit.image_size)
    ready(model)
    ids = model.pipeline.encode_video(video)
    return PhenakiTokens(ids.cpu(), model, 0, source=video)


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
