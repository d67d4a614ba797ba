import os
import subprocess
import sys

import recall_circuits as rc


def test_every_entry_point_resolves_and_importing_loads_no_torch():
    import types

    import recall_circuits.attribution.trace  # noqa: F401  (imported subpackages bind on the package too)

    for name in rc.__all__:
        value = getattr(rc, name)
        assert value is not None and not isinstance(value, types.ModuleType), name
    code = "import sys, recall_circuits; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_loading_leaves_no_global_state_behind(tiny_dirs, monkeypatch):
    """Loading sets the offline variables and quiets transformers only while it runs."""
    import os

    import transformer_lens.model_bridge  # noqa: F401  (its import may set transformers' verbosity itself)
    import transformers.utils.logging as tlog

    from recall_circuits.models.loading import load_bridge, load_hf

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    before = (dict(os.environ), tlog.get_verbosity(), tlog.is_progress_bar_enabled())
    load_bridge(tiny_dirs["tiny-gpt2"])
    load_hf(tiny_dirs["tiny-llama"])
    assert (dict(os.environ), tlog.get_verbosity(), tlog.is_progress_bar_enabled()) == before


def test_every_rc_name_the_readme_uses_exists():
    import re

    from helpers import ROOT

    names = set(re.findall(r"\brc\.([A-Za-z_]\w*)", (ROOT / "README.md").read_text()))
    assert {"cross_task_trace", "patching_sweep", "restore_ablation"} <= names
    assert not {n for n in names if not hasattr(rc, n)}


def test_the_offline_block_leaves_the_hub_library_online_when_it_imports_it_first():
    """The Hub library reads HF_HUB_OFFLINE once, at its import: a first import inside the offline block would keep
    the whole process offline (and every tokenizer saved afterwards would record local_files_only)."""
    code = ("from recall_circuits.models.registry import offline_and_quiet\n"
            "with offline_and_quiet():\n    pass\n"
            "import huggingface_hub.constants as c\nprint(c.HF_HUB_OFFLINE)")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"
