"""Evaluations of trained models: held-out loss by position and key-information retrieval."""
