"""OpenAI CLIP's byte-level BPE tokenizer (same cleaning, pre-tokenizer, vocabulary order and merges, hence
the same token ids). The merges file `bpe_simple_vocab_16e6.txt.gz` is OpenAI's data, shipped alongside."""
from __future__ import annotations

import functools
import gzip
import html
import os

import ftfy
import regex

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
END_OF_WORD = "</w>"
# The vocabulary has 49,408 entries: 512 byte symbols (plain and end-of-word), the merges, and SOT/EOT.
_NUM_MERGES = 49152 - 256 - 2

# OpenAI's pre-tokenizer: special tokens, English contractions, letter runs, single digits, and runs of
# other non-space characters.
_PRETOKENIZE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def default_bpe() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character (printable Latin-1 bytes map to themselves, the
    others to code points from 256 upward, in byte order). Dict order is the vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def basic_clean(text: str) -> str:
    # Twice-unescaped HTML as OpenAI does ("&amp;amp;" -> "&").
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def whitespace_clean(text: str) -> str:
    return regex.sub(r"\s+", " ", text).strip()


class SimpleTokenizer:
    def __init__(self, bpe_path: str = default_bpe()):
        with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:1 + _NUM_MERGES]]  # line 0 is a version header
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {char: byte for byte, char in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [symbol + END_OF_WORD for symbol in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {token: index for index, token in enumerate(vocab)}
        self.decoder = {index: token for token, index in self.encoder.items()}
        self.bpe_ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.cache: dict[str, str] = {SOT: SOT, EOT: EOT}

    def bpe(self, token: str) -> str:
        """Merge the characters of one pre-token, always applying the lowest-ranked adjacent pair next.
        Returns the BPE symbols joined by spaces."""
        if token in self.cache:
            return self.cache[token]
        word = [*token[:-1], token[-1] + END_OF_WORD]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged = []
            i = 0
            while i < len(word):  # left to right, non-overlapping occurrences of the best pair
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        result = " ".join(word)
        self.cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without SOT/EOT."""
        ids = []
        for piece in _PRETOKENIZE.findall(whitespace_clean(basic_clean(text)).lower()):
            mapped = "".join(self.byte_encoder[byte] for byte in piece.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.bpe(mapped).split(" "))
        return ids

    def decode(self, tokens: list[int]) -> str:
        text = "".join(self.decoder[token] for token in tokens)
        raw = bytearray(self.byte_decoder[char] for char in text)
        return raw.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")
