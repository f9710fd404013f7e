import pytest
from tokenizers import Tokenizer

from polydiff.data.tokenizer import SPECIAL_TOKENS, build_smiles_tokenizer, bundled_tokenizer_path, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("smiles")


@pytest.mark.parametrize("name", ["smiles", "smiles_full"])
def test_bundled_files_are_what_the_code_builds(name):
    bundled = Tokenizer.from_file(str(bundled_tokenizer_path(name)))
    assert bundled.to_str() == build_smiles_tokenizer(full=name == "smiles_full").to_str()


def test_the_common_vocabulary_is_small_and_the_wide_one_keeps_rare_atoms(tokenizer):
    wide = load_tokenizer("smiles_full")
    assert len(tokenizer) == 126 and len(wide) == 1467
    # The common tokens keep their ids in the wide vocabulary up to the ring closures.
    assert [wide.convert_tokens_to_ids(t) for t in ("C", "c", "(", "9", "%19")] == tokenizer.convert_tokens_to_ids(
        ["C", "c", "(", "9", "%19"]
    )
    rare = "C[Pt+2]C%45CC%45"
    assert tokenizer.unk_token_id in tokenizer(rare)["input_ids"]
    assert wide.decode(wide(rare)["input_ids"], skip_special_tokens=True) == rare


def test_special_tokens_come_first(tokenizer):
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == list(SPECIAL_TOKENS)
    assert (tokenizer.pad_token_id, tokenizer.mask_token_id) == (0, 4)


@pytest.mark.parametrize(
    ("smiles", "tokens"),
    [
        ("CCO", ["C", "C", "O"]),
        ("ClCBr", ["Cl", "C", "Br"]),
        ("c1cc[nH]c1", ["c", "1", "c", "c", "[nH]", "c", "1"]),
        ("C[C@@H](N)C(=O)O", ["C", "[C@@H]", "(", "N", ")", "C", "(", "=", "O", ")", "O"]),
        ("C%12CC%12", ["C", "%12", "C", "C", "%12"]),
        ("[NH3+]CC#N", ["[NH3+]", "C", "C", "#", "N"]),
        ("F/C=C\\F", ["F", "/", "C", "=", "C", "\\", "F"]),
        ("*CC(*)c1ccccc1", ["*", "C", "C", "(", "*", ")", "c", "1", "c", "c", "c", "c", "c", "1"]),
        ("[*]CC[*]", ["[*]", "C", "C", "[*]"]),
        ("[Na+].[Cl-]", ["[Na+]", ".", "[Cl-]"]),
    ],
)
def test_atom_level_tokens(tokenizer, smiles, tokens):
    ids = tokenizer(smiles)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", *tokens, "[SEP]"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == smiles


def test_moses_round_trips_without_unknown_tokens(tokenizer, moses_sample):
    encoded = tokenizer(moses_sample)["input_ids"]
    assert all(tokenizer.unk_token_id not in ids for ids in encoded)
    assert tokenizer.batch_decode(encoded, skip_special_tokens=True) == moses_sample


def test_unknown_characters_become_unk_not_nothing(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("C[Xe+7]CQ")["input_ids"])
    assert tokens == ["[CLS]", "C", "[UNK]", "C", "[UNK]", "[SEP]"]


def test_mask_placeholder_is_one_token(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("c1ccccc1[MASK][MASK]")["input_ids"])
    assert tokens[-3:] == ["[MASK]", "[MASK]", "[SEP]"]


def test_loads_from_a_local_folder_and_file(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "saved")
    for path in (tmp_path / "saved", tmp_path / "saved" / "tokenizer.json"):
        again = load_tokenizer(str(path))
        assert again("CC(=O)N")["input_ids"] == tokenizer("CC(=O)N")["input_ids"]
        assert again.mask_token_id == tokenizer.mask_token_id


def test_a_hub_name_is_refused_without_network():
    with pytest.raises(FileNotFoundError, match="not available offline"):
        load_tokenizer("seyonec/ChemBERTa-zinc-base-v1")


@pytest.mark.parametrize("content", ["{}", "[PAD]\n[UNK]\nC\n", "CCO\nc1ccccc1\n", "{"])
def test_a_file_that_is_no_tokenizer_is_one_clear_error(tmp_path, content):
    # An empty JSON, a BERT vocab.txt, a training file, a broken JSON: each named, not a Rust traceback.
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    for given in (path, tmp_path):
        with pytest.raises(ValueError, match=rf"{path} is not a tokenizer.json as Hugging Face's tokenizers writes it"):
            load_tokenizer(str(given))
