import json

import pytest
from click.testing import CliRunner

from compdd.cli import main


@pytest.fixture
def run():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args))


def test_help_lists_commands_with_examples(run):
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("list-subsets", "list-methods", "make-sample-imagenet", "info"):
        assert cmd in r.output
    assert "compdd make-sample-imagenet sample-in1k" in run("make-sample-imagenet", "--help").output


def test_list_subsets_table_and_json(run):
    r = run("list-subsets", "bird-hard")
    assert r.exit_code == 0
    assert "bird-hard  (bird/hard, comp-dd)" in r.output
    assert " 0  n01537544   14  indigo bunting" in r.output
    rows = json.loads(run("list-subsets", "*-easy", "--json").output)
    assert [r["name"] for r in rows][:2] == ["bird-easy", "dog-easy"]
    assert rows[0]["classes"][0] == {"label": 0, "wnid": "n02007558", "imagenet_index": 130, "name": "flamingo"}


def test_unknown_subset_is_a_usage_error(run):
    r = run("list-subsets", "bird-medium")
    assert r.exit_code == 2 and "no subset matches 'bird-medium'" in r.output


def test_info_shows_the_erratum(run):
    r = run("info")
    assert r.exit_code == 0
    assert "n02787622 (banjo) -> n02804610 (bassoon)" in r.output
    assert "dd-v1" in r.output


def test_make_sample_imagenet_and_its_errors(run, tmp_path):
    out = tmp_path / "s"
    r = run("make-sample-imagenet", str(out), "--subsets", "bird-easy", "--train-per-class", "2",
            "--val-per-class", "1", "--size", "32")
    assert r.exit_code == 0, r.output
    assert len(list((out / "train").glob("*/*.JPEG"))) == 20
    r = run("make-sample-imagenet", str(out), "--subsets", "bird-easy")
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = run("make-sample-imagenet", str(tmp_path / "t"), "--subsets", "bird-medium")
    assert r.exit_code == 2 and "unknown subset 'bird-medium'" in r.output
    r = run("make-sample-imagenet", str(tmp_path / "u"), "--size", "4")
    assert r.exit_code == 2 and "--size" in r.output


def test_unwritable_output_folder(run, tmp_path):
    # A regular file where a folder should be: unwritable for root too (tests run as root in CI).
    (tmp_path / "file").write_text("x")
    r = run("make-sample-imagenet", str(tmp_path / "file" / "sub" / "s"))
    assert r.exit_code == 2 and "cannot be written" in r.output
