"""DiffusionTask: trains and validates a BERT masked-diffusion model on the negative ELBO."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jsonargparse import lazy_instance
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor
from torchmetrics import MeanMetric

from polydiff.data.tokenizer import load_tokenizer
from polydiff.diffusion.forward import DiffusionConfig, ExcitedStateDiffusion
from polydiff.diffusion.schedules import CosineSchedule, DiffusionSchedule
from polydiff.model.bert_diffusion import BertDiffusionModel, ModelConfig

# Logit given to tokens the model must never predict ([MASK], [PAD], [CLS], [SEP]): far below
# any real logit, yet finite in fp16 and bf16 so no NaN can arise from -inf arithmetic.
FORBIDDEN_LOGIT = -1e4


@dataclass
class LRScheduleConfig:
    """Learning-rate schedule: linear warmup, then cosine decay or constant.

    Args:
        warmup_steps: optimizer steps of linear warmup from 0.
        decay: ``cosine`` decays to ``min_lr_ratio`` x lr at the trainer's last step.
        min_lr_ratio: final learning rate as a fraction of the peak.
    """

    warmup_steps: int = 0
    decay: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1

    def factor(self, step: int, total_steps: float) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant" or not math.isfinite(total_steps):
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1.0, total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class DiffusionTask(LightningModule):
    """Masked ("excited-state") discrete diffusion over SMILES with a BERT denoiser.

    Args:
        model_config: size of the BERT denoiser and whether it sees t.
        schedule: the noise schedule alpha(t).
        diffusion_config: discrete or continuous time, time sampling, eps.
        optimizer: builds the optimizer from the parameters (AdamW by default).
        lr_schedule: warmup and decay of the learning rate.
        tokenizer_name: ``smiles`` (bundled) or a local tokenizer path; the CLI links it from
            the data module so both always agree.
    """

    def __init__(
        self,
        model_config: ModelConfig = ModelConfig(),  # noqa: B008  (dataclass values, never mutated)
        schedule: DiffusionSchedule = lazy_instance(CosineSchedule),  # noqa: B008
        diffusion_config: DiffusionConfig = DiffusionConfig(),  # noqa: B008
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRScheduleConfig = LRScheduleConfig(),  # noqa: B008
        tokenizer_name: str = "smiles",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = load_tokenizer(tokenizer_name)
        self.vocab_size = len(self.tokenizer)
        self.mask_token_id = self.tokenizer.mask_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        self.schedule = schedule
        self.diffusion_process = ExcitedStateDiffusion(schedule, self.mask_token_id, diffusion_config)
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.model = BertDiffusionModel(model_config.to_bert_config(self.vocab_size, self.pad_token_id))

        structural = [self.tokenizer.convert_tokens_to_ids(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")]
        self.register_buffer("structural_ids", torch.tensor(structural), persistent=False)
        forbidden = torch.zeros(self.vocab_size, dtype=torch.bool)
        forbidden[structural] = True
        self.register_buffer("forbidden_tokens", forbidden, persistent=False)
        # Token-length histogram of the training data, kept in the checkpoint for the sampler.
        self.register_buffer("length_histogram", torch.zeros(model_config.max_position_embeddings + 1))
        self.val_nll = MeanMetric()
        self.test_nll = MeanMetric()

    # The seed's documented parts, kept as views onto the model's own modules.
    @property
    def timestep_embedding(self) -> torch.nn.Module | None:
        return self.model.time_embedding

    @property
    def output_projection(self) -> torch.nn.Module:
        return self.model.output_projection

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "length_histogram"):
            histogram = datamodule.length_histogram()
            size = min(len(histogram), len(self.length_histogram))
            self.length_histogram.zero_()
            self.length_histogram[:size] = histogram[:size].to(self.length_histogram)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, t: Tensor | None = None) -> Tensor:
        """Logits of p_theta(x_0 | x_t), with the tokens it may never predict forbidden (SUBS)."""
        logits = self.model(input_ids, attention_mask, t)
        return logits.masked_fill(self.forbidden_tokens, FORBIDDEN_LOGIT)

    def maskable(self, input_ids: Tensor) -> Tensor:
        """Positions the forward process may mask: everything but pads, [CLS], [SEP], [MASK]."""
        return ~torch.isin(input_ids, self.structural_ids)

    def _apply_masking(self, input_ids: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_t ~ q(x_t | x_0): masks each maskable token with probability 1 - alpha(t)."""
        return self.diffusion_process.q_sample(input_ids, t, self.maskable(input_ids), generator)

    def negative_elbo(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """One-sample estimate of the negative ELBO of every sequence in the batch.

        Returns:
            (nats per sequence, maskable tokens per sequence), both of shape (batch,).
        """
        x0, attention_mask = batch["input_ids"], batch["attention_mask"]
        t = self.diffusion_process.sample_time(x0.shape[0], x0.device, generator)
        x_t = self._apply_masking(x0, t, generator)
        masked = x_t == self.mask_token_id
        hidden = self.model.encode(x_t, attention_mask if not attention_mask.all() else None, t)
        # Only masked positions enter the bound (SUBS carries clean ones over): project just those.
        logits = self.output_projection(hidden[masked]).float().masked_fill(self.forbidden_tokens, FORBIDDEN_LOGIT)
        token_nll = F.cross_entropy(logits, x0[masked], reduction="none")
        row = masked.nonzero()[:, 0]
        nll_per_sequence = torch.zeros(x0.shape[0], device=x0.device).index_add_(0, row, token_nll)
        weight = self.diffusion_process.elbo_weight(t).float()
        return weight * nll_per_sequence, self.maskable(x0).sum(-1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        nll, tokens = self.negative_elbo(batch)
        loss = nll.sum() / tokens.sum()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(tokens))
        return loss

    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int, metric: MeanMetric) -> None:
        # A fixed generator per batch makes the bound's estimate comparable across epochs.
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        nll, tokens = self.negative_elbo(batch, generator)
        metric.update(nll.sum() / tokens.sum(), weight=tokens.sum())

    def _log_bound(self, prefix: str, metric: MeanMetric) -> None:
        nll = metric.compute()
        self.log_dict(
            {f"{prefix}/nll": nll, f"{prefix}/bpt": nll / math.log(2), f"{prefix}/ppl": torch.exp(nll)},
            prog_bar=prefix == "val",
        )
        metric.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, self.val_nll)

    def on_validation_epoch_end(self) -> None:
        self._log_bound("val", self.val_nll)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, self.test_nll)

    def on_test_epoch_end(self) -> None:
        self._log_bound("test", self.test_nll)

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: self.lr_schedule.factor(step, total_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
