"""One table of what each error means to the CLI, the admin API and the console."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import hotparams
from hotparams import outcomes
from hotparams.cli.context import exit_code_for
from hotparams.errors import HotParamsError, LibraryMismatch, PermissionDenied
from hotparams.flask.operations import status_of


def _every_module() -> None:
    """Import every module of the package, so every error class is defined."""
    for info in pkgutil.walk_packages(hotparams.__path__, "hotparams."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional extra that is not installed
            continue


def _subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    out: set[type[BaseException]] = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_subclasses(sub)}
    return out


def test_every_error_of_the_tree_has_a_row_of_its_own() -> None:
    _every_module()
    tree = {c for c in _subclasses(HotParamsError) if c.__module__.startswith("hotparams")}
    rows = [kind for kind, _ in outcomes.OUTCOMES]
    assert {"BatchError", "ConfigError", "DemoError"} <= {c.__name__ for c in tree}
    missing = sorted(c.__name__ for c in tree if c not in rows)
    assert not missing, f"errors without a row in hotparams.outcomes.OUTCOMES: {missing}"
    for i, kind in enumerate(rows):  # a subclass before its base, or its row is dead
        later = [k.__name__ for k in rows[i + 1 :] if issubclass(k, kind) and k is not kind]
        assert not later, f"{kind.__name__} shadows {later}"


@pytest.mark.parametrize("kind", [kind for kind, _ in outcomes.OUTCOMES], ids=lambda k: k.__name__)
def test_the_cli_and_the_admin_api_read_the_same_row(kind: type[BaseException]) -> None:
    """Drift: the CLI's EXIT_CODES and Flask's ERROR_STATUS were two tables
    (PermissionDenied was exit 8 but HTTP 500, ConfigError exit 2 but 500)."""
    exc = kind.__new__(kind)
    row = dict(outcomes.OUTCOMES)[kind]
    assert exit_code_for(exc) == row.exit_code
    assert status_of(exc) == (row.status, row.code)
    # the caller's mistake (4xx) in one face is the caller's in the other
    assert (row.status >= 500) == (row.exit_code in {1, 5, 7}), row
    assert row.exit_code in outcomes.EXIT_NAMES


def test_a_refused_library_load_is_permission_denied_in_every_face() -> None:
    refused = LibraryMismatch("may not load", permission="function|load")
    denied = PermissionDenied("chat", "run 'fcall'")
    assert exit_code_for(refused) == exit_code_for(denied) == 8
    assert status_of(refused) == status_of(denied) == (403, "permission_denied")
    assert status_of(LibraryMismatch("old")) == (500, "library_mismatch")


def test_an_unknown_exception_is_a_failure() -> None:
    assert exit_code_for(KeyError("x")) == 1
    assert status_of(KeyError("x")) == (500, "internal")
