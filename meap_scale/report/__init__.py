"""Rendering of results: text tables now, the HTML scaling report later."""
