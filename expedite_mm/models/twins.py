"""``ExpeditedPCPVT``: mmseg's Twins ``PCPVT`` with token clustering in one stage
(``pyramid.py``; ``docs/method.md`` §4.8); ``ExpeditedSVT`` is in ``twins_svt.py``. Twins
builds its stages from lists (``patch_embeds``, ``layers``, ``position_encodings``,
``norm_list``) and applies its conditional position encoding (a depthwise convolution on
the map) after each stage's first block; on the centres it runs on their grid like the
blocks."""
from typing import Sequence

from mmseg.models.backbones.twins import PCPVT
from torch import Tensor, nn

from .pyramid import PyramidExpediteMixin, _to_map


class TwinsExpediteMixin(PyramidExpediteMixin):
    """Twins' stages for :class:`PyramidExpediteMixin`. SVT alternates locally grouped
    (window) attention and global sub-sampled attention; on the centres the windows are
    taken over their grid, as on any map."""

    def stage_steps(self, stage: int) -> Sequence[nn.Module]:
        return self.layers[stage]

    def patch_embeddings(self) -> Sequence[nn.Module]:
        return self.patch_embeds

    def forward(self, x: Tensor):
        if not self.expedited:
            return super().forward(x)
        outputs = []
        for i in range(len(self.depths)):
            x, hw = self.patch_embeds[i](x)
            x = self.position_encoding_drops[i](x)
            norm = self.norm_list[i] if self.norm_after_stage else nn.Identity()
            if i == self.expedited_stage:
                x = self._expedited_stage(x, hw, self.layers[i], norm,
                                          after_first=self.position_encodings[i])
            else:
                for j, block in enumerate(self.layers[i]):
                    x = block(x, hw)
                    if j == 0:
                        x = self.position_encodings[i](x, hw)
                x = norm(x)
            x = _to_map(x, hw)
            if i in self.out_indices:
                outputs.append(x)
        return tuple(outputs)


class ExpeditedPCPVT(TwinsExpediteMixin, PCPVT):
    """mmseg's Twins ``PCPVT`` that runs blocks ``cluster_after+1 .. reconstruct_after`` of
    stage ``stage`` on a grid of cluster centres: every stock argument and state-dict key,
    plus the expedite arguments of :class:`~expedite_mm.models.pyramid.PyramidExpediteMixin`."""


__all__ = ["ExpeditedPCPVT", "TwinsExpediteMixin"]
