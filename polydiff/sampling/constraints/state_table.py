"""A batched automaton's states, interned: each distinct state gets an id, and what depends on the
state alone (its answers over the vocabulary, and the state after each token) is computed once and
then read from tables.

The SMILES automaton (``syntax.py``) computes its rows' next states and allowed tokens with ~60
array operations over their fields (parentheses, ring labels, valence), whatever the number of
rows, so at a sampler's batch sizes it costs the operations' overhead, not their arithmetic. Its
rows meet few distinct states, however: 1,500 over the 69,401 token-boundary prefixes of 2,000
sampled MOSES molecules. With the states interned, a step is one lookup per row; a state or a
transition not met before is computed field-wise (in numpy, on the CPU), for the rows that meet
it, and kept. The answers and transitions live where the rows' state ids do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

Fields = dict[str, np.ndarray]  # a state's fields, each (m, ...) for m states


class StateTable:
    """The states met so far, their answers and their transitions.

    Args:
        start: the fields of the start state (one row).
        advance: (fields of m states, their tokens (m,)) -> the fields of the states after them, numpy.
        answers: fields of m states -> the answers kept per state, each (m, V), numpy.
        vocabulary_size: V.
        device: where the tables live.
    """

    def __init__(
        self,
        start: Fields,
        advance: Callable[[Fields, np.ndarray], Fields],
        answers: Callable[[Fields], tuple[np.ndarray, ...]],
        vocabulary_size: int,
        device: torch.device | str,
    ) -> None:
        self._advance, self._answers = advance, answers
        self.vocabulary_size, self.device = vocabulary_size, torch.device(device)
        self.size = 0
        self.index: dict[bytes, int] = {}  # a state's fields, as bytes -> its id
        self.store: Fields = {}  # each field of every state, (capacity, ...)
        self.answers: tuple[Tensor, ...] = ()  # each (capacity, V)
        self.following = torch.empty(0, vocabulary_size, dtype=torch.long, device=self.device)  # -1: not met yet
        self.start_id = int(self.intern(start)[0])

    def fields(self, ids: Tensor) -> Fields:
        """The fields of the states ``ids`` (r,)."""
        ids = ids.cpu().numpy()
        return {name: value[ids] for name, value in self.store.items()}

    def answer(self, ids: Tensor, columns: Tensor | None = None) -> tuple[Tensor, ...]:
        """The answers kept for the states ``ids`` (r,), each (r, V), or (r, len(columns)) for the
        tokens ``columns`` alone.

        ``index_select``, not advanced indexing: on the CPU, a gather of (r, V) as large as a
        sampler's batch makes ``x[ids]`` hand its work to torch's other threads, and waking them
        (sleeping, as ``polydiff`` runs them) costs ~60 us, ten times the gather.
        """
        answers = (answer.index_select(0, ids) for answer in self.answers)
        return tuple(answers if columns is None else (answer.index_select(1, columns) for answer in answers))

    def step(self, ids: Tensor, tokens: Tensor) -> Tensor:
        """(r,) the ids of the states after each state of ``ids`` takes its token."""
        following = self.following[ids, tokens]
        unknown = (following < 0).nonzero().squeeze(-1)
        if len(unknown):
            before, taken = ids[unknown], tokens[unknown]
            after = self.intern(self._advance(self.fields(before), taken.cpu().numpy()))
            self.following[before, taken] = after
            following[unknown] = after
        return following

    def intern(self, fields: Fields) -> Tensor:
        """(m,) the ids of m states, given by their fields; states not met before are added, with
        their answers."""
        rows = len(next(iter(fields.values())))
        keys = np.concatenate([value.reshape(rows, -1).astype(np.int16) for value in fields.values()], 1)
        ids, new = [], []
        for row in range(rows):
            key = keys[row].tobytes()
            found = self.index.get(key)
            if found is None:
                found = self.index[key] = self.size + len(new)
                new.append(row)
            ids.append(found)
        if new:
            self._add({name: value[new] for name, value in fields.items()})
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def _add(self, fields: Fields) -> None:
        """Appends new states (their ids follow the last one's) and computes their answers."""
        added = len(next(iter(fields.values())))
        answers = tuple(torch.from_numpy(answer).to(self.device) for answer in self._answers(fields))
        end = self.size + added
        if end > len(self.following):
            self._grow(max(2 * len(self.following), end, 256), fields, answers)
        for name, value in fields.items():
            self.store[name][self.size : end] = value
        for kept, answer in zip(self.answers, answers, strict=True):
            kept[self.size : end] = answer
        self.size = end

    def _grow(self, capacity: int, fields: Fields, answers: tuple[Tensor, ...]) -> None:
        """Room for ``capacity`` states; ``fields`` and ``answers`` give the shapes and types."""

        def grown(old: Tensor | None, like: Tensor, fill: int = 0) -> Tensor:
            new = torch.full((capacity, *like.shape[1:]), fill, dtype=like.dtype, device=self.device)
            if old is not None:
                new[: self.size] = old[: self.size]
            return new

        def grown_field(old: np.ndarray | None, like: np.ndarray) -> np.ndarray:
            new = np.zeros((capacity, *like.shape[1:]), dtype=like.dtype)
            if old is not None:
                new[: self.size] = old[: self.size]
            return new

        self.store = {name: grown_field(self.store.get(name), value) for name, value in fields.items()}
        self.answers = tuple(
            grown(self.answers[k] if self.answers else None, answer) for k, answer in enumerate(answers)
        )
        self.following = grown(self.following, self.following, fill=-1)
