"""Polymers end to end through ``polydiff.cli.main``: corpus from monomers, fit, sample, evaluate."""

import json
import re
from pathlib import Path

import pytest
import torch

from polydiff.cli import main
from polydiff.utils.files import read_smiles

ROOT = Path(__file__).parents[1]
BASE = str(ROOT / "recipes" / "base.yaml")
POLYMERS = str(ROOT / "recipes" / "data" / "polymers.yaml")
TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")

# Vinyl monomers (their homo- and alternating copolymers make most of the corpus), a lactam,
# a cyclic ether, and the diacid/diamine/diol/diisocyanate of step-growth polymers.
MONOMERS = """C=Cc1ccccc1
C=CC(=O)OC
C=C(C)C(=O)OC
C=CCl
C=CC#N
C=CC(N)=O
C=COC(C)=O
C=Cc1ccc(C)cc1
O=C1CCCCCN1
C1CO1
OCCO
OC(=O)CCCCC(=O)O
NCCCCCCN
O=C=NCCCCCCN=C=O
"""


def fit(root: Path, monomers: Path) -> Path:
    args = ["fit", "-c", BASE, "-c", POLYMERS, "-c", TINY, "--trainer.default_root_dir", str(root)]
    main([*args, "--data.polymers.monomer_file", str(monomers), "--data.batch_size", "16"])
    return root / "lightning_logs/version_0/checkpoints/last.ckpt"


def test_polymer_corpus_fit_sample_evaluate(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path / "cache"))
    monomers = tmp_path / "monomers.smi"
    monomers.write_text(MONOMERS)

    # A few hundred units hold far fewer than 1,000 of any class: the fit says so, not only a sample later.
    with pytest.warns(UserWarning, match=r"fewer than 1,000 training sequences of class .*polyamide.*will refuse them"):
        checkpoint = fit(tmp_path / "first", monomers)
    assert "building a polymer corpus" in capsys.readouterr().err
    (corpus,) = (tmp_path / "cache" / "polymers").iterdir()
    train = read_smiles(corpus / "train.csv")
    assert len(train) > 50 and all(line.count("*") == 2 for line in train)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert saved["kind"] == "polymer" and saved["conditions"] == ["class"]

    fit(tmp_path / "second", monomers)  # the same options: the corpus is read, not rebuilt
    assert "reused" in capsys.readouterr().err
    assert list((tmp_path / "cache" / "polymers").iterdir()) == [corpus]

    samples = tmp_path / "samples.smi"
    main(["sample", "--ckpt_path", str(checkpoint), "--num_samples", "40", "--output", str(samples), "--seed", "0"])
    report = tmp_path / "report"
    evaluate = ["evaluate", "--samples", str(samples), "--output", str(report), "--kind", "polymer", "--n_jobs", "1"]
    main([*evaluate, "--train", str(corpus / "train.csv")])
    assert re.search(r"40 samples, \d+ polymer-valid", capsys.readouterr().out)  # those the metrics after it are of
    metrics = json.loads((report / "metrics.json").read_text())
    assert 0 <= metrics["polymer_valid"] <= metrics["valid"] <= 1
    # The sampler never writes a third * (an end before the second is refused too, but this
    # untrained model meets dead ends, where a row ends as it stands).
    assert all(line.count("*") <= 2 for line in samples.read_text().splitlines())
    assert "Novelty" in metrics or metrics["polymer_valid"] == 0
    assert (report / "molecules.png").is_file() and (report / "properties.png").is_file()

    # ... and sampling refuses such a class, clearly.
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(["sample", "--ckpt_path", str(checkpoint), "--output", str(samples), "--condition", "class=polyamide"])
    assert refused.value.code == 1
    assert "class=polyamide: this checkpoint was trained on about" in capsys.readouterr().err
    # A template that fixes a third * could never be a repeat unit.
    with pytest.raises(SystemExit) as refused:
        main(["sample", "--ckpt_path", str(checkpoint), "--output", str(samples), "--prompt", "[*]C[*]C[MASK][*]"])
    assert refused.value.code == 1
    assert "fixes more than two *: a repeat unit has two attachment points" in capsys.readouterr().err
    # One that fixes both leaves its [MASK]s no * to write, however the untrained model would draw.
    filled = tmp_path / "filled.smi"
    template = "[*]" + "[MASK]" * 6 + "[*]"
    # No rule holds these [MASK]s: the warning says what does for a polymer (fragments are refused).
    filling = ["sample", "--ckpt_path", str(checkpoint), "--output", str(filled), "--num_samples=40"]
    with pytest.warns(UserWarning, match="a repeat unit held to them fixes only its start") as caught:
        main([*filling, "--prompt", template])
    assert not [warning for warning in caught if "--fragments" in str(warning.message)]
    assert [line.count("*") for line in filled.read_text().splitlines()] == [2] * 40
    # And so it does beside a template that fixes one, which leaves the model its second.
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{template}\n[*]C{'[MASK]' * 5}\n")
    args = ["--prompt_file", str(prompts), "--num_samples=40", "--seed=0"]
    main(["sample", "--ckpt_path", str(checkpoint), "--output", str(filled), *args])
    stars = [line.count("*") for line in filled.read_text().splitlines()]
    assert len(stars) == 80 and stars[:40] == [2] * 40
    # The second fixes only a start, so the rules hold its rows: one more *, never two (this
    # untrained model meets dead ends in five tokens, where a row ends short of its second).
    assert all(count <= 2 for count in stars[40:]) and 2 in stars[40:]


def test_polymer_kind_without_test_file_is_one_clear_error(tmp_path, capsys):
    train = tmp_path / "psmiles.smi"
    train.write_text("*CC(*)c1ccccc1\n*CCO*\n*CC(*)Cl\n" * 20)
    args = ["test", "-c", BASE, "-c", POLYMERS, "-c", TINY, "--data.train_file", str(train)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--trainer.default_root_dir", str(tmp_path)])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "data.test_file" in error[0]
