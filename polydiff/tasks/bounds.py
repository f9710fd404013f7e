"""The negative ELBO of a ``DiffusionTask`` and the training losses that estimate it, one pass
for each kind of model (docs/math.md): the whole sequence diffused, blocks scored over
[x_t ; x_0], a causal context with noisy windows, and a draft head; with a causal context, the
next-token cross-entropy of the same pass too."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.diffusion.blocks import block_index, draw_windows, sampling_mask, training_mask, window_mask

# Logit given to tokens the model must never predict ([MASK], [PAD], [CLS], [SEP]): far below
# any real logit, yet finite in fp16 and bf16 so no NaN can arise from -inf arithmetic.
FORBIDDEN_LOGIT = -1e4


class DiffusionBounds:
    """The bound and its losses, mixed into ``DiffusionTask``, whose model, forward process
    (``diffusion_process``), tokenizer, structural token ids, head (``logits_from_hidden``) and
    conditions (``training_condition``) they use."""

    def maskable(self, input_ids: Tensor) -> Tensor:
        """Positions the forward process may mask: everything but pads, [CLS], [SEP], [MASK]."""
        return ~torch.isin(input_ids, self.structural_ids)

    def content(self, input_ids: Tensor) -> Tensor:
        """The tokens the model generates and the bound scores: the maskable ones, and [SEP] when
        the model generates its own end (block diffusion)."""
        content = self.maskable(input_ids)
        if self.generates_end:
            content |= input_ids == self.tokenizer.sep_token_id
        return content

    def _apply_masking(self, input_ids: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_t ~ q(x_t | x_0): masks each maskable token with probability 1 - alpha(t)."""
        return self.diffusion_process.q_sample(input_ids, t, self.maskable(input_ids), generator)

    def masked_cross_entropy(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None, condition: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draws t and x_t ~ q(x_t | x_0) per sequence and scores the masked positions (given
        ``condition``, (batch, K), when the model has conditions; None: unconditionally).

        Returns:
            the ELBO weight w(t) of every position (batch, length), the masked positions
            (batch, length), and -log p_theta(x_0 | x_t) at each of them, in row-major order
            (masked count,).
        """
        x0, attention_mask = batch["input_ids"], batch["attention_mask"]
        block_size = self.diffusion_process.config.block_size
        if block_size:
            return self._block_cross_entropy(x0, attention_mask, block_size, generator, condition)
        t = self.diffusion_process.sample_time(x0.shape[0], x0.device, generator)
        x_t = self._apply_masking(x0, t, generator)
        masked = x_t == self.mask_token_id
        hidden = self.model.encode(x_t, attention_mask if not attention_mask.all() else None, t, None, condition)
        # Only masked positions enter the bound (SUBS carries clean ones over): project just those.
        logits = self.logits_from_hidden(hidden[masked])
        weight = self.diffusion_process.position_weights(t, self.maskable(x0))
        return weight, masked, F.cross_entropy(logits, x0[masked], reduction="none")

    def _block_cross_entropy(
        self,
        x0: Tensor,
        attention_mask: Tensor,
        block_size: int,
        generator: torch.Generator | None,
        condition: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``masked_cross_entropy`` of a block-diffusion model: one t per block, every block scored in
        one pass over [x_t ; x_0] (``polydiff.diffusion.blocks``); [SEP] is the last block's last token."""
        if block_size == 1:
            return self._next_token_cross_entropy(x0, attention_mask, condition)
        if self.has_draft_head:
            return self._head_bound(x0, attention_mask, generator, condition)[:3]
        return self._block_pass(x0, attention_mask, block_size, generator, condition)[:3]

    def _head_bound(
        self, x0: Tensor, attention_mask: Tensor, generator: torch.Generator | None, condition: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``masked_cross_entropy`` of a model with a draft head, over the blocks of one cut (from the
        first content token on): each block's first token from the next-token prediction (weight 1,
        always scored), the rest from the head's masked diffusion given it. Slot j of the returned
        (batch, K B) tensors stands for content token j + 1. Also returns the next-token
        cross-entropy of every content token, which the same pass computes."""
        content, block_size = self.content(x0), self.block_size
        first = content.long().argmax(-1, keepdim=True)
        starts = first + block_size * torch.arange(-(-x0.shape[1] // block_size), device=x0.device)
        weight, masked, masked_nll, next_nll, _ = self._head_pass(x0, attention_mask, starts, 1.0, generator, condition)
        slots = (first + torch.arange(masked.shape[1], device=x0.device)).clamp(max=x0.shape[1] - 1)
        leading = content.gather(1, slots) & (torch.arange(masked.shape[1], device=x0.device) % block_size == 0)
        leading &= first + torch.arange(masked.shape[1], device=x0.device) < x0.shape[1]
        # next_nll is every content token's, in row-major order: pick the blocks' first tokens.
        next_at = torch.zeros_like(content, dtype=next_nll.dtype)
        next_at[:, 1:][content[:, 1:]] = next_nll
        nll = torch.zeros(masked.shape, dtype=masked_nll.dtype, device=x0.device)
        nll[masked] = masked_nll
        nll[leading] = next_at.gather(1, slots)[leading]
        scored = masked | leading
        return torch.where(leading, 1.0, weight), scored, nll[scored], next_nll

    def _block_pass(
        self,
        x0: Tensor,
        attention_mask: Tensor,
        block_size: int,
        generator: torch.Generator | None,
        condition: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """The pass over [x_t ; x_0] of a block model: w(t), the masked positions and their
        cross-entropies (``masked_cross_entropy``), and, with a causal context, the next-token
        cross-entropy of every content token from the clean half (None without)."""
        content = self.content(x0)
        blocks = block_index(content, block_size)
        num_blocks = max(int(blocks.max()) + 1, 1)
        t = self.diffusion_process.sample_time(x0.shape[0] * num_blocks, x0.device, generator)
        t = t.view(x0.shape[0], num_blocks).gather(1, blocks.clamp_min(0))
        x_t = self.diffusion_process.q_sample(x0, t, content, generator)
        weight = self.diffusion_process.position_weights(t, content)
        masked = x_t == self.mask_token_id
        causal_context = self.diffusion_process.config.causal_context
        attention = training_mask(content, attention_mask.bool() & ~content, block_size, causal_context)
        positions = torch.arange(x0.shape[1], device=x0.device).repeat(2).expand(x0.shape[0], -1)
        hidden = self.model.encode(torch.cat([x_t, x0], dim=1), attention, None, positions, condition)
        noisy, clean = hidden[:, : x0.shape[1]], hidden[:, x0.shape[1] :]
        masked_nll = F.cross_entropy(self.logits_from_hidden(noisy[masked]), x0[masked], reduction="none")
        next_nll = self._next_token_nll(clean, x0, content) if causal_context else None
        return weight, masked, masked_nll, next_nll

    def _draft_windows(
        self, x0: Tensor, attention_mask: Tensor, condition: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``_head_pass`` at ``noisy_blocks`` windows per sequence, each starting at a content token
        drawn uniformly. Each is a block of the cut whose blocks start at its position modulo B, so
        scaling w(t) by M / (B W) (M content tokens, [SEP] included) gives in expectation the block
        bound averaged over the B cuts (less the partial blocks that those cuts begin the sequence with)."""
        count, block_size = self.diffusion_process.config.noisy_blocks, self.block_size
        content = self.content(x0)
        lengths = content.sum(-1, keepdim=True)
        first = content.long().argmax(-1, keepdim=True)
        u = torch.rand(len(x0), count, device=x0.device)
        starts = first + (u * lengths).long().clamp(max=lengths - 1)
        return self._head_pass(x0, attention_mask, starts, lengths / (block_size * count), None, condition)

    def _window_pass(
        self, x0: Tensor, attention_mask: Tensor, generator: torch.Generator | None, condition: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The training pass of a model with a causal context, over [x_0 ; W noisy windows]
        (``polydiff.diffusion.blocks.draw_windows``): what ``_block_pass`` returns, for the windows.

        Each window has its own t and is one of the M + B - 1 blocks of the B ways to cut the
        sequence (M content tokens, [SEP] included), so its terms are scaled by (M + B - 1) / (B W):
        in expectation, the block bound averaged over those B cuts, at N + W B positions instead of 2N."""
        config, process = self.diffusion_process.config, self.diffusion_process
        count, block_size = config.noisy_blocks, config.block_size
        content = self.content(x0)
        rows, width = x0.shape
        starts, in_window = draw_windows(content, count, block_size, generator)
        slots = (starts.unsqueeze(-1) + torch.arange(block_size, device=x0.device)).flatten(1).clamp(0, width - 1)
        window_x0, valid = x0.gather(1, slots), in_window.flatten(1)
        t = process.sample_time(rows * count, x0.device, generator).view(rows, count).repeat_interleave(block_size, 1)
        x_t = process.q_sample(window_x0, t, valid, generator)
        masked = x_t == self.mask_token_id
        attention = window_mask(content, attention_mask.bool() & ~content, starts, in_window)
        positions = torch.cat([torch.arange(width, device=x0.device).expand(rows, -1), slots], -1)
        hidden = self.model.encode(torch.cat([x0, x_t], 1), attention, None, positions, condition)
        masked_nll = F.cross_entropy(
            self.logits_from_hidden(hidden[:, width:][masked]), window_x0[masked], reduction="none"
        )
        blocks_per_window = (content.sum(-1, keepdim=True) + block_size - 1) / (block_size * count)
        weight = process.position_weights(t, valid) * blocks_per_window
        return weight, masked, masked_nll, self._next_token_nll(hidden[:, :width], x0, content)

    def _head_pass(
        self,
        x0: Tensor,
        attention_mask: Tensor,
        starts: Tensor,
        scale: Tensor | float,
        generator: torch.Generator | None,
        condition: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The pass of a model with a draft head (``polydiff.model.draft_head``): the encoder reads x_0
        causally (N positions) and gives the next-token cross-entropy of every content token; the head
        denoises the window of B tokens at each of ``starts`` (r, W) from the causal state before it:
        slot 0, the token that state predicts, stays clean (the sampler drafts after the token it has
        just drawn), slots 1 .. B - 1 are noised at the window's own t. Returns what ``_block_pass``
        returns, for the windows' slots, with w(t) times ``scale``, and the causal states (r, N, H)."""
        process, block_size = self.diffusion_process, self.block_size
        content = self.content(x0)
        rows, width = x0.shape
        hidden = self.model.encode(
            x0, sampling_mask(content, attention_mask.bool() & ~content, 1), None, None, condition
        )
        slots = starts.unsqueeze(-1) + torch.arange(block_size, device=x0.device)  # (r, W, B)
        inside = content.gather(1, slots.flatten(1).clamp(max=width - 1)) & (slots.flatten(1) < width)
        noised = inside & (torch.arange(slots.numel() // rows, device=x0.device) % block_size > 0)
        window_x0 = x0.gather(1, slots.flatten(1).clamp(max=width - 1))
        count = starts.shape[1]
        t = process.sample_time(rows * count, x0.device, generator).view(rows, count).repeat_interleave(block_size, 1)
        x_t = process.q_sample(window_x0, t, noised, generator).masked_fill(~inside, self.mask_token_id)
        masked = (x_t == self.mask_token_id) & noised
        context = hidden.gather(1, (starts - 1).clamp(0, width - 1).unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        states = self.model.draft(context, x_t.view(rows, count, block_size)).flatten(1, 2)
        masked_nll = F.cross_entropy(self._draft_logits(states[masked]), window_x0[masked], reduction="none")
        weight = process.position_weights(t, noised) * scale
        return weight, masked, masked_nll, self._next_token_nll(hidden, x0, content), hidden

    def _draft_logits(self, states: Tensor) -> Tensor:
        """``logits_from_hidden`` of the draft head's states, through the output projection without its
        gradient: the draft loss trains the head alone."""
        weights = {name: value.detach() for name, value in self.output_projection.named_parameters()}
        logits = torch.func.functional_call(self.output_projection, weights, (states,)).float()
        return logits.masked_fill(self.forbidden(), FORBIDDEN_LOGIT)

    def _next_token_nll(self, clean: Tensor, x0: Tensor, content: Tensor) -> Tensor:
        """-log p(x_0^{i+1} | x_0^{<=i}) of every content token, from the causal states ``clean`` of x_0."""
        targets = content[:, 1:]
        return F.cross_entropy(self.logits_from_hidden(clean[:, :-1][targets]), x0[:, 1:][targets], reduction="none")

    def _next_token_cross_entropy(
        self, x0: Tensor, attention_mask: Tensor, condition: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``masked_cross_entropy`` of one-token blocks, whose bound is the autoregressive NLL in closed
        form (``polydiff.diffusion.blocks``): every token given the tokens before it, with weight 1.

        Computed as a causal language model: under the block-causal mask the hidden state of token
        i (which sees tokens <= i) predicts token i + 1. One N-long pass, half the cost of
        [x_t ; x_0]; the sampler (``polydiff.sampling.generate``) decodes the same way."""
        content = self.content(x0)  # position 0 is [CLS], never content: row-major order is that of targets
        causal = sampling_mask(content, attention_mask.bool() & ~content, 1)
        hidden = self.model.encode(x0, causal, condition=condition)
        targets = content[:, 1:]
        logits = self.logits_from_hidden(hidden[:, :-1][targets])
        weight = torch.ones(x0.shape, device=x0.device)
        return weight, content, F.cross_entropy(logits, x0[:, 1:][targets], reduction="none")

    def negative_elbo(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None, condition: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One-sample estimate of the negative ELBO of every sequence in the batch.

        Returns:
            (nats per sequence, scored tokens per sequence: the maskable ones, and [SEP] for a
            block-diffusion model, which generates its end), both of shape (batch,).
        """
        return self._per_sequence(batch, *self.masked_cross_entropy(batch, generator, condition))

    def _per_sequence(
        self, batch: dict[str, Tensor], weight: Tensor, masked: Tensor, token_nll: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``negative_elbo`` from ``masked_cross_entropy``'s terms: their weighted sum per sequence."""
        row = masked.nonzero()[:, 0]
        terms = weight[masked] * token_nll
        nll = terms.new_zeros(masked.shape[0]).index_add_(0, row, terms)  # in the terms' dtype (bf16-true too)
        return nll, self.content(batch["input_ids"]).sum(-1)

    def training_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """The loss of one batch: the negative ELBO per token, or the flat masked cross-entropy; with a
        causal context, plus the next-token cross-entropy per token of the same pass."""
        config = self.diffusion_process.config
        condition = self.training_condition(batch)
        if config.causal_context:  # the same pass scores both: the clean half is encoded anyway
            x0, mask, property_nll = batch["input_ids"], batch["attention_mask"], 0.0
            if self.has_draft_head:
                weight, masked, masked_nll, next_nll, states = self._draft_windows(x0, mask, condition)
                if self.property_head is not None:
                    property_nll = self._property_nll(x0, states, batch["properties"])
            else:
                weight, masked, masked_nll, next_nll = self._window_pass(x0, mask, None, condition)
            if config.loss_weighting == "flat":
                return masked_nll.sum() / masked.sum().clamp(min=1) + next_nll.mean() + property_nll
            return ((weight[masked] * masked_nll).sum() + next_nll.sum()) / self.content(x0).sum() + property_nll
        if config.loss_weighting == "flat":
            _, masked, token_nll = self.masked_cross_entropy(batch, None, condition)
            return token_nll.sum() / masked.sum().clamp(min=1)
        nll, tokens = self.negative_elbo(batch, None, condition)
        return nll.sum() / tokens.sum()

    def _property_nll(self, x0: Tensor, states: Tensor, properties: Tensor) -> Tensor:
        """The property head's loss (``PropertyHead.nll``) at [CLS] and every content position of the
        sequences given no condition, whose causal ``states`` are the unconditional model's."""
        read = self.content(x0)
        read[:, 0] = True
        nll = self.property_head.nll(states, read, self._normalised(properties))
        if self._trainer is not None:
            self.log("train/property_nll", nll, batch_size=len(x0))
        return nll
