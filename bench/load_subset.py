"""First-load vs cached-load time of a subset as tensors, from an ImageNet folder and from a local export.

Generates a sample ImageNet tree (one subset, a few thousand images), exports it to the Hub layout, then times
``compdd.data.load_tensors`` cold (decode + resize + cache write) and warm (cache read) for both sources, plus
``datasets.load_dataset(folder, config)`` (Arrow only, no decoding) for reference.
Everything lives in a temporary folder (COMPDD_HOME and HF_HOME included) unless --keep is given.

    python bench/load_subset.py                       # bird-hard, 300 train/class (3,000 images), 160 px, res 128
    python bench/load_subset.py --train-per-class 1300 --size 256
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", default="bird-hard")
    ap.add_argument("--train-per-class", type=int, default=300)
    ap.add_argument("--val-per-class", type=int, default=20)
    ap.add_argument("--size", type=int, default=160, help="side of the generated JPEGs")
    ap.add_argument("--res", type=int, default=128, help="tensor resolution")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="compdd-bench-"))
    for cache in ("export", "home", "hf"):  # a kept work folder reuses the generated tree, nothing that is timed
        shutil.rmtree(work / cache, ignore_errors=True)
    os.environ["COMPDD_HOME"] = str(work / "home")
    os.environ["HF_HOME"] = str(work / "hf")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    import datasets
    import datasets.info  # noqa: F401  (imported here so that the export timing excludes import time)
    import huggingface_hub  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import torch

    from compdd import data
    from compdd.hub.export import export_dataset
    from compdd.sample import make_sample_imagenet

    root, out = work / "in1k", work / "export"
    t = time.perf_counter()
    if not root.exists():
        make_sample_imagenet(root, [args.subset], train_per_class=args.train_per_class,
                             val_per_class=args.val_per_class, size=args.size, progress=False)
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    rep = export_dataset(root, out, [args.subset], progress=False)
    t_export = time.perf_counter() - t
    n = rep.records[args.subset]["splits"]["train"]["num_examples"]
    mb = sum(f["size"] for f in rep.records[args.subset]["splits"]["train"]["files"]) / 1e6

    def timed(fn, *a, **k):
        t0 = time.perf_counter()
        res = fn(*a, **k)
        return time.perf_counter() - t0, res

    rows = []
    kw = {"progress": False}
    for source, extra in (("imagenet", {"imagenet_root": root}), ("local", {"path": out})):
        cold, a = timed(data.load_tensors, args.subset, "train", args.res, source=source, **extra, **kw)
        warm, b = timed(data.load_tensors, args.subset, "train", args.res, source=source, **extra, **kw)
        assert torch.equal(a.images, b.images)
        rows.append((f"load_tensors source={source}", cold, warm))
    cache = str(work / "hf" / "ds")
    cold, _ = timed(datasets.load_dataset, str(out), args.subset, cache_dir=cache)
    warm, _ = timed(datasets.load_dataset, str(out), args.subset, cache_dir=cache)
    rows.append(("datasets.load_dataset(folder) (no decode)", cold, warm))

    print(f"subset {args.subset}: {n:,} train images of {args.size}px ({mb:.1f} MB of JPEG), tensors at {args.res}px; "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"generate sample {t_gen:.1f} s, export {t_export:.1f} s ({n / t_export:,.0f} img/s incl. decode check)")
    print(f"{'what':<44} {'first':>8} {'cached':>8} {'speed-up':>9}")
    for what, c, w in rows:
        print(f"{what:<44} {c:>7.2f}s {w:>7.3f}s {c / w:>8.0f}x")
    print(f"first load decodes at {n / rows[0][1]:,.0f} img/s (imagenet) and {n / rows[1][1]:,.0f} img/s (local); "
          f"load average during the run: {os.getloadavg()[0]:.1f}")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
