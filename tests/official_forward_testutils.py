"""Independent re-implementations of the official forward passes, run on the reference openai-clip package's
model (sequence-first, its residual blocks one by one, prompt tokens replaced per the official rules): the
references our trainers' models are compared with (test_trainers_reference.py, test_mutations_trainers.py)."""
import torch


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def assert_rel(actual: torch.Tensor | None, expected: torch.Tensor, what: str, tol: float = 1e-5) -> None:
    """Relative error of the whole tensor, ||actual - expected|| / ||expected|| <= tol: float32 results of
    differently ordered reductions (fused attention, truncated text) agree to this level, elementwise
    relative errors of near-zero entries are meaningless."""
    assert actual is not None, f"{what}: missing (no gradient reached it)"
    error = rel_error(actual, expected)
    assert error <= tol, f"{what}: relative error {error:.2e} > {tol:.0e}"


def official_text(ref, tokenized: torch.Tensor, ctx: torch.Tensor, deep: list, n_ctx: int) -> torch.Tensor:
    """TextEncoder of the official trainers (PROTOCOL §4.1/§4.5): [SOS][ctx][rest of the tokenised prompt] +
    positional embedding, sequence-first blocks, deep prompt k replacing tokens 1..n_ctx at the input of block
    k+1, ln_final at the EOT token, text projection. `ctx` is [n_ctx, D] (shared) or [n_cls, n_ctx, D]."""
    n_cls = tokenized.shape[0]
    embedding = ref.token_embedding(tokenized)
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(n_cls, -1, -1)
    x = torch.cat([embedding[:, :1], ctx, embedding[:, 1 + n_ctx:]], dim=1) + ref.positional_embedding
    x = x.permute(1, 0, 2)
    for i, block in enumerate(ref.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:1], deep[i - 1].unsqueeze(1).expand(-1, n_cls, -1), x[1 + n_ctx:]], dim=0)
        x = block(x)
    x = ref.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(n_cls), tokenized.argmax(dim=-1)] @ ref.text_projection


def official_image(ref, image: torch.Tensor, shallow: torch.Tensor | None, deep: list) -> torch.Tensor:
    """The official prompted ViT: prompts appended after CLS + patches (after +pos, before ln_pre), deep prompt
    k replacing the last n tokens at the input of block k+1, the CLS token pooled."""
    visual = ref.visual
    x = visual.conv1(image)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding
    if shallow is not None:
        x = torch.cat([x, shallow.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x).permute(1, 0, 2)
    for i, block in enumerate(visual.transformer.resblocks):
        if 1 <= i <= len(deep):
            n = deep[i - 1].shape[0]
            x = torch.cat([x[:-n], deep[i - 1].unsqueeze(1).expand(-1, x.shape[1], -1)], dim=0)
        x = block(x)
    return visual.ln_post(x.permute(1, 0, 2)[:, 0]) @ visual.proj
