"""The Hub side of Comp-DD: export subsets to the Hub layout, publish them, and load them back.

- :func:`export_dataset` (``compdd export``): Parquet configs with the original JPEG bytes, plus the card;
- :func:`publish` / :func:`plan_publish` (``compdd publish``): one commit to a dataset repo, or a dry run;
- :func:`load_subset`: a subset as a ``datasets.DatasetDict`` from the Hub, a local export or an ImageNet folder.

Heavy imports (datasets, huggingface_hub, pyarrow) happen inside the functions, so ``import compdd`` stays fast.
"""

from __future__ import annotations

from compdd.hub.export import ExportReport, export_dataset
from compdd.hub.load import load_subset
from compdd.hub.publish import HubAuthError, PublishPlan, plan_publish, publish

__all__ = ["ExportReport", "HubAuthError", "PublishPlan", "export_dataset", "load_subset", "plan_publish", "publish"]
