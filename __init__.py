"""Phenaki for ComfyUI: the custom-node pack entry point (ComfyUI imports this file).

The model code lives in ``phenaki_core/`` and the nodes in ``nodes/``; both are imported
relatively, so the pack works straight from ``ComfyUI/custom_nodes/`` without being installed.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
