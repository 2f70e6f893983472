"""A row's text as it grows, decoded a few tokens at a time.

Decoding a row's whole text every step to look for its stop strings (and again to stream it)
cost 17 us at 50 tokens and 297 us at 1,000, per row and stop string: quadratic over a
request. ``GrowingText`` decodes only a window of the latest tokens (the offsets of
Hugging Face text-generation-inference's ``decode_token``): the tokens since the last complete
text, with those of the chunk before them for context (some tokenizers decode a token
differently at the start of a text). Text that ends in half a multi-byte character waits for
the next token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_REPLACEMENT = "\ufffd"


class GrowingText:
    """The decoded text of a growing token list, and what its latest tokens added."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self.text = ""
        self.added = ""  # the text the latest ``update`` added
        self._prefix = 0  # window start: tokens before it are in ``text`` and not decoded again
        self._read = 0  # tokens up to here are in ``text``

    def update(self, tokens: Sequence[int]) -> str:
        """Catch up with ``tokens`` (the whole list so far); returns the text they added."""
        self.added = ""
        if len(tokens) <= self._read:
            return ""
        before = self._decode(list(tokens[self._prefix : self._read]))
        window = self._decode(list(tokens[self._prefix :]))
        if len(window) > len(before) and not window.endswith(_REPLACEMENT):
            self.added = window[len(before) :]
            self.text += self.added
            self._prefix = self._read
            self._read = len(tokens)
        return self.added

    def recent(self, span: int) -> str:
        """The text a string of ``span`` characters completed by the latest update lies in."""
        if not self.added:
            return ""
        return self.text[-(len(self.added) + span - 1) :]
