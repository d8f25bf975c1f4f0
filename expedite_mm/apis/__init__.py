"""What a user imports: config helpers (:mod:`~expedite_mm.apis.config`: load, expedite or
disable a config, build a model, write one), a stock config's expedited config
(:mod:`~expedite_mm.apis.expedite`, ``expedite-mm expedite``), safe checkpoint loading
(:mod:`~expedite_mm.apis.checkpoint`), ONNX export (:mod:`~expedite_mm.apis.deploy`),
the checkpoint converters' shared command line (:mod:`~expedite_mm.apis.convert`),
mmengine's Runner as ``tools/test.py`` and ``tools/train.py`` set it up
(:mod:`~expedite_mm.apis.runner`) and our SAM encoder in ``segment_anything``
(:mod:`~expedite_mm.apis.sam`).

May import everything below it (``compat``, ``ops``, ``core``, ``models``) and mmengine."""
