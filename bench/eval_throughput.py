"""Evaluation throughput: seconds per evaluation seed, seeds trained one by one vs stacked (vmap).

Trains the dd-v1 network for the resolution (ConvNetD3 at 32 px) on random class-major sets of IPC
1/10/50 (10 classes) with the protocol's batch size and DSA, for a few epochs, and prints seconds per
seed (training plus the final test pass over 500 images), extrapolated to the protocol's epochs, and the
sequential/stacked ratio (> 1 means stacking is faster). Timings alternate the two modes to share any
background load fairly.

    .venv/bin/python bench/eval_throughput.py                      # 32 px, CPU, 3 seeds, 10 epochs
    .venv/bin/python bench/eval_throughput.py --device cuda --res 128 --seeds 5 --epochs 50
"""

from __future__ import annotations

import argparse
import time

import torch

from compdd.evaluation.protocols import get_protocol
from compdd.evaluation.trainer import train_and_evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="dd-v1")
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--ipcs", default="1,10,50")
    ap.add_argument("--seeds", type=int, default=3, help="number of evaluation seeds")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2, help="timings per mode (the minimum is reported)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    base = get_protocol(args.protocol)
    proto, _ = base.with_overrides(epochs=args.epochs)
    seeds = list(range(args.seeds))
    g = torch.Generator().manual_seed(0)
    test_x = torch.randint(0, 256, (500, 3, args.res, args.res), dtype=torch.uint8, generator=g)
    test_y = torch.randint(0, 10, (500,), generator=g)
    print(f"{base.id} model {base.model_for(args.res)} at {args.res} px, {args.device}, torch threads "
          f"{torch.get_num_threads()}, {len(seeds)} seeds, {args.epochs} epochs timed, batch {proto.batch_size}")
    print(f"{'ipc':>4} {'mode':<10} {'s/seed':>8} {'s/seed/epoch':>13} {f's/seed @{base.epochs} ep':>16}")
    for ipc in [int(i) for i in args.ipcs.split(",")]:
        x = torch.randn(10 * ipc, 3, args.res, args.res, generator=g)
        y = torch.arange(10).repeat_interleave(ipc)
        best = {False: float("inf"), True: float("inf")}
        for _ in range(args.repeats):
            for batched in (False, True):
                t0 = time.perf_counter()
                train_and_evaluate(x, y, test_x, test_y, proto, num_classes=10, seeds=seeds, device=args.device,
                                   batched=batched, progress=False)
                best[batched] = min(best[batched], (time.perf_counter() - t0) / len(seeds))
        for batched in (False, True):
            s = best[batched]
            print(f"{ipc:>4} {'stacked' if batched else 'sequential':<10} {s:8.3f} {s / args.epochs:13.4f} "
                  f"{s / args.epochs * base.epochs:16.1f}")
        print(f"{ipc:>4} ratio sequential/stacked = {best[False] / best[True]:.2f}")


if __name__ == "__main__":
    main()
