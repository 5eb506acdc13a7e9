"""`citygw report`: the U4SSC indicators of a reporting period, with completeness and comparisons.

source.py reads the KPI series, figures.py computes the figures, render.py and charts.py write HTML, JSON and
CSV, build.py ties them to a config, command.py is the CLI. docs/report.md explains every figure. This file
imports nothing, so the CLI can load the command without numpy and matplotlib.
"""
