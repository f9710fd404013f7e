import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import polydiff


def test_every_public_name_resolves():
    for name in polydiff.__all__:
        assert getattr(polydiff, name) is not None
    assert set(polydiff.__all__) == {*polydiff._EXPORTS, "__version__"}


def test_import_is_light():
    # The command line sets OMP_WAIT_POLICY before torch loads, so `import polydiff` must not load torch.
    code = "import sys, polydiff; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_sdist_and_wheel_build_without_a_c_compiler(tmp_path):
    """A user without a C compiler still gets a working wheel (the kekulization check then runs as
    Python), and the sdist carries the recipes, tests and licence that the wheel is checked with."""
    root = Path(__file__).resolve().parents[1]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    source = tmp_path / "source"
    for name in listed:  # the working tree as git sees it, without builds or caches
        if (root / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, source / name)
    environment = {**os.environ, "CC": "/bin/false", "CXX": "/bin/false"}
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"), str(source)],
        env=environment,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "tox.ini", "constraints/oldest.txt", "recipes/base.yaml"} <= in_sdist
    assert {"tests/conftest.py", "tests/configs/tiny.yaml", "tests/helpers/probes.py"} <= in_sdist
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    assert not [name for name in in_wheel if name.endswith(".so")]  # built from the sdist, without the twin
    assert {"polydiff/data/bundled/train.csv.gz", "polydiff/chem/data/moses_fcd.npz"} <= in_wheel
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in in_wheel)
