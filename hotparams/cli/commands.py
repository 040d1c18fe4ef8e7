"""The verbs that read and change a namespace: init, get, set, unset,
rollback, history, diff, schema (``watch`` lives in :mod:`.watch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.padding import Padding
from rich.text import Text

from ..bus import Bus
from ..codec import MASK, loads
from ..errors import InvalidParams
from ..keys import keys_for
from ..redact import masked
from ..schema import ParamSchema
from ..snapshot import Change, Snapshot, changes_to_json, write_to_json
from .context import (
    DEFAULT_TIMEOUT,
    AuthorOpt,
    ExpectOpt,
    JsonOpt,
    NamespaceArg,
    ReasonOpt,
    State,
    TimeoutOpt,
    WaitOpt,
    cli_source,
    load_model,
    state_of,
)
from .fleet import report_wait
from .render import (
    change_block,
    changes_table,
    iso_time,
    local_time,
    print_json,
    schema_table,
    values_table,
    variants_summary,
)
from .values import (
    UsageProblem,
    field_rules,
    parse_assignments,
    secret_names,
    split_assignments,
)

__all__ = [
    "NamespaceArg",
    "diff",
    "get",
    "history",
    "init",
    "rollback",
    "schema",
    "set_",
    "unset",
]

SchemaOpt = Annotated[
    str | None,
    typer.Option(
        "--schema",
        metavar="MODULE:MODEL",
        help="Also validate with this pydantic model (its cross-field rules too).",
    ),
]


# ------------------------------------------------------------------ helpers


def defaults_of(rules: dict[str, Any]) -> dict[str, Any]:
    secret = secret_names(rules)
    out: dict[str, Any] = {}
    for name, rule in field_rules(rules).items():
        if "default" in rule:
            out[name] = MASK if name in secret else loads(rule["default"])
    return out


def change_of(bus: Bus, namespace: str, version: int) -> Change | None:
    """The audit entry of ``version`` (secrets masked), if it is still there."""
    for change in bus.history(namespace, limit=10):
        if change.version == version:
            return change
    return None


def report_write(
    state: State,
    namespace: str,
    before: int,
    after: int,
    json_out: bool,
    wait: float | None = None,
) -> None:
    """What a write verb prints: the new version and what changed; then,
    with ``wait`` (the ``--timeout``), whether every live worker applied it."""
    change = change_of(state.bus(), namespace, after) if after != before else None
    changes = change.changes if change else {}
    if json_out:
        previous = change.previous if change is not None else before
        doc = write_to_json(namespace, previous, after, change)
        if wait is not None:
            report_wait(state, namespace, after, wait, doc)
        else:
            print_json(state.out, doc)
        return
    if after == before:
        state.out.print(f"{namespace}: nothing changed (version {after})")
    else:
        what = f" (rollback to {change.target})" if change and change.op == "rollback" else ""
        state.out.print(Text(f"{namespace}: version {before} -> {after}{what}", style="bold"))
        if changes:
            state.out.print(changes_table(changes))
        if change and change.variants is not None:  # a rollback can change them too
            state.out.print(Padding(variants_summary(change.variants), (0, 0, 0, 2), expand=False))
    if wait is not None:
        report_wait(state, namespace, after, wait, None)


# ------------------------------------------------------------------ writes


def init(
    ctx: typer.Context,
    namespace: NamespaceArg,
    schema: Annotated[
        str,
        typer.Option("--schema", metavar="MODULE:MODEL", help="The model, e.g. app:Params."),
    ],
    author: AuthorOpt = None,
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Store the schema of NS from a pydantic model; a new NS gets its defaults as version 1."""
    state = state_of(ctx)
    keys_for(namespace)
    model = load_model(schema)
    reg = state.bus().register(namespace, model, author=author, reason=reason, source=cli_source())
    if json_out:
        doc = {
            "namespace": namespace,
            "version": reg.version,
            "schema_rev": reg.schema_rev,
            "created": reg.created,
            "new_revision": reg.new_revision,
            "kept_rules": list(reg.kept_rules),
        }
        print_json(state.out, doc)
        return
    if reg.created:
        state.out.print(f"{namespace}: created at version {reg.version} (schema revision 1)")
    elif reg.new_revision:
        state.out.print(
            f"{namespace}: schema revision {reg.schema_rev} stored; now at version {reg.version}"
        )
    else:
        state.out.print(
            f"{namespace}: schema unchanged (revision {reg.schema_rev}, version {reg.version})"
        )
    if reg.kept_rules:
        kept = ", ".join(reg.kept_rules)
        state.out.print(
            f"{namespace}: the stored rules of {kept} differ from the model's and were kept "
            f"(apply the model's with: hotparams migrate {namespace} --schema {schema})"
        )


def set_(
    ctx: typer.Context,
    namespace: NamespaceArg,
    assignments: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY=VALUE...",
            help="Values parsed by each field's type: text for a string field, JSON otherwise.",
        ),
    ],
    expect_version: ExpectOpt = None,
    author: AuthorOpt = None,
    reason: ReasonOpt = "",
    schema: SchemaOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Change fields of NS: set chat temperature=0.9 model=gpt-4o stop='["\\n"]'."""
    state = state_of(ctx)
    keys_for(namespace)
    split_assignments(assignments)  # usage errors before any I/O
    model = load_model(schema) if schema else None
    bus = state.bus()
    head = bus.head(namespace)
    values = parse_assignments(namespace, assignments, bus.rules(namespace))
    if model is not None:
        bus.bind(namespace, model)
    version = bus.set(
        namespace,
        values,
        expect_version=expect_version,
        author=author,
        reason=reason,
        source=cli_source(),
    )
    report_write(state, namespace, head.version, version, json_out, timeout if wait else None)


def unset(
    ctx: typer.Context,
    namespace: NamespaceArg,
    fields: Annotated[list[str], typer.Argument(metavar="KEY...", help="Fields to reset.")],
    expect_version: ExpectOpt = None,
    author: AuthorOpt = None,
    reason: ReasonOpt = "",
    wait: WaitOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Reset fields of NS to their defaults."""
    state = state_of(ctx)
    bus = state.bus()
    head = bus.head(namespace)
    version = bus.unset(
        namespace,
        fields,
        expect_version=expect_version,
        author=author,
        reason=reason,
        source=cli_source(),
    )
    report_write(state, namespace, head.version, version, json_out, timeout if wait else None)


def rollback(
    ctx: typer.Context,
    namespace: NamespaceArg,
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1, help="A retained version.")],
    expect_version: ExpectOpt = None,
    author: AuthorOpt = None,
    reason: ReasonOpt = "",
    wait: WaitOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Make the values of VERSION current again, as a new version."""
    state = state_of(ctx)
    bus = state.bus()
    head = bus.head(namespace)
    new = bus.rollback(
        namespace,
        version,
        expect_version=expect_version,
        author=author,
        reason=reason,
        source=cli_source(),
    )
    report_write(state, namespace, head.version, new, json_out, timeout if wait else None)


# ------------------------------------------------------------------ reads


def get(
    ctx: typer.Context,
    namespace: NamespaceArg,
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="A retained version (default: current).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the values of NS (secrets as ******)."""
    state = state_of(ctx)
    bus = state.bus()
    stored = bus.get(namespace, version=version)
    current = bus.rules(namespace)
    # a retained version is shown by the rules it was written with (its
    # defaults, its secrets); a field secret in the current schema stays hidden too
    rules = current
    if version is not None:
        rules = bus.rules(namespace, stored.schema_rev)
    secret = secret_names(rules) | secret_names(current)
    real = dict(stored.values)
    values = masked(real, secret)
    if json_out:
        doc = {
            "namespace": namespace,
            "version": stored.version,
            "epoch": stored.epoch,
            "committed_ms": stored.committed_ms,
            "committed_at": iso_time(stored.committed_ms),
            "schema_rev": stored.schema_rev,
            "values": values,
        }
        print_json(state.out, doc)
        return
    defaults = defaults_of(rules)
    changed = frozenset(
        name
        for name, rule in field_rules(rules).items()
        if "default" in rule and name in real and real[name] != loads(rule["default"])
    )
    state.out.print(
        Text.assemble(
            (namespace, "bold"),
            f"  version {stored.version}  committed {local_time(stored.committed_ms)}",
        )
    )
    state.out.print(values_table(values, defaults, changed))


def history(
    ctx: typer.Context,
    namespace: NamespaceArg,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many changes.")] = 20,
    json_out: JsonOpt = False,
) -> None:
    """The changes of NS, newest first: who, when, from where, why, what."""
    state = state_of(ctx)
    bus = state.bus()
    head = bus.head(namespace)  # an unknown namespace is an error, not an empty list
    changes = bus.history(namespace, limit=limit)
    if json_out:
        print_json(state.out, [c.to_json(head.epoch) for c in changes])
    else:
        for change in changes:
            state.out.print(change_block(change))


def diff(
    ctx: typer.Context,
    namespace: NamespaceArg,
    a: Annotated[int, typer.Argument(metavar="A", min=1, help="The older version.")],
    b: Annotated[int, typer.Argument(metavar="B", min=1, help="The newer version.")],
    json_out: JsonOpt = False,
) -> None:
    """The fields that differ between versions A and B of NS."""
    state = state_of(ctx)
    changes = state.bus().diff(namespace, a, b)
    if json_out:
        doc = {"namespace": namespace, "from": a, "to": b, "changes": changes_to_json(changes)}
        print_json(state.out, doc)
    elif not changes:
        state.out.print(f"{namespace}: versions {a} and {b} have the same values")
    else:
        state.out.print(Text(f"{namespace}: version {a} -> {b}", style="bold"))
        state.out.print(changes_table(changes))


def schema(ctx: typer.Context, namespace: NamespaceArg, json_out: JsonOpt = False) -> None:
    """The schema stored for NS: types, defaults, rules (secret defaults as ******)."""
    state = state_of(ctx)
    bus = state.bus()
    head = bus.head(namespace)
    rules = bus.rules(namespace)
    defaults = defaults_of(rules)
    if json_out:
        fields = {}
        for name, rule in field_rules(rules).items():
            fields[name] = {**rule, **({"default": defaults[name]} if name in defaults else {})}
        doc = {
            "namespace": namespace,
            "schema_rev": head.schema_rev,
            "model": rules.get("model"),
            "fields": fields,
        }
        print_json(state.out, doc)
        return
    model = f"  model {rules['model']}" if rules.get("model") else ""
    state.out.print(
        Text.assemble((namespace, "bold"), f"  schema revision {head.schema_rev}{model}")
    )
    state.out.print(schema_table(rules, defaults))


def restore(
    ctx: typer.Context,
    namespace: NamespaceArg,
    from_cache: Annotated[
        Path,
        typer.Option(
            "--from-cache",
            metavar="FILE",
            help="A worker's last-known-good cache file (bus.watch(..., cache=FILE)).",
        ),
    ],
    schema: SchemaOpt = None,
    author: AuthorOpt = None,
    reason: ReasonOpt = "",
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Show the cached version (secrets as ******) and write nothing.",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """After a loss (FLUSHALL, a restart without persistence), write a worker's
    last good snapshot back as the current state of NS, A/B variants included."""
    from .. import lkg  # (the cache files' module: only this verb needs it)

    state = state_of(ctx)
    keys_for(namespace)
    try:
        doc = lkg.read(from_cache)
    except (OSError, ValueError) as exc:
        raise UsageProblem(f"--from-cache {from_cache}: {exc}") from None
    if doc.get("namespace") != namespace:
        raise UsageProblem(
            f"--from-cache {from_cache} holds namespace {doc.get('namespace')!r}, not {namespace!r}"
        )
    model_ref = schema or str(doc.get("model") or "")
    if not model_ref:
        raise UsageProblem("the cache file names no model: give --schema module:Model")
    model = load_model(model_ref)
    cached = ParamSchema.of(model)
    snapshot = lkg.load(from_cache, namespace, cached)
    if snapshot is None:
        raise InvalidParams(namespace, {"*": f"{from_cache}: the model refuses its values"})
    if dry_run:
        show_cached(state, snapshot, cached.secrets, json_out)
        return
    bus = state.bus()
    version = bus.restore(
        namespace, snapshot, model=model, author=author, reason=reason, source=cli_source()
    )
    if json_out:
        print_json(
            state.out,
            {"namespace": namespace, "version": version, "restored_from": snapshot.version},
        )
    else:
        state.out.print(
            f"{namespace}: version {version} restored from {from_cache} "
            f"(its version {snapshot.version})"
        )


def show_cached(
    state: State, snapshot: Snapshot[Any], secrets: frozenset[str], json_out: bool
) -> None:
    """What ``restore --dry-run`` prints: the cached version, secrets masked
    (its values and the overrides of its A/B variants)."""
    values = masked(snapshot.values, secrets)
    if json_out:
        doc = {
            "namespace": snapshot.namespace,
            "version": snapshot.version,
            "epoch": snapshot.epoch,
            "committed_ms": snapshot.committed_ms,
            "committed_at": iso_time(snapshot.committed_ms),
            "schema_rev": snapshot.schema_rev,
            "values": values,
            "variants": snapshot.variants.as_json(secrets) if snapshot.variants else None,
        }
        print_json(state.out, doc)
        return
    state.out.print(
        Text.assemble(
            (snapshot.namespace, "bold"),
            f"  cached version {snapshot.version}  committed {local_time(snapshot.committed_ms)}"
            "  (dry run: nothing written)",
        )
    )
    state.out.print(values_table(values, {}, frozenset()))
    if snapshot.variants:
        shown = snapshot.variants.as_json(secrets)
        state.out.print(Padding(variants_summary(shown), (0, 0, 0, 2), expand=False))
