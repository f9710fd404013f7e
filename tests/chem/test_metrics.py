"""MOSES metrics and polymer validity on hand-checked molecules (real RDKit and ChemNet, tiny inputs)."""

import math
import re
from collections import Counter

import numpy as np
import pytest
import torch
from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import AllChem

from polydiff.chem import fcd as chemnet
from polydiff.chem.metrics import (
    _intersections,
    cosine_similarity,
    evaluate,
    fraction_unique,
    internal_diversity,
    nearest_neighbour_similarity,
    novelty,
)
from polydiff.chem.molecules import (
    canonical_polymer,
    canonical_sample,
    fingerprint,
    is_polymer,
    molecule_features,
    parse,
    passes_filters,
    polymer_frames,
    properties,
)
from polydiff.chem.reference import (
    bundled_fcd,
    bundled_reference,
    compute_reference,
    load_reference,
    reference_stats,
    save_reference,
    training_set,
)
from polydiff.data.files import bundled_moses_path
from polydiff.utils.files import read_smiles

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path / "cache"))


def fingerprints(*smiles: str) -> np.ndarray:
    return np.stack([np.frombuffer(fingerprint(parse(s)), dtype=np.uint8) for s in smiles])


def tanimoto(a: str, b: str) -> float:
    # MOSES's definition through RDKit's own (deprecated) bit-vector function and similarity.
    fp = [AllChem.GetMorganFingerprintAsBitVect(Chem.MolFromSmiles(s), 2, nBits=1024) for s in (a, b)]
    return DataStructs.TanimotoSimilarity(*fp)


def test_valid_counts_empty_and_unparsable_lines_and_unique_uses_canonical_smiles():
    samples = ["CCO", "OCC", "C(O)C", "", "C1CC", "c1ccccc1"]
    result = evaluate(samples, ks=(1000, 3))
    assert result.metrics["valid"] == pytest.approx(4 / 6)
    assert result.valid == ["CCO", "CCO", "CCO", "c1ccccc1"]
    assert result.metrics["unique@1000"] == pytest.approx(2 / 4)
    assert result.metrics["unique@3"] == pytest.approx(1 / 3)  # the first 3 valid are one molecule
    assert any("unique@1000" in note for note in result.notes)  # fewer valid samples than k, as MOSES warns
    assert result.counts.tolist() == [3, 1]
    assert "FCD/Test" not in result.metrics and "Novelty" not in result.metrics


@pytest.mark.parametrize("n", [1, 2, 7])
def test_all_duplicates_are_one_over_n_unique(n):
    assert evaluate(["c1ccccc1O"] * n).metrics["unique@1000"] == pytest.approx(1 / n)
    assert fraction_unique([]) != fraction_unique([])  # NaN without valid samples


def test_no_valid_sample_gives_zero_validity_and_undefined_metrics():
    metrics = evaluate(["", "C1CC", "xyz"]).metrics
    assert metrics["valid"] == 0
    assert math.isnan(metrics["unique@1000"]) and math.isnan(metrics["IntDiv"]) and math.isnan(metrics["Filters"])
    with pytest.raises(ValueError, match="no samples"):
        evaluate([])


def test_fcd_left_undefined_says_why(moses_sample):
    reference = compute_reference(moses_sample[:20])
    one = evaluate(["CCO", "xyz"], reference, ks=(2,))
    assert math.isnan(one.metrics["FCD/Test"]) and "FCD needs at least 2 valid samples (a covariance): n/a" in one.notes
    two = evaluate(["CCO", "c1ccccc1"], reference, ks=(2,)).notes
    assert not any("n/a" in note for note in two)
    assert any(note.startswith("FCD from 2 valid samples reads higher than from more") for note in two)
    single = evaluate(["CCO", "c1ccccc1"], compute_reference(moses_sample[:1]), ks=(2,))
    assert "FCD/Test needs a reference of at least 2 molecules (a covariance): n/a" in single.notes


def test_a_sample_too_long_for_rdkit_is_invalid_and_noted_not_a_crash():
    # A chain of 20,000 atoms ended the process in RDKit's SMILES writer (a segmentation fault).
    result = evaluate(["C" * 20_000, "CCO"], ks=(2,))
    assert result.metrics["valid"] == 0.5
    assert "1 samples longer than 5,000 characters are counted invalid, unread" in result.notes


def test_novelty_counts_distinct_molecules_against_canonical_training_set():
    assert novelty(["CCO", "CCO", "c1ccccc1"], {"CCO"}) == pytest.approx(0.5)
    assert evaluate(["OCC", "c1ccccc1", "c1ccccc1"], train={"CCO"}).metrics["Novelty"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("psmiles", "valid"),
    [
        ("*CC(*)c1ccccc1", True),  # polystyrene
        ("*CC*", True),  # polyethylene
        ("*C=C*", True),  # the bonds to * are single
        ("*c1ccc(*)cc1", True),  # single bonds onto aromatic atoms
        ("[*]CC[*]", True),
        ("*=CC*", False),  # a double bond to *
        ("CC*", False),  # one *
        ("*C(*)(*)C", False),  # three
        ("*1CC1*", False),  # a * with two bonds
        ("**", False),  # two * bonded to each other: no unit between them
        ("*C*", True),  # a one-atom unit
        ("*C.C*", False),  # two ends and no backbone between them
        ("*CC(*)[N+](C)(C)C.[Cl-]", True),  # a counter-ion apart from the backbone
        ("CCO", False),
        ("*CC(*", False),  # does not parse
        ("", False),
    ],
)
def test_polymer_validity(psmiles, valid):
    assert is_polymer(parse(psmiles)) is valid


def test_polymer_mode_reports_polymer_valid_and_skips_filters():
    samples = ["*CC(*)c1ccccc1", "*CC*", "CC*", "CCO", "", "*C(*)(*)C", "C(*)C*"]
    metrics = evaluate(samples, train={"*CC*"}, kind="polymer").metrics
    assert metrics["valid"] == pytest.approx(6 / 7)
    assert metrics["polymer_valid"] == pytest.approx(3 / 7)
    assert metrics["unique@1000"] == pytest.approx(2 / 3)  # C(*)C* is *CC* again
    assert metrics["Novelty"] == pytest.approx(1 / 2)
    assert "Filters" not in metrics


def test_check_returns_canonical_smiles_and_polymer_flag():
    assert canonical_sample("OCC") == ("CCO", False)
    assert canonical_sample("C(*)C*") == ("*CC*", True)
    assert canonical_sample("C1CC") == (None, False)


@pytest.mark.parametrize(
    "frames",
    [
        ["*CCO*", "*COC*", "*OCC*", "[*]OCC[*]"],  # poly(ethylene oxide)
        ["*NCCCCCC(*)=O", "*CCCCCNC(=O)*", "*C(=O)NCCCCC*", "*CCC(=O)NCCC*"],  # nylon-6
        ["*CC=CC*", "*C=CCC*"],  # 1,4-polybutadiene
        ["*Oc1ccc(C(C)(C)c2ccc(OC(*)=O)cc2)cc1", "*C(=O)Oc1ccc(C(C)(C)c2ccc(O*)cc2)cc1"],  # BPA polycarbonate
        ["*OC[C@@H](C)*", "*C[C@@H](C)O*", "*CO[C@@H](*)C"],  # isotactic poly(propylene oxide)
        ["*C/C=C/C*", "*/C=C/CC*", "*\\C=C\\CC*"],  # trans-1,4-polybutadiene
    ],
    ids=["PEO", "nylon-6", "polybutadiene", "polycarbonate", "isotactic PPO", "trans-polybutadiene"],
)
def test_every_frame_of_a_chain_has_one_canonical_psmiles(frames):
    canonicals = {canonical_polymer(parse(frame)) for frame in frames}
    assert len(canonicals) == 1
    (unit,) = canonicals
    assert canonical_polymer(parse(unit)) == unit and is_polymer(parse(unit))


def test_canonical_psmiles_keeps_distinct_polymers_apart():
    # Ring bonds, double bonds and one-atom backbones are no frames.
    assert canonical_polymer(parse("*c1ccc(*)cc1")) == "*c1ccc(*)cc1"
    assert canonical_polymer(parse("*C(F)(F)*")) == "*C(*)(F)F"
    assert canonical_polymer(parse("*C[C@H](*)C")) == "*C[C@H](*)C"
    assert len({canonical_polymer(parse(s)) for s in ("*CCO*", "*CCCO*", "*CC(C)O*", "*CCN*")}) == 4
    # Labels and charges on a star name an end: every frame writes it plain.
    assert set(polymer_frames(parse("[*-]CCO[*+]"))) == {"*CCO*", "*COC*"}
    # Enantiomeric units, cis against trans, and a doubled unit are other polymers (or, for the last, written so).
    assert canonical_polymer(parse("*OC[C@@H](C)*")) != canonical_polymer(parse("*OC[C@H](C)*"))
    assert canonical_polymer(parse("*C/C=C/C*")) != canonical_polymer(parse("*C/C=C\\C*"))
    assert canonical_polymer(parse("*CCCC*")) == "*CCCC*"


def _cyclic(unit: str, copies: int = 3) -> str:
    # The ring of `copies` units, each one's second star bonded to the next one's first: two frames
    # of one polymer close into the same ring, stereo included (a check apart from polymer_frames).
    pieces = []
    for copy in range(copies):
        piece = Chem.MolFromSmiles(unit)
        first, second = (atom for atom in piece.GetAtoms() if atom.GetAtomicNum() == 0)
        first.SetAtomMapNum(copy + 1)
        second.SetAtomMapNum((copy + 1) % copies + 1)
        pieces.append(piece)
    joined = pieces[0]
    for piece in pieces[1:]:
        joined = Chem.CombineMols(joined, piece)
    return Chem.MolToSmiles(Chem.molzip(joined))


@pytest.mark.parametrize(
    "unit",
    [
        "*OC[C@@H](C)*",
        "*C[C@H](F)C[C@@H](Cl)*",  # two stereocentres on the backbone
        "*C/C=C(/C)CO*",  # an E/Z bond beside a frame
        "*/C=C/[C@H](C)C*",  # both at once, the E/Z bond at a star
        "*C(=O)N[C@@H](C)C(=O)N[C@H](CO)C*",
    ],
)
def test_every_frame_keeps_the_units_stereo(unit):
    frames = polymer_frames(parse(unit))
    assert len(set(frames)) > 1
    assert {_cyclic(frame) for frame in frames} == {_cyclic(unit)}
    assert {canonical_polymer(parse(frame)) for frame in frames} == {canonical_polymer(parse(unit))}


def test_polymer_mode_counts_frames_of_one_chain_as_one_unit():
    metrics = evaluate(["*CCO*", "*OCC*", "*COC*", "*CC(*)Cl"], train={"*CCO*"}, kind="polymer").metrics
    assert metrics["unique@1000"] == pytest.approx(2 / 4)
    assert metrics["Novelty"] == pytest.approx(1 / 2)
    # With stereo too: three polymers, each written from two backbone bonds.
    stereo = ["*OC[C@@H](C)*", "*C[C@@H](C)O*", "*C/C=C/C*", "*/C=C/CC*", "*OCC(C)*", "*CC(C)O*"]
    metrics = evaluate(stereo, train={canonical_polymer(parse("*C/C=C/C*"))}, kind="polymer").metrics
    assert metrics["unique@1000"] == pytest.approx(3 / 6)
    assert metrics["Novelty"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("smiles", "passes"),
    [
        ("CCO", True),
        ("c1ccccc1", True),
        ("C[N+](C)(C)C", False),  # a charge
        ("CCI", False),  # iodine is not among C N S O F Cl Br H
        ("C1CCCCCCC1", False),  # an 8-membered ring
        ("CCCCl", False),  # MCF: CH2 next to a halogen
        ("N=Nc1ccccc1", False),
    ],
)
def test_moses_filters(smiles, passes):
    assert passes_filters(parse(smiles)) is passes


def test_filter_screen_never_skips_a_matching_query(moses_sample):
    from polydiff.chem.molecules import _filters

    # molecules that match MCF or PAINS queries, and ordinary ones
    smiles = ["CCCCl", "N=Nc1ccccc1", "O=C1C=CC(=O)C=C1", "Oc1ccc(O)cc1", "C=CC(=O)C", *moses_sample[:150]]
    for molecule in (Chem.AddHs(parse(s)) for s in smiles):
        screen = Chem.PatternFingerprint(molecule)
        for query, bits in _filters():
            if molecule.HasSubstructMatch(query):
                assert DataStructs.AllProbeBitsMatch(bits, screen)


def test_properties_of_known_molecules():
    log_p, sa, qed, weight, tpsa, length = properties(parse(ASPIRIN), ASPIRIN)
    assert weight == pytest.approx(180.159, abs=1e-3)
    assert qed == pytest.approx(0.550, abs=1e-3)
    assert log_p == pytest.approx(1.310, abs=1e-3)
    assert tpsa == pytest.approx(63.6, abs=0.1)
    assert 1 <= sa <= 3  # aspirin is easy to make
    assert length == len(ASPIRIN)


def test_descriptors_follow_moses():
    features = molecule_features("O=C(NC1CC1)c1ccc2ccccc2c1")
    assert features.smiles == "O=C(NC1CC1)c1ccc2ccccc2c1"
    assert features.scaffold == "O=C(NC1CC1)c1ccc2ccccc2c1"  # 3 rings, no side chains to strip
    assert molecule_features("c1ccccc1CC").scaffold is None  # MOSES counts scaffolds of two rings or more only
    # the output of MOSES's own fragmenter for this molecule
    assert features.fragments == ["[1*]C([6*])=O", "[15*]C1CC1", "[16*]c1ccc2ccccc2c1", "[5*]N[5*]"]
    assert molecule_features("C1CC") is None


def test_fingerprint_matches_rdkit_morgan_bit_vector():
    mol = parse(ASPIRIN)
    bits = np.unpackbits(np.frombuffer(fingerprint(mol), dtype=np.uint8))
    expected = AllChem.GetMorganFingerprintAsBitVect(mol, 2, nBits=1024)
    assert np.flatnonzero(bits).tolist() == list(expected.GetOnBits())


def test_internal_diversity_of_two_molecules():
    a, b = "c1ccccc1O", "c1ccccc1N"
    t = tanimoto(a, b)
    fps = fingerprints(a, b)
    assert internal_diversity(fps, np.array([1, 1])) == pytest.approx((1 - t) / 2)  # self-pairs count, as in MOSES
    assert internal_diversity(fps, np.array([1, 1]), p=2) == pytest.approx(1 - math.sqrt((1 + t * t) / 2))
    assert internal_diversity(fps[:1], np.array([5])) == pytest.approx(0)


def test_counts_weigh_like_repeated_rows():
    fps, reference = fingerprints("CCO", "c1ccccc1O", "CC(=O)N"), fingerprints("CCN", "c1ccccc1", ASPIRIN)
    counts = np.array([3, 1, 2])
    repeated = np.repeat(fps, counts, axis=0)
    ones = np.ones(len(repeated), dtype=np.int64)
    for p in (1, 2):
        assert internal_diversity(fps, counts, p) == pytest.approx(internal_diversity(repeated, ones, p))
    assert nearest_neighbour_similarity(fps, counts, reference) == pytest.approx(
        nearest_neighbour_similarity(repeated, ones, reference)
    )


def test_nearest_neighbour_similarity_is_mean_best_tanimoto():
    reference = fingerprints("c1ccccc1O", "CCCCCC")
    expected = (1.0 + max(tanimoto("c1ccccc1N", "c1ccccc1O"), tanimoto("c1ccccc1N", "CCCCCC"))) / 2
    snn = nearest_neighbour_similarity(fingerprints("c1ccccc1O", "c1ccccc1N"), np.array([1, 1]), reference)
    assert snn == pytest.approx(expected)


def test_bit_intersections_are_exact_counts():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 2, (37, 1024), generator=generator, dtype=torch.int8)
    b = torch.randint(0, 2, (53, 1024), generator=generator, dtype=torch.int8)
    common = (a.bool().unsqueeze(1) & b.bool().unsqueeze(0)).sum(-1)  # integer counts, pair by pair
    assert torch.equal(_intersections(a, b), common.float())


def test_cosine_similarity_of_counts():
    assert cosine_similarity(Counter(a=1, b=1), Counter(a=2)) == pytest.approx(1 / math.sqrt(2))
    assert cosine_similarity(Counter(a=3), Counter(a=1)) == pytest.approx(1)
    assert math.isnan(cosine_similarity(Counter(), Counter(a=1)))


def test_chemnet_encoding_matches_fcd_package_and_moses_quirks():
    from fcd.utils import get_one_hot

    for smiles in ("CC(=O)Oc1ccccc1C(=O)O", "ClCCBr", "C[Si](C)(C)c1ccncc1", "O=S(=O)(N)c1ccc(F)cc1"):
        expected = get_one_hot(smiles, chemnet.PAD_LENGTH) / len(chemnet.VOCABULARY)
        assert np.allclose(chemnet.one_hot_batch([smiles])[0].T.numpy(), expected)
    assert np.array_equal(chemnet.encode("CC.O"), chemnet.encode("CC"))  # fcd_torch stops at the first "."
    assert len(chemnet.encode("C" * 500)) == chemnet.PAD_LENGTH  # cut, with the end marker last


def test_frechet_distance_of_known_gaussians():
    dimension = 4
    a = chemnet.FCDStatistics(np.zeros(dimension), np.eye(dimension))
    b = chemnet.FCDStatistics(np.full(dimension, 0.5), 4 * np.eye(dimension))
    # |mu_a - mu_b|^2 + tr(I) + tr(4I) - 2 tr(2I) = 1 + 4 + 16 - 16
    assert chemnet.frechet_distance(a, b) == pytest.approx(5.0)
    assert chemnet.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fcd_of_a_set_with_itself_is_zero_and_grows_with_difference(moses_sample):
    reference = compute_reference(moses_sample[:40])
    same = evaluate(moses_sample[:40], reference).metrics
    assert same["FCD/Test"] == pytest.approx(0, abs=1e-4)  # 40 molecules: a rank-deficient covariance
    assert same["SNN/Test"] == pytest.approx(1) and same["Frag/Test"] == pytest.approx(1)
    assert same["logP"] == pytest.approx(0) and same["weight"] == pytest.approx(0)
    other = evaluate(["CCO", "CCCO", "CCCCO", "CCN", "CCCN", "c1ccccc1"], reference).metrics
    assert other["FCD/Test"] > 10 and other["SNN/Test"] < 0.5


def test_reference_statistics_round_trip_and_cache(tmp_path, moses_sample):
    path = tmp_path / "ref.smi"
    path.write_text("\n".join(moses_sample[:30]) + "\nnot_a_smiles\n")
    stats = reference_stats(path, n_jobs=1)
    assert stats.size == 30
    cached = list((tmp_path / "cache").glob("reference-ref-*.npz"))
    assert len(cached) == 1
    again = reference_stats(path, n_jobs=1)  # read from the cache
    save_reference(stats, tmp_path / "copy.npz")
    for loaded in (again, load_reference(tmp_path / "copy.npz")):
        assert loaded.fragments == stats.fragments and loaded.scaffolds == stats.scaffolds
        assert np.array_equal(loaded.fingerprints, stats.fingerprints)
        assert np.array_equal(loaded.properties, stats.properties, equal_nan=True)
        assert np.allclose(loaded.fcd.sigma, stats.fcd.sigma)


def test_training_set_is_canonical_and_cached(tmp_path):
    path = tmp_path / "train.smi"
    path.write_text("OCC\nc1ccccc1\nC1CC\n")
    assert training_set(path, n_jobs=1) == {"CCO", "c1ccccc1"}
    assert len(list((tmp_path / "cache").glob("train-train-*.txt.gz"))) == 1
    assert training_set(path, n_jobs=1) == {"CCO", "c1ccccc1"}


def test_polymer_training_set_holds_canonical_psmiles(tmp_path):
    path = tmp_path / "polymers.smi"
    path.write_text("*NCCCCCC(*)=O\n*CC(*)Cl\n")  # nylon-6, PVC
    assert training_set(path, n_jobs=1, polymer=True) == {"*CCCC(=O)NCC*", "*CC(*)Cl"}
    assert training_set(path, n_jobs=1) == {"*NCCCCCC(*)=O", "*CC(*)Cl"}  # cached apart: RDKit's own form


def test_training_set_as_stored_takes_the_lines_as_written(tmp_path):
    path = tmp_path / "train.smi"
    path.write_text("CCO\nOCC\nc1ccccc1\n")
    train = training_set(path, as_stored=True)
    assert "CCO" in train and "OCC" in train and "c1ccccc1" in train and "CCN" not in train
    assert not (tmp_path / "cache").exists()  # nothing canonicalized, nothing cached


def test_bundled_fcd_statistics_match_the_bundled_moses_files():
    for split in ("test", "test_scaffolds"):
        stats = bundled_fcd(bundled_moses_path(split))
        assert stats is not None, f"polydiff/chem/data/moses_fcd.npz lacks the statistics of {split}.csv.gz"
        assert stats.mu.shape == (512,) and stats.sigma.shape == (512, 512)


@pytest.mark.parametrize("split", ["test", "test_scaffolds"])
def test_bundled_reference_statistics_match_the_bundled_moses_files(tmp_path, split):
    path = bundled_moses_path(split)
    shipped = bundled_reference(path)
    assert shipped is not None, f"polydiff/chem/data lacks the reference statistics of {split}.csv.gz"
    lines = read_smiles(path)
    assert shipped.size == len(lines)  # every bundled MOSES molecule is valid
    assert shipped.fcd is not None and shipped.fcd.mu.shape == (512,)
    assert reference_stats(path) is not None and not (tmp_path / "cache").exists()  # shipped: nothing cached
    # The head of the file, computed here, is part of what ships: the same properties (row for row,
    # to float32's precision), fingerprints, fragments and scaffolds.
    head = compute_reference(lines[:60], chemnet=False)  # as the maintainer's command computes it
    assert head.fcd is None
    np.testing.assert_allclose(shipped.properties[:60], head.properties, rtol=1e-6)
    shipped_fingerprints = {row.tobytes() for row in shipped.fingerprints}
    assert all(row.tobytes() in shipped_fingerprints for row in head.fingerprints)
    assert all(shipped.fragments[key] >= count for key, count in head.fragments.items())
    assert all(shipped.scaffolds[key] >= count for key, count in head.scaffolds.items())
    assert sum(shipped.scaffolds.values()) > len(lines) // 2


def test_parallel_workers_give_the_same_metrics(moses_sample):
    samples = [*moses_sample[:250], "", "C1CC", *moses_sample[:10]]
    assert evaluate(samples, n_jobs=2).metrics == evaluate(samples, n_jobs=1).metrics


def test_scoring_leaves_the_callers_rdkit_log_as_it_was(capfd):
    RDLogger.EnableLog("rdApp.*")  # as a script's own is (a test before this one may have silenced it)
    evaluate(["CCO", "C1CC"])  # RDKit's own complaint about C1CC is not shown
    assert "unclosed ring" not in capfd.readouterr().err
    Chem.MolFromSmiles("C1CC")
    assert "unclosed ring" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        ({"samples": "CCO"}, TypeError, "not one string: evaluate(['CCO']) scores one"),  # not three samples C, C, O
        ({"samples": ["CCO", None]}, TypeError, "samples must be strings (an invalid one as ''), got None"),
        ({"samples": ["CCO"], "kind": "polymers"}, ValueError, "kind must be one of molecule, polymer"),
        ({"samples": ["CCO"], "ks": 1000}, TypeError, "ks must be a list (each item an integer), got 1000"),
        ({"samples": iter(["CCO"])}, TypeError, "samples must be a list of SMILES (list(...) of an iterator)"),
    ],
)
def test_samples_and_options_evaluate_cannot_read_are_refused(given, error, message):
    with pytest.raises(error, match=re.escape(message)):
        evaluate(**given)
