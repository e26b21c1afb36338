"""Prompts as people type them into a node editor: the styling layer over Shapes World captions.

People rarely type ``a red circle moving right``. They type tag lists with quality words
(``red ball, moving right, best quality, 4k``), commands (``make a red ball move to the right``),
capitals and punctuation (``A Red Circle Moving Right!``), other tenses (``a red ball moved
right``), adverbs (``a red ball slowly moving right``), words about the frame (``... across the
screen``) and light typos (``a red cirlce moving rigth``). :func:`typed_caption` builds training
captions in all of these forms from the vocabulary of :mod:`.captions`; its word lists are the
training fillers.

:func:`typed_evaluation_prompts` is the fixed evaluation set of such prompts. Its fillers (tags,
command openers, adverbs, frame words, tense forms) come from separate ``HELDOUT_TYPED_*`` lists
that training never uses (:data:`HELDOUT_TYPED_WORDS`, tested), so the set measures whether the
model follows a *form* of prompt, not whether it remembers a prompt.

Pure Python; randomness only through an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

import numpy as np

from .captions import (COLOUR_SYNONYMS, HELDOUT_WORDS, MOTION_PARTICIPLES, MOTION_VERBS, MOTIONS, SHAPE_SYNONYMS, canonical_caption,
                       evaluation_targets, fix_articles, paraphrase_caption)

# --------------------------------------------------------------------------------------------
# Training fillers
# --------------------------------------------------------------------------------------------

#: Quality and style tags of tag-list prompts.
QUALITY_TAGS: tuple[str, ...] = (
    "high quality", "best quality", "masterpiece", "4k", "hd", "highly detailed", "detailed", "sharp focus",
    "simple animation", "2d animation", "flat colors", "flat colours", "minimalist", "clean", "smooth motion",
    "vector style", "cartoon style", "black background", "dark background", "simple shapes", "looping",
    "gif", "animation", "motion graphics", "digital art", "sharp", "crisp", "smooth", "high resolution",
    "professional", "beautiful", "studio quality", "simple", "minimal", "clean lines", "solid color",
    "no text", "centered", "uhd", "hq",
)
#: Command openers; ``{x}`` is the object, ``{motion}`` what it does (participle, verb or base form).
COMMAND_TEMPLATES: tuple[str, ...] = (
    "draw {x} {participle}", "show {x} {participle}", "show me {x} {participle}", "create {x} {participle}",
    "generate {x} {participle}", "animate {x} {participle}", "render {x} {participle}",
    "i want {x} {participle}", "give me {x} {participle}", "please draw {x} {participle}",
    "make a video of {x} {participle}", "generate a clip of {x} {participle}", "a video showing {x} {participle}",
    "make {x} {base}", "let {x} {base}", "have {x} {base}", "i want {x} to {base}", "show {x} that {verb}",
    "please make {x} {base}", "can you make {x} {base}", "create an animation where {x} {verb}",
    "make a clip where {x} {verb}", "show how {x} {verb}",
)
#: Adverbs placed before or after the motion.
ADVERBS: tuple[str, ...] = (
    "slowly", "quickly", "fast", "smoothly", "steadily", "gently", "gradually", "rapidly", "constantly",
    "continuously", "evenly", "very slowly", "really fast", "softly", "nicely", "quietly", "very smoothly",
)
#: Adverbs for standing still (``a red ball standing perfectly still`` reads better than ``slowly``).
STILL_ADVERBS: tuple[str, ...] = ("calmly", "quietly", "patiently", "silently")
#: Words about the frame or the screen, appended to the prompt.
FRAME_WORDS: tuple[str, ...] = (
    "on the screen", "on screen", "in the frame", "in frame", "on a black background", "on black",
    "in the video", "on a dark screen", "in the picture", "against a black background", "on a plain background",
    "in the scene", "on an empty screen", "in the middle of the screen", "in the center of the frame",
    "across the screen", "across the frame",
)
#: Frame words that name a place, so they are not used with translations.
_PLACE_WORDS = frozenset({"in the middle of the screen", "in the center of the frame"})
#: ... and those that imply a path, so they are not used with standing still or size changes.
_PATH_WORDS = frozenset({"across the screen", "across the frame"})

#: Irregular or spelling-changing past tenses of the finite verbs in :data:`.captions.MOTION_VERBS`.
_IRREGULAR_PAST: dict[str, str] = {
    "goes": "went", "flies": "flew", "rises": "rose", "falls": "fell", "sinks": "sank", "comes": "came",
    "gets": "got", "becomes": "became", "grows": "grew", "shrinks": "shrank", "sits": "sat", "keeps": "kept",
    "slides": "slid", "stands": "stood", "drops": "dropped", "does": "did",
}


# --------------------------------------------------------------------------------------------
# Held-out fillers: evaluation only, never in a training caption
# --------------------------------------------------------------------------------------------

HELDOUT_TYPED_TAGS: tuple[str, ...] = ("ultra detailed", "8k", "trending on artstation", "cinematic",
                                       "award winning", "octane render", "intricate", "vivid")
HELDOUT_TYPED_COMMANDS: tuple[str, ...] = ("produce {x} {participle}", "depict {x} {participle}",
                                           "could you show {x} {participle}", "illustrate {x} {participle}",
                                           "i'd like {x} to {base}", "would you make {x} {base}")
HELDOUT_TYPED_ADVERBS: tuple[str, ...] = ("leisurely", "briskly", "lazily", "swiftly", "unhurriedly", "casually")
HELDOUT_TYPED_STILL_ADVERBS: tuple[str, ...] = ("serenely", "peacefully")
HELDOUT_TYPED_FRAME_WORDS: tuple[str, ...] = ("within the viewport", "on the display", "in the shot",
                                              "on a pitch-black backdrop", "in this footage", "on the monitor")
#: Tense forms of the evaluation set; ``{p}`` a participle phrase, ``{base}`` a base verb phrase.
#: Endings of the casing form (training uses :data:`_ENDINGS`).
HELDOUT_TYPED_ENDINGS: tuple[str, ...] = ("?!", "!!!", " :)")
HELDOUT_TYPED_TENSES: tuple[str, ...] = ("{x} had been {p}", "{x} is about to {base}", "{x} would be {p}",
                                         "{x} used to {base}")
#: Words of the held-out fillers; no training caption contains any of them (tested).
HELDOUT_TYPED_WORDS: frozenset[str] = frozenset({
    "ultra", "8k", "artstation", "cinematic", "award", "octane", "intricate", "vivid",
    "produce", "depict", "could", "illustrate", "i'd", "would",
    "leisurely", "briskly", "lazily", "swiftly", "unhurriedly", "casually", "serenely", "peacefully",
    "viewport", "display", "shot", "backdrop", "footage", "monitor", "had", "about", "used",
})


# --------------------------------------------------------------------------------------------
# Verb forms
# --------------------------------------------------------------------------------------------

def base_form(verb_phrase: str) -> str | None:
    """``"slides to the left"`` -> ``"slide to the left"``; None for ``"does not move"``-style phrases."""
    head, _, rest = verb_phrase.partition(" ")
    if head == "does":
        return None
    if head == "goes":
        base = "go"
    elif head.endswith("ies"):
        base = head[:-3] + "y"
    elif re.search(r"(sh|ch|x|ss)es$", head):
        base = head[:-2]
    else:
        base = head[:-1]
    return f"{base} {rest}".strip()


def past_form(verb_phrase: str) -> str:
    """``"slides to the left"`` -> ``"slid to the left"``, ``"does not move"`` -> ``"did not move"``."""
    head, _, rest = verb_phrase.partition(" ")
    if head in _IRREGULAR_PAST:
        past = _IRREGULAR_PAST[head]
    elif head.endswith("ies"):
        past = head[:-3] + "ied"
    elif head.endswith("es") and not re.search(r"(sh|ch|x|ss)es$", head):
        past = head[:-1] + "d"
    elif re.search(r"(sh|ch|x|ss)es$", head):
        past = head[:-2] + "ed"
    else:
        past = head[:-1] + "ed"
    return f"{past} {rest}".strip()


def _base_verbs(motion: str) -> tuple[str, ...]:
    return tuple(b for b in (base_form(v) for v in MOTION_VERBS[motion]) if b)


# --------------------------------------------------------------------------------------------
# Surface noise: casing, punctuation, typos
# --------------------------------------------------------------------------------------------

_NEVER_TYPED = HELDOUT_WORDS | HELDOUT_TYPED_WORDS
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
#: letter -> the keys left and right of it on a QWERTY keyboard
_NEIGHBOURS: dict[str, str] = {ch: row[max(0, i - 1):i] + row[i + 1:i + 2]
                               for row in _KEYBOARD_ROWS for i, ch in enumerate(row)}


def typo(word: str, rng: np.random.Generator) -> str:
    """One light typo in ``word`` (letters swapped, dropped, doubled or a neighbouring key);
    words under 4 letters come back unchanged. A typo never makes a held-out evaluation word
    (``create`` -> ``crate``): another is drawn."""
    if len(word) < 4 or not word.isalpha():
        return word
    for _ in range(8):
        wrong = _one_typo(word, rng)
        if wrong.lower() not in _NEVER_TYPED:
            return wrong
    return word


def _one_typo(word: str, rng: np.random.Generator) -> str:
    i = int(rng.integers(1, len(word) - 1))  # keep the first letter, as typists mostly do
    kind = int(rng.integers(4))
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    near = _NEIGHBOURS.get(word[i].lower(), "")
    return word[:i] + near[int(rng.integers(len(near)))] + word[i + 1:] if near else word[:i] + word[i + 1:]


def add_typos(text: str, rng: np.random.Generator, count: int = 1) -> str:
    """``count`` typos in distinct words of 4+ letters."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    for i in rng.permutation(candidates)[:count]:
        words[i] = typo(words[i], rng)
    return " ".join(words)


def recase(text: str, kind: int) -> str:
    """0 unchanged, 1 first letter capital, 2 Title Case, 3 UPPER CASE."""
    if kind == 1:
        return text[:1].upper() + text[1:]
    if kind == 2:
        return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))
    if kind == 3:
        return text.upper()
    return text


_ENDINGS = (".", "!", "...", "!!", " .", ",")


# --------------------------------------------------------------------------------------------
# Training captions
# --------------------------------------------------------------------------------------------

class _Words(NamedTuple):
    x: str            # "a crimson ball"
    participle: str   # "sliding to the left"
    verb: str         # "slides to the left"
    base: str         # "slide to the left"
    colour: str
    shape: str


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _words(colour: str, shape: str, motion: str, rng: np.random.Generator) -> _Words:
    colour_word = _pick(COLOUR_SYNONYMS[colour][1:], rng) if rng.random() < 0.4 else colour
    noun = _pick(SHAPE_SYNONYMS[shape], rng) if rng.random() < 0.6 else shape
    participle = _pick(MOTION_PARTICIPLES[motion], rng) if rng.random() < 0.7 else motion
    verb = _pick(MOTION_VERBS[motion], rng)
    base = _pick(_base_verbs(motion), rng)
    article = "the" if rng.random() < 0.2 else "a"
    return _Words(fix_articles(f"{article} {colour_word} {noun}"), participle, verb, base, colour_word, noun)


def _with_adverb(phrase: str, motion: str, rng: np.random.Generator, adverbs: tuple[str, ...],
                 still_adverbs: tuple[str, ...]) -> str:
    if motion == "standing still":
        return f"{phrase} {_pick(still_adverbs, rng)}"
    adverb = _pick(adverbs, rng)
    return f"{adverb} {phrase}" if rng.random() < 0.5 else f"{phrase} {adverb}"


def _frame_words(motion: str, rng: np.random.Generator, words: tuple[str, ...]) -> str:
    moving = motion in MOTIONS[:4]
    allowed = tuple(w for w in words if not (moving and w in _PLACE_WORDS)
                    and not (not moving and w in _PATH_WORDS))
    return _pick(allowed, rng)


def _tag_list(w: _Words, rng: np.random.Generator, tags: tuple[str, ...]) -> str:
    chosen = [str(t) for t in rng.choice(tags, size=int(rng.integers(1, 5)), replace=False)]
    if rng.random() < 0.3:  # prompt-weight syntax, as in Stable Diffusion graphs
        chosen[0] = f"({chosen[0]}:{rng.choice([1.1, 1.2, 1.3, 1.4])})"
    subject = w.x.split(" ", 1)[1] if rng.random() < 0.7 else w.x  # tags drop the article
    if rng.random() < 0.3:
        parts = [w.colour, w.shape, w.participle]
    elif rng.random() < 0.5:
        parts = [f"{subject} {w.participle}"]
    else:
        parts = [subject, w.participle]
    if rng.random() < 0.2:
        parts[0] = f"({parts[0]}:{rng.choice([1.2, 1.3, 1.5])})"
    at = int(rng.integers(0, 2)) if rng.random() < 0.3 else 0
    items = chosen[:at] + parts + chosen[at:]
    return _pick((", ", ", ", ",", " | ", "; "), rng).join(items)


def _command(w: _Words, rng: np.random.Generator, templates: tuple[str, ...]) -> str:
    return _pick(templates, rng).format(x=w.x, participle=w.participle, verb=w.verb, base=w.base)


def _tense(w: _Words, rng: np.random.Generator) -> str:
    gerund = w.participle.split(" ", 1)[0].endswith("ing")
    forms = (f"{w.x} {past_form(w.verb)}", f"{w.x} was {w.participle}", f"{w.x} will {w.base}",
             f"{w.x} will be {w.participle}", f"{w.x} is going to {w.base}", f"{w.x} has been {w.participle}",
             f"{w.x} keeps {w.participle}" if gerund else f"{w.x} is {w.participle}", f"{w.x} {w.verb}",
             f"{w.x} {w.verb}")
    return _pick(forms, rng)


def typed_caption(colour: str, shape: str, motion: str, rng: np.random.Generator) -> str:
    """A training caption in one of the ways people type prompts (module docstring): a sentence,
    tag list, command or other tense, with an adverb, frame words, casing, punctuation and typos
    drawn independently."""
    w = _words(colour, shape, motion, rng)
    form = rng.random()
    if form < 0.3:
        text = _tag_list(w, rng, QUALITY_TAGS)
    else:
        if rng.random() < 0.35:
            w = w._replace(participle=_with_adverb(w.participle, motion, rng, ADVERBS, STILL_ADVERBS),
                           verb=_with_adverb(w.verb, motion, rng, ADVERBS, STILL_ADVERBS),
                           base=_with_adverb(w.base, motion, rng, ADVERBS, STILL_ADVERBS))
        if form < 0.55:
            text = _command(w, rng, COMMAND_TEMPLATES)
        elif form < 0.8:
            text = _tense(w, rng)
        else:
            text = f"{w.x} {w.participle}"
        if rng.random() < 0.35:
            text = f"{text} {_frame_words(motion, rng, FRAME_WORDS)}"
    text = fix_articles(text)
    if rng.random() < 0.3:
        text = add_typos(text, rng, 1 if rng.random() < 0.75 else 2)
    if rng.random() < 0.4:
        text += _pick(_ENDINGS, rng)
    return recase(text, int(rng.choice(4, p=[0.45, 0.35, 0.12, 0.08])))


# --------------------------------------------------------------------------------------------
# The evaluation set
# --------------------------------------------------------------------------------------------

class TypedPrompt(NamedTuple):
    """One prompt of the typed evaluation set, its form and the attributes its video should show."""

    prompt: str
    colour: str
    shape: str
    motion: str
    form: str


def _eval_words(colour: str, shape: str, motion: str, i: int) -> _Words:
    """Everyday words, deterministic: palette word or a training shade, noun, participle."""
    shades, nouns = COLOUR_SYNONYMS[colour], SHAPE_SYNONYMS[shape]
    colour_word = shades[(i // 2) % 4] if i % 2 else colour
    noun = nouns[(i // 3) % 4]
    participles = MOTION_PARTICIPLES[motion]
    participle = participles[(i // 5) % 5]
    verbs = MOTION_VERBS[motion]
    verb = verbs[(i // 4) % 4]
    bases = _base_verbs(motion)
    return _Words(fix_articles(f"a {colour_word} {noun}"), participle, verb, bases[(i // 4) % len(bases)],
                  colour_word, noun)


def _typed_forms() -> dict[str, Callable[[_Words, str, int, np.random.Generator], str]]:
    def tags(w, motion, i, rng):
        return _tag_list(w, rng, HELDOUT_TYPED_TAGS)

    def command(w, motion, i, rng):
        return _command(w, rng, HELDOUT_TYPED_COMMANDS)

    def casing(w, motion, i, rng):
        text = f"{w.x} {w.participle}{HELDOUT_TYPED_ENDINGS[i % 3]}"
        return recase(text, 1 + i % 3)

    def typos(w, motion, i, rng):
        return add_typos(f"{w.x} {w.participle}", rng, 1 + i % 2)

    def tense(w, motion, i, rng):
        return HELDOUT_TYPED_TENSES[i % len(HELDOUT_TYPED_TENSES)].format(x=w.x, p=w.participle, base=w.base)

    def adverb(w, motion, i, rng):
        return f"{w.x} {_with_adverb(w.participle, motion, rng, HELDOUT_TYPED_ADVERBS, HELDOUT_TYPED_STILL_ADVERBS)}"

    def frame(w, motion, i, rng):
        return f"{w.x} {w.participle} {HELDOUT_TYPED_FRAME_WORDS[i % len(HELDOUT_TYPED_FRAME_WORDS)]}"

    return {"tags": tags, "command": command, "casing": casing, "typos": typos, "tense": tense,
            "adverb": adverb, "frame": frame}


TYPED_FORMS: tuple[str, ...] = tuple(_typed_forms())
TYPED_PER_TARGET = 3  # 3 prompts x 42 targets: each of the 7 forms 18 times


def typed_evaluation_prompts() -> list[TypedPrompt]:
    """The fixed set of prompts typed the way people type them: the 42 evaluation targets of
    :func:`.captions.evaluation_prompts`, each in 3 of the 7 forms (tag list, command, casing and
    punctuation, typos, other tense, adverb, frame words); 126 prompts, deterministic."""
    forms = _typed_forms()
    names = list(forms)
    out = []
    for i, (colour, shape, motion) in enumerate(evaluation_targets()):
        for k in range(TYPED_PER_TARGET):
            n = i * TYPED_PER_TARGET + k
            form = names[n % len(names)]
            rng = np.random.default_rng(9000 + n)
            text = fix_articles(forms[form](_eval_words(colour, shape, motion, n), motion, n, rng))
            out.append(TypedPrompt(text, colour, shape, motion, form))
    return out



# --------------------------------------------------------------------------------------------
# The training mix
# --------------------------------------------------------------------------------------------

def training_caption(colour: str, shape: str, motion: str, rng: np.random.Generator,
                     paraphrase_prob: float = 0.5, typed_share: float = 0.0) -> str:
    """Caption for a training clip: canonical with probability ``1 - paraphrase_prob``; otherwise
    reworded, as typed by people (:func:`typed_caption`) with probability ``typed_share``, else a
    paraphrase (:func:`.captions.paraphrase_caption`). With ``typed_share=0`` the random draws
    are those of a mix without typed captions."""
    for name, value in (("paraphrase_prob", paraphrase_prob), ("typed_share", typed_share)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    if rng.random() >= paraphrase_prob:
        return canonical_caption(colour, shape, motion)
    if typed_share > 0 and rng.random() < typed_share:
        return typed_caption(colour, shape, motion, rng)
    return paraphrase_caption(colour, shape, motion, rng)
