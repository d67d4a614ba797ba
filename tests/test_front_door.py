import subprocess
import sys

import recall_circuits as rc


def test_every_entry_point_resolves_and_importing_loads_no_torch():
    for name in rc.__all__:
        assert getattr(rc, name) is not None, name
    code = "import sys, recall_circuits; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
