"""Microbenchmarks of equitensor's operations against each other and against other libraries.

``equitensor bench tp|conv|product|model`` (see :mod:`equitensor.bench.cli`). Pieces, one job
each: :mod:`.timing` (warm-up, interleaved repetitions, CUDA events, peak memory),
:mod:`.environment` (hardware, versions, peak rates), :mod:`.counts` (FLOP and byte counts),
:mod:`.passes` (fwd / fwd+bwd / double backward), :mod:`.peers` (e3nn, cuEquivariance),
:mod:`.cases` (the operations), :mod:`.runner` (check, then time), :mod:`.report` (table, JSON,
CSV, plots).
"""
