import gzip
import re

import pytest

from polydiff.utils.files import check_samples_name, csv_columns, is_title, iter_rows, read_smiles


@pytest.mark.parametrize("name", ["excel.csv", "excel.csv.gz"])
def test_a_byte_order_mark_is_not_read_into_the_first_column_name(tmp_path, name):
    # Spreadsheets' "CSV UTF-8" starts with a byte-order mark.
    text = "\ufeffSMILES,Tg\nCCO,350\nc1ccccc1,420\n".encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    assert csv_columns(path) == ["SMILES", "Tg"]
    assert list(iter_rows(path, "SMILES", ["Tg"])) == [("CCO", ["350"]), ("c1ccccc1", ["420"])]


def test_a_byte_order_mark_is_not_read_into_the_first_line(tmp_path):
    path = tmp_path / "notepad.smi"
    path.write_bytes("\ufeffCCO\nCCN\n".encode())
    assert read_smiles(path) == ["CCO", "CCN"]


def test_a_folder_given_as_a_file_is_named_as_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="is a folder: give a file"):
        read_smiles(tmp_path)
    with pytest.raises(FileNotFoundError, match="data file not found"):
        read_smiles(tmp_path / "missing.smi")


def test_a_blank_csv_row_is_an_empty_line_and_keeps_the_line_numbers(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("name,SMILES,Tg\na,CCO,350\n\nb,CCN\n")
    assert list(iter_rows(path, "SMILES", ["Tg"])) == [("CCO", ["350"]), ("", [""]), ("CCN", [""])]


@pytest.mark.parametrize("name", ["-", "/dev/stdout", "samples", "x.smi.gz", "S.SMI", "a.csv", "dir.v2/out.txt"])
def test_samples_are_written_under_any_name_polydiff_reads(name):
    check_samples_name(name, "--output")  # no error


@pytest.mark.parametrize("name", ["samples.sdf", "samples.sdf.gz", "temp0.8", "out.json"])
def test_samples_are_refused_a_name_no_reader_takes(name):
    with pytest.raises(ValueError, match=rf"--output {re.escape(name)}: samples are SMILES lines"):
        check_samples_name(name, "--output")


@pytest.mark.parametrize("line", ["SMILES", "smiles", "canonical_smiles", "PSMILES", "SMILES,Name", "isomeric-SMILES"])
def test_title_fields_are_read_as_titles(line):
    assert is_title(line)


@pytest.mark.parametrize("line", ["CCO", "c1ccccc1", "[Sm+3]", "CSC", "O=S(=O)(C)C", "*CC*", "[SiH4]"])
def test_no_molecule_is_read_as_a_title(line):
    assert not is_title(line)  # no SMILES holds "smiles": there is no atom m outside brackets
