"""Evaluation: reading generated Shapes World clips back into (colour, shape, motion); the eval
report (``report``); how much unseen wording a text encoder carries (``text_probe``)."""

from .shapes_judge import (ClipReading, FrameStats, chain_continuity, confusion_table, frame_stats, read_clip,
                           read_clips, score_readings)

__all__ = ["ClipReading", "FrameStats", "chain_continuity", "confusion_table", "frame_stats", "read_clip",
           "read_clips", "score_readings"]
