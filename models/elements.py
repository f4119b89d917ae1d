"""The models' element tables: atomic number -> index of the element in the model's own list."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from equitensor.devices import has_values


def element_table(atomic_numbers: Sequence[int]) -> torch.Tensor:
    """(max Z + 1,) long tensor holding each Z's position in ``atomic_numbers``, -1 for other Z."""
    table = torch.full((max(atomic_numbers) + 1,), -1, dtype=torch.long)
    table[torch.tensor(atomic_numbers)] = torch.arange(len(atomic_numbers))
    return table


def lookup_elements(table: torch.Tensor, numbers: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Each atom's element index from ``table`` (-1 where it has none; any Z, even outside the
    table or negative, is safe), and the sorted atomic numbers the table has no element for
    (none reported for a tensor without values, on ``meta``)."""
    inside = (numbers >= 0) & (numbers < len(table))
    index = torch.where(inside, table[numbers.clamp(0, len(table) - 1)], -1)
    if not has_values(numbers):
        return index, []
    missing = index < 0
    unknown = sorted(set(numbers[missing].tolist())) if bool(missing.any()) else []
    return index, unknown
