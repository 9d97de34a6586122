"""Kermany patient ids, labeled folder layouts and patient-level splits (no leakage)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from conftest import make_xray, save_gray
from xray_score.errors import UsageError
from xray_score.io.datasets import (
    exclude_patients,
    folder_labels,
    is_labeled,
    label_of_path,
    patient_id,
    patient_split,
    read_labeled,
)


@pytest.mark.parametrize("name,expected", [
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("person1000_virus_1681.jpeg", "person1000"),
    ("PERSON7_virus_12.JPEG", "person7"),
    ("IM-0115-0001.jpeg", "im-0115"),
    ("IM-0115-0002.jpeg", "im-0115"),
    ("NORMAL2-IM-1427-0001.jpeg", "normal2-im-1427"),
    ("/some/dir/IM-0001-0001.png", "im-0001"),
    ("scan_001.png", None),
    ("IM-abc.jpeg", None),
    ("person_bacteria_1.jpeg", None),
    ("xperson12_virus_1.jpeg", None),
])
def test_patient_id(name, expected):
    assert patient_id(name) == expected


def test_same_person_bacteria_and_virus_share_id():
    assert patient_id("person1000_bacteria_2931.jpeg") == patient_id("person1000_virus_1681.jpeg")
    assert patient_id("NORMAL2-IM-1427-0001.jpeg") != patient_id("IM-1427-0001.jpeg")
    assert patient_id("person1_virus_1.jpeg") != patient_id("person10_virus_1.jpeg")


def _tree(root, files):
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        save_gray(path, make_xray(int("PNEUMONIA" in rel), _RNG, size=48))
    return root


_RNG = np.random.default_rng(5)


def test_flat_layout(tmp_path):
    root = _tree(tmp_path / "flat", ["NORMAL/IM-0001-0001.jpeg", "NORMAL/IM-0001-0002.png",
                                     "PNEUMONIA/person3_virus_5.jpeg",
                                     "PNEUMONIA/sub/person4_bacteria_9.png"])
    assert is_labeled(root)
    df = read_labeled(root)
    assert list(df.columns) == ["path", "label", "label_name", "patient_id", "split"]
    assert len(df) == 4
    by_name = {p.rsplit("/", 1)[-1]: r for p, r in zip(df["path"], df.itertuples(), strict=True)}
    assert by_name["IM-0001-0002.png"].label == 0
    assert by_name["IM-0001-0002.png"].label_name == "NORMAL"
    assert by_name["person4_bacteria_9.png"].label == 1
    assert by_name["person4_bacteria_9.png"].patient_id == "person4"
    assert set(df["split"]) == {""}
    assert label_of_path(root / "PNEUMONIA/sub/person4_bacteria_9.png", root) == "PNEUMONIA"


def test_split_layout_and_split_filter(tmp_path):
    root = _tree(tmp_path / "kermany", ["train/NORMAL/IM-0001-0001.jpeg",
                                        "train/PNEUMONIA/person1_virus_1.jpeg",
                                        "val/NORMAL/IM-0002-0001.jpeg",
                                        "test/NORMAL/IM-0003-0001.jpeg",
                                        "test/PNEUMONIA/person2_bacteria_2.jpeg"])
    assert is_labeled(root)
    df = read_labeled(root)
    assert sorted(df["split"]) == ["test", "test", "train", "train", "val"]
    test_only = read_labeled(root, splits=("test",))
    assert set(test_only["split"]) == {"test"} and len(test_only) == 2
    assert set(test_only["label_name"]) == {"NORMAL", "PNEUMONIA"}


def test_not_labeled(tmp_path):
    _tree(tmp_path / "plain", ["a.png", "b/c.png"])
    assert not is_labeled(tmp_path / "plain")
    with pytest.raises(ValueError):
        read_labeled(tmp_path / "plain")
    with pytest.raises(UsageError):  # the CLI turns this into exit code 2, not 70
        read_labeled(tmp_path / "plain")


def test_unknown_names_fall_back_to_image_level(tmp_path, caplog):
    root = _tree(tmp_path / "odd", ["NORMAL/scan1.png", "NORMAL/IM-0005-0001.png",
                                    "PNEUMONIA/scan1.png", "PNEUMONIA/scan2.png"])
    with caplog.at_level(logging.WARNING, logger="xray_score"):
        df = read_labeled(root)
    assert any("no patient id" in r.getMessage() for r in caplog.records)
    ids = dict(zip(df["path"].map(lambda p: p.split("/")[-2] + "/" + p.split("/")[-1]),
                   df["patient_id"], strict=True))
    assert ids["NORMAL/IM-0005-0001.png"] == "im-0005"
    assert ids["NORMAL/scan1.png"].startswith("img:")
    assert ids["PNEUMONIA/scan2.png"] != ids["PNEUMONIA/scan1.png"]
    assert df["patient_id"].notna().all()


def synthetic_table(n_patients: int = 60) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        label = p % 2
        pid = f"person{p}" if label else f"im-{p:04d}"
        for k in range(1 + p % 4):
            rows.append((f"/x/{pid}_{k}.jpeg", label, ["NORMAL", "PNEUMONIA"][label], pid, ""))
    return pd.DataFrame(rows, columns=["path", "label", "label_name", "patient_id", "split"])


@pytest.mark.parametrize("fraction,seed", [(0.15, 0), (0.3, 1), (0.5, 7)])
def test_patient_split_no_leak_stratified_deterministic(fraction, seed):
    df = synthetic_table()
    train, val = patient_split(df, fraction, seed)
    assert len(train) + len(val) == len(df)
    assert not set(train["patient_id"]) & set(val["patient_id"])
    assert set(train["label"]) == set(val["label"]) == {0, 1}
    n_val_patients = val["patient_id"].nunique()
    assert abs(n_val_patients - fraction * 60) <= 2
    train2, val2 = patient_split(df.sample(frac=1, random_state=3), fraction, seed)
    assert sorted(val2["path"]) == sorted(val["path"])  # row order does not matter
    assert sorted(train2["path"]) == sorted(train["path"])


def test_patient_split_seed_changes_split_and_new_files_keep_sides():
    df = synthetic_table()
    _, val_a = patient_split(df, 0.3, 0)
    _, val_b = patient_split(df, 0.3, 1)
    assert set(val_a["patient_id"]) != set(val_b["patient_id"])
    more = pd.concat([df, pd.DataFrame([("/x/new.jpeg", 1, "PNEUMONIA", "person999", "")],
                                       columns=df.columns)], ignore_index=True)
    _, val_more = patient_split(more, 0.3, 0)
    moved = set(val_a["patient_id"]) - set(val_more["patient_id"])
    assert len(moved) <= 1  # at most the boundary patient changes side


def test_patient_split_rejects_bad_fraction():
    with pytest.raises(ValueError):
        patient_split(synthetic_table(), 0.0)
    with pytest.raises(UsageError):
        patient_split(synthetic_table(), 1.0)


def test_exclude_patients():
    df = synthetic_table()
    other = df[df["patient_id"].isin(["person1", "im-0002"])].iloc[:1]
    other = pd.concat([other, df[df["patient_id"] == "im-0002"].iloc[:1]])
    kept = exclude_patients(df, other)
    assert not {"person1", "im-0002"} & set(kept["patient_id"])
    assert len(kept) == len(df) - (df["patient_id"].isin(["person1", "im-0002"])).sum()
    assert list(kept.index) == list(range(len(kept)))


def test_folder_labels_agree_with_label_of_path(tmp_path, monkeypatch):
    root = _tree(tmp_path / "labeled", ["NORMAL/IM-0001-0001.png", "PNEUMONIA/x/p1.png",
                                        "normal/IM-0002-0001.png", "other/IM-0003-0001.png"])
    from xray_score.io.discover import discover_files

    monkeypatch.chdir(tmp_path)
    for top in [root, "labeled", "./labeled/", "."]:
        paths = discover_files(top)
        labels = folder_labels(top, paths)
        if top == ".":
            assert labels is None  # the labeled folder is one level down
            continue
        assert labels == {p: label_of_path(p, top) or "" for p in paths}
        assert sorted(labels.values()) == ["", "NORMAL", "NORMAL", "PNEUMONIA"]


def test_label_of_path_through_symlinked_folder(tmp_path):
    outside = _tree(tmp_path / "elsewhere", ["IM-0009-0001.png"])
    root = _tree(tmp_path / "labeled", ["NORMAL/IM-0001-0001.png", "PNEUMONIA/person1_virus_1.png"])
    (root / "PNEUMONIA" / "linked").symlink_to(outside, target_is_directory=True)
    from xray_score.io.discover import discover

    labels = {p.name: label_of_path(p, root) for p in discover(root)}
    assert labels == {"IM-0001-0001.png": "NORMAL", "person1_virus_1.png": "PNEUMONIA",
                      "IM-0009-0001.png": "PNEUMONIA"}
    assert label_of_path(tmp_path / "elsewhere" / "IM-0009-0001.png", root) is None
