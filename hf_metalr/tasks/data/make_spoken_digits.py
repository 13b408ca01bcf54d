"""Regenerate the ``spoken-digits`` fixture: short digit sequences spoken by espeak-ng.

Needs the ``espeak-ng`` binary (Debian: ``apt-get install -y --no-install-recommends espeak-ng``),
numpy, scipy and soundfile. Run from anywhere::

    python hf_metalr/tasks/data/make_spoken_digits.py            # writes next to this script
    python hf_metalr/tasks/data/make_spoken_digits.py --out DIR  # or somewhere else

What it writes, under ``<out>/spoken_digits/``:

* ``<split>/<id>.flac``: one clip each, 16 kHz mono, 8-bit FLAC (``PCM_S8``; espeak's output is
  synthetic and clean, so 8 bits lose nothing a recognizer needs and keep the fixture small);
* ``manifest.csv``: ``path,text,split,voice,speed,pitch`` with ``path`` relative to
  ``spoken_digits/`` and ``text`` the lower-case digit words, e.g. ``seven two``.

How the clips are made:

* a *speaker* is an espeak-ng voice plus a variant (``en-gb-scotland+m3``); a *condition* is a
  speaker at one speaking rate (words per minute). Every condition belongs to exactly one split,
  so validation and test clips come from voice/rate combinations never heard in training (the
  voices themselves recur at other rates, which keeps the task learnable by a tiny model);
* each clip is 1-3 digit words drawn uniformly from zero..nine, with a pitch drawn per clip (a
  (text, pitch) pair is redrawn if its condition already has it, so no two clips are identical);
* espeak-ng writes 22,050 Hz WAVs; they are resampled to 16 kHz with
  ``scipy.signal.resample_poly(x, 320, 441)``, trimmed to 50 ms around the speech and
  peak-normalized to 0.9.

Everything random comes from ``numpy.random.default_rng(SEED)`` in a fixed order, so the manifest
is identical on every run; the audio is identical for the same espeak-ng build (1.51 was used).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SEED = 20240603
SAMPLE_RATE = 16_000
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPEAKERS = (
    "en-us+m1",
    "en-gb+f2",
    "en-gb-scotland+m3",
    "en-029+f4",
    "en-us-nyc+m7",
    "en-gb-x-rp+f5",
    "en-gb-x-gbclan+m2",
    "en-gb-x-gbcwmd+f1",
)
SPEEDS = (130, 165, 200)  # words per minute
PITCH_RANGE = (30, 71)  # espeak -p, drawn per clip
MAX_DIGITS = 3
CLIPS_PER_CONDITION = 30
# (speaker index, speed index) -> split, all other conditions are training: each speaker has one
# held-out condition (so it is heard in training at the other two rates), and validation and
# test (4 conditions, 120 clips each) both cover all three rates.
HELD_OUT = {
    (0, 2): "validation",
    (3, 0): "validation",
    (5, 1): "validation",
    (1, 1): "test",
    (2, 0): "test",
    (4, 2): "test",
    (6, 0): "test",
    (7, 2): "validation",
}


def synthesize(text: str, voice: str, speed: int, pitch: int, workdir: Path) -> np.ndarray:
    """espeak-ng -> float32 waveform at 16 kHz, trimmed and peak-normalized."""
    import soundfile as sf
    from scipy.signal import resample_poly

    wav = workdir / "clip.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
        check=True,
    )
    audio, rate = sf.read(wav, dtype="float32")
    if rate != 22_050:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz, expected 22050")
    audio = resample_poly(audio, 320, 441).astype(np.float32)
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    margin = SAMPLE_RATE // 20
    audio = audio[max(loud[0] - margin, 0) : loud[-1] + margin]
    return (0.9 * audio / np.abs(audio).max()).astype(np.float32)


def plan() -> list[dict]:
    """The manifest rows (without audio), in a fixed order."""
    rng = np.random.default_rng(SEED)
    rows = []
    for s, speaker in enumerate(SPEAKERS):
        for r, speed in enumerate(SPEEDS):
            split = HELD_OUT.get((s, r), "train")
            drawn: set[tuple[str, int]] = set()
            for k in range(CLIPS_PER_CONDITION):
                while True:  # no two identical clips: redraw a (text, pitch) already used here
                    n = int(rng.integers(1, MAX_DIGITS + 1))
                    text = " ".join(DIGITS[d] for d in rng.integers(0, 10, size=n))
                    pitch = int(rng.integers(*PITCH_RANGE))
                    if (text, pitch) not in drawn:
                        drawn.add((text, pitch))
                        break
                clip_id = f"s{s}r{r}_{k:02d}"
                rows.append(
                    {
                        "path": f"{split}/{clip_id}.flac",
                        "text": text,
                        "split": split,
                        "voice": speaker,
                        "speed": speed,
                        "pitch": pitch,
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    import soundfile as sf

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="parent of spoken_digits/")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng not found; apt-get install -y --no-install-recommends espeak-ng")

    root = args.out / "spoken_digits"
    if root.exists():
        shutil.rmtree(root)
    rows = plan()
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            audio = synthesize(row["text"], row["voice"], row["speed"], row["pitch"], Path(tmp))
            path = root / row["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_S8")
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    counts = {split: sum(r["split"] == split for r in rows) for split in ("train", "validation", "test")}
    print(f"wrote {len(rows)} clips {counts} to {root} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
