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


def test_the_type_checking_block_names_every_entry_point_where_it_is_defined():
    """Editors and type checkers see rc.<name> through the TYPE_CHECKING block: it imports exactly the front door's
    names, each from the module the front door loads it from, under its own name."""
    import ast

    import recall_circuits

    from helpers import ROOT

    tree = ast.parse((ROOT / "recall_circuits" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    seen = {(a.name, n.module) for n in block.body if isinstance(n, ast.ImportFrom) for a in n.names
            if a.asname in (None, a.name)}
    assert seen == {(name, module) for name, module in recall_circuits._WHERE.items()}
    for name, module in seen:      # the front door gives the object defined under that name (no aliases)
        assert getattr(recall_circuits, name) is getattr(__import__(module, fromlist=[name]), name)
