"""The guided end-to-end run on the embedded default (``compdd demo``): no ImageNet, no network, no GPU.

Each step is the same library call the real commands make; only the sizes are small. The steps:

1. generate the sample ImageNet (``make_sample_imagenet``) for two categories;
2. train a small scorer on it (it stands in for the pretrained ResNet-18), score every class with Grad-CAM
   and rebuild the easy/hard subsets (``score`` + ``build_definition`` + ``write_report``);
3. export the v1 subsets of those categories in the Hub layout and load one back with ``datasets``;
4. evaluate random, DATM and EDF at IPC 1 on one easy and one hard subset, 32 px, with a short protocol
   override (recorded as non-standard);
5. submit the records to a leaderboard folder and build it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Methods that distil from the GSAM expert trajectories the demo trains.
TM_METHODS = frozenset({"datm", "edf"})

Echo = Callable[[str], None]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run. Everything else is the toolkit's defaults."""

    categories: tuple[str, ...] = ("bird", "car")
    train_per_class: int = 40
    val_per_class: int = 10
    image_size: int = 64
    # On the sample, bird classes separate by complexity only after about 16 scorer epochs (docs/complexity.md).
    scorer_epochs: int = 16
    eval_res: int = 32
    eval_epochs: int = 300
    seeds: tuple[int, ...] = (0, 1)
    # Trajectory matching unrolls the student syn_steps times per iteration; a width-32 ConvNetD3 makes that
    # affordable on a CPU. Evaluation still uses the protocol's standard ConvNetD3 (width 128).
    tm_model: str = "convnet_d3_w32"
    experts: int = 3
    expert_epochs: int = 15
    expert_lr: float = 0.03
    tm_iterations: int = 100
    syn_steps: int = 10
    max_start_epoch: int = 6
    methods: tuple[str, ...] = ("random", "datm", "edf")


FULL = DemoSettings()
# With 24 images per class the scorer needs longer to separate the bird classes (8/10 agreement at 24 epochs,
# 5/10 at 16).
QUICK = DemoSettings(train_per_class=24, val_per_class=8, scorer_epochs=24, eval_epochs=150, seeds=(0,), experts=2,
                     expert_epochs=8, tm_iterations=40, syn_steps=10, max_start_epoch=5)


@dataclass
class DemoResult:
    out: Path
    agreement: list[dict[str, Any]] = field(default_factory=list)
    records: dict[tuple[str, str], Path] = field(default_factory=dict)  # (method, subset) -> result.json
    rejected: dict[tuple[str, str], str] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _tm_config(s: DemoSettings, experts: Path, run_dir: Path) -> dict[str, Any]:
    """DATM/EDF settings for the sample's short, small experts.

    The shipped presets are tuned for 128 px ImageNet experts; on the sample they diverge (the learned lr goes
    negative), so the image and lr step sizes are smaller and the start-epoch window fits the few expert epochs.
    """
    return {"model": s.tm_model, "experts": str(experts), "iterations": s.tm_iterations, "syn_steps": s.syn_steps,
            "expert_epochs": 2, "max_start_epoch": s.max_start_epoch, "window_initial_max": 3,
            "window_expansion_end": s.tm_iterations // 2, "lr_teacher": s.expert_lr, "lr_img": 1000.0,
            "lr_lr": 1e-6, "lr_label": 2.0, "update_threshold": 3.0, "checkpoint_every": 0,
            "run_dir": str(run_dir)}


def run_demo(out: str | Path, *, quick: bool = False, device: str = "cpu", echo: Echo = print,
             progress: bool = True) -> DemoResult:
    """Run the whole demo into ``out`` and return where everything is. Re-running starts the folder afresh."""
    import shutil

    import datasets

    from compdd import benchmark
    from compdd.complexity.run import ScoreConfig, score
    from compdd.complexity.scorer import TrainConfig, train_scorer
    from compdd.evaluation.records import ResultRecord
    from compdd.evaluation.run import load_split, run_evaluation
    from compdd.hub.export import export_dataset
    from compdd.leaderboard import SubmissionRejected, build, submit_local
    from compdd.methods.tm.experts import ExpertConfig, train_experts
    from compdd.paths import ensure_writable_dir
    from compdd.sample import make_sample_imagenet
    from compdd.subsets import build_definition, write_definition, write_report

    s = QUICK if quick else FULL
    out = Path(out)
    ensure_writable_dir(out, "--out")
    for child in ("sample-in1k", "scores", "report", "hub-export", "runs", "experts", "leaderboard"):
        shutil.rmtree(out / child, ignore_errors=True)
    res = DemoResult(out)
    subsets = [f"{c}-{d}" for c in s.categories for d in ("easy", "hard")]
    wnids = [w for name in subsets for w in benchmark.get_subset(name).wnids]

    def step(n: int, text: str) -> float:
        echo(f"\n[{n}/5] {text}")
        return time.perf_counter()

    t = step(1, f"generating the sample ImageNet: {len(wnids)} classes of {', '.join(s.categories)}, "
                f"{s.train_per_class} train + {s.val_per_class} val images each, {s.image_size} px")
    root = out / "sample-in1k"
    make_sample_imagenet(root, subsets, train_per_class=s.train_per_class, val_per_class=s.val_per_class,
                         size=s.image_size, seed=0, progress=progress)
    res.artifacts["sample ImageNet"] = root
    res.seconds["sample"] = time.perf_counter() - t

    t = step(2, "training a small scorer on the sample (it stands in for the pretrained ResNet-18 of the real "
                "benchmark), scoring every class with Grad-CAM and rebuilding the easy/hard subsets")
    scorer = train_scorer(root, wnids, out / "scorer.safetensors",
                          TrainConfig(epochs=s.scorer_epochs, input_size=s.image_size), device=device,
                          progress=progress)
    scores = out / "scores"
    result = score(ScoreConfig(root=str(root), wnids=tuple(wnids), out=str(scores), weights=str(scorer),
                               input_size=s.image_size, device=device, batch_size=128))
    defn, res.agreement = build_definition(scores, categories=list(s.categories), name="comp-dd-sample")
    definition = write_definition(defn, out / "sample-definition.json")
    report = write_report(scores, out / "report", definition=str(definition), imagenet_root=root, device=device)
    echo(f"  scored {result.scored} images; agreement of the rebuilt subsets with comp-dd-v1:")
    for r in res.agreement:
        echo(f"    {r['subset']:12s} {r['overlap']:2d}/10 classes in common (Jaccard {r['jaccard']:.2f})")
    res.artifacts.update({"scorer": scorer, "scores": scores, "rebuilt definition": definition, "report": report})
    res.seconds["score"] = time.perf_counter() - t

    t = step(3, f"exporting {', '.join(subsets)} in the Hub layout and loading one back with datasets.load_dataset")
    hub = out / "hub-export"
    export_dataset(root, hub, subsets, scores=scores, progress=progress)
    loaded = datasets.load_dataset(str(hub), subsets[1])
    echo(f"  datasets.load_dataset({str(hub)!r}, {subsets[1]!r}): {loaded['train'].num_rows} train / "
         f"{loaded['validation'].num_rows} validation rows; labels {loaded['train'].features['label'].names[:3]}...")
    res.artifacts["Hub export"] = hub
    res.seconds["export"] = time.perf_counter() - t

    eval_subsets = [f"{s.categories[0]}-easy", f"{s.categories[0]}-hard"]
    t = step(4, f"distilling and evaluating {', '.join(s.methods)} at IPC 1 on {', '.join(eval_subsets)} "
                f"({s.eval_res} px; protocol dd-v1 shortened to {s.eval_epochs} epochs and seeds "
                f"{list(s.seeds)}: NON-STANDARD, for illustration only)")
    overrides = {"epochs": s.eval_epochs, "seeds": list(s.seeds)}
    echo("  (the full-data reference is skipped: on a CPU it costs more than the rest of the demo; "
         "`compdd evaluate` runs it by default)")
    for name in eval_subsets:
        experts = out / "experts" / name
        if TM_METHODS & set(s.methods):
            echo(f"  training {s.experts} expert trajectories on {name} ({s.tm_model}, GSAM, "
                 f"{s.expert_epochs} epochs)")
            train = load_split(name, "train", s.eval_res, root=root, progress=False)
            train_experts(train, experts, ExpertConfig(model=s.tm_model, epochs=s.expert_epochs, batch_size=32,
                                                       lr=s.expert_lr), s.experts, device=device, progress=progress)
        for method in s.methods:
            run_dir = out / "runs" / f"{method}-{name}"
            cfg = _tm_config(s, experts, run_dir / "checkpoints") if method in TM_METHODS else {}
            rec = run_evaluation(method, name, 1, res=s.eval_res, imagenet_root=root, out=run_dir,
                                 method_config=cfg, overrides=overrides, device=device, references=("random",),
                                 progress=progress)
            res.records[(method, name)] = run_dir / "result.json"
            echo(f"  {method:7s} {name:12s} top-1 {rec.top1_mean:5.1f} ± {rec.top1_std or 0:.1f}")
    res.artifacts["distilled sets and records"] = out / "runs"
    res.seconds["evaluate"] = time.perf_counter() - t

    t = step(5, "submitting the records to a leaderboard folder and building it")
    board = out / "leaderboard"
    for key, path in res.records.items():
        try:
            submit_local(path, board, allow_nonstandard=True)
        except SubmissionRejected as e:
            res.rejected[key] = str(e)
            echo(f"  rejected {key[0]} on {key[1]}: {e}")
    build(board / "results", board)
    res.artifacts["leaderboard"] = board
    res.seconds["leaderboard"] = time.perf_counter() - t

    echo("\nSummary (top-1 %, IPC 1, non-standard short protocol):")
    echo(f"  {'subset':12s} " + " ".join(f"{m:>8s}" for m in s.methods))
    for name in eval_subsets:
        recs = {m: ResultRecord.load(res.records[(m, name)]) for m in s.methods}
        echo(f"  {name:12s} " + " ".join(f"{recs[m].top1_mean:8.1f}" for m in s.methods))
    echo("\nArtifacts:")
    for k, v in res.artifacts.items():
        echo(f"  {k:28s} {v}")
    steps = ", ".join(f"{k} {v:.0f}" for k, v in res.seconds.items())
    echo(f"\nTook {sum(res.seconds.values()):.0f} s ({steps}). Next, on real ImageNet with a GPU:\n"
         "  compdd check-imagenet --imagenet-root /data/imagenet\n"
         "  compdd score --imagenet-root /data/imagenet --all --weights resnet18.tv_in1k\n"
         "  compdd build-subsets --scores ~/.cache/compdd/scores/gradcam-v1-train --out comp-dd-rebuilt.json\n"
         "  compdd experts --subset bird-hard --res 128 --imagenet-root /data/imagenet\n"
         "  compdd evaluate --method edf --subset bird-hard --ipc 10 --imagenet-root /data/imagenet\n"
         "  compdd submit runs/.../result.json && compdd leaderboard build")
    return res
