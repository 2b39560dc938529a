"""Leaderboard plots as PNG bytes (matplotlib, no pyplot state): accuracy vs IPC, easy vs hard recovery.

Figures are drawn with fixed sizes, fonts and metadata so that the same records give the same bytes.
"""

from __future__ import annotations

import io
from collections import defaultdict

from matplotlib.figure import Figure

from compdd.benchmark import get_subset
from compdd.leaderboard.collect import Entry

_MARKERS = "osD^vP*X<>"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No "Software" key: the bytes then depend only on the drawing, not on the matplotlib version string.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def accuracy_vs_ipc(entries: list[Entry], title: str, methods: list[str], subsets: list[str],
                    labels: dict[str, str]) -> bytes:
    """One panel per subset; a line per method through its IPCs, with ± as error bars.

    A method keeps its colour and marker in every panel. Non-standard results are left out, as in the ranking.
    """
    ncols = min(3, len(subsets))
    nrows = -(-len(subsets) // ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.0 * nrows + 0.6), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    by = defaultdict(list)
    for e in entries:
        if not e.record.nonstandard:
            by[(e.record.subset, e.record.method)].append(e.record)
    for ax, sub in zip(axes, subsets):
        for i, m in enumerate(methods):
            recs = sorted(by.get((sub, m), []), key=lambda r: r.ipc)
            if not recs:
                continue
            ax.errorbar([r.ipc for r in recs], [r.top1_mean for r in recs], yerr=[r.top1_std or 0 for r in recs],
                        marker=_MARKERS[i % len(_MARKERS)], color=f"C{i % 10}", capsize=2, label=labels.get(m, m))
        ax.set_xscale("log")
        ipcs = sorted({e.record.ipc for e in entries if e.record.subset == sub})
        ax.set_xticks(ipcs, [str(i) for i in ipcs])
        ax.minorticks_off()
        ax.set_title(sub)
        ax.set_xlabel("images per class")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    for ax in axes[len(subsets):]:
        ax.set_visible(False)
    legend: dict[str, object] = {}
    for ax in axes[:len(subsets)]:
        for h, n in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(n, h)
    order = [labels.get(m, m) for m in methods if labels.get(m, m) in legend]
    fig.legend([legend[n] for n in order], order, loc="outside lower center", ncols=min(len(order), 8), frameon=False)
    return _png(fig)


def recovery_pairs(entries: list[Entry]) -> list[tuple[str, str, int, float, float]]:
    """(category, method, ipc, easy RR, hard RR) for every Comp-DD category measured on both subsets."""
    rr: dict[tuple[str, str, int], dict[str, float]] = defaultdict(dict)
    for e in entries:
        r = e.record
        sub = get_subset(r.subset)
        if sub.category and sub.difficulty and r.recovery_ratio is not None and not r.nonstandard:
            rr[(sub.category, r.method, r.ipc)][sub.difficulty] = r.recovery_ratio
    return [(c, m, k, d["easy"], d["hard"]) for (c, m, k), d in sorted(rr.items()) if {"easy", "hard"} <= set(d)]


def easy_vs_hard(entries: list[Entry], title: str, methods: list[str], labels: dict[str, str]) -> bytes | None:
    """Scatter of recovery ratio (accuracy / full-data accuracy) on the easy vs the hard subset of each category.

    Points below the diagonal are categories whose hard subset distils worse. ``None`` if no pairs exist.
    """
    pairs = recovery_pairs(entries)
    if not pairs:
        return None
    fig = Figure(figsize=(5.5, 5.0), layout="constrained")
    ax = fig.subplots()
    ipcs = sorted({k for _, _, k, _, _ in pairs})
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    for cat, m, k, easy, hard in pairs:
        ax.scatter(easy, hard, color=colors.get(m, "k"), marker=_MARKERS[ipcs.index(k) % len(_MARKERS)], zorder=3)
        ax.annotate(cat, (easy, hard), textcoords="offset points", xytext=(4, 3), fontsize=8)
    lo = min(min(e, h) for _, _, _, e, h in pairs)
    hi = max(max(e, h) for _, _, _, e, h in pairs)
    pad = 0.05 * max(hi - lo, 0.1)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=1, ls="--", zorder=1)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("recovery ratio, easy subset")
    ax.set_ylabel("recovery ratio, hard subset")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    for m in sorted({m for _, m, _, _, _ in pairs}, key=methods.index):
        ax.scatter([], [], color=colors[m], marker="o", label=labels.get(m, m))
    for k in ipcs:
        ax.scatter([], [], color="0.3", marker=_MARKERS[ipcs.index(k) % len(_MARKERS)], label=f"IPC {k}")
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)
