"""Rendering of results: the text tables the CLI prints and the self-contained HTML scaling report (``build``)."""
