"""``text-sequence``: a causal transformer over a user's time-ordered history of frozen text-encoded items.

Why: a cold user has a few interactions in time order and the catalogue has items no one has rated yet.  Items
enter as vectors of a frozen pretrained sentence encoder (encoded once, outside the model: ``item_vectors``, a
``[num_items, text_dim]`` table kept as a buffer, so the encoder is never in any autograd graph), mapped to ``dim``
by a learned adaptor (per-dimension standardisation, then ``Linear``); a small causal transformer (pre-LN, as in
SASRec, Kang & McAuley 2018, with GPT-style blocks) reads the history; the score of a candidate is the dot product
of the sequence state with the candidate's adapted vector (/ sqrt(d)), so an item first seen at test time is
scorable, plus an optional learned per-item bias (``item_bias``; zero for items never trained; text vectors do not
state popularity, which dominates next-item cold start).

Parameter-efficient adaptation: ``prompt_len`` learned prefix tokens (``encoder.prompt``, a soft prompt, Lester
et al. 2021) and, with ``lora_rank`` > 0, low-rank adapters on every block's query and value projections
(``LoRALinear``, Hu et al. 2021).  ``adapt: ["encoder.prompt", "*lora*"]`` makes them the per-user fast weights of
the shared inner loop (``metarec_pl/inner/reference.py``); everything else is meta-learned in the outer loop only.

Inputs (``features``, any leading shape ``[...]``): ``seq_history`` ``[..., L]`` long, the context's item codes + 1
in time order, right-padded with 0 (L <= ``max_len``); ``seq_item`` ``[...]`` long, the candidate's item code.
Positions count from the first history item, so the state after the first t items is the same whether or not
later items follow (the attention is causal): a support item's score uses exactly the items before it.
Attention is written out (no fused kernel) with boolean masks and ``torch.where``, so it runs under
``torch.func.vmap`` with per-task padding.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from metarec_pl.data.sequences import CANDIDATE, HISTORY
from metarec_pl.data.types import FeatureSpec
from metarec_pl.errors import ConfigError
from metarec_pl.models.adapters import LoRALinear
from metarec_pl.models.base import RatingModel

PEFT_ADAPT = ("encoder.prompt", "*lora*")  # the per-user parameters: soft prompt and LoRA


def _linear(dim: int, rank: int) -> nn.Linear:
    return LoRALinear(dim, dim, rank) if rank > 0 else nn.Linear(dim, dim)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with an explicit ``allowed`` mask ``[..., T, T]`` (query, key); LoRA on the query
    and value projections when ``lora_rank`` > 0."""

    def __init__(self, dim: int, heads: int, lora_rank: int = 0) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"text-sequence: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.q, self.k, self.v = _linear(dim, lora_rank), nn.Linear(dim, dim), _linear(dim, lora_rank)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """``x`` [..., T, d], ``allowed`` [..., T, T] bool -> [..., T, d]."""
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(-3, -2)  # noqa: E731  [..., h, T, dh]
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        scores = torch.where(allowed[..., None, :, :], scores, torch.finfo(scores.dtype).min)
        mixed = torch.softmax(scores, dim=-1) @ v
        return self.out(mixed.transpose(-3, -2).flatten(-2))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))`` (GELU, width 4d)."""

    def __init__(self, dim: int, heads: int, lora_rank: int = 0) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, lora_rank)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x), allowed)
        return x + self.mlp(self.ln2(x))


class ItemTokens(nn.Module):
    """Item code -> a d-vector, ``forward() -> [num_items, d]`` for every code at once.

    With ``item_vectors`` ``[num_items, text_dim]`` (frozen encoder vectors): a buffer ``item_table``, whitened
    per dimension, then a learned ``Linear`` adaptor and LayerNorm (no gradient ever reaches the table).  Without
    (``item_vectors=None``, ``num_items`` given): a learned id embedding (as in SASRec, Kang & McAuley 2018), then
    LayerNorm; an item never trained keeps its random start, so ids cannot score new items.
    """

    def __init__(self, item_vectors: Optional[Tensor], dim: int, num_items: Optional[int] = None) -> None:
        super().__init__()
        if item_vectors is not None:
            table = item_vectors.detach().float()
            mean, std = table.mean(0), table.std(0).clamp_min(1e-6)
            self.register_buffer("item_table", (table - mean) / std)  # whitened frozen vectors (no ratings used)
            self.adaptor = nn.Linear(table.shape[1], dim)
            self.num_items = table.shape[0]
        else:
            self.item_table = None
            self.embedding = nn.Parameter(torch.randn(num_items, dim) * 0.02)
            self.num_items = num_items
        self.item_norm = nn.LayerNorm(dim)

    def forward(self) -> Tensor:
        raw = self.adaptor(self.item_table) if self.item_table is not None else self.embedding
        return self.item_norm(raw)


class SequenceEncoder(nn.Module):
    """features -> ``cat(state, item)`` [..., 2(d + 1)]: the sequence state after the history and the candidate's
    adapted text vector, each with one more entry (1 and the item's bias) so their dot product adds the bias."""

    def __init__(self, item_vectors: Optional[Tensor], dim: int, blocks: int, heads: int, max_len: int,
                 prompt_len: int, lora_rank: int, item_bias: bool = True, num_items: Optional[int] = None) -> None:
        super().__init__()
        self.items = ItemTokens(item_vectors, dim, num_items)
        # one learned score offset per item code, zero at the start (so an item never trained keeps 0): lets the
        # model learn popularity, which no text vector states
        self.bias = nn.Parameter(torch.zeros(self.items.num_items)) if item_bias else None
        self.positions = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.start = nn.Parameter(torch.randn(dim) * 0.02)  # read when the history is empty
        self.prompt = nn.Parameter(torch.randn(prompt_len, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, lora_rank) for _ in range(blocks))
        self.final_norm = nn.LayerNorm(dim)
        self.max_len, self.dim = max_len, dim
        self.out_dim = 2 * (dim + 1)

    def embeddings(self) -> Tensor:
        """Vectors [num_items, d] of every item code (``ItemTokens``): the tokens and the scored items."""
        return self.items()

    def catalogue(self, embeddings: Optional[Tensor] = None) -> Tensor:
        """[num_items, d + 1] every item's scoring vector: its embedding and its bias (0 without ``item_bias``)."""
        e = self.embeddings() if embeddings is None else embeddings
        bias = self.bias if self.bias is not None else e.new_zeros(e.shape[0])
        return torch.cat([e, bias[:, None]], -1)

    def state(self, history: Tensor, embeddings: Optional[Tensor] = None) -> Tensor:
        """Sequence state [..., d + 1] after ``history`` [..., L] (codes + 1, right-padded with 0): the last
        position's output / sqrt(d), then a 1 that meets the item's bias; ``embeddings``: ``embeddings()`` if
        already computed."""
        embeddings = self.embeddings() if embeddings is None else embeddings
        length = history.shape[-1]
        if length > self.max_len:
            raise ValueError(f"text-sequence: history of {length} items, expected at most max_len={self.max_len}")
        present = history > 0
        x = embeddings[(history - 1).clamp_min(0)] + self.positions[:length]
        lead = history.shape[:-1]
        prefix = torch.cat([self.prompt, self.start[None]], 0)  # [k + 1, d]
        x = torch.cat([prefix.expand(*lead, *prefix.shape), x], -2)  # [..., k + 1 + L, d]
        k = prefix.shape[0]
        idx = torch.arange(k + length, device=history.device)
        # key j is visible to query i: a prefix token (the prompt and start), or a present item with j <= i; prefix
        # tokens see only the prefix, so no position reads a later item
        key_ok = torch.cat([torch.ones(*lead, k, dtype=torch.bool, device=history.device), present], -1)
        causal = (idx[None, :] <= idx[:, None]) | (idx[None, :] < k)
        allowed = causal & key_ok[..., None, :]
        for block in self.blocks:
            x = block(x, allowed)
        last = k - 1 + present.sum(-1)  # the start token when the history is empty
        pick = (idx == last[..., None]).to(x.dtype)  # [..., T]: a one-hot read, vmap-safe
        out = self.final_norm((pick[..., None] * x).sum(-2)) / math.sqrt(self.dim)
        return torch.cat([out, torch.ones_like(out[..., :1])], -1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        embeddings = self.embeddings()
        items = self.catalogue(embeddings)[features[CANDIDATE]]
        return torch.cat([self.state(features[HISTORY], embeddings), items], -1)


class DotHead(nn.Module):
    """``cat(state, item)`` [..., 2(d + 1)] -> their dot product [..., 1] (the state's trailing 1 adds the bias)."""

    def forward(self, x: Tensor) -> Tensor:
        state, item = x.chunk(2, dim=-1)
        return (state * item).sum(-1, keepdim=True)


def item_table(data_info: Any, key: str) -> Optional[Tensor]:
    """The data's item table ``key`` (``DataInfo.item_features``), or a zero table of its size when the info
    comes from a checkpoint (no tables: the network's saved buffer fills it); ``None`` without such a field."""
    spec = next((f for f in data_info.schema if f.key == key and f.kind == "dense"), None)
    if spec is None:
        return None
    tables = data_info.item_features or {}
    if key in tables:
        return tables[key]
    return torch.zeros(data_info.num_items, spec.size) if data_info.num_items else None


def _check_sizes(who: str, **sizes: tuple[int, int]) -> None:
    for name, (value, low) in sizes.items():
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{who}: {name} must be an integer >= {low}, got {value!r}")


class TextSequenceNet(RatingModel):
    """The registered network ``text-sequence`` (see the module docstring).

    ``item_vectors``: ``[num_items, text_dim]`` frozen encoder vectors by item code (e.g.
    ``metarec_pl.data.text.encode_texts``); or, when not given, the data's dense item feature ``text_field``
    (default ``item_text``: the ``text`` data set's encoded item texts) from ``data_info`` (``MetaLearner``
    passes it; a network rebuilt from a checkpoint takes a zero table of the field's size, which the saved buffer
    fills).  ``dim`` (64), ``blocks`` (2), ``heads`` (2), ``max_len`` (50, the longest history), ``prompt_len``
    (4 soft-prompt tokens), ``lora_rank`` (0: no LoRA), ``item_bias`` (a learned per-item score offset, zero for
    items never trained).  Output: the score [...] = state . item / sqrt(d) + bias (a logit; train with the
    ``bce`` or ``bpr`` loss).  ``ConfigError`` (one line) for missing vectors or bad sizes.
    """

    network_name = "text-sequence"

    def __init__(self, schema: Sequence[FeatureSpec], item_vectors: Optional[Tensor] = None, dim: int = 64,
                 blocks: int = 2, heads: int = 2, max_len: int = 50, prompt_len: int = 4, lora_rank: int = 0,
                 item_bias: bool = True, text_field: str = "item_text", data_info: Any = None) -> None:
        super().__init__(schema)
        if item_vectors is None and data_info is not None:
            item_vectors = item_table(data_info, text_field)
        if not isinstance(item_vectors, Tensor) or item_vectors.dim() != 2:
            raise ConfigError("text-sequence: no item text vectors: expected network_args.item_vectors (a "
                              "[num_items, text_dim] tensor) or data with the dense item feature "
                              f"'{text_field}' (data.dataset: text), got {type(item_vectors).__name__}")
        self._build(item_vectors, None, dim, blocks, heads, max_len, prompt_len, lora_rank, item_bias)

    def _build(self, item_vectors: Optional[Tensor], num_items: Optional[int], dim: int, blocks: int, heads: int,
               max_len: int, prompt_len: int, lora_rank: int, item_bias: bool) -> None:
        _check_sizes(self.network_name, dim=(dim, 1), blocks=(blocks, 1), heads=(heads, 1), max_len=(max_len, 1),
                     prompt_len=(prompt_len, 0), lora_rank=(lora_rank, 0))
        self.encoder = SequenceEncoder(item_vectors, dim, blocks, heads, max_len, prompt_len, lora_rank, item_bias,
                                       num_items)
        self.head = DotHead()

    def state(self, history: Tensor) -> Tensor:
        """Sequence state [..., d + 1] after ``history`` [..., L]: ``state(h) @ item_vectors().T`` scores the whole
        catalogue at once, as ``forward`` scores one candidate."""
        return self.encoder.state(history)

    def item_vectors(self) -> Tensor:
        """[num_items, d + 1] scoring vectors of every item code (adapted item vector, bias)."""
        return self.encoder.catalogue()

    def score_all(self, history: Tensor) -> Tensor:
        """Scores [..., num_items] of every item code after ``history`` [..., L] (the logits ``forward`` gives)."""
        return self.state(history) @ self.item_vectors().T


class IdSequenceNet(TextSequenceNet):
    """The registered network ``id-sequence``: the same causal backbone over learned item-id embeddings instead
    of text vectors, SASRec-style (Kang & McAuley 2018: item embeddings shared by input and output, learned
    positions, causal self-attention); a baseline that cannot score items it never trained on.

    ``num_items`` (item codes 0..num_items-1; default ``data_info.num_items``, the data's); the other arguments
    as ``text-sequence`` (``prompt_len`` defaults to 0 here: SASRec has no prompt).  ``ConfigError`` for a
    missing ``num_items`` or bad sizes.
    """

    network_name = "id-sequence"

    def __init__(self, schema: Sequence[FeatureSpec], num_items: Optional[int] = None, dim: int = 64,
                 blocks: int = 2, heads: int = 2, max_len: int = 50, prompt_len: int = 0, lora_rank: int = 0,
                 item_bias: bool = True, data_info: Any = None) -> None:
        RatingModel.__init__(self, schema)
        if num_items is None and data_info is not None:
            num_items = data_info.num_items
        _check_sizes(self.network_name, num_items=(num_items, 1))
        self._build(None, num_items, dim, blocks, heads, max_len, prompt_len, lora_rank, item_bias)


def adapted_fraction(model: nn.Module, names: Sequence[str]) -> float:
    """Share of ``model``'s learned parameters (numbers, not tensors) that ``names`` hold."""
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in names) / sum(p.numel() for p in params.values())

