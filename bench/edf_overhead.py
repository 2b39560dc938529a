"""What EDF costs on top of DATM: CPD's selection per iteration, and DAE's CAM refresh amortised over K.

Part 1 times the matching-loss reduction alone on a flat vector of P = 615,690 errors (ConvNetD5 at 128 px,
10 classes), forward and backward: DATM's ``sum(r) / sum(d)``, CPD with ``torch.topk`` (what edf.cpd does) for
each criterion, and CPD with a full ``argsort`` (what the public code does).

Part 2 times whole outer iterations of DATM and EDF on the engine (same seed, same settings, experts trained
here on random data): EDF with CPD only, DAE only, and both. The CAM refresh happens at iterations 0, K, 2K...,
so it reports the refresh iteration and the others separately, and the amortised cost refresh/K.

Examples:
  .venv/bin/python bench/edf_overhead.py                      # CPU: 32 px, ConvNetD3, IPC 1
  .venv/bin/python bench/edf_overhead.py --res 128 --ipc 10 --syn-steps 20 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from edf.cpd import CRITERIA, cpd_loss

P_D5 = 615_690


def _clock() -> float:
    """Wall time on CUDA (synchronised); on CPU the process's CPU time, which a busy shared machine distorts less."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def _time(fn, repeat: int) -> float:
    fn()
    best = []
    for _ in range(repeat):
        t0 = _clock()
        fn()
        best.append(_clock() - t0)
    return statistics.median(best) * 1e3


def bench_reduction(device: str, repeat: int) -> None:
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(P_D5, generator=g).to(device).requires_grad_()
    target = torch.randn(P_D5, generator=g).to(device)
    d = (torch.randn(P_D5, generator=g).to(device) - target) ** 2

    def run(reduce):
        def f():
            r = (theta - target) ** 2
            (gr,) = torch.autograd.grad(reduce(r), theta)
            return gr
        return f

    def argsort_cpd(alpha):
        def reduce(r):
            kept = torch.argsort(r.detach())[int(alpha * r.numel()):]
            return r[kept].sum() / d[kept].sum()
        return reduce

    base = _time(run(lambda r: r.sum() / d.sum()), repeat)
    print(f"\nPart 1: matching-loss reduction, P = {P_D5:,}, forward + backward, {device}, median of {repeat}")
    print(f"  {'reduction':<34} {'ms':>8} {'x DATM':>8}")
    print(f"  {'DATM sum(r)/sum(d)':<34} {base:8.2f} {1.0:8.2f}")
    for alpha in (0.25, 0.375):
        for crit in CRITERIA:
            gen = torch.Generator().manual_seed(1)
            t = _time(run(lambda r, a=alpha, c=crit, gen_=gen: cpd_loss(r, d, a, c, gen_)), repeat)
            print(f"  {f'CPD alpha={alpha} {crit} (topk)':<34} {t:8.2f} {t / base:8.2f}")
        t = _time(run(argsort_cpd(alpha)), repeat)
        print(f"  {f'CPD alpha={alpha} loss (argsort, public)':<34} {t:8.2f} {t / base:8.2f}")


def _experts(train, model: str, epochs: int, folder: str, device: str):
    from compdd.methods.tm.experts import ExpertConfig, train_experts

    return train_experts(train, folder, ExpertConfig(model=model, optimizer="sgd", epochs=epochs, batch_size=64),
                         1, device=device, progress=False)


def _iteration_times(method, train, ipc: int, device: str) -> list[float]:
    """Wall time of iterations 1..N-1 (iteration i = end of i minus end of i-1), via the on_iteration_end hook."""
    stamps: list[float] = []
    build = method.hooks

    def tick(ctx) -> None:
        stamps.append(_clock())

    def hooks(train_, ipc_):
        h = build(train_, ipc_)
        h.on_iteration_end = tick
        return h

    method.hooks = hooks
    method.distill(train, ipc, seed=0, device=device, progress=False)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def bench_iterations(args) -> None:
    from compdd import get_subset
    from compdd.data import SubsetTensors
    from compdd.methods.datm import DATM
    from edf.method import EDF

    res, ipc, C = args.res, args.ipc, 10
    model = {32: "convnet_d3", 64: "convnet_d4", 128: "convnet_d5"}[res]
    g = torch.Generator().manual_seed(0)
    n = max(ipc, 20)
    sub = get_subset("bird-hard")  # real wnids, so an ImageNet CAM model can map the labels
    train = SubsetTensors(torch.randint(0, 256, (C * n, 3, res, res), generator=g, dtype=torch.uint8),
                          torch.arange(C).repeat_interleave(n), sub.wnids, sub.name, "train")
    K = args.cam_interval
    iters = args.iterations
    with tempfile.TemporaryDirectory() as tmp:
        _experts(train, model, 4, f"{tmp}/experts", args.device)
        common = dict(model=model, iterations=iters, syn_steps=args.syn_steps, expert_epochs=2, max_start_epoch=2,
                      window_initial_max=None, experts=f"{tmp}/experts", expert_optimizer="sgd",
                      update_threshold=None, checkpoint_every=0, lr_img=100.0, lr_lr=1e-7, batch_syn=None,
                      image_init="real", memory=args.memory, dsa_crop_ratio=0.25)
        runs = {
            "DATM": DATM(**common),
            f"EDF CPD only (alpha {args.alpha})": EDF(**common, alpha=args.alpha, no_dae=True),
            f"EDF DAE only (K {K}, {args.cam_weights})": EDF(**common, no_cpd=True, cam_interval=K,
                                                            cam_weights=args.cam_weights),
            "EDF CPD + DAE": EDF(**common, alpha=args.alpha, cam_interval=K, cam_weights=args.cam_weights),
        }
        times = {name: _iteration_times(m, train, ipc, args.device) for name, m in runs.items()}
    base = statistics.median(times["DATM"])
    print(f"\nPart 2: seconds per outer iteration, {model} at {res} px, IPC {ipc} ({C * ipc} images), "
          f"{args.syn_steps} student steps, memory={args.memory}, {args.device}; iterations 1..{iters - 1} "
          f"(iteration 0 is warm-up); CAM refresh at multiples of K = {K}")
    print(f"  {'run':<40} {'median s/it':>11} {'x DATM':>7} {'refresh it':>10} {'other its':>10} {'amortised':>10}")
    for name, ts in times.items():
        med = statistics.median(ts)
        row = f"  {name:<40} {med:11.3f} {med / base:7.3f}"
        if "DAE" in name:
            refresh = [t for i, t in enumerate(ts, start=1) if i % K == 0]
            other = [t for i, t in enumerate(ts, start=1) if i % K != 0]
            if refresh and other:
                extra = statistics.median(refresh) - statistics.median(other)
                amort = (statistics.median(other) + extra / K) / base
                row += f" {statistics.median(refresh):10.3f} {statistics.median(other):10.3f} {amort:9.3f}x"
        print(row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--res", type=int, default=32, choices=(32, 64, 128))
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--syn-steps", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=9)
    ap.add_argument("--cam-interval", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=0.25)
    ap.add_argument("--cam-weights", default="expert", help="expert, or an ImageNet model such as random / resnet18.tv_in1k")
    ap.add_argument("--memory", default="exact", choices=("plain", "exact", "tesla"))
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--skip-iterations", action="store_true", help="only part 1")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clock = "wall time" if torch.cuda.is_available() else "process CPU time"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, timings are {clock}")
    bench_reduction(args.device, args.repeat)
    if not args.skip_iterations:
        bench_iterations(args)


if __name__ == "__main__":
    main()
