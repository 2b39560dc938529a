"""Throughput of the Grad-CAM engines used by `compdd score`, on the same images and the same model.

(a) torchcam GradCAM at the last block (the reference), (b) the fast path in exact mode (trunk without autograd,
only the head differentiated), (c) the fast path as `compdd score` runs it by default (plus BatchNorm folded and
channels-last), optionally (c') that plus torch.compile, (d) the `edf-code` preset (torchcam SmoothGradCAMpp, 4
noisy passes, predicted class, one extractor per layer for layer1..layer4), and (e) the fast path with bfloat16
autocast (`--amp`; not exact). Images are decoded once into memory (decoding is the same for every engine);
weights are random (speed does not depend on them).
Prints img/s (best of --repeat timed rounds after a warm-up, engines interleaved), the ratio to (a), the largest
map difference to torchcam, and the share of images whose activated fraction (>= 0.5, native) equals torchcam's.

    python bench/score_throughput.py                      # CPU, resnet18, 224 px
    python bench/score_throughput.py --arch resnet50 --batch-size 16
    python bench/score_throughput.py --device cuda --arch resnet50 --batch-size 256 --images 1024
"""

from __future__ import annotations

import argparse
import platform
import time

import timm
import torch

from compdd.complexity.cam import FastGradCAM, TorchcamCAM, activated_fraction
from compdd.complexity.images import normalize
from compdd.imagenet import MEAN, STD


def images(n: int, size: int, seed: int) -> torch.Tensor:
    """n images of the sample generator's hard style (natural-ish statistics, not noise), uint8 (n, 3, size, size)."""
    import numpy as np

    from compdd.sample import STYLES, ClassLook, render

    out = []
    for i in range(n):
        look = ClassLook("n01530575", ("circle", "star", "ring")[i % 3], "stripes", (i * 0.618) % 1.0, STYLES["hard"])
        arr = render(look, np.random.default_rng([seed, i]), size)
        out.append(torch.from_numpy(arr).permute(2, 0, 1))
    return torch.stack(out)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--images", type=int, default=64, help="images per timed round (a multiple of the batch size)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-edf", action="store_true", help="leave out (d), the slowest")
    ap.add_argument("--compile", action="store_true", help="add (c'): (c) with torch.compile (compiles during warm-up)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model(args.arch, pretrained=False, num_classes=1000).eval().to(dev)
    data = images(args.images, args.size, 0)
    labels = torch.arange(args.images) % 1000
    batches = [(normalize(data[i:i + args.batch_size].to(dev), MEAN, STD), labels[i:i + args.batch_size].to(dev))
               for i in range(0, args.images, args.batch_size)]

    engines = {
        "(a) torchcam GradCAM": (TorchcamCAM(model, ["layer4"]), "label"),
        "(b) fast, exact": (FastGradCAM(model), "label"),
        "(c) fast, default (fold BN, channels-last)": (FastGradCAM(model, optimize=True), "label"),
    }
    if args.compile:
        engines["(c') fast, default + torch.compile"] = (FastGradCAM(model, optimize=True, compile=True), "label")
    engines["(e) fast, default + bf16 autocast"] = (FastGradCAM(model, optimize=True, amp=True), "label")
    if not args.skip_edf:
        engines["(d) edf-code (SmoothGradCAM++ x 4 layers)"] = (
            TorchcamCAM(model, ["layer1", "layer2", "layer3", "layer4"], "smoothgradcampp"), "predicted")

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    ref = [TorchcamCAM(model, ["layer4"])(x, y).maps["layer4"] for x, y in batches]
    ref_share = torch.cat([activated_fraction(r) for r in ref])
    diffs, same = {}, {}
    for name, (eng, target) in engines.items():  # warm-up, and the map check against torchcam
        maps = [eng(x, y, target).maps["layer4"] for x, y in batches]
        if target == "label":
            diffs[name] = max(float((m - r).abs().max()) for m, r in zip(maps, ref, strict=True))
            share = torch.cat([activated_fraction(m) for m in maps])
            same[name] = float((share == ref_share).double().mean())
    best = dict.fromkeys(engines, float("inf"))
    for _ in range(args.repeat):
        for name, (eng, target) in engines.items():
            torch.manual_seed(0)
            sync()
            t = time.perf_counter()
            for x, y in batches:
                eng(x, y, target)
            sync()
            best[name] = min(best[name], time.perf_counter() - t)

    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    import torchcam

    print(f"{args.arch} at {args.size} px, batch {args.batch_size}, {args.images} images/round, best of {args.repeat}; "
          f"device: {dev_name}; torch {torch.__version__}; torchcam {torchcam.__version__}")
    base = best["(a) torchcam GradCAM"]
    print(f"{'engine':46s} {'img/s':>8s} {'vs (a)':>7s} {'max |map - torchcam|':>21s} {'same share >= 0.5':>18s}")
    for name, t in best.items():
        d = f"{diffs[name]:.2e}" if name in diffs else "(other method)"
        sh = f"{100 * same[name]:.1f}%" if name in same else ""
        print(f"{name:46s} {args.images / t:8.1f} {base / t:6.2f}x {d:>21s} {sh:>18s}")


if __name__ == "__main__":
    main()
