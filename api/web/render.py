"""How dashboard pages are drawn: Jinja2 templates (one block of a page for htmx), their filters, and
the runs-per-hour chart as server-rendered SVG."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2_fragments.fastapi import Jinja2Blocks

from api.web.session import CSRF_FIELD, csrf_token
from core.payloads import masked_url

TEMPLATES = Path(__file__).parent / "templates"
# Pinned, vendored assets: the version is in the file name, so a change of version is a change of URL.
HTMX = "htmx-2.0.11.min.js"

templates = Jinja2Blocks(directory=str(TEMPLATES))


def iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def utc(value: datetime | None) -> str:
    """The server's rendering (UTC); the browser rewrites it as local or relative if the user chose so."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000} min {ms % 60_000 // 1000} s"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


templates.env.filters.update(iso=iso, utc=utc, duration=duration, pretty=pretty, masked_url=masked_url)
# A run's status as a symbol (its name is always written beside it, for screen readers).
RUN_ICONS = {"succeeded": "✓", "failed": "✗", "running": "▶", "paused": "‖", "cancelled": "⊘"}
templates.env.globals.update(htmx=HTMX, csrf_field=CSRF_FIELD, run_icons=RUN_ICONS)


def page(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    block: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """A whole page, or one block of it (`block`) for an htmx swap."""
    settings = request.app.state.settings
    full = {"request": request, "csrf": csrf_token(settings, request), **context}
    response = templates.TemplateResponse(request, name, full, block_name=block, status_code=status)
    assert isinstance(response, HTMLResponse)
    # A form posted from a no-referrer page carries `Origin: null`; same-origin keeps the page's origin
    # on its own requests (the Origin check needs it) and still sends nothing to other sites.
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def chart(buckets: list[dict[str, Any]], width: int = 720, height: int = 180) -> dict[str, Any]:
    """Bar geometry for runs per hour: one bar per hour, succeeded stacked under failed; the template
    draws it as SVG with a text table beside it, so the numbers never depend on colour or on the image."""
    top = max((b["succeeded"] + b["failed"] + b["other"] for b in buckets), default=0) or 1
    height -= 16  # room for the hour labels under the bars
    slot = width / max(len(buckets), 1)
    bars = []
    for i, b in enumerate(buckets):
        x = i * slot + 2
        ok = b["succeeded"] / top * (height - 20)
        bad = b["failed"] / top * (height - 20)
        other = b["other"] / top * (height - 20)
        bars.append(
            {
                **b,
                "x": round(x, 1),
                "w": round(slot - 4, 1),
                "ok_y": round(height - ok, 1),
                "ok_h": round(ok, 1),
                "bad_y": round(height - ok - bad, 1),
                "bad_h": round(bad, 1),
                "other_y": round(height - ok - bad - other, 1),
                "other_h": round(other, 1),
            }
        )
    ticks = [
        {"x": bar["x"], "text": bar["hour"].strftime("%H:00")} for i, bar in enumerate(bars) if i % 6 == 0
    ]
    return {"bars": bars, "ticks": ticks, "width": width, "height": height, "top": top}
