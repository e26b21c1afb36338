"""C-ViViT: the causal video tokenizer.

Video (b, c, f, H, W) in [0, 1] with f = 1 + k*pt  ->  ids (b, 1+k, H/p, W/p)  ->  video.

    first frame         -> p x p patches                 -> token-frame 0
    frames 1+pt*(j-1).. -> pt x p x p tubelets           -> token-frame j
    spatial transformer  (per token-frame, 2D continuous position bias)
    temporal transformer (per spatial position, causal attention + causal PEG)
    lookup-free quantizer
    decoder: the mirror image (temporal, then spatial, then patches back to pixels)

Every operation either acts within one token-frame or looks only at earlier token-frames, so
the tokens of a clip's first k token-frames do not depend on any later frame, and decoding a
prefix of the ids gives the prefix of the decoded video. Priming and scene chaining rely on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config import CViViTConfig
from .errors import InputError
from .layers import LAYOUT_SPACE, LAYOUT_TIME, ContinuousPositionBias, Transformer
from .quantizer import LFQ


def token_frame_mask(frame_mask: torch.Tensor, temporal_patch: int) -> torch.Tensor:
    """Frame mask (..., f) -> token-frame mask (..., t): a token frame is real when any of its
    frames is (token frame 0 is frame 0; token frame k >= 1 covers frames 1+(k-1)pt .. k*pt)."""
    first = frame_mask[..., :1]                                              # (..., 1)
    rest = frame_mask[..., 1:]                                               # (..., f-1)
    if rest.shape[-1] == 0:
        return first.clone()
    rest = rest.reshape(*rest.shape[:-1], -1, temporal_patch).any(dim=-1)   # (..., t-1)
    return torch.cat((first, rest), dim=-1)


@dataclass
class TokenizerOutput:
    """What a training step of the tokenizer needs."""

    reconstruction: torch.Tensor  # b c f H W, in [0, 1] scale (not clamped)
    ids: torch.Tensor  # b t y x
    recon_loss: torch.Tensor
    commit_loss: torch.Tensor
    entropy_loss: torch.Tensor


FOREGROUND_LEVEL = 0.1  # a pixel with any channel above this is foreground for ``foreground_weight``


def _pixel_head(dim: int, out_dim: int, mlp_mult: int) -> nn.Module:
    """Token (dim) -> one patch of pixels (out_dim): linear, or an MLP when ``mlp_mult`` > 0."""
    if mlp_mult == 0:
        return nn.Linear(dim, out_dim)
    return nn.Sequential(nn.Linear(dim, dim * mlp_mult), nn.GELU(), nn.Linear(dim * mlp_mult, out_dim))


class PixelRefiner(nn.Module):
    """Decoded frames -> refined frames, each frame on its own: x + conv(gelu(conv(gelu(conv(x))))).
    The last convolution starts at zero, so a new refiner is the identity."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.GELU(),
                                    nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
                                    nn.Conv2d(width, channels, 3, padding=1))
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, f = video.shape[0], video.shape[2]
        frames = rearrange(video, "b c f h w -> (b f) c h w")
        frames = frames + self.layers(frames)
        return rearrange(frames, "(b f) c h w -> b c f h w", b=b, f=f)


class CViViT(nn.Module):
    def __init__(self, config: CViViTConfig):
        super().__init__()
        self.config = config
        c, p, pt, dim = config.channels, config.patch_size, config.temporal_patch_size, config.dim
        first_dim, tube_dim = c * p * p, c * pt * p * p

        # No LayerNorm on the raw patch (the reference has one): it maps every flat-coloured patch
        # to the same zero vector, erasing exactly what Shapes World and cartoons are made of.
        self.to_patch_emb_first_frame = nn.Sequential(nn.Linear(first_dim, dim), nn.LayerNorm(dim))
        self.to_patch_emb = nn.Sequential(nn.Linear(tube_dim, dim), nn.LayerNorm(dim))
        self.spatial_rel_pos_bias = ContinuousPositionBias(dim=dim, heads=config.heads, num_dims=2)

        spatial = dict(dim=dim, heads=config.heads, dim_head=config.dim_head, ff_mult=config.ff_mult,
                       layout=LAYOUT_SPACE)
        temporal = dict(dim=dim, heads=config.heads, dim_head=config.dim_head, ff_mult=config.ff_mult,
                        causal=True, peg=True, peg_causal=True, layout=LAYOUT_TIME)
        self.enc_spatial_transformer = Transformer(depth=config.spatial_depth, **spatial)
        self.enc_temporal_transformer = Transformer(depth=config.temporal_depth, **temporal)
        self.quantizer = LFQ(dim, config.codebook_size)
        self.dec_temporal_transformer = Transformer(depth=config.temporal_depth, **temporal)
        self.dec_spatial_transformer = Transformer(depth=config.spatial_depth, **spatial)
        self.to_pixels_first_frame = _pixel_head(dim, first_dim, config.pixel_mlp_mult)
        self.to_pixels = _pixel_head(dim, tube_dim, config.pixel_mlp_mult)
        self.pixel_refiner = PixelRefiner(c, config.pixel_refiner) if config.pixel_refiner else None

    @property
    def dtype(self) -> torch.dtype:
        return self.quantizer.project_out.weight.dtype

    def decoder_modules(self) -> tuple[nn.Module, ...]:
        """The modules only the decoder uses: training them leaves every token id as it was, so a
        transformer trained on this tokenizer's ids keeps working. (The position bias is shared with
        the encoder and is not among them.)"""
        modules = (self.quantizer.project_out, self.dec_temporal_transformer, self.dec_spatial_transformer,
                   self.to_pixels_first_frame, self.to_pixels)
        return modules + ((self.pixel_refiner,) if self.pixel_refiner is not None else ())

    # --- input checks -------------------------------------------------------------------------
    def check_video(self, video: torch.Tensor, check_range: bool = True) -> torch.Tensor:
        """Validate a clip and return it as (b, c, f, H, W); images (b, c, H, W) are 1-frame clips."""
        cfg = self.config
        if not isinstance(video, torch.Tensor):
            raise InputError(f"video must be a torch.Tensor, got {type(video).__name__}")
        if video.ndim == 4:
            video = video.unsqueeze(2)
        if video.ndim != 5:
            raise InputError(f"video must have shape (batch, channels, frames, height, width) or "
                             f"(batch, channels, height, width) for images; got shape {tuple(video.shape)}")
        b, c, f, h, w = video.shape
        if c != cfg.channels:
            raise InputError(f"video has {c} channels but the tokenizer expects {cfg.channels} "
                             f"(layout is (b, c, f, H, W), channels second)")
        if (h, w) != (cfg.image_size, cfg.image_size):
            raise InputError(f"video frames are {h}x{w} but the tokenizer expects "
                             f"{cfg.image_size}x{cfg.image_size}; resize or crop the frames first")
        cfg.check_num_frames(f, "the number of video frames")
        if not video.is_floating_point():
            raise InputError(f"video must be a float tensor with values in [0, 1], got dtype {video.dtype}")
        if check_range and video.numel() and (video.min() < -1e-3 or video.max() > 1 + 1e-3):
            raise InputError(f"video values must be in [0, 1], got range [{video.min().item():.3g}, "
                             f"{video.max().item():.3g}]; divide 8-bit frames by 255")
        return video

    def check_ids(self, ids: torch.Tensor) -> None:
        cfg = self.config
        if not isinstance(ids, torch.Tensor) or ids.ndim != 4 or ids.dtype not in (torch.int64, torch.int32):
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise InputError(f"token ids must be an integer tensor of shape (batch, token_frames, {cfg.grid_size}, "
                             f"{cfg.grid_size}), got {shape}")
        if ids.shape[2:] != (cfg.grid_size, cfg.grid_size):
            raise InputError(f"token ids have a {ids.shape[2]}x{ids.shape[3]} grid but this tokenizer uses "
                             f"{cfg.grid_size}x{cfg.grid_size}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= cfg.codebook_size):
            raise InputError(f"token ids must be in [0, {cfg.codebook_size}), got range "
                             f"[{ids.min().item()}, {ids.max().item()}]")

    # --- encoder --------------------------------------------------------------------------------
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video (b c f H W) in [0, 1] -> continuous latents (b t y x d), before quantization."""
        cfg = self.config
        p, pt = cfg.patch_size, cfg.temporal_patch_size
        video = video.to(self.dtype) * 2 - 1
        first = rearrange(video[:, :, :1], "b c 1 (y p1) (x p2) -> b 1 y x (c p1 p2)", p1=p, p2=p)
        rest = rearrange(video[:, :, 1:], "b c (t pt) (y p1) (x p2) -> b t y x (c pt p1 p2)", pt=pt, p1=p, p2=p)
        tokens = torch.cat((self.to_patch_emb_first_frame(first), self.to_patch_emb(rest)), dim=1)
        return self._transform(tokens, self.enc_spatial_transformer, self.enc_temporal_transformer)

    def _transform(self, tokens: torch.Tensor, first: Transformer, second: Transformer) -> torch.Tensor:
        b, t, y, x, _ = tokens.shape
        shape = (b, t, y, x)
        bias = self.spatial_rel_pos_bias(y, x, device=tokens.device)  # h (y x) (y x)
        for transformer in (first, second):
            if transformer.layout == LAYOUT_SPACE:
                seq = rearrange(tokens, "b t y x d -> (b t) (y x) d")
                seq = transformer(seq, video_shape=shape, attn_bias=bias)
                tokens = rearrange(seq, "(b t) (y x) d -> b t y x d", b=b, y=y)
            else:
                seq = rearrange(tokens, "b t y x d -> (b y x) t d")
                seq = transformer(seq, video_shape=shape)
                tokens = rearrange(seq, "(b y x) t d -> b t y x d", b=b, y=y, x=x)
        return tokens

    @torch.no_grad()
    def encode_to_ids(self, video: torch.Tensor) -> torch.Tensor:
        """video (b c f H W) or images (b c H W), values in [0, 1] -> ids (b t y x)."""
        video = self.check_video(video)
        return self.quantizer.encode_ids(self.encode(video))

    # --- decoder --------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Quantized latents (b t y x d) -> video (b c f H W) in [0, 1] scale (unclamped)."""
        cfg = self.config
        p, pt = cfg.patch_size, cfg.temporal_patch_size
        tokens = self._transform(latents, self.dec_temporal_transformer, self.dec_spatial_transformer)
        # contiguous slices: a strided input can take another GEMM path and break bit-exact causality
        first = rearrange(self.to_pixels_first_frame(tokens[:, :1].contiguous()),
                          "b 1 y x (c p1 p2) -> b c 1 (y p1) (x p2)", p1=p, p2=p)
        rest = rearrange(self.to_pixels(tokens[:, 1:].contiguous()),
                         "b t y x (c pt p1 p2) -> b c (t pt) (y p1) (x p2)", pt=pt, p1=p, p2=p)
        video = torch.cat((first, rest), dim=2)                                  # b c f H W, in [-1, 1]
        if self.pixel_refiner is not None:
            video = self.pixel_refiner(video)
        return (video + 1) / 2

    @torch.no_grad()
    def decode_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (b t y x) -> video (b c f H W) in [0, 1], f = 1 + (t-1)*pt."""
        self.check_ids(ids)
        return self.decode(self.quantizer.decode_ids(ids.long())).clamp(0, 1)

    # --- training -------------------------------------------------------------------------------
    def forward(self, video: torch.Tensor, frame_mask: Optional[torch.Tensor] = None,
                foreground_weight: float = 0.0, halo_weight: float = 0.0) -> TokenizerOutput:
        """Training losses. ``frame_mask`` (b f) bool marks real frames; padded ones (False) and the
        token frames made only of them count in no loss. ``foreground_weight`` w > 0 weighs the
        squared error of foreground pixels (any channel above FOREGROUND_LEVEL) 1 + w times: on
        sparse content (a small object on a flat background) plain MSE is nearly minimised by a
        blank frame, and the tokenizer otherwise learns colour and shape very slowly. But weighing
        only the target's foreground favours bleeding colour into the background around an uncertain
        edge (a halo: objects come out bloated and round). ``halo_weight`` h weighs the error of
        background pixels that the reconstruction draws as foreground 1 + h times; h = w makes the
        weighting symmetric."""
        video = self.check_video(video, check_range=False)
        token_mask = None
        if frame_mask is not None:
            frame_mask = self._check_frame_mask(frame_mask, video)
            token_mask = self.token_frame_mask(frame_mask)[:, :, None, None]  # b t 1 1
        q = self.quantizer(self.encode(video), mask=token_mask)
        recon = self.decode(q.quantized)
        target = video.to(recon.dtype)
        if frame_mask is None and not foreground_weight and not halo_weight:
            recon_loss = F.mse_loss(recon, target)
        else:
            weight = torch.ones_like(target[:, :1])  # b 1 f H W
            target_fg = target.amax(1, keepdim=True) > FOREGROUND_LEVEL
            if foreground_weight:
                weight = weight + foreground_weight * target_fg.to(weight.dtype)
            if halo_weight:
                halo = (recon.detach().amax(1, keepdim=True) > FOREGROUND_LEVEL) & ~target_fg
                weight = weight + halo_weight * halo.to(weight.dtype)
            if frame_mask is not None:
                weight = weight * frame_mask[:, None, :, None, None].to(weight.dtype)
            recon_loss = ((recon - target) ** 2 * weight).sum() / (weight.sum() * target.shape[1]).clamp_min(1)
        return TokenizerOutput(recon, q.ids, recon_loss, q.commit_loss, q.entropy_loss)

    def _check_frame_mask(self, frame_mask: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        b, _, f = video.shape[:3]
        if not isinstance(frame_mask, torch.Tensor) or tuple(frame_mask.shape) != (b, f):
            shape = tuple(frame_mask.shape) if isinstance(frame_mask, torch.Tensor) else type(frame_mask).__name__
            raise InputError(f"frame_mask must be a bool tensor of shape (batch, frames) = {(b, f)}, got {shape}")
        return frame_mask.to(device=video.device, dtype=torch.bool)

    def token_frame_mask(self, frame_mask: torch.Tensor) -> torch.Tensor:
        """(b f) real frames -> (b t) token frames holding at least one real frame."""
        return token_frame_mask(frame_mask, self.config.temporal_patch_size)
