"""The image classifiers of the zoo as plain torch modules (no torchvision anywhere).

`MnistCNN` copies digit-recognizer-py's `model.CNN` (its package `__init__` imports
torchvision, so it is never imported); `FashionNet` is the network that
scripts/train_fmnist.py trains for `fmnist-cnn`.
"""
from __future__ import annotations

import torch
from torch import nn


class MnistCNN(nn.Module):
    """digit-recognizer-py 0.1.0 `CNN`: 3 conv + 2 FC on 28x28 digits; same parameter names."""

    def __init__(self):
        super().__init__()
        self.conv_layers = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 128, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        )
        self.fc_layers = nn.Sequential(nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_layers(self.conv_layers(x).flatten(1))


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))


class FashionNet(nn.Module):
    """A small residual CNN for Fashion-MNIST: 5 conv + BN, two residual additions, ~140k params.

    28x28 -> stem (24) -> pool -> 14x14: conv (48), residual conv (48) -> pool -> 7x7:
    conv (88), residual conv (88) -> global average -> linear (10).
    """

    def __init__(self, widths: tuple[int, int, int] = (24, 48, 88), classes: int = 10):
        super().__init__()
        a, b, c = widths
        self.stem = _conv_bn(1, a)
        self.conv2 = _conv_bn(a, b)
        self.conv3 = _conv_bn(b, b)
        self.conv4 = _conv_bn(b, c)
        self.conv5 = _conv_bn(c, c)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu, pool = torch.relu, nn.functional.max_pool2d
        x = pool(relu(self.stem(x)), 2)
        x = relu(self.conv2(x))
        x = relu(x + self.conv3(x))
        x = pool(x, 2)
        x = relu(self.conv4(x))
        x = relu(x + self.conv5(x))
        return self.fc(x.mean(dim=(2, 3)))
