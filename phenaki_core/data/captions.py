"""Shapes World vocabulary: palette, shapes, motions, captions and evaluation prompts.

This module is the single place that holds every word the Shapes World generator can say
(the contract in docs/shapes_world.md asks for that). It has three parts:

* the world's attributes: :data:`PALETTE` (exact RGB values), :data:`SHAPES`, :data:`MOTIONS`;
* training captions: :func:`canonical_caption` and :func:`paraphrase_caption`, a paraphrase built
  from :data:`COLOUR_SYNONYMS`, :data:`SHAPE_SYNONYMS`, :data:`MOTION_PARTICIPLES`,
  :data:`MOTION_VERBS` and the templates (:mod:`.typed` adds the forms people type in a node
  editor, and its :func:`~.typed.training_caption` mixes the three);
* evaluation: :data:`HELDOUT_COLOUR_SYNONYMS`, :data:`HELDOUT_SHAPE_SYNONYMS` and
  :data:`HELDOUT_MOTION_PHRASES`, paraphrases the generator never produces, and the fixed prompt
  lists :func:`evaluation_prompts` and :func:`evaluation_stories`.

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

#: Colour name -> words for it in training captions (the palette word first). Everyday shades
#: map to the palette colour nearest to them, so "crimson" draws red and "navy" draws blue;
#: shades that sit between two palette colours (indigo, magenta, olive, grey) are left out.
COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet", "cherry red", "ruby", "blood red", "bright red", "deep red",
            "fire-engine red", "tomato red", "cherry", "maroon", "burgundy", "rose red", "wine red",
            "cardinal red"),
    "green": ("green", "emerald", "lime green", "grass green", "leaf green", "forest green",
              "bright green", "kelly green", "emerald green", "apple green", "jade", "jade green",
              "lime", "pine green", "moss green", "mint green"),
    "blue": ("blue", "navy", "navy blue", "royal blue", "midnight blue", "deep blue", "dark blue",
             "sapphire", "bright blue", "electric blue", "cobalt", "cobalt blue", "denim blue",
             "indigo blue", "cornflower blue", "azure"),
    "yellow": ("yellow", "gold", "golden", "sunshine yellow", "mustard", "butter yellow",
               "sunflower yellow", "bright yellow", "banana yellow", "golden yellow", "lemon",
               "lemon yellow", "honey yellow", "amber yellow", "daffodil yellow", "yellowish"),
    "purple": ("purple", "violet", "plum", "grape", "lavender", "mauve", "deep purple",
               "royal purple", "purplish", "bright purple", "lilac", "orchid", "eggplant purple",
               "magenta purple", "violet purple", "purple-violet"),
    "orange": ("orange", "tangerine", "amber", "pumpkin", "burnt orange", "bright orange",
               "carrot orange", "marigold", "orangey", "deep orange", "fiery orange",
               "tangerine orange", "peach orange", "copper", "rust orange", "mango orange"),
    "white": ("white", "snow white", "snowy", "pearl white", "cream", "off-white", "milky white",
              "chalk white", "bright white", "pure white", "ivory", "ivory white", "pearl",
              "snow", "bone white", "whitish"),
    "cyan": ("cyan", "turquoise", "teal", "sky blue", "light blue", "baby blue", "turquoise blue",
             "bright cyan", "pale blue", "icy blue", "aqua", "aqua blue", "teal blue", "cyan blue",
             "powder blue", "turquoise green"),
}

#: Shape name -> nouns used in training captions (the canonical noun first).
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc", "disk", "dot", "round shape", "circular shape", "orb",
               "sphere", "bubble", "coin", "spot", "round object", "round blob"),
    "square": ("square", "box", "block", "square shape", "rectangle", "four-sided shape", "cube",
               "tile", "brick", "square object", "square block", "quadrilateral"),
    "triangle": ("triangle", "triangular shape", "three-sided shape", "three-cornered shape",
                 "triangle shape", "pyramid", "wedge", "triangular object", "cone", "delta"),
}

#: Motion -> participle phrases (fit after the noun, or after "is"). Canonical phrase first.
MOTION_PARTICIPLES: dict[str, tuple[str, ...]] = {
    "moving left": ("moving left", "heading left", "going left", "moving to the left",
                    "sliding to the left", "travelling left", "traveling left", "gliding left",
                    "shifting left", "moving leftwards", "moving leftward", "drifting left",
                    "drifting to the left", "creeping left", "rolling left", "flying left",
                    "moving from right to left", "veering left", "scrolling left"),
    "moving right": ("moving right", "heading right", "going right", "moving to the right",
                     "sliding to the right", "travelling right", "traveling right", "gliding right",
                     "shifting right", "moving rightwards", "moving rightward", "drifting right",
                     "drifting to the right", "creeping right", "rolling right", "flying right",
                     "moving from left to right", "veering right", "scrolling right"),
    "moving up": ("moving up", "heading up", "going up", "moving upwards", "moving upward",
                  "sliding up", "travelling up", "ascending", "climbing", "gliding up", "rising",
                  "floating up", "floating upward", "flying up", "lifting up", "going upward",
                  "heading to the top", "moving toward the top"),
    "moving down": ("moving down", "heading down", "going down", "moving downwards",
                    "moving downward", "sliding down", "travelling down", "descending", "falling",
                    "gliding down", "sinking", "dropping", "falling down", "coming down",
                    "going downward", "heading to the bottom", "moving toward the bottom"),
    "standing still": ("standing still", "not moving", "staying still", "staying in place",
                       "sitting still", "holding still", "keeping still", "resting", "unmoving",
                       "at rest", "motionless", "staying motionless", "stationary",
                       "remaining stationary", "static", "not moving at all", "staying put",
                       "sitting in place"),
    "growing": ("growing", "getting bigger", "getting larger", "increasing in size",
                "becoming bigger", "enlarging", "inflating", "becoming larger", "expanding",
                "swelling", "scaling up", "growing larger", "growing bigger", "getting huge"),
    "shrinking": ("shrinking", "getting smaller", "becoming smaller", "decreasing in size",
                  "diminishing", "deflating", "getting tinier", "contracting", "dwindling",
                  "scaling down", "becoming tiny", "getting tiny", "shrinking away"),
}

#: Motion -> finite verb phrases, third person singular ("the ball slides to the left").
MOTION_VERBS: dict[str, tuple[str, ...]] = {
    "moving left": ("moves left", "heads left", "slides to the left", "goes left",
                    "travels left", "glides left", "shifts left", "drifts left", "rolls left",
                    "moves to the left", "flies left", "moves from right to left"),
    "moving right": ("moves right", "heads right", "slides to the right", "goes right",
                     "travels right", "glides right", "shifts right", "drifts right", "rolls right",
                     "moves to the right", "flies right", "moves from left to right"),
    "moving up": ("moves up", "heads up", "slides up", "goes up", "travels up", "ascends", "climbs",
                  "rises", "floats up", "flies up", "moves upward", "lifts up"),
    "moving down": ("moves down", "heads down", "slides down", "goes down", "travels down", "descends",
                    "falls", "sinks", "drops", "comes down", "moves downward", "falls down"),
    "standing still": ("stands still", "stays still", "does not move", "stays put",
                       "stays in place", "rests", "keeps still", "remains still", "stays motionless",
                       "remains stationary", "does not move at all", "sits still"),
    "growing": ("grows", "gets bigger", "gets larger", "grows bigger", "enlarges", "inflates",
                "expands", "swells", "scales up", "grows larger"),
    "shrinking": ("shrinks", "gets smaller", "becomes smaller", "diminishes", "deflates",
                  "contracts", "dwindles", "scales down", "shrinks away", "gets tinier"),
}

#: Templates for participle phrases. ``{a}`` is "a"; :func:`fix_articles` turns it into "an"
#: before a vowel once the words are in.
PARTICIPLE_TEMPLATES: tuple[str, ...] = (
    "{a} {colour} {shape} {motion}",
    "{colour} {shape}, {motion}",
    "the {colour} {shape} is {motion}",
    "{a} {colour} {shape} that is {motion}",
    "a video of {a} {colour} {shape} {motion}",
    "{colour} {shape} {motion}",
    "{a} {shape} in {colour}, {motion}",
    "an animation of {a} {colour} {shape} {motion}",
    "a clip showing {a} {colour} {shape} {motion}",
    "a single {colour} {shape} {motion} on a black background",
    "one {colour} {shape} {motion}",
    "{a} {colour} {shape} is {motion}",
)
#: Templates for finite verb phrases.
VERB_TEMPLATES: tuple[str, ...] = (
    "{a} {colour} {shape} {motion}",
    "the {colour} {shape} {motion}",
    "{a} {shape} in {colour} {motion}",
    "the {shape}, which is {colour}, {motion}",
)
#: Probability that a paraphrase uses a participle template (else a finite-verb template).
PARTICIPLE_SHARE = 0.7
#: Probability that a paraphrase names the colour by a shade from :data:`COLOUR_SYNONYMS`
#: (else by its palette word).
SHADE_SHARE = 0.5

# --------------------------------------------------------------------------------------------
# Held-out paraphrases: used ONLY by evaluation, never by the generator
# --------------------------------------------------------------------------------------------

#: Shade names the generator never uses, nearest to each palette colour.
HELDOUT_COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("vermilion", "carmine"),
    "green": ("shamrock", "viridian"),
    "blue": ("ultramarine", "lapis"),
    "yellow": ("canary", "saffron"),
    "purple": ("amethyst", "heliotrope"),
    "orange": ("apricot", "persimmon"),
    "white": ("alabaster", "eggshell"),
    "cyan": ("aquamarine", "caribbean blue"),
}
HELDOUT_SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("marble", "puck"),
    "square": ("crate", "slab"),
    "triangle": ("arrowhead", "prism"),
}
#: Participle-form phrases (so they fit the participle templates).
HELDOUT_MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "moving left": ("sailing to the left", "edging left"),
    "moving right": ("sailing to the right", "edging right"),
    "moving up": ("soaring", "hovering upward"),
    "moving down": ("plunging", "tumbling down"),
    "standing still": ("frozen in place", "sitting idle"),
    "growing": ("ballooning", "puffing up"),
    "shrinking": ("withering", "shriveling"),
}
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "{a} {colour} {shape} {motion}",
    "there is {a} {colour} {shape} {motion}",
    "the {colour} {shape} is {motion}",
)
#: Words that appear only in held-out phrases; no generated caption may contain any of them.
HELDOUT_WORDS: frozenset[str] = frozenset(
    {"vermilion", "carmine", "shamrock", "viridian", "ultramarine", "lapis", "canary", "saffron",
     "amethyst", "heliotrope", "apricot", "persimmon", "alabaster", "eggshell", "aquamarine",
     "caribbean", "marble", "puck", "crate", "slab", "arrowhead", "prism",
     "sailing", "edging", "soaring", "hovering", "plunging", "tumbling", "frozen", "idle",
     "ballooning", "puffing", "withering", "shriveling", "there"}
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


def fix_articles(text: str) -> str:
    """``a`` -> ``an`` before a vowel (and back), after the template's words are filled in."""
    return re.sub(r"\b(a|an) (\w)", lambda m: f"{_article(m.group(2))} {m.group(2)}", text)


def canonical_caption(colour: str, shape: str, motion: str) -> str:
    """The contract's canonical caption ``a {colour} {shape} {motion}``.

    The form is literal (``a orange ...`` included), so every evaluator builds the same string.
    Paraphrases use the grammatical article (``an orange ...``).
    """
    _check(colour, shape, motion)
    return f"a {colour} {shape} {motion}"


def paraphrase_caption(colour: str, shape: str, motion: str, rng: np.random.Generator) -> str:
    """A random training paraphrase (may coincide with the canonical wording).

    The colour is named by its palette word or, with probability :data:`SHADE_SHARE`, by a shade;
    the shape by one of its nouns; the motion by a participle or a finite verb phrase, in one of
    the templates; a quarter of the paraphrases end with a full stop, as typed prompts often do.
    """
    _check(colour, shape, motion)
    shades = COLOUR_SYNONYMS[colour]
    colour_word = shades[1 + rng.integers(len(shades) - 1)] if rng.random() < SHADE_SHARE else colour
    noun = SHAPE_SYNONYMS[shape][rng.integers(len(SHAPE_SYNONYMS[shape]))]
    if rng.random() < PARTICIPLE_SHARE:
        phrases, templates = MOTION_PARTICIPLES[motion], PARTICIPLE_TEMPLATES
    else:
        phrases, templates = MOTION_VERBS[motion], VERB_TEMPLATES
    phrase = phrases[rng.integers(len(phrases))]
    template = templates[rng.integers(len(templates))]
    text = fix_articles(template.format(a="a", colour=colour_word, shape=noun, motion=phrase))
    return text + "." if rng.random() < 0.25 else text


def all_training_phrases() -> dict[str, frozenset[str]]:
    """Every word or phrase the generator can emit, by kind: ``{"colour", "shape", "motion"}``."""
    colours = {c for cs in COLOUR_SYNONYMS.values() for c in cs}
    shapes = {n for ns in SHAPE_SYNONYMS.values() for n in ns}
    motions = {p for table in (MOTION_PARTICIPLES, MOTION_VERBS) for ps in table.values() for p in ps}
    return {"colour": frozenset(colours), "shape": frozenset(shapes), "motion": frozenset(motions)}


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

    colours = {c: list(COLOUR_SYNONYMS[c]) + list(HELDOUT_COLOUR_SYNONYMS[c]) for c in COLOURS}
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


def evaluation_targets() -> list[tuple[str, str, str]]:
    # 3 and 7 are coprime, so i -> (i % 3, i % 7) visits all 21 shape/motion pairs every 21 steps.
    return [(COLOURS[i % len(COLOURS)], SHAPES[i % len(SHAPES)], MOTIONS[i % len(MOTIONS)])
            for i in range(NUM_EVAL_PROMPTS)]


def evaluation_prompts(kind: Literal["canonical", "shades", "heldout"] = "canonical") -> list[EvalPrompt]:
    """The fixed evaluation prompt list (deterministic, no randomness).

    ``"canonical"``: 42 canonical captions; each shape/motion pair twice, each colour 5-6 times.
    ``"shades"``: the same 42 targets in the canonical form, with the colour named by one of the
    everyday shades of the training captions instead of its palette word (a different shade each
    time it comes round).
    ``"heldout"``: the same 42 targets worded only with held-out shades, nouns, phrases and
    templates the generator never produces (tests language transfer of the text encoder).
    """
    out = []
    for i, (colour, shape, motion) in enumerate(evaluation_targets()):
        if kind == "canonical":
            prompt = canonical_caption(colour, shape, motion)
        elif kind == "shades":
            shades = COLOUR_SYNONYMS[colour][1:]
            prompt = fix_articles(f"a {shades[(i // len(COLOURS)) % len(shades)]} {shape} {motion}")
        elif kind == "heldout":
            shades = HELDOUT_COLOUR_SYNONYMS[colour]
            nouns, phrases = HELDOUT_SHAPE_SYNONYMS[shape], HELDOUT_MOTION_PHRASES[motion]
            template = HELDOUT_TEMPLATES[i % len(HELDOUT_TEMPLATES)]
            prompt = fix_articles(template.format(a="a", colour=shades[(i // 8) % len(shades)],
                                                   shape=nouns[(i // 3) % len(nouns)],
                                                   motion=phrases[(i // 7) % len(phrases)]))
        else:
            raise ValueError(f"kind must be 'canonical', 'shades' or 'heldout', got {kind!r}")
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
