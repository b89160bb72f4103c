"""Difference-in-means directions per layer, stored position and label set (``probing directions``).

:mod:`labels` turns a feature file's label datasets into named label sets (rows → 1, 0 or -1),
:mod:`compute` fits and scores the directions, :mod:`report` writes the CSV, arrays and heatmap,
:mod:`locate` places a held-out class on them and :mod:`run` does all of it for one config.
"""
