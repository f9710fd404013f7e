"""Quality per compute: a diffusion recipe and a CharRNN baseline, same budget, same machine.

    python benchmarks/quality.py --config recipes/base.yaml --budget_minutes 10 \
        --num_samples 1000 --output_dir runs/quality

1. ``polydiff fit`` on the recipe (layered on ``recipes/base.yaml``, as the README layers every
   overlay), stopped by ``--budget_minutes`` of wall-clock time
   (``trainer.max_time``; the recipe's own ``max_steps`` still applies when it comes first).
2. ``polydiff sample`` of ``--num_samples`` molecules from the best checkpoint (lowest val/nll)
   into ``DIR/samples.smi``, then ``polydiff evaluate`` into ``DIR/metrics.json``.
3. The MOSES CharRNN baseline (``polydiff.baselines.char_rnn``), trained for the same budget on
   the recipe's training data, sampled and evaluated the same way under ``DIR/charrnn/``.

Prints one JSON object (also written to ``DIR/summary.json``): the recipe, budget, steps,
tokens seen, val/nll and MOSES metrics of each model, and the speed of each generator measured
the same way: ``samples_per_s`` over the generation alone (no process start or checkpoint load),
the same number of samples at the same ``--batch_size``, on the CPU with the same threads and
allocator (jemalloc where the system has it, as ``polydiff`` runs itself). For
the diffusion model also its NFE and tokens per sequence, as ``polydiff sample`` prints them; for
the CharRNN the FLOPs of its generation per sample (``polydiff.utils.flops``; the diffusion
model's are in ``benchmarks/sampling.py``'s report on the same checkpoint).
Arguments it does not know are passed to ``polydiff fit``
(``--model.diffusion_config.loss_weighting flat``); ``--sample_options`` is passed to
``polydiff sample`` (``"--temperature 0.8"``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from polydiff.commands import positive, user_errors
from polydiff.utils.allocator import run_under_jemalloc

POLYDIFF = [sys.executable, "-m", "polydiff"]
BASE = Path(__file__).parents[1] / "recipes" / "base.yaml"


def run(command: list[str], log: Path) -> None:
    """Runs a polydiff command, its output in ``log``; a failure stops the benchmark with the log's tail."""
    print("$", shlex.join(command), file=sys.stderr, flush=True)
    with open(log, "w") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"quality: `{shlex.join(command[2:5])} ...` failed; the end of {log}:\n{log.read_text()[-3000:]}")


def recipe_value(configs: list[str], *keys: str):
    """A value from the layered recipes (later files win), None when no file sets it."""
    value = None
    for config in configs:
        node = yaml.safe_load(Path(config).read_text()) or {}
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        value = node if node is not None else value
    return value


def score(samples: Path, output: Path, n_jobs: int) -> dict[str, float]:
    run([*POLYDIFF, "evaluate", "--samples", str(samples), "--output", str(output), "--n_jobs", str(n_jobs)],
        output / "evaluate.log")  # fmt: skip
    return json.loads((output / "metrics.json").read_text())


def max_time(minutes: float) -> str:
    """A budget as Lightning's ``max_time``, dd:hh:mm:ss (a day or more included)."""
    days, seconds = divmod(round(minutes * 60), 86_400)
    return f"{days:02d}:{time.strftime('%H:%M:%S', time.gmtime(seconds))}"


def diffusion(args: argparse.Namespace, fit_options: list[str], out: Path) -> dict:
    import torch

    budget = max_time(args.budget_minutes)
    root = out / "diffusion"
    configs = [option for config in args.config for option in ("-c", config)]
    fit = [*POLYDIFF, "fit", *configs, "--trainer.max_time", budget, "--trainer.default_root_dir", str(root)]
    start = time.perf_counter()
    run([*fit, "--trainer.enable_progress_bar", "false", "--seed_everything", str(args.seed), *fit_options],
        out / "fit.log")  # fmt: skip
    fit_seconds = time.perf_counter() - start
    checkpoints = max((root / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    last = torch.load(checkpoints / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    best_nll = next(
        (float(state["best_model_score"]) for name, state in last["callbacks"].items() if "val/nll" in name), None
    )
    samples = out / "samples.smi"
    sample = [*POLYDIFF, "sample", "--ckpt_path", str(checkpoints / "checkpoints" / "best.ckpt")]
    sample += ["--num_samples", str(args.num_samples), "--output", str(samples), "--seed", str(args.seed)]
    sample += ["--batch_size", str(args.batch_size), "--device", "cpu"]
    run([*sample, *shlex.split(args.sample_options)], out / "sample.log")
    return {
        "steps": last["global_step"],
        "tokens_seen": int(last["state_dict"]["tokens_seen"]),
        "fit_seconds": round(fit_seconds, 1),
        "val/nll": best_nll,
        **sampling_report((out / "sample.log").read_text()),
        "metrics": score(samples, out, args.n_jobs),
    }


def sampling_report(log: str) -> dict[str, float]:
    """Generation seconds, samples/s, NFE and tokens per sequence, from what ``polydiff sample`` printed."""
    found = re.search(r"in ([\d.]+) s \(([\d.]+) samples/s", log)
    report = {"sample_seconds": float(found[1]), "samples_per_s": float(found[2])}
    for name, key in (("NFE per sequence", "nfe_per_sequence"), ("tokens per sequence", "tokens_per_sequence")):
        value = re.search(rf"{name}: mean ([\d.]+)", log)
        if value:
            report[key] = float(value[1])
    return report


def char_rnn(args: argparse.Namespace, out: Path) -> dict:
    import torch

    from polydiff.baselines.char_rnn import CharRNN, CharVocabulary, sample_char_rnn, train_char_rnn
    from polydiff.data.files import bundled_moses_path
    from polydiff.utils.files import read_smiles
    from polydiff.utils.flops import counted_flops

    out.mkdir(parents=True, exist_ok=True)
    train_file = recipe_value(args.config, "data", "train_file")
    column = recipe_value(args.config, "data", "smiles_column") or "SMILES"
    smiles = read_smiles(train_file, column) if train_file else read_smiles(bundled_moses_path("train"))
    torch.manual_seed(args.seed)
    vocabulary = CharVocabulary.from_smiles(smiles)
    model = CharRNN(len(vocabulary))
    stats = train_char_rnn(model, vocabulary, smiles, args.budget_minutes * 60, seed=args.seed)
    start = time.perf_counter()
    samples = sample_char_rnn(model, vocabulary, args.num_samples, batch_size=args.batch_size, seed=args.seed)
    sample_seconds = time.perf_counter() - start
    # Its arithmetic, counted on the same generation run again (counting slows it).
    _, flops = counted_flops(
        lambda: sample_char_rnn(model, vocabulary, args.num_samples, batch_size=args.batch_size, seed=args.seed)
    )
    (out / "samples.smi").write_text("".join(s + "\n" for s in samples))
    return {
        "steps": stats.steps,
        "tokens_seen": stats.tokens_seen,
        "fit_seconds": round(stats.seconds, 1),
        "train/loss": round(stats.final_loss, 4),
        "sample_seconds": round(sample_seconds, 1),
        "samples_per_s": round(len(samples) / sample_seconds, 1),
        "mflop_per_sample": round(flops / len(samples) / 1e6, 2),
        "metrics": score(out / "samples.smi", out, args.n_jobs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True, help="recipe; repeat to layer recipes")
    parser.add_argument("--budget_minutes", type=positive(float), default=10.0)
    parser.add_argument("--num_samples", type=positive(int), default=1000)
    parser.add_argument("--output_dir", default="runs/quality")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--batch_size", type=positive(int), default=256, help="sequences generated together, by both models"
    )
    parser.add_argument("--baseline", choices=("charrnn", "none"), default="charrnn")
    parser.add_argument("--sample_options", default="", help="extra options for `polydiff sample`")
    parser.add_argument(
        "--n_jobs", type=positive(int), default=os.cpu_count() or 1, help="RDKit processes for evaluate"
    )
    args, fit_options = parser.parse_known_args()
    # Every recipe is an overlay on the base recipe: `--config recipes/ar.yaml` trains base + ar.
    args.config = [str(BASE), *(c for c in args.config if Path(c).resolve() != BASE.resolve())]
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"recipe": args.config, "budget_minutes": args.budget_minutes, "num_samples": args.num_samples}
    summary["fit_options"] = fit_options
    summary["sample_options"] = args.sample_options
    summary["diffusion"] = diffusion(args, fit_options, out)
    if args.baseline == "charrnn":
        summary["charrnn"] = char_rnn(args, out / "charrnn")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see docs/conventions.md: threads
    # The CharRNN samples in this process: under the allocator ``polydiff sample`` runs under.
    run_under_jemalloc()
    with user_errors("benchmarks/quality.py"):
        main()
