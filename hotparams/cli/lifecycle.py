"""The verbs of a namespace's life: list, configure, migrate, delete."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from ..errors import InvalidParams
from ..keys import keys_for
from ..lifecycle import Migration, rename_pairs
from .context import (
    AuthorOpt,
    ExpectOpt,
    JsonOpt,
    NamespaceArg,
    ReasonOpt,
    cli_source,
    load_model,
    state_of,
)
from .render import local_time, print_json, safe
from .values import UsageProblem

__all__ = ["configure", "delete", "list_", "migrate"]


def list_(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Every namespace in this Redis: version, epoch, last change, live workers."""
    state = state_of(ctx)
    listed = state.bus().namespaces()
    if json_out:
        print_json(
            state.out,
            [
                {
                    "namespace": n.namespace,
                    "version": n.version,
                    "epoch": n.epoch,
                    "schema_rev": n.schema_rev,
                    "committed_ms": n.committed_ms,
                    "last_author": n.last_author,
                    "last_op": n.last_op,
                    "workers": n.workers,
                    "retention": n.settings.retention,
                    "audit_maxlen": n.settings.audit_maxlen,
                    "max_value_bytes": n.settings.max_value_bytes,
                }
                for n in listed
            ],
        )
        return
    if not listed:
        state.out.print("no namespaces")
        return
    table = Table(box=box.SIMPLE, show_edge=False)
    for column in ("namespace", "version", "epoch", "last change", "by", "workers"):
        table.add_column(column, justify="right" if column in ("version", "workers") else "left")
    for n in listed:
        table.add_row(
            safe(n.namespace),
            str(n.version),
            safe(n.epoch),
            f"{local_time(n.committed_ms)} {safe(n.last_op)}",
            safe(n.last_author or "-"),
            str(n.workers),
        )
    state.out.print(table)


def configure(
    ctx: typer.Context,
    namespace: NamespaceArg,
    retention: Annotated[
        int | None, typer.Option("--retention", metavar="N", help="Versions kept (1-10,000).")
    ] = None,
    audit_maxlen: Annotated[
        int | None,
        typer.Option("--audit-maxlen", metavar="N", help="Audit entries kept (100-1,000,000)."),
    ] = None,
    max_value_bytes: Annotated[
        int | None,
        typer.Option("--max-value-bytes", metavar="N", help="Largest value, bytes (1-16,777,216)."),
    ] = None,
    expect_version: ExpectOpt = None,
    author: AuthorOpt = None,
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Change the settings of NS (audited); without a setting, show them."""
    state = state_of(ctx)
    keys_for(namespace)
    bus = state.bus()
    if retention is None and audit_maxlen is None and max_value_bytes is None:
        info = {n.namespace: n for n in bus.namespaces()}.get(namespace)
        if info is None:
            bus.head(namespace)  # the clear "does not exist" (or "was deleted") error
            raise UsageProblem(f"{namespace}: not listed")  # pragma: no cover - a race
        settings = info.settings
    else:
        settings = bus.configure(
            namespace,
            retention=retention,
            audit_maxlen=audit_maxlen,
            max_value_bytes=max_value_bytes,
            expect_version=expect_version,
            author=author,
            reason=reason,
            source=cli_source(),
        )
    doc = {
        "namespace": namespace,
        "retention": settings.retention,
        "audit_maxlen": settings.audit_maxlen,
        "max_value_bytes": settings.max_value_bytes,
    }
    if json_out:
        print_json(state.out, doc)
        return
    state.out.print(
        f"{namespace}: retention {settings.retention} versions, audit_maxlen "
        f"{settings.audit_maxlen} entries, max_value_bytes {settings.max_value_bytes}"
    )


_ACTIONS = {
    "kept": "kept",
    "dropped": "dropped",
    "renamed": "renamed",
    "replaced": "replaced",
    "added": "default added",
    "invalid": "would not fit",
}


def _plan_table(plan: Migration) -> Table:
    table = Table(box=box.SIMPLE, show_edge=False, show_header=False)
    for _ in range(3):
        table.add_column()
    for f in plan.fields:
        style = "red" if f.action == "invalid" else "green" if f.action != "dropped" else "yellow"
        detail = f"-> {f.to}" if f.to else ""
        if f.reason:
            detail = f"{detail} {f.reason}".strip()
        table.add_row(safe(f.field), Text(_ACTIONS.get(f.action, f.action), style), safe(detail))
    return table


def _plan_doc(plan: Migration) -> dict[str, object]:
    return {
        "namespace": plan.namespace,
        "version": plan.version,
        "schema_rev": plan.schema_rev,
        "applied": plan.applied,
        "ok": plan.ok,
        "fields": [
            {"field": f.field, "action": f.action, "to": f.to, "reason": f.reason}
            for f in plan.fields
        ],
    }


def migrate(
    ctx: typer.Context,
    namespace: NamespaceArg,
    schema: Annotated[
        str,
        typer.Option("--schema", metavar="MODULE:MODEL", help="The new model, e.g. app:Params."),
    ],
    drop: Annotated[
        list[str] | None,
        typer.Option("--drop", metavar="FIELD", help="Drop a stored field (repeatable)."),
    ] = None,
    rename: Annotated[
        list[str] | None,
        typer.Option("--rename", metavar="OLD=NEW", help="Rename a stored field (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what happens to each value; write nothing.")
    ] = False,
    author: AuthorOpt = None,
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Change the stored schema of NS to a model: show what happens to each
    stored value, then apply it atomically (refused, exit 3, if one would not fit)."""
    state = state_of(ctx)
    keys_for(namespace)
    try:
        renames = rename_pairs(rename or [])
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    model = load_model(schema)
    bus = state.bus()

    def run(dry: bool, expect: int | None) -> Migration:
        return bus.migrate(
            namespace,
            model,
            drop=drop or [],
            rename=renames,
            dry_run=dry,
            expect_version=expect,
            author=author,
            reason=reason,
            source=cli_source(),
        )

    plan = run(True, None)
    if plan.ok and not dry_run:
        # the plan shown is the plan applied: a change in between is a conflict (exit 4)
        plan = run(False, plan.version)
    if json_out:
        print_json(state.out, _plan_doc(plan))
    else:
        state.out.print(_plan_table(plan))
        if plan.applied:
            done = f"migrated to schema revision {plan.schema_rev}, version {plan.version}"
            state.out.print(Text(f"{namespace}: {done}", style="bold"))
        elif plan.ok:
            state.out.print(
                f"{namespace}: dry run, nothing written"
                if dry_run
                else f"{namespace}: nothing to migrate"
            )
    if not plan.ok:
        raise InvalidParams(namespace, plan.problems)


def delete(
    ctx: typer.Context,
    namespace: NamespaceArg,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete NS (required).")] = False,
    expect_version: ExpectOpt = None,
    author: AuthorOpt = None,
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Delete NS: its versions, schema and settings go; the audit and a
    tombstone (who, when, why) stay; workers keep their last snapshot."""
    state = state_of(ctx)
    keys_for(namespace)
    if not yes:
        raise UsageProblem(f"deleting {namespace} needs --yes (it cannot be undone)")
    version = state.bus().delete(
        namespace,
        expect_version=expect_version,
        author=author,
        reason=reason,
        source=cli_source(),
    )
    if json_out:
        print_json(state.out, {"namespace": namespace, "deleted": True, "version": version})
    else:
        state.out.print(
            f"{namespace}: deleted at version {version} (the audit and a tombstone stay)"
        )
