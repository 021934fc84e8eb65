"""Sweeps: every combination of shrink method, width, fine-tune budget, precision, calibration,
runtime and skipping over several scenes, run as Ray tasks, cached per cell, in one table.

``spec`` reads and checks the sweep file, ``cells`` expands its axes into cells and the shared
stages they need, ``engine`` runs the stages on Ray, ``table`` writes the results, and
``run.run_sweep`` ties them together (what ``nerfexport sweep`` runs).
"""
