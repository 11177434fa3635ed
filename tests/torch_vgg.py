"""torchvision's VGG layout in plain torch.nn, for parity tests (torchvision is not installed).

Same module tree as ``torchvision/models/vgg.py``: ``features`` (Conv2d [, BatchNorm2d],
ReLU per conv; MaxPool2d per block), ``avgpool`` (AdaptiveAvgPool2d(7)), ``classifier``
(Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear), with torchvision's init. A dilated
arch's convs get ``Conv2d(dilation=d, padding=d·(k//2))`` (torchvision's VGG has no dilation).
"""

import torch
from torch import nn

from vggjax.arch import get_arch


class TorchVGG(nn.Module):
    def __init__(self, arch, *, channels=3, num_classes=1000, hidden=4096, width=1.0):
        super().__init__()
        spec = get_arch(arch, width=width)
        feats, c_in = [], channels
        for block in spec.blocks:
            for k, d in zip(block.kernels, block.dilations, strict=True):
                feats.append(nn.Conv2d(c_in, block.channels, k, padding=d * (k // 2), dilation=d))
                if spec.batch_norm:
                    feats.append(nn.BatchNorm2d(block.channels))
                feats.append(nn.ReLU(inplace=True))
                c_in = block.channels
            feats.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*feats)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c_in * 7 * 7, hidden),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():  # torchvision's _initialize_weights
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def make_torch_vgg(arch, *, seed=0, **kwargs):
    """A TorchVGG in eval mode with non-zero biases and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = TorchVGG(arch, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(100)
    return model.eval()
