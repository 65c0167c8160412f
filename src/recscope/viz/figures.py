"""Static figures; every one has a title, labelled axes and a colour bar with units."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def shorten(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def attention_heatmap(
    weights: np.ndarray, row_labels: list[str], path: str | Path, title: str = "Attention from the final position"
) -> Path:
    """weights (n_layers, n_heads, T): rows = history items, columns = layer x head, values annotated."""
    n_layers, n_heads, T = weights.shape
    matrix = weights.transpose(2, 0, 1).reshape(T, n_layers * n_heads)  # (T, L*H)
    columns = [f"L{layer + 1} H{head + 1}" for layer in range(n_layers) for head in range(n_heads)]
    fig_w = 3.5 + 0.9 * len(columns)
    fig_h = 1.2 + 0.32 * T
    fig, ax = plt.subplots(figsize=(fig_w + 3.0, max(fig_h, 2.5)))
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=max(float(matrix.max()), 1e-6), aspect="auto")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(T), [f"{i + 1}. {shorten(label)}" for i, label in enumerate(row_labels)])
    ax.set_xlabel("layer x head")
    ax.set_ylabel("history (oldest at top)")
    for r in range(T):
        for c in range(len(columns)):
            v = matrix[r, c]
            ax.text(
                c,
                r,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v > 0.6 * matrix.max() else "black",
            )
    fig.colorbar(image, ax=ax, label="attention weight (each column sums to 1)")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def attribution_heatmap(
    weights: np.ndarray,
    row_labels: list[str],
    column_labels: list[str],
    path: str | Path,
    title: str,
    unit: str = "attribution (score change)",
) -> Path:
    """weights (T, K): rows = history items (oldest at top), columns = recommended items.

    A diverging map centred on zero: blue pushed the item up, red pushed it down.
    """
    T, K = weights.shape
    limit = max(float(np.abs(weights).max()), 1e-6)
    fig, ax = plt.subplots(figsize=(4.5 + 0.85 * K, max(2.8, 1.6 + 0.34 * T)))
    image = ax.imshow(weights, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(K), [shorten(c, 28) for c in column_labels], rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(T), [f"{i + 1}. {shorten(r, 44)}" for i, r in enumerate(row_labels)], fontsize=8)
    ax.set_xlabel("recommended item (rank order)")
    ax.set_ylabel("history (oldest at top)")
    for r in range(T):
        for c in range(K):
            v = weights[r, c]
            ax.text(
                c,
                r,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=6.5,
                color="white" if abs(v) > 0.6 * limit else "black",
            )
    fig.colorbar(image, ax=ax, label=unit, shrink=0.8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
