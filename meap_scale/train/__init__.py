"""The training loop (plain PyTorch, also runnable without Ray) and its Ray Train launcher."""
