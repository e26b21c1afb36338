"""Shapes World vocabulary: palette, shapes, motions, captions and evaluation prompts.

This module is the single place that holds every word the Shapes World generator can say
(the contract in docs/shapes_world.md asks for that). It has three parts:

* the world's attributes: :data:`PALETTE` (exact RGB values), :data:`SHAPES`, :data:`MOTIONS`;
* training captions: :func:`canonical_caption` and :func:`training_caption`, which picks the
  canonical form or a paraphrase built from :data:`SHAPE_SYNONYMS`, :data:`MOTION_PARTICIPLES`,
  :data:`MOTION_VERBS` and the templates;
* evaluation: :data:`HELDOUT_SHAPE_SYNONYMS` and :data:`HELDOUT_MOTION_PHRASES`, paraphrases the
  generator never produces, and the fixed prompt lists :func:`evaluation_prompts` and
  :func:`evaluation_stories`.

Pure Python; randomness only through an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal, NamedTuple

import numpy as np

# --------------------------------------------------------------------------------------------
# The world's attributes (exactly as in docs/shapes_world.md)
# --------------------------------------------------------------------------------------------

#: Colour name -> RGB in 0..255. Order is fixed (indices are used as class ids).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
    "orange": (240, 130, 30),
    "white": (235, 235, 235),
    "cyan": (40, 200, 210),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
TRANSLATIONS: tuple[str, ...] = ("moving left", "moving right", "moving up", "moving down")
SIZE_MOTIONS: tuple[str, ...] = ("growing", "shrinking")
MOTIONS: tuple[str, ...] = TRANSLATIONS + ("standing still",) + SIZE_MOTIONS

# --------------------------------------------------------------------------------------------
# Training paraphrases: the ONLY place where caption wording lives
# --------------------------------------------------------------------------------------------

#: Shape name -> nouns used in training captions (the canonical noun first).
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc", "disk", "dot", "round shape", "circular shape"),
    "square": ("square", "box", "block", "square shape", "rectangle", "four-sided shape"),
    "triangle": ("triangle", "triangular shape", "three-sided shape", "three-cornered shape", "triangle shape"),
}

#: Motion -> participle phrases (fit after the noun, or after "is"). Canonical phrase first.
MOTION_PARTICIPLES: dict[str, tuple[str, ...]] = {
    "moving left": ("moving left", "heading left", "going left", "moving to the left",
                    "sliding to the left", "travelling left", "gliding left", "shifting left",
                    "moving leftwards"),
    "moving right": ("moving right", "heading right", "going right", "moving to the right",
                     "sliding to the right", "travelling right", "gliding right", "shifting right",
                     "moving rightwards"),
    "moving up": ("moving up", "heading up", "going up", "moving upwards", "sliding up",
                  "travelling up", "ascending", "climbing", "gliding up"),
    "moving down": ("moving down", "heading down", "going down", "moving downwards",
                    "sliding down", "travelling down", "descending", "falling", "gliding down"),
    "standing still": ("standing still", "not moving", "staying still", "staying in place",
                       "sitting still", "holding still", "keeping still", "resting", "unmoving",
                       "at rest"),
    "growing": ("growing", "getting bigger", "getting larger", "increasing in size",
                "becoming bigger", "enlarging", "inflating", "becoming larger"),
    "shrinking": ("shrinking", "getting smaller", "becoming smaller", "decreasing in size",
                  "diminishing", "deflating", "getting tinier"),
}

#: Motion -> finite verb phrases, third person singular ("the ball slides to the left").
MOTION_VERBS: dict[str, tuple[str, ...]] = {
    "moving left": ("moves left", "heads left", "slides to the left", "goes left",
                    "travels left", "glides left", "shifts left"),
    "moving right": ("moves right", "heads right", "slides to the right", "goes right",
                     "travels right", "glides right", "shifts right"),
    "moving up": ("moves up", "heads up", "slides up", "goes up", "travels up", "ascends", "climbs"),
    "moving down": ("moves down", "heads down", "slides down", "goes down", "travels down", "descends",
                    "falls"),
    "standing still": ("stands still", "stays still", "does not move", "stays put",
                       "stays in place", "rests", "keeps still"),
    "growing": ("grows", "gets bigger", "gets larger", "grows bigger", "enlarges", "inflates"),
    "shrinking": ("shrinks", "gets smaller", "becomes smaller", "diminishes", "deflates"),
}

#: Templates for participle phrases. ``{a}`` is "a" or "an" (for "orange").
PARTICIPLE_TEMPLATES: tuple[str, ...] = (
    "{a} {colour} {shape} {motion}",
    "{colour} {shape}, {motion}",
    "the {colour} {shape} is {motion}",
    "{a} {colour} {shape} that is {motion}",
    "a video of {a} {colour} {shape} {motion}",
    "{colour} {shape} {motion}",
)
#: Templates for finite verb phrases.
VERB_TEMPLATES: tuple[str, ...] = (
    "{a} {colour} {shape} {motion}",
    "the {colour} {shape} {motion}",
)
#: Probability that a paraphrase uses a participle template (else a finite-verb template).
PARTICIPLE_SHARE = 0.7

# --------------------------------------------------------------------------------------------
# Held-out paraphrases: used ONLY by evaluation, never by the generator
# --------------------------------------------------------------------------------------------

HELDOUT_SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("orb", "sphere"),
    "square": ("cube", "tile"),
    "triangle": ("pyramid", "wedge"),
}
#: Participle-form phrases (so they fit the participle templates).
HELDOUT_MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "moving left": ("drifting to the left", "creeping left"),
    "moving right": ("drifting to the right", "creeping right"),
    "moving up": ("rising", "floating upward"),
    "moving down": ("sinking", "dropping"),
    "standing still": ("staying motionless", "remaining stationary"),
    "growing": ("expanding", "swelling"),
    "shrinking": ("contracting", "dwindling"),
}
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "{a} {colour} {shape} {motion}",
    "there is {a} {colour} {shape} {motion}",
    "the {colour} {shape} is {motion}",
)
#: Words that appear only in held-out phrases; no generated caption may contain any of them.
HELDOUT_WORDS: frozenset[str] = frozenset(
    {"orb", "sphere", "cube", "tile", "pyramid", "wedge", "drifting", "creeping", "rising",
     "floating", "upward", "sinking", "dropping", "motionless", "remaining", "stationary",
     "expanding", "swelling", "contracting", "dwindling", "there"}
)


# --------------------------------------------------------------------------------------------
# Caption construction
# --------------------------------------------------------------------------------------------

def _check(colour: str, shape: str, motion: str) -> None:
    if colour not in PALETTE:
        raise ValueError(f"unknown colour {colour!r}; choose one of {COLOURS}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose one of {MOTIONS}")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def canonical_caption(colour: str, shape: str, motion: str) -> str:
    """The contract's canonical caption ``a {colour} {shape} {motion}``.

    The form is literal (``a orange ...`` included), so every evaluator builds the same string.
    Paraphrases use the grammatical article (``an orange ...``).
    """
    _check(colour, shape, motion)
    return f"a {colour} {shape} {motion}"


def paraphrase_caption(colour: str, shape: str, motion: str, rng: np.random.Generator) -> str:
    """A random training paraphrase (may coincide with the canonical wording)."""
    _check(colour, shape, motion)
    noun = SHAPE_SYNONYMS[shape][rng.integers(len(SHAPE_SYNONYMS[shape]))]
    if rng.random() < PARTICIPLE_SHARE:
        phrases, templates = MOTION_PARTICIPLES[motion], PARTICIPLE_TEMPLATES
    else:
        phrases, templates = MOTION_VERBS[motion], VERB_TEMPLATES
    phrase = phrases[rng.integers(len(phrases))]
    template = templates[rng.integers(len(templates))]
    return template.format(a=_article(colour), colour=colour, shape=noun, motion=phrase)


def training_caption(colour: str, shape: str, motion: str, rng: np.random.Generator,
                     paraphrase_prob: float = 0.5) -> str:
    """Caption for a training clip: a paraphrase with probability ``paraphrase_prob``, else canonical."""
    if not 0.0 <= paraphrase_prob <= 1.0:
        raise ValueError(f"paraphrase_prob must be in [0, 1], got {paraphrase_prob!r}")
    if rng.random() < paraphrase_prob:
        return paraphrase_caption(colour, shape, motion, rng)
    return canonical_caption(colour, shape, motion)


def all_training_phrases() -> dict[str, frozenset[str]]:
    """Every noun/phrase the generator can emit, by kind: ``{"shape": ..., "motion": ...}``."""
    shapes = {n for ns in SHAPE_SYNONYMS.values() for n in ns}
    motions = {p for table in (MOTION_PARTICIPLES, MOTION_VERBS) for ps in table.values() for p in ps}
    return {"shape": frozenset(shapes), "motion": frozenset(motions)}


# --------------------------------------------------------------------------------------------
# Caption parsing (training + held-out wording)
# --------------------------------------------------------------------------------------------

class CaptionAttributes(NamedTuple):
    colour: str
    shape: str
    motion: str


@lru_cache(maxsize=1)
def _phrase_patterns() -> tuple[tuple[tuple[re.Pattern[str], str], ...], ...]:
    def patterns(table: dict[str, list[str]]) -> tuple[tuple[re.Pattern[str], str], ...]:
        items = [(phrase, key) for key, phrases in table.items() for phrase in phrases]
        items.sort(key=lambda kv: -len(kv[0]))  # longest first
        return tuple((re.compile(rf"\b{re.escape(p)}\b"), k) for p, k in items)

    colours = {c: [c] for c in COLOURS}
    shapes = {s: list(SHAPE_SYNONYMS[s]) + list(HELDOUT_SHAPE_SYNONYMS[s]) for s in SHAPES}
    motions = {m: list(MOTION_PARTICIPLES[m]) + list(MOTION_VERBS[m]) + list(HELDOUT_MOTION_PHRASES[m])
               for m in MOTIONS}
    return patterns(colours), patterns(shapes), patterns(motions)


def parse_caption(text: str) -> CaptionAttributes | None:
    """Read (colour, shape, motion) back from a caption in any known wording.

    Returns ``None`` unless exactly one colour, one shape and one motion are mentioned.
    """
    text = text.lower()
    found: list[str] = []
    for table in _phrase_patterns():
        hits = set()
        rest = text
        for pattern, key in table:  # longest phrases first; blank out what matched
            if pattern.search(rest):
                hits.add(key)
                rest = pattern.sub(" ", rest)
        if len(hits) != 1:
            return None
        found.append(hits.pop())
    return CaptionAttributes(*found)


# --------------------------------------------------------------------------------------------
# Evaluation prompts
# --------------------------------------------------------------------------------------------

class EvalPrompt(NamedTuple):
    """One evaluation prompt and the attributes the judge should read from its video."""

    prompt: str
    colour: str
    shape: str
    motion: str


NUM_EVAL_PROMPTS = 42  # 2 x (3 shapes x 7 motions); colours cycle (5 or 6 each)


def _eval_targets() -> list[tuple[str, str, str]]:
    # 3 and 7 are coprime, so i -> (i % 3, i % 7) visits all 21 shape/motion pairs every 21 steps.
    return [(COLOURS[i % len(COLOURS)], SHAPES[i % len(SHAPES)], MOTIONS[i % len(MOTIONS)])
            for i in range(NUM_EVAL_PROMPTS)]


def evaluation_prompts(kind: Literal["canonical", "heldout"] = "canonical") -> list[EvalPrompt]:
    """The fixed evaluation prompt list (deterministic, no randomness).

    ``"canonical"``: 42 canonical captions; each shape/motion pair twice, each colour 5-6 times.
    ``"heldout"``: the same 42 targets worded only with held-out nouns/phrases and templates the
    generator never produces (tests language transfer of the text encoder).
    """
    out = []
    for i, (colour, shape, motion) in enumerate(_eval_targets()):
        if kind == "canonical":
            prompt = canonical_caption(colour, shape, motion)
        elif kind == "heldout":
            nouns, phrases = HELDOUT_SHAPE_SYNONYMS[shape], HELDOUT_MOTION_PHRASES[motion]
            template = HELDOUT_TEMPLATES[i % len(HELDOUT_TEMPLATES)]
            prompt = template.format(a=_article(colour), colour=colour,
                                     shape=nouns[(i // 3) % len(nouns)],
                                     motion=phrases[(i // 7) % len(phrases)])
        else:
            raise ValueError(f"kind must be 'canonical' or 'heldout', got {kind!r}")
        out.append(EvalPrompt(prompt, colour, shape, motion))
    return out


_STORY_MOTIONS: tuple[tuple[str, str, str], ...] = (
    ("moving right", "moving left", "standing still"),
    ("moving up", "moving down", "growing"),
    ("moving left", "moving right", "shrinking"),
    ("moving down", "moving up", "standing still"),
    ("growing", "moving right", "moving left"),
    ("shrinking", "moving up", "moving down"),
    ("standing still", "moving left", "moving right"),
    ("moving right", "moving up", "moving left"),
)


def evaluation_stories() -> list[tuple[EvalPrompt, ...]]:
    """Fixed multi-scene stories for scene chaining: one object (colour, shape) per story,
    three canonical scenes with different motions. Judge each scene, and
    ``chain_continuity`` between consecutive scenes."""
    stories = []
    for i, motions in enumerate(_STORY_MOTIONS):
        colour, shape = COLOURS[i % len(COLOURS)], SHAPES[i % len(SHAPES)]
        stories.append(tuple(EvalPrompt(canonical_caption(colour, shape, m), colour, shape, m)
                             for m in motions))
    return stories
