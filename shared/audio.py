"""Audio files in, fixed-length mono clips out: find files, read only the frames needed, mono, resample, pad."""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from audiosim.shared.errors import DecodeError

AUDIO_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc"})
SILENCE_PEAK = 1e-4  # -80 dBFS: below this a clip carries no usable sound
SHORT_SECONDS = 0.05
ONSET_SEARCH = 1.0  # seconds of leading near-silence an onset-aligned clip may skip
ONSET_DB = -40.0  # the onset is the first sample within this many dB of the file's peak (in the part read)
ONSET_LEAD = 0.002  # seconds kept before it


@dataclass(frozen=True)
class ClipSpec:
    """Which part of a file becomes the clip: `seconds` from `offset`, resampled to `sample_rate`. With
    start="onset" the clip begins at the first sound instead (leading near-silence of up to ONSET_SEARCH
    seconds after `offset` is skipped), so a sample with a gap before its hit matches one without."""

    sample_rate: int = 22050
    seconds: float = 2.0
    offset: float = 0.0
    start: str = "file"  # "file" or "onset"

    def __post_init__(self) -> None:
        if self.start not in ("file", "onset"):
            raise ValueError(f"clip start must be 'file' or 'onset', not {self.start!r}")

    def to_dict(self) -> dict[str, float | int | str]:
        return {"sample_rate": self.sample_rate, "seconds": self.seconds, "offset": self.offset, "start": self.start}

    @property
    def n_samples(self) -> int:
        return round(self.seconds * self.sample_rate)


@dataclass(frozen=True)
class AudioInfo:
    """Facts about the whole file, for the payload."""

    duration: float
    sample_rate: int
    channels: int
    format: str


@dataclass(frozen=True)
class Clip:
    samples: np.ndarray  # (n_samples,) float32, mono, at spec.sample_rate
    info: AudioInfo
    warning: str | None = None


@dataclass(frozen=True)
class AudioFile:
    """A file found by the walk: what change detection needs, without opening it."""

    path: Path  # absolute
    root: Path  # the indexed folder it was found under (the file itself for a single-file argument)
    size: int
    mtime_ns: int


def is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


@dataclass(frozen=True)
class Skipped:
    """Something the walk could not take: an unreadable folder (its files are unknown, not gone), or an entry
    named like audio that is not a regular file (a FIFO would block a reader forever)."""

    path: Path
    reason: str
    folder: bool = False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def _audio_file(path: Path, root: Path, on_skip: Callable[[Skipped], None]) -> AudioFile | None:
    try:
        st = path.stat()  # follows links: a link to a FIFO is a FIFO
    except OSError:
        return None  # dangling symlink or vanished between listing and stat
    if not stat.S_ISREG(st.st_mode):
        on_skip(Skipped(path, f"not a regular file ({_kind(st.st_mode)}), skipped"))
        return None
    return AudioFile(path=path, root=root, size=st.st_size, mtime_ns=st.st_mtime_ns)


def _unreadable(on_skip: Callable[[Skipped], None]) -> Callable[[OSError], None]:
    def tell(err: OSError) -> None:
        reason = f"cannot read folder: {(err.strerror or str(err)).lower()}; its indexed files are kept"
        on_skip(Skipped(Path(err.filename or ""), reason, folder=True))

    return tell


def walk_audio(roots: Iterable[Path], on_skip: Callable[[Skipped], None] = lambda s: None) -> Iterator[AudioFile]:
    """Yield audio files under each root in sorted order, skipping hidden entries; symlinked folders are
    followed once each, so a link loop cannot recur. What cannot be walked or read is told to `on_skip`."""
    for root in roots:
        root = Path(os.path.abspath(root))
        if not root.is_dir():
            if is_audio(root) and (found := _audio_file(root, root, on_skip)):
                yield found
            continue
        seen: set[tuple[int, int]] = set()

        for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=_unreadable(on_skip)):
            st = os.stat(dirpath)
            if (st.st_dev, st.st_ino) in seen:
                dirnames[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath, name)
                if is_audio(path) and (found := _audio_file(path, root, on_skip)):
                    yield found


def _decode_reason(path: Path, exc: Exception) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        return "cannot open: file vanished or is unreadable"
    if not os.access(path, os.R_OK):
        return "cannot open: permission denied"
    if size == 0:
        return "empty file (0 bytes)"
    text = re.sub(r"^Error opening .*?: ", "", str(exc).split("\n")[0]).strip()
    low = text.lower()
    if "unknown format" in low or "not recognised" in low or "not a regular file" in low:
        return "not audio, or a format this reader does not know (unrecognised data)"
    return f"cannot decode: {text}"


def read_clip(path: Path, spec: ClipSpec = ClipSpec()) -> Clip:
    """Read `spec.seconds` from `spec.offset` as mono float32 at `spec.sample_rate`, zero-padded at the end.

    Only the frames needed are read, so a two-hour file costs about what a two-second one does.
    Raises DecodeError for files that cannot be read, are empty or are silent.
    """
    import soundfile as sf  # here, not at the top: a search by id must not pay for the decoder

    try:
        with sf.SoundFile(os.fsencode(path)) as f:  # bytes: a name need not be UTF-8
            native_sr = int(f.samplerate)
            info = AudioInfo(
                duration=f.frames / native_sr if native_sr else 0.0,
                sample_rate=native_sr,
                channels=int(f.channels),
                format=str(f.format),
            )
            start = round(spec.offset * native_sr)
            if start:
                if start >= f.frames:
                    raise DecodeError(f"shorter than the offset ({info.duration:.3f} s <= {spec.offset} s)")
                f.seek(start)
            search = ONSET_SEARCH if spec.start == "onset" else 0.0
            frames = f.read(math.ceil((spec.seconds + search) * native_sr), dtype="float32", always_2d=True)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(_decode_reason(path, exc)) from exc
    if frames.shape[0] == 0:
        raise DecodeError("no audio frames (empty or truncated file)")
    mono = frames.mean(axis=1)  # (frames,)
    if not np.all(np.isfinite(mono)):
        raise DecodeError("audio contains NaN or infinite samples")
    if float(np.abs(mono).max()) < SILENCE_PEAK:
        raise DecodeError("silent (peak below -80 dBFS)")
    if spec.start == "onset":
        mono = mono[onset(mono, native_sr) :][: math.ceil(spec.seconds * native_sr)]
    warning = None
    if frames.shape[0] < SHORT_SECONDS * native_sr:
        warning = f"very short ({frames.shape[0] / native_sr * 1000:.0f} ms), padded with silence"
    return Clip(
        samples=fit_length(resample(mono, native_sr, spec.sample_rate), spec.n_samples),
        info=info,
        warning=warning,
    )


def onset(mono: np.ndarray, sample_rate: int) -> int:
    """Index of the first sound in (n,) mono: the first sample within ONSET_DB of the peak, less ONSET_LEAD,
    looked for in the first ONSET_SEARCH seconds only."""
    level = np.abs(mono)
    loud = np.flatnonzero(level >= level.max() * 10 ** (ONSET_DB / 20))
    first = int(loud[0]) if loud.size else 0
    return max(0, min(first, round(ONSET_SEARCH * sample_rate)) - round(ONSET_LEAD * sample_rate))


Item = TypeVar("Item", "AudioFile", Path, str)


def read_clips(
    items: Sequence[Item], spec: ClipSpec = ClipSpec()
) -> tuple[list[tuple[Item, Clip]], list[tuple[Item, str]]]:
    """Read each item's clip (an AudioFile, or a path): (item, clip) for those that decode, (item, reason) for
    those that do not. One bad file never stops the others; a decoder bug is a failure like any other."""
    clips, failures = [], []
    for item in items:
        path = item.path if isinstance(item, AudioFile) else Path(item)
        try:
            clips.append((item, read_clip(path, spec)))
        except DecodeError as exc:
            failures.append((item, str(exc)))
        except Exception as exc:
            failures.append((item, f"unexpected error: {type(exc).__name__}: {exc}"))
    return clips, failures


def resample(samples: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
    """(n,) float32 at from_sr -> (m,) float32 at to_sr."""
    if from_sr == to_sr:
        return samples.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(samples, from_sr, to_sr, quality="HQ").astype(np.float32, copy=False)


def fit_length(samples: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad at the end to exactly n samples."""
    if samples.shape[0] >= n:
        return np.ascontiguousarray(samples[:n])
    return np.pad(samples, (0, n - samples.shape[0]))
