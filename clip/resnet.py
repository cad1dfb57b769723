"""OpenAI's ModifiedResNet image tower (RN50, RN101, RN50x4, ...), with OpenAI's parameter names.

Differences from a torchvision ResNet, all part of the pretrained architecture: a three-convolution stem
with an average pool, anti-aliased downsampling (an average pool before strided paths), and an attention
pool instead of global average pooling.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .linear import Linear

EXPANSION = 4  # output channels of a bottleneck = planes * EXPANSION


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        # Stride is applied by this pool, never by a convolution (anti-aliasing).
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.downsample = None
        if stride > 1 or inplanes != planes * EXPANSION:
            # The "-1", "0", "1" names are OpenAI's state-dict keys.
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * EXPANSION, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * EXPANSION)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """Multi-head attention whose single query is the mean of the feature map (plus its position)."""

    def __init__(self, spatial_dim: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.empty(spatial_dim ** 2 + 1, embed_dim))
        self.k_proj = Linear(embed_dim, embed_dim)
        self.q_proj = Linear(embed_dim, embed_dim)
        self.v_proj = Linear(embed_dim, embed_dim)
        self.c_proj = Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self.positional_embedding.to(tokens.dtype)
        batch, length, width = tokens.shape
        head_dim = width // self.num_heads
        # Only the mean token's output is used, so it is the only query computed (same numbers, less work).
        q = self.q_proj(tokens[:, :1]).view(batch, 1, self.num_heads, head_dim).transpose(1, 2)
        k = self.k_proj(tokens).view(batch, length, self.num_heads, head_dim).transpose(1, 2)
        v = self.v_proj(tokens).view(batch, length, self.num_heads, head_dim).transpose(1, 2)
        out = attention(q, k, v, causal=False).transpose(1, 2).reshape(batch, width)
        return self.c_proj(out)


class ModifiedResNet(nn.Module):
    def __init__(self, layers: tuple[int, int, int, int], output_dim: int, heads: int,
                 input_resolution: int, width: int):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        stages = []
        inplanes = width
        for index, blocks in enumerate(layers):
            planes = width * 2 ** index
            stride = 1 if index == 0 else 2
            stage = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * EXPANSION
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttentionPool2d(input_resolution // 32, inplanes, heads, output_dim)

    def forward(self, x: torch.Tensor, prompts: torch.Tensor | None = None,
                deep_prompts: list[torch.Tensor] | None = None) -> torch.Tensor:
        if prompts is not None or deep_prompts:
            raise ValueError("Visual prompting needs a ViT backbone; this CLIP has a ModifiedResNet image encoder "
                             "(RN50/RN101/...). Choose a ViT backbone (e.g. ViT-B/16) or a text-only method.")
        x = x.to(self.conv1.weight.dtype)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)
