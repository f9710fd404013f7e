"""DiffusionTask: trains and validates a BERT masked-diffusion model on the negative ELBO."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse import lazy_instance
from jsonargparse.typing import PositiveInt
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric

from polydiff.chem.conditions import (
    MIN_CATEGORY_SEQUENCES,
    categorical_columns,
    check_condition_names,
    condition_columns,
)
from polydiff.data.files import is_repeat_unit_line
from polydiff.data.representation import get_representation
from polydiff.data.tokenizer import load_tokenizer
from polydiff.diffusion.forward import DiffusionConfig, ExcitedStateDiffusion
from polydiff.diffusion.schedules import CosineSchedule, DiffusionSchedule
from polydiff.model.bert_diffusion import BertDiffusionModel, ModelConfig
from polydiff.model.kv_cache import KeyValueCache
from polydiff.model.property_head import PropertyHead
from polydiff.sampling.config import SamplingConfig
from polydiff.sampling.generate import Generation, evaluating, generate
from polydiff.tasks.bounds import FORBIDDEN_LOGIT, DiffusionBounds
from polydiff.tasks.checkpoints import (
    NeedsCodeError,
    WeightsMismatchError,
    check_checkpoint,
    error_summary,
    migrated_checkpoint,
    weights_mismatch,
)
from polydiff.tasks.conditioning import Conditioning
from polydiff.tasks.ema import resume_without_average
from polydiff.tasks.lr_schedule import LRScheduleConfig
from polydiff.types import Kind, RepresentationName
from polydiff.utils.arguments import refuse_mistyped_arguments
from polydiff.utils.hparams import as_cli_config

VAL_NUM_SAMPLES = 200  # sequences sampled at a validation that samples


def _refuse_unused_training_options(schedule: DiffusionSchedule, config: DiffusionConfig) -> None:
    """Raises if the noise schedule or a time option is set for one-token blocks, whose bound is the exact
    autoregressive NLL with weight 1: no t is drawn, so none of them changes the model."""
    if config.block_size != 1:
        return
    unused = [f"diffusion_config.{name}" for name in sorted(config.changed() - {"block_size"})]
    if not isinstance(schedule, CosineSchedule):
        unused.insert(0, "schedule")
    if unused:
        verb = "changes" if len(unused) == 1 else "change"
        raise ValueError(
            f"{', '.join(unused)} {verb} nothing with one-token blocks (diffusion_config.block_size: 1, "
            "trained as an autoregressive model without t): leave them out, or pick block_size 0 or >= 2"
        )


# Settings of a run, not of the model its checkpoint holds: a resumed fit takes them as given (the
# skip that a non-finite loss's error advises, another validation sample count), so checkpoints
# do not keep them.
RUN_SETTINGS = ("sampling", "sample_every_n_validations", "val_num_samples", "compile", "on_nonfinite_loss")


def data_mismatches(model: Mapping[str, Any], data: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """Where ``data`` (a data module's hyperparameters) reads sequences otherwise than ``model`` (a
    ``DiffusionTask``'s) reads them: (option, the model's value, the data's) for each; an option
    either leaves unset is not compared. The length limit is compared by each caller, which knows
    whether the data must match it or only fit in it."""
    pairs = {
        "kind": (model.get("kind", "molecule"), data.get("kind")),
        "representation": (model.get("representation"), data.get("representation")),
        "tokenizer_name": (
            model.get("tokenizer_name") or model.get("representation"),
            data.get("tokenizer_name") or data.get("representation"),
        ),
        "conditions": (list(model.get("conditions") or []), list(data.get("conditions") or [])),
    }
    return [
        (name, ours, theirs) for name, (ours, theirs) in pairs.items() if None not in (ours, theirs) and ours != theirs
    ]


class DiffusionTask(Conditioning, DiffusionBounds, LightningModule):
    """Masked ("excited-state") discrete diffusion over SMILES with a BERT denoiser.

    Args:
        model_config: size of the BERT denoiser and whether it sees t.
        schedule: the noise schedule alpha(t).
        diffusion_config: discrete or continuous time, time sampling, eps.
        optimizer: builds the optimizer from the parameters (AdamW by default).
        lr_schedule: warmup and decay of the learning rate.
        representation: ``smiles``, ``kekule_smiles`` or ``selfies``, what the model reads and
            writes (samples are SMILES either way); the CLI links it from the data module.
        kind: ``molecule`` or ``polymer`` (repeat units: the validation samples are scored as
            PSMILES); the CLI links it from the data module.
        tokenizer_name: a local tokenizer path, or None for the representation's bundled
            tokenizer; the CLI links it from the data module so both always agree.
        sampling: how ``polydiff predict`` and the validation samples (``sample_every_n_validations``)
            sample. This and the four options after it are settings of a run (``RUN_SETTINGS``),
            not of the model: checkpoints do not keep them, and a resumed run takes them as given.
        sample_every_n_validations: every this many validation runs, sample ``val_num_samples``
            sequences and log ``val/valid``, ``val/unique`` and ``val/novelty`` (and
            ``val/polymer_valid`` for polymers); 0 turns it off.
        val_num_samples: sequences sampled for those metrics (fixed seed, so runs compare).
        compile: ``torch.compile`` the BERT encoder for training (dynamic shapes: batches vary in
            length). Pays off on GPUs; on CPUs compiling took longer than it saved (docs/quality.md).
        on_nonfinite_loss: a NaN or infinite training loss ``stop``s the run with a message naming
            the step, or is ``skip``ped (no update; counted in ``train/skipped_steps``; on one
            device: on several, where the ranks must step together, it stops the run).
        conditions: the properties the denoiser is conditioned on (``polydiff.chem.conditions``),
            embedded into every token; the CLI links them from the data module, which computes them for
            every training sequence, or reads them from its CSV (and drops them at random,
            ``data.condition_dropout``).
            Their statistics go into the checkpoint.
    """

    def __init__(
        self,
        model_config: ModelConfig = ModelConfig(),  # noqa: B008  (dataclass values, never mutated)
        schedule: DiffusionSchedule = lazy_instance(CosineSchedule),  # noqa: B008
        diffusion_config: DiffusionConfig = DiffusionConfig(),  # noqa: B008
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRScheduleConfig = LRScheduleConfig(),  # noqa: B008
        representation: RepresentationName = "smiles",
        kind: Kind = "molecule",
        tokenizer_name: str | None = None,
        sampling: SamplingConfig = SamplingConfig(),  # noqa: B008
        sample_every_n_validations: int = 0,
        val_num_samples: int = VAL_NUM_SAMPLES,
        compile: bool = False,
        on_nonfinite_loss: Literal["stop", "skip"] = "stop",
        conditions: list[str] | None = None,
    ) -> None:
        # The command line checks these; in Python, a typo (kind="polymers") would pass unseen.
        refuse_mistyped_arguments("", DiffusionTask.__init__, locals())
        super().__init__()
        # A run's settings stay out of the checkpoint: LightningCLI would let saved ones override the command line.
        self.save_hyperparameters(ignore=list(RUN_SETTINGS))
        # Built in Python, not by LightningCLI: the same plain config, so the checkpoint loads weights-only.
        if (config := as_cli_config(self.hparams)) is not None:
            self.save_hyperparameters(config)
        self.sampling = sampling
        self.representation = get_representation(representation)
        self.tokenizer = load_tokenizer(tokenizer_name or representation)
        self.vocab_size = len(self.tokenizer)
        self.mask_token_id = self.tokenizer.mask_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        _refuse_unused_training_options(schedule, diffusion_config)
        if diffusion_config.block_size >= model_config.max_position_embeddings:  # [CLS] is in no block
            raise ValueError(
                f"diffusion_config.block_size {diffusion_config.block_size} does not fit in a sequence of "
                f"data.max_length {model_config.max_position_embeddings}: for one block over the whole "
                "sequence, take block_size 0 (recipes/blocks/whole.yaml)"
            )
        if diffusion_config.block_size and model_config.time_conditioning:
            raise ValueError(
                "block diffusion (diffusion_config.block_size > 0) needs time_conditioning: false "
                "(each block has its own t; the optimal denoiser ignores t anyway)"
            )
        self.schedule = schedule
        self.diffusion_process = ExcitedStateDiffusion(schedule, self.mask_token_id, diffusion_config)
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.conditions = list(conditions or [])
        check_condition_names(self.conditions, kind)
        # The model reads one column per numeric property and one per category (``condition_columns``).
        self.condition_columns = condition_columns(self.conditions)
        self._categorical = torch.from_numpy(categorical_columns(self.conditions))
        head = diffusion_config.causal_context and diffusion_config.drafter == "head"
        bert_config = model_config.to_bert_config(
            self.vocab_size, self.pad_token_id, len(self.condition_columns), diffusion_config.block_size if head else 0
        )
        self.model = BertDiffusionModel(bert_config)
        # A draft head's model with conditions also learns what a prefix's molecule will be (steering).
        self.property_head = (
            PropertyHead(bert_config.hidden_size, len(self.condition_columns)) if head and self.conditions else None
        )

        structural = [self.tokenizer.convert_tokens_to_ids(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")]
        self.register_buffer("structural_ids", torch.tensor(structural), persistent=False)
        forbidden = torch.zeros(self.vocab_size, dtype=torch.bool)
        forbidden[structural] = True
        self.register_buffer("forbidden_tokens", forbidden, persistent=False)
        # Token-length histogram of the training data, kept in the checkpoint for the sampler.
        self.register_buffer("length_histogram", torch.zeros(model_config.max_position_embeddings + 1))
        # How often each token occurs in the training data: the sampler writes no token it never saw.
        self.register_buffer("token_histogram", torch.zeros(self.vocab_size))
        # Statistics of each condition column over the training data (``MoleculeDataModule.condition_statistics``).
        self.register_buffer("condition_statistics", torch.zeros(4, len(self.condition_columns)))
        # Training tokens seen (pads excluded), the x-axis of quality-per-compute comparisons.
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long))
        self.val_nll = MeanMetric()
        self.test_nll = MeanMetric()
        # With a causal context, the NLL of its next-token prediction too: what the sampler draws from.
        self.val_next_nll = MeanMetric()
        self.test_next_nll = MeanMetric()
        if sample_every_n_validations < 0 or val_num_samples < 1:
            raise ValueError(
                "need sample_every_n_validations >= 0 (0: off) and val_num_samples >= 1, got "
                f"{sample_every_n_validations} and {val_num_samples}"
            )
        self.sample_every_n_validations = sample_every_n_validations
        self.val_num_samples = val_num_samples
        self.kind = kind
        self.compile_encoder = compile
        self.on_nonfinite_loss = on_nonfinite_loss
        self._rng_states_to_restore: dict | None = None
        self.skipped_steps = 0
        self._validation_runs = 0
        self._training_set: set[str] | None = None  # for novelty, built on first use
        self._property_head_trained = True  # false for a checkpoint written before the head existed
        self._unconditional_trained = True  # false for a fit with data.condition_dropout 0 (refused since)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs) -> DiffusionTask:
        """Lightning's ``load_from_checkpoint``, after ``check_checkpoint``: a missing, truncated or
        foreign file is one clear error, and the file is first read weights-only (no code run) unless
        ``weights_only=False`` is given (Lightning 2.6 or later), for a file one trusts.
        Checkpoints written under an earlier option name load too (``migrated_checkpoint``)."""
        if isinstance(checkpoint_path, str | Path):
            try:
                checked = check_checkpoint(checkpoint_path, weights_only=kwargs.get("weights_only") is not False)
            except NeedsCodeError as error:
                raise error.advising("weights_only=False") from None
            checkpoint_path = migrated_checkpoint(checked) or checkpoint_path
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except WeightsMismatchError as error:
            raise WeightsMismatchError(f"{checkpoint_path}: {error}") from None
        except (FileNotFoundError, ValueError):
            raise
        except Exception as error:  # torch.load and Lightning raise many types for a bad file
            raise ValueError(f"{checkpoint_path} could not be loaded ({error_summary(error)})") from error

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, with weights that do not fit this model (``validate --ckpt_path``
        with another model size, vocabulary or head) reported in one line, not torch's key listing."""
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as error:
            summary = weights_mismatch(error)
            if summary is None:
                raise
            raise WeightsMismatchError(summary) from None

    # What the samplers need (``polydiff.sampling.Denoiser``).
    @property
    def block_size(self) -> int:
        """B of the block diffusion: 1 writes left to right, 0 diffuses the whole sequence."""
        return self.diffusion_process.config.block_size

    @property
    def causal_context(self) -> bool:
        """Whether the clean context is encoded causally and predicts the next token (``DiffusionConfig``)."""
        return self.diffusion_process.config.causal_context

    @property
    def has_draft_head(self) -> bool:
        """Whether a draft head, not the encoder, denoises its windows (``DiffusionConfig.drafter``)."""
        return self.model.draft_head is not None

    def draft(self, context: Tensor, slot_ids: Tensor) -> Tensor:
        """The draft head's states of windows after ``context`` (``BertDiffusionModel.draft``)."""
        return self.model.draft(context, slot_ids)

    @property
    def max_positions(self) -> int:
        """The longest sequence the model reads, [CLS] and [SEP] included."""
        return self.model.config.max_position_embeddings

    @property
    def time_conditioned(self) -> bool:
        return self.model.time_embedding is not None

    def encode(
        self,
        x_t: Tensor,
        attention_mask: Tensor | None = None,
        t: Tensor | None = None,
        positions: Tensor | None = None,
        condition: Tensor | None = None,
    ) -> Tensor:
        """Final hidden states of the denoiser (``BertDiffusionModel.encode``)."""
        return self.model.encode(x_t, attention_mask, t, positions, condition)

    def new_cache(self, rows: int, length: int) -> KeyValueCache:
        """An empty key/value cache for ``encode_incremental``."""
        return self.model.new_cache(rows, length)

    def encode_incremental(
        self,
        cache: KeyValueCache,
        rows: Tensor,
        input_ids: Tensor,
        positions: Tensor,
        sees_before: Tensor,
        group: Tensor,
        condition: Tensor | None = None,
    ) -> Tensor:
        """Hidden states of new queries attending to cached positions (``BertDiffusionModel.encode_incremental``)."""
        return self.model.encode_incremental(cache, rows, input_ids, positions, sees_before, group, condition)

    @property
    def evaluations_per_call(self) -> int:
        """Network evaluations per sampler call: one (a guided sampler makes two, ``GuidedDenoiser``)."""
        return 1

    @property
    def generates_end(self) -> bool:
        """Whether the model predicts [SEP], ending its sequences itself (block diffusion: the sampler
        needs no length, ``polydiff.diffusion.blocks``); otherwise the length is drawn first."""
        return self.block_size > 0

    def forbidden(self, allow_end: bool = True) -> Tensor:
        """(V,) bool, the tokens not predicted: [MASK], [PAD], [CLS], and [SEP] unless the model
        generates its end and ``allow_end``."""
        if not (self.generates_end and allow_end):
            return self.forbidden_tokens
        vocabulary = torch.arange(self.vocab_size, device=self.device)
        return self.forbidden_tokens & (vocabulary != self.tokenizer.sep_token_id)

    # The seed's documented parts, kept as views onto the model's own modules.
    @property
    def timestep_embedding(self) -> torch.nn.Module | None:
        return self.model.time_embedding

    @property
    def output_projection(self) -> torch.nn.Module:
        return self.model.output_projection

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate"):
            self.check_validation_sampling()
        if stage == "fit" and self.on_nonfinite_loss == "skip" and self._trainer and self.trainer.world_size > 1:
            # A rank that skipped its step alone would leave the others waiting in the gradient
            # all-reduce. Warned, not refused: a checkpoint fitted on one device resumes on several.
            rank_zero_warn(
                "model.on_nonfinite_loss skip works on one device: on several, a non-finite loss stops the run"
            )
            self.on_nonfinite_loss = "stop"
        if stage == "fit" and self.compile_encoder:
            self.model.bert.compile(dynamic=True)  # in place: parameter names (and checkpoints) stay as they are
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "length_histogram"):
            histogram = datamodule.length_histogram()
            size = min(len(histogram), len(self.length_histogram))
            self.length_histogram.zero_()
            self.length_histogram[:size] = histogram[:size].to(self.length_histogram)
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "token_histogram"):
            self.token_histogram.copy_(datamodule.token_histogram(self.vocab_size))
        if stage != "predict" and datamodule is not None:
            self._check_data(getattr(datamodule, "hparams", {}))
        if stage == "fit" and datamodule is not None and self.conditions:
            self.condition_statistics.copy_(datamodule.condition_statistics())
            corpus = getattr(datamodule, "builds_corpus", False)
            more = " (more monomers make more units: data.polymers.monomer_file)" if corpus else ""
            for name, categories in self.thin_categories().items():  # told now, not when a sample asks for one
                rank_zero_warn(
                    f"fewer than {MIN_CATEGORY_SEQUENCES:,} training sequences of {name} {', '.join(categories)}: "
                    f"too few to learn, so sampling will refuse them as targets{more}"
                )

    def _check_data(self, data: Mapping[str, Any]) -> None:
        """Refuses data read otherwise than this model reads it (``data``: the data module's
        hyperparameters). The CLI links these options; a fit from Python gives each twice."""
        for name, expected, given in data_mismatches(self.hparams, data):
            if name == "conditions":
                raise ValueError(f"the data computes conditions {given}, the model reads {expected}")
            raise ValueError(f"the data has {name} {given}, the model {expected}: give both the same")
        if data.get("max_length") is not None and data["max_length"] > self.max_positions:
            raise ValueError(
                f"the data keeps sequences of up to {data['max_length']} tokens, the model reads "
                f"{self.max_positions} (model_config.max_position_embeddings): give both the same"
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The random state that draws t, the masks and dropout: a resumed run continues with the
        # very numbers an uninterrupted one would have drawn (not the conditions a collator keeps:
        # docs/conventions.md, "Resume").
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        checkpoint["validation_runs"] = self._validation_runs  # when to sample next
        checkpoint["skipped_steps"] = self.skipped_steps  # train/skipped_steps counts on after a resume
        if self._trainer is not None:  # each rank's shard of an epoch depends on how many there are
            checkpoint["world_size"] = self.trainer.world_size
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if fitting and resume_without_average(checkpoint, self.trainer.callbacks):
            rank_zero_warn(
                "this checkpoint holds an average of the weights (EMA) and this run averages nothing: "
                "training goes on from the trained weights and the average is dropped; to keep it, "
                "add -c recipes/trainer/ema.yaml",
                category=UserWarning,
            )
        # Checkpoints written before tokens_seen was counted still load; their count starts at 0.
        checkpoint.get("state_dict", {}).setdefault("tokens_seen", torch.zeros((), dtype=torch.long))
        # Nor did they count tokens: all zeros leaves their sampler's vocabulary unrestricted.
        checkpoint.get("state_dict", {}).setdefault("token_histogram", torch.zeros(self.vocab_size))
        # Nor did they know conditions (a model without them keeps an empty table).
        checkpoint.get("state_dict", {}).setdefault("condition_statistics", torch.zeros(4, len(self.condition_columns)))
        state = checkpoint.get("state_dict", {})
        if self.property_head is not None:
            head = {f"property_head.{k}": v for k, v in self.property_head.state_dict().items()}
            if not any(key.startswith("property_head.mlp.") for key in state):
                # Nor a property head: it keeps its initial weights, and does not steer (``_steering``).
                self._property_head_trained = False
            # A head written before the sum over the prefix reads as it did: those shares start at 0.
            state.update({k: v for k, v in head.items() if k not in state})
        # A fit with no condition dropout never trained the unconditional model (its hparams are the
        # data module's: Lightning keeps them beside the task's).
        if (checkpoint.get("datamodule_hyper_parameters") or {}).get("condition_dropout") == 0:
            self._unconditional_trained = False
        if fitting:
            # Set when the first batch starts, after the data loaders (which draw worker seeds) exist.
            self._rng_states_to_restore = checkpoint.get("rng_states")
            self._validation_runs = checkpoint.get("validation_runs", 0)
            self.skipped_steps = checkpoint.get("skipped_steps", 0)
            trained_on = checkpoint.get("world_size", self.trainer.world_size)
            if trained_on != self.trainer.world_size:
                rank_zero_warn(
                    f"this checkpoint was trained on {trained_on} processes and resumes on "
                    f"{self.trainer.world_size}: the rest of its epoch is dealt to them anew, so some of "
                    "its lines may come again and others not at all (from the next epoch on, each comes once)"
                )

    def on_train_batch_start(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        states, self._rng_states_to_restore = self._rng_states_to_restore, None
        if states is not None:
            torch.set_rng_state(states["torch"])
            if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states["cuda"])

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, t: Tensor | None = None) -> Tensor:
        """Logits of p_theta(x_0 | x_t), with the tokens it may never predict forbidden (SUBS)."""
        logits = self.model(input_ids, attention_mask, t)
        return logits.masked_fill(self.forbidden(), FORBIDDEN_LOGIT)

    def logits_from_hidden(self, hidden: Tensor, allow_end: bool = True) -> Tensor:
        """The head on final hidden states (any leading shape), with forbidden tokens masked, in float32;
        ``allow_end=False`` also forbids [SEP] (a sampler that has fixed the length)."""
        logits = self.output_projection(hidden).float()
        return logits.masked_fill(self.forbidden(allow_end), FORBIDDEN_LOGIT)

    def on_train_epoch_start(self) -> None:
        # Lightning tells a loader's sampler the epoch, not a batch sampler of the loader's own such as
        # polydiff's length buckets, which would otherwise deal every epoch's batches in one order.
        batches = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        if callable(getattr(batches, "set_epoch", None)):
            batches.set_epoch(self.current_epoch)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        loss = self.training_loss(batch)
        # Logged before the check: a skipped step shows its own loss, not the last finite one again.
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        if not torch.isfinite(loss):
            if self.on_nonfinite_loss == "stop":
                raise FloatingPointError(
                    f"non-finite training loss ({loss.item()}) at step {self.global_step}, batch {batch_idx}; "
                    "lower the learning rate, or (on one device) set model.on_nonfinite_loss: skip"
                )
            # Returning None skips backward and the optimizer step (a single process; under DDP
            # every rank must skip together, so stop is the default).
            self.skipped_steps += 1
            self.log("train/skipped_steps", float(self.skipped_steps), batch_size=len(batch["input_ids"]))
            return None
        tokens = batch["attention_mask"].sum()
        if self._trainer is not None:  # summed over the ranks: the checkpoint keeps rank 0's count
            tokens = self.trainer.strategy.reduce(tokens, reduce_op="sum")
        self.tokens_seen += tokens
        self.log("train/tokens_seen", self.tokens_seen.float(), batch_size=len(batch["input_ids"]))
        return loss

    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int, metric: MeanMetric, next_metric: MeanMetric) -> None:
        # A fixed generator per batch makes the bound's estimate comparable across epochs; each
        # rank's batches are seeded apart, or every rank would draw the same t for its lines.
        ranks, rank = (self.trainer.world_size, self.trainer.global_rank) if self._trainer is not None else (1, 0)
        generator = torch.Generator(device=self.device).manual_seed(batch_idx * ranks + rank)
        x0, attention_mask = batch["input_ids"], batch["attention_mask"]
        # With a causal context one pass gives the bound and, from its clean stream (the causal model
        # the sampler verifies with), the next-token NLL alike.
        if self.has_draft_head:
            weight, scored, token_nll, next_nll = self._head_bound(x0, attention_mask, generator)
        elif self.causal_context:
            weight, scored, token_nll, next_nll = self._block_pass(x0, attention_mask, self.block_size, generator)
        else:
            (weight, scored, token_nll), next_nll = self.masked_cross_entropy(batch, generator), None
        nll, tokens = self._per_sequence(batch, weight, scored, token_nll)
        metric.update(nll.float().sum() / tokens.sum(), weight=tokens.sum())
        if next_nll is not None:
            next_metric.update(next_nll.float().mean(), weight=next_nll.numel())

    def _metrics_in_float32(self) -> None:
        """The bound's running means in float32 whatever the module's dtype: under bf16-true they
        are cast with it, and a bfloat16 sum over a validation's batches ran 2.5% low."""
        for metric in (self.val_nll, self.val_next_nll, self.test_nll, self.test_next_nll):
            metric.set_dtype(torch.float32)

    def on_validation_epoch_start(self) -> None:
        self._metrics_in_float32()

    def on_test_epoch_start(self) -> None:
        self._metrics_in_float32()

    def _log_bound(self, prefix: str, metric: MeanMetric, next_metric: MeanMetric) -> None:
        nll = metric.compute()
        values = {f"{prefix}/nll": nll, f"{prefix}/bpt": nll / math.log(2), f"{prefix}/ppl": torch.exp(nll)}
        if self.causal_context:
            values[f"{prefix}/next_nll"] = next_metric.compute()
        # MeanMetric has already reduced over the ranks: every rank logs the same values, and
        # sync_dist (averaging equal values) only tells Lightning so, which would warn otherwise.
        self.log_dict(values, prog_bar=prefix == "val", sync_dist=True)
        metric.reset()
        next_metric.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, self.val_nll, self.val_next_nll)

    def on_validation_epoch_end(self) -> None:
        self._log_bound("val", self.val_nll, self.val_next_nll)
        if self.trainer.sanity_checking or self.sample_every_n_validations <= 0:
            return
        self._validation_runs += 1
        # `polydiff validate` is one validation, the one that samples; in a fit, every n-th does.
        standalone = self.trainer.state.fn == "validate"
        if standalone or self._validation_runs % self.sample_every_n_validations == 0:
            # The same samples on every rank (seed 0, the same weights): as with the bound, sync_dist
            # averages equal values.
            self.log_dict(self._sample_quality(), prog_bar=True, sync_dist=True)

    def check_validation_sampling(self) -> None:
        """Refuses, before the first step, ``sampling`` options that the validation samples would
        ignore or refuse (``SamplingConfig.for_model``), and a sample count with no samples; run by
        ``setup`` and, before the data is prepared, by the CLI."""
        if self.sample_every_n_validations == 0:
            unused = ["model.sampling"] if self.sampling.changed() else []
            if self.val_num_samples != VAL_NUM_SAMPLES:
                unused.append(f"model.val_num_samples (set it back to {VAL_NUM_SAMPLES})")
            if unused:
                raise ValueError(
                    f"{' and '.join(unused)}: validation samples nothing (model.sample_every_n_validations: 0)"
                )
            return
        free_length = self.block_size > 0  # validation samples without a length or template
        self.sampling.for_model(
            self.block_size, free_length, self.representation.is_smiles, self.causal_context, self.has_draft_head
        )

    def _sample_quality(self) -> dict[str, float]:
        """valid, unique (among valid) and novelty (against the training lines) of a fixed-seed sample, as MOSES
        defines them; novelty compares canonical samples with the training lines' canonical forms
        (``novelty_reference``). For polymers, unique and novelty count the repeat units."""
        # Imported here, not at the top: RDKit, SciPy and ChemNet's code would slow every CLI start.
        from polydiff.chem.metrics import fraction_unique, novelty
        from polydiff.chem.molecules import canonical_sample, rdkit_silenced

        samples = self.sample(
            self.val_num_samples, config=self.sampling, seed=0, batch_size=min(self.val_num_samples, 256)
        )
        with rdkit_silenced():
            checked = [canonical_sample(s, polymer=self.kind == "polymer") for s in samples]
        valid = [c for c, repeat_unit in checked if c is not None and (repeat_unit or self.kind == "molecule")]
        if self._training_set is None:
            reference = getattr(self.trainer.datamodule, "novelty_reference", None)
            self._training_set = (reference() if reference else None) or set()
        n = max(len(samples), 1)
        quality = {"val/valid": sum(c is not None for c, _ in checked) / n}
        if self.kind == "polymer":
            quality["val/polymer_valid"] = len(valid) / n
        # The same keys whatever was drawn: each is one collective across the ranks (sync_dist), and
        # ranks that logged different keys would wait on each other for ever.
        quality["val/unique"] = fraction_unique(valid) if valid else 0.0
        if self._training_set:
            quality["val/novelty"] = novelty(valid, self._training_set) if valid else 0.0
        return quality

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, self.test_nll, self.test_next_nll)

    def on_test_epoch_end(self) -> None:
        self._log_bound("test", self.test_nll, self.test_next_nll)

    def sample(
        self,
        num_samples: PositiveInt = 1000,
        *,
        config: SamplingConfig | None = None,
        length: int | None = None,
        prompt: str | list[str] | None = None,
        batch_size: PositiveInt = 256,
        seed: int | None = None,
        progress: bool = False,
        condition: Mapping[str, float | str] | None = None,
        guidance_scale: float | None = None,
        steering: float | None = None,
        fragments: str | None = None,
    ) -> Generation:
        """What to generate: sequences from this model, in eval mode (``polydiff.sampling.generate``).

        ``polydiff sample`` takes the same options.

        Args:
            num_samples: sequences to generate (per prompt, when several prompts are given; grouped
                by prompt).
            config: how to sample; None takes ``SamplingConfig()``'s defaults (``polydiff sample``
                takes its fields as options of their own: ``--steps``, ``--top_p``, ...).
            length: tokens per sequence; by default a block-diffusion model ends its sequences
                itself, and others draw the length from the training length histogram.
            prompt: a template such as ``c1ccccc1C(=O)N[MASK][MASK][MASK][MASK]`` (or a list of
                them) whose [MASK] tokens are filled in; under the SMILES rules where it fixes only
                a start (``fragments`` keeps a ring and fills its substituents).
            batch_size: sequences denoised together.
            seed: the same seed, batch size and device give the same sequences; by default a fresh
                seed.
            progress: show a progress bar.
            condition: property targets such as ``{"logp": 3.0, "qed": 0.8}`` or, for a polymer
                model, ``{"class": "polyamide"}`` (a model trained with ``data.conditions``;
                properties not named are left free); None samples unconditionally.
            guidance_scale: classifier-free guidance toward ``condition`` (w; 0, the default with a
                condition, samples the conditional model alone; each guided model call counts as two
                evaluations).
            steering: judge each finished molecule by the checkpoint's prediction of its properties,
                and take back and rewrite the end of one far from ``condition``; this is the target's
                width, in standard deviations of each property over the training molecules (extra
                model calls counted); 0 turns it off; by default 0.25 where it applies (numeric
                targets, a draft-head checkpoint fitted with conditions, speculative decoding).
            fragments: fragments every sample keeps (``polydiff.sampling.fragments``), ``[*]``
                marking where the model attaches atoms: ``c1ccc([*])cc1[*]`` (decorate a scaffold),
                ``[*]C(=O)c1ccccc1`` (extend a motif), ``[*]C(=O)O.[*]N1CCCC1`` (link two fragments).

        Returns:
            The decoded sequences (SMILES, special tokens skipped), a list that also carries their
            cost: ``nfe`` and ``lengths`` per sequence, the ``seed``, ``seconds`` and ``samples_per_s``.
        """
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if self.kind == "molecule" and any(map(is_repeat_unit_line, prompts or ())):
            rank_zero_warn(
                "templates with two * are polymer repeat units, and this model writes molecules: its samples "
                "keep each * as an atom, and only a polymer model (--data.kind polymer) writes repeat units"
            )
        with evaluating(self):  # no dropout, e.g. when called during validation; a guided model wraps this one
            model = self.guided(condition, guidance_scale, steering)
            return generate(model, num_samples, config, length, prompts, batch_size, seed, progress, fragments)

    def predict_step(self, batch: Tensor, batch_idx: int) -> list[str]:
        """Samples ``len(batch)`` sequences with ``self.sampling``; the batch's content is ignored.

        The seed of each batch comes from torch's global generator, so ``seed_everything``
        makes ``polydiff predict`` reproducible, plus the batch's first sample index, so that
        processes with the same global seed (DDP ranks) draw different samples. Write the output
        with ``polydiff.SampleWriter``.
        """
        seed = int(torch.randint(2**62, (1,))) + int(batch[0])
        # The sequences alone: what the prediction writer writes.
        return list(generate(self, len(batch), self.sampling, batch_size=len(batch), seed=seed))

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        total_steps = self.trainer.estimated_stepping_batches
        by_time = self.lr_schedule.decay_over == "steps_or_time" and self._timer() is not None
        if self.lr_schedule.decay == "cosine" and not math.isfinite(total_steps) and not by_time:
            raise ValueError(
                "lr_schedule.decay cosine decays to the end of training, and this run has none: set "
                "trainer.max_steps, or trainer.max_time with lr_schedule.decay_over steps_or_time, or decay constant"
            )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: self.lr_schedule.factor(step, total_steps, self._time_progress())
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _timer(self) -> Timer | None:
        """The trainer's clock of ``max_time``, where it has one."""
        return next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None) if self._trainer else None

    def _time_progress(self) -> float:
        """The spent fraction of the trainer's ``max_time`` (0 without one)."""
        timer = self._timer()
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is None:
            return 0.0
        elapsed = timer.time_elapsed()
        return elapsed / max(elapsed + remaining, 1e-9)
