"""EDF (Emphasize Discriminative Features): Common Pattern Dropout + Discriminative Area Enhancement.

A third-party-style method package for compdd: it registers the method ``edf`` through the
``compdd.methods`` entry point (``edf = "edf.method:EDF"``) and uses compdd's public API only.

- :mod:`edf.method`   the ``EDF`` method and its config (DATM on compdd's trajectory-matching engine + two hooks)
- :mod:`edf.cpd`      Common Pattern Dropout, the loss reduction
- :mod:`edf.dae`      Discriminative Area Enhancement, the image-gradient weights F(M, beta) and their hook
- :mod:`edf.cam`      CAM models (ImageNet classifier or a model trained on the subset), Grad-CAM, Smooth Grad-CAM++
- :mod:`edf.analysis` discriminative-area percentages before/after and CAM overlay figures
- ``edf/configs/edf.yaml``  EDF's hyper-parameters per subset and IPC
"""

__all__: list[str] = []
