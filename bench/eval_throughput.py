"""Evaluation throughput: seconds per evaluation seed, seeds trained one by one vs stacked (vmap).

Trains the protocol's network for the resolution (dd-v1: ConvNetD3 at 32 px) on random class-major sets of
IPC 1/10/50 (10 classes) with the protocol's batch size, optimiser and DSA for a few epochs, and prints per
seed: training seconds per epoch, the test pass over 500 images, and the extrapolation to the protocol's
epochs (training x epochs + one test pass), sequential and stacked, with the ratio sequential/stacked
(> 1: stacking is faster). The two modes alternate and the best of ``--repeats`` is kept, so background
load hits both alike.

    .venv/bin/python bench/eval_throughput.py                      # 32 px, CPU, 3 seeds, 3 epochs
    .venv/bin/python bench/eval_throughput.py --threads 1
    .venv/bin/python bench/eval_throughput.py --device cuda --res 128 --seeds 5 --epochs 20
"""

from __future__ import annotations

import argparse
import time

import torch

from compdd.evaluation.protocols import get_protocol
from compdd.evaluation.trainer import evaluate_stack, train_stack


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="dd-v1")
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--ipcs", default="1,10,50")
    ap.add_argument("--seeds", type=int, default=3, help="number of evaluation seeds")
    ap.add_argument("--epochs", type=int, default=3, help="epochs timed per run")
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
    print(f"{base.id}: {base.model_for(args.res)} at {args.res} px on {args.device}, torch threads "
          f"{torch.get_num_threads()}, {len(seeds)} seeds, {args.epochs} epochs timed, batch {proto.batch_size}")
    print(f"{'ipc':>4} {'mode':<10} {'train s/ep':>11} {'test s':>8} {f's/seed @{base.epochs} ep':>16}")
    for ipc in [int(i) for i in args.ipcs.split(",")]:
        x = torch.randn(10 * ipc, 3, args.res, args.res, generator=g)
        y = torch.arange(10).repeat_interleave(ipc)
        best = {m: [float("inf"), float("inf")] for m in (False, True)}
        for _ in range(args.repeats):
            for stacked in (False, True):
                groups = [seeds] if stacked else [[s] for s in seeds]
                train = test = 0.0
                for group in groups:
                    t0 = time.perf_counter()
                    stack = train_stack(x, y, proto, group, num_classes=10, device=args.device, progress=False)
                    _sync(args.device)
                    t1 = time.perf_counter()
                    evaluate_stack(stack, test_x, test_y, args.device)
                    _sync(args.device)
                    train, test = train + t1 - t0, test + time.perf_counter() - t1
                per_ep, per_test = train / len(seeds) / args.epochs, test / len(seeds)
                best[stacked] = [min(best[stacked][0], per_ep), min(best[stacked][1], per_test)]
        total = {m: best[m][0] * base.epochs + best[m][1] for m in best}
        for stacked in (False, True):
            ep, te = best[stacked]
            print(f"{ipc:>4} {'stacked' if stacked else 'sequential':<10} {ep:11.4f} {te:8.3f} {total[stacked]:16.1f}")
        print(f"{ipc:>4} ratio sequential/stacked = {total[False] / total[True]:.2f}")


if __name__ == "__main__":
    main()
