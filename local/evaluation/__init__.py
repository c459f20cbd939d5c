"""Stages 3 and 4: metrics per mixture and source (`evaluate`), oracle masks (`oracle`), per-category and
per-overlap breakdowns (`breakdowns`), the HTML page and figures (`pages`) and the results table (`report`)."""
