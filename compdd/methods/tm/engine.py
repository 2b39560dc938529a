"""The trajectory-matching outer loop, its configuration, checkpoints, and the base class of MTT/FTD/DATM.

:func:`run` executes one distillation::

    images, labels, syn_lr <- init hooks
    for it in range(iterations):
        gen     = generator(seed, it)                  # all randomness of the iteration, nothing else
        t       = window.sample(it, gen); e = expert order(it)
        L, dS, dlr, dY = matching_gradients(student, theta*_e(t), theta*_e(t+M), images, labels, syn_lr, ...)
        stop with DivergenceError if anything is not finite (the last good checkpoint stays on disk)
        if update_gate(L): dS = image_grad_transform(dS); SGD-momentum steps on images, syn_lr, labels; EMA
        on_iteration_end(ctx); checkpoint every ``checkpoint_every`` iterations

Every iteration draws from its own generator seeded by ``(seed, it)``, so a run resumed from a checkpoint
produces exactly the images of an uninterrupted run, and no wall-clock seed exists anywhere (the public
code reseeds torch from ``time.time()`` whenever it builds a network).

Differences from the public code, on purpose: no evaluation during distillation and hence no "best"
images picked on the test set (the final iteration is returned; the protocol evaluates it with a fresh
network, which also removes FTD's reuse of one evaluation network for raw and EMA images); soft labels of
images that no expert classifies correctly start from the all-expert mean instead of 0/0.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import yaml
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import Tensor

from compdd.data import SubsetTensors
from compdd.distilled import DistilledSet
from compdd.methods import Method, MethodConfig
from compdd.methods.tm.experts import (
    ExpertError,
    ExpertSet,
    data_fingerprint,
    default_experts_dir,
    experts_command,
)
from compdd.methods.tm.hooks import (
    Hooks,
    ImageInit,
    InitContext,
    IterationContext,
    LabelInit,
    LossThresholdGate,
    StartEpochWindow,
    always_update,
)
from compdd.methods.tm.student import FunctionalStudent
from compdd.methods.tm.unroll import matching_gradients, plan_inner_steps
from compdd.paths import atomic_path, compdd_home

log = logging.getLogger(__name__)

MODEL_BY_RES = {32: "convnet_d3", 64: "convnet_d4", 128: "convnet_d5"}
CHECKPOINT_PREFIX = "checkpoint-"
# Keys that do not change what a run computes: a checkpoint written under other values still applies.
NON_SEMANTIC = ("checkpoint_every", "run_dir", "resume", "experts")


class DivergenceError(ValueError):
    """The matching loss, a gradient or the learned lr stopped being finite (or the lr became <= 0)."""


class TMConfig(MethodConfig):
    """Hyper-parameters of the trajectory-matching engine. Names follow the public code where it has one."""

    model: str | None = Field(None, description="student/expert network; default by resolution: "
                                                "convnet_d3 at 32 px, convnet_d4 at 64, convnet_d5 at 128")
    iterations: int = Field(5000, ge=0, description="outer iterations (public: Iteration)")
    syn_steps: int = Field(20, ge=1, description="student steps per iteration, N")
    expert_epochs: int = Field(2, ge=1, description="target = start epoch + expert_epochs, M")
    min_start_epoch: int = Field(0, ge=0)
    max_start_epoch: int = Field(10, ge=1, description="start epochs are drawn below this (exclusive)")
    window_initial_max: int | None = Field(None, description="DATM: the upper bound starts here "
                                                            "(current_max_start_epoch) and grows to max_start_epoch")
    window_expansion_end: int = Field(0, ge=0, description="DATM: iterations over which the window grows "
                                                           "(expansion_end_epoch)")
    batch_syn: int | None = Field(None, ge=1, description="images per student step; None: all")
    lr_img: float = Field(1000.0, description="SGD learning rate of the images")
    lr_lr: float = Field(1e-6, description="SGD learning rate of the student learning rate")
    lr_teacher: float = Field(0.01, gt=0, description="initial student learning rate (syn_lr)")
    lr_label: float = Field(0.0, ge=0, description="SGD learning rate of soft labels (DATM lr_y); 0: fixed")
    momentum_img: float = 0.5
    momentum_lr: float = 0.5
    momentum_label: float = 0.9
    image_init: Literal["noise", "real", "real_correct"] = "real"
    label_mode: Literal["hard", "soft"] = "hard"
    label_init_epoch: int = Field(-1, description="expert epoch used for real_correct/soft-label init; -1: final")
    update_threshold: float | None = Field(None, description="DATM: skip the update when the loss exceeds this")
    ema_decay: float | None = Field(None, description="FTD: keep an EMA of the images with this decay")
    return_ema: bool = Field(True, description="with ema_decay: return the EMA images (FTD) instead of the raw ones")
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    dsa_crop_ratio: float = 0.125
    memory: Literal["plain", "exact", "tesla"] = Field(
        "exact", description="plain: autograd through the whole unroll; exact: same gradient, one step's memory; "
                             "tesla: approximate (drops cross-step terms)")
    chunk_size: int | None = Field(None, ge=1, description="exact/tesla: images per sub-batch (exact, less memory)")
    experts: str | None = Field(None, description="expert folder; default: COMPDD_HOME/experts/<subset>/<res>px/...")
    expert_optimizer: Literal["sgd", "gsam"] = "sgd"
    expert_augmentation: str = "dsa0.125"
    num_experts: int | None = Field(None, ge=1, description="use only the first n experts")
    checkpoint_every: int = Field(100, ge=0, description="iterations between checkpoints; 0: none")
    run_dir: str | None = Field(None, description="where checkpoints go; default: COMPDD_HOME/runs/tm/...")
    resume: bool = Field(True, description="continue from a matching checkpoint in run_dir if there is one")

    def model_for(self, res: int) -> str:
        if self.model:
            return self.model
        if res not in MODEL_BY_RES:
            raise ValueError(f"no default trajectory-matching model for {res} px; set model= (one of the registered "
                             f"models) or use {sorted(MODEL_BY_RES)} px")
        return MODEL_BY_RES[res]

    def window(self) -> StartEpochWindow:
        return StartEpochWindow(self.min_start_epoch, self.max_start_epoch, self.window_initial_max,
                                self.window_expansion_end)


# ------------------------------------------------------------------------------------------ presets


def load_preset(method: str, subset: str, ipc: int) -> dict[str, Any]:
    """A method's shipped hyper-parameters for (subset, ipc) from ``resources/configs/tm/<method>.yaml``.

    Layers, later winning: ``defaults``, ``ipc_defaults[k]``, ``subsets[subset][k]``, where ``k`` is the largest
    tabulated IPC not above ``ipc`` (the smallest one if ``ipc`` is below all). Unknown subsets get the defaults.
    """
    doc = yaml.safe_load(resources.files("compdd.resources").joinpath("configs", "tm", f"{method}.yaml")
                         .read_text("utf-8"))
    table = doc.get("ipc_defaults", {})
    ipcs = sorted(int(k) for k in table)
    k = max([i for i in ipcs if i <= ipc], default=ipcs[0] if ipcs else ipc)
    out: dict[str, Any] = dict(doc.get("defaults", {}))
    out.update(table.get(k, {}))
    out.update(doc.get("subsets", {}).get(subset, {}).get(k, {}))
    return out


# ------------------------------------------------------------------------------------------ the run


@dataclass
class RunResult:
    images: Tensor
    labels: Tensor
    syn_lr: float
    meta: dict[str, Any]


class _Momentum:
    """SGD with momentum, no dampening or weight decay (torch.optim.SGD's update), with plain-tensor state."""

    def __init__(self, lr: float, momentum: float, like: Tensor):
        self.lr, self.momentum = lr, momentum
        self.buf = torch.zeros_like(like)

    def step(self, param: Tensor, grad: Tensor) -> None:
        with torch.no_grad():
            self.buf.mul_(self.momentum).add_(grad)
            param.sub_(self.lr * self.buf)


def _generator(seed: int, *keys: object) -> torch.Generator:
    digest = hashlib.sha256(json.dumps([seed, *keys]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def run_key(config: TMConfig, method: str, train: SubsetTensors, ipc: int, seed: int, experts: ExpertSet) -> str:
    """Identity of a distillation run: checkpoints are only resumed under the same key."""
    cfg = {k: v for k, v in config.model_dump().items() if k not in NON_SEMANTIC}
    doc = {"method": method, "config": cfg, "subset": train.subset, "wnids": list(train.wnids),
           "res": train.resolution, "n_train": len(train), "ipc": ipc, "seed": seed, "experts": experts.sha256()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def run(
    config: TMConfig,
    hooks: Hooks,
    train: SubsetTensors,
    ipc: int,
    experts: ExpertSet,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    run_dir: str | os.PathLike[str] | None = None,
    method: str = "tm",
) -> RunResult:
    """Distil ``ipc`` images per class of ``train`` by matching ``experts`` (see the module doc)."""
    from tqdm.auto import tqdm

    from compdd.augment import DSA
    from compdd.models import create_model

    if ipc < 1:
        raise ValueError(f"ipc must be at least 1, got {ipc}")
    device = torch.device(device)
    C, R = train.num_classes, train.resolution
    with torch.random.fork_rng(devices=[]):  # the shell's own values are never used; keep the global RNG intact
        shell = create_model(config.model_for(R), num_classes=C, res=R).to(device)
    student = FunctionalStudent(shell)
    n_experts = min(len(experts), config.num_experts or len(experts))
    window = hooks.window
    experts.check(student=student, wnids=train.wnids,
                  epochs=[window.largest_start() + config.expert_epochs, config.label_init_epoch],
                  command=experts_command(train.subset, R, experts.config.optimizer, experts.config.model,
                                          window.largest_start() + config.expert_epochs))
    augment = DSA(config.dsa_strategy, crop_ratio=config.dsa_crop_ratio) if config.dsa else None
    classes = torch.arange(C, device=device).repeat_interleave(ipc)
    key = run_key(config, method, train, ipc, seed, experts)
    ckpt_dir = Path(run_dir) if run_dir is not None else None

    state = _load_checkpoint(ckpt_dir, key, hooks, device) if (ckpt_dir and config.resume) else None
    if state is None:
        init_ctx = InitContext(train, ipc, _generator(seed, "init"), device, n_experts,
                               _expert_classifier(student, experts, config.label_init_epoch, device))
        images, sources = hooks.init_images(init_ctx)
        labels = hooks.init_labels(images, classes, init_ctx)
        state = {
            "iteration": 0, "images": images.to(device).float(), "labels": labels.to(device),
            "syn_lr": torch.tensor(float(config.lr_teacher), device=device),
            "ema": images.to(device).float().clone() if hooks.ema_decay else None,
            "losses": [], "skipped": 0, "sources": sources,
            "bufs": {},
        }
        if labels.is_floating_point():
            state["labels"] = state["labels"].float()
        if ckpt_dir is not None and config.checkpoint_every:
            _save_checkpoint(ckpt_dir, key, state, hooks)
    else:
        log.info("resuming %s from iteration %d (%s)", method, state["iteration"], ckpt_dir)

    images, labels, syn_lr = state["images"], state["labels"], state["syn_lr"]
    learn_labels = labels.is_floating_point() and config.lr_label > 0
    opt_img = _Momentum(config.lr_img, config.momentum_img, images)
    opt_lr = _Momentum(config.lr_lr, config.momentum_lr, syn_lr)
    opt_label = _Momentum(config.lr_label, config.momentum_label, labels) if learn_labels else None
    for name, opt in (("img", opt_img), ("lr", opt_lr), ("label", opt_label)):
        if opt is not None and name in state["bufs"]:
            opt.buf.copy_(state["bufs"][name])
    ema = state["ema"]
    losses: list[float] = state["losses"]
    skipped: int = state["skipped"]
    last_good = state["iteration"]

    bar = tqdm(range(state["iteration"], config.iterations), initial=state["iteration"], total=config.iterations,
               desc=f"{method} {train.subset} ipc{ipc}", unit="it", disable=not progress)
    for it in bar:
        gen = _generator(seed, "iteration", it)
        start_epoch = window.sample(it, gen)
        expert = int(torch.randperm(n_experts, generator=_generator(seed, "experts", it // n_experts))[it % n_experts])
        steps = plan_inner_steps(len(images), config.syn_steps, config.batch_syn, gen)
        start = experts.params(expert, start_epoch).to(device)
        target = experts.params(expert, start_epoch + config.expert_epochs).to(device)
        res = matching_gradients(student, start, target, images, labels, syn_lr, steps, augment=augment,
                                 reduction=hooks.reduction, mode=config.memory, chunk_size=config.chunk_size,
                                 label_grad=learn_labels)
        ctx = IterationContext(it, images, labels, classes, train.wnids, ipc, float(syn_lr),
                               _generator(seed, "hook", it), start_epoch, expert, float(res.loss))
        bad = _not_finite(res.loss, res.grad_images, res.grad_lr, res.grad_labels)
        if bad:
            raise DivergenceError(_divergence_message(it, bad, ctx, config, ckpt_dir, last_good))
        if hooks.update_gate(res.loss, ctx):
            grad_img = res.grad_images
            if hooks.image_grad_transform is not None:
                grad_img = hooks.image_grad_transform(grad_img, ctx)
            opt_img.step(images, grad_img)
            opt_lr.step(syn_lr, res.grad_lr)
            if opt_label is not None and res.grad_labels is not None:
                opt_label.step(labels, res.grad_labels)
            if ema is not None:
                ema.mul_(hooks.ema_decay).add_(images, alpha=1 - hooks.ema_decay)
            ctx.updated = True
            if not (math.isfinite(float(syn_lr)) and float(syn_lr) > 0) or not bool(torch.isfinite(images).all()):
                ctx.syn_lr = float(syn_lr)
                what = "images" if math.isfinite(ctx.syn_lr) and ctx.syn_lr > 0 else "learned lr"
                raise DivergenceError(_divergence_message(it, [what], ctx, config, ckpt_dir, last_good))
        else:
            skipped += 1
        losses.append(float(res.loss))
        if hooks.on_iteration_end is not None:
            hooks.on_iteration_end(ctx)
        bar.set_postfix(loss=f"{float(res.loss):.4f}", lr=f"{float(syn_lr):.2e}", t=start_epoch, skip=skipped)
        done = it + 1
        if ckpt_dir is not None and config.checkpoint_every and (done % config.checkpoint_every == 0
                                                                  or done == config.iterations):
            state.update(iteration=done, images=images, labels=labels, syn_lr=syn_lr, ema=ema, losses=losses,
                         skipped=skipped,
                         bufs={n: o.buf for n, o in (("img", opt_img), ("lr", opt_lr), ("label", opt_label)) if o})
            _save_checkpoint(ckpt_dir, key, state, hooks)
            last_good = done
    bar.close()

    out_images = ema if (ema is not None and config.return_ema) else images
    every = max(1, len(losses) // 100)
    meta = {
        "method": method, "config": config.model_dump(), "subset": train.subset, "ipc": ipc, "seed": seed,
        "resolution": R, "model": config.model_for(R), "iterations": config.iterations,
        "skipped_updates": skipped, "final_loss": losses[-1] if losses else None,
        "loss_curve": {"every": every, "values": losses[::every]},
        "learned_lr": float(syn_lr), "label_type": "soft" if labels.is_floating_point() else "hard",
        "images": "ema" if out_images is ema else "raw", "source_indices": state["sources"],
        "experts": {"folder": str(experts.folder), "manifest_sha256": experts.sha256(), "used": n_experts,
                    "optimizer": experts.config.optimizer, "epochs": experts.config.epochs},
        "run_key": key, "run_dir": str(run_dir) if run_dir is not None else None,
    }
    return RunResult(out_images.detach().cpu().float().clone(),
                     labels.detach().cpu().float().clone() if labels.is_floating_point() else labels.cpu().clone(),
                     float(syn_lr), meta)


def _expert_classifier(student: FunctionalStudent, experts: ExpertSet, epoch: int, device: torch.device):
    def make(e: int):
        theta = experts.params(e, epoch).to(device)

        def predict(x: Tensor) -> Tensor:
            with torch.no_grad():
                return torch.cat([student(theta, x[i:i + 128]) for i in range(0, len(x), 128)])

        return predict

    return make


def _not_finite(*tensors: Tensor | None) -> list[str]:
    names = ("matching loss", "image gradient", "lr gradient", "label gradient")
    return [n for n, t in zip(names, tensors) if t is not None and not bool(torch.isfinite(t).all())]


def _divergence_message(it: int, what: list[str], ctx: IterationContext, config: TMConfig, ckpt: Path | None,
                        last_good: int) -> str:
    where = (f"the last good checkpoint (iteration {last_good}) is kept in {ckpt}" if ckpt is not None
             else "no checkpoint was kept (checkpoint_every=0 or no run_dir)")
    return (f"distillation diverged at iteration {it}: {', '.join(what)} not finite or out of range "
            f"(start epoch {ctx.start_epoch}, expert {ctx.expert}, learned lr {ctx.syn_lr:.3g}, "
            f"loss {ctx.loss:.4g}); {where}. Lower lr_img ({config.lr_img:g}) or lr_lr ({config.lr_lr:g}), "
            f"or the start-epoch window, and run again")


# ------------------------------------------------------------------------------------ checkpoints


def _save_checkpoint(run_dir: Path, key: str, state: dict, hooks: Hooks) -> None:
    """Write ``checkpoint-<iteration>/`` atomically, then drop older ones: a good checkpoint always exists."""
    tensors = {"images": state["images"], "labels": state["labels"], "syn_lr": state["syn_lr"]}
    if state["ema"] is not None:
        tensors["ema"] = state["ema"]
    for name, buf in state["bufs"].items():
        tensors[f"buf.{name}"] = buf
    for name, hook in hooks.stateful().items():
        for k, v in hook.state_dict().items():
            tensors[f"hook.{name}.{k}"] = v
    target = run_dir / f"{CHECKPOINT_PREFIX}{state['iteration']:07d}"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
        info = {"key": key, "iteration": state["iteration"], "losses": state["losses"], "skipped": state["skipped"],
                "sources": state["sources"]}
        (tmp / "state.json").write_text(json.dumps(info))
    for old in run_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        if old != target and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = sorted(p for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*") if (p / "state.json").is_file())
    return done[-1] if done else None


def _load_checkpoint(run_dir: Path, key: str, hooks: Hooks, device: torch.device) -> dict | None:
    folder = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    if folder is None:
        return None
    info = json.loads((folder / "state.json").read_text())
    if info.get("key") != key:
        log.warning("%s holds a checkpoint of a different run; starting over (it will be replaced)", folder)
        return None
    t = {k: v.to(device) for k, v in load_file(str(folder / "state.safetensors")).items()}
    for name, hook in hooks.stateful().items():
        prefix = f"hook.{name}."
        hook.load_state_dict({k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)})
    return {"iteration": info["iteration"], "images": t["images"], "labels": t["labels"], "syn_lr": t["syn_lr"],
            "ema": t.get("ema"), "losses": info["losses"], "skipped": info["skipped"], "sources": info["sources"],
            "bufs": {k[4:]: v for k, v in t.items() if k.startswith("buf.")}}


# ------------------------------------------------------------------------------------ method base


class TrajectoryMatchingMethod(Method):
    """Base of MTT, FTD, DATM (and EDF): a config of the engine plus :meth:`hooks`.

    Subclasses set ``name``, ``description``, ``Config`` (a :class:`TMConfig` with the method's defaults) and
    ``preset_file``; a method that adds behaviour overrides :meth:`hooks` and extends what it returns.
    """

    Config: ClassVar[type[MethodConfig]] = TMConfig
    preset_file: ClassVar[str] = ""

    @classmethod
    def preset(cls, subset: str, ipc: int, res: int) -> dict[str, Any]:
        return load_preset(cls.preset_file or cls.name, subset, ipc) if (cls.preset_file or cls.name) else {}

    @property
    def cfg(self) -> TMConfig:
        assert isinstance(self.config, TMConfig)
        return self.config

    def hooks(self, train: SubsetTensors, ipc: int) -> Hooks:
        """The engine hooks this method's config asks for."""
        c = self.cfg
        return Hooks(
            window=c.window(),
            init_images=ImageInit(c.image_init),
            init_labels=LabelInit(c.label_mode),
            update_gate=LossThresholdGate(c.update_threshold) if c.update_threshold is not None else always_update,
            ema_decay=c.ema_decay,
        )

    def find_experts(self, train: SubsetTensors) -> ExpertSet:
        c = self.cfg
        model = c.model_for(train.resolution)
        folder = Path(c.experts) if c.experts else default_experts_dir(train.subset, train.resolution, model,
                                                                      c.expert_optimizer, c.expert_augmentation)
        need = c.max_start_epoch - 1 + c.expert_epochs
        cmd = experts_command(train.subset, train.resolution, c.expert_optimizer,
                              model if model != MODEL_BY_RES.get(train.resolution) else None)
        if not (folder / "manifest.json").is_file():
            raise FileNotFoundError(
                f"{self.name} needs {c.expert_optimizer} expert trajectories of {model} on {train.subset} at "
                f"{train.resolution} px, and {folder} has none. Train them first (at least {need} epochs), e.g.\n"
                f"  {cmd}\nor point the method at a folder of experts with the config key experts=DIR")
        experts = ExpertSet(folder)
        if experts.manifest.get("data_fingerprint") != data_fingerprint(train):
            log.warning("%s: experts were trained on different %s training data (another ImageNet root, resize "
                        "rule or image count); they still run, but results will not match", folder, train.subset)
        if experts.config.optimizer != c.expert_optimizer:
            log.warning("%s: experts were trained with %s, %s is configured for %s experts", folder,
                        experts.config.optimizer, self.name, c.expert_optimizer)
        return experts

    def default_run_dir(self, train: SubsetTensors, ipc: int, seed: int, key: str) -> Path:
        return (compdd_home() / "runs" / "tm" / self.name /
                f"{train.subset}-{train.resolution}px-ipc{ipc}-seed{seed}-{key[:12]}")

    def distill(self, train: SubsetTensors, ipc: int, *, seed: int = 0, device: str | torch.device = "cpu",
                progress: bool = True) -> DistilledSet:
        experts = self.find_experts(train)
        if len(experts) == 0:
            raise ExpertError(f"{experts.folder}: no finished experts yet; run `compdd experts` to completion")
        run_dir = Path(self.cfg.run_dir) if self.cfg.run_dir else self.default_run_dir(
            train, ipc, seed, run_key(self.cfg, self.name, train, ipc, seed, experts))
        result = run(self.cfg, self.hooks(train, ipc), train, ipc, experts, seed=seed, device=device,
                     progress=progress, run_dir=run_dir, method=self.name)
        return DistilledSet(result.images, result.labels, result.syn_lr, result.meta)
