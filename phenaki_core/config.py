"""Frozen, validated configuration for every component, and named presets.

A config fully determines a module's architecture. Checkpoints store the config as JSON in the
safetensors header, so a bundle can be rebuilt without any code-side knowledge of its size.

Frame arithmetic (the C-ViViT rule): a clip has ``1 + k * pt`` frames. The first frame is patched
alone and every following group of ``pt`` frames forms one tubelet, so the clip becomes
``1 + k`` token-frames of ``(H / p) * (W / p)`` tokens each.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError, InputError
from .validation import is_int, is_number

QUANTIZERS = ("lfq",)
CRITIC_KINDS = ("none", "token", "self")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive_int(name: str, value: Any) -> None:
    _require(is_int(value, 1), f"{name} must be a positive integer, got {value!r}")


def _non_negative_float(name: str, value: Any, upper: float | None = None) -> None:
    bound = f" and at most {upper}" if upper is not None else ""
    _require(is_number(value, 0, upper), f"{name} must be a finite number >= 0{bound}, got {value!r}")


@dataclass(frozen=True)
class CViViTConfig:
    """The causal video tokenizer (C-ViViT)."""

    dim: int = 256
    codebook_size: int = 1024
    image_size: int = 64
    patch_size: int = 8
    temporal_patch_size: int = 2
    spatial_depth: int = 4
    temporal_depth: int = 4
    heads: int = 8
    dim_head: int = 32
    ff_mult: float = 4.0
    channels: int = 3
    quantizer: str = "lfq"
    # 0: tokens -> pixels through one linear map, as in the paper; k > 0: through an MLP with a
    # hidden width of k * dim. A linear map can only mix a few basis patches; the MLP draws sharp
    # edges and flat colours at any offset, and learns many times faster.
    pixel_mlp_mult: int = 0
    # 0: the pixel heads' patches are the output; k > 0: a residual stack of three 3x3 convolutions
    # of width k refines each decoded frame on its own (so causality holds). A pixel head draws
    # each patch from its token alone; the refiner sees across patch borders and cleans the faint
    # colour the heads leave around edges. It starts as the identity, so it can be added to a
    # trained tokenizer (``phenaki train tokenizer --decoder-only --pixel-refiner K``).
    pixel_refiner: int = 0

    def __post_init__(self) -> None:
        for name in ("pixel_mlp_mult", "pixel_refiner"):
            if not is_int(getattr(self, name), 0):
                raise ConfigError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        for name in ("dim", "codebook_size", "image_size", "patch_size", "temporal_patch_size",
                     "spatial_depth", "temporal_depth", "heads", "dim_head", "channels"):
            _positive_int(name, getattr(self, name))
        _require(self.image_size % self.patch_size == 0,
                 f"image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})")
        _require(self.quantizer in QUANTIZERS, f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        _require(self.codebook_size >= 2 and self.codebook_size & (self.codebook_size - 1) == 0,
                 f"codebook_size must be a power of two for lookup-free quantization, got {self.codebook_size}")
        _non_negative_float("ff_mult", self.ff_mult)
        _require(self.ff_mult > 0, "ff_mult must be > 0")

    def differs_only_in_refiner(self, other: "CViViTConfig") -> bool:
        """True when ``other`` is this tokenizer with another pixel refiner (the same encoder, so the
        same token ids; the refiner is decoder-only)."""
        return dataclasses.replace(self, pixel_refiner=other.pixel_refiner) == other

    # --- frame / token arithmetic -------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        """Tokens along each spatial axis of one token-frame."""
        return self.image_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid_size**2

    def is_valid_num_frames(self, num_frames: int) -> bool:
        return isinstance(num_frames, int) and num_frames >= 1 and (num_frames - 1) % self.temporal_patch_size == 0

    def valid_frame_counts(self, up_to: int = 33) -> list[int]:
        return list(range(1, up_to + 1, self.temporal_patch_size))

    def check_num_frames(self, num_frames: int, what: str = "num_frames") -> None:
        if not self.is_valid_num_frames(num_frames):
            pt = self.temporal_patch_size
            lower = max(1, 1 + ((int(num_frames) - 1) // pt) * pt) if isinstance(num_frames, int) and num_frames >= 1 else 1
            raise InputError(
                f"{what} must be 1 + k*{pt} (one first frame plus whole tubelets of {pt} frames), "
                f"got {num_frames!r}; try {lower} or {lower + pt}")

    def token_frames(self, num_frames: int) -> int:
        """Token-frames for a clip of ``num_frames`` frames (``1 + k*pt``)."""
        self.check_num_frames(num_frames)
        return 1 + (num_frames - 1) // self.temporal_patch_size

    def frames_for_token_frames(self, token_frames: int) -> int:
        return 1 + (token_frames - 1) * self.temporal_patch_size

    def num_tokens(self, num_frames: int) -> int:
        return self.token_frames(num_frames) * self.tokens_per_frame

    def token_shape(self, num_frames: int) -> tuple[int, int, int]:
        return (self.token_frames(num_frames), self.grid_size, self.grid_size)


@dataclass(frozen=True)
class MaskGitConfig:
    """The text-conditioned MaskGIT transformer that predicts video tokens."""

    dim: int = 384
    depth: int = 6
    heads: int = 6
    dim_head: int = 64
    num_tokens: int = 1024
    max_seq_len: int = 576
    text_dim: int = 384
    unconditional: bool = False
    ff_mult: float = 4.0
    gradient_shrink_alpha: float = 0.1
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    num_null_kv: int = 2

    def __post_init__(self) -> None:
        for name in ("dim", "depth", "heads", "dim_head", "num_tokens", "max_seq_len", "text_dim", "num_null_kv"):
            _positive_int(name, getattr(self, name))
        _non_negative_float("gradient_shrink_alpha", self.gradient_shrink_alpha, 1.0)
        _non_negative_float("attn_dropout", self.attn_dropout, 1.0)
        _non_negative_float("ff_dropout", self.ff_dropout, 1.0)
        _require(self.ff_mult > 0, "ff_mult must be > 0")

    @property
    def mask_id(self) -> int:
        return self.num_tokens


@dataclass(frozen=True)
class CriticConfig:
    """The token critic: ``token`` (a separate transformer), ``self`` (a head on MaskGit) or ``none``."""

    kind: str = "token"
    dim: int = 256
    depth: int = 2
    heads: int = 4
    dim_head: int = 64
    has_cross_attn: bool = True
    ff_mult: float = 4.0

    def __post_init__(self) -> None:
        _require(self.kind in CRITIC_KINDS, f"critic kind must be one of {CRITIC_KINDS}, got {self.kind!r}")
        for name in ("dim", "depth", "heads", "dim_head"):
            _positive_int(name, getattr(self, name))


@dataclass(frozen=True)
class TrainingLossConfig:
    """Knobs of the stage-2 training forward (MaskGit + critic losses)."""

    cond_drop_prob: float = 0.25
    critic_loss_weight: float = 1.0
    critic_train_sample_temperature: float = 1.0

    def __post_init__(self) -> None:
        _non_negative_float("cond_drop_prob", self.cond_drop_prob, 1.0)
        _non_negative_float("critic_loss_weight", self.critic_loss_weight)
        _non_negative_float("critic_train_sample_temperature", self.critic_train_sample_temperature)


@dataclass(frozen=True)
class PhenakiConfig:
    """A whole model bundle: tokenizer, transformer, critic and the training-loss knobs."""

    cvivit: CViViTConfig = field(default_factory=CViViTConfig)
    maskgit: MaskGitConfig = field(default_factory=MaskGitConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    loss: TrainingLossConfig = field(default_factory=TrainingLossConfig)
    fps: float = 8.0

    def __post_init__(self) -> None:
        _require(self.maskgit.num_tokens >= self.cvivit.codebook_size,
                 f"maskgit.num_tokens ({self.maskgit.num_tokens}) must be at least the tokenizer's codebook_size "
                 f"({self.cvivit.codebook_size}); set num_tokens={self.cvivit.codebook_size}")
        _require(self.maskgit.max_seq_len >= self.cvivit.tokens_per_frame,
                 f"maskgit.max_seq_len ({self.maskgit.max_seq_len}) is smaller than one token-frame "
                 f"({self.cvivit.tokens_per_frame} tokens)")
        _require(not (self.critic.kind == "token" and self.critic.has_cross_attn and self.maskgit.unconditional),
                 "an unconditional MaskGit cannot have a text-conditioned token critic; set critic.has_cross_attn=False")
        _non_negative_float("fps", self.fps)
        _require(self.fps > 0, "fps must be > 0")

    @property
    def max_frames(self) -> int:
        """The longest clip (prime included) the transformer can attend over."""
        token_frames = self.maskgit.max_seq_len // self.cvivit.tokens_per_frame
        return self.cvivit.frames_for_token_frames(token_frames)

    # --- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PhenakiConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"a Phenaki config must be a JSON object, got {type(data).__name__}")
        sections = {"cvivit": CViViTConfig, "maskgit": MaskGitConfig, "critic": CriticConfig,
                    "loss": TrainingLossConfig}
        unknown = set(data) - set(sections) - {"fps"}
        if unknown:
            raise ConfigError(f"unknown config sections {sorted(unknown)}; expected {sorted(sections) + ['fps']}")
        kwargs: dict[str, Any] = {}
        for name, section_cls in sections.items():
            if name in data:
                kwargs[name] = _section_from_dict(section_cls, data[name], name)
        if "fps" in data:
            kwargs["fps"] = data["fps"]
        try:
            return cls(**kwargs)
        except TypeError as exc:  # pragma: no cover - guarded by the checks above
            raise ConfigError(f"invalid Phenaki config: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "PhenakiConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the config is not valid JSON ({exc.msg} at char {exc.pos})") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "PhenakiConfig":
        return dataclasses.replace(self, **changes)


def _section_from_dict(section_cls: type, data: Any, name: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section {name!r} must be a JSON object")
    known = {f.name for f in dataclasses.fields(section_cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} in config section {name!r}; known keys: {sorted(known)}")
    return section_cls(**data)


@dataclass(frozen=True)
class Preset:
    """A named model size: what it is for and its geometry; calling it builds the config.

    Every size has tubelets of 2 frames, equal spatial and temporal depth in the tokenizer, a token
    critic, MaskGit's vocabulary equal to the codebook and its sequence the tokens of ``frames``.
    """

    use: str  # one line, shown by ``phenaki train --list-presets``
    tokenizer_dim: int
    codebook_size: int
    image_size: int
    patch_size: int
    tokenizer_depth: int
    tokenizer_heads: int
    tokenizer_dim_head: int
    pixel_mlp_mult: int
    frames: int
    dim: int  # MaskGit
    depth: int
    heads: int
    dim_head: int
    text_dim: int
    critic_dim: int
    critic_depth: int
    critic_heads: int
    critic_dim_head: int

    def __call__(self) -> PhenakiConfig:
        cvivit = CViViTConfig(dim=self.tokenizer_dim, codebook_size=self.codebook_size, image_size=self.image_size,
                              patch_size=self.patch_size, temporal_patch_size=2, spatial_depth=self.tokenizer_depth,
                              temporal_depth=self.tokenizer_depth, heads=self.tokenizer_heads,
                              dim_head=self.tokenizer_dim_head, pixel_mlp_mult=self.pixel_mlp_mult)
        return PhenakiConfig(
            cvivit=cvivit,
            maskgit=MaskGitConfig(dim=self.dim, depth=self.depth, heads=self.heads, dim_head=self.dim_head,
                                  num_tokens=cvivit.codebook_size, max_seq_len=cvivit.num_tokens(self.frames),
                                  text_dim=self.text_dim),
            critic=CriticConfig(kind="token", dim=self.critic_dim, depth=self.critic_depth, heads=self.critic_heads,
                                dim_head=self.critic_dim_head))


PRESET_USES = {
    "tiny": "unit tests: 8x8 frames, 24-d text (not MiniLM), so stage 2 cannot train it",
    "tiny-shapes": "smoke tests and the worked example in docs/training.md: trains in seconds on a CPU",
    "shapes64": "the bundled model (which adds a pixel refiner); a practical size for your own clips on a CPU "
                "(default)",
    "S": "a GPU size: 4x the tokens of shapes64 per clip",
    "L": "the paper's tokenizer geometry; GPU only, 768-d text (T5-base width, not MiniLM)",
}
# shapes64's 16x16 patches keep a clip at 9x4x4 = 144 tokens, so both stages train on a CPU in hours
# (attention cost grows with the square of the token count). S and L are the sizes of the comparison
# with phenaki-pytorch (docs/peer.md).
PRESETS: dict[str, Preset] = {name: Preset(PRESET_USES[name], *geometry) for name, geometry in {
    #             tokenizer (C-ViViT)                     MaskGit                     critic
    #             dim  codebook frame patch layers heads dh mlp  frames dim layers heads dh text  dim layers heads dh
    "tiny":        (32,    64,    8,   4,  1,  2, 16, 0,  9,   32, 1, 2, 16,  24,   32, 1, 2, 16),
    "tiny-shapes": (32,    64,   16,   8,  1,  2, 16, 0, 17,   32, 1, 2, 16, 384,   32, 1, 2, 16),
    "shapes64":    (128, 4096,   64,  16,  2,  4, 32, 4, 17,  256, 4, 4, 64, 384,  128, 2, 2, 64),
    "S":           (256, 1024,   64,   8,  4,  8, 32, 0, 17,  384, 6, 6, 64, 384,  256, 2, 4, 64),
    "L":           (512, 8192,  128,   8,  4,  8, 64, 0, 17,  512, 8, 8, 64, 768,  512, 4, 8, 64),
}.items()}


def preset(name: str) -> PhenakiConfig:
    """Return a named preset config (``tiny``, ``tiny-shapes``, ``shapes64``, ``S``, ``L``)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
