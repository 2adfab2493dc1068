"""Writes torch_checkpoint.pth, the PyTorch checkpoint the reader's tests
read (tests/test_torch_zip.py). It needs PyTorch, which the tests do not:

    python tests/data/write_torch_checkpoint.py

A timm-style training checkpoint: a DataParallel state dict ("module."
names) with tensors of each dtype a weight file may hold, views that share
one storage at offsets and strides, a Parameter, a scalar and an empty
tensor, beside an SGD optimizer's state, an argparse.Namespace and an EMA
copy, as timm's train.py saves them. Every value is k / 8 - 1 for small
integers k, exact in float16 and bfloat16.
"""
import argparse
import collections
import os

import torch


def checkpoint() -> dict:
  base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 8 - 1
  state = collections.OrderedDict([
      ("module.stem.conv1.weight", base),
      ("module.stem.conv1.bias", base[1, :, 1]),       # offset 13, stride 4
      ("module.head.fc.weight", base.transpose(0, 2)),  # not contiguous
      ("module.half", base.half()),
      ("module.bfloat16", base.bfloat16()),
      ("module.double", base.double()),
      ("module.skipinit_gain", torch.tensor(0.5)),
      ("module.num_batches_tracked", torch.tensor(7)),
      ("module.parameter", torch.nn.Parameter(base[0].clone())),
      ("module.empty", torch.zeros(0, 3)),
      ("module.uint16", torch.arange(5).to(torch.uint16)),
  ])
  weight = torch.nn.Parameter(base.clone())
  optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
  weight.sum().backward()
  optimizer.step()
  ema = collections.OrderedDict((k, v.detach() * 0) for k, v in state.items())
  return {"epoch": 3, "arch": "dm_nfnet_f0", "state_dict": state,
          "optimizer": optimizer.state_dict(),
          "args": argparse.Namespace(lr=0.1, model="dm_nfnet_f0"),
          "state_dict_ema": ema}


if __name__ == "__main__":
  torch.save(checkpoint(), os.path.join(os.path.dirname(__file__),
                                        "torch_checkpoint.pth"))
