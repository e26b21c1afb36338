"""Error types shown to users.

Every error a user can cause (bad config, bad input tensor, bad checkpoint, missing text encoder)
is one of these. They subclass ``ValueError`` so callers that catch ``ValueError`` keep working,
and their messages say what to change.
"""

from __future__ import annotations


class PhenakiError(ValueError):
    """Base class for all user-facing errors raised by phenaki_core."""


class ConfigError(PhenakiError):
    """A configuration value is invalid or two configs do not fit together."""


class InputError(PhenakiError):
    """A tensor, prompt or frame count passed to the model is invalid."""


class CheckpointError(PhenakiError):
    """A checkpoint file is missing, unsafe, corrupt or does not match the expected model."""


class TextEncoderError(PhenakiError):
    """A text encoder cannot be found or loaded, or does not match the checkpoint."""
