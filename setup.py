"""polydiff's build, besides what pyproject.toml declares: the kekulization check compiled.

The check is pure Python and a sampler's largest cost after the model (docs/quality.md). Cython
compiles its source as it is, unchanged, into ``polydiff.sampling.constraints._kekulization_compiled``
(about 1.7x faster), with the digest of the source it was built from; ``kekulization.py`` uses the
compiled twin only while its own source still has that digest, so an edit takes effect at once in
an editable install, compiled again at the next build. Where Cython cannot translate the source or
no C compiler is found, the build goes on without the twin and the source runs as it is (tox's
suite then fails: ``POLYDIFF_EXPECT_COMPILED``).
"""

import hashlib
import warnings
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

SOURCE = Path("polydiff/sampling/constraints/kekulization.py")
TWIN = "polydiff.sampling.constraints._kekulization_compiled"


def compiled_twin() -> list[Extension]:
    """The extension of the twin: a copy of the source, with its digest, that Cython translates to C."""
    text = SOURCE.read_bytes()
    copy = Path("build/cython") / f"{TWIN.rsplit('.', 1)[1]}.py"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(text + f'\nCOMPILED_FROM = "{hashlib.sha256(text).hexdigest()}"\n'.encode())
    try:
        # The C file is written next to the copy, in build/cython.
        extensions = cythonize([Extension(TWIN, [str(copy)])], compiler_directives={"language_level": 3}, quiet=True)
    except Exception as error:  # Cython could not translate it: the package works without the twin
        warnings.warn(f"building without the compiled kekulization check: {error}", stacklevel=1)
        return []
    # Optional: where the C compiler fails, setuptools builds the wheel without the twin. Set on
    # cythonize's output, which does not carry the flag over from the extensions it is given.
    for extension in extensions:
        extension.optional = True
    return extensions


setup(ext_modules=compiled_twin())
