"""`build_sampler`: the torch samplers Dassl's loaders use for these trainers."""
from torch.utils.data import RandomSampler, Sampler, SequentialSampler

AVAI_SAMPLERS = ["RandomSampler", "SequentialSampler"]
# Dassl's domain/class-balanced samplers, used only by its DA/DG trainers and not provided here.
UNSUPPORTED_SAMPLERS = ["RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler"]


def build_sampler(sampler_type: str, cfg=None, data_source=None, batch_size: int = 32, n_domain: int = 0, n_ins: int = 16) -> Sampler:
    """RandomSampler (reshuffled each epoch from the torch RNG) or SequentialSampler over `data_source`."""
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    hint = " (a Dassl domain-adaptation sampler this implementation does not provide)" if sampler_type in UNSUPPORTED_SAMPLERS else ""
    raise ValueError(f"Unknown sampler {sampler_type!r}{hint}; valid samplers: {AVAI_SAMPLERS}")
