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
from compdd.evaluation.records import ResultRecord, SeedResult
from compdd.evaluation.run import DataSource, evaluate_distilled, run_eval_distilled, run_evaluation
from compdd.hub import load_subset
from compdd.methods import ConfigError, Method, MethodConfig, create_method, list_methods, register_method
from compdd.models import create_model, list_models, register_model
from compdd.registry import UnknownNameError

__all__ = [
    "__version__",
    "ConfigError",
    "DataSource",
    "Definition",
    "DistilledSet",
    "Method",
    "MethodConfig",
    "Protocol",
    "ResultRecord",
    "SeedResult",
    "Subset",
    "SubsetTensors",
    "UnknownNameError",
    "create_method",
    "create_model",
    "evaluate_distilled",
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
    "run_eval_distilled",
    "run_evaluation",
]
