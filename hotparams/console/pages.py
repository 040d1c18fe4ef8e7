"""The console's read pages: Namespaces, a namespace, History, Fleet."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from ..bus import Bus
from ..errors import HotParamsError, VersionNotFound
from ..flask.operations import BadRequest, error_message
from .blueprint import here
from .views import Summary, fleet_view, namespace_names, namespace_view, summary

__all__ = ["register"]

HISTORY_LIMIT = 50


def namespaces() -> str:
    now = here()
    query = request.args.get("q", "").strip()
    names = now.console.visible(namespace_names(now.bus))
    shown = [n for n in names if query.lower() in n.lower()]
    rows: list[tuple[Summary | None, str]] = []
    for name in shown:
        try:
            rows.append((summary(now.bus, name), ""))
        except HotParamsError as exc:  # one broken namespace does not hide the others
            rows.append((None, f"{name}: {error_message(exc)}"))
    return render_template(
        "hotparams_console/namespaces.html", rows=rows, query=query, total=len(names)
    )


def namespace(ns: str) -> str:
    now = here()
    view = namespace_view(now.bus, now.served(ns))
    fleet = fleet_view(now.bus, ns)
    return render_template("hotparams_console/namespace.html", ns=view, fleet=fleet)


def history(ns: str) -> str:
    now = here()
    now.served(ns)
    raw = request.args.get("limit", str(HISTORY_LIMIT))
    if not raw.isdigit() or int(raw) < 1:
        raise BadRequest("limit must be a whole number >= 1")
    head = now.bus.head(ns)
    changes = now.bus.history(ns, limit=min(int(raw), 1000))
    oldest = _oldest_retained(now.bus, ns, [c.version for c in changes])
    return render_template(
        "hotparams_console/history.html", name=ns, head=head, changes=changes, oldest=oldest
    )


def _oldest_retained(bus: Bus, ns: str, versions: list[int]) -> int:
    """The oldest version still retained (rollback targets), by bisection."""
    if not versions:
        return 1
    low, high = min(versions), max(versions)
    while low < high:  # versions below a retained one are gone, above it kept
        mid = (low + high) // 2
        try:
            bus.get(ns, version=mid)
        except VersionNotFound:
            low = mid + 1
        else:
            high = mid
    return low


def fleet(ns: str) -> str | BaseResponse:
    now = here()
    view = fleet_view(now.bus, now.served(ns))
    if request.args.get("format") == "json":
        return jsonify(view.doc())
    template = (
        "hotparams_console/_fleet_table.html"
        if request.args.get("fragment")
        else "hotparams_console/fleet.html"
    )
    return render_template(template, name=ns, fleet=view)


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/", "namespaces", namespaces)
    bp.add_url_rule("/ns/<ns>", "namespace", namespace)
    bp.add_url_rule("/ns/<ns>/history", "history", history)
    bp.add_url_rule("/ns/<ns>/fleet", "fleet", fleet)
