"""The reverse process: from [MASK] tokens at t = 1 to a clean sequence at t = 0.

Ancestral sampling steps from t to s < t on a uniform grid. A masked position

    becomes v with probability (alpha(s) - alpha(t)) / (1 - alpha(t)) * p_theta(v | x_t),
    stays m  with probability (1 - alpha(s)) / (1 - alpha(t));

unmasked positions stay. At s = 0 the second line is 0, so the last step reveals everything.
We draw this in two exact stages (leave the mask or not, then which token) so that the
float64 Gumbel noise is drawn only where a token is revealed, never over the whole vocabulary
of every masked position.

Confidence-based decoding (MaskGIT, GenMol) reveals the number of positions the schedule
prescribes, choosing those whose sampled token has the highest log p plus annealed Gumbel noise.

Cache: without time conditioning p_theta(. | x_t) changes only when x_t does, and a step needs
p_theta only in the sequences that reveal a token. So the encoder runs only on those rows, and
only if their tokens changed since their last call; every other row reuses its hidden states.
Each call follows a change, so the calls per sequence (NFE) are at most its length plus one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from polydiff.diffusion.schedules import DiffusionSchedule
from polydiff.sampling.config import SamplingConfig

Encoder = Callable[[Tensor, Tensor, Tensor | None], Tensor]  # (x_t, attention_mask, t) -> hidden states
Head = Callable[[Tensor], Tensor]  # hidden states (K, H) -> logits (K, V), forbidden tokens already masked


def reverse_step_probs(p_theta: Tensor, alpha_t: float, alpha_s: float, mask_token_id: int) -> Tensor:
    """The reverse-step distribution of a masked position, q(x_s | x_t, x_0 ~ p_theta).

    Args:
        p_theta: the model's distribution over the vocabulary, (..., V); zero at [MASK].
        alpha_t: alpha at the current time t.
        alpha_s: alpha at the next time s < t (1 when s = 0).
        mask_token_id: the id m of [MASK].

    Returns:
        P(x_s = v) for every token v, (..., V); the [MASK] entry is the chance to stay masked.
    """
    probs = (alpha_s - alpha_t) / (1 - alpha_t) * p_theta
    probs[..., mask_token_id] = (1 - alpha_s) / (1 - alpha_t)
    return probs


# Tokens ranked first for the nucleus. A sampler asks for a nucleus at every position of every row,
# over a vocabulary of ~1,500 tokens of which a handful hold top_p; ranking only the first few is
# several times cheaper than sorting them all, and rows whose nucleus reaches past them are sorted
# in full, so the nucleus is the same.
NUCLEUS_CANDIDATES = 32


def _past_nucleus(ranked: Tensor, top_p: float) -> Tensor:
    """For log-probabilities ranked from the most likely down: whether the ones ranked above each
    already hold ``top_p`` (the top one never does)."""
    p = ranked.exp()
    return p.cumsum(-1) - p >= top_p


def outside_nucleus(log_p: Tensor, top_p: float) -> Tensor:
    """(K, V) bool: the tokens outside the smallest set of most likely ones whose probability
    reaches ``top_p`` (a token stays while those ranked above it hold less; the top one always
    stays), from normalised log-probabilities ``log_p`` (K, V)."""
    ranked, order = log_p.topk(min(NUCLEUS_CANDIDATES, log_p.shape[-1]), dim=-1)
    drop_ranked = _past_nucleus(ranked, top_p)
    drop = torch.ones_like(log_p, dtype=torch.bool).scatter_(-1, order, drop_ranked)
    longer = (~drop_ranked[:, -1]).nonzero().squeeze(-1)  # the nucleus may reach past the candidates
    if len(longer):
        ranked, order = log_p[longer].sort(dim=-1, descending=True)
        drop[longer] = torch.zeros_like(drop[longer]).scatter_(-1, order, _past_nucleus(ranked, top_p))
    return drop


def log_probs(logits: Tensor, temperature: float = 1.0, top_p: float = 1.0) -> Tensor:
    """Log-probabilities in float64 after temperature and nucleus (top-p) filtering.

    Args:
        logits: (K, V).
        temperature: divides the logits (> 0).
        top_p: keep the smallest set of most likely tokens whose probability reaches it.

    Returns:
        (K, V) float64 log-probabilities; filtered tokens are -inf.
    """
    log_p = torch.log_softmax(logits.double() / temperature, dim=-1)
    if top_p < 1:
        log_p = torch.log_softmax(log_p.masked_fill(outside_nucleus(log_p, top_p), -math.inf), dim=-1)
    return log_p


def gumbel(shape: torch.Size | tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """Standard Gumbel noise -log(-log(u)), u ~ U[0, 1), in float64 (float32 would cut its tail).

    u = 0 gives -inf, which is never the argmax; u < 1 keeps it below +inf, so no NaN can arise.
    """
    u = torch.rand(shape, dtype=torch.float64, device=device, generator=generator)
    return u.log_().neg_().log_().neg_()  # in place: this runs over the vocabulary of every drawn token


def draw_tokens(logits: Tensor, config: SamplingConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draws one token per row by Gumbel-max over the tempered, filtered distribution.

    Returns:
        (tokens, their log-probability), both of shape (K,).
    """
    if config.temperature == 0:
        log_p = log_probs(logits)
        tokens = log_p.argmax(-1)
    else:
        log_p = log_probs(logits, config.temperature, config.top_p)
        tokens = (log_p + gumbel(log_p.shape, generator, log_p.device)).argmax(-1)
    return tokens, log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def draw_from_probs(probs: Tensor, generator: torch.Generator) -> Tensor:
    """One token per row of ``probs`` (K, V), which need not be normalised, by inverse transform
    sampling: one uniform per row against the cumulative sums. Exact, like Gumbel-max, and for a
    distribution at hand it takes a cumulative sum and a search instead of a logarithm, a
    log-softmax and two logarithms of noise over the whole vocabulary. A token of probability 0 is
    never drawn.

    Returns:
        (K,) token ids.
    """
    cumulative = probs.cumsum(-1)
    u = torch.rand(len(probs), 1, dtype=probs.dtype, device=probs.device, generator=generator)
    token = torch.searchsorted(cumulative, u * cumulative[:, -1:], right=True).squeeze(-1)
    return token.clamp(max=probs.shape[-1] - 1)  # u * total rounding up to the total itself


class _Batch:
    """One batch in the reverse process: its tokens, and the hidden states of each row's last model call."""

    def __init__(self, x: Tensor, attention_mask: Tensor, generator: torch.Generator) -> None:
        self.x = x
        self.attention_mask = attention_mask
        self.generator = generator
        self.hidden: Tensor | None = None  # (B, N, H), filled row by row
        self.fresh = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)  # hidden belongs to the current x
        self.nfe = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)


class ReverseProcess:
    """Runs the reverse process on a batch of sequences.

    Args:
        encode: the denoiser without its head, ``(x_t, attention_mask, t) -> hidden states``.
        head: hidden states at masked positions -> logits, with [MASK] and the structural
            tokens already forbidden (the sampler never reveals them).
        schedule: alpha(t).
        mask_token_id: the id m of [MASK].
        config: steps, strategy, temperature, top_p, randomness, cache.
        time_conditioned: whether ``encode`` uses t; its p_theta then cannot be reused.
    """

    def __init__(
        self,
        encode: Encoder,
        head: Head,
        schedule: DiffusionSchedule,
        mask_token_id: int,
        config: SamplingConfig,
        time_conditioned: bool = False,
    ) -> None:
        self.encode = encode
        self.head = head
        self.schedule = schedule
        self.mask_token_id = mask_token_id
        self.config = config
        self.time_conditioned = time_conditioned

    @torch.inference_mode()
    def sample(
        self,
        x: Tensor,
        attention_mask: Tensor,
        generator: torch.Generator,
        on_step: Callable[[], None] | None = None,
        active: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Denoises x from t = 1 to t = 0.

        Args:
            x: (B, N) token ids: [MASK] where tokens are to be generated, fixed tokens elsewhere.
            attention_mask: (B, N), 0 at pads; or (B, N, N) bool, which keys each query sees.
            generator: the source of all randomness, on x's device.
            on_step: called after every step (progress bars).
            active: (B, N) bool, the [MASK] positions this pass generates (one block of a block
                diffusion model); None generates every [MASK].

        Returns:
            (the clean tokens (B, N), the model calls per sequence (B,)).
        """
        batch = _Batch(x.clone(), attention_mask, generator)
        steps = self.config.steps
        grid = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
        alpha = self.schedule.alpha(grid).tolist()
        alpha[-1] = 1.0  # s = 0 reveals everything, whatever rounding alpha(0) has
        initial_mask = batch.x == self.mask_token_id
        if active is not None:
            initial_mask &= active
        initial_masked = initial_mask.sum(-1)
        for i in range(steps):
            masked = initial_mask & (batch.x == self.mask_token_id)
            if not masked.any():  # every sequence is clean: the remaining steps would change nothing
                for _ in range(steps - i if on_step is not None else 0):
                    on_step()
                break
            t, alpha_t, alpha_s = grid[i].item(), alpha[i], alpha[i + 1]
            if self.config.strategy == "ancestral":
                # alpha_t = 1 (a schedule flat near 0, in float64) means x_t should be clean already.
                reveal_prob = 1.0 if alpha_t >= 1 else (alpha_s - alpha_t) / (1 - alpha_t)
                changed = self._ancestral_step(batch, masked, t, reveal_prob)
            else:
                # Cumulative count, so rounding never piles up: round(M (1 - alpha(s))) stay masked after the step.
                keep = torch.round(initial_masked * (1 - alpha_s)).long()
                changed = self._confidence_step(batch, masked, t, count=(masked.sum(-1) - keep).clamp_min(0))
            batch.fresh &= ~changed
            if on_step is not None:
                on_step()
        return batch.x, batch.nfe

    def _ancestral_step(self, batch: _Batch, masked: Tensor, t: float, reveal_prob: float) -> Tensor:
        """Reveals each masked position with probability ``reveal_prob``; returns the rows that changed."""
        x = batch.x
        u = torch.rand(x.shape, dtype=torch.float64, device=x.device, generator=batch.generator)
        reveal = masked & (u < reveal_prob)
        rows = reveal.any(-1)
        if rows.any():
            hidden = self._hidden_states(batch, masked, rows, t)
            tokens, _ = draw_tokens(self.head(hidden[reveal]), self.config, batch.generator)
            x[reveal] = tokens
        elif not self.config.cache:
            self._hidden_states(batch, masked, rows, t)  # the baseline calls the model at every step
        return rows

    def _confidence_step(self, batch: _Batch, masked: Tensor, t: float, count: Tensor) -> Tensor:
        """Reveals ``count`` positions per row, the most confident first; returns the rows that changed."""
        x = batch.x
        rows = count > 0
        hidden = self._hidden_states(batch, masked, rows, t)
        if not rows.any():
            return rows
        candidates = masked & rows.unsqueeze(-1)
        tokens, log_p = draw_tokens(self.head(hidden[candidates]), self.config, batch.generator)
        # Annealed noise: much exploration at t = 1, plain confidence as t reaches 0.
        score = torch.full(x.shape, -math.inf, dtype=torch.float64, device=x.device)
        score[candidates] = log_p + self.config.randomness * t * gumbel(log_p.shape, batch.generator, x.device)
        rank = score.argsort(-1, descending=True).argsort(-1)
        reveal = rank < count.unsqueeze(-1)  # count <= masked positions, so only candidates
        proposal = x.clone()
        proposal[candidates] = tokens
        x[reveal] = proposal[reveal]
        return rows

    def _hidden_states(self, batch: _Batch, masked: Tensor, rows: Tensor, t: float) -> Tensor | None:
        """Hidden states valid for ``rows`` at the current x; runs the encoder on as few rows as it may."""
        if not self.config.cache:
            run = masked.any(-1)  # the baseline: every unfinished sequence at every step
        elif self.time_conditioned:
            run = rows  # p_theta depends on t: nothing to reuse, but only rows that reveal need it
        else:
            run = rows & ~batch.fresh
        if run.any():
            index = run.nonzero().squeeze(-1)
            time = torch.full((len(index),), t, device=batch.x.device) if self.time_conditioned else None
            hidden = self.encode(batch.x[index], batch.attention_mask[index], time)
            if batch.hidden is None:
                batch.hidden = hidden.new_empty((*batch.x.shape, hidden.shape[-1]))
            batch.hidden[index] = hidden
            batch.fresh[index] = True
            batch.nfe[index] += 1
        return batch.hidden
