"""Benchmarks that print their figures: ``python -m tfcourse.bench attention``.

Each benchmark is a module whose functions return rows (dicts) that the lessons plot and whose
``main`` prints them as a table. Timing and memory helpers are in :mod:`tfcourse.bench.measure`.
"""
