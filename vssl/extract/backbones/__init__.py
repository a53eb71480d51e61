"""Frozen clip encoders: the interface, the registry and the built-in families."""

from .base import Backbone, InputSpec
from .registry import BackboneEntry, create_backbone, get_backbone_entry, list_backbones, register_backbone

__all__ = ["Backbone", "InputSpec", "BackboneEntry", "create_backbone", "get_backbone_entry",
           "list_backbones", "register_backbone"]
