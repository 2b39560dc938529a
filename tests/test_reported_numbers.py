"""The shipped reported records say exactly what the EDF paper prints (Tables 1 and 10), and the shipped
leaderboard outputs are up to date with the records.

The expected values below were typed by hand from the paper text, independently of the record files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compdd.leaderboard import load_entries, render

ROOT = Path(__file__).resolve().parent.parent / "leaderboard"

# EDF paper, Table 1. Columns: Random MTT FTD DATM EDF (DD protocol) | SRe2L RDED EDF (with KD). "-" = not
# reported. Full-data accuracy (the "Full" column, printed once per subset) is the last value of the IPC 10 line.
TABLE_1 = """
imagenette 1  12.6±1.5 47.7±0.9 52.2±1.0 52.5±1.0 52.6±0.5 20.8±0.2 28.9±0.1 25.7±0.4
imagenette 10 44.8±1.3 63.0±1.3 67.7±0.7 68.9±0.8 71.0±0.8 50.6±0.8 59.0±1.0 64.5±0.6 87.8±1.0
imagenette 50 60.4±1.4 -        -        75.4±0.9 77.8±0.5 73.8±0.6 83.1±0.6 84.8±0.5
imagewoof 1   11.4±1.3 28.6±0.8 30.1±1.0 30.4±0.7 30.8±1.0 15.8±0.8 18.0±0.3 19.2±0.2
imagewoof 10  20.2±1.2 35.8±1.8 38.8±1.4 40.5±0.6 41.8±0.2 38.4±0.4 40.1±0.2 42.3±0.3 66.5±1.3
imagewoof 50  28.2±0.9 -        -        47.1±1.1 48.4±0.5 49.2±0.4 60.8±0.5 61.6±0.8
imagemeow 1   11.2±1.2 30.7±1.6 33.8±1.5 34.0±0.5 34.5±0.2 22.2±0.6 19.2±0.8 20.8±0.5
imagemeow 10  22.4±0.8 40.4±2.2 43.3±0.6 48.9±1.1 52.6±0.4 27.4±0.5 44.2±0.6 48.4±0.7 65.2±0.8
imagemeow 50  38.0±0.5 -        -        56.4±0.9 59.5±0.6 35.8±0.7 55.0±0.6 58.2±0.9
imageyellow 1 14.8±1.0 45.2±0.8 47.7±1.1 48.5±0.4 49.4±0.5 31.8±0.7 30.6±0.2 33.5±0.6
imageyellow 10 41.8±1.1 60.0±1.5 62.8±1.4 65.1±0.7 68.2±0.4 48.2±0.5 59.2±0.5 60.8±0.5 83.2±0.9
imageyellow 50 54.6±0.5 -       -        70.5±0.8 73.6±0.8 57.6±0.9 75.8±0.7 76.2±0.3
imagefruit 1  12.4±0.9 26.6±0.8 29.1±0.9 30.9±1.0 32.8±0.6 23.4±0.5 33.8±0.4 29.6±0.4
imagefruit 10 20.0±0.6 40.3±0.5 44.9±1.5 45.5±0.9 46.2±0.6 39.2±0.7 45.4±0.6 48.4±0.8 64.4±0.8
imagefruit 50 33.6±0.9 -        -        48.2±0.5 50.5±0.5 44.2±0.8 54.8±0.9 56.4±0.6
imagesquawk 1 13.2±1.1 39.4±1.5 40.5±0.9 41.1±0.6 41.8±0.5 21.2±1.0 33.8±0.6 30.5±0.5
imagesquawk 10 29.6±1.5 52.3±1.0 58.4±1.5 61.8±1.3 65.4±0.8 39.2±0.3 59.0±0.5 59.4±0.6 86.4±0.8
imagesquawk 50 52.8±0.4 -       -        71.0±1.2 74.8±1.2 56.8±0.4 77.2±1.2 77.8±0.5
"""
TABLE_1_COLUMNS = [("paper-dd", "random"), ("paper-dd", "mtt"), ("paper-dd", "ftd"), ("paper-dd", "datm"),
                   ("paper-dd", "edf"), ("paper-kd", "sre2l"), ("paper-kd", "rded"), ("paper-kd", "edf")]

# EDF paper, Table 10 (no knowledge distillation). Columns: nette 1/10/50, woof 1/10/50, squawk 1/10/50.
TABLE_10 = """
sre2l 18.4±0.8 41.0±0.3 55.6±0.2 16.0±0.2 32.2±0.3 35.8±0.2 22.5±0.5 35.6±0.4 42.2±0.3
rded  28.0±0.5 53.6±0.8 72.8±0.3 19.0±0.3 32.6±0.5 52.6±0.6 33.8±0.5 52.2±0.5 71.6±0.8
edf   52.6±0.5 71.0±0.8 77.8±0.5 30.8±1.0 41.8±0.2 48.4±0.5 41.8±0.5 65.4±0.8 74.8±1.2
"""
TABLE_10_COLUMNS = [(s, k) for s in ("imagenette", "imagewoof", "imagesquawk") for k in (1, 10, 50)]


def _pm(s: str) -> tuple[float, float]:
    a, b = s.split("±")
    return float(a), float(b)


def expected() -> tuple[dict[tuple[str, str, str, int], tuple[float, float]], dict[str, tuple[float, float]],
                        dict[tuple[str, int], tuple[float, float]]]:
    """((protocol, subset, method, ipc) -> (mean, std), subset -> full-data (mean, std), (subset, ipc) -> random)."""
    cells, full, random = {}, {}, {}
    for line in TABLE_1.strip().splitlines():
        subset, ipc, *vals = line.split()
        if len(vals) == 9:
            full[subset] = _pm(vals.pop())
        assert len(vals) == 8, line
        for (proto, method), v in zip(TABLE_1_COLUMNS, vals):
            if v != "-":
                cells[(proto, subset, method, int(ipc))] = _pm(v)
        random[(subset, int(ipc))] = _pm(vals[0])
    for line in TABLE_10.strip().splitlines():
        method, *vals = line.split()
        for (subset, ipc), v in zip(TABLE_10_COLUMNS, vals, strict=True):
            cells[("paper-nokd", subset, method, ipc)] = _pm(v)
    return cells, full, random


@pytest.fixture(scope="module")
def entries():
    return load_entries(ROOT / "results")


def test_every_reported_record_matches_the_paper(entries):
    cells, full, random = expected()
    reported = {(e.record.protocol, e.record.subset, e.record.method, e.record.ipc): e.record
                for e in entries if e.record.source == "reported"}
    assert set(reported) == set(cells), (set(reported) ^ set(cells))
    assert len(cells) == 6 * 13 + 6 * 9 + 27  # MTT/FTD have no IPC 50 in Table 1
    for key, (mean, std) in cells.items():
        r = reported[key]
        assert (r.top1_mean, r.top1_std) == (mean, std), key
        table = "Table 10" if key[0] == "paper-nokd" else "Table 1"
        assert table in r.reported_in and "EDF paper" in r.reported_in, key
        assert (r.full_reference.mean, r.full_reference.std) == full[r.subset], key
        if key[0] == "paper-dd":
            assert (r.random_reference.mean, r.random_reference.std) == random[(r.subset, r.ipc)], key
        else:
            assert r.random_reference is None, key  # Random was only evaluated under the DD protocol
        assert r.resolution == 128 and r.per_seed == [] and r.artifact is None, key


def test_paper_numbers_are_only_under_paper_protocols(entries):
    for e in entries:
        assert (e.record.source == "reported") == e.record.protocol.startswith("paper-"), e.path


def _strip_images(data: bytes) -> bytes:
    return re.sub(rb"data:image/png;base64,[A-Za-z0-9+/=]+", b"data:image/png;base64,...", data)


def test_shipped_outputs_are_up_to_date(entries):
    """leaderboard/README.md, .csv and .html equal a fresh render of the shipped records.

    PNG pixels depend on the matplotlib/freetype build, so plots are compared by presence only here;
    byte-identity of everything, plots included, is tested within one environment in test_leaderboard.py.
    """
    files = render(entries)
    on_disk = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file() and "results" not in p.parts}
    assert on_disk == set(files), "run `compdd leaderboard build` and commit the outputs"
    for name, data in files.items():
        if not name.endswith(".png"):
            assert _strip_images((ROOT / name).read_bytes()) == _strip_images(data), \
                f"{name} is stale: run `compdd leaderboard build`"


def test_imagenette_ipc10_row_shows_the_paper_numbers():
    md = (ROOT / "README.md").read_text("utf-8")
    section = md.split("## paper-dd", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| imagenette | 10 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["imagenette", "10", "44.8 ± 1.3†", "63.0 ± 1.3†", "67.7 ± 0.7†", "68.9 ± 0.8†",
                     "**71.0 ± 0.8**†", "87.8 ± 1.0"]
