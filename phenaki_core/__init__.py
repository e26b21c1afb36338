"""phenaki_core: a correct, causal, seedable Phenaki (text-to-video) in PyTorch.

Layout:
    config.py      frozen config dataclasses and presets (tiny, shapes64, S, L)
    layers.py      attention (SDPA), PEG, continuous position bias, transformer blocks
    kernels.py     which attention / convolution kernel runs where (SDPA, FlexAttention)
    cvivit.py      C-ViViT causal video tokenizer (+ quantizer.py: lookup-free quantization)
    maskgit.py     MaskGit, TokenCritic, SelfCritic (ids -> logits)
    phenaki.py     the model bundle and its training forward (losses)
    sampling.py    the MaskGIT decoding loop, a pure function of a logits callback
    guided.py      sample_ids(model, text, ...): guidance and priming around that loop
    guided_model.py  one sample's fixed parts (guidance rows, text keys/values, bias) and callbacks
    cuda_graphs.py a whole guided sample recorded once as CUDA graphs and replayed
    pipeline.py    prompts -> video, make_video scene chaining, device/dtype helpers
    precision.py   what 'auto' precision means: bf16 where the device has bf16 matrix units
    text.py        offline text encoders (MiniLM default, local T5), caption caching
    text_condition.py  encoded prompts: per-token embeddings and a padding mask
    checkpoint.py  one .safetensors per bundle, config in the header, strict loading
    convert.py     phenaki-pytorch state dict conversion (explicit, weights_only)
    video_io.py    frames -> gif / webp / png / mp4 (files.py: atomic writes)
    errors.py      the error types; validation.py: what "a whole number" and "a number" mean
    cli.py         the ``phenaki`` command
    data/          Shapes World, video folders and token shards
    evaluation/    reading Shapes World clips back (colour, shape, motion, continuity), eval report, text probe
    training/      the two-stage training loop, resumable, data-parallel

docs/architecture.md draws how these import each other (tests/test_architecture.py checks it).

Nothing here imports ComfyUI, touches the network, seeds a global RNG or configures logging.
"""

from .checkpoint import Bundle, load_bundle, read_metadata, save_bundle
from .config import (CriticConfig, CViViTConfig, MaskGitConfig, PhenakiConfig, TrainingLossConfig, preset,
                     PRESETS)
from .cvivit import CViViT
from .errors import CheckpointError, ConfigError, InputError, PhenakiError, TextEncoderError
from .guided import sample_ids
from .maskgit import MaskGit, SelfCritic, TokenCritic
from .phenaki import Phenaki, PhenakiLoss, TextCondition
from .pipeline import PhenakiPipeline, Story, default_checkpoint, fit_video, make_video
from .sampling import SamplerConfig, SamplerStep, sample_tokens
from .text import MINILM_SPEC, TextEncoderSpec, load_minilm, load_t5, load_text_encoder

__version__ = "0.1.0"

__all__ = [
    "Bundle", "CheckpointError", "ConfigError", "CriticConfig", "CViViT", "CViViTConfig", "InputError",
    "MINILM_SPEC", "MaskGit", "MaskGitConfig", "Phenaki", "PhenakiConfig", "PhenakiError", "PhenakiLoss",
    "PhenakiPipeline", "PRESETS", "SamplerConfig", "SamplerStep", "SelfCritic", "Story", "TextCondition",
    "TextEncoderError", "TextEncoderSpec", "TokenCritic", "TrainingLossConfig", "default_checkpoint",
    "fit_video", "load_bundle", "load_minilm", "load_t5", "load_text_encoder", "make_video", "preset",
    "read_metadata", "sample_ids", "sample_tokens", "save_bundle",
]
