"""The next-best-action engine (DESIGN §4). The pure decision core is ``snapshot`` (the frozen
configuration), ``risk`` (warning levels) and ``core`` (``decide``)."""
