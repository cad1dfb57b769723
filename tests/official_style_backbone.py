"""Registers the backbone name "TinyTest" in `clip.clip._MODELS`, loaded into train.py with
`--import official_style_backbone` by tests/test_official_style_trainer.py.

Its URL has the shape of OpenAI's (the second-to-last path segment is the file's SHA-256), so
`clip._download(url)` returns `$CLIP_CACHE_DIR/TinyTest.pt` after verifying it and never reaches the
(unreachable) host. The test writes that file and puts its SHA-256 in $OFFICIAL_STYLE_BACKBONE_SHA256.
"""
import os

from clip import clip

SHA256_ENV = "OFFICIAL_STYLE_BACKBONE_SHA256"
NAME = "TinyTest"

try:
    _sha256 = os.environ[SHA256_ENV]
except KeyError:
    raise RuntimeError(f"--import official_style_backbone needs ${SHA256_ENV}: the SHA-256 of "
                       f"$CLIP_CACHE_DIR/{NAME}.pt") from None

clip._MODELS[NAME] = f"https://example.invalid/models/{_sha256}/{NAME}.pt"
