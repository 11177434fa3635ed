"""torchvision ⇄ vggjax: numerical parity with PyTorch, the flatten order, strict errors.

The torchvision layout is built in plain torch.nn (tests/torch_vgg.py) with torchvision's
init plus random biases and BatchNorm statistics, in eval mode.
"""

import gc

import jax
import numpy as np
import pytest
import torch
from tiny import TINY, tiny_arch
from torch_vgg import make_torch_vgg

from vggjax.arch import get_arch, layers
from vggjax.errors import ArchError, CheckpointError
from vggjax.interop.torchfile import read_state_dict
from vggjax.interop.torchvision import fc6_from_torch, from_torchvision, to_torchvision
from vggjax.nn.features import features

TOL = 1e-4  # max abs difference allowed between PyTorch and vggjax


def numpy_state(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def torch_taps(module, arch, x_nchw):
    """PyTorch activations by VGG layer name (conv1_1 … pool5, fc6 … fc8); maps as NHWC.

    Each layer's torch module is looked up by the torchvision name vggjax gives it, and
    every leaf module of the torch model must be visited once.
    """
    out, h, visited = {}, torch.from_numpy(x_nchw), []
    with torch.no_grad():
        for layer in layers(arch, head="adaptive"):
            if layer.torchvision is None:
                assert layer.kind == "flatten"
                h = torch.flatten(h, 1)
            else:
                h = module.get_submodule(layer.torchvision)(h)
                visited.append(layer.torchvision)
            # copy: the next ReLU is in-place
            out[layer.name] = (h.permute(0, 2, 3, 1) if h.ndim == 4 else h).numpy().copy()
    leaves = [name for name, m in module.named_modules() if not list(m.children())]
    assert visited == leaves
    return out


def assert_parity(module, model, variables, size, taps, batch=1, seed=0):
    """Logits (fc8) and the named features ``taps`` equal PyTorch's within TOL."""
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size), np.float32)
    ref = torch_taps(module, model.arch, x)
    got = features(model, variables, x.transpose(0, 2, 3, 1), (*taps, "fc8"))
    assert got["fc8"].shape == ref["fc8"].shape == (batch, 1000)
    diff = float(np.abs(got["fc8"] - ref["fc8"]).max())
    assert diff <= TOL and diff <= 1e-3 * float(np.abs(ref["fc8"]).max()), (size, diff)
    for name in taps:
        mine, theirs = np.asarray(got[name]), ref[name]
        assert mine.shape == theirs.shape, name
        assert float(np.abs(mine - theirs).max()) <= TOL * max(1.0, float(np.abs(theirs).max())), name


@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn"])
def test_parity_full_size_224_and_100(name):
    module = make_torch_vgg(name)
    state = numpy_state(module)
    variables, head = from_torchvision(state, name)
    assert head.head == "adaptive" and head.num_classes == 1000 and head.channels == 3
    spec = get_arch(name)
    model = head.model(spec)
    taps = ("conv1_1", "bn2_1" if spec.batch_norm else "relu2_1", "pool3", "pool5", "relu7")
    assert_parity(module, model, variables, 224, taps)
    assert_parity(module, model, variables, 100, taps, batch=2, seed=1)  # 3x3 map -> adaptive 7x7
    if name == "vgg11_bn":
        bn = variables["batch_stats"]["block3"]["bn2"]
        np.testing.assert_array_equal(bn["var"], module.features[12].running_var.numpy())
    del module, state, variables
    gc.collect()


def test_parity_with_torch_dilated_convs_and_no_torchvision_export():
    # torch's Conv2d(dilation=d, padding=d·(k//2)) has the same weights as the plain conv.
    arch = "((1,64),(2,128,3,(1,2)),(2,256,3,2),(2,512,3,(2,4)),(2,512,(3,1),(3,5)))"
    module = make_torch_vgg(arch, width=0.125, hidden=64)
    spec = get_arch(arch, width=0.125)
    variables, head = from_torchvision(numpy_state(module), spec)
    assert_parity(
        module, head.model(spec), variables, 64, ("conv2_2", "relu3_2", "conv4_2", "conv5_2", "pool5")
    )
    message = (
        "torchvision's VGG has no dilated convs, but this arch dilates conv2_2 (2), conv3_1 (2), conv3_2 (2) "
        "and 4 more: torchvision.models.vgg* would load the weights and compute something else; "
        "export only runs without dilations"
    )
    with pytest.raises(ArchError) as e:
        to_torchvision(variables, spec)
    assert str(e.value) == message


@pytest.fixture(scope="module")
def vgg16(tmp_path_factory):
    """A full-size torchvision vgg16 saved with torch.save and read back without torch."""
    module = make_torch_vgg("vgg16", seed=3)
    path = tmp_path_factory.mktemp("vgg16") / "vgg16.pth"
    torch.save(module.state_dict(), path)
    yield module, read_state_dict(path)
    gc.collect()


def test_parity_vgg16_from_pth_file(vgg16):
    module, state = vgg16
    variables, head = from_torchvision(state, "vgg16")
    params = variables["params"]
    assert sum(p.size for p in jax.tree.leaves(params)) == 138_357_544
    # Johnson et al.'s perceptual-loss taps, then the head.
    taps = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "pool5", "fc7")
    model = head.model(get_arch("vgg16"))
    assert_parity(module, model, variables, 224, taps)
    assert_parity(module, model, variables, 64, ("relu3_3", "pool5"), seed=2)  # 2x2 map -> adaptive 7x7


def test_wrong_arch_names_key_and_suggests_the_file_arch(vgg16):
    _, state = vgg16
    for arch, key in [("vgg11", "features.3.weight"), ("vgg19", "features.16.weight")]:
        message = rf"the file has no {key} \(and \d+ more\), which {arch} needs; the file looks like vgg16"
        with pytest.raises(CheckpointError, match=message):
            from_torchvision(state, arch)
    with pytest.raises(
        CheckpointError, match=r"features\.0\.weight: the file has shape \[64, 3, 3, 3\] .* \[32, 3"
    ):
        from_torchvision(state, get_arch("vgg16", width=0.5))


def test_fc6_flatten_order_single_input_index():
    # PyTorch flattens [C, 7, 7] channel-first: input index c*49 + h*7 + w.
    channels, out, c, h, w, o = 64, 4, 5, 2, 3, 1
    weight = np.zeros((out, channels * 49), np.float32)
    weight[o, c * 49 + h * 7 + w] = 1.0
    kernel = fc6_from_torch(weight, channels, 7)
    # vggjax flattens [7, 7, C] (NHWC): row (h*7 + w)*C + c.
    assert kernel.shape == (49 * channels, out)
    assert list(zip(*np.nonzero(kernel), strict=True)) == [((h * 7 + w) * channels + c, o)]
    # And through the model: the same single input activation reaches the same output.
    module = make_torch_vgg("vgg11", width=0.125, hidden=out, num_classes=3)
    state = numpy_state(module)
    state["classifier.0.weight"] = weight
    variables, _ = from_torchvision(state, tiny_arch())
    fmap = np.zeros((1, 7, 7, channels), np.float32)
    fmap[0, h, w, c] = 2.0
    dense = fmap.reshape(1, -1) @ np.asarray(variables["params"]["fc6"]["kernel"])
    assert dense[0, o] == 2.0 and np.count_nonzero(dense) == 1


@pytest.fixture(scope="module")
def small_bn():
    module = make_torch_vgg("vgg11_bn", **TINY, num_classes=10)
    return module, numpy_state(module), tiny_arch("vgg11_bn")


def test_round_trip_export_import_is_identical(small_bn):
    _, state, arch = small_bn
    variables, _ = from_torchvision(state, arch)
    back = to_torchvision(variables, arch)
    assert list(back) == list(state)  # same keys in torch's order
    for key in state:
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key], state[key])
    again, _ = from_torchvision(back, arch)
    jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_module_prefix_is_stripped_and_said(small_bn):
    _, state, arch = small_bn
    notes = []
    wrapped = {f"module.{k}": v for k, v in state.items()}
    variables, _ = from_torchvision(wrapped, arch, log=notes.append)
    assert notes == [
        "note: stripped the 'module.' prefix (a DataParallel/DistributedDataParallel state_dict)"
    ]
    plain, _ = from_torchvision(state, arch, log=notes.append)
    jax.tree.map(np.testing.assert_array_equal, variables, plain)


def test_bn_and_plain_variants_are_never_mapped_positionally(small_bn):
    _, state, _ = small_bn
    with pytest.raises(CheckpointError, match=r"BatchNorm weights .*i\.e\. vgg11_bn, but the arch is vgg11 "):
        from_torchvision(state, tiny_arch())
    plain = numpy_state(make_torch_vgg("vgg11", **TINY, num_classes=10))
    with pytest.raises(CheckpointError, match=r"without BatchNorm, i\.e\. vgg11, but the arch is vgg11_bn "):
        from_torchvision(plain, tiny_arch("vgg11_bn"))


def test_extra_missing_and_misshapen_keys(small_bn):
    _, state, arch = small_bn
    with pytest.raises(CheckpointError, match=r"unexpected key features\.99\.weight in the file"):
        from_torchvision({**state, "features.99.weight": np.zeros(3, np.float32)}, arch)
    partial = {k: v for k, v in state.items() if k != "features.4.bias"}
    with pytest.raises(CheckpointError, match=r"the file has no features\.4\.bias"):
        from_torchvision(partial, arch)
    bad = {**state, "features.4.weight": np.zeros((16, 8, 5, 5), np.float32)}
    with pytest.raises(
        CheckpointError, match=r"features\.4\.weight: the file has shape \[16, 8, 5, 5\] .* \[16, 8, 3, 3\]"
    ):
        from_torchvision(bad, arch)
