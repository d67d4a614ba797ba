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


@pytest.mark.parametrize("name", ["make_data", "regime_search", *LOADS_MODELS])
def test_help_shows_defaults_and_keeps_the_examples(name, capsys):
    mod = importlib.import_module(f"analyses.{name}")
    with pytest.raises(SystemExit):
        mod.main(["--help"])
    text = capsys.readouterr().out
    assert "(default:" in text
    example = next(line for line in mod.__doc__.splitlines() if "python analyses/" in line)
    assert example.rstrip() in text          # the docstring's example lines are printed as written
