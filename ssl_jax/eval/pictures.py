"""PNG grids of images (pretext inputs, reconstructions, puzzles) for a run's workdir."""
from __future__ import annotations

import numpy as np

from ssl_jax.files import pyplot, save_figure


def save_image_grid(rows: list[list[np.ndarray]], column_titles: list[str], path: str,
                    title: str = "", scale: float = 1.2) -> str:
    """rows of float images [H, W, C] in [0, 1] (any sizes) -> one PNG, a column per title.
    Written atomically; returns the file name."""
    plt = pyplot()

    if not rows or any(len(r) != len(column_titles) for r in rows):
        raise ValueError(f"every row needs {len(column_titles)} images (one per column title)")
    fig, axes = plt.subplots(len(rows), len(column_titles), squeeze=False,
                             figsize=(scale * len(column_titles), scale * len(rows) + 0.4))
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            ax = axes[i][j]
            ax.imshow(np.clip(np.asarray(image, np.float32), 0.0, 1.0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(column_titles[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def tiles_with_gaps(tiles: np.ndarray, grid: int, gap: int = 2) -> np.ndarray:
    """[grid*grid, t, t, C] row-major tiles -> one image with white gaps between tiles."""
    n, t, _, c = tiles.shape
    if n != grid * grid:
        raise ValueError(f"{n} tiles do not form a {grid}x{grid} grid")
    side = grid * t + (grid - 1) * gap
    out = np.ones((side, side, c), np.float32)
    for k, tile in enumerate(tiles):
        r, col = divmod(k, grid)
        out[r * (t + gap):r * (t + gap) + t, col * (t + gap):col * (t + gap) + t] = tile
    return out


def to_unit_range(image: np.ndarray) -> np.ndarray:
    """Min-max scales an image (e.g. a normalised tile) into [0, 1] for display."""
    image = np.asarray(image, np.float32)
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else np.zeros_like(image)
