"""Nucleus (top_p) draws, exact, without sorting the vocabulary.

The nucleus of a row is the smallest set of its most likely tokens whose probability reaches
top_p; ties rank the lower token id first (a stable sort), so the set is well defined. Sorting
a 49,152-token vocabulary for 32 rows cost as much as the model's whole decode step (B1 at
top_p 0.9: ~310 against ~600 tok/s at top_p 1), yet nuclei are small: SmolLM2 at temperature
0.7 gives 2 tokens at the median and 129 at most for top_p 0.9 (1,536 draws; 99% within 51). So the
``CANDIDATES`` most likely tokens are ranked (``torch.topk``), and the nucleus is taken from
them when it provably lies inside them: it ends before the last candidate and its last token
is strictly more likely than the last candidate (no token outside could tie with it). Rows
where that fails are flagged, and the caller ranks more of their vocabulary, up to all of it
(``full_rank``); the kept set, its probabilities and the drawn token are the same as with a
full sort (bit for bit on CPU, where cumsum adds in order).
"""

from __future__ import annotations

import torch

# torch.topk on CPU costs about as much as a softmax at k = 32 and 15 times that at k = 256,
# so few are ranked first, and a row that needs more is ranked again, WIDEN times wider.
CANDIDATES = 64
WIDEN = 16


def ranked(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most likely tokens of each row, by probability then token id (values, ids)."""
    values, ids = probs.topk(k, dim=-1)
    # topk orders ties arbitrarily; rank them by id as the stable full sort does.
    ids, order = ids.sort(dim=-1)
    values, order2 = values.gather(-1, order).sort(dim=-1, descending=True, stable=True)
    return values, ids.gather(-1, order2)


def full_rank(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every token of each row, by probability then token id (values, ids)."""
    values, ids = probs.sort(dim=-1, descending=True, stable=True)
    return values, ids


def kept(values: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """How many of the ranked tokens form each row's nucleus (``[rows]``, at least 1)."""
    before = values.cumsum(dim=-1) - values  # mass ranked above each token
    keep = before < top_p  # a prefix of each row, as ``before`` never decreases
    keep[:, 0] = True  # the most likely token always stays (top_p 0 means greedy)
    return keep.sum(dim=-1)


def unsure(values: torch.Tensor, count: torch.Tensor, vocab: int) -> torch.Tensor:
    """Rows whose nucleus may reach past the ranked candidates (``[rows]`` bool)."""
    k = values.shape[1]
    if k >= vocab:
        return torch.zeros(values.shape[0], dtype=torch.bool, device=values.device)
    last = values.gather(1, (count - 1).unsqueeze(1)).squeeze(1)
    return (count >= k) | (last <= values[:, -1])


def draw(
    values: torch.Tensor, ids: torch.Tensor, count: torch.Tensor, uniform: torch.Tensor
) -> torch.Tensor:
    """The token each row's uniform picks from its nucleus, by inverse CDF (``[rows]``)."""
    cdf = values.cumsum(dim=-1)
    total = cdf.gather(1, (count - 1).unsqueeze(1))
    at = torch.searchsorted(cdf, uniform.unsqueeze(1) * total, right=True)
    at = torch.minimum(at, (count - 1).unsqueeze(1))  # float rounding at the nucleus's top
    return ids.gather(1, at).squeeze(1)
