"""EDF (Emphasize Discriminative Features): Common Pattern Dropout + Discriminative Area Enhancement.

Not implemented yet (issue #7). This package deliberately registers no method, so ``compdd
list-methods`` does not offer an ``edf`` that cannot run. Once built, it will register ``edf`` through
the ``compdd.methods`` entry point, using only compdd's public API.
"""

__all__: list[str] = []
