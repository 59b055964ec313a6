"""Long-running flows that drive runners and the store: ``generate``, the farm, ``lut build``.

Each is resumable and kill-safe: work is a queue of jobs in the store, and a result is written in the same
transaction that completes its job.
"""
