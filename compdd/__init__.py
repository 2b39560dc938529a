"""Comp-DD: the complexity-aware dataset-distillation benchmark and toolkit.

Public API (stable names; everything else is internal):

>>> import compdd
>>> compdd.list_subsets("*-hard")[:2]
['bird-hard', 'dog-hard']
>>> compdd.list_methods()            # built-ins plus entry-point plugins such as ``edf``
>>> method = compdd.create_method("random")
>>> model = compdd.create_model("convnet_d3", num_classes=10, res=32)
"""

from __future__ import annotations

__version__ = "0.1.0"

from compdd.benchmark import Definition, Subset, get_subset, list_subsets, load_definition
from compdd.data import SubsetTensors, load_tensors
from compdd.distilled import DistilledSet
from compdd.evaluation.protocols import Protocol, get_protocol, list_protocols
from compdd.evaluation.records import ResultRecord
from compdd.hub import load_subset
from compdd.methods import ConfigError, Method, MethodConfig, create_method, list_methods, register_method
from compdd.models import create_model, list_models, register_model
from compdd.registry import UnknownNameError

__all__ = [
    "__version__",
    "ConfigError",
    "Definition",
    "DistilledSet",
    "Method",
    "MethodConfig",
    "Protocol",
    "ResultRecord",
    "Subset",
    "SubsetTensors",
    "UnknownNameError",
    "create_method",
    "create_model",
    "get_protocol",
    "get_subset",
    "list_methods",
    "list_models",
    "list_protocols",
    "list_subsets",
    "load_subset",
    "load_tensors",
    "load_definition",
    "register_method",
    "register_model",
]
