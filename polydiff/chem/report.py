"""The evaluation report: a metrics table, metrics.json, property plots and a molecule grid."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
from rich.table import Table

from polydiff.chem.metrics import Evaluation
from polydiff.chem.molecules import PROPERTIES, parse, properties
from polydiff.chem.reference import ReferenceStats
from polydiff.utils.files import partial_path

PLOTTED = {
    "weight": "molecular weight (Da)",
    "logP": "logP (Crippen)",
    "QED": "QED",
    "SA": "SA score",
    "TPSA": "TPSA (Å²)",
    "length": "canonical SMILES length (characters)",
}
DESCRIPTIONS = {
    "valid": "parsed by RDKit",
    "polymer_valid": "two *, single-bonded, joined",
    "IntDiv": "1 - mean pairwise Tanimoto",
    "IntDiv2": "1 - mean RMS Tanimoto",
    "Filters": "pass MCF, PAINS, atom, charge filters",
    "Novelty": "distinct valid not in training set",
    "logP": "Wasserstein distance to test set",
    "SA": "Wasserstein distance to test set",
    "QED": "Wasserstein distance to test set",
    "weight": "Wasserstein distance to test set",
}
PREFIX_DESCRIPTIONS = {
    "unique": "distinct among the first k valid",
    "FCD": "Fréchet ChemNet Distance",
    "SNN": "mean nearest-neighbour Tanimoto",
    "Frag": "BRICS fragment cosine similarity",
    "Scaf": "scaffold cosine similarity",
}


def metrics_table(metrics: dict[str, float], title: str = "MOSES metrics") -> Table:
    """A rich table of metric, value and what it measures."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("what", style="dim")
    for key, value in metrics.items():
        description = DESCRIPTIONS.get(key) or PREFIX_DESCRIPTIONS.get(key.split("/")[0].split("@")[0], "")
        if "polymer_valid" in metrics and key.startswith("unique@"):  # a polymer's are counted among its units
            description = description.replace("valid", "polymer-valid")
        table.add_row(key, "n/a" if math.isnan(value) else f"{value:.4f}", description)
    return table


def write_metrics(metrics: dict[str, float], path: str | Path) -> None:
    """Writes metrics as JSON (undefined values as null, so the file is strict JSON)."""
    clean = {key: None if math.isnan(value) else value for key, value in metrics.items()}
    Path(path).write_text(json.dumps(clean, indent=2) + "\n")


def histogram_bins(series: list[tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
    """Shared bin edges for histograms of several (values, weights) series.

    The range covers the central 99% of *each* series, so a distribution far from the others
    (samples guided to a property the reference rarely has) is drawn where it lies rather than
    piled into an edge bin; the last 0.5% on either side of a series of 200 values or more is
    left off the axis.
    Whole-number values (lengths) get one bin per value, or per few.
    """
    lows, highs = [], []
    for values, weights in series:
        if len(values):
            repeated = values if weights is None else np.repeat(values, weights)
            # Under 200 values, 0.5% is less than one: the whole series is drawn.
            low, high = np.percentile(repeated, [0.5, 99.5]) if len(repeated) >= 200 else (min(repeated), max(repeated))
            lows.append(low)
            highs.append(high)
    low, high = min(lows), max(highs)
    if all(np.all(values == np.round(values)) for values, _ in series):
        low, high = np.floor(low), np.ceil(high)
        step = max(1, int(np.ceil((high - low) / 50)))
        return np.arange(low - 0.5, high + step + 0.5, step)
    return np.linspace(low - 0.5, high + 0.5, 2) if low == high else np.linspace(low, high, 51)


def plot_properties(evaluation: Evaluation, reference: ReferenceStats | None, path: str | Path) -> None:
    """Histograms of generated vs reference MW, logP, QED, SA, TPSA and SMILES length, as a PNG.

    Each series is drawn as a density over shared bins (``histogram_bins``); the legend gives its
    size and how many of its values fall outside the axis.

    Args:
        evaluation: the result of ``evaluate`` (its distinct valid molecules, weighted by count).
        reference: reference statistics to draw beside them, if any.
        path: the PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for axis, (name, label) in zip(axes.flat, PLOTTED.items(), strict=True):
        column = PROPERTIES.index(name)
        generated = evaluation.properties[:, column]
        keep = np.isfinite(generated)
        series = [("generated", generated[keep], evaluation.counts[keep])]
        if reference is not None:
            values = reference.properties[:, column]
            series.insert(0, ("reference", values[np.isfinite(values)], None))
        series = [(source, values, weights) for source, values, weights in series if len(values)]
        if series:
            bins = histogram_bins([(values, weights) for _, values, weights in series])
            for source, values, weights in series:
                weights = np.ones(len(values), dtype=np.int64) if weights is None else weights
                outside = int(weights[(values < bins[0]) | (values > bins[-1])].sum())
                legend = f"{source} ({int(weights.sum())}" + (f"; {outside} off the axis)" if outside else ")")
                style = {"density": True, "histtype": "stepfilled", "alpha": 0.45}
                axis.hist(values, bins=bins, weights=weights, label=legend, **style)
            axis.legend(fontsize=8)
        axis.set_xlabel(label)
        axis.set_yticks([])
    figure.suptitle("Property distributions: generated vs reference")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_molecules(smiles: list[str], path: str | Path, count: int = 24, per_row: int = 6) -> None:
    """A grid image of the first ``count`` molecules (RDKit's MolsToGridImage), each labelled with
    its logP, QED and molecular weight, as a PNG.

    Args:
        smiles: molecules to draw, e.g. the valid samples in sample order.
        path: the PNG file to write.
        count: how many to draw.
        per_row: molecules per row.
    """
    from rdkit.Chem import Draw

    mols = [mol for mol in (parse(s) for s in smiles[:count]) if mol is not None]
    if not mols:
        from PIL import Image, ImageDraw

        image = Image.new("RGB", (400, 100), "white")
        ImageDraw.Draw(image).text((20, 40), "no valid samples to draw", fill="black")
        image.save(path)
        return
    # Each with its number and the properties guidance targets (logP, QED, MW), so that a grid of
    # guided samples shows how close they came.
    legends = []
    for number, mol in enumerate(mols, 1):
        logp, _, qed, weight, *_ = properties(mol, "")
        legends.append(f"{number}: logP {logp:.2f}, QED {qed:.2f}, MW {weight:.0f}")
    # Each at its own scale: at one scale, one long chain among them shrinks every other to a dot.
    options = Draw.MolDrawOptions()
    options.drawMolsSameScale = False
    image = Draw.MolsToGridImage(mols, molsPerRow=per_row, subImgSize=(250, 200), legends=legends, drawOptions=options)
    image.save(path)


def write_report(
    evaluation: Evaluation, reference: ReferenceStats | None, output: str | Path, inputs: dict | None = None
) -> dict[str, Path]:
    """Writes metrics.json, properties.png and molecules.png into ``output``, and inputs.json (what
    was measured: ``inputs``) where given.

    The files are written into a hidden folder beside ``output`` and moved in once all are
    written, metrics.json last: a run stopped midway leaves an earlier report as it was, never
    one file of each run.

    Args:
        evaluation: the result of ``evaluate``.
        reference: reference statistics for the property plots, if any.
        output: the folder (created if missing).
        inputs: what the metrics are of (the samples, their counts, the reference sets), as JSON:
            a number copied from metrics.json means little without them.

    Returns:
        The written files by name.
    """
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    partial = partial_path(folder.resolve())  # resolved: "." has no name to put one beside
    shutil.rmtree(partial, ignore_errors=True)  # left by a run stopped midway
    partial.mkdir()
    names = ("properties.png", "molecules.png", "metrics.json")  # the order they are moved in
    if inputs is not None:
        names = ("inputs.json", *names)
        (partial / "inputs.json").write_text(json.dumps(inputs, indent=2) + "\n")
    write_metrics(evaluation.metrics, partial / "metrics.json")
    plot_properties(evaluation, reference, partial / "properties.png")
    plot_molecules(evaluation.valid, partial / "molecules.png")
    for name in names:
        (partial / name).replace(folder / name)
    if inputs is None:  # an earlier run's would say what these metrics are not of
        (folder / "inputs.json").unlink(missing_ok=True)
    partial.rmdir()
    return {name: folder / name for name in ("metrics.json", *names[:-1])}
