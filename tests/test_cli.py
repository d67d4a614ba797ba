"""Every script that loads a model takes --device and --dtype; a smoke test of each --help."""

import importlib

import pytest

LOADS_MODELS = ("activation_patching", "attention_compare", "consistency", "finetune", "gradient_trace", "grafting",
                "head_ablation", "reproduce")


@pytest.mark.parametrize("name", LOADS_MODELS)
def test_device_and_dtype_everywhere(name, capsys):
    main = importlib.import_module(f"analyses.{name}").main
    with pytest.raises(SystemExit) as ex:
        main(["--help"])
    assert ex.value.code == 0
    text = capsys.readouterr().out
    assert "--device" in text and "--dtype" in text
