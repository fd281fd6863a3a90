"""Renderers of a Report: rich terminal text, JSON, SARIF, Markdown."""
