"""The public names are a contract: extend, don't rename."""

from __future__ import annotations

import hotparams

CONTRACT = {
    "Bus",
    "ConnectionFailed",
    "HotParamsError",
    "InvalidParams",
    "Snapshot",
    "VersionConflict",
    "connect",
}


def test_the_public_names_of_the_design_are_exported() -> None:
    assert set(hotparams.__all__) >= CONTRACT
    for name in hotparams.__all__:
        assert hasattr(hotparams, name), name


def test_every_error_is_a_hotparams_error() -> None:
    errors = [
        getattr(hotparams, n)
        for n in hotparams.__all__
        if isinstance(getattr(hotparams, n), type)
        and issubclass(getattr(hotparams, n), BaseException)
    ]
    assert len(errors) >= 8
    assert all(issubclass(e, hotparams.HotParamsError) for e in errors)


def test_bus_has_the_design_methods() -> None:
    for method in ("register", "set", "get", "history", "rollback"):
        assert callable(getattr(hotparams.Bus, method))
