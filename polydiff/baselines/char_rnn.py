"""CharRNN: the character-level LSTM language model of the MOSES benchmark's baselines.

Segler et al. (ACS Cent. Sci. 2018) and the MOSES benchmark (Polykovskiy et al., Front.
Pharmacol. 2020) train an LSTM to predict the next SMILES character; it is MOSES's strongest
baseline on FCD. This is polydiff's own implementation of that model, used by
``benchmarks/quality.py`` to train a baseline for the same wall-clock budget, on the same data
and machine, as a diffusion recipe. As in MOSES: one-hot sized character embeddings, dropout
0.2 between LSTM layers, Adam at 1e-3, batches of 64, sampling at temperature 1.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


class CharVocabulary:
    """Maps SMILES characters to ids; id 0 pads, 1 begins and 2 ends a sequence."""

    def __init__(self, characters: set[str] | Sequence[str]) -> None:
        self.itos = [PAD, BOS, EOS, *sorted(set(characters))]
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    @classmethod
    def from_smiles(cls, smiles: Sequence[str]) -> CharVocabulary:
        return cls(set().union(*map(set, smiles)))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, smiles: str) -> list[int]:
        """[BOS] + characters + [EOS]; raises KeyError on a character outside the vocabulary."""
        return [1, *(self.stoi[c] for c in smiles), 2]

    def decode(self, ids: Sequence[int]) -> str:
        """Characters up to the first [EOS] (special ids skipped)."""
        characters = []
        for i in ids:
            if i == 2:
                break
            if i > 2:
                characters.append(self.itos[i])
        return "".join(characters)


class CharRNN(nn.Module):
    """An LSTM over characters: p(c_{k+1} | c_1..c_k)."""

    def __init__(self, vocab_size: int, hidden_size: int = 256, num_layers: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, vocab_size, padding_idx=0)
        self.lstm = nn.LSTM(vocab_size, hidden_size, num_layers, dropout=dropout, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        hidden, state = self.lstm(self.embedding(x), state)
        return self.head(hidden), state


@dataclass
class TrainingStats:
    steps: int
    tokens_seen: int
    seconds: float
    final_loss: float


def pad_batch(sequences: list[list[int]]) -> Tensor:
    return nn.utils.rnn.pad_sequence([torch.tensor(s) for s in sequences], batch_first=True, padding_value=0)


def train_char_rnn(
    model: CharRNN,
    vocabulary: CharVocabulary,
    smiles: Sequence[str],
    budget_seconds: float,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    max_steps: int | None = None,
) -> TrainingStats:
    """Trains on shuffled SMILES (teacher forcing) until the budget or ``max_steps`` runs out.

    Lines with characters outside ``vocabulary`` are skipped.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    start, steps, tokens, loss_value = time.perf_counter(), 0, 0, float("nan")
    while True:
        for indices in torch.randperm(len(smiles), generator=generator).split(batch_size):
            if time.perf_counter() - start >= budget_seconds or (max_steps is not None and steps >= max_steps):
                return TrainingStats(steps, tokens, time.perf_counter() - start, loss_value)
            lines = [smiles[i] for i in indices.tolist()]
            batch = pad_batch([vocabulary.encode(s) for s in lines if set(s) <= vocabulary.stoi.keys()])
            logits, _ = model(batch[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), ignore_index=0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps, tokens, loss_value = steps + 1, tokens + int((batch[:, 1:] != 0).sum()), loss.item()


@torch.no_grad()
def sample_char_rnn(
    model: CharRNN,
    vocabulary: CharVocabulary,
    num_samples: int,
    max_length: int = 100,
    temperature: float = 1.0,
    batch_size: int = 500,
    seed: int = 0,
) -> list[str]:
    """Draws SMILES character by character until [EOS] or ``max_length`` characters."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    samples: list[str] = []
    while len(samples) < num_samples:
        n = min(batch_size, num_samples - len(samples))
        x = torch.full((n, 1), 1, dtype=torch.long)
        out, state = [], None
        for _ in range(max_length):
            logits, state = model(x, state)
            probs = torch.softmax(logits[:, -1].double() / temperature, dim=-1)
            probs[:, :2] = 0  # never [PAD] or [BOS]
            x = torch.multinomial(probs, 1, generator=generator)
            out.append(x)
        samples += [vocabulary.decode(row) for row in torch.cat(out, dim=1).tolist()]
    return samples
