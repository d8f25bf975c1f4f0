"""Checkpoint converters, as a library: the key mappings of released checkpoints to our
configs' key names -- Segmenter (:mod:`~expedite_mm.converters.segmenter`), DPT hybrid
(:mod:`~expedite_mm.converters.dpt`), SWAG ViTs (:mod:`~expedite_mm.converters.swag`) --
and a training checkpoint made shippable (:mod:`~expedite_mm.converters.publish`), with
what they share (:mod:`~expedite_mm.converters.keys`). ``tools/model_converters/*.py``
parse arguments and call it.

May import everything below it (``compat``, ``ops``, ``core``, ``models``,
``registration``, ``apis``); not ``analysis``, its neighbour on the same floor."""
