"""ExpeditedDeiT3 and ExpeditedDistilledViT against mmpretrain's DeiT3 and
DistilledVisionTransformer (docs/method.md §4.4): their embeddings (DeiT III: positions on
the patch tokens before the class token joins them, no pre-norm; DeiT: a distillation token
beside the class token) with the classification ViT's clustering, written out."""
import pytest
import torch

import expedite_mm

expedite_mm.register_all_modules()
from expedite_mm.models.mmpretrain_compat import import_stock
from expedite_mm.ops import TokenClustering, TokenReconstruction

# (imported as the package does: mmpretrain's utils need torchvision, which may be absent)
resize_pos_embed = import_stock("mmpretrain.models.utils.embed").resize_pos_embed
MODELS = import_stock("mmpretrain.registry").MODELS

SMALL = dict(arch=dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64),
             img_size=64, patch_size=8)


def build(type_="DeiT3", **kwargs):
    torch.manual_seed(0)
    model = MODELS.build(dict(type=type_, **SMALL, **kwargs))
    model.eval()                    # (mmpretrain's BaseBackbone.train returns None)
    return model


def pair(**kwargs):
    stock = build(**{k: v for k, v in kwargs.items() if k == "out_type"})
    ours = build("ExpeditedDeiT3", **kwargs)
    ours.load_state_dict(stock.state_dict(), strict=True)
    return stock, ours


def reference(stock, x, cluster_after, clustering, reconstruction=None):
    """Layers 1..alpha on all tokens, clustering of the patch tokens (the class token kept
    aside), the rest and the final norm on the centres; with ``reconstruction`` the tokens
    restored after the final norm."""
    tokens, hw = stock.patch_embed(x)
    tokens = tokens + resize_pos_embed(stock.pos_embed, stock.patch_resolution, hw,
                                       mode=stock.interpolate_mode, num_extra_tokens=0)
    x = torch.cat((stock.cls_token.expand(x.shape[0], -1, -1), tokens), dim=1)
    state = None
    for number, layer in enumerate(stock.layers, start=1):
        x = layer(x)
        if number == len(stock.layers):
            x = stock.ln1(x)
        if number == cluster_after:
            centres, state = clustering(x[:, 1:], hw)
            x = torch.cat((x[:, :1], centres), dim=1)
    if reconstruction is not None:
        x = torch.cat((x[:, :1], reconstruction(x[:, 1:], state)), dim=1)
    return x, hw


def test_disabled_is_bit_identical_with_the_stock_keys():
    stock, ours = pair()
    x = torch.randn(2, 3, 72, 56)                                  # non-square, batched
    with torch.no_grad():
        for a, b in zip(stock(x), ours(x), strict=True):
            assert torch.equal(a, b)
    _, expedited = pair(cluster_after=2, cluster_grid=(4, 4))
    assert list(expedited.state_dict()) == list(stock.state_dict())


def test_cluster_only_reads_the_class_token_from_the_centres():
    stock, ours = pair(cluster_after=2, cluster_grid=(5, 4))
    x = torch.randn(2, 3, 72, 56)                                  # 9 x 7 tokens
    with torch.no_grad():
        expected, _ = reference(stock, x, 2, TokenClustering((5, 4), temperature=1.0))
        [got] = ours(x)
        assert not torch.allclose(got, stock(x)[0], atol=1e-4)
    torch.testing.assert_close(got, expected[:, 0], atol=1e-5, rtol=1e-5)


def test_reconstructed_feature_map():
    stock, ours = pair(cluster_after=1, cluster_grid=(5, 4), reconstruct=True,
                       out_type="featmap")
    x = torch.randn(1, 3, 72, 56)
    with torch.no_grad():
        expected, hw = reference(stock, x, 1, TokenClustering((5, 4), temperature=1.0),
                                 TokenReconstruction(temperature=1.0))
        [got] = ours(x)
    assert got.shape == (1, 32, 9, 7)
    torch.testing.assert_close(got, expected[:, 1:].transpose(1, 2).reshape(1, 32, *hw),
                               atol=1e-5, rtol=1e-5)


def test_tome_inside_the_layers_runs_after_deit3s_embedding():
    """ToMe with r=0 merges nothing: the layers computed from their submodules give the
    stock output; with r=4 the class token still comes out."""
    stock, ours = pair(layerwise_reducer=dict(type="ToMe", r=0))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], stock(x)[0], atol=1e-5, rtol=1e-5)
        _, merging = pair(layerwise_reducer=dict(type="ToMe", r=4))
        assert merging(x)[0].shape == (2, 32)


# --------------------------------------------------------------------------- DeiT (distilled)
def test_distilled_deit_keeps_both_extra_tokens_aside():
    """DeiT's distillation token joins the class token aside from clustering; both are
    read from the centres' layers, as the stock model returns them; disabled is stock."""
    arguments = dict(arch="deit-tiny", img_size=64, patch_size=8)
    torch.manual_seed(0)
    stock = MODELS.build(dict(type="DistilledVisionTransformer", **arguments))
    ours = MODELS.build(dict(type="ExpeditedDistilledViT", **arguments))
    expedited = MODELS.build(dict(type="ExpeditedDistilledViT", cluster_after=2,
                                  cluster_grid=(5, 4), **arguments))
    for model in (stock, ours, expedited):
        model.eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    expedited.load_state_dict(stock.state_dict(), strict=True)
    x = torch.randn(2, 3, 72, 56)
    with torch.no_grad():
        for a, b in zip(stock(x)[0], ours(x)[0], strict=True):
            assert torch.equal(a, b)
        # written out: layers 1-2 on all tokens, the patch tokens clustered, the rest and the
        # final norm on [class, distillation, centres]
        tokens, hw = stock.patch_embed(x)
        t = torch.cat((stock.cls_token.expand(2, -1, -1), stock.dist_token.expand(2, -1, -1),
                       tokens), dim=1)
        t = t + stock.resize_pos_embed(stock.pos_embed, stock.patch_resolution, hw,
                                       num_extra_tokens=2)
        for number, layer in enumerate(stock.layers, start=1):
            t = layer(t)
            if number == 2:
                centres, _ = TokenClustering((5, 4), temperature=1.0)(t[:, 2:], hw)
                t = torch.cat((t[:, :2], centres), dim=1)
        t = stock.ln1(t)
        cls_token, dist_token = expedited(x)[0]
    torch.testing.assert_close(cls_token, t[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dist_token, t[:, 1], atol=1e-5, rtol=1e-5)
    for changes in (dict(cluster_after=2, reducer=dict(type="EViT")),
                    dict(layerwise_reducer=dict(type="ToMe", r=4))):
        with pytest.raises(ValueError, match="assume one class token"):
            MODELS.build(dict(type="ExpeditedDistilledViT", **arguments, **changes))
