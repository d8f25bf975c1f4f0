"""Every family's expedited backbone, one adapter module each, on the stock classes of
the OpenMMLab packages (``vit``, ``beit``, ``swin`` + ``swin_mmseg``/``swin_mmdet``,
``swinv2``, ``vit_sam``, ``vit_mmpretrain`` + ``deit``/``deit3``, ``pyramid`` +
``mit``/``pvt``/``pvtv2``/``twins``/``twins_svt``, ``dpt/``), the segmentor of the logits
placement (``segmentor``), what mmpretrain needs without torchvision
(``mmpretrain_compat``), and the family table that describes them (``families``).

May import ``ops``, ``core`` and ``compat`` below it and the OpenMMLab packages. Importing
this package imports none of its modules: registration
(:func:`expedite_mm.register_all_modules`) imports what the installed packages need.
"""
