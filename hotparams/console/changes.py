"""The console's write pages: Edit -> Review -> Publish, and Roll back
(the A/B variants' page is :mod:`.variant_page`).

Every write runs through :mod:`hotparams.flask.operations` (the admin
API's operations) with ``expect_version`` set to the version the person
looked at (compare-and-set), the person's identity as the audit's author
and a required reason.  A change is checked by Redis's rules (a dry run,
:meth:`hotparams.Bus.check`) before the review step, so a bad value shows
as an inline error with the CLI's message and nothing is written.

A secret typed on the edit form is never sent back to the browser: the
review step asks for it again and compares it with a keyed digest.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as BaseResponse

from ..errors import InvalidParams, VersionConflict
from ..flask.operations import BadRequest, Written, rollback, set_values
from .blueprint import BLUEPRINT, Here, here
from .forms import read_form
from .views import NamespaceView, namespace_view, wait_for_fleet

__all__ = ["FIELD", "Page", "base_of", "flash_written", "reason_of", "register"]

#: form inputs of parameters are named FIELD + the field's name
FIELD = "f."
Page = str | tuple[str, int] | BaseResponse


def _texts(form: MultiDict[str, str]) -> dict[str, str]:
    """Field name -> submitted text (the last value: a toggle sends false, then true)."""
    return {k[len(FIELD) :]: form.getlist(k)[-1] for k in form if k.startswith(FIELD)}


def base_of(form: MultiDict[str, str]) -> int:
    raw = form.get("base", "")
    if not raw.isdigit():
        raise BadRequest("the form lost its base version; reload the page")
    return int(raw)


def reason_of(form: MultiDict[str, str]) -> str:
    return " ".join(form.get("reason", "").split())


def _digest(now: Here, ns: str, name: str, value: str) -> str:
    key = hashlib.sha256(f"hotparams-console-secret:{now.secret_key}".encode()).digest()
    return hmac.new(key, f"{ns}\x00{name}\x00{value}".encode(), "sha256").hexdigest()


def _edit_page(
    view: NamespaceView, texts: dict[str, str], errors: dict[str, str], reason: str, status: int
) -> tuple[str, int]:
    fields = [f for f in view.fields]
    page = render_template(
        "hotparams_console/edit.html",
        ns=view,
        fields=fields,
        texts=texts,
        errors=errors,
        reason=reason,
        base=view.version,
        field_prefix=FIELD,
    )
    return page, status


# ---------------------------------------------------------------- Edit / Review / Publish


def edit(ns: str) -> Page:
    now = here()
    now.need("editor")
    view = namespace_view(now.bus, now.served(ns))
    return _edit_page(view, {}, {}, "", 200)


def _checked(
    now: Here, ns: str, form: MultiDict[str, str], base: int
) -> tuple[NamespaceView, dict[str, Any], dict[str, str], dict[str, str]]:
    """The change a form makes at version ``base``: the view, the values,
    the texts typed, and the problems (empty: Redis's rules accept it)."""
    view = namespace_view(now.bus, ns)
    identity = now.need("editor")
    result = read_form(view.rules, view.values, _texts(form), may_set_secrets=identity.may("admin"))
    errors = dict(result.errors)
    if not reason_of(form):
        errors["reason"] = "say why (it goes to the audit with your name)"
    if not result.values and not result.errors:
        errors.setdefault("*", "nothing to change: every value is as it is now")
    if result.values:  # Redis's rules on what parsed, so every problem shows at once
        try:
            now.bus.check(ns, result.values, expect_version=base)
        except InvalidParams as exc:
            for name, message in exc.errors.items():
                errors.setdefault(name, message)
    return view, result.values, result.texts, errors


def review(ns: str) -> Page:
    now = here()
    now.served(ns)
    form = request.form
    base = base_of(form)
    try:
        view, values, texts, errors = _checked(now, ns, form, base)
    except VersionConflict:
        return _conflict(now, ns, form, base)
    if errors:
        return _edit_page(view, texts, errors, reason_of(form), 400)
    return _review_page(now, view, values, texts, reason_of(form), base, None)


def _review_page(
    now: Here,
    view: NamespaceView,
    values: dict[str, Any],
    texts: dict[str, str],
    reason: str,
    base: int,
    meanwhile: list[Any] | None,
    status: int = 200,
) -> tuple[str, int]:
    rows = []
    for name, value in values.items():
        secret = name in view.secrets
        rows.append(
            {
                "name": name,
                "old": view.values.get(name),
                "new": "******" if secret else value,
                "secret": secret,
                "text": "" if secret else texts[name],
                "digest": _digest(now, view.name, name, texts[name]) if secret else "",
            }
        )
    page = render_template(
        "hotparams_console/review.html",
        ns=view,
        rows=rows,
        reason=reason,
        base=base,
        meanwhile=meanwhile,
        field_prefix=FIELD,
    )
    return page, status


def _conflict(now: Here, ns: str, form: MultiDict[str, str], base: int) -> Page:
    """Someone published since ``base``: show what changed meanwhile, and
    the person's change rebased on the current version, to review again."""
    head = now.bus.head(ns)
    meanwhile = [c for c in now.bus.history(ns, limit=50) if c.version > base]
    view, values, texts, errors = _checked(now, ns, form, head.version)
    if errors:
        errors.setdefault("*", f"v{head.version} was published meanwhile; look again")
        return _edit_page(view, texts, errors, reason_of(form), 409)
    return _review_page(now, view, values, texts, reason_of(form), head.version, meanwhile, 409)


def publish(ns: str) -> Page:
    now = here()
    now.served(ns)
    identity = now.need("editor")
    form = request.form
    base = base_of(form)
    try:
        _retyped(now, ns, form)
    except InvalidParams as exc:
        view = namespace_view(now.bus, ns)
        return _edit_page(view, {}, dict(exc.errors), reason_of(form), 400)
    if now.bus.head(ns).version != base:
        return _conflict(now, ns, form, base)
    view, values, texts, errors = _checked(now, ns, form, base)
    if errors:
        return _edit_page(view, texts, errors, reason_of(form), 400)
    try:
        result = set_values(
            now.bus,
            ns,
            values,
            expect_version=base,
            author=identity.name,
            reason=reason_of(form),
            source=now.source(),
        )
    except VersionConflict:
        return _conflict(now, ns, form, base)
    except InvalidParams as exc:  # the model's own rules, after the dry run
        return _edit_page(view, texts, dict(exc.errors), reason_of(form), 400)
    flash_written(now, result)
    return redirect(url_for(f"{BLUEPRINT}.namespace", ns=ns), 303)


def _retyped(now: Here, ns: str, form: MultiDict[str, str]) -> None:
    """Check each secret of the publish form against its digest: the review
    step asked for it again; a mismatch is an error of that field."""
    for key in list(form):
        if not key.startswith("digest."):
            continue
        name = key[len("digest.") :]
        typed = form.get(FIELD + name, "")
        if not hmac.compare_digest(_digest(now, ns, name, typed), form.get(key, "")):
            raise InvalidParams(ns, {name: "the value typed again does not match; edit again"})


def flash_written(now: Here, result: Written) -> None:
    if not result.changed:
        now.flash(f"nothing changed (still v{result.version})", "info")
        return
    conv = wait_for_fleet(now.bus, result.namespace, result.version, now.console.wait)
    if conv.workers == 0:
        fleet = "no live worker reports on this namespace"
    else:
        fleet = f"{conv.on_target}/{conv.workers} workers applied it"
    what = (
        f"v{result.version} published (rollback to v{result.change.target})"
        if result.change is not None and result.change.target is not None
        else f"v{result.version} published"
    )
    now.flash(f"{what}, {fleet}", "ok" if conv.complete or conv.workers == 0 else "info")


# ---------------------------------------------------------------- Roll back


def rollback_page(ns: str, version: int) -> Page:
    now = here()
    identity = now.need("editor")
    now.served(ns)
    view = namespace_view(now.bus, ns)
    if request.method == "GET":
        changes = now.bus.diff(ns, view.version, version)
        page = render_template(
            "hotparams_console/rollback.html",
            ns=view,
            target=version,
            changes=changes,
            reason="",
            errors={},
        )
        return page
    form = request.form
    base = base_of(form)
    reason = reason_of(form)
    if not reason:
        changes = now.bus.diff(ns, view.version, version)
        errors = {"reason": "say why (it goes to the audit with your name)"}
        page = render_template(
            "hotparams_console/rollback.html",
            ns=view,
            target=version,
            changes=changes,
            reason="",
            errors=errors,
        )
        return page, 400
    try:
        result = rollback(
            now.bus,
            ns,
            version,
            expect_version=base,
            author=identity.name,
            reason=reason,
            source=now.source(),
        )
    except VersionConflict:
        now.flash(
            f"v{now.bus.head(ns).version} was published meanwhile: review the roll back again",
            "error",
        )
        return redirect(url_for(f"{BLUEPRINT}.rollback_page", ns=ns, version=version), 303)
    flash_written(now, result)
    return redirect(url_for(f"{BLUEPRINT}.history", ns=ns), 303)


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/ns/<ns>/edit", "edit", edit)
    bp.add_url_rule("/ns/<ns>/review", "review", review, methods=["POST"])
    bp.add_url_rule("/ns/<ns>/publish", "publish", publish, methods=["POST"])
    bp.add_url_rule(
        "/ns/<ns>/rollback/<int:version>", "rollback_page", rollback_page, methods=["GET", "POST"]
    )
