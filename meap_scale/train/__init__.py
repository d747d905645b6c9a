"""The training loop (plain PyTorch, also runnable without Ray) and its Ray Train launcher.

``loop`` and ``session`` train a run on one worker or many; ``trainer`` launches it as a Ray Train job and
``branches`` a multi-budget family; ``cluster`` says which Ray it joins, ``shared_storage`` checks that its
nodes share the command's folders, and ``preflight`` refuses what cannot fit before it costs anything;
``memory`` estimates a run's peak memory, ``devices`` knows accelerators, ``metrics`` computes MFU and
``telemetry`` exports live gauges, ``parallel`` wraps DDP and FSDP2 and ``checkpoint`` saves and restores.
"""
