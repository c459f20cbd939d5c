"""Benchmarks: scripts that print figures and write JSON, run as `python -m local.benchmarks.<name>`
(models, storage, eval, resume, dpcl). Never imported by the recipe itself."""
