"""Time SRe2L and RDED distillation and the kd-v1 evaluation on the generated sample ImageNet (or a real one).

Prints: teacher training time, seconds to distil IPC K with ``sre2l`` (its preset for the resolution unless
``--iterations``) and ``rded``, and seconds per kd-v1 evaluation seed. Shortened runs (``--iterations``,
``--epochs``, ``--teacher-epochs``) are also extrapolated linearly to the full settings, since every stage is a
fixed cost per iteration or epoch.

    .venv/bin/python bench/kd_methods.py                       # full settings on a fresh sample, CPU
    .venv/bin/python bench/kd_methods.py --iterations 100 --epochs 20 --teacher-epochs 10
    .venv/bin/python bench/kd_methods.py --imagenet-root /data/imagenet --res 128 --device cuda
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imagenet-root", type=Path, help="ImageNet folder; default: a generated sample")
    ap.add_argument("--subset", default="bird-hard")
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--iterations", type=int, help="SRe2L iterations per batch (default: the preset)")
    ap.add_argument("--epochs", type=int, help="kd-v1 epochs (default: the protocol's 300)")
    ap.add_argument("--teacher-epochs", type=int, help="teacher epochs (default: the protocol's recipe)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="compdd-bench-kd-") as tmp:
        os.environ["COMPDD_HOME"] = str(Path(tmp) / "home")  # a fresh cache: the teacher is really trained
        root = args.imagenet_root
        if root is None:
            from compdd.sample import make_sample_imagenet

            root = Path(tmp) / "in1k"
            make_sample_imagenet(root, [args.subset], train_per_class=40, val_per_class=10, size=args.res,
                                 seed=0, progress=False)
        run(args, root)


def run(args: argparse.Namespace, root: Path) -> None:
    import torch

    from compdd.data import load_tensors_from_imagenet
    from compdd.evaluation.protocols import get_protocol
    from compdd.evaluation.run import evaluate_distilled
    from compdd.methods import create_method
    from compdd.teachers import TeacherRecipe, protocol_teacher

    train = load_tensors_from_imagenet(args.subset, root, "train", args.res, progress=False)
    test = load_tensors_from_imagenet(args.subset, root, "val", args.res, progress=False)
    proto = get_protocol("kd-v1")
    full_teacher_epochs = TeacherRecipe(**proto.kd["teacher"]).epochs
    t_epochs = args.teacher_epochs or full_teacher_epochs
    recipe = {**proto.kd["teacher"], "epochs": t_epochs}
    epochs = args.epochs or proto.epochs
    proto = proto.model_copy(update={"epochs": epochs, "seeds": (0,), "kd": {**proto.kd, "teacher": recipe}})
    print(f"# {args.subset} at {args.res} px: {len(train)} train / {len(test)} val images, IPC {args.ipc}, "
          f"device {args.device}, torch threads {torch.get_num_threads()}")

    def line(what: str, seconds: float, done: int, full: int, unit: str) -> None:
        extra = f"  -> {seconds * full / done:8.1f} s at {full} {unit}" if done != full else ""
        print(f"{what:<38} {seconds:8.1f} s  ({done} {unit}){extra}")

    t0 = time.perf_counter()
    teacher = protocol_teacher(proto, train, val=test, device=args.device, progress=False)
    line(f"teacher {teacher.name} (val {teacher.info['val_top1']:.1f}%)", time.perf_counter() - t0, t_epochs,
         full_teacher_epochs, "epochs")

    sre2l_cfg = {"teacher": recipe, **({"iterations": args.iterations} if args.iterations else {})}
    m = create_method("sre2l", subset=args.subset, ipc=args.ipc, res=args.res, **sre2l_cfg)
    preset_iters = create_method("sre2l", subset=args.subset, ipc=args.ipc, res=args.res).config.iterations
    t0 = time.perf_counter()
    m.distill(train, args.ipc, seed=0, device=args.device, progress=False)
    line(f"sre2l distill IPC {args.ipc}", time.perf_counter() - t0, m.config.iterations, preset_iters,
         "iterations/batch")

    m = create_method("rded", subset=args.subset, ipc=args.ipc, res=args.res, teacher=recipe)
    t0 = time.perf_counter()
    ds = m.distill(train, args.ipc, seed=0, device=args.device, progress=False)
    mipc = min(m.config.mipc, len(train) // train.num_classes)
    line(f"rded distill IPC {args.ipc} (mipc {mipc}, f {m.config.factor})", time.perf_counter() - t0, 1, 1, "run")

    t0 = time.perf_counter()
    evaluate_distilled(ds, test, proto, teacher=teacher.model, device=args.device, progress=False)
    line("kd-v1 evaluation, one seed", time.perf_counter() - t0, epochs, get_protocol("kd-v1").epochs, "epochs")


if __name__ == "__main__":
    main()
