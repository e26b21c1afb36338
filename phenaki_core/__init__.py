"""phenaki_core: a correct, causal, seedable Phenaki (text-to-video) in PyTorch.

Layout:
    config.py      frozen config dataclasses and presets (tiny, shapes64, S, L)
    layers.py      attention (SDPA), PEG, continuous position bias, transformer blocks
    cvivit.py      C-ViViT causal video tokenizer (+ quantizer.py: lookup-free quantization)
    maskgit.py     MaskGit, TokenCritic, SelfCritic (ids -> logits)
    phenaki.py     the model bundle and its training forward (losses)
    sampling.py    the MaskGIT decoding loop, a pure function of a logits callback
    guided.py      sample_ids(model, text, ...): guidance and priming around that loop
    pipeline.py    prompts -> video, make_video scene chaining, device/dtype helpers
    text.py        offline text encoders (MiniLM default, local T5)
    checkpoint.py  one .safetensors per bundle, config in the header, strict loading
    convert.py     phenaki-pytorch state dict conversion (explicit, weights_only)
    data/          Shapes World, the procedural training world of the bundled model
    evaluation/    reading Shapes World clips back (colour, shape, motion, continuity)

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
