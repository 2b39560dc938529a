import json

import pytest

from compdd import benchmark, imagenet

PAPER_BIRD_HARD = "n01537544 n01592084 n01824575 n01558993 n01534433 n01843065 n01530575 n01560419 n01601694 n01532829"
PAPER_MUSIC_HARD = "n02787622 n03495258 n02787622 n03452741 n02676566 n04141076 n02992211 n02672831 n03272010 n03372029"
PAPER_ROUND_EASY = "n02782093 n03379051 n07753275 n04328186 n02794156 n09835506 n02802426 n04540053 n04019541 n04118538"


def test_v1_has_sixteen_subsets_in_eight_categories():
    d = benchmark.load_definition("comp-dd-v1")
    assert d.id == "comp-dd-v1"
    assert set(d.categories) == set(benchmark.CATEGORIES)
    names = [s.name for s in d.subsets]
    assert sorted(names) == sorted(f"{c}-{x}" for c in benchmark.CATEGORIES for x in ("easy", "hard"))
    for s in d.subsets:
        assert len(set(s.wnids)) == 10
        assert all(imagenet.is_wnid(w) for w in s.wnids)


@pytest.mark.parametrize(("name", "paper"), [("bird-hard", PAPER_BIRD_HARD), ("round-easy", PAPER_ROUND_EASY)])
def test_wnids_and_order_match_appendix_d1(name, paper):
    assert list(benchmark.get_subset(name).wnids) == paper.split()


def test_music_hard_erratum_replaces_only_the_repeat():
    d = benchmark.load_definition("comp-dd-v1")
    (e,) = d.errata
    assert e["original"] == PAPER_MUSIC_HARD.split()
    assert e["removed"] == "n02787622" and e["position"] == 2
    fixed = list(d.subset("music-hard").wnids)
    expect = PAPER_MUSIC_HARD.split()
    expect[2] = e["replacement"]
    assert fixed == expect
    assert e["replacement"] not in d.subset("music-easy").wnids
    assert imagenet.name_of(e["replacement"]) == "bassoon"
    assert e["reason"]


def test_easy_and_hard_disjoint_and_inside_category():
    d = benchmark.load_definition("comp-dd-v1")
    for c, members in d.categories.items():
        easy, hard = set(d.subset(f"{c}-easy").wnids), set(d.subset(f"{c}-hard").wnids)
        assert not easy & hard
        assert easy | hard == set(members)


def test_classic_subsets_are_separate_and_match_the_spec():
    assert benchmark.list_subsets("image*") == [
        "imagenette", "imagewoof", "imagemeow", "imageyellow", "imagefruit", "imagesquawk"]
    nette = benchmark.get_subset("imagenette")
    assert nette.category is None and nette.definition == "classic"
    assert nette.imagenet_indices == [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]


def test_glob_listing():
    assert benchmark.list_subsets("*-hard")[0] == "bird-hard"
    assert len(benchmark.list_subsets("*-easy")) == 8


def _doc(**changes):
    doc = benchmark.load_definition("comp-dd-v1").to_json()
    doc.update(changes)
    return doc


def test_round_trip_through_json_is_identical():
    d = benchmark.load_definition("comp-dd-v1")
    again = benchmark.parse_definition(json.loads(json.dumps(d.to_json())))
    assert again.subsets == d.subsets and again.sha256() == d.sha256()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["subsets"][0]["wnids"].__setitem__(1, d["subsets"][0]["wnids"][0]), "repeats"),
    (lambda d: d["subsets"][0]["wnids"].pop(), "has 9 classes"),
    (lambda d: d["subsets"][0]["wnids"].__setitem__(0, "n00000000"), "not ImageNet-1K"),
    (lambda d: d["subsets"][1]["wnids"].__setitem__(0, d["subsets"][0]["wnids"][0]), "share"),
    (lambda d: d.__setitem__("colour", 1), "unknown key"),
    (lambda d: d["subsets"][0].__setitem__("difficulty", "medium"), "difficulty"),
])
def test_validation_rejects_bad_definitions(mutate, message):
    doc = _doc()
    mutate(doc)
    with pytest.raises(benchmark.DefinitionError, match=message):
        benchmark.parse_definition(doc, "bad.json")


def test_user_category_file_with_more_members(tmp_path):
    d = benchmark.load_definition("comp-dd-v1")
    dogs = list(d.categories["dog"]) + ["n02099601", "n02111889"]  # golden retriever, Samoyed
    cats = {c: list(m) for c, m in d.categories.items()} | {"dog": dogs}
    f = tmp_path / "cats.json"
    f.write_text(json.dumps(cats))
    d2 = benchmark.load_definition("comp-dd-v1", categories_file=f)
    assert len(d2.categories["dog"]) == 22
    assert d2.subsets == d.subsets


def test_missing_definition_file_names_the_fix(tmp_path):
    with pytest.raises(benchmark.DefinitionError, match="built-in name"):
        benchmark.load_definition(tmp_path / "nope.json")
