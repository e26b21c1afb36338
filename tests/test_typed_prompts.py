"""Prompts as people type them: the training forms and the held-out evaluation set (data/typed.py)."""

import re
from collections import Counter

import numpy as np
import pytest

from phenaki_core.data import captions as cap
from phenaki_core.data import typed
from phenaki_core.data.captions import COLOURS, MOTIONS, SHAPES, canonical_caption, paraphrase_caption
from phenaki_core.data.shapes_world import ShapesWorldConfig, render_clip
from phenaki_core.data.typed import (HELDOUT_TYPED_ENDINGS, HELDOUT_TYPED_WORDS, TYPED_FORMS, add_typos, base_form,
                                     past_form, recase, training_caption, typed_caption, typed_evaluation_prompts,
                                     typo)


def _typed(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [typed_caption(COLOURS[rng.integers(8)], SHAPES[rng.integers(3)], MOTIONS[rng.integers(7)], rng)
            for _ in range(n)]


def _held_out_pattern() -> re.Pattern[str]:
    return re.compile(r"(?<![\w'])(" + "|".join(map(re.escape, sorted(HELDOUT_TYPED_WORDS))) + r")(?![\w'])")


def test_training_captions_cover_the_ways_people_type():
    captions = _typed(4000)
    joined = "\n".join(captions)
    assert len(set(captions)) > 3500
    for form in (r"^[^ ]+ [^,|;]+[,|;] ?", r"^(draw|make|show|create|generate|animate|render|i want|give me|please)",
                 r"\b(moved|went|slid|flew|fell|sank|grew|shrank|was|will)\b", r"\b(slowly|quickly|smoothly)\b",
                 r"\b(on the screen|in the frame|across the screen)\b", r"\(\w[^:]*:1\.\d\)", r"[.!]$"):
        assert re.search(form, joined, re.MULTILINE | re.IGNORECASE), form
    assert sum(c.isupper() for c in captions) > 200                      # UPPER CASE ...
    assert sum(c[:1].isupper() and not c.isupper() for c in captions) > 1000  # ... and Capitalised
    words = set(re.findall(r"[a-z]+", joined.lower()))
    vocabulary = {w for phrases in cap.all_training_phrases().values() for p in phrases for w in re.findall(r"[a-z]+", p)}
    misspelt = words - vocabulary - {w for t in typed.QUALITY_TAGS + typed.FRAME_WORDS + typed.ADVERBS
                                     for w in re.findall(r"[a-z]+", t)}
    assert len(misspelt) > 300  # light typos, drawn at random rather than listed


def test_no_training_caption_holds_a_held_out_filler():
    pattern = _held_out_pattern()
    captions = _typed(20000, seed=1)
    captions += [render_clip(s, ShapesWorldConfig(image_size=16, num_frames=3, prime_frames=1)).caption
                 for s in range(300)]
    offenders = [c for c in captions if pattern.search(c.lower())]
    assert not offenders, offenders[:5]
    assert not [c for c in captions if c.endswith(HELDOUT_TYPED_ENDINGS)]
    old = re.compile(r"\b(" + "|".join(map(re.escape, cap.HELDOUT_WORDS)) + r")\b")  # the older held-out list too
    assert not [c for c in captions if old.search(c.lower())]


def test_the_typed_evaluation_set_is_fixed_covers_every_form_and_target():
    prompts = typed_evaluation_prompts()
    assert prompts == typed_evaluation_prompts() and len(prompts) == 126
    assert Counter(p.form for p in prompts) == {form: 18 for form in TYPED_FORMS}
    assert Counter((p.colour, p.shape, p.motion) for p in prompts) == Counter(
        {target: 3 for target in cap.evaluation_targets()})
    assert len({p.prompt for p in prompts}) == 126
    pattern = _held_out_pattern()
    for p in prompts:
        if p.form in ("tags", "command", "tense", "adverb", "frame"):
            assert pattern.search(p.prompt.lower()), p  # a filler training never uses
        elif p.form == "casing":
            assert p.prompt != p.prompt.lower() and p.prompt.endswith(HELDOUT_TYPED_ENDINGS), p
        else:  # typos: the words are the training words, misspelt
            assert cap.parse_caption(p.prompt) != (p.colour, p.shape, p.motion), p


def test_verb_forms():
    assert base_form("slides to the left") == "slide to the left" and base_form("flies up") == "fly up"
    assert base_form("diminishes") == "diminish" and base_form("goes left") == "go left"
    assert base_form("does not move") is None
    assert past_form("slides to the left") == "slid to the left" and past_form("moves right") == "moved right"
    assert past_form("does not move") == "did not move" and past_form("diminishes") == "diminished"
    assert past_form("drops") == "dropped" and past_form("flies left") == "flew left"
    for verbs in cap.MOTION_VERBS.values():  # every finite verb has a past form ending in a real word
        assert all(re.fullmatch(r"[a-z ]+", past_form(v)) for v in verbs)


def test_typos_and_casing():
    rng = np.random.default_rng(0)
    for word in ("circle", "triangle", "moving", "yellow"):
        for _ in range(20):
            wrong = typo(word, rng)
            assert wrong != word or len(set(word)) < len(word)  # a doubled letter swapped with itself
            assert wrong[0] == word[0] and abs(len(wrong) - len(word)) <= 1
    assert typo("red", rng) == "red" and typo("4k", rng) == "4k"
    text = "a red circle moving right"
    noisy = add_typos(text, rng, 1)
    assert sum(a != b for a, b in zip(noisy.split(), text.split())) == 1 and noisy.split()[:2] == ["a", "red"]
    assert recase(text, 2) == "A Red Circle Moving Right" and recase(text, 3) == text.upper()
    assert recase(text, 1) == "A red circle moving right" and recase(text, 0) == text


def test_training_caption_mix():
    rng = np.random.default_rng(3)
    assert all(training_caption("red", "circle", "growing", rng, 0.0, 1.0) == "a red circle growing"
               for _ in range(50))
    # typed_share=0 draws what a mix without typed captions draws
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(200):
        expected = paraphrase_caption("red", "square", "moving up", b) if b.random() < 0.5 else \
            canonical_caption("red", "square", "moving up")
        assert training_caption("red", "square", "moving up", a, 0.5, 0.0) == expected
    captions = [training_caption("blue", "triangle", "shrinking", rng, 1.0, 0.5) for _ in range(2000)]
    typed_like = sum(bool(re.search(r"[A-Z,|;!(]|\b(draw|make|show|will|was)\b", c)) for c in captions)
    assert 500 < typed_like < 1500
    with pytest.raises(ValueError, match="typed_share"):
        training_caption("red", "circle", "growing", rng, 0.5, 1.5)
