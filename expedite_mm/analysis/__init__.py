"""What the analysis tools compute, as a library: FLOP counting
(:mod:`~expedite_mm.analysis.flops`), interleaved latency (:mod:`~expedite_mm.analysis.latency`),
label-free agreement (:mod:`~expedite_mm.analysis.agreement`), the uniform-downsampling
baseline (:mod:`~expedite_mm.analysis.downsample`), expedite settings as the tools name them
(:mod:`~expedite_mm.analysis.settings`); and per tool what it runs: a config's latency, stock
vs expedited (:mod:`~expedite_mm.analysis.benchmark`), the operators against the dense
formulation (:mod:`~expedite_mm.analysis.ops_benchmark`), token and backbone fidelity
(:mod:`~expedite_mm.analysis.token_fidelity`, :mod:`~expedite_mm.analysis.backbone_fidelity`),
the tie rule's counts (:mod:`~expedite_mm.analysis.tie_rule`), the model zoo's pages
(:mod:`~expedite_mm.analysis.model_zoo`), the demo (:mod:`~expedite_mm.analysis.demo`), the
sweep of settings (:mod:`~expedite_mm.analysis.sweep`) and the autotuner
(:mod:`~expedite_mm.analysis.autotune`, with ``autotune_space``, ``autotune_cache``,
``autotune_measure``, ``autotune_output``); the CSV files, tables and plots of the sweep
and the autotuner are written through :mod:`~expedite_mm.analysis.report`.
``tools/analysis/*.py`` (and ``tools/demo.py``) parse arguments and call it.

May import everything below it (``compat``, ``ops``, ``core``, ``models``, ``apis``)."""
