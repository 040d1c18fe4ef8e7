"""The console's A/B variants page: create, widen or narrow, edit the
overrides and the allow-list, remove; each a new version, with the
person's name and reason, compare-and-set on the version the page showed."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from ..cli.values import field_rules
from ..errors import InvalidParams, VersionConflict
from ..flask.operations import Written
from .blueprint import BLUEPRINT, here
from .changes import Page, base_of, flash_written, reason_of
from .views import NamespaceView, namespace_view

__all__ = ["register"]


def _overrides(ns: str, text: str, view: NamespaceView, current: dict[str, Any]) -> dict[str, Any]:
    """A JSON object of overrides; secret overrides the variant has are kept."""
    text = text.strip() or "{}"
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InvalidParams(ns, {"overrides": f"not JSON: {exc}"}) from None
    if not isinstance(doc, dict):
        raise InvalidParams(ns, {"overrides": 'a JSON object, e.g. {"temperature": 0.9}'})
    unknown = [k for k in doc if k not in field_rules(view.rules)]
    if unknown:
        raise InvalidParams(ns, {"overrides": f"unknown field {', '.join(sorted(unknown))}"})
    secret = [k for k in doc if k in view.secrets]
    if secret:
        raise InvalidParams(ns, {"overrides": "secret fields cannot be overridden here"})
    kept = {k: v for k, v in current.items() if k in view.secrets}
    return {**kept, **doc}


def _percent(ns: str, raw: str) -> float | None:
    if raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidParams(ns, {"percent": f"a number from 0 to 100, got {raw!r}"}) from None
    return value


def _users(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    return [u.strip() for u in raw.replace(",", "\n").splitlines() if u.strip()]


def variants(ns: str) -> Page:
    now = here()
    now.served(ns)
    view = namespace_view(now.bus, ns)
    if request.method == "GET":
        return _variants_page(view, {}, {}, 200)
    identity = now.need("editor")
    form = request.form
    base = base_of(form)
    reason = reason_of(form)
    name = form.get("name", "").strip()
    action = form.get("action", "save")
    errors: dict[str, str] = {}
    if not reason:
        errors["reason"] = "say why (it goes to the audit with your name)"
    if not name:
        errors["name"] = "a variant needs a name"
    if action == "remove":
        identity = now.need("admin")
    if errors:
        return _variants_page(view, dict(form), errors, 400)
    raw = now.bus.get(ns).variants.variants.get(name)
    who = {"author": identity.name, "reason": reason, "source": now.source()}
    try:
        if action == "remove":
            version = now.bus.remove_variant(ns, name, expect_version=base, **who)
        else:
            overrides_text = form.get("overrides")
            overrides = None
            if overrides_text is not None:
                current = dict(raw.overrides) if raw is not None else {}
                overrides = _overrides(ns, overrides_text, view, current)
            elif raw is None:
                overrides = {}
            version = now.bus.set_variant(
                ns,
                name,
                overrides,
                percent=_percent(ns, form.get("percent", "")),
                users=_users(form.get("users")),
                expect_version=base,
                **who,
            )
    except InvalidParams as exc:
        return _variants_page(view, dict(form), _variant_errors(exc.errors), 400)
    except VersionConflict as exc:
        return _variants_page(
            namespace_view(now.bus, ns),
            dict(form),
            {"*": f"v{exc.actual} was published meanwhile: look at the variants again"},
            409,
        )
    recent = [c for c in now.bus.history(ns, limit=5) if c.version == version]
    result = Written(ns, base, version, recent[0] if recent else None)
    flash_written(now, result)
    return redirect(url_for(f"{BLUEPRINT}.variants", ns=ns), 303)


def _variant_errors(errors: dict[str, str]) -> dict[str, str]:
    """Errors of a variant's fields ("variant warm temperature") go to its overrides."""
    out: dict[str, str] = {}
    for key, message in errors.items():
        if key.startswith("variant ") and key.count(" ") >= 2:
            field = key.split(" ", 2)[2]
            field = "" if field == "*" else f"{field}: "
            out["overrides"] = f"{out['overrides']}; " if "overrides" in out else ""
            out["overrides"] += f"{field}{message}"
        elif key in ("percent", "users", "overrides", "name", "*"):
            out[key] = message
        elif key == "variant":
            out["name"] = message
        else:
            out["overrides"] = f"{key}: {message}"
    return out


def _variants_page(
    view: NamespaceView, form: dict[str, str], errors: dict[str, str], status: int
) -> tuple[str, int]:
    overrides_text = {
        name: json.dumps(
            {k: v for k, v in doc["overrides"].items() if k not in view.secrets},
            ensure_ascii=False,
        )
        for name, doc in view.variants.items()
    }
    page = render_template(
        "hotparams_console/variants.html",
        ns=view,
        form=form,
        errors=errors,
        overrides_text=overrides_text,
        users_text={name: "\n".join(users) for name, users in view.variant_users.items()},
    )
    return page, status


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/ns/<ns>/variants", "variants", variants, methods=["GET", "POST"])
