"""Grouped, stratified train/val/test splits and leave-one-value-out folds.

The reference benchmark split the augmented copies `<id>_aug1..3` of one artwork at random
into train and validation, so the same artwork was trained on and scored. Here the unit of
assignment is the *group*, the source image a record derives from (`group_id`), and every
split and fold file is checked for leakage before it is written.

Stratification is by dealing, not by sampling: groups are ordered by (content, material,
seeded key) and dealt one by one to the split furthest behind its share. Every run of
consecutive groups (one content, or one material within a content) then gets each split's
share up to about one group, and the totals are exact. The result depends only on the ids,
their metadata and the seed, never on row order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from heritageseg.core.config import SplitConfig
from heritageseg.core.errors import DataError
from heritageseg.core.fileio import atomic_write_text
from heritageseg.core.paths import FOLD_BY, SPLIT_TABLE, fold_table
from heritageseg.core.readers import read_csv_table, require
from heritageseg.core.rebuild import rebuild_hint

SPLITS = ("train", "val", "test")
META_COLUMNS = ("id", "material", "content")
_MAX_LISTED = 10

# Suffixes that mark a derived copy of a source image; stripped repeatedly from the right,
# so `<id>_crop2_aug1` and `<id>_aug1#tile_0_384` both give `<id>`:
#   `#...`                         anything after a `#`: `<id>#tile_0_384`, `<id>#r2`
#   `_aug3`                        augmented copies (the reference's `<id>_aug1..3`)
#   `_crop12`                      crops
#   `_tile_0_384`, `_tile7`        tiles, by index or by offsets
#   `_patch_3_4`                   patches
# `-` may stand for `_`, case is ignored, and at least one number must follow the word, so
# ids that merely contain it (`my_augusta`, `crop_top`) are left alone. Real ARTeFACT ids are
# 25-character cuids and carry no suffix.
_DERIVED_SUFFIX = re.compile(r"(?:#.*|[_-](?:aug|crop|tile|patch)(?:[_-]?\d+)+)$", re.IGNORECASE)


def group_id(record_id: str) -> str:
    """The source image a record derives from: `record_id` without derived-copy suffixes
    (see `_DERIVED_SUFFIX`), so every crop, tile or augmented copy of one artwork lands in
    the same split. An id that would become empty is kept whole."""
    group = str(record_id)
    while (match := _DERIVED_SUFFIX.search(group)) and match.start() > 0:
        group = group[: match.start()]
    return group


def make_splits(meta: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """Columns id, split, material, content, one row per record in the order of `meta`.

    Grouped by `group_id`, stratified by content and within it by material, deterministic
    for `cfg.seed` and independent of row order; every split with a positive ratio gets a
    group when there are enough groups, a split with ratio 0 gets none."""
    frame = _with_groups(_validated(meta))
    _require_one_value_per_group(frame, "content")
    order = _dealing_order(frame, cfg.seed)
    split_of = dict(zip(order, _deal(_targets(len(order), _ratios(cfg))), strict=True))
    return pd.DataFrame(
        {
            "id": frame["id"],
            "split": frame["group"].map(split_of),
            "material": frame["material"],
            "content": frame["content"],
        }
    )


def leave_one_out_folds(meta: pd.DataFrame, by: str) -> pd.DataFrame:
    """Columns id, fold: a record is in the test fold of its own value of `by` ("content" or
    "material"), as in the dataset card's leave-one-out protocol. A group spanning several
    values would put one artwork on both sides of a fold, so it is an error."""
    if by not in FOLD_BY:
        raise DataError(f"leave-one-out folds by {by!r}: choose one of {', '.join(FOLD_BY)}")
    frame = _with_groups(_validated(meta))
    _require_one_value_per_group(frame, by)
    return pd.DataFrame({"id": frame["id"], "fold": frame[by]})


def check_no_leakage(assignment: pd.DataFrame, column: str = "split") -> None:
    """Raise DataError naming duplicate ids and groups whose records fall in more than one
    value of `column`: the guard against the reference's train/validation leak."""
    missing = [c for c in ("id", column) if c not in assignment.columns]
    if missing:
        raise DataError(f"leakage check: missing column(s) {', '.join(missing)}")
    ids = pd.Series(assignment["id"].astype(str).to_numpy())
    problems = []
    duplicates = ids[ids.duplicated()].unique()
    if len(duplicates):
        problems.append(f"{len(duplicates)} duplicate id(s): {_listed(duplicates)}")
    values = pd.DataFrame(
        {"group": ids.map(group_id), "value": assignment[column].astype(str).to_numpy()}
    )
    spread = values.groupby("group")["value"].unique()
    leaking = spread[spread.map(len) > 1]
    if len(leaking):
        shown = "; ".join(
            f"{group!r} in {', '.join(sorted(found))}"
            for group, found in leaking.head(_MAX_LISTED).items()
        )
        more = f"; … {len(leaking) - _MAX_LISTED} more" if len(leaking) > _MAX_LISTED else ""
        problems.append(f"{len(leaking)} group(s) in more than one {column}: {shown}{more}")
    if problems:
        raise DataError(f"{column} assignment leaks between {column}s: " + "; ".join(problems))


@dataclass(frozen=True)
class SplitResult:
    counts: dict[str, int]  # records per split
    groups: dict[str, int]  # groups per split


def write_splits(meta: pd.DataFrame, cfg: SplitConfig, out: Path) -> SplitResult:
    """Write out/split.csv (id,split,material,content), out/lo_content.csv and
    out/lo_material.csv (id,fold), each atomically. Everything is built and checked for
    leakage before the first file is written, so a failure leaves old outputs untouched."""
    split = make_splits(meta, cfg)
    folds = {fold_table(by): leave_one_out_folds(meta, by) for by in FOLD_BY}
    check_no_leakage(split)
    for fold in folds.values():
        check_no_leakage(fold, "fold")
    out = Path(out)
    atomic_write_text(out / SPLIT_TABLE, _csv(split))
    for name, fold in folds.items():
        atomic_write_text(out / name, _csv(fold))
    return _summary(split)


# ---------------------------------------------------------------- validation


def _validated(meta: pd.DataFrame) -> pd.DataFrame:
    """The id, material and content columns as strings, or a DataError naming the problem."""
    if len(meta) == 0:
        raise DataError("split metadata: no records to split (empty source?)")
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing:
        raise DataError(
            f"split metadata: missing column(s) {', '.join(missing)}; "
            f"need {', '.join(META_COLUMNS)}"
        )
    frame = meta.loc[:, list(META_COLUMNS)].reset_index(drop=True)
    _require_filled(frame)
    frame = frame.astype(str)
    duplicates = frame["id"][frame["id"].duplicated()].unique()
    if len(duplicates):
        raise DataError(
            f"split metadata: duplicate id(s) {_listed(duplicates)}; every record needs its own"
        )
    return frame


def _require_filled(frame: pd.DataFrame) -> None:
    for column in META_COLUMNS:
        values = frame[column]
        blank = (values.isna() | values.astype(str).str.strip().eq("")).to_numpy()
        if not blank.any():
            continue
        if column == "id":
            rows = [int(i) for i in blank.nonzero()[0]]
            raise DataError(f"split metadata: empty id in row(s) {_listed(rows)}")
        raise DataError(
            f"split metadata: empty {column} for id(s) {_listed(frame['id'][blank])}; "
            "splits group and stratify by it"
        )


def _with_groups(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(group=frame["id"].map(group_id))


def _require_one_value_per_group(frame: pd.DataFrame, column: str) -> None:
    """Copies of one source image must agree on `column`, or stratifying and leave-one-out
    folds by it would have to tear the group apart."""
    spread = frame.groupby("group")[column].unique()
    mixed = spread[spread.map(len) > 1]
    if len(mixed):
        shown = "; ".join(
            f"{group!r}: {_listed(sorted(values))}"
            for group, values in mixed.head(_MAX_LISTED).items()
        )
        raise DataError(
            f"{len(mixed)} group(s) of derived copies span several {column} values ({shown}); "
            f"every copy of one source image must share its {column}"
        )


# ---------------------------------------------------------------- dealing


def _ratios(cfg: SplitConfig) -> tuple[float, ...]:
    ratios = (cfg.train, cfg.val, cfg.test)
    return tuple(r / sum(ratios) for r in ratios)


def _dealing_order(frame: pd.DataFrame, seed: int) -> list[str]:
    """Groups ordered by (content, material, seeded key); a group's metadata is that of its
    smallest id, so the order does not depend on the row order of the metadata."""
    first = frame.sort_values("id", kind="stable").drop_duplicates("group")
    keyed = first.assign(key=first["group"].map(lambda group: _seeded_key(seed, group)))
    columns = ["content", "material", "key", "group"]
    return keyed.sort_values(columns, kind="stable")["group"].tolist()


def _seeded_key(seed: int, group: str) -> str:
    """A pseudo-random sort key per (seed, group), unaffected by which other groups exist."""
    return hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).hexdigest()


def _targets(n: int, ratios: tuple[float, ...]) -> list[int]:
    """Groups per split: largest remainders of n * ratio, then one group moved from the
    fullest split to every empty split with a positive ratio while there are enough groups."""
    quotas = [round(r * n, 9) for r in ratios]
    targets = [int(q) for q in quotas]
    by_remainder = sorted(range(len(ratios)), key=lambda i: (targets[i] - quotas[i], i))
    for i in by_remainder[: n - sum(targets)]:
        targets[i] += 1
    if n >= sum(r > 0 for r in ratios):
        for i, ratio in enumerate(ratios):
            if ratio > 0 and targets[i] == 0:
                targets[targets.index(max(targets))] -= 1
                targets[i] += 1
    return targets


def _deal(targets: list[int]) -> list[str]:
    """The split of each group in dealing order: each goes to the split furthest behind its
    share so far (largest target * (dealt + 1) - count * n, ties by split order). Integer
    arithmetic keeps ties exact on every platform; the totals come out exactly `targets`."""
    n = sum(targets)
    counts = [0] * len(targets)
    dealt = []
    for step in range(1, n + 1):
        deficits = [t * step - c * n for t, c in zip(targets, counts, strict=True)]
        best = deficits.index(max(deficits))
        counts[best] += 1
        dealt.append(SPLITS[best])
    return dealt


# ---------------------------------------------------------------- reading


def read_split(path: Path) -> pd.DataFrame:
    """split.csv (id, split, material, content), every split a known one."""
    hint = rebuild_hint("split")
    table = read_csv_table(path, ("id", "split", *META_COLUMNS[1:]), hint)
    unknown = sorted(set(table["split"]) - set(SPLITS))
    require(not unknown, path, f"unknown split(s) {_listed(unknown)} (corrupt?)", hint)
    return table


def read_folds(path: Path) -> pd.DataFrame:
    """A leave-one-out fold table (lo_content.csv, lo_material.csv: id, fold)."""
    return read_csv_table(path, ("id", "fold"), rebuild_hint("split"))


# ---------------------------------------------------------------- output


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def _summary(split: pd.DataFrame) -> SplitResult:
    records = split["split"].value_counts()
    groups = split.assign(group=split["id"].map(group_id)).groupby("split")["group"].nunique()
    return SplitResult(
        counts={name: int(records.get(name, 0)) for name in SPLITS},
        groups={name: int(groups.get(name, 0)) for name in SPLITS},
    )


def _listed(values: Iterable[object]) -> str:
    """Up to `_MAX_LISTED` values, quoted, and how many more there are."""
    values = list(values)
    shown = ", ".join(
        repr(v.item() if isinstance(v, np.generic) else v) for v in values[:_MAX_LISTED]
    )
    more = len(values) - _MAX_LISTED
    return f"{shown}, … {more} more" if more > 0 else shown
