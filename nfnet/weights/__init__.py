"""Reading the NFNet weights people already have, one concern per module:

    haiku_pickle   DeepMind's F*_haiku.npz, through a restricted unpickler
    timm_file      timm dm_nfnet_* state dicts (.safetensors, .pth, .bin)
    torch_zip      torch.save's zip archives read without PyTorch
    names          their parameter names and layouts against ours
    architecture   the NFNet a set of parameter shapes describes
    description    an NFNet's constructor fields as JSON (model.json)

`nfnet.convert` puts them together (translate, infer, build, check every
tensor) and is the `python -m nfnet.convert` command.
"""
