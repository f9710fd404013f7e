"""How well a checkpoint's property head knows what a prefix will become.

    python benchmarks/property_head.py --ckpt_path runs/steered/lightning_logs/version_0/checkpoints/best.ckpt

For ``--num_molecules`` MOSES test molecules, encodes each once without a condition (the
unconditional causal states steering reads, ``polydiff.sampling.steering``) and reads the head's
Gaussian (mean, variance) for every condition at a quarter, half and three quarters of the way
through the molecule's tokens and at its last token. Prints JSON: per property and point, R^2 of
the mean against the RDKit value, its mean squared error and the head's mean predicted variance
(both in standard deviations squared: a calibrated head has the two alike).
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from polydiff.chem.conditions import data_columns, property_values
from polydiff.commands import positive, user_errors
from polydiff.data.files import bundled_moses_path
from polydiff.diffusion.blocks import sampling_mask
from polydiff.tasks.inference import load
from polydiff.utils.files import read_smiles

POINTS = (0.25, 0.5, 0.75, 1.0)


def test_molecules(task, num_molecules: int) -> tuple[list[str], list[str]]:
    """The first ``num_molecules`` MOSES test molecules that ``task``'s representation can write, as
    SMILES and as the model reads them (SELFIES for a SELFIES model)."""
    pairs = ((s, task.representation.to_model(s)) for s in read_smiles(bundled_moses_path("test"), "SMILES"))
    kept = [(smiles, text) for smiles, text in pairs if text is not None][:num_molecules]
    return [smiles for smiles, _ in kept], [text for _, text in kept]


@torch.inference_mode()
def head_scores(ckpt_path: str, num_molecules: int, batch_size: int = 500) -> dict:
    task = load(ckpt_path, "cpu")
    if task.property_head is None:
        raise SystemExit(f"{ckpt_path} has no property head (a draft-head model fitted with data.conditions)")
    if task.kind == "polymer":
        raise SystemExit(f"{ckpt_path} is a polymer model: this benchmark reads MOSES molecules")
    if data_columns(task.conditions):
        raise SystemExit(
            f"{ckpt_path} is conditioned on {', '.join(data_columns(task.conditions))}, read from its training "
            "CSV: this benchmark scores the properties RDKit computes for MOSES molecules"
        )
    smiles, texts = test_molecules(task, num_molecules)
    mean, std = task.condition_statistics[0].numpy(), task.condition_statistics[1].numpy()
    truth = (property_values(smiles, task.conditions) - mean) / std
    predicted = {point: ([], []) for point in POINTS}
    for start in range(0, len(smiles), batch_size):
        encoded = task.tokenizer(texts[start : start + batch_size], padding=True, return_tensors="pt")
        x, mask = encoded["input_ids"], encoded["attention_mask"]
        content = task.content(x)
        free = torch.full((len(x), len(task.condition_columns)), math.nan)
        states = task.model.encode(x, sampling_mask(content, mask.bool() & ~content, 1), None, None, free)
        read = content.clone()
        read[:, 0] = True  # [CLS], then the molecule's tokens
        head_mean, log_variance = task.property_head(states, read)
        molecule = content.sum(-1) - 1  # tokens before [SEP]
        rows = torch.arange(len(x))
        for point in POINTS:
            at = (point * molecule).round().long().clamp(min=1)
            predicted[point][0].append(head_mean[rows, at].numpy())
            predicted[point][1].append(log_variance[rows, at].exp().numpy())
    report: dict = {"checkpoint": ckpt_path, "molecules": len(smiles), "properties": {}}
    for name in task.conditions:
        k = task.condition_columns.index(name)
        known = ~np.isnan(truth[:, k])
        y = truth[known, k]
        rows = {}
        for point, (means, variances) in predicted.items():
            m, v = np.concatenate(means)[known, k], np.concatenate(variances)[known, k]
            error = float(((m - y) ** 2).mean())
            rows[f"{point:g}"] = {"r2": 1 - error / float(y.var()), "mse": error, "predicted_variance": float(v.mean())}
        report["properties"][name] = rows
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="a draft-head checkpoint fitted with data.conditions")
    parser.add_argument("--num_molecules", type=positive(int), default=2000)
    args = parser.parse_args(argv)
    print(json.dumps(head_scores(args.ckpt_path, args.num_molecules), indent=2))


if __name__ == "__main__":
    with user_errors("benchmarks/property_head.py"):
        main()
