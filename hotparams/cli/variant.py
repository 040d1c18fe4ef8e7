"""``hotparams variant set|list|remove|which``: A/B variants of a namespace.

A variant is a named set of overrides of the base values, given to a share
of users (``--percent``, sticky buckets) and to the users on its allow-list
(``--user``, which wins over percentages).  Every change is a new version
of the namespace, like ``set``.

``variant set`` changes what it is given and keeps the rest, like ``set``:
``key=value`` overrides are added to the variant's (``--unset KEY`` drops
one), ``--user`` adds to its allow-list (``--drop-user`` takes off).  It
reads the variant and writes with compare-and-set, so a concurrent change
is never lost: it reads again and retries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..errors import HotParamsError, InvalidParams, VersionConflict
from ..keys import keys_for
from ..redact import masked
from ..snapshot import Snapshot
from ..variants import BUCKETS, Variant, bucket_of, check_name
from .commands import SchemaOpt
from .context import (
    DEFAULT_TIMEOUT,
    AuthorOpt,
    ExpectOpt,
    JsonOpt,
    NamespaceArg,
    NotFound,
    ReasonOpt,
    State,
    TimeoutOpt,
    WaitOpt,
    cli_source,
    load_model,
    state_of,
)
from .fleet import report_wait
from .render import DIM, NEW, OLD, print_json, safe, value_text, values_table
from .values import UsageProblem, field_rules, parse_assignments, secret_names, split_assignments

__all__ = ["variant_app"]

#: attempts of ``variant set`` when a concurrent write moves the namespace on
ATTEMPTS = 5

variant_app = typer.Typer(
    name="variant",
    help="A/B variants of a namespace: overrides for a share of users or an allow-list.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The variant, e.g. cool.")]


# ------------------------------------------------------------------ helpers


def _check_name(name: str) -> None:
    try:
        check_name(name)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None


def _percent(p: float) -> str:
    return f"{p:g}%"


def _users(n: int) -> str:
    return f"{n} user" if n == 1 else f"{n} users"


def variant_doc(variant: Variant | None, secret: frozenset[str]) -> dict[str, Any] | None:
    if variant is None:
        return None
    return {
        "percent": variant.percent,
        "users": sorted(variant.users),
        "overrides": masked(variant.overrides, secret),
        "buckets": [list(r) for r in variant.ranges],
    }


def _not_found(namespace: str, name: str) -> NotFound:
    return NotFound(f"no variant named {name!r} in {namespace!r}")


def _new_overrides(
    namespace: str,
    old: Variant | None,
    assignments: Sequence[str],
    unset: Sequence[str],
    rules: Mapping[str, Any],
) -> dict[str, Any] | None:
    """The variant's overrides after this change (None: unchanged)."""
    if not assignments and not unset:
        return None
    problems: dict[str, str] = {}
    try:
        given = parse_assignments(namespace, assignments, rules)
    except InvalidParams as exc:
        problems.update(exc.errors)
        given = {}
    known = field_rules(rules)
    problems.update({name: "unknown field" for name in unset if name not in known})
    if problems:
        raise InvalidParams(namespace, problems)
    merged = {**(old.overrides if old else {}), **given}
    return {k: v for k, v in merged.items() if k not in unset}


def _new_users(old: Variant | None, add: Sequence[str], drop: Sequence[str]) -> list[str] | None:
    """The variant's allow-list after this change (None: unchanged)."""
    if not add and not drop:
        return None
    return sorted((set(old.users if old else ()) | set(add)) - set(drop))


def _arrow(old: Text | None, new: Text) -> Text:
    return new if old is None else Text.assemble(old, " -> ", new)


def variant_changes(old: Variant | None, new: Variant, secret: frozenset[str]) -> RenderableType:
    """One aligned line per changed part: percent, allow-list, each override
    (``(base)`` where the base value applies); a new variant without arrows."""
    rows: list[tuple[str, Text]] = []
    if old is None or old.percent != new.percent:
        was = None if old is None else Text(_percent(old.percent), style=OLD)
        rows.append(("percent", _arrow(was, Text(_percent(new.percent), style=NEW))))
    if old is None or old.users != new.users:
        was = None if old is None else Text(_users(len(old.users)), style=OLD)
        rows.append(("allow-list", _arrow(was, Text(_users(len(new.users)), style=NEW))))
    was_real = dict(old.overrides) if old else {}
    now_real = dict(new.overrides)
    was_shown, now_shown = masked(was_real, secret), masked(now_real, secret)
    base = Text("(base)", style=DIM)
    for field in sorted(set(was_real) | set(now_real)):
        if field in was_real and field in now_real and was_real[field] == now_real[field]:
            continue
        was = value_text(was_shown[field], OLD) if field in was_real else None
        if was is None and old is not None:
            was = base
        now = value_text(now_shown[field], NEW) if field in now_real else base
        rows.append((safe(field), _arrow(was, now)))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, text in rows:
        grid.add_row(label, text)
    return Padding(grid, (0, 0, 0, 2), expand=False)


def report_variant(
    state: State,
    namespace: str,
    name: str,
    before: Snapshot[Any],
    version: int,
    json_out: bool,
    wait: float | None,
) -> None:
    """What ``variant set`` and ``variant remove`` print, then ``--wait``."""
    bus = state.bus()
    after = bus.get(namespace, version=version) if version != before.version else before
    secret = secret_names(bus.rules(namespace))
    old = before.variants.variants.get(name)
    new = after.variants.variants.get(name)
    if json_out:
        doc = {
            "namespace": namespace,
            "version": version,
            "previous": before.version,
            "changed": version != before.version,
            "variant": name,
            "before": variant_doc(old, secret),
            "after": variant_doc(new, secret),
        }
        if wait is None:
            print_json(state.out, doc)
        else:
            report_wait(state, namespace, version, wait, doc)
        return
    if version == before.version:
        state.out.print(f"{namespace}: nothing changed (version {version})")
    else:
        what = "created" if old is None else "removed" if new is None else "changed"
        state.out.print(
            Text(f"{namespace}: version {before.version} -> {version} (variant {name} {what})")
        )
        if new is None:
            state.out.print(Text("  its users get the base values", style=DIM))
        else:
            state.out.print(variant_changes(old, new, secret))
    if wait is not None:
        report_wait(state, namespace, version, wait, None)


# ------------------------------------------------------------------ verbs


@variant_app.command("set")
def set_variant(
    ctx: typer.Context,
    namespace: NamespaceArg,
    name: NameArg,
    assignments: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY=VALUE",
            help="Overrides, parsed like set's values; added to the variant's.",
        ),
    ] = None,
    percent: Annotated[
        float | None,
        typer.Option(
            "--percent",
            metavar="P",
            help="Share of users (0-100, steps of 0.01): widening keeps everyone in.",
        ),
    ] = None,
    users: Annotated[
        list[str] | None,
        typer.Option("--user", metavar="ID", help="Add a user id to the allow-list (repeat)."),
    ] = None,
    drop_users: Annotated[
        list[str] | None,
        typer.Option("--drop-user", metavar="ID", help="Take a user id off the allow-list."),
    ] = None,
    unset: Annotated[
        list[str] | None,
        typer.Option("--unset", metavar="KEY", help="Drop an override (the base value applies)."),
    ] = None,
    expect_version: ExpectOpt = None,
    author: AuthorOpt = None,
    reason: ReasonOpt = "",
    schema: SchemaOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Create or change variant NAME of NS: variant set chat cool temperature=0.3 --percent 10."""
    state = state_of(ctx)
    keys_for(namespace)  # a malformed name is a usage error, before any I/O
    _check_name(name)
    items, add, drop, unset = assignments or [], users or [], drop_users or [], unset or []
    given = {k for k, _ in split_assignments(items)}  # usage errors before any I/O
    if not (items or add or drop or unset or percent is not None):
        raise UsageProblem(
            "nothing to change: give KEY=VALUE overrides, --percent, --user, --drop-user or --unset"
        )
    for what, both in (
        ("set and unset", given & set(unset)),
        ("added and dropped", set(add) & set(drop)),
    ):
        if both:
            raise UsageProblem(f"{sorted(both)[0]} is both {what}")
    model = load_model(schema) if schema else None
    bus = state.bus()
    if model is not None:
        bus.bind(namespace, model)
    for _ in range(ATTEMPTS):
        before = bus.get(namespace)
        old = before.variants.variants.get(name)
        if old is None and not (items or add or percent is not None):
            raise _not_found(namespace, name)
        rules = bus.rules(namespace)
        try:
            version = bus.set_variant(
                namespace,
                name,
                _new_overrides(namespace, old, items, unset, rules),
                percent=percent,
                users=_new_users(old, add, drop),
                expect_version=before.version if expect_version is None else expect_version,
                author=author,
                reason=reason,
                source=cli_source(),
            )
        except VersionConflict:
            if expect_version is not None:
                raise
            continue  # someone else wrote meanwhile: merge with their change
        report_variant(state, namespace, name, before, version, json_out, timeout if wait else None)
        return
    raise HotParamsError(f"{namespace!r} changed {ATTEMPTS} times during the change; try again")


@variant_app.command("remove")
def remove_variant(
    ctx: typer.Context,
    namespace: NamespaceArg,
    name: NameArg,
    expect_version: ExpectOpt = None,
    author: AuthorOpt = None,
    reason: ReasonOpt = "",
    wait: WaitOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Remove variant NAME of NS: its users get the base values."""
    state = state_of(ctx)
    keys_for(namespace)  # a malformed name is a usage error, before any I/O
    _check_name(name)
    bus = state.bus()
    before = bus.get(namespace)
    if name not in before.variants.variants:
        raise _not_found(namespace, name)
    version = bus.remove_variant(
        namespace,
        name,
        expect_version=expect_version,
        author=author,
        reason=reason,
        source=cli_source(),
    )
    report_variant(state, namespace, name, before, version, json_out, timeout if wait else None)


@variant_app.command("list")
def list_variants(ctx: typer.Context, namespace: NamespaceArg, json_out: JsonOpt = False) -> None:
    """The variants of NS: share of users, allow-list, overrides, exposures counted."""
    state = state_of(ctx)
    keys_for(namespace)  # a malformed name is a usage error, before any I/O
    bus = state.bus()
    stored = bus.get(namespace)
    secret = secret_names(bus.rules(namespace))
    variants = stored.variants
    counts = bus.exposures(namespace) if variants else {}
    taken = sum(e - s for v in variants.variants.values() for s, e in v.ranges)
    base_percent = (BUCKETS - taken) * 100 / BUCKETS
    ordered = sorted(variants.variants.values(), key=lambda v: v.name)
    if json_out:
        doc = {
            "namespace": namespace,
            "version": stored.version,
            "salt": variants.salt or None,
            "variants": {
                v.name: {**(variant_doc(v, secret) or {}), "exposures": counts.get(v.name, 0)}
                for v in ordered
            },
            "base": {"percent": base_percent, "exposures": counts.get(None, 0)},
        }
        print_json(state.out, doc)
        return
    head = Text.assemble((namespace, "bold"), f"  version {stored.version}")
    if not variants:
        state.out.print(Group(head, Text("no variants: every user gets the base values")))
        return
    total = sum(counts.values())

    def exposed(n: int) -> str:
        return f"{n} ({n * 100 / total:.1f}%)" if total else "0"

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("variant", style="bold")
    table.add_column("percent", justify="right")
    table.add_column("allow-list", justify="right")
    table.add_column("overrides")
    table.add_column("exposures", justify="right")
    for v in ordered:
        overrides = Text("\n").join(
            Text.assemble(f"{safe(k)}=", value_text(value))
            for k, value in masked(v.overrides, secret).items()
        )
        table.add_row(
            v.name,
            _percent(v.percent),
            str(len(v.users)),
            overrides,
            exposed(counts.get(v.name, 0)),
        )
    table.add_row(
        Text("(base)", style=DIM), _percent(base_percent), "", "", exposed(counts.get(None, 0))
    )
    state.out.print(Group(head, table))


@variant_app.command("which")
def which(
    ctx: typer.Context,
    namespace: NamespaceArg,
    user: Annotated[str, typer.Argument(metavar="USER", help="A user id, as the app passes it.")],
    json_out: JsonOpt = False,
) -> None:
    """The variant USER gets in NS, and the values that makes (secrets as ******)."""
    state = state_of(ctx)
    bus = state.bus()
    stored = bus.get(namespace)
    secret = secret_names(bus.rules(namespace))
    variants = stored.variants
    name = variants.assign(namespace, user)
    variant = variants.variants.get(name) if name else None
    listed = variant is not None and user in variant.users
    bucket = bucket_of(namespace, variants.salt, user) if variants and not listed else None
    base = dict(stored.values)
    overrides = dict(variant.overrides) if variant else {}
    values = masked({**base, **overrides}, secret)
    if json_out:
        doc = {
            "namespace": namespace,
            "version": stored.version,
            "user": user,
            "variant": name,
            "allow_list": listed,
            "bucket": bucket,
            "overrides": masked(overrides, secret),
            "values": values,
        }
        print_json(state.out, doc)
        return
    if listed:
        how = "on its allow-list"
    elif bucket is not None:
        how = f"bucket {bucket} of {BUCKETS}"
    else:
        how = "no variants"
    gets = f"variant {name}" if name else "the base"
    state.out.print(
        Text.assemble(
            (namespace, "bold"),
            f"  version {stored.version}  user {safe(repr(user))} gets {gets} ({how})",
        )
    )
    state.out.print(values_table(values, masked(base, secret), frozenset(overrides), beside="base"))
