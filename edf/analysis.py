"""EDF's analysis outputs: how much of each synthetic image is discriminative, before and after distillation.

The paper's Fig. 5b reports, per image, the percentage of pixels whose Grad-CAM activation is above the
image's mean activation, for the initial images and for the distilled ones. :func:`write_analysis`
writes, into one folder (atomically):

``discriminative_area.json``  per image: class, wnid, percentage before and after, the change; per class and
                              overall means; the CAM model and settings used.
``cam_overlays.png``          initial and distilled images side by side with their CAMs overlaid and the
                              percentage in each title (up to 4 images for each of up to 10 classes).

"Before" needs the training rows the synthetic images started from (``meta["source_indices"]``, recorded
by the trajectory-matching engine for real-image initialisations); without them only "after" is reported.
Works for any distilled set of a subset, e.g. a DATM set to compare with EDF under the same CAM model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from compdd.data import SubsetTensors
from compdd.distilled import DistilledSet
from compdd.paths import atomic_path
from edf.cam import CamNet, compute_cams, target_indices
from edf.dae import discriminative_area

REPORT_FILE = "discriminative_area.json"
FIGURE_FILE = "cam_overlays.png"


def _maps(net: CamNet, images: Tensor, classes: Tensor, labels: Tensor, *, method: str, target: str,
          compat_edf_code: bool, batch_size: int) -> Tensor:
    targets = target_indices(net, classes, labels, target=target, compat_edf_code=compat_edf_code)
    return compute_cams(net, images, targets, method=method, batch_size=batch_size,
                        generator=torch.Generator().manual_seed(0))


def discriminative_area_report(distilled: DistilledSet, train: SubsetTensors, net: CamNet, *,
                               method: str = "gradcam", target: str = "class", compat_edf_code: bool = False,
                               batch_size: int = 64) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The report (JSON-ready) and the tensors behind it: images and maps, before (if known) and after."""
    C = train.num_classes
    n = len(distilled)
    if n % C:
        raise ValueError(f"{n} images do not split into {C} classes; analysis needs a class-major set")
    ipc = n // C
    classes = torch.arange(C).repeat_interleave(ipc)
    soft = distilled.labels.float() if distilled.labels.ndim == 2 else torch.nn.functional.one_hot(
        distilled.labels, C).float()
    kw = dict(method=method, target=target, compat_edf_code=compat_edf_code, batch_size=batch_size)
    device = next(net.module.parameters()).device
    after = distilled.images.float().to(device)
    out: dict[str, Tensor] = {"classes": classes, "after": after.cpu(),
                              "maps_after": _maps(net, after, classes, soft, **kw).cpu()}
    pct_after = discriminative_area(out["maps_after"])
    sources = distilled.meta.get("source_indices") or []
    pct_before = None
    if len(sources) == n:
        rows = torch.tensor(sources, dtype=torch.long)
        init = SubsetTensors(train.images[rows], train.labels[rows], train.wnids, train.subset, train.split)
        before = init.normalized(device)
        # initial soft labels are not stored; DATM/EDF initialise them with argmax = the image's class
        one_hot = torch.nn.functional.one_hot(classes, C).float()
        out["before"] = before.cpu()
        out["maps_before"] = _maps(net, before, classes, one_hot, **kw).cpu()
        pct_before = discriminative_area(out["maps_before"])

    images = []
    for i in range(n):
        c = int(classes[i])
        row: dict[str, Any] = {"index": i, "class": c, "wnid": train.wnids[c], "after": round(float(pct_after[i]), 3)}
        if pct_before is not None:
            row["before"] = round(float(pct_before[i]), 3)
            row["change"] = round(float(pct_after[i] - pct_before[i]), 3)
        images.append(row)

    def summary(sel: Tensor) -> dict[str, float]:
        s = {"after": round(float(pct_after[sel].mean()), 3)}
        if pct_before is not None:
            s["before"] = round(float(pct_before[sel].mean()), 3)
            s["change"] = round(s["after"] - s["before"], 3)
        return s

    report = {
        "metric": "percentage of pixels whose CAM activation is above the image's mean activation",
        "cam": {"model": net.name, "kind": net.kind, "layer": net.layer, "method": method, "target": target,
                "compat": "edf-code" if compat_edf_code else "none"},
        "subset": train.subset, "ipc": ipc, "n_images": n, "before_known": pct_before is not None,
        "overall": summary(torch.ones(n, dtype=torch.bool)),
        "per_class": {train.wnids[c]: summary(classes == c) for c in range(C)},
        "images": images,
    }
    return report, out


def _to_rgb(x: Tensor) -> Tensor:
    from compdd import imagenet

    mean = torch.tensor(imagenet.MEAN).view(3, 1, 1)
    std = torch.tensor(imagenet.STD).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1).permute(1, 2, 0)


def plot_overlays(report: dict[str, Any], tensors: dict[str, Tensor], path: str | os.PathLike[str],
                  max_classes: int = 10, max_per_class: int = 4) -> None:
    """Grid of CAM overlays: one row per class, (initial, distilled) pairs per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = tensors["classes"]
    has_before = "before" in tensors
    rows = list(range(int(classes.max()) + 1))[:max_classes]
    per = min(max_per_class, int((classes == 0).sum()))
    cols = per * (2 if has_before else 1)
    height = 1.7 * len(rows) + 0.9  # the last 0.9 inch holds the title
    fig, axes = plt.subplots(len(rows), cols, figsize=(max(1.6 * cols, 5.0), height), squeeze=False)
    for r, c in enumerate(rows):
        idx = torch.nonzero(classes == c).flatten()[:per].tolist()
        panels = []
        for i in idx:
            if has_before:
                panels.append((tensors["before"][i], tensors["maps_before"][i], report["images"][i]["before"], "init"))
            panels.append((tensors["after"][i], tensors["maps_after"][i], report["images"][i]["after"], "final"))
        for k, (img, cam, pct, tag) in enumerate(panels):
            ax = axes[r][k]
            ax.imshow(_to_rgb(img).numpy())
            ax.imshow(cam.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_title(f"{tag} {pct:.1f}%", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(report["images"][idx[0]]["wnid"], fontsize=7)
    o = report["overall"]
    title = f"{report['subset']} ipc{report['ipc']}: discriminative area {o['after']:.1f}%"
    if "before" in o:
        title += f"\n(initial {o['before']:.1f}%, change {o['change']:+.1f})"
    fig.suptitle(f"{title}\nCAM: {report['cam']['method']} on {report['cam']['model']}", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.9 / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_analysis(distilled: DistilledSet, train: SubsetTensors, net: CamNet, folder: str | os.PathLike[str], *,
                   method: str = "gradcam", target: str = "class", compat_edf_code: bool = False,
                   batch_size: int = 64) -> list[Path]:
    """Write the report and the overlay figure into ``folder`` (replaced atomically); return their paths."""
    report, tensors = discriminative_area_report(distilled, train, net, method=method, target=target,
                                                 compat_edf_code=compat_edf_code, batch_size=batch_size)
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
        plot_overlays(report, tensors, tmp / FIGURE_FILE)
    return [folder / REPORT_FILE, folder / FIGURE_FILE]
