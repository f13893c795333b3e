"""A seeded split that depends only on the records and the seed, never on file order or run."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from kubetune.trainer.data.records import Conversation


@dataclass(frozen=True)
class Splits:
    train: list[Conversation]
    validation: list[Conversation]
    test: list[Conversation]


def _count(total: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    # A requested split gets at least one record once there are enough to spare one.
    return max(1, round(total * fraction)) if total >= 3 else 0


def split_records(records: Sequence[Conversation], *, validation: float, test: float, seed: int) -> Splits:
    """Rank records by sha256(seed, content) and cut exact counts; each split keeps file order."""

    def rank(record: Conversation) -> str:
        return hashlib.sha256(f"{seed}\0{record.identity()}".encode()).hexdigest()

    ordered = sorted(records, key=rank)
    n_test = _count(len(records), test)
    n_validation = _count(len(records), validation)
    if n_test + n_validation >= len(records):
        n_test = n_validation = 0

    def lines(items: Sequence[Conversation]) -> list[Conversation]:
        # File order inside each split keeps reports readable.
        return sorted(items, key=lambda r: r.line)

    return Splits(
        train=lines(ordered[n_test + n_validation :]),
        validation=lines(ordered[n_test : n_test + n_validation]),
        test=lines(ordered[:n_test]),
    )
