"""A stand-in for the part of ComfyUI's V3 node API (``comfy_api.v0_0_2``) that the pack uses, so
the nodes can be defined and executed where ComfyUI is absent (pytest, scripts). Only
``comfy_adapter`` imports it, and only when ``comfy_api`` cannot be imported.

Arguments after an input's ``id`` are keyword-only here (ComfyUI's own order has more
parameters), so a node that passes them by position fails in the tests, not in ComfyUI.

It mirrors ComfyUI's own classes: the same names, the same keyword arguments (the subset the nodes
pass) and the same attributes, so a schema reads the same either way (``schema.inputs[i].id``,
``.optional``, ``.default``, ``.min``, ``.options``, ``.io_type`` ...). It has none of ComfyUI's
executor: ``execute`` is called directly and returns an ``io.NodeOutput``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Optional


class Input:
    """An input socket (comfy_api ``io.Input``); ``io_type`` comes from the type it belongs to."""

    io_type = None

    def __init__(self, id: str, *, display_name: Optional[str] = None, optional: bool = False,
                 tooltip: Optional[str] = None):
        self.id, self.display_name, self.optional, self.tooltip = id, display_name, optional, tooltip


class WidgetInput(Input):
    def __init__(self, id: str, *, display_name: Optional[str] = None, optional: bool = False,
                 tooltip: Optional[str] = None, default: Any = None):
        super().__init__(id, display_name=display_name, optional=optional, tooltip=tooltip)
        self.default = default


class Output:
    io_type = None

    def __init__(self, id: Optional[str] = None, *, display_name: Optional[str] = None, tooltip: Optional[str] = None,
                 is_output_list: bool = False):
        self.id, self.tooltip, self.is_output_list = id, tooltip, is_output_list
        self.display_name = display_name if display_name else id


def _comfy_type(io_type: str, input_class: type = Input) -> type:
    """A ComfyType (``io.Image``, ``io.Custom(...)``): a class with ``io_type`` and its Input/Output."""
    return type(io_type.title(), (), {
        "io_type": io_type,
        "Input": type("Input", (input_class,), {"io_type": io_type}),
        "Output": type("Output", (Output,), {"io_type": io_type}),
    })


def Custom(io_type: str) -> type:  # noqa: N802 - mirrors io.Custom
    return _comfy_type(io_type)


class _IntInput(WidgetInput):
    def __init__(self, id: str, *, display_name: Optional[str] = None, optional: bool = False,
                 tooltip: Optional[str] = None, default: Optional[int] = None, min: Optional[int] = None,
                 max: Optional[int] = None, step: Optional[int] = None, control_after_generate: Optional[bool] = None):
        super().__init__(id, display_name=display_name, optional=optional, tooltip=tooltip, default=default)
        self.min, self.max, self.step, self.control_after_generate = min, max, step, control_after_generate


class _FloatInput(WidgetInput):
    def __init__(self, id: str, *, display_name: Optional[str] = None, optional: bool = False,
                 tooltip: Optional[str] = None, default: Optional[float] = None, min: Optional[float] = None,
                 max: Optional[float] = None, step: Optional[float] = None):
        super().__init__(id, display_name=display_name, optional=optional, tooltip=tooltip, default=default)
        self.min, self.max, self.step = min, max, step


class _StringInput(WidgetInput):
    def __init__(self, id: str, *, display_name: Optional[str] = None, optional: bool = False,
                 tooltip: Optional[str] = None, multiline: bool = False, default: Optional[str] = None):
        super().__init__(id, display_name=display_name, optional=optional, tooltip=tooltip, default=default)
        self.multiline = multiline


class _ComboInput(WidgetInput):
    def __init__(self, id: str, *, options: Optional[list] = None, display_name: Optional[str] = None,
                 optional: bool = False, tooltip: Optional[str] = None, default: Any = None):
        super().__init__(id, display_name=display_name, optional=optional, tooltip=tooltip, default=default)
        self.options = options


Int = _comfy_type("INT", _IntInput)
Float = _comfy_type("FLOAT", _FloatInput)
String = _comfy_type("STRING", _StringInput)
Boolean = _comfy_type("BOOLEAN", WidgetInput)
Combo = _comfy_type("COMBO", _ComboInput)
Image = _comfy_type("IMAGE")


@dataclass
class Schema:
    node_id: str
    display_name: Optional[str] = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    description: str = ""
    search_aliases: list = field(default_factory=list)
    is_output_node: bool = False


class NodeOutput:
    def __init__(self, *args: Any, ui: Any = None):
        self.args, self.ui = args, ui

    @property
    def result(self):
        return self.args if self.args else None

    def __getitem__(self, index):
        return self.args[index]


class ComfyNode:
    """Nodes override the classmethods ``define_schema`` and ``execute`` (and optionally
    ``validate_inputs``, ``fingerprint_inputs``), exactly as on ComfyUI's ``io.ComfyNode``."""

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError


class ComfyExtension:
    async def get_node_list(self) -> list:
        raise NotImplementedError


io = SimpleNamespace(ComfyNode=ComfyNode, Schema=Schema, NodeOutput=NodeOutput, Custom=Custom, Input=Input,
                     Output=Output, Int=Int, Float=Float, String=String, Boolean=Boolean, Combo=Combo, Image=Image)
