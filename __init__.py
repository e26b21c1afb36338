"""Phenaki for ComfyUI: the custom-node pack entry point (ComfyUI imports this file).

The model code lives in ``phenaki_core/`` and the nodes in ``nodes/``; both are imported
relatively, so the pack works straight from ``ComfyUI/custom_nodes/`` without being installed.
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a lone module rather than as ComfyUI's custom-node package: pytest does this
    # with a checkout whose folder name is not a Python name (``phenaki-comfyui``). There are no
    # nodes to register then; the tests import ``nodes`` themselves.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
