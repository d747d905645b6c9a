"""Evaluations of trained models: held-out loss by position, key-information retrieval and attention statistics."""
