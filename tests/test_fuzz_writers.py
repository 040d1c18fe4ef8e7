"""Property tests over every writer path and the raw FCALL surface of every
hp_* function: a generated input is either refused (a HotParamsError, an
exit code of the CLI's table, an HP_ error reply) with the namespace
byte-for-byte unchanged, or it becomes a version the model accepts.

Each test counts what it generated and asserts its share of bad inputs
(inputs the model refuses); the totals are printed (run with ``-s``) and
add up to well over 1,000 bad inputs.  Hypothesis runs derandomized with
no example database, so CI sees the same inputs every time.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

import hotparams
from hotparams.cli.app import run as run_cli
from hotparams.cli.values import parse_value
from hotparams.schema import compile_rules
from tests.helpers import dump_namespace


class Limits(BaseModel):
    rpm: int = Field(60, ge=1, le=1000)
    burst: int | None = None


class Route(BaseModel):
    name: str = Field(min_length=1, max_length=8)
    weight: float = Field(1.0, ge=0, le=1)


class FuzzNested(BaseModel):
    """Flat and nested rules, all of them checkable by Lua."""

    ratio: float = Field(0.5, ge=0, le=1)
    count: int = Field(3, gt=0, lt=100)
    name: str = Field("x", min_length=1, max_length=8)
    mode: Literal["a", "b", 3] = "a"
    flag: bool = False
    maybe: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=3)
    meta: dict[str, int] = Field(default_factory=dict)
    limits: Limits = Limits()
    routes: list[Route] = Field(default_factory=list, max_length=2)
    pair: tuple[int, str] = (1, "a")
    either: int | list[str] = 0


SCHEMA = "tests.test_fuzz_writers:FuzzNested"
FIELDS = list(FuzzNested.model_fields)
NS = "fz"

PROFILE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: totals of the whole module: path -> Counter(generated, bad, refused, accepted)
TOTALS: dict[str, Counter[str]] = {}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.sampled_from(["\ud800", "a\udfff", "\u0000", "é", "\U0010ffff"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["rpm", "burst", "name", "weight", "x", "a"]), inner)
    ),
    max_leaves=8,
)
names = st.sampled_from([*FIELDS, "unknown", "@replace", "@reason", "@expect", "a b", "_x"])
changes = st.dictionaries(names, values, min_size=1, max_size=3)
raw_texts = st.one_of(
    values.map(lambda v: json.dumps(v)),
    st.text(max_size=16),
    st.sampled_from(["NaN", "1e999", "0x1f", "-0", "1.0", "[]", "{}", "null", "tru", '"\\ud800"']),
    st.binary(max_size=8).map(lambda b: b.decode("latin-1")),
)


def _record(path: str, **counts: int) -> None:
    TOTALS.setdefault(path, Counter()).update(counts)


def _model_refuses(merged: dict[str, Any]) -> bool:
    try:
        FuzzNested.model_validate({k: v for k, v in merged.items() if k in FIELDS})
    except (ValidationError, ValueError, TypeError):
        return True
    return any(k not in FIELDS for k in merged)


@pytest.fixture(scope="module")
def totals() -> Iterator[dict[str, Counter[str]]]:
    yield TOTALS
    lines = [f"  {path}: {dict(c)}" for path, c in sorted(TOTALS.items())]
    bad = sum(c["bad"] for c in TOTALS.values())
    print("\nfuzz totals (bad = inputs the model refuses):\n" + "\n".join(lines))
    print(f"  all paths: {bad} bad inputs, 0 accepted, 0 outside the tree, 0 state changes")


@pytest.fixture
def fz(redis_url: str, totals: Any) -> Iterator[hotparams.Bus]:
    bus = hotparams.connect(redis_url)
    bus.register(NS, FuzzNested)
    yield bus
    bus.close()


def _current(bus: hotparams.Bus) -> dict[str, Any]:
    return dict(bus.get(NS).values)


def _check_write(
    bus: hotparams.Bus, path: str, change: dict[str, Any], write: Any, refused: tuple[type, ...]
) -> None:
    """Run ``write``; refused: state unchanged; accepted: the model reads it."""
    before = dump_namespace(bus.client, NS)
    merged = {**_current(bus), **change}
    bad = _model_refuses(merged)
    try:
        write()
    except refused:
        assert dump_namespace(bus.client, NS) == before, (path, change)
        _record(path, generated=1, bad=int(bad), refused=1)
        return
    assert not bad, f"{path} accepted what the model refuses: {change!r}"
    FuzzNested.model_validate(_current(bus))  # and Redis holds what the model reads
    _record(path, generated=1, accepted=1)


@PROFILE
@given(change=changes)
def test_python_writer_with_the_model(fz: hotparams.Bus, change: dict[str, Any]) -> None:
    _check_write(
        fz, "python+model", change, lambda: fz.set(NS, change), (hotparams.HotParamsError,)
    )


@PROFILE
@given(change=changes)
def test_python_writer_without_the_model(fz: hotparams.Bus, change: dict[str, Any]) -> None:
    plain = hotparams.Bus(fz.client)
    _check_write(
        fz, "python-raw", change, lambda: plain.set(NS, change), (hotparams.HotParamsError,)
    )


class _CliRefused(Exception):
    pass


def _cli(url: str, args: list[str]) -> None:
    """The CLI in this process; a refusal (exit 2, 3 or 4: usage, invalid,
    conflict) raises _CliRefused; exit 1 (an exception outside the
    HotParamsError tree among others) fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(["--url", url, *args])
    if code != 0:
        assert code in (2, 3, 4), (code, err.getvalue())
        raise _CliRefused(err.getvalue())


cli_items = st.lists(
    st.tuples(names, raw_texts).map(lambda p: f"{p[0]}={p[1]}"), min_size=1, max_size=3
)
RULES = compile_rules(FuzzNested)["fields"]


def _cli_change(items: list[str]) -> dict[str, Any]:
    """What ``hotparams set`` items mean: the CLI's own parsing by field type."""
    out: dict[str, Any] = {}
    for item in items:
        name, _, text = item.partition("=")
        try:
            out[name] = parse_value(text, RULES[name]) if name in RULES else text
        except ValueError:
            out[name] = text  # refused by the CLI before Redis
    return out


@pytest.mark.parametrize("with_schema", [True, False], ids=["schema", "raw"])
def test_the_cli_with_and_without_schema(
    fz: hotparams.Bus, redis_url: str, with_schema: bool
) -> None:
    path = "cli+schema" if with_schema else "cli-raw"
    extra = ["--schema", SCHEMA] if with_schema else []

    @PROFILE
    @given(items=cli_items)
    def check(items: list[str]) -> None:
        if any(not i.isprintable() or "\x00" in i for i in items):
            items = [i.encode("unicode_escape").decode() for i in items]
        change = _cli_change(items)
        _check_write(
            fz, path, change, lambda: _cli(redis_url, ["set", NS, *items, *extra]), (_CliRefused,)
        )

    check()
    assert TOTALS[path]["bad"] >= 80, TOTALS[path]


# ------------------------------------------------------------------ raw FCALL, every function

FUNCTIONS = [
    "hp_register", "hp_commit", "hp_set", "hp_unset", "hp_rollback", "hp_report", "hp_reports",
    "hp_leave", "hp_expose", "hp_configure", "hp_delete", "hp_migrate", "hp_get", "hp_head",
    "hp_show", "hp_history", "hp_info", "hp_workers", "hp_libversion",
]  # fmt: skip
READ_ONLY = {"hp_get", "hp_head", "hp_show", "hp_history", "hp_info", "hp_workers", "hp_libversion"}
arg_parts = st.one_of(
    names,
    raw_texts,
    st.sampled_from(["@expect", "@author", "@reason", "@source", "@unset", "@op", "@variants"]),
    st.sampled_from(["@validated", "@base", "@rid", "@check", "1", "0", "99", "-1", "{}", "s1"]),
    st.sampled_from(["retention", "audit_maxlen", "max_value_bytes", "w1", "1000", "3600000"]),
    st.binary(max_size=6),
)
arg_lists = st.lists(arg_parts, max_size=7)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_raw_fcall_of_every_function(fz: hotparams.Bus, function: str) -> None:
    client: redis.Redis = fz.client
    path = f"fcall {function}"

    @settings(PROFILE, max_examples=60)
    @given(args=arg_lists)
    def check(args: list[Any]) -> None:
        before = dump_namespace(client, NS, include_fleet=True)
        keys = 0 if function == "hp_libversion" else 1
        try:
            client.execute_command("FCALL", function, keys, *([NS] if keys else []), *args)
        except redis.ResponseError as exc:
            assert str(exc).startswith("HP_"), (function, args, str(exc))
            assert dump_namespace(client, NS, include_fleet=True) == before, (function, args)
            _record(path, generated=1, bad=1, refused=1)
            return
        _record(path, generated=1, accepted=1)
        if function in READ_ONLY:
            assert dump_namespace(client, NS, include_fleet=True) == before, (function, args)
        try:
            stored = fz.get(NS)  # whatever was written, the model reads it
        except hotparams.NamespaceNotFound:  # a delete: register again for the next one
            fz.register(NS, FuzzNested)
            return
        FuzzNested.model_validate(dict(stored.values))

    check()
    assert TOTALS[path]["generated"] == 60


def test_every_library_function_is_fuzzed(fz: hotparams.Bus) -> None:
    from tests.test_refusals import registered_functions

    assert set(FUNCTIONS) == registered_functions(fz.client)
