"""The scoring network: loading it from ``--weights``, and training a small one on a tree (``train-on-tree``).

A scorer is a timm network with a 1000-way head in the standard ImageNet-1K index order (sorted wnids), so the
Grad-CAM target for an image is simply the index of its class. ``--weights`` accepts:

- a timm name with a pretrained tag, e.g. ``resnet18.tv_in1k`` (torchvision V1, what the public Comp-DD code used),
  resolved through the Hugging Face cache, so it works offline once cached;
- a local checkpoint: ``.safetensors`` (ours carry their architecture in the metadata) or a torch file read with
  ``torch.load(weights_only=True)`` (torchvision ``.pth`` files load into the timm ResNet of the same depth);
- ``random``: random initialisation, for tests only; the scores mean nothing.

:func:`train_scorer` trains a small timm ResNet on the tree itself (for the generated sample ImageNet, which has no
pretrained weights) and saves a ``.safetensors`` checkpoint that ``--weights`` accepts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compdd import imagenet
from compdd.paths import atomic_path

log = logging.getLogger(__name__)

META_KEY = "compdd_scorer"
DEFAULT_ARCH = "resnet18"
# The small scorer for generated trees: a one-block-per-stage ResNet-18 layout, narrow, and dilated so that the last
# block keeps 1/8 of the input resolution (8 x 8 maps at 64 px) instead of 1/32.
SMALL_ARCH = "resnet18"
SMALL_KWARGS: dict[str, Any] = {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 64], "output_stride": 8}


class ScorerWeightsError(ValueError):
    """The weights named by ``--weights`` cannot be had; the message says how to provide them."""


@dataclass
class Scorer:
    model: nn.Module
    arch: str
    weights: str  # as given by the user
    source: str  # "timm", "file", "random"
    sha256: str  # of the state dict (sorted keys, raw bytes): the same weights give the same hash in any format
    input_size: int
    mean: tuple[float, float, float] = imagenet.MEAN
    std: tuple[float, float, float] = imagenet.STD
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"arch": self.arch, "weights": self.weights, "source": self.source, "sha256": self.sha256,
                "input_size": self.input_size, "model_kwargs": self.model_kwargs, **({"trained": self.meta} if self.meta else {})}


def state_sha256(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _create(arch: str, **kwargs: Any) -> nn.Module:
    import timm

    try:
        return timm.create_model(arch, pretrained=False, num_classes=imagenet.NUM_CLASSES, **kwargs)
    except RuntimeError as e:
        raise ScorerWeightsError(f"unknown architecture {arch!r} ({e}); use a timm name such as resnet18 or resnet50") from None


def _check_head(model: nn.Module, src: str) -> None:
    n = getattr(model, "num_classes", None)
    if n != imagenet.NUM_CLASSES:
        raise ScorerWeightsError(f"{src}: the scorer needs a {imagenet.NUM_CLASSES}-class ImageNet head in standard "
                                 f"index order (sorted wnids); this one has {n} outputs")


def _how_to_provide(name: str) -> str:
    hub_id = f"timm/{name}"
    return (f"weights for {name!r} are not in the Hugging Face cache and cannot be downloaded here. Provide them by:\n"
            f"  - on a machine with internet: `hf download {hub_id}` (or run `python -c \"import timm; "
            f"timm.create_model('{name}', pretrained=True)\"`), then copy ~/.cache/huggingface/hub (or set HF_HOME); or\n"
            f"  - passing a local file: --weights /path/to/model.safetensors (or a torchvision .pth) --arch {name.split('.')[0]}; or\n"
            f"  - for a generated sample tree: --weights train-on-tree (trains a small scorer on the tree itself).")


def load_scorer(weights: str, *, arch: str | None = None, input_size: int | None = None,
                cache_dir: str | os.PathLike[str] | None = None) -> Scorer:
    """Build the scorer named by ``weights`` (see the module docstring); ``arch`` is needed for foreign state dicts."""
    if weights == "random":
        log.warning("--weights random: the scorer is RANDOMLY INITIALISED; complexity scores are meaningless "
                    "(use this only for tests)")
        a = arch or DEFAULT_ARCH
        torch.manual_seed(0)  # a fixed random model, so even test runs are reproducible
        model = _create(a)
        return Scorer(model.eval(), a, "random", "random", state_sha256(model), input_size or 224)
    path = Path(weights).expanduser()
    if path.is_file():
        return _load_file(path, arch, input_size)
    if os.sep in weights or weights.endswith((".safetensors", ".pth", ".pt", ".bin")):
        raise FileNotFoundError(f"--weights {weights!r}: no such file")
    return _load_timm(weights, input_size, cache_dir)


def _load_timm(name: str, input_size: int | None, cache_dir: str | os.PathLike[str] | None) -> Scorer:
    import timm

    if "." not in name:
        raise ScorerWeightsError(f"--weights {name!r} names an architecture but no pretrained tag; use e.g. "
                                 f"'{name}.tv_in1k' (see timm.list_pretrained('{name}.*')), a file, or 'random'")
    if name not in timm.list_pretrained(name):
        raise ScorerWeightsError(f"--weights {name!r} is neither a file nor a timm pretrained model "
                                 f"(e.g. resnet18.tv_in1k, resnet50.tv_in1k)")
    kw = {"cache_dir": str(cache_dir)} if cache_dir is not None else {}
    try:
        model = timm.create_model(name, pretrained=True, **kw)
    except Exception as e:  # hub/network errors come in many types (LocalEntryNotFoundError, OSError, HTTPError...)
        raise ScorerWeightsError(_how_to_provide(name) + f"\n(cause: {type(e).__name__}: {e})") from None
    _check_head(model, name)
    size = input_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    cfg = model.pretrained_cfg
    return Scorer(model.eval(), name.split(".")[0], name, "timm", state_sha256(model), size,
                  tuple(cfg.get("mean", imagenet.MEAN)), tuple(cfg.get("std", imagenet.STD)))


def _load_file(path: Path, arch: str | None, input_size: int | None) -> Scorer:
    meta: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        meta = json.loads(raw) if raw else {}
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle with arbitrary objects, or not a torch file at all
            raise ScorerWeightsError(f"{path}: cannot read it as a weights-only torch checkpoint ({e}); "
                                     "save a state_dict (or use .safetensors)") from None
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict):
            raise ScorerWeightsError(f"{path}: expected a state_dict, found {type(state).__name__}")
        state = {k.removeprefix("module."): v for k, v in state.items()}
    a = meta.get("arch") or arch
    if a is None:
        raise ScorerWeightsError(f"{path} does not say which architecture it holds; pass --arch (e.g. resnet18)")
    kwargs = meta.get("model_kwargs", {})
    model = _create(a, **kwargs)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ScorerWeightsError(f"{path} does not fit --arch {a}: missing {sorted(missing)[:5]}, "
                                 f"unexpected {sorted(unexpected)[:5]}; check --arch")
    _check_head(model, str(path))
    size = input_size or int(meta.get("input_size", 224))
    return Scorer(model.eval(), a, str(path), "file", state_sha256(model), size, model_kwargs=kwargs,
                  meta=meta.get("trained", {}))


def save_scorer(model: nn.Module, path: str | os.PathLike[str], *, arch: str, model_kwargs: dict[str, Any],
                input_size: int, trained: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    meta = {"arch": arch, "model_kwargs": model_kwargs, "input_size": input_size, "trained": trained}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    return Path(path)


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train_scorer` trains: AdamW with a one-cycle schedule, flips and small shifts as augmentation."""

    arch: str = SMALL_ARCH
    model_kwargs: tuple[tuple[str, Any], ...] = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in SMALL_KWARGS.items())
    input_size: int = 64
    # On the 64 px sample, hard classes score as more complex only once the scorer has learnt the objects: early in
    # training it leans on the background (busy for every hard class) and their maps spread out. 12 epochs at
    # 40 images per class separate them clearly (see docs/complexity.md).
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0

    def kwargs(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_kwargs}


def train_scorer(root: str | os.PathLike[str], wnids: list[str], out: str | os.PathLike[str],
                 config: TrainConfig = TrainConfig(), *, split: str = "train", device: str = "cpu",
                 progress: bool = True) -> Path:
    """Train a small scorer on ``root/split`` for ``wnids`` and save it to ``out`` (``.safetensors``).

    Meant for trees without pretrained weights (the generated sample ImageNet). Deterministic for a given seed
    and device. Unreadable images are skipped.
    """
    from tqdm.auto import tqdm

    from compdd.complexity.images import list_items, normalize, read_resized

    items = list_items(root, split, wnids)
    if not items:
        raise ValueError(f"no images for {len(wnids)} class(es) under {Path(root) / split}")
    imgs, labels = [], []
    for it in tqdm(items, desc="reading training images", unit="img", disable=not progress):
        try:
            imgs.append(read_resized(Path(root) / it.path, config.input_size))
            labels.append(it.label)
        except (imagenet.UnreadableImage, OSError) as e:
            log.warning("skipping %s", e)
    x_all, y_all = torch.stack(imgs), torch.tensor(labels)

    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = _create(config.arch, **config.kwargs()).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(x_all) / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * steps_per_epoch)
    size, pad = config.input_size, max(1, config.input_size // 8)
    bar = tqdm(total=config.epochs * steps_per_epoch, desc="training scorer", unit="step", disable=not progress)
    model.train()
    correct = seen = 0
    loss_sum = 0.0
    for epoch in range(config.epochs):
        perm = torch.randperm(len(x_all), generator=gen)
        correct = seen = 0
        loss_sum = 0.0
        for i in range(0, len(perm), config.batch_size):
            idx = perm[i:i + config.batch_size]
            x = normalize(x_all[idx].to(device), imagenet.MEAN, imagenet.STD)
            y = y_all[idx].to(device)
            flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
            x = F.pad(x, (pad,) * 4, mode="reflect")[..., dy:dy + size, dx:dx + size]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    trained = {"root": str(Path(root).resolve()), "split": split, "classes": len(set(labels)), "images": len(labels),
               "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr, "seed": config.seed,
               "final_epoch_loss": round(loss_sum / seen, 4), "final_epoch_train_acc": round(correct / seen, 4)}
    log.info("trained scorer: %s", trained)
    return save_scorer(model.cpu(), out, arch=config.arch, model_kwargs=config.kwargs(), input_size=size, trained=trained)
