import pytest

from phenaki_core import ConfigError, InputError, CViViTConfig, MaskGitConfig, PhenakiConfig, PRESETS, SamplerConfig, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip_through_json(name):
    config = preset(name)
    assert PhenakiConfig.from_json(config.to_json()) == config


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ConfigError, match="tiny"):
        preset("huge")


def test_token_arithmetic_follows_the_first_frame_plus_tubelets_rule():
    cfg = CViViTConfig(image_size=64, patch_size=8, temporal_patch_size=2)
    assert cfg.tokens_per_frame == 64
    assert cfg.token_frames(17) == 9
    assert cfg.num_tokens(17) == 9 * 64
    assert cfg.num_tokens(1) == 64
    assert cfg.frames_for_token_frames(9) == 17
    assert cfg.token_shape(5) == (3, 8, 8)


@pytest.mark.parametrize("frames", [0, 2, 4, 16, -1])
def test_frame_counts_that_break_the_rule_say_what_to_use(frames):
    with pytest.raises(InputError, match=r"1 \+ k\*2"):
        CViViTConfig().token_frames(frames)


def test_num_tokens_below_codebook_size_is_a_clear_error():
    with pytest.raises(ConfigError, match="num_tokens.*codebook_size"):
        PhenakiConfig(cvivit=CViViTConfig(codebook_size=1024), maskgit=MaskGitConfig(num_tokens=512))


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size=60, patch_size=8), "divisible"),
    (dict(codebook_size=1000), "power of two"),
    (dict(dim=0), "positive integer"),
    (dict(quantizer="vq2"), "quantizer"),
])
def test_cvivit_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CViViTConfig(**kwargs)


def test_config_json_with_unknown_keys_is_rejected():
    data = preset("tiny").to_dict()
    data["maskgit"]["dimm"] = 3
    with pytest.raises(ConfigError, match="dimm"):
        PhenakiConfig.from_dict(data)
    with pytest.raises(ConfigError, match="JSON"):
        PhenakiConfig.from_json("{not json")


def test_max_frames_follows_max_seq_len():
    assert preset("tiny").max_frames == 9
    assert preset("shapes64").max_frames == 17


def test_every_config_shares_one_meaning_of_a_whole_number_and_a_number():
    from phenaki_core.validation import is_int, is_number
    assert is_int(3) and is_int(0, 0) and not is_int(0, 1) and not is_int(True) and not is_int(2.0)
    assert is_number(0.5, 0, 1) and is_number(2) and not is_number(float("nan")) and not is_number(float("inf"))
    assert not is_number(False) and not is_number(1.5, maximum=1) and not is_number(-1, 0) and not is_number("1")
    for build in (lambda: SamplerConfig(steps=True), lambda: SamplerConfig(temperature=True),
                  lambda: CViViTConfig(dim=True)):
        with pytest.raises(ConfigError):
            build()
