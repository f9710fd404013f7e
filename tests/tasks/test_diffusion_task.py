import math
from dataclasses import replace

import pytest
import torch

from polydiff.data.batching import MoleculeCollator
from polydiff.diffusion import DiffusionConfig, LinearSchedule
from polydiff.diffusion.blocks import sampling_mask
from polydiff.model.bert_diffusion import ModelConfig
from polydiff.tasks.diffusion_task import FORBIDDEN_LOGIT, DiffusionTask
from polydiff.tasks.lr_schedule import LRScheduleConfig

TINY = ModelConfig(
    hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64, dropout=0.0
)


@pytest.fixture
def task():
    torch.manual_seed(0)
    return DiffusionTask(model_config=TINY, schedule=LinearSchedule())


@pytest.fixture(scope="module")
def batch(moses_sample):
    return MoleculeCollator("smiles", max_length=64)(moses_sample[:256])


def test_documented_parts(task):
    assert task.vocab_size == len(task.tokenizer)
    assert task.mask_token_id == task.tokenizer.mask_token_id
    assert task.pad_token_id == task.tokenizer.pad_token_id
    assert task.diffusion_process.schedule is task.schedule
    assert task.timestep_embedding is None
    assert task.output_projection[-1].out_features == task.vocab_size


def test_masking_spares_pads_and_special_tokens(task, batch):
    x0 = batch["input_ids"]
    x_t = task._apply_masking(x0, torch.full((len(x0),), 0.999))
    structural = ~task.maskable(x0)
    assert torch.equal(x_t[structural], x0[structural])
    assert (x_t[~structural] == task.mask_token_id).float().mean() > 0.99


def test_mask_and_structure_are_never_predicted(task, batch):
    logits = task(batch["input_ids"], batch["attention_mask"])
    for token in ("[MASK]", "[PAD]", "[CLS]", "[SEP]"):
        assert (logits[..., task.tokenizer.convert_tokens_to_ids(token)] == FORBIDDEN_LOGIT).all()
    for dtype in (torch.float16, torch.bfloat16):
        assert torch.isfinite(torch.tensor(FORBIDDEN_LOGIT, dtype=dtype))


def test_a_block_model_predicts_its_end_unless_the_length_is_given(task, batch):
    task.diffusion_process.config = DiffusionConfig(block_size=4)
    hidden = task.model.encode(batch["input_ids"][:2], batch["attention_mask"][:2])
    sep = task.tokenizer.sep_token_id
    assert (task.logits_from_hidden(hidden)[..., sep] > FORBIDDEN_LOGIT).all()
    assert (task.logits_from_hidden(hidden, allow_end=False)[..., sep] == FORBIDDEN_LOGIT).all()
    for token in ("[MASK]", "[PAD]", "[CLS]"):
        assert (
            task.logits_from_hidden(hidden)[..., task.tokenizer.convert_tokens_to_ids(token)] == FORBIDDEN_LOGIT
        ).all()
    # [SEP] is scored as the last token of each sequence: one more token than the maskable ones.
    _, tokens = task.negative_elbo(batch)
    assert torch.equal(tokens, task.maskable(batch["input_ids"]).sum(-1) + 1)


@pytest.mark.parametrize(("num_timesteps", "block_size"), [(0, 0), (20, 0), (0, 4), (20, 1)])
def test_untrained_bound_is_log_vocabulary(task, batch, num_timesteps, block_size):
    # An untrained model is nearly uniform over the tokens it may predict (V - 4; V - 3 with blocks,
    # which predict [SEP]), so every masked token costs the log of their number, and
    # E_t[w_l(t) (1 - alpha_l(t))] = 1 for every position l (its own schedule runs from 1 to 0
    # under order skew, and in its own block's time with blocks) makes that the bound per token.
    task.diffusion_process.config = DiffusionConfig(num_timesteps=num_timesteps, block_size=block_size)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        totals = [task.negative_elbo(batch, generator) for _ in range(8)]
    nll = sum(n.sum() for n, _ in totals) / sum(k.sum() for _, k in totals)
    predictable = task.vocab_size - 4 + (block_size > 0)
    assert nll.item() == pytest.approx(math.log(predictable), rel=0.05)


def test_one_token_blocks_give_the_exact_autoregressive_nll(task, batch):
    """With B = 1 the bound is the autoregressive NLL, computed in one causal pass: it must equal
    scoring every token from a pass over the tokens before it alone, as the sampler does."""
    task.diffusion_process.config = DiffusionConfig(block_size=1)
    small = {key: value[:4] for key, value in batch.items()}
    x0 = small["input_ids"]
    content = task.content(x0)  # [SEP] included: the model predicts where a sequence ends
    with torch.no_grad():
        nll, tokens = task.negative_elbo(small, torch.Generator().manual_seed(0))
        again, _ = task.negative_elbo(small, torch.Generator().manual_seed(1))
        expected = torch.zeros(len(x0))
        for position in range(1, x0.shape[1]):
            prefix = x0[:, :position]
            prefix_content = content[:, :position]
            attention = sampling_mask(prefix_content, ~prefix_content & (prefix != task.pad_token_id), 1)
            logits = task.logits_from_hidden(task.model.encode(prefix, attention)[:, -1])
            token_nll = torch.nn.functional.cross_entropy(logits, x0[:, position], reduction="none")
            expected += torch.where(content[:, position], token_nll, 0)
    torch.testing.assert_close(nll, again)  # no sampled t: nothing random left
    torch.testing.assert_close(nll, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(tokens, content.sum(-1))


def test_training_lowers_the_bound(task, batch):
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)

    def bound():
        with torch.no_grad():
            nll, tokens = task.negative_elbo(batch, torch.Generator().manual_seed(1))
        return (nll.sum() / tokens.sum()).item()

    before = bound()
    for _ in range(40):
        nll, tokens = task.negative_elbo(batch, generator)
        optimizer.zero_grad()
        (nll.sum() / tokens.sum()).backward()
        optimizer.step()
    assert bound() < 0.7 * before


def test_time_conditioned_task_runs(batch):
    task = DiffusionTask(model_config=ModelConfig(**{**TINY.__dict__, "time_conditioning": True}))
    nll, tokens = task.negative_elbo(batch)
    assert torch.isfinite(nll).all() and (tokens > 0).all()
    assert task.timestep_embedding is task.model.time_embedding


def test_lr_schedule_warms_up_then_decays():
    schedule = LRScheduleConfig(warmup_steps=10, decay="cosine", min_lr_ratio=0.1)
    assert schedule.factor(0, 100) == pytest.approx(0.1)
    assert schedule.factor(9, 100) == pytest.approx(1.0)
    assert schedule.factor(55, 100) == pytest.approx(0.55)
    assert schedule.factor(100, 100) == pytest.approx(0.1)
    assert LRScheduleConfig(decay="constant").factor(50, 100) == 1.0
    assert schedule.factor(500, float("inf")) == 1.0


def test_validation_samples_and_logs_quality(smiles_files, tmp_path):
    from lightning.pytorch import Trainer

    from polydiff.data.datamodule import MoleculeDataModule

    torch.manual_seed(0)
    task = DiffusionTask(model_config=TINY, sample_every_n_validations=1, val_num_samples=20)
    data = MoleculeDataModule(
        str(smiles_files["train"]), str(smiles_files["val"]), max_length=64, batch_size=32, token_cache=False
    )
    trainer = Trainer(
        max_steps=4, val_check_interval=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(task, data)
    metrics = trainer.callback_metrics
    assert 0 <= metrics["val/valid"] <= 1
    assert task._validation_runs == 2  # the sanity check does not count
    if metrics["val/valid"] > 0:
        assert 0 < metrics["val/unique"] <= 1 and 0 <= metrics["val/novelty"] <= 1


def test_lr_decays_over_time_when_max_time_runs_out_first():
    schedule = LRScheduleConfig(warmup_steps=10, min_lr_ratio=0.1, decay_over="steps_or_time")
    assert schedule.factor(20, 1000, time_progress=1.0) == pytest.approx(0.1)
    assert schedule.factor(20, 1000, time_progress=0.5) == pytest.approx(0.55)
    assert schedule.factor(1000, 1000, time_progress=0.0) == pytest.approx(0.1)
    assert LRScheduleConfig(warmup_steps=10).factor(20, 1000, time_progress=1.0) > 0.99  # steps only


def test_flat_loss_is_the_mean_masked_cross_entropy(batch):
    torch.manual_seed(0)
    task = DiffusionTask(model_config=TINY, diffusion_config=DiffusionConfig(loss_weighting="flat"))
    generator_state = torch.get_rng_state()
    loss = task.training_step(batch, 0)
    torch.set_rng_state(generator_state)
    _, masked, token_nll = task.masked_cross_entropy(batch)
    assert loss.item() == pytest.approx((token_nll.sum() / masked.sum()).item(), rel=1e-5)
    # Untrained, every masked token costs about ln(V - 4) nats, whatever t.
    assert loss.item() == pytest.approx(math.log(task.vocab_size - 4), rel=0.05)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("num_timesteps", 10),
        ("time_sampling", "uniform"),
        ("eps", 0.01),
        ("loss_weighting", "flat"),
        ("schedule", None),
    ],
)
def test_one_token_blocks_refuse_the_schedule_and_time_options(name, value):
    # B = 1 trains the exact autoregressive NLL: no t is drawn, so none of these could change the model.
    if name == "schedule":
        options = {"schedule": LinearSchedule(), "diffusion_config": DiffusionConfig(block_size=1)}
    else:
        options = {"diffusion_config": DiffusionConfig(block_size=1, **{name: value})}
        name = f"diffusion_config.{name}"
    with pytest.raises(ValueError, match=f"{name} changes nothing with one-token blocks"):
        DiffusionTask(model_config=TINY, **options)
    blocks_of_two = replace(options["diffusion_config"], block_size=2)
    DiffusionTask(model_config=TINY, **{**options, "diffusion_config": blocks_of_two})  # there they shape training


def test_a_causal_context_trains_noisy_windows_and_the_next_token_in_one_pass(batch):
    # The sequence part of [x_0 ; windows] is encoded causally, so its states are the next-token
    # model's, untouched by the windows; and the windows' weighted masked count estimates the
    # number of tokens the bound scores: E_t[w(t) 1{masked}] = 1 for every token a window covers,
    # and (L + B - 1) / (B W) per window makes up for the windows not drawn.
    torch.manual_seed(0)
    config = DiffusionConfig(block_size=2, causal_context=True, noisy_blocks=3)
    task = DiffusionTask(model_config=TINY, schedule=LinearSchedule(), diffusion_config=config).eval()
    small = {"input_ids": batch["input_ids"][:32], "attention_mask": batch["attention_mask"][:32]}
    x0, attention_mask = small["input_ids"], small["attention_mask"]
    with torch.no_grad():
        weight, masked, masked_nll, next_nll = task._window_pass(x0, attention_mask, torch.Generator().manual_seed(1))
        _, content, causal_nll = task._next_token_cross_entropy(x0, attention_mask)
        torch.testing.assert_close(next_nll, causal_nll, atol=1e-5, rtol=1e-5)
        # So is the clean half of validation's [x_t ; x_0] pass: one pass scores both bounds.
        block_next_nll = task._block_pass(x0, attention_mask, 2, torch.Generator().manual_seed(1))[3]
        torch.testing.assert_close(block_next_nll, causal_nll, atol=1e-5, rtol=1e-5)
        torch.manual_seed(1)
        loss = task.training_loss(small)
        assert loss.item() == pytest.approx(
            (weight[masked] @ masked_nll + next_nll.sum()).item() / content.sum().item(), rel=0.5
        )  # another draw of windows and t, the same estimate
        counts = []
        for seed in range(200):
            weight, masked, _, _ = task._window_pass(x0, attention_mask, torch.Generator().manual_seed(seed))
            counts.append((weight[masked].sum() / content.sum()).item())
    # Linear schedule: w = 1/t, P(masked) = t; a window's count has variance about
    # E[1/t] ~ ln(1/eps) per token it holds; over 200 batches of ~100 windows, std ~ 0.02.
    assert sum(counts) / len(counts) == pytest.approx(1.0, abs=0.08)


def test_skipping_nonfinite_steps_stops_instead_on_several_devices():
    from lightning.pytorch import Trainer

    task = DiffusionTask(model_config=TINY, on_nonfinite_loss="skip")
    task.trainer = Trainer(accelerator="cpu", devices=1, logger=False)
    task.setup("fit")
    assert task.on_nonfinite_loss == "skip"  # one device: skipped steps are counted, nothing waits
    task.trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)  # not launched
    with pytest.warns(UserWarning, match="on_nonfinite_loss skip works on one device"):
        task.setup("fit")
    assert task.on_nonfinite_loss == "stop"  # a rank skipping alone would hang the others


@pytest.mark.parametrize(
    ("data_options", "message"),
    [
        ({"representation": "selfies"}, "the data has representation selfies, the model smiles: give both the same"),
        ({"max_length": 128}, "the data keeps sequences of up to 128 tokens, the model reads 64"),
        ({"conditions": ["qed"]}, r"the data computes conditions \['qed'\], the model reads \[\]"),
    ],
)
def test_a_fit_from_python_refuses_data_read_otherwise_than_the_model_reads(
    smiles_files, tmp_path, data_options, message
):
    # The CLI links these options; a Trainer given a task and a data module gets each twice.
    from lightning.pytorch import Trainer

    from polydiff.data.datamodule import MoleculeDataModule

    options = {"max_length": 64, "batch_size": 32, "token_cache": False} | data_options
    data = MoleculeDataModule(str(smiles_files["train"]), str(smiles_files["val"]), **options)
    trainer = Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match=message):
        trainer.fit(DiffusionTask(model_config=TINY), data)


def test_generate_samples_a_model_in_train_mode_without_dropout_and_leaves_it_in_train_mode():
    # Lightning leaves a task in train mode after a fit; polydiff.generate is called on it as it is.
    from polydiff.sampling import generate

    torch.manual_seed(0)
    task = DiffusionTask(model_config=replace(TINY, dropout=0.5), diffusion_config=DiffusionConfig(block_size=1))
    expected = list(generate(task.eval(), 8, seed=0))
    task.train()
    assert list(generate(task, 8, seed=0)) == expected and list(task.sample(8, seed=0)) == expected
    assert task.training and all(module.training for module in task.modules())


def test_each_epoch_deals_the_lines_in_a_new_order(tmp_path, moses_sample):
    from lightning.pytorch import Callback, Trainer

    from polydiff.data.datamodule import MoleculeDataModule

    class Batches(Callback):
        def __init__(self) -> None:
            self.seen: dict[int, list[tuple[int, ...]]] = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            # Each line's tokens without the pads, which depend on the batch it lands in.
            ids, kept = batch["input_ids"], batch["attention_mask"].bool()
            rows = {tuple(row[mask].tolist()) for row, mask in zip(ids, kept, strict=True)}
            self.seen.setdefault(trainer.current_epoch, []).append(tuple(sorted(map(hash, rows))))

    train, val = tmp_path / "train.smi", tmp_path / "val.smi"
    train.write_text("\n".join(moses_sample[:64]) + "\n")
    val.write_text("\n".join(moses_sample[64:80]) + "\n")
    data = MoleculeDataModule(str(train), str(val), max_length=64, batch_size=16, bucket_window=1, token_cache=False)
    batches = Batches()
    trainer = Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, callbacks=[batches],
                      default_root_dir=tmp_path)  # fmt: skip
    torch.manual_seed(0)
    trainer.fit(DiffusionTask(model_config=TINY), data)
    first, second = batches.seen[0], batches.seen[1]
    assert len(first) == len(second) == 4
    # Every line once per epoch, dealt into other batches: 16 of 64 lines share a batch by chance.
    assert sorted(h for batch in first for h in batch) == sorted(h for batch in second for h in batch)
    assert not set(first) & set(second)
