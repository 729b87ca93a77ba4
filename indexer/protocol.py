"""The held-out-source protocol: train without a fold of sources, let that fold's clips query all the others.

A fold is a set of source families (sources sharing recordings are one family and always held out together);
the large families are a fold each and the small ones are pooled, so the whole protocol fits in about an hour
on 2 cores. Per fold: P@1, P@10, mAP and per-class P@10 of the model and of the log-mel baseline on the same
queries (same-group neighbours never count), and the classifier's category accuracy on the held-out clips.
The summary is the macro average over folds, plus the old protocol (timgm6mb queries against the original
four development sources) for comparison with earlier models.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audiosim.indexer.evaluate import baseline_features, category_accuracy, embed_all, retrieval_scores, zscore
from audiosim.shared.audio import ClipSpec, read_clips
from audiosim.shared.encoder import Encoder
from audiosim.shared.errors import ConfigError

if TYPE_CHECKING:
    from audiosim.indexer.training import EpochLog

# family -> fold; families not named here are a fold of their own
FOLDS = {
    "hydrogen": "recorded",
    "sonicpi": "recorded",
    "lmms": "recorded",
    "exadrums": "recorded",
    "stk": "recorded",
    "tr808": "recorded",
    "synth": "synth+fx",
    "freedesktop": "synth+fx",
    "oxygen": "synth+fx",
    "deepin": "synth+fx",
    "heroes": "synth+fx",
    "tuxpaint": "synth+fx",
    "frozenbubble": "synth+fx",
    "pingus": "synth+fx",
    "chromiumbsu": "synth+fx",
}
SCHEMES = ("pooled", "families")  # pooled: FOLDS; families: every source family a fold (leave-one-source-out)
OLD_QUERIES = "timgm6mb"
OLD_DATABASE = ("hydrogen", "fluidr3", "lmms", "sonicpi")


@dataclass
class Corpus:
    root: Path
    paths: list[str]  # absolute
    labels: np.ndarray  # (N,) str
    sources: np.ndarray  # (N,) str
    folds: np.ndarray  # (N,) str
    groups: list[str]

    def fold_names(self) -> list[str]:
        return sorted({str(f) for f in self.folds})

    def held_out(self, fold: str) -> list[str]:
        """The sources a fold holds out."""
        return sorted({str(s) for s in self.sources[self.folds == fold]})

    def split(self, fold: str) -> tuple[np.ndarray, np.ndarray]:
        """(queries, database) index arrays: the fold's clips, and every other clip."""
        return np.flatnonzero(self.folds == fold), np.flatnonzero(self.folds != fold)

    def old_split(self) -> tuple[np.ndarray, np.ndarray]:
        """The old protocol: timgm6mb's clips, against the four original development sources."""
        return np.flatnonzero(self.sources == OLD_QUERIES), np.flatnonzero(np.isin(self.sources, OLD_DATABASE))


def load_corpus(root: Path, scheme: str = "pooled") -> Corpus:
    from audiosim.indexer.corpus import read_metadata

    if scheme not in SCHEMES:
        raise ConfigError(f"unknown fold scheme {scheme!r}: choose {' or '.join(SCHEMES)}")
    if not (root / "metadata.csv").is_file():
        raise ConfigError(f"{root} has no metadata.csv: build it with `audiosim-index corpus {root}`")
    rows = read_metadata(root)
    return Corpus(
        root=root,
        paths=[str((root / r["path"]).resolve()) for r in rows],
        labels=np.array([r["label"] for r in rows]),
        sources=np.array([r["source"] for r in rows]),
        folds=np.array([FOLDS.get(r["family"], r["family"]) if scheme == "pooled" else r["family"] for r in rows]),
        groups=[r["group"] for r in rows],
    )


class Clips:
    """Decoded clips of the corpus, once per clip recipe: (N, n_samples) float32; and what is computed from them
    once per corpus or model: the baseline's features, a model's outputs."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self._cache: dict[ClipSpec, np.ndarray] = {}
        self._baseline: np.ndarray | None = None  # (N, 2 * n_mels)
        self._outputs: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}  # digest -> (N, D), (N, C) or None

    def baseline(self) -> np.ndarray:
        if self._baseline is None:
            self._baseline = baseline_features(self.get(ClipSpec()), ClipSpec().sample_rate)
        return self._baseline

    def outputs(self, encoder: Encoder) -> tuple[np.ndarray, np.ndarray | None]:
        key = encoder.identity.digest
        if key not in self._outputs:
            self._outputs[key] = embed_all(encoder, self.get(encoder.clip_spec))
        return self._outputs[key]

    def get(self, spec: ClipSpec) -> np.ndarray:
        if spec not in self._cache:
            decoded = dict(read_clips(self.corpus.paths, spec)[0])
            missing = [p for p in self.corpus.paths if p not in decoded]
            if missing:
                raise ConfigError(f"{len(missing)} corpus files do not decode (first: {missing[0]}): rebuild it")
            self._cache[spec] = np.stack([decoded[p].samples for p in self.corpus.paths])
        return self._cache[spec]


def score(encoder: Encoder, clips: Clips, queries: np.ndarray, database: np.ndarray) -> dict[str, Any]:
    """Model and baseline retrieval of `queries` against `database` (index arrays), plus category accuracy."""
    c = clips.corpus
    idx = np.concatenate([queries, database])
    all_vectors, all_probs = clips.outputs(encoder)
    vectors = all_vectors[idx]  # (Q + D, D)
    labels = list(c.labels[idx])
    groups = [c.groups[i] for i in idx]
    q, d = np.arange(len(queries)), np.arange(len(queries), len(idx))
    report: dict[str, Any] = {
        "queries": len(queries),
        "database": len(database),
        "model": retrieval_scores(vectors, labels, queries=q, database=d, groups=groups),
        "baseline": retrieval_scores(zscore(clips.baseline()[idx]), labels, queries=q, database=d, groups=groups),
    }
    if encoder.classes and all_probs is not None:
        report["category"] = category_accuracy(encoder.classes, all_probs[queries], labels[: len(queries)])
    return report


@dataclass
class ProtocolConfig:
    preset: str = "default"
    epochs: int = 15
    seed: int = 0
    workers: int = 2
    batch_size: int = 64
    only: tuple[str, ...] = ()  # folds to run (default: all)
    scheme: str = "pooled"
    also: tuple[Path, ...] = ()  # other runs folders whose fold models join each fold's as an ensemble
    posterior: float = 0.0  # class probabilities appended to the vector at this weight (see export_ensemble)

    @property
    def tag(self) -> str:
        """What the scored model adds to the fold's own network, in its files' names ('' for that network): the
        other runs folders by name and a short hash of their whole paths, so no other set of members, even one of
        the same names elsewhere, ever writes over these results."""
        parts = ([_members_tag(self.also)] if self.also else []) + (
            [f"posterior{self.posterior:g}"] if self.posterior else []
        )
        return "".join(f"-{p}" for p in parts)


def _members_tag(folders: tuple[Path, ...]) -> str:
    """'with-<names joined by +>~<6 hex digits of the resolved paths>'."""
    paths = [f.resolve() for f in folders]
    digest = hashlib.sha1(b"\0".join(map(os.fsencode, paths))).hexdigest()[:6]
    return "with-" + "+".join(p.name for p in paths) + "~" + digest


def run_protocol(root: Path, runs: Path, cfg: ProtocolConfig, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (unless a fold's model is already there) and score every fold; write runs/<fold>/result.json and
    runs/summary.json (summary-families.json for that scheme). Re-running continues where a previous run
    stopped. With `cfg.also` or `cfg.posterior`, what is scored is each fold's network joined by the same fold's
    networks from the other runs folders (which must be trained already) and/or with the class probabilities
    appended, exported to runs/<fold>/model<tag>.onnx, and its results go to result<tag>.json and
    summary<tag>.json."""
    from audiosim.indexer.training import TrainConfig, train

    corpus = load_corpus(root, cfg.scheme)
    clips = Clips(corpus)
    folds = _chosen(corpus, cfg.only)
    results: dict[str, Any] = {}
    for fold in folds:
        out = runs / fold.replace("+", "_") / "model.pt"
        members = [out, *(r / out.parent.name / "model.pt" for r in cfg.also)]
        result_path = out.parent / f"result{cfg.tag}.json"
        done = json.loads(result_path.read_text()) if result_path.is_file() else None
        if done is not None and done.get("members", [])[1:] == list(map(str, members[1:])):
            results[fold] = done
            say(f"{fold}: done before ({result_path})")
            continue
        if missing := [m for m in members[1:] if not m.is_file()]:
            raise ConfigError(
                f"{missing[0]} is missing: train that fold first (`audiosim-index protocol CORPUS --runs "
                f"{missing[0].parent.parent} --fold {fold} --seed N`)"
            )
        held = corpus.held_out(fold)
        if not out.with_suffix(".onnx").is_file():
            say(f"{fold}: training without {', '.join(held)}")
            tc = TrainConfig(preset=cfg.preset, epochs=cfg.epochs, seed=cfg.seed, labels="folder",
                             exclude=tuple(f"{s}__*" for s in held), workers=cfg.workers,
                             batch_size=cfg.batch_size)  # fmt: skip
            history = train([root], out, tc, on_epoch=partial(_tell_epoch, say, fold, cfg.epochs))
            train_seconds = sum(e.seconds for e in history)
        else:
            train_seconds = float("nan")
        model = out.with_suffix(".onnx")
        if cfg.tag:
            from audiosim.shared.checkpoint import export_ensemble

            model = export_ensemble(members, out.with_name(f"model{cfg.tag}.onnx"), posterior=cfg.posterior)
        encoder = Encoder(model)
        result = {
            "fold": fold,
            "held_out": held,
            "train_seconds": train_seconds,
            "members": list(map(str, members)),
            **score(encoder, clips, *corpus.split(fold)),
        }
        if OLD_QUERIES in held:
            result["old_protocol"] = score(encoder, clips, *corpus.old_split())
        result_path.write_text(json.dumps(result, indent=1))
        results[fold] = result
        model_p10, base_p10 = result["model"]["overall"]["p@10"], result["baseline"]["overall"]["p@10"]
        say(f"{fold}: P@10 {model_p10:.3f} (baseline {base_p10:.3f})")
    summary = {"scheme": cfg.scheme, **summarise(results)}
    scheme = "" if cfg.scheme == "pooled" else f"-{cfg.scheme}"  # the two schemes can share a runs folder
    (runs / f"summary{scheme}{cfg.tag}.json").write_text(json.dumps(summary, indent=1))
    return summary


def _tell_epoch(say: Callable[[str], None], fold: str, epochs: int, e: EpochLog) -> None:
    say(f"{fold}: epoch {e.epoch}/{epochs} train {e.train_loss:.4f} val {e.val_loss:.4f} {e.seconds:.0f}s")


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Macro averages over folds (each fold counts once, whatever its size)."""

    def macro(key: str, who: str) -> float:
        return float(np.mean([r[who]["overall"][key] for r in results.values()]))

    classes = sorted({c for r in results.values() for c in r["model"]["per_class"]})
    per_class = {}
    for c in classes:
        present = [r for r in results.values() if c in r["model"]["per_class"]]
        per_class[c] = {who: float(np.mean([r[who]["per_class"][c]["p@10"] for r in present]))
                        for who in ("model", "baseline")} | {"folds": len(present)}  # fmt: skip
    cats = [r["category"]["accuracy"] for r in results.values() if "category" in r]
    sure = [r["category"]["by_score"] for r in results.values() if "by_score" in r.get("category", {})]
    by_score = {}
    for t in sure[0] if sure else {}:
        accs = [b[t]["accuracy"] for b in sure if b[t]["accuracy"] is not None]
        by_score[t] = {"accuracy": float(np.mean(accs)) if accs else None,
                       "share": float(np.mean([b[t]["share"] for b in sure]))}  # fmt: skip
    old = next((r["old_protocol"] for r in results.values() if "old_protocol" in r), None)
    return {
        "folds": {f: {"held_out": r["held_out"], "queries": r["queries"], "train_seconds": r["train_seconds"],
                      "model": r["model"]["overall"], "baseline": r["baseline"]["overall"],
                      "category_accuracy": r.get("category", {}).get("accuracy")} for f, r in results.items()},
        "macro": {who: {k: macro(k, who) for k in ("p@1", "p@10", "map")} for who in ("model", "baseline")},
        "category_accuracy": float(np.mean(cats)) if cats else None,
        "category_by_score": by_score,
        "per_class_p@10": per_class,
        "old_protocol": old and {"model": old["model"]["overall"], "baseline": old["baseline"]["overall"],
                                 "category_accuracy": old.get("category", {}).get("accuracy")},
    }  # fmt: skip


def _chosen(corpus: Corpus, only: tuple[str, ...]) -> list[str]:
    folds = corpus.fold_names()
    if only and (unknown := set(only) - set(folds)):
        raise ConfigError(f"unknown fold(s) {', '.join(sorted(unknown))}: the corpus has {', '.join(folds)}")
    return [f for f in folds if not only or f in only]


def compare(root: Path, model: Path, scheme: str = "pooled", only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Score an existing model on every fold (or those in `only`) without training (for a model trained on all
    sources, e.g. the previous default, this is not held out: say so wherever it is reported)."""
    corpus = load_corpus(root, scheme)
    clips = Clips(corpus)
    encoder = Encoder(model)
    results = {}
    for fold in _chosen(corpus, only):
        held = corpus.held_out(fold)
        results[fold] = {"held_out": held, "train_seconds": None, **score(encoder, clips, *corpus.split(fold))}
        if OLD_QUERIES in held:
            results[fold]["old_protocol"] = score(encoder, clips, *corpus.old_split())
    return {"scheme": scheme, **summarise(results)}
