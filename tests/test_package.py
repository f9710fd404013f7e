import subprocess
import sys

import polydiff


def test_every_public_name_resolves():
    for name in polydiff.__all__:
        assert getattr(polydiff, name) is not None
    assert set(polydiff.__all__) == {*polydiff._EXPORTS, "__version__"}


def test_import_is_light():
    # The command line sets OMP_WAIT_POLICY before torch loads, so `import polydiff` must not load torch.
    code = "import sys, polydiff; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
