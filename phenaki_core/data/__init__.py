"""Training data: the procedural Shapes World (see docs/shapes_world.md) and its captions."""

from .captions import (COLOUR_SYNONYMS, COLOURS, HELDOUT_COLOUR_SYNONYMS, HELDOUT_MOTION_PHRASES, HELDOUT_SHAPE_SYNONYMS, HELDOUT_WORDS,
                       MOTION_PARTICIPLES, MOTION_VERBS, MOTIONS, PALETTE, SHAPE_SYNONYMS, SHAPES,
                       EvalPrompt, canonical_caption, evaluation_prompts, evaluation_stories,
                       paraphrase_caption, parse_caption)
from .typed import TypedPrompt, training_caption, typed_caption, typed_evaluation_prompts
from .shapes_world import (ShapesClip, ShapesWorldConfig, ShapesWorldDataset, plan_trajectory,
                           render_clip, render_video)
from .shards import (ShardIndex, TokenShardDataset, collate_shards, precompute_shards, read_index,
                     token_frame_mask, tokenizer_fingerprint)
from .video_folder import (VideoFolderConfig, VideoFolderDataset, VideoFolderReport, read_caption_index,
                           sample_frame_indices)

__all__ = [
    "COLOUR_SYNONYMS", "COLOURS", "HELDOUT_COLOUR_SYNONYMS", "HELDOUT_MOTION_PHRASES", "HELDOUT_SHAPE_SYNONYMS", "HELDOUT_WORDS",
    "MOTION_PARTICIPLES", "MOTION_VERBS", "MOTIONS", "PALETTE", "SHAPE_SYNONYMS", "SHAPES",
    "EvalPrompt", "canonical_caption", "evaluation_prompts", "evaluation_stories", "parse_caption",
    "paraphrase_caption", "training_caption", "TypedPrompt", "typed_caption", "typed_evaluation_prompts",
    "ShapesClip", "ShapesWorldConfig", "ShapesWorldDataset",
    "plan_trajectory", "render_clip", "render_video",
    "ShardIndex", "TokenShardDataset", "collate_shards", "precompute_shards", "read_index", "token_frame_mask",
    "tokenizer_fingerprint", "VideoFolderConfig", "VideoFolderDataset", "VideoFolderReport",
    "read_caption_index", "sample_frame_indices",
]
