"""Every document FairMed writes, and the review-meeting evidence pack.

Modules (import what you need; the pack's renderer pulls in plotly and jinja2, the plan does not)::

    plan          the audit plan: read/write JSON or TOML, content hash, lock, deviations, plan_from_run
    verdicts      meets / fails / insufficient evidence from intervals against the plan's margins
    comparison    runs on the same cases compared with paired bootstrap intervals
    evidence      everything the pack shows, gathered into one frozen value
    pack          HTML (plotly.js inline), PDF (headless chromium), JSON and the manifest of hashes
    signoff       the append-only decision log and verify
    store         where reviews live in a workspace
    cli_commands  ``fairmed plan init`` and ``fairmed report build|sign|verify``
    sections      Markdown documents made of sections that different writers own
"""
