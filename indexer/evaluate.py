"""Retrieval quality of an encoder on a labelled library, beside the log-mel statistics baseline."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audiosim.shared.audio import ClipSpec, read_clips, walk_audio
from audiosim.shared.encoder import Encoder
from audiosim.shared.errors import ConfigError
from audiosim.shared.features import MelSpec, mel_images

BASELINE_MEL = MelSpec(n_mels=64, frames=87, n_fft=2048)


@dataclass
class Library:
    paths: list[str]
    labels: list[str]
    columns: dict[str, list[str]] = field(default_factory=dict)  # extra CSV columns, e.g. group, source


def load_library(roots: list[Path], labels: str = "folder") -> Library:
    """Files under roots with a label each: the parent folder's name, or a CSV's `label` column
    (CSV paths are relative to the CSV's folder or absolute; other CSV columns are kept)."""
    files = [str(f.path) for f in walk_audio(roots)]
    if labels == "folder":
        return Library(files, [Path(p).parent.name for p in files])
    csv_path = Path(labels)
    if not csv_path.is_file():
        raise ConfigError(f"--labels must be 'folder' or a CSV file; {labels} not found")
    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "path" not in rows[0] or "label" not in rows[0]:
        raise ConfigError(f"{csv_path} needs 'path' and 'label' columns")
    by_path = {os.path.abspath(csv_path.parent / r["path"]): r for r in rows}
    kept = [p for p in files if p in by_path]
    if not kept:
        raise ConfigError(f"none of the files under the given paths is listed in {csv_path}")
    extra = [k for k in rows[0] if k not in ("path", "label")]
    return Library(kept, [by_path[p]["label"] for p in kept], {k: [by_path[p][k] for p in kept] for k in extra})


def decode_all(paths: list[str], spec: ClipSpec) -> tuple[np.ndarray, list[int]]:
    """(N, n_samples) clips of the files that decode, and the indices of those files."""
    clips = dict(read_clips(paths, spec)[0])
    if not clips:
        raise ConfigError("no file decoded")
    ok = [i for i, p in enumerate(paths) if p in clips]
    return np.stack([clips[paths[i]].samples for i in ok]), ok


def baseline_features(clips: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N, n_samples) -> (N, 2 * n_mels): per-band mean and std of the log-mel image."""
    images = np.concatenate(
        [mel_images(clips[i : i + 256], sample_rate=sample_rate, spec=BASELINE_MEL) for i in range(0, len(clips), 256)]
    )  # (N, n_mels, frames)
    return np.concatenate([images.mean(axis=2), images.std(axis=2)], axis=1)


def zscore(feats: np.ndarray) -> np.ndarray:
    """(N, F) standardised per column over the set."""
    return (feats - feats.mean(axis=0)) / (feats.std(axis=0) + 1e-8)


def baseline_vectors(clips: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N, n_samples) -> (N, 2 * n_mels): the baseline's vectors, z-scored over the set."""
    return zscore(baseline_features(clips, sample_rate))


def embed_all(encoder: Encoder, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, n_samples) -> (N, D) unit vectors and (N, C) class probabilities (None without a head), 256 at a time."""
    runs = [encoder.run(clips[i : i + 256]) for i in range(0, len(clips), 256)]
    probs = [r.probs for r in runs if r.probs is not None]
    return np.concatenate([r.vectors for r in runs]), np.concatenate(probs) if probs else None


SCORE_THRESHOLDS = (0.5, 0.7, 0.8, 0.9)


def category_accuracy(classes: list[str], probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """How often the top class of probs (Q, C) names labels (Q,), overall, per class, and among the clips whose
    top probability (`category_score`) reaches each of SCORE_THRESHOLDS (with the share of clips that do; None
    where no clip does); over the clips whose class the model knows."""
    known = [i for i, t in enumerate(labels) if t in classes]
    top, score = probs[known].argmax(1), probs[known].max(1)  # (K,) each; empty when K is 0
    right = np.array([classes[int(p)] == labels[i] for p, i in zip(top, known, strict=True)], dtype=bool)
    per = {}
    for c in sorted({labels[i] for i in known}):
        sel = right[[labels[i] == c for i in known]]
        per[c] = {"accuracy": float(sel.mean()), "clips": len(sel)}
    by_score: dict[str, dict[str, float | None]] = {}
    for t in SCORE_THRESHOLDS:
        sure = score >= t
        by_score[f"{t:.1f}"] = {"accuracy": float(right[sure].mean()) if sure.any() else None,
                                "share": float(sure.mean()) if known else 0.0}  # fmt: skip
    return {"accuracy": float(right.mean()) if known else float("nan"),
            "clips": len(known), "per_class": per, "by_score": by_score}  # fmt: skip


def retrieval_scores(
    vectors: np.ndarray,
    labels: list[str],
    *,
    queries: np.ndarray | None = None,
    database: np.ndarray | None = None,
    groups: list[str] | None = None,
) -> dict[str, Any]:
    """P@1, P@10 and mAP by cosine similarity, overall (mean over queries) and per query class.

    vectors (N, D); queries and database are index arrays (default: every clip against all others).
    A query never retrieves itself, nor clips of its own group when groups are given.
    """
    v = vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12)
    n = len(v)
    q_idx = np.arange(n) if queries is None else queries
    db_idx = np.arange(n) if database is None else database
    lab = np.array(labels)
    grp = np.array(groups) if groups is not None else None
    sims = v[q_idx] @ v[db_idx].T  # (Q, Ndb)
    rows = []
    for qi, q in enumerate(q_idx):
        keep = db_idx != q
        if grp is not None:
            keep &= grp[db_idx] != grp[q]
        cand = db_idx[keep]
        order = np.argsort(-sims[qi][keep], kind="stable")
        rel = lab[cand[order]] == lab[q]
        if not rel.any():
            continue
        hits = np.cumsum(rel)
        ap = float(np.sum(hits[rel] / (np.flatnonzero(rel) + 1)) / rel.sum())
        rows.append((lab[q], float(rel[0]), float(rel[:10].mean()), ap))
    if not rows:
        raise ConfigError("no query has a relevant clip to find; check the labels")
    classes = sorted({r[0] for r in rows})

    def summary(sel: list[tuple[str, float, float, float]]) -> dict[str, float]:
        a = np.array([r[1:] for r in sel])
        return {
            "p@1": float(a[:, 0].mean()),
            "p@10": float(a[:, 1].mean()),
            "map": float(a[:, 2].mean()),
            "queries": len(sel),
        }

    return {
        "overall": summary(rows),
        "per_class": {c: summary([r for r in rows if r[0] == c]) for c in classes},
    }


def evaluate(
    roots: list[Path],
    model: Path,
    *,
    labels: str = "folder",
    group_by: str | None = None,
    query_where: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Score the model and the baseline on the same clips.

    query_where=(column, value): only clips whose CSV column equals value are queries, searched against
    the clips where it does not (the cross-source protocol).
    """
    lib = load_library(roots, labels)
    encoder = Encoder(model)
    clips, ok = decode_all(lib.paths, encoder.clip_spec)
    labels_ok = [lib.labels[i] for i in ok]
    cols = {k: [v[i] for i in ok] for k, v in lib.columns.items()}
    for col in filter(None, [group_by, query_where[0] if query_where else None]):
        if col not in cols:
            raise ConfigError(f"column {col!r} is not in the labels CSV (has: {', '.join(cols) or 'none'})")
    groups = cols[group_by] if group_by else None
    queries = database = None
    if query_where:
        col, value = query_where
        mask = np.array([x == value for x in cols[col]])
        if not mask.any():
            raise ConfigError(f"no clip has {col}={value}")
        queries, database = np.flatnonzero(mask), np.flatnonzero(~mask)
    emb, probs = embed_all(encoder, clips)  # (N, D), (N, C) or None
    base = baseline_vectors(clips, encoder.clip_spec.sample_rate)
    report: dict[str, Any] = {
        "clips": len(ok),
        "failed": len(lib.paths) - len(ok),
        "model": str(model),
        "identity": encoder.identity.to_dict(),
        "model_scores": retrieval_scores(emb, labels_ok, queries=queries, database=database, groups=groups),
        "baseline_scores": retrieval_scores(base, labels_ok, queries=queries, database=database, groups=groups),
    }
    if encoder.classes and probs is not None:
        asked = queries if queries is not None else np.arange(len(ok))
        report["category"] = category_accuracy(encoder.classes, probs[asked], [labels_ok[i] for i in asked])
        report["category"]["unknown_classes"] = sorted({labels_ok[i] for i in asked} - set(encoder.classes))
    return report
