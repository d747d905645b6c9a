"""Studies: search spaces, presets, and the Ray Tune runner that fills the results store."""
