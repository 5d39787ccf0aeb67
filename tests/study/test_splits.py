"""Rules of simclr_s2.study.splits, on small synthetic indexes built here."""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simclr_s2.errors import UserError
from simclr_s2.study.splits import (
    ALL_SETS,
    DEFAULT_FRACTIONS,
    NATURAL,
    SETS,
    SplitError,
    create_splits,
    file_name,
    fraction_size,
    load_manifest,
    load_split,
    split_sizes,
)


def make_index(n_pos: int, n_neg: int, seed: int = 0, snow: float = 0.0, cloud: float = 0.0) -> pd.DataFrame:
    """An index with the contract's columns; rows in random order, positives first by name."""
    rng = np.random.default_rng(seed)
    n = n_pos + n_neg
    frame = pd.DataFrame(
        {
            "name": [f"S2A_MSIL2A_20170613T101031_{i // 100}_{i % 100}" for i in range(n)],
            "present_basic": np.arange(n) < n_pos,
            "present_expanded": np.arange(n) < n_pos + n_neg // 10,
            "snow": rng.random(n) < snow,
            "cloud_shadow": rng.random(n) < cloud,
            "official_split": rng.choice(np.array(["train", "validation", "test", None], dtype=object), n),
        }
    )
    return frame.iloc[rng.permutation(n)].reset_index(drop=True)


def read_all(scheme_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(scheme_dir.iterdir())}


def rows(scheme_dir: Path, name: str) -> list[tuple[str, int]]:
    lines = (scheme_dir / name).read_text().splitlines()[1:]
    return [(n, int(label)) for n, _, label in (line.rpartition(",") for line in lines)]


def rewrite(scheme_dir: Path, name: str, new_rows: list[tuple[str, int]]) -> None:
    """Tamper with a file AND its manifest entry, so only the rule checks can catch it."""
    data = ("name,label\n" + "".join(f"{n},{label}\n" for n, label in new_rows)).encode()
    (scheme_dir / name).write_bytes(data)
    manifest_path = scheme_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][name].update(
        sha256=hashlib.sha256(data).hexdigest(),
        count=len(new_rows),
        positives=sum(label for _, label in new_rows),
    )
    manifest_path.write_text(json.dumps(manifest))


@pytest.fixture
def index() -> pd.DataFrame:
    return make_index(300, 1700, snow=0.1, cloud=0.05)


@pytest.fixture
def made(index: pd.DataFrame, tmp_path: Path) -> Path:
    create_splits(index, "basic", tmp_path, seed=3)
    return tmp_path / "basic"


def test_full_archive_counts(tmp_path: Path) -> None:
    index = make_index(13_589, 20_000)
    manifest = create_splits(index, "basic", tmp_path, exclude_snow_cloud=False)
    assert manifest.sizes == {"train": 19_024, "val": 4_077, "test": 4_077}
    assert manifest.files["train_001pct.csv"].count == 190
    assert manifest.files["val_001pct.csv"].count == 40
    assert sum(manifest.sizes.values()) == 27_178
    assert split_sizes(2 * 36_686) == (51_360, 11_006, 11_006)  # expanded: 51,360 train as in the original
    assert fraction_size(51_360, 1) == 513


def test_rounding_rule() -> None:
    assert split_sizes(10) == (6, 2, 2)  # 1.5 rounds half up, exactly
    assert split_sizes(20, (0.5, 0.25, 0.25)) == (10, 5, 5)
    assert fraction_size(140, 1) == 2  # at least one patch of each class
    assert fraction_size(1, 50) == 1
    assert fraction_size(999, 100) == 999


def test_layout_and_manifest(made: Path, index: pd.DataFrame) -> None:
    expected = {file_name(s, f) for s in SETS for f in DEFAULT_FRACTIONS} | {"manifest.json"}
    assert {p.name for p in made.iterdir()} == expected
    assert "train_001pct.csv" in expected and "val_100pct.csv" in expected
    manifest = load_manifest(made.parent, "basic")
    assert manifest.positives_source == "column present_basic"
    assert manifest.seed == 3 and manifest.fractions == DEFAULT_FRACTIONS
    for name, entry in manifest.files.items():
        data = (made / name).read_bytes()
        assert data.startswith(b"name,label\n") and data.endswith(b"\n") and b"\r" not in data
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert entry.count == len(rows(made, name))
        assert entry.positives == sum(label for _, label in rows(made, name))
    text = (made / "manifest.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


def test_all_positives_and_as_many_negatives(made: Path, index: pd.DataFrame) -> None:
    manifest = load_manifest(made.parent, "basic")
    eligible = index[~(index.snow | index.cloud_shadow)]
    chosen = [r for s in SETS for r in rows(made, file_name(s, 100))]
    truth = dict(zip(eligible.name, eligible.present_basic, strict=True))
    assert all(truth[n] == bool(label) for n, label in chosen)
    assert sorted(n for n, label in chosen if label) == sorted(eligible.name[eligible.present_basic])
    assert sum(1 - label for _, label in chosen) == eligible.present_basic.sum()
    assert manifest.pool["excluded_snow_cloud"] == (index.snow | index.cloud_shadow).sum()
    assert manifest.pool["positives"] == eligible.present_basic.sum()


def test_nested_balanced_disjoint(made: Path) -> None:
    for s in ("train", "val"):
        full = rows(made, file_name(s, 100))
        for f in DEFAULT_FRACTIONS:
            part = rows(made, file_name(s, f))
            assert part == full[: fraction_size(len(full), f)]
    for s in SETS:
        balance = np.cumsum([2 * label - 1 for _, label in rows(made, file_name(s, 100))])
        assert np.abs(balance).max() <= 1  # every prefix balanced within one patch
    names = [{n for n, _ in rows(made, file_name(s, 100))} for s in SETS]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def test_deterministic_bytes_and_row_order_free(index: pd.DataFrame, tmp_path: Path) -> None:
    create_splits(index, "basic", tmp_path / "a", seed=7)
    create_splits(index, "basic", tmp_path / "b", seed=7)
    shuffled = index.sample(frac=1, random_state=1).reset_index(drop=True)
    create_splits(shuffled, "basic", tmp_path / "c", seed=7)
    assert read_all(tmp_path / "a/basic") == read_all(tmp_path / "b/basic") == read_all(tmp_path / "c/basic")


def test_other_seed_other_negatives_and_order(index: pd.DataFrame, tmp_path: Path) -> None:
    create_splits(index, "basic", tmp_path / "a", seed=0)
    create_splits(index, "basic", tmp_path / "b", seed=1)
    a, b = (rows(tmp_path / d / "basic", "train_100pct.csv") for d in "ab")
    assert a != b
    neg = [
        {n for s in SETS for n, label in rows(tmp_path / d / "basic", file_name(s, 100)) if not label}
        for d in "ab"
    ]
    assert neg[0] != neg[1]


def test_exclusions(index: pd.DataFrame, tmp_path: Path) -> None:
    flagged = set(index.name[index.snow | index.cloud_shadow])
    create_splits(index, "basic", tmp_path / "on")
    manifest = create_splits(index, "basic", tmp_path / "off", exclude_snow_cloud=False)
    on = {n for s in SETS for n, _ in rows(tmp_path / "on/basic", file_name(s, 100))}
    off = {n for s in SETS for n, _ in rows(tmp_path / "off/basic", file_name(s, 100))}
    assert not on & flagged and off & flagged
    assert manifest.pool["excluded_snow_cloud"] == 0 and manifest.exclude_snow_cloud is False


@pytest.mark.parametrize("spec", ["train", "test", "train+validation", "validation+train"])
def test_official_split(index: pd.DataFrame, tmp_path: Path, spec: str) -> None:
    manifest = create_splits(index, "basic", tmp_path, official_split=spec)
    allowed = set(index.name[index.official_split.isin(spec.split("+"))])
    names = {n for s in SETS for n, _ in rows(tmp_path / "basic", file_name(s, 100))}
    assert names <= allowed
    assert manifest.official_split == "+".join(p for p in ("train", "validation", "test") if p in spec)
    assert load_split(tmp_path, "basic", 100, "test", index).names


@pytest.mark.parametrize("spec", ["val", "train+train", "train,test"])
def test_official_split_rejected(index: pd.DataFrame, tmp_path: Path, spec: str) -> None:
    with pytest.raises(UserError, match="official_split"):
        create_splits(index, "basic", tmp_path, official_split=spec)


@pytest.mark.parametrize(("kind", "official_split", "named"), [("official", None, "kind official"),
                                                               ("random", "train", "official_split train")])
def test_an_index_without_official_parts_is_refused_by_name(tmp_path: Path, kind: str, official_split: str | None,
                                                            named: str) -> None:
    """A demo's synthetic names are in no official list: one line saying so, not an empty set further on."""
    index = make_index(50, 50).assign(official_split=None)
    with pytest.raises(UserError, match=rf"^{named}: none of the index's 100 eligible patches .*\(100 of its 100 "
                                        "rows have no official part"):
        create_splits(index, "basic", tmp_path, kind=kind, official_split=official_split)


def test_custom_positives(index: pd.DataFrame, tmp_path: Path) -> None:
    positives = index.name.str.endswith("7")
    manifest = create_splits(index, "custom", tmp_path, positives=positives, classes=("Rice fields",))
    assert manifest.positives_source == "caller" and manifest.classes == ("Rice fields",)
    chosen = [r for s in SETS for r in rows(tmp_path / "custom", file_name(s, 100))]
    assert all(n.endswith("7") == bool(label) for n, label in chosen)
    loaded = load_split(tmp_path, "custom", 10, "train", index)  # presence checked, labels unknown
    assert len(loaded.names) == manifest.files["train_010pct.csv"].count
    with pytest.raises(UserError, match="row index"):
        create_splits(index, "custom", tmp_path, positives=positives.iloc[::-1].reset_index(drop=True)[:-1])


def test_minority_negatives_taken_whole(tmp_path: Path) -> None:
    manifest = create_splits(make_index(500, 60), "basic", tmp_path, exclude_snow_cloud=False)
    assert sum(manifest.sizes.values()) == 120
    negatives = sum(
        e.count - e.positives for n, e in manifest.files.items() if n.endswith(("100pct.csv", "test.csv"))
    )
    assert negatives == 60


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fractions": (0, 10)}, "fractions"),
        ({"fractions": (101,)}, "fractions"),
        ({"ratios": (0.7, 0.2, 0.2)}, "ratios"),
        ({"ratios": (1.0, 0.0, 0.0)}, "ratios"),
        ({"seed": -1}, "seed"),
        ({"scheme": "../basic"}, "scheme"),
        ({"scheme": "nothere"}, "present_nothere"),
    ],
)
def test_bad_parameters(index: pd.DataFrame, tmp_path: Path, kwargs: dict, match: str) -> None:
    kwargs = {"scheme": "basic", **kwargs}
    with pytest.raises(UserError, match=match):
        create_splits(index, out_dir=tmp_path, **kwargs)


def test_bad_index(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="at least 2"):
        create_splits(make_index(4, 100), "basic", tmp_path)
    with pytest.raises(UserError, match="twice"):
        create_splits(pd.concat([make_index(50, 50)] * 2), "basic", tmp_path)
    with pytest.raises(UserError, match="snow"):
        create_splits(make_index(50, 50).drop(columns="snow"), "basic", tmp_path)
    with pytest.raises(UserError, match="booleans"):
        create_splits(make_index(50, 50).astype({"present_basic": int}), "basic", tmp_path)
    bad = make_index(50, 50)
    bad.loc[bad.present_basic.idxmax(), "name"] = "../../etc/passwd"
    with pytest.raises(SplitError, match="plain"):
        create_splits(bad, "basic", tmp_path)
    assert not (tmp_path / "basic").exists()  # nothing written when a check fails


def test_rerun_removes_stale_files(index: pd.DataFrame, tmp_path: Path) -> None:
    create_splits(index, "basic", tmp_path)
    create_splits(index, "basic", tmp_path, fractions=(10, 100))
    assert {p.name for p in (tmp_path / "basic").iterdir()} == {
        "train_010pct.csv",
        "train_100pct.csv",
        "val_010pct.csv",
        "val_100pct.csv",
        "test.csv",
        "manifest.json",
    }
    assert load_split(tmp_path, "basic", 10, "val").names


def test_load(made: Path, index: pd.DataFrame) -> None:
    loaded = load_split(made.parent, "basic", 3, "train", index)
    assert loaded.path == made / "train_003pct.csv"
    assert loaded.digest == hashlib.sha256(loaded.path.read_bytes()).hexdigest()
    assert loaded.labels.dtype == np.int64
    assert list(zip(loaded.names, loaded.labels.tolist(), strict=True)) == rows(made, "train_003pct.csv")
    assert (
        load_split(made.parent, "basic", 1, "test").names
        == load_split(made.parent, "basic", 50, "test").names
    )


def test_load_missing(made: Path) -> None:
    with pytest.raises(UserError, match=r"scheme 'expanded'.*\['basic'\]"):
        load_split(made.parent, "expanded", 10, "train")
    with pytest.raises(UserError, match=r"fraction 5 .*\[1, 3, 10, 25, 50, 100\]"):
        load_split(made.parent, "basic", 5, "train")
    with pytest.raises(UserError, match="set 'validation'"):
        load_split(made.parent, "basic", 10, "validation")
    (made / "val_025pct.csv").unlink()
    with pytest.raises(
        SplitError, match=r"val_025pct.csv: listed in the manifest but missing; found .*val_050pct"
    ):
        load_split(made.parent, "basic", 10, "train")


def test_tampered_line_rejected(made: Path) -> None:
    path = made / "train_010pct.csv"
    path.write_bytes(path.read_bytes().replace(b",1\n", b",0\n", 1))
    with pytest.raises(SplitError, match="train_010pct.csv: sha256"):
        load_split(made.parent, "basic", 100, "test")


def test_name_in_two_sets_rejected(made: Path) -> None:
    test = rows(made, "test.csv")
    dup = next(r for r in rows(made, "train_100pct.csv") if r[1] == test[0][1])  # keeps test.csv balanced
    rewrite(made, "test.csv", [dup, *test[1:]])
    with pytest.raises(SplitError, match=rf"test.csv: patches also in train_100pct.csv.*: '{dup[0]}'"):
        load_split(made.parent, "basic", 10, "train")


def test_path_like_name_rejected(made: Path) -> None:
    val = rows(made, "val_100pct.csv")
    rewrite(made, "val_100pct.csv", [("../../etc/passwd", val[0][1]), *val[1:]])
    for f in DEFAULT_FRACTIONS[:-1]:
        rewrite(
            made, file_name("val", f), [("../../etc/passwd", val[0][1]), *rows(made, file_name("val", f))[1:]]
        )
    with pytest.raises(SplitError, match=r"val_100pct.csv: not plain patch names: '../../etc/passwd'"):
        load_split(made.parent, "basic", 10, "train")


def test_broken_nesting_rejected(made: Path) -> None:
    part = rows(made, "train_003pct.csv")
    rewrite(made, "train_003pct.csv", part[2:] + part[:2])
    with pytest.raises(SplitError, match="train_003pct.csv: not the first .* rows of train_100pct.csv"):
        load_split(made.parent, "basic", 3, "train")


def test_unbalanced_rejected(made: Path) -> None:
    test = rows(made, "test.csv")
    rewrite(made, "test.csv", [r for r in test if r[1]][:10] + [r for r in test if not r[1]][:5])
    with pytest.raises(SplitError, match="test.csv: classes not balanced"):
        load_split(made.parent, "basic", 3, "train")


def test_checked_against_index(made: Path, index: pd.DataFrame) -> None:
    test = rows(made, "test.csv")
    smaller = index[index.name != test[0][0]]
    with pytest.raises(SplitError, match=rf"test.csv: patches not in the index.*'{test[0][0]}'"):
        load_split(made.parent, "basic", 10, "train", smaller)
    flipped = index.assign(present_basic=index.present_basic ^ (index.name == test[0][0]))
    with pytest.raises(SplitError, match=rf"test.csv: labels differ from the index: '{test[0][0]}'"):
        load_split(made.parent, "basic", 10, "train", flipped)
    snowy = index.assign(snow=index.snow | (index.name == test[0][0]))
    with pytest.raises(SplitError, match="excluded by the manifest's filters"):
        load_split(made.parent, "basic", 10, "train", snowy)


def test_bad_csv_and_manifest_rejected(made: Path) -> None:
    rewrite(made, "test.csv", [("S2A_x", 2)])
    with pytest.raises(SplitError, match="line 2"):
        load_split(made.parent, "basic", 10, "train")
    (made / "manifest.json").write_text("{}")
    with pytest.raises(SplitError, match="not a valid split manifest"):
        load_split(made.parent, "basic", 10, "train")


@settings(max_examples=30, deadline=None)
@given(
    n_pos=st.integers(0, 120),
    n_neg=st.integers(0, 400),
    seed=st.integers(0, 2**32),
    fractions=st.sets(st.integers(1, 100), min_size=1, max_size=4),
)
def test_property(n_pos: int, n_neg: int, seed: int, fractions: set[int]) -> None:
    index = make_index(n_pos, n_neg, seed=seed % 7, snow=0.1)
    k = min(index.present_basic[~index.snow].sum(), (~index.present_basic[~index.snow]).sum())
    with tempfile.TemporaryDirectory() as tmp:
        if min(split_sizes(2 * k)) < 2:
            with pytest.raises(UserError, match="at least 2"):
                create_splits(index, "basic", Path(tmp), fractions=sorted(fractions), seed=seed)
            return
        manifest = create_splits(index, "basic", Path(tmp), fractions=sorted(fractions), seed=seed)
        assert list(manifest.sizes.values()) == list(split_sizes(2 * k))
        largest = max(fractions)
        seen: set[str] = set()
        for s in SETS:
            full = load_split(Path(tmp), "basic", largest, s, index)
            assert abs(2 * int(full.labels.sum()) - len(full.labels)) <= 1
            assert not seen & set(full.names)
            seen |= set(full.names)
            if s != "test":
                for f in fractions:
                    part = load_split(Path(tmp), "basic", f, s)
                    assert part.names == full.names[: len(part.names)]
                    assert 0 < part.labels.sum() < len(part.labels) or len(part.labels) < 2
        if largest == 100:
            assert len(seen) == 2 * k


# ---- kinds, natural prevalence, caller labels, custom scheme names, manifest formats -------------


def with_geography(index: pd.DataFrame, n_tiles: int = 30) -> pd.DataFrame:
    """Adds a Sentinel-2 tile and UTM position (EPSG, upper-left corner) per patch, derived from its name,
    so positives (the first names) cluster in a few places as irrigation does."""
    i = index.name.str.rsplit("_", n=2).str[1:].apply(lambda p: int(p[0]) * 100 + int(p[1]))
    return index.assign(tile=[f"{29 + k % 3}TV{k:03d}" for k in i // 40 % n_tiles],
                        epsg=32629 + i // 40 % 3, ulx=300_000.0 + (i % 61) * 1200, uly=4_000_000.0 + (i // 61) * 1200)


def set_names(scheme_dir: Path, set_name: str) -> list[str]:
    return [n for n, _ in rows(scheme_dir, file_name(set_name, 100))]


def groups_per_set(scheme_dir: Path, index: pd.DataFrame, key: pd.Series, sets=SETS) -> dict[str, set]:
    group = dict(zip(index.name, key, strict=True))
    return {s: {group[n] for n in set_names(scheme_dir, s)} for s in sets}


def assert_no_shared_group(groups: dict[str, set]) -> None:
    listed = list(groups)
    for i, a in enumerate(listed):
        for b in listed[i + 1 :]:
            assert not groups[a] & groups[b], (a, b)


@pytest.fixture
def geo_index() -> pd.DataFrame:
    return with_geography(make_index(400, 2600, snow=0.05))


def test_tile_split_shares_no_tile(geo_index: pd.DataFrame, tmp_path: Path) -> None:
    manifest = create_splits(geo_index, "basic", tmp_path, kind="tile", seed=2)
    made = tmp_path / "basic"
    tiles = groups_per_set(made, geo_index, geo_index.tile)
    assert_no_shared_group(tiles)
    assert manifest.kind == "tile" and manifest.groups == {s: len(tiles[s]) for s in SETS}
    for s in SETS:
        labels = [label for _, label in rows(made, file_name(s, 100))]
        assert abs(2 * sum(labels) - len(labels)) <= 1 and sum(labels) > 0
    eligible = geo_index[~(geo_index.snow | geo_index.cloud_shadow)]
    assert sum(manifest.files[file_name(s, 100)].positives for s in SETS) == eligible.present_basic.sum()
    test_share = manifest.files["test.csv"].positives / eligible.present_basic.sum()
    assert 0.05 < test_share < 0.3  # about r_test of the positives, up to a tile's worth
    assert load_split(tmp_path, "basic", 10, "train", geo_index).names


def test_grouped_splits_are_deterministic_and_row_order_free(geo_index: pd.DataFrame, tmp_path: Path) -> None:
    create_splits(geo_index, "basic", tmp_path / "a", kind="block-5km", seed=4, natural_test=True)
    shuffled = geo_index.sample(frac=1, random_state=3).reset_index(drop=True)
    create_splits(shuffled, "basic", tmp_path / "b", kind="block-5km", seed=4, natural_test=True)
    create_splits(geo_index, "basic", tmp_path / "c", kind="block-5km", seed=5, natural_test=True)
    assert read_all(tmp_path / "a/basic") == read_all(tmp_path / "b/basic") != read_all(tmp_path / "c/basic")


@pytest.mark.parametrize("km", [2, 10])
def test_block_split_shares_no_block(geo_index: pd.DataFrame, tmp_path: Path, km: int) -> None:
    manifest = create_splits(geo_index, "basic", tmp_path, kind=f"block-{km}km", natural_test=True)
    block = [f"{e}/{int(x // (km * 1000))}/{int(y // (km * 1000))}"
             for e, x, y in zip(geo_index.epsg, geo_index.ulx, geo_index.uly, strict=True)]
    blocks = groups_per_set(tmp_path / "basic", geo_index, pd.Series(block), ALL_SETS)
    assert_no_shared_group(blocks)
    assert manifest.kind == f"block-{km}km" and manifest.groups[NATURAL] == len(blocks[NATURAL])
    assert load_split(tmp_path, "basic", 3, NATURAL, geo_index).names


def test_block_split_needs_its_columns(geo_index: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^index has no column 'epsg', which a block-10km split needs$"):
        create_splits(geo_index.drop(columns="epsg"), "basic", tmp_path, kind="block-10km")
    with pytest.raises(UserError, match="no column 'tile'"):
        create_splits(geo_index.drop(columns="tile"), "basic", tmp_path, kind="tile")
    with pytest.raises(UserError, match="'tile' has 1 missing"):
        create_splits(geo_index.assign(tile=geo_index.tile.where(geo_index.index != 0)), "basic", tmp_path,
                      kind="tile")


def test_grouped_split_rechecked_against_the_index(geo_index: pd.DataFrame, tmp_path: Path) -> None:
    create_splits(geo_index, "basic", tmp_path, kind="tile")
    made = tmp_path / "basic"
    test = rows(made, "test.csv")
    used = {n for s in SETS for n in set_names(made, s)}
    train_tiles = set(geo_index.set_index("name").tile[set_names(made, "train")])
    spare = geo_index.name[geo_index.tile.isin(train_tiles) & ~geo_index.name.isin(used) & ~geo_index.present_basic
                           & ~(geo_index.snow | geo_index.cloud_shadow)].iloc[0]
    at = next(i for i, (_, label) in enumerate(test) if label == 0)
    rewrite(made, "test.csv", [*test[:at], (spare, 0), *test[at + 1 :]])  # balanced, eligible, in a train tile
    assert load_split(tmp_path, "basic", 10, "val").names  # without the index the tiles are unknown
    with pytest.raises(SplitError, match="test.csv: tile groups also in train_100pct.csv"):
        load_split(tmp_path, "basic", 10, "val", geo_index)


def test_official_kind_samples_inside_each_part(tmp_path: Path) -> None:
    index = make_index(600, 2400, seed=1)
    manifest = create_splits(index, "basic", tmp_path, kind="official", natural_test=True, natural_share=0.1)
    part = dict(zip(index.name, index.official_split, strict=True))
    for s, expected in (("train", "train"), ("val", "validation"), ("test", "test"), (NATURAL, "test")):
        assert {part[n] for n in set_names(tmp_path / "basic", s)} == {expected}
    assert manifest.ratios is None and manifest.official_split is None
    assert manifest.pool["outside_official_split"] == index.official_split.isna().sum()
    in_test = index[index.official_split == "test"]
    assert manifest.sizes[NATURAL] == round(0.1 * len(in_test))
    assert load_split(tmp_path, "basic", 100, "val", index).names == set_names(tmp_path / "basic", "val")
    with pytest.raises(UserError, match="official_split 'train': a kind 'official' split uses all three"):
        create_splits(index, "basic", tmp_path, kind="official", official_split="train")
    moved = index.assign(official_split=index.official_split.where(
        index.name != set_names(tmp_path / "basic", "val")[0], "train"))
    with pytest.raises(SplitError, match="val_100pct.csv: patches outside the official validation part"):
        load_split(tmp_path, "basic", 100, "val", moved)


@pytest.mark.parametrize("share", [0.02, 0.1])
def test_natural_test_set_has_the_pool_prevalence(index: pd.DataFrame, tmp_path: Path, share: float) -> None:
    manifest = create_splits(index, "basic", tmp_path, natural_test=True, natural_share=share, seed=1)
    made = tmp_path / "basic"
    natural = rows(made, "test_natural.csv")
    eligible = index[~(index.snow | index.cloud_shadow)]
    n = math.floor(share * len(eligible) + 0.5)
    assert len(natural) == n == manifest.sizes[NATURAL] and manifest.natural_share == share
    assert sum(label for _, label in natural) == math.floor(n * eligible.present_basic.mean() + 0.5)
    assert [n for n, _ in natural] == sorted(n for n, _ in natural)
    truth = dict(zip(index.name, index.present_basic, strict=True))
    assert all(truth[name] == bool(label) for name, label in natural)
    others = {n for s in SETS for n in set_names(made, s)}
    assert not others & {n for n, _ in natural}
    assert len(others) == 2 * (eligible.present_basic.sum() - sum(label for _, label in natural))
    loaded = load_split(tmp_path, "basic", 10, NATURAL, index)
    assert loaded.path.name == "test_natural.csv" and loaded.digest == manifest.files["test_natural.csv"].sha256


def test_natural_test_set_is_checked_and_optional(index: pd.DataFrame, tmp_path: Path) -> None:
    create_splits(index, "basic", tmp_path / "plain")
    with pytest.raises(UserError, match="set 'test_natural': .* no natural-prevalence test set"):
        load_split(tmp_path / "plain", "basic", 10, NATURAL)
    create_splits(index, "basic", tmp_path / "nat", natural_test=True)
    made = tmp_path / "nat/basic"
    natural = rows(made, "test_natural.csv")
    rewrite(made, "test_natural.csv", [rows(made, "test.csv")[0], *natural[1:]])
    with pytest.raises(SplitError, match="test_natural.csv: patches also in test.csv"):
        load_split(tmp_path / "nat", "basic", 10, "train")
    create_splits(index, "basic", tmp_path / "nat", natural_test=False)
    assert not (made / "test_natural.csv").exists()  # stale file removed with the option off
    for share in (0.0, 1.0):
        with pytest.raises(UserError, match="natural_share"):
            create_splits(index, "basic", tmp_path, natural_test=True, natural_share=share)


def test_caller_labels_with_na_are_not_eligible(index: pd.DataFrame, tmp_path: Path) -> None:
    ambiguous = index.name.str.endswith(("3", "5"))
    labels = pd.Series(index.present_basic, dtype="boolean").mask(ambiguous)
    manifest = create_splits(index, "v2_basic", tmp_path, positives=labels)
    chosen = {n for s in SETS for n in set_names(tmp_path / "v2_basic", s)}
    assert chosen and not chosen & set(index.name[ambiguous])
    assert manifest.pool["ambiguous_labels"] == (ambiguous & ~(index.snow | index.cloud_shadow)).sum()
    assert manifest.positives_source == "caller"
    assert load_split(tmp_path, "v2_basic", 10, "train", index, positives=labels).names
    first = set_names(tmp_path / "v2_basic", "test")[0]
    with pytest.raises(SplitError, match=rf"test.csv: patches not in the index or excluded.*'{first}'"):
        load_split(tmp_path, "v2_basic", 10, "train", index, positives=labels.mask(index.name == first))
    flipped = labels ^ pd.Series(index.name == first, dtype="boolean")
    with pytest.raises(SplitError, match=rf"test.csv: labels differ from the index: '{first}'"):
        load_split(tmp_path, "v2_basic", 10, "train", index, positives=flipped)
    with pytest.raises(UserError, match=r"positives: expected booleans \(<NA> for not eligible\)"):
        create_splits(index, "v2_basic", tmp_path, positives=labels.astype("Int64"))


def test_custom_scheme_names_are_accepted(index: pd.DataFrame, tmp_path: Path) -> None:
    name = "custom-1a2b3c4d"  # what the create_splits entry point generates for class names joined by ';'
    create_splits(index, name, tmp_path, positives=index.name.str.endswith("7"), classes=("Rice fields",))
    assert load_manifest(tmp_path, name).classes == ("Rice fields",)
    assert load_split(tmp_path, name, 10, "val").names
    for bad in ("-custom", "a/b", "..", "custom 1"):
        with pytest.raises(UserError, match="scheme"):
            create_splits(index, bad, tmp_path, positives=index.name.str.endswith("7"))


@pytest.mark.parametrize("kind", ["block-0km", "blocks", "tile2", "block-1.5km", "", "spatial-", "spatial-0km",
                                  "block"])
def test_bad_kind(index: pd.DataFrame, tmp_path: Path, kind: str) -> None:
    with pytest.raises(UserError, match="kind .*: expected random, spatial, spatial-<n>km, tile, block-<n>km"):
        create_splits(index, "basic", tmp_path, kind=kind)


def test_older_manifests_load_and_unknown_formats_are_refused(made: Path) -> None:
    path = made / "manifest.json"
    raw = json.loads(path.read_text())
    del raw["overlap"]
    path.write_text(json.dumps({**raw, "format": 2}))  # before footprints: overlap never measured
    assert load_manifest(made.parent, "basic").overlap is None
    for key in ("kind", "natural_share", "groups"):
        del raw[key]
    path.write_text(json.dumps({**raw, "format": 1}))  # before kinds: a random split
    manifest = load_manifest(made.parent, "basic")
    assert manifest.kind == "random" and manifest.overlap is None and manifest.overlap_shares() == {}
    assert load_split(made.parent, "basic", 10, "train").names
    path.write_text(json.dumps({**raw, "format": 4}))
    with pytest.raises(SplitError, match="manifest format 4, expected 1 to 3"):
        load_split(made.parent, "basic", 10, "train")


@settings(max_examples=20, deadline=None)
@given(n_pos=st.integers(20, 150), n_tiles=st.integers(3, 40), seed=st.integers(0, 2**32))
def test_tile_property(n_pos: int, n_tiles: int, seed: int) -> None:
    index = with_geography(make_index(n_pos, 1200, seed=seed % 5), n_tiles=n_tiles)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            create_splits(index, "basic", Path(tmp), kind="tile", seed=seed, natural_test=True, natural_share=0.1)
        except UserError as exc:
            assert "every set needs both" in str(exc)
            return
        tiles = groups_per_set(Path(tmp) / "basic", index, index.tile, ALL_SETS)
        assert_no_shared_group(tiles)
        for s in SETS:
            full = load_split(Path(tmp), "basic", 100, s, index)
            assert abs(2 * int(full.labels.sum()) - len(full.labels)) <= 1


# ---- footprints: temporal twins and neighbours never on both sides of a spatial split ------------


def twin_index(seed: int = 0) -> pd.DataFrame:
    """Patches on a 40 x 30 grid of footprints in one UTM zone, each seen on two or three dates (temporal
    twins), a second tile overlapping it 60 m off its grid, and a patch of another zone at the same
    numbers; positives cluster in fields of 5 x 6 footprints and stay positive on every date."""
    rng = np.random.default_rng(seed)
    rows = []
    for date in ("20170613", "20170718", "20170822"):
        for r in range(40):
            for c in range(30):
                if date != "20170822" or rng.random() < 0.5:
                    rows.append((f"S2A_MSIL2A_{date}T101031_{r}_{c}", 32629, 300_000 + 1200 * c, 4_500_000 - 1200 * r,
                                 (r // 5 + c // 6) % 4 == 0))
    for r in range(8):
        for c in range(6):
            rows.append((f"S2B_MSIL2A_20170620T101031_{r}_{c}", 32629, 300_060 + 1200 * (c + 24),
                         4_499_980 - 1200 * (r + 10), False))
    rows.append(("S2B_MSIL2A_20170620T101031_0_99", 32630, 300_000, 4_500_000, False))
    frame = pd.DataFrame(rows, columns=["name", "epsg", "ulx", "uly", "present_basic"])
    frame = frame.assign(tile="29TNE", snow=False, cloud_shadow=False, official_split=None)
    return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)


def near_counts(index: pd.DataFrame, scheme_dir: Path, sets: tuple[str, ...], reference: str) -> dict[str, int]:
    """Brute force: patches of each set with the same CRS and a corner within 1,200 m of a reference patch."""
    at = index.set_index("name")
    ref = at.loc[set_names(scheme_dir, reference), ["epsg", "ulx", "uly"]].to_numpy()
    counts = {}
    for s in sets:
        mine = at.loc[set_names(scheme_dir, s), ["epsg", "ulx", "uly"]].to_numpy()
        close = [((ref[:, 0] == e) & (abs(ref[:, 1] - x) <= 1200) & (abs(ref[:, 2] - y) <= 1200)).any()
                 for e, x, y in mine]
        counts[s] = int(sum(close))
    return counts


def test_the_entry_points_default_is_spatial() -> None:
    from simclr_s2.settings import specs
    from simclr_s2.settings.spec import build

    assert build(specs.CreateSplits, {}).kind == "spatial"


def test_a_spatial_split_has_no_footprint_or_neighbour_in_two_sets(tmp_path: Path) -> None:
    index = twin_index()
    manifest = create_splits(index, "basic", tmp_path, kind="spatial", natural_test=True, natural_share=0.1)
    made = tmp_path / "basic"
    for i, reference in enumerate(ALL_SETS):
        others = ALL_SETS[i + 1:]
        assert near_counts(index, made, others, reference) == dict.fromkeys(others, 0)
    assert manifest.overlap == {"val": 0, "test": 0, NATURAL: 0} and manifest.pool["buffer"] > 0
    at = index.set_index("name")
    train = at.loc[set_names(made, "train"), ["ulx", "uly"]]
    assert train.duplicated().any()  # temporal twins are kept, together
    assert min(manifest.files[file_name(s, 100)].positives for s in SETS) > 0
    assert load_split(tmp_path, "basic", 10, "test", index).names


def test_a_spatial_split_is_deterministic_bytes(tmp_path: Path) -> None:
    index = twin_index()
    create_splits(index, "basic", tmp_path / "a", kind="spatial", seed=7, natural_test=True)
    create_splits(index, "basic", tmp_path / "b", kind="spatial", seed=7, natural_test=True)
    shuffled = index.sample(frac=1, random_state=1).reset_index(drop=True)
    create_splits(shuffled, "basic", tmp_path / "c", kind="spatial", seed=7, natural_test=True)
    create_splits(index, "basic", tmp_path / "d", kind="spatial", seed=8, natural_test=True)
    first = read_all(tmp_path / "a/basic")
    assert first == read_all(tmp_path / "b/basic") == read_all(tmp_path / "c/basic") != read_all(tmp_path / "d/basic")


def test_the_overlap_of_a_random_split_is_the_brute_force_count(tmp_path: Path, caplog) -> None:
    index = twin_index(seed=1)
    with caplog.at_level("WARNING", logger="simclr_s2.study.splits"):
        manifest = create_splits(index, "basic", tmp_path, kind="random", natural_test=True, seed=2)
    expected = near_counts(index, tmp_path / "basic", ("val", "test", NATURAL), "train")
    assert manifest.overlap == expected and expected["test"] > manifest.sizes["test"] / 2  # twins and neighbours
    assert manifest.overlap_shares()["test"] == expected["test"] / manifest.sizes["test"]
    assert f"{expected['test'] / manifest.sizes['test']:.1%} of the test patches are near train" in caplog.text
    assert load_manifest(tmp_path, "basic").overlap == expected


def test_a_grouped_split_records_its_overlap_and_an_index_without_footprints_none(tmp_path: Path) -> None:
    index = twin_index()
    manifest = create_splits(index, "basic", tmp_path / "a", kind="block-5km", natural_test=True)
    assert manifest.overlap == near_counts(index, tmp_path / "a/basic", ("val", "test", NATURAL), "train")
    assert create_splits(index.drop(columns="epsg"), "basic", tmp_path / "b").overlap is None
    with pytest.raises(UserError, match="index has no column 'epsg', which a spatial split needs"):
        create_splits(index.drop(columns="epsg"), "basic", tmp_path / "c", kind="spatial")


def test_a_spatial_split_is_rechecked_for_neighbours_against_the_index(tmp_path: Path) -> None:
    index = twin_index()
    create_splits(index, "basic", tmp_path, kind="spatial-12km")
    made = tmp_path / "basic"
    block = pd.Series([f"{e}/{x // 12000}/{y // 12000}" for e, x, y in zip(index.epsg, index.ulx, index.uly,
                                                                         strict=True)], index=index.name)
    used = {n for s in SETS for n in set_names(made, s)}
    val_blocks = set(block[set_names(made, "val")])
    test = index.set_index("name").loc[set_names(made, "test")]
    spare = [n for n, e, x, y, positive
             in index[["name", "epsg", "ulx", "uly", "present_basic"]].itertuples(index=False)
             if n not in used and not positive and block[n] in val_blocks
             and ((test.epsg == e) & ((test.ulx - x).abs() <= 1200) & ((test.uly - y).abs() <= 1200)).any()]
    val = rows(made, "val_100pct.csv")
    last_negative = max(i for i, (_, label) in enumerate(val) if label == 0)
    rewrite(made, "val_100pct.csv", [*val[:last_negative], (spare[0], 0), *val[last_negative + 1:]])
    assert load_split(tmp_path, "basic", 100, "val").names  # without the index the footprints are unknown
    with pytest.raises(SplitError, match="test.csv: patches on or next to the ground of val_100pct.csv"):
        load_split(tmp_path, "basic", 100, "val", index)


# ---- spatial cross-validation: k folds of blocks, leave one country out ---------------------------------


def test_spatial_folds_test_on_disjoint_ground_with_no_neighbour_across_sets(tmp_path: Path) -> None:
    """Every fold's sets are apart (no footprint, twin or neighbour in two), and the k folds' test sets
    share no footprint: each footprint is tested in one fold only."""
    index = twin_index()
    tested: list[set] = []
    for fold in range(3):
        manifest = create_splits(index, "basic", tmp_path / str(fold), kind="folds-3", fold=fold,
                                 natural_test=True, natural_share=0.05)
        made = tmp_path / str(fold) / "basic"
        for i, reference in enumerate(ALL_SETS):
            assert near_counts(index, made, ALL_SETS[i + 1:], reference) == dict.fromkeys(ALL_SETS[i + 1:], 0)
        assert (manifest.fold, manifest.held_out, manifest.overlap) == (fold, str(fold), {"val": 0, "test": 0,
                                                                                        NATURAL: 0})
        at = index.set_index("name")
        tested.append({tuple(r) for r in at.loc[set_names(made, "test") + set_names(made, NATURAL),
                                                 ["epsg", "ulx", "uly"]].to_numpy()})
        assert load_split(tmp_path / str(fold), "basic", 100, "test", index).names  # rechecked on load
    assert all(not (a & b) for i, a in enumerate(tested) for b in tested[i + 1:])


@pytest.mark.parametrize("seed", range(5))
def test_folds_are_balanced_by_positives_within_the_largest_block(seed: int) -> None:
    """Stated tolerance: a fold's positives differ from the mean by at most the largest block's positives."""
    from simclr_s2.study.split_kinds import balanced_folds, group_keys

    index = twin_index(seed)
    blocks, pos = group_keys(index, "folds-4"), index["present_basic"].to_numpy()
    fold = balanced_folds(blocks, pos, 4, np.random.default_rng(seed))
    per_fold = np.bincount(fold, weights=pos, minlength=4)
    largest = pd.Series(pos).groupby(blocks).sum().max()
    assert (np.abs(per_fold - pos.sum() / 4) <= largest).all() and (per_fold > 0).all()
    assert pd.Series(fold).groupby(blocks).nunique().max() == 1  # a block is in one fold


def test_folds_are_deterministic_bytes(tmp_path: Path) -> None:
    index = twin_index()
    shuffled = index.sample(frac=1, random_state=3).reset_index(drop=True)
    for name, frame, fold, seed in (("a", index, 1, 4), ("b", shuffled, 1, 4), ("c", index, 2, 4), ("d", index, 1, 5)):
        create_splits(frame, "basic", tmp_path / name, kind="folds-3-6km", fold=fold, seed=seed)
    first = read_all(tmp_path / "a/basic")
    assert first == read_all(tmp_path / "b/basic") != read_all(tmp_path / "c/basic")
    assert first != read_all(tmp_path / "d/basic")


def test_leave_one_country_out(tmp_path: Path) -> None:
    """Fold i tests on the i-th country in alphabetical order; no other country in test, none of it elsewhere."""
    index = twin_index()
    country = np.where(index.ulx < 312_000, "Portugal", np.where(index.ulx < 324_000, "Austria", "Serbia"))
    index = index.assign(country=country)
    for fold, held_out in enumerate(["Austria", "Portugal", "Serbia"]):
        manifest = create_splits(index, "basic", tmp_path / held_out, kind="country", fold=fold)
        made = tmp_path / held_out / "basic"
        at = index.set_index("name")["country"]
        assert manifest.held_out == held_out and set(at[set_names(made, "test")]) == {held_out}
        assert held_out not in set(at[set_names(made, "train") + set_names(made, "val")])
        assert near_counts(index, made, ("val", "test"), "train") == {"val": 0, "test": 0}
        assert load_split(tmp_path / held_out, "basic", 100, "test", index).names
    with pytest.raises(UserError, match=r"fold 3: kind country has folds 0 to 2 \(Austria, Portugal, Serbia\)"):
        create_splits(index, "basic", tmp_path / "x", kind="country", fold=3)


@pytest.mark.parametrize(("kind", "fold", "match"), [
    ("folds-3", 3, "fold 3: kind folds-3 has folds 0 to 2"),
    ("folds-3", -1, "fold -1: kind folds-3 has folds 0 to 2"),
    ("spatial", 1, "fold 1: kind spatial has no folds; use folds-<k> or country, or fold 0"),
    ("folds-1", 0, "kind 'folds-1': expected"),
    ("folds-14", 0, r"^kind folds-14: the pool has 13 spatial groups holding positives, fewer than the 14 folds"),
    ("folds-100000", 0, "^kind folds-100000: the pool has 13 "),
])
def test_bad_folds_are_one_line(tmp_path: Path, kind: str, fold: int, match: str) -> None:
    with pytest.raises(UserError, match=match):
        create_splits(twin_index(), "basic", tmp_path, kind=kind, fold=fold)


def test_manifests_before_folds_and_present_columns_still_load(made: Path, index: pd.DataFrame) -> None:
    path = made / "manifest.json"
    raw = json.loads(path.read_text())
    del raw["fold"], raw["held_out"]
    path.write_text(json.dumps({**raw, "positives_source": "column positive_basic"}))
    manifest = load_manifest(made.parent, "basic")
    assert (manifest.fold, manifest.held_out) == (None, None)
    flipped = index.assign(present_basic=~index.present_basic)  # the legacy source still means the column
    with pytest.raises(SplitError, match="labels differ from the index"):
        load_split(made.parent, "basic", 10, "train", flipped)
