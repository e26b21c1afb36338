"""C-ViViT: shapes, strict causality of encoder and decoder, input validation."""

import pytest
import torch

from phenaki_core import CViViT, CViViTConfig, InputError, preset

from helpers import perturbed, random_video


def perturbed_tokenizer(config: CViViTConfig, seed: int = 0) -> CViViT:
    return perturbed(lambda: CViViT(config), seed)


CAUSAL_CONFIGS = {
    "tiny": preset("tiny").cvivit,
    "two-layer": CViViTConfig(dim=48, codebook_size=256, image_size=16, patch_size=4, spatial_depth=2,
                              temporal_depth=2, heads=3, dim_head=16),
    "pixel-refiner": CViViTConfig(dim=32, codebook_size=64, image_size=16, patch_size=4, spatial_depth=1,
                                  temporal_depth=1, heads=2, dim_head=16, pixel_mlp_mult=2, pixel_refiner=8),
}


@pytest.mark.parametrize("name", sorted(CAUSAL_CONFIGS))
def test_encoder_is_strictly_causal(name):
    cfg = CAUSAL_CONFIGS[name]
    model = perturbed_tokenizer(cfg)
    video = random_video(2, 9, cfg.image_size, seed=3)
    full = model.encode_to_ids(video)
    for k in range(1, full.shape[1] + 1):
        prefix = model.encode_to_ids(video[:, :, : cfg.frames_for_token_frames(k)])
        assert torch.equal(prefix, full[:, :k]), f"token-frames 0..{k - 1} changed when later frames were added"
    # changing the future must not change the past
    changed = video.clone()
    changed[:, :, 5:] = 1 - changed[:, :, 5:]
    assert torch.equal(model.encode_to_ids(changed)[:, :3], full[:, :3])


@pytest.mark.parametrize("name", sorted(CAUSAL_CONFIGS))
def test_decoder_is_strictly_causal(name):
    cfg = CAUSAL_CONFIGS[name]
    model = perturbed_tokenizer(cfg)
    ids = torch.randint(0, cfg.codebook_size, (2, 5, cfg.grid_size, cfg.grid_size),
                        generator=torch.Generator().manual_seed(0))
    full = model.decode_from_ids(ids)
    for k in range(1, 6):
        prefix = model.decode_from_ids(ids[:, :k])
        assert torch.equal(prefix, full[:, :, : cfg.frames_for_token_frames(k)])


def test_shapes_and_value_range():
    cfg = preset("tiny").cvivit
    model = perturbed_tokenizer(cfg)
    ids = model.encode_to_ids(random_video(3, 9))
    assert ids.shape == (3, 5, 2, 2) and ids.dtype == torch.long
    assert 0 <= ids.min() and ids.max() < cfg.codebook_size
    video = model.decode_from_ids(ids)
    assert video.shape == (3, 3, 9, 8, 8)
    assert 0 <= video.min() and video.max() <= 1


def test_images_are_one_frame_videos():
    model = perturbed_tokenizer(preset("tiny").cvivit)
    images = random_video(2, 1)[:, :, 0]
    ids = model.encode_to_ids(images)
    assert ids.shape == (2, 1, 2, 2)
    assert torch.equal(ids, model.encode_to_ids(images.unsqueeze(2)))


@pytest.mark.parametrize("video, match", [
    (torch.rand(9, 8, 8), "shape"),
    (torch.rand(1, 1, 9, 8, 8), "channels"),
    (torch.rand(1, 3, 9, 16, 16), "8x8"),
    (torch.rand(1, 3, 8, 8, 8), r"1 \+ k\*2"),
    (torch.rand(1, 3, 9, 8, 8) * 255, r"\[0, 1\]"),
    (torch.randint(0, 255, (1, 3, 9, 8, 8)), "float"),
])
def test_bad_videos_get_clear_errors(video, match):
    model = perturbed_tokenizer(preset("tiny").cvivit)
    with pytest.raises(InputError, match=match):
        model.encode_to_ids(video)


def test_bad_ids_get_clear_errors():
    model = perturbed_tokenizer(preset("tiny").cvivit)
    with pytest.raises(InputError, match=r"\[0, 64\)"):
        model.decode_from_ids(torch.full((1, 2, 2, 2), 64))
    with pytest.raises(InputError, match="grid"):
        model.decode_from_ids(torch.zeros(1, 2, 3, 3, dtype=torch.long))
    with pytest.raises(InputError, match="shape"):
        model.decode_from_ids(torch.zeros(1, 8, dtype=torch.long))


def test_training_forward_gives_finite_losses_and_gradients_everywhere():
    model = perturbed_tokenizer(preset("tiny").cvivit).train()
    out = model(random_video(2, 5))
    loss = out.recon_loss + 0.25 * out.commit_loss + 0.1 * out.entropy_loss
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"


def test_lfq_codes_and_ids_round_trip():
    model = perturbed_tokenizer(preset("tiny").cvivit)
    ids = torch.arange(64)
    assert torch.equal(model.quantizer.ids_from_codes(model.quantizer.codes_from_ids(ids)), ids)


def test_the_lfq_entropy_term_is_computed_in_float32_under_bf16_autocast():
    """Its logits are h.c / 0.005, hundreds in size: bf16 would round them to steps of 1 or more.
    With an identity projection and bf16-exact inputs, the code bits h are exact in both
    precisions, so the term must come out the same under autocast as in float32."""
    from phenaki_core.quantizer import LFQ
    quantizer = LFQ(10, 1024).train()
    with torch.no_grad():
        quantizer.project_in.weight.copy_(torch.eye(10))
        quantizer.project_in.bias.zero_()
    z = torch.randn(2, 300, 10, generator=torch.Generator().manual_seed(0)).mul(0.1).bfloat16().float()
    exact = quantizer(z).entropy_loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = quantizer(z).entropy_loss
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, exact, atol=1e-5, rtol=1e-5)


def test_a_new_pixel_refiner_is_the_identity_and_a_trained_one_changes_only_its_frame():
    cfg = CAUSAL_CONFIGS["pixel-refiner"]
    model = CViViT(cfg)
    video = random_video(1, 5, cfg.image_size, seed=1) * 2 - 1
    assert torch.equal(model.pixel_refiner(video), video)
    refiner = perturbed(lambda: CViViT(cfg), 0).pixel_refiner
    changed = video.clone()
    changed[:, :, 3] = 0
    before, after = refiner(video), refiner(changed)
    assert not torch.equal(before[:, :, 3], after[:, :, 3])
    assert torch.equal(before[:, :, :3], after[:, :, :3]) and torch.equal(before[:, :, 4:], after[:, :, 4:])
    with pytest.raises(ValueError, match="pixel_refiner"):
        CViViTConfig(pixel_refiner=-1)
