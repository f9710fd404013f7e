"""Offline tokenizers: the bundled atom-level SMILES tokenizers and local tokenizer folders.

The bundled ``smiles`` tokenizer splits SMILES/PSMILES into chemically meaningful tokens
(bracket atoms such as ``[nH]`` or ``[C@@H]`` stay whole, ``Cl`` and ``Br`` are one token, ring
closures ``%nn`` are one token) and maps them word-level onto a fixed vocabulary of the tokens
organic chemistry writes (126; MOSES itself uses 24 of them). Its size matters: every sampling
step works over the whole vocabulary at every position, and the logits over it are the largest
tensors of a training step. ``smiles_full`` keeps the wider vocabulary (1,467 tokens: every
bracket atom of 40 elements with each hydrogen count, charge and chirality) for corpora that
need rare atoms, and for checkpoints trained on it. The bundled
``selfies`` tokenizer maps each SELFIES symbol (``[C]``, ``[=Branch1]``, ...) onto a small
vocabulary. Nothing here touches the network: a name is ``smiles``, ``selfies`` (the bundled
files) or a local path.
"""

from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# One regex alternative per token kind. Anything the regex does not match still becomes its
# own piece (the split keeps it) and then maps to [UNK], so no character is silently dropped.
SMILES_REGEX = r"\[[^\]]+\]|Br|Cl|%\d{2}|[BCNOPSFI]|[bcnops]|[()=#\-+\\/:~@?>*$.]|\d"

ORGANIC_ATOMS = ("B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I", "b", "c", "n", "o", "p", "s")
BONDS_AND_SYMBOLS = ("-", "=", "#", "$", ":", "/", "\\", "(", ")", ".", "*", "~", "@", "?", ">", "+")
RING_CLOSURES = tuple(str(d) for d in range(10)) + tuple(f"%{n}" for n in range(10, 100))
# Writers reuse ring numbers once a ring closes, so even macrocycles and cages rarely hold more
# than a dozen rings open at once.
COMMON_RING_CLOSURES = RING_CLOSURES[:20]

# The bracket atoms that drug-like and polymer corpora use: stereocentres, the usual charged
# forms (salts, nitro groups, ammonium), aromatic NH, isotopes of labelled compounds and
# attachment points. A line with any other atom is skipped as "unknown token" and counted.
COMMON_BRACKET_ATOMS = (
    "[nH]", "[C@H]", "[C@@H]", "[C@]", "[C@@]", "[H]", "[N+]", "[O-]", "[n+]", "[N-]", "[O+]", "[n-]",
    "[NH+]", "[NH2+]", "[NH3+]", "[nH+]", "[NH-]", "[C-]", "[CH-]", "[CH2-]", "[c-]", "[C+]", "[S+]", "[S-]",
    "[s+]", "[o+]", "[P+]", "[S@]", "[S@@]", "[S@+]", "[S@@+]", "[N@]", "[N@@]", "[N@+]", "[N@@+]", "[N@H+]",
    "[N@@H+]", "[P@]", "[P@@]", "[Si]", "[SiH]", "[SiH2]", "[Se]", "[se]", "[SeH]", "[B]", "[B-]", "[BH-]",
    "[BH3-]", "[Na+]", "[K+]", "[Li+]", "[Mg+2]", "[Ca+2]", "[Zn+2]", "[Cl-]", "[Br-]", "[I-]", "[2H]", "[3H]",
    "[11C]", "[13C]", "[14C]", "[18F]", "[123I]", "[125I]", "[*]", "[*:1]", "[*:2]",
)  # fmt: skip

# Bracket atoms: every combination of these parts that is chemically plausible enough to
# appear in drug-like or polymer corpora. Rarer ones still tokenize, as [UNK].
_BRACKET_ELEMENTS = (
    "C",
    "N",
    "O",
    "S",
    "P",
    "B",
    "F",
    "Cl",
    "Br",
    "I",
    "Si",
    "Se",
    "Te",
    "As",
    "Ge",
    "Sn",
    "c",
    "n",
    "o",
    "s",
    "p",
    "b",
    "se",
    "te",
    "as",
    "H",
    "Li",
    "Na",
    "K",
    "Mg",
    "Ca",
    "Al",
    "Zn",
    "Fe",
    "Cu",
    "Co",
    "Ni",
    "Pt",
    "Pd",
    "Ti",
    "*",
)
_CHIRAL_ELEMENTS = ("C", "N", "S", "P", "Si", "Se", "B")
_HYDROGENS = ("", "H", "H2", "H3")
_CHARGES = ("", "+", "-", "+2", "-2", "+3")


def _bracket_atoms() -> list[str]:
    atoms = []
    for element in _BRACKET_ELEMENTS:
        chiralities = ("", "@", "@@") if element in _CHIRAL_ELEMENTS else ("",)
        for chirality, hydrogens, charge in itertools.product(chiralities, _HYDROGENS, _CHARGES):
            atoms.append(f"[{element}{chirality}{hydrogens}{charge}]")
    # Isotopes that do occur in curated sets, and attachment points with map numbers.
    atoms += ["[2H]", "[3H]", "[11C]", "[13C]", "[14C]", "[18F]", "[123I]", "[125I]"]
    atoms += [f"[*:{i}]" for i in range(1, 3)]
    return atoms


def smiles_vocabulary(full: bool = False) -> list[str]:
    """A bundled vocabulary: special tokens first, then atoms, symbols, ring closures and bracket
    atoms; the common ones (``smiles``) or every plausible one (``smiles_full``)."""
    vocab = list(SPECIAL_TOKENS) + list(ORGANIC_ATOMS) + list(BONDS_AND_SYMBOLS)
    vocab += (list(RING_CLOSURES) + _bracket_atoms()) if full else list(COMMON_RING_CLOSURES + COMMON_BRACKET_ATOMS)
    return list(dict.fromkeys(vocab))  # keep first occurrence, drop duplicates


# SELFIES symbols: the selfies package's semantically robust alphabet (fixed here, so that the
# vocabulary does not move with the package version) plus the hydrogen, charge, chirality and
# stereo-bond forms that curated sets hold, and [At], the polymer attachment placeholder.
_SELFIES_ELEMENTS = {"B": (3, 2, 4), "C": (4, 3, 3), "N": (3, 4, 2), "O": (2, 3, 1), "P": (5, 4, 6), "S": (6, 5, 5)}
_SELFIES_EXTRA = (
    "[NH1]", "[NH1+1]", "[NH2+1]", "[NH3+1]", "[=NH1+1]", "[=NH2+1]", "[#NH1+1]", "[OH1+1]", "[=OH1+1]",
    "[SH1]", "[SH1+1]", "[=SH1+1]", "[PH1]", "[PH1+1]", "[=PH1]", "[BH1-1]", "[BH2-1]", "[BH3-1]", "[CH1-1]",
    "[CH2-1]", "[N+1]", "[C@]", "[C@@]", "[C@H1]", "[C@@H1]", "[S@]", "[S@@]", "[S@+1]", "[S@@+1]", "[N@+1]",
    "[N@@+1]", "[N@H1+1]", "[N@@H1+1]", "[P@]", "[P@@]", "[Si]", "[=Si]", "[SiH1]", "[SiH2]", "[Se]", "[=Se]",
    "[SeH1]", "[Te]", "[I]", "[I+1]", "[2H]", "[At]", ".",
)  # fmt: skip
_SELFIES_STEREO_ATOMS = ("[C]", "[N]", "[O]", "[S]", "[F]", "[Cl]", "[Br]", "[C@H1]", "[C@@H1]", "[NH1]", "[N+1]")
SELFIES_REGEX = r"\[[^\]]+\]|."


def selfies_vocabulary() -> list[str]:
    """The bundled SELFIES vocabulary: special tokens, branch and ring symbols, then atoms."""
    structure = [f"[{bond}{kind}{n}]" for kind in ("Branch", "Ring") for bond in ("", "=", "#") for n in (1, 2, 3)]
    atoms = ["[H]", "[F]", "[Cl]", "[Br]", "[I]"]
    for element, (neutral, plus, minus) in _SELFIES_ELEMENTS.items():
        for charge, valence in (("", neutral), ("+1", plus), ("-1", minus)):
            atoms += [f"[{bond}{element}{charge}]" for bond in ("", "=", "#")[: min(valence, 3)]]
    stereo = [f"[{bond}{atom[1:]}" for bond in ("/", "\\") for atom in _SELFIES_STEREO_ATOMS]
    return list(dict.fromkeys(list(SPECIAL_TOKENS) + structure + atoms + list(_SELFIES_EXTRA) + stereo))


def _word_level_tokenizer(vocabulary: list[str], regex: str) -> Tokenizer:
    vocab = {token: i for i, token in enumerate(vocabulary)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(regex), behavior="isolated")
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))  # same ids; marks them as special
    tokenizer.decoder = decoders.Fuse()  # neither SMILES nor SELFIES has spaces: join tokens as they are
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return tokenizer


def build_smiles_tokenizer(full: bool = False) -> Tokenizer:
    """Builds a bundled atom-level tokenizer from code (``bundled/tokenizer.json`` is its output,
    ``bundled/tokenizer_full.json`` with ``full``)."""
    return _word_level_tokenizer(smiles_vocabulary(full), SMILES_REGEX)


def build_selfies_tokenizer() -> Tokenizer:
    """Builds the bundled SELFIES tokenizer from code (``bundled/selfies_tokenizer.json`` is its output)."""
    return _word_level_tokenizer(selfies_vocabulary(), SELFIES_REGEX)


BUNDLED_TOKENIZERS = {
    "smiles": "tokenizer.json",
    "kekule_smiles": "tokenizer.json",
    "smiles_full": "tokenizer_full.json",
    "selfies": "selfies_tokenizer.json",
}


def unknown_token_hint(name: str) -> str:
    """What to do about lines with a token the tokenizer ``name`` lacks ("" when polydiff has no
    wider bundled vocabulary to offer)."""
    if name not in ("smiles", "kekule_smiles"):
        return ""
    return "the common SMILES vocabulary lacks an atom of theirs: data.tokenizer_name smiles_full has 1,467 tokens"


def bundled_tokenizer_path(name: str = "smiles") -> Path:
    return Path(str(resources.files("polydiff.data") / "bundled" / BUNDLED_TOKENIZERS[name]))


def load_tokenizer(name: str = "smiles") -> PreTrainedTokenizerFast:
    """Loads a tokenizer without the network.

    Args:
        name: ``smiles``, ``kekule_smiles`` (the SMILES tokenizer), ``smiles_full`` (its wide
            vocabulary) or ``selfies`` for a bundled tokenizer, or a local path to a
            ``tokenizer.json`` file or to a folder saved with ``save_pretrained``.

    Returns:
        A fast tokenizer with [PAD], [UNK], [CLS], [SEP] and [MASK] set.

    Raises:
        FileNotFoundError: when ``name`` is neither bundled nor an existing local path.
        ValueError: for a file that is no tokenizer (a ``vocab.txt``, a training file), or one
            without polydiff's special tokens.
    """
    if name in BUNDLED_TOKENIZERS:
        path = bundled_tokenizer_path(name)
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"tokenizer {name!r} is not available offline: use 'smiles', 'kekule_smiles', 'smiles_full' or "
                "'selfies' (bundled) or the path of a local tokenizer.json or tokenizer folder"
            )
    if path.is_dir() and not (path / "tokenizer.json").exists():
        raise FileNotFoundError(f"tokenizer folder {path} has no tokenizer.json")
    try:
        if path.is_dir():
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
        else:
            tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path))
    except OSError:  # unreadable (permissions): as the system says
        raise
    except Exception as error:  # the Rust library raises a bare Exception for a file it cannot parse
        file = path / "tokenizer.json" if path.is_dir() else path
        raise ValueError(
            f"tokenizer {name!r}: {file} is not a tokenizer.json as Hugging Face's tokenizers writes it "
            f"({str(error).strip() or type(error).__name__})"
        ) from error
    special = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS, strict=True))
    for attribute, token in special.items():
        if getattr(tokenizer, attribute) is None:
            if token not in tokenizer.get_vocab():
                raise ValueError(f"tokenizer {name!r} has no {token} token")
            setattr(tokenizer, attribute, token)
    tokenizer.model_max_length = 10**9  # lengths are enforced by the data module, not here
    tokenizer.clean_up_tokenization_spaces = False
    return tokenizer
