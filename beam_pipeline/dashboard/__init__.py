"""A local web dashboard over the job's Delta tables (issue 19).

``python -m beam_pipeline.dashboard --output=ROOT`` serves one page with four views: review insights (the
seeds' charts), trending products / brands / categories for a chosen day, a reviewer view (recent brands,
history, recommendations per model) and pipeline health (run history, dead letters with raw payloads,
streaming freshness). It only reads tables: ``data`` aggregates them into small JSON answers cached per
table version, ``server`` serves them with the standard library's HTTP server, and ``static/`` holds the
page (plain JavaScript that draws its own SVG charts and builds its DOM with ``textContent`` only).
"""
