"""User-facing generation: prompts in, video out; scenes chained by priming (``make_video``).

Frame accounting for a story (``num_frames`` = F, prime length = p, both ``1 + k*pt``):

    scene 0:   F frames generated from its prompt
    scene i:   the last p frames of scene i-1 are re-encoded and kept fixed as the prime; the model
               generates the remaining F - p frames of its F-frame window; only those are new
    story:     F + sum(F_i - p_i) frames.   p = 0 means the scene starts fresh (F new frames).

The causal tokenizer guarantees that the prime's tokens do not depend on frames after it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .checkpoint import DTYPES, Bundle, load_bundle
from .errors import CheckpointError, InputError
from .guided import sample_ids
from .phenaki import Phenaki, TextCondition
from .precision import auto_choice, auto_dtype
from .sampling import SamplerConfig, SamplerStep
from .text import HFTextEncoder, load_text_encoder
from .validation import is_int

logger = logging.getLogger(__name__)

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "shapes64.safetensors"


def default_checkpoint() -> Path:
    """The bundled Shapes World model shipped inside the package."""
    if not BUNDLED_CHECKPOINT.is_file():
        raise CheckpointError(f"the bundled model is missing from {BUNDLED_CHECKPOINT.parent}; reinstall the "
                              f"package or pass a checkpoint path")
    return BUNDLED_CHECKPOINT


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA GPU is available; use 'cpu' or 'auto'")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise InputError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """A dtype name ("auto", "fp32", "bf16", "fp16") -> torch dtype; ``auto`` is ``precision.auto_dtype``
    (logged in one line)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return auto_dtype(device)
    if dtype not in DTYPES:
        names = [repr(name) for name in ("auto", *DTYPES)]
        raise InputError(f"unknown dtype {dtype!r}; use {', '.join(names[:-1])} or {names[-1]}")
    return DTYPES[dtype]


def check_prime_length(prime: int, num_frames: int, pt: int, what: str = "prime length") -> None:
    if not is_int(prime, 0):
        raise InputError(f"{what} must be a whole number of frames >= 0, got {prime!r}")
    if prime and (prime - 1) % pt:
        raise InputError(f"{what} must be 0 (no priming) or 1 + k*{pt} frames, got {prime}; try "
                         f"{1 + ((prime - 1) // pt) * pt} or {1 + ((prime - 1) // pt + 1) * pt}")
    if prime >= num_frames:
        raise InputError(f"{what} ({prime}) must be shorter than the scene ({num_frames} frames), "
                         f"or the scene has nothing new to generate")


def check_seed(seed: int) -> None:
    if not is_int(seed, 0) or seed >= 2**64:
        raise InputError(f"seed must be an integer in [0, 2**64), got {seed!r}")


@dataclass
class Story:
    """The result of ``make_video``."""

    video: torch.Tensor  # b c F H W in [0, 1], all scenes joined
    scenes: list[torch.Tensor]  # per scene: its new frames only
    boundaries: list[int]  # frame index where each scene starts in ``video``
    fps: float


def make_video(
    model: Phenaki,
    texts: Sequence[TextCondition | None],
    num_frames: int | Sequence[int],
    prime_lengths: int | Sequence[int],
    *,
    sampler: SamplerConfig = SamplerConfig(),
    generator: Optional[torch.Generator] = None,
    negatives: Optional[Sequence[Optional[TextCondition]]] = None,
    initial_prime: Optional[torch.Tensor] = None,
    callback: Optional[Callable[[int, SamplerStep], None]] = None,
    compile: bool = False,
) -> Story:
    """Chain one scene per text condition, each primed with the end of the previous one.

    ``num_frames`` is each scene's window, prime included (``1 + k*pt``); ``prime_lengths`` is
    the number of frames carried from scene i to scene i+1 (0 = no priming), one value or one
    per transition. ``initial_prime`` (b c f H W) primes the first scene with a user's own clip.
    ``callback(scene_index, step)`` is called after every sampling step. ``compile=True`` replays
    each scene's sampling as CUDA graphs on CUDA (``guided.sample_ids``).
    """
    cfg = model.config.cvivit
    pt = cfg.temporal_patch_size
    n = len(texts)
    if n == 0:
        raise InputError("make_video needs at least one scene")
    frames = [num_frames] * n if isinstance(num_frames, int) else list(num_frames)
    primes = [prime_lengths] * (n - 1) if isinstance(prime_lengths, int) else list(prime_lengths)
    if len(frames) != n or len(primes) != n - 1:
        raise InputError(f"{n} scenes need {n} frame counts and {n - 1} prime lengths; got {len(frames)} "
                         f"and {len(primes)}")
    for index, count in enumerate(frames):
        cfg.check_num_frames(count, f"frames of scene {index + 1}")
    carry = [0] + primes
    for index in range(1, n):
        check_prime_length(carry[index], frames[index], pt, f"prime length into scene {index + 1}")
    if initial_prime is not None:
        carry[0] = initial_prime.shape[2]
        check_prime_length(carry[0], frames[0], pt, "the first scene's prime clip length")

    scenes: list[torch.Tensor] = []
    history = initial_prime  # b c f H W: every frame so far, the source of the next prime
    weight_dtype = model.cvivit.dtype
    for index, text in enumerate(texts):
        p = carry[index]
        prime_ids = None
        if p:
            if history.shape[2] < p:
                raise InputError(f"scene {index + 1} asks for a {p}-frame prime but only {history.shape[2]} "
                                 f"frames come before it")
            prime_ids = model.cvivit.encode_to_ids(history[:, :, -p:].to(model.device, weight_dtype))
        step_cb = None if callback is None else (lambda step, _i=index: callback(_i, step))
        negative = negatives[index] if negatives is not None else None
        ids = sample_ids(model, text, num_frames=frames[index] - p, prime_ids=prime_ids, negative=negative,
                         sampler=sampler, generator=generator, callback=step_cb, compile=compile)
        video = model.cvivit.decode_from_ids(ids)[:, :, p:].float()  # drop the re-decoded prime
        scenes.append(video)
        history = video if history is None else torch.cat((history.to(video), video), dim=2)
    boundaries, total = [], 0
    for scene in scenes:
        boundaries.append(total)
        total += scene.shape[2]
    return Story(torch.cat(scenes, dim=2), scenes, boundaries, model.config.fps)


def fit_video(video: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to ``size`` (bilinear, antialiased) and centre-crop to size x size.

    video (b, c, f, H, W) in [0, 1] -> (b, c, f, size, size).
    """
    b, c, f, h, w = video.shape
    if (h, w) == (size, size):
        return video
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w).float()
    frames = F.interpolate(frames, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    frames = frames[:, :, top:top + size, left:left + size].clamp(0, 1)
    return frames.reshape(b, f, c, size, size).permute(0, 2, 1, 3, 4)


class PhenakiPipeline:
    """A model bundle plus its text encoder: prompts in, video out."""

    def __init__(self, model: Phenaki, text_encoder: Optional[HFTextEncoder], *, dtype: torch.dtype = torch.float32):
        self.model = model
        self.text_encoder = text_encoder
        self.dtype = dtype

    @classmethod
    def from_checkpoint(cls, path: Optional[str | os.PathLike] = None, *, device: str | torch.device = "auto",
                        dtype: str | torch.dtype = "auto", t5_folder: Optional[str] = None,
                        with_text: bool = True) -> "PhenakiPipeline":
        """Load a bundle (the bundled model when ``path`` is None) and the text encoder it names
        (unless ``with_text`` is False: the tokenizer alone needs none)."""
        device = resolve_device(device)
        note = ""
        if dtype == "auto":  # said with the load line, once loading has worked
            dtype, note = auto_choice(device)
            note = f"; {note}"
        dtype = resolve_dtype(dtype, device)
        bundle: Bundle = load_bundle(path if path is not None else default_checkpoint(), device=device, dtype=dtype)
        encoder = None
        if with_text and not bundle.model.config.maskgit.unconditional:
            encoder = load_text_encoder(bundle.text_encoder, device=device, t5_folder=t5_folder)
        logger.info("loaded %s on %s (%s%s)", bundle.path, device, str(dtype).replace("torch.", ""), note)
        return cls(bundle.model, encoder, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def fps(self) -> float:
        return self.model.config.fps

    def encode_text(self, prompts: Sequence[str] | str) -> Optional[TextCondition]:
        if self.text_encoder is None:
            return None
        return self.text_encoder.encode(prompts, device=self.device)

    def generator(self, seed: int) -> torch.Generator:
        check_seed(seed)
        return torch.Generator(device=self.device).manual_seed(seed)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """A user's clip (b c f H W) in [0, 1], any size -> ids; trailing frames beyond 1 + k*pt are dropped."""
        if video.ndim != 5:
            raise InputError(f"video must be (batch, channels, frames, height, width), got {tuple(video.shape)}")
        cfg = self.model.config.cvivit
        usable = 1 + ((video.shape[2] - 1) // cfg.temporal_patch_size) * cfg.temporal_patch_size
        if usable != video.shape[2]:
            logger.info("using the first %d of %d frames (clips need 1 + k*%d frames)", usable, video.shape[2],
                        cfg.temporal_patch_size)
        video = fit_video(video[:, :, :usable], cfg.image_size).to(self.device)
        return self.model.cvivit.encode_to_ids(video.to(self.dtype))

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.cvivit.decode_from_ids(ids.to(self.device)).float()

    def make_video(
        self,
        prompts: Sequence[str],
        *,
        num_frames: int | Sequence[int] = 17,
        prime_frames: int | Sequence[int] = 5,
        sampler: SamplerConfig = SamplerConfig(),
        seed: int = 0,
        negative_prompt: Optional[str] = None,
        initial_prime: Optional[torch.Tensor] = None,
        callback: Optional[Callable[[int, SamplerStep], None]] = None,
        compile: bool = False,
    ) -> Story:
        """One scene per prompt, chained by priming. See the module docstring for frame accounting."""
        if isinstance(prompts, str):
            prompts = [prompts]
        check_seed(seed)
        negative_prompt = " ".join(negative_prompt.split()) if negative_prompt else None  # blank: no negative
        texts = [self.encode_text([p]) for p in prompts]
        negatives = None
        if negative_prompt and self.text_encoder is not None:
            negative = self.encode_text([negative_prompt])
            negatives = [negative] * len(texts)
        if initial_prime is not None:
            cfg = self.model.config.cvivit
            initial_prime = fit_video(initial_prime, cfg.image_size)
        return make_video(self.model, texts, num_frames, prime_frames, sampler=sampler,
                          generator=self.generator(seed), negatives=negatives, initial_prime=initial_prime,
                          callback=callback, compile=compile)
