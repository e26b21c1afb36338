"""Training data: the procedural Shapes World (see SHAPES_WORLD.md) and its captions."""

from .captions import (COLOURS, HELDOUT_MOTION_PHRASES, HELDOUT_SHAPE_SYNONYMS, HELDOUT_WORDS,
                       MOTION_PARTICIPLES, MOTION_VERBS, MOTIONS, PALETTE, SHAPE_SYNONYMS, SHAPES,
                       EvalPrompt, canonical_caption, evaluation_prompts, evaluation_stories,
                       parse_caption, training_caption)
from .shapes_world import (ShapesClip, ShapesWorldConfig, ShapesWorldDataset, plan_trajectory,
                           render_clip, render_video)

__all__ = [
    "COLOURS", "HELDOUT_MOTION_PHRASES", "HELDOUT_SHAPE_SYNONYMS", "HELDOUT_WORDS",
    "MOTION_PARTICIPLES", "MOTION_VERBS", "MOTIONS", "PALETTE", "SHAPE_SYNONYMS", "SHAPES",
    "EvalPrompt", "canonical_caption", "evaluation_prompts", "evaluation_stories", "parse_caption",
    "training_caption", "ShapesClip", "ShapesWorldConfig", "ShapesWorldDataset",
    "plan_trajectory", "render_clip", "render_video",
]
