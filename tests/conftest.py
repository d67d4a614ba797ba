"""Fixtures: tiny random checkpoints of GPT-2, GPT-NeoX, Llama-GQA, Gemma-MQA and Phi (parallel block, biases), built
session (any network attempt raises and is recorded)."""

from __future__ import annotations

import os
import socket

import pytest
import torch

from helpers import ARCHS, ROOT  # noqa: F401  (ROOT: the fixtures' paths)

NETWORK_ATTEMPTS: list[tuple[str, object]] = []


class NetworkBlocked(RuntimeError):
    pass


def _guard(name):
    def blocked(*args, **kwargs):
        NETWORK_ATTEMPTS.append((name, args[1:2] if name != "getaddrinfo" else args[:1]))
        raise NetworkBlocked(f"network access attempted: {name}{args[:2]}")
    return blocked


@pytest.fixture(scope="session", autouse=True)
def no_network():
    """Every test runs with connect/getaddrinfo replaced by a raising recorder."""
    saved = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection)
    socket.socket.connect = _guard("connect")
    socket.socket.connect_ex = _guard("connect_ex")
    socket.getaddrinfo = _guard("getaddrinfo")
    socket.create_connection = _guard("create_connection")
    yield NETWORK_ATTEMPTS
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection = saved


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Tiny models are built into a session cache; the converted default model is reused from the user cache."""
    os.environ["RECALL_CIRCUITS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_dirs(isolated_cache):
    from recall_circuits.models.registry import ensure_tiny

    return {a: ensure_tiny(a) for a in ARCHS}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from recall_circuits.data.bios import DataConfig, generate, write_dataset

    out = tmp_path_factory.mktemp("data") / "tiny"
    write_dataset(generate(DataConfig(n_people=12, seed=0)), out)
    return out


@pytest.fixture(scope="session")
def bridges(tiny_dirs):
    from recall_circuits.models.loading import load_bridge

    return {a: load_bridge(tiny_dirs[a]) for a in ARCHS}
