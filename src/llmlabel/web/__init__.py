"""Server-rendered pages over the same services as the API: annotate, review, dashboard.

    pages.py    the router: login, project list, annotate, review, dashboard (thin, like the API)
    auth.py     the session cookie (it holds the API token) and CSRF tokens for its forms
    render.py   templates, security headers, and the one place errors become pages
    metrics.py  what the dashboard measures: throughput, agreement, per-voter figures
    charts.py   inline SVG geometry (no JavaScript charting)

Mounted by ``llmlabel.api.create_app`` under ``/ui``.
"""

from __future__ import annotations
