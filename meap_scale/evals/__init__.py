"""Evaluations of trained models: held-out loss by position, key-information retrieval and attention statistics.

``items`` builds the retrieval items (needle, multi-document QA, two-hop) from held-out text, ``retrieval``
scores them, ``attention`` measures where the model looks, ``heldout`` the loss by position, ``suite`` runs a
run's ``EvalSpec``, ``summary`` reduces its rows to headlines, ``attach`` evaluates stored checkpoints and
``harness`` wraps lm-eval."""
