"""CLIP for prompt learning: `from clip import clip` (official trainers' import) or `import clip`."""
from . import clip, model
from .clip import available_models, build_model, load, load_state_dict, tokenize

__all__ = ["available_models", "build_model", "clip", "load", "load_state_dict", "model", "tokenize"]
