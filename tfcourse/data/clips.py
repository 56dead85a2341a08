r"""Captioned clips with incomplete descriptor streams, for text-to-clip retrieval (book:
chapter 10, the Mixture of Embedding Experts).

A small stand-in for the setting of Miech, Laptev and Sivic (2018), "Learning a Text-Video
Embedding from Incomplete and Heterogeneous Data" (arXiv:1804.02516): clips described by several
streams of descriptors, some of them missing for a share of the clips; captions that mention some
of what happens; and captioned still images as extra training data (the paper adds COCO images to
its videos). Everything is generated from real handwritten digits that ship with scikit-learn
(:mod:`tfcourse.data.digits`); nothing is downloaded.

**A clip** is one digit image (8×8 pixels) moving across a 20×20 canvas for 5 frames, right, left,
up or down, slowly (1 pixel a frame) or fast (3 pixels a frame), with a random contrast and pixel
noise; and a sound of 0.128 s: a tone, low, middle or high (±10 % pitch jitter), steady or
beeping, over white noise and a steady hum of random pitch and loudness. The descriptors are
computed from the rendered frames and the waveform, as a feature extractor would:

* ``appearance`` (100): the 10×10 window around the digit's tracked centre, averaged over the
  frames;
* ``motion`` (37): the tracked centre's displacement between frames (8) and its length (4), and
  the mean absolute frame difference pooled to 5×5 (25);
* ``audio`` (24): the log energies of 16 frequency bands of 250 Hz, and the magnitude spectrum
  of the loudness over 16 windows of 8 ms (8; the beeping shows there).

A stream is **missing** for a random share of the clips (``motion_missing``, ``audio_missing``;
the appearance is always there): its row is zero and ``present`` says False. **A caption**
mentions a random non-empty subset of the digit, the motion (direction and speed) and the sound
(pitch and pattern), each subset equally likely, in wording drawn from templates and synonyms
("a 7 gently going towards the top while a bass tone pulses", "an object with a high constant
sound"). Whether it mentions the sound does not depend on whether the clip's audio stream is
there, as with real captions. Its text features are word counts over the fixed
:data:`VOCABULARY` (95 words). **An extra image** is a still digit (one frame, as clean as the
mean of a clip's frames) with a caption about the digit only ("a picture of the digit two"):
appearance present, motion and audio missing.

The held-out clips (``test``) use digit images that no training clip or extra image uses (a
quarter of each class, 449 images, by default); the training clips reuse a smaller set of
images, several clips each (as a video data set shows the same scenes again), and the extra
images bring images that no clip uses. The default task: 2,000 training clips of 300 digit
images; 1,000 held-out clips, so that each held-out image is in two or three of them, with its
own motion, sound, noise and caption each time; 1,000 extra images; motion missing for 20 % of
the clips and audio for 40 %. It takes a few seconds to generate, about half of it loading
scikit-learn.

Glossary: B items (clips or images) of a split, M = 3 streams, Dm width of stream m, V words in
the vocabulary, F frames of a clip (T where a still image has one), I canvas side in pixels.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tfcourse import _validate

STREAMS = ("appearance", "motion", "audio")
# What a caption can mention, in the order of `mentions`; group m is seen by stream m.
GROUPS = ("digit", "motion", "sound")
ATTRIBUTES = ("digit", "direction", "speed", "pitch", "pattern")  # the columns of `attributes`
DIRECTIONS = ("right", "left", "up", "down")
SPEEDS = ("slow", "fast")
PITCHES = ("low", "middle", "high")
PATTERNS = ("steady", "beeping")

# The words for each value of each attribute: a caption uses one of them. The sound's pattern
# is said with an adjective ("a steady tone") or with a verb (PATTERN_VERBS: "a tone beeps").
WORDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "digit": (("zero", "0"), ("one", "1"), ("two", "2"), ("three", "3"), ("four", "4"),
              ("five", "5"), ("six", "6"), ("seven", "7"), ("eight", "8"), ("nine", "9")),
    "direction": (("right", "rightwards", "to the right", "east"),
                  ("left", "leftwards", "to the left", "west"),
                  ("up", "upwards", "towards the top", "north"),
                  ("down", "downwards", "towards the bottom", "south")),
    "speed": (("slowly", "gently", "at a crawl"), ("quickly", "rapidly", "at speed")),
    "pitch": (("low", "deep", "bass"), ("medium", "mid-pitched", "middle"),
              ("high", "shrill", "high-pitched")),
    "pattern": (("steady", "continuous", "constant"), ("beeping", "pulsing", "intermittent")),
}
PATTERN_VERBS = (("holds", "sounds steadily", "plays on"), ("beeps", "pulses", "comes and goes"))
SUBJECTS = ("a {digit}", "the digit {digit}", "a handwritten {digit}", "the number {digit}")
NO_SUBJECT = ("something", "a shape", "an object", "a mark")
MOTION_TEMPLATES = ("{move} {direction} {speed}", "{speed} {move} {direction}")
MOVES = ("moving", "heading", "travelling", "going")
SOUND_TEMPLATES = ("with a {pitch} {pattern} {sound}", "while a {pitch} {sound} {pattern_verb}")
SOUNDS = ("tone", "sound", "note")
CLIP_OPENINGS = ("", "a clip of", "we see", "footage of")
IMAGE_OPENINGS = ("a photo of", "a picture of", "an image of")


def _vocabulary() -> tuple[str, ...]:
    phrases = [*SUBJECTS, *NO_SUBJECT, *MOTION_TEMPLATES, *MOVES, *SOUND_TEMPLATES, *SOUNDS,
               *CLIP_OPENINGS, *IMAGE_OPENINGS, *itertools.chain(*PATTERN_VERBS),
               *itertools.chain(*itertools.chain(*WORDS.values()))]
    return tuple(sorted({w for p in phrases for w in re.sub(r"\{\w+\}", " ", p).split()}))


VOCABULARY = _vocabulary()
CANVAS, FRAMES, DIGIT, WINDOW = 20, 5, 8, 10  # pixels, frames, pixels, pixels
SPEED_PIXELS = (1, 3)  # pixels a frame, slow and fast
SAMPLES, RATE, AUDIO_WINDOWS = 1024, 8000, 8  # 0.128 s at 8 kHz; spectra of 8 windows
PITCH_HZ = (250.0, 600.0, 1400.0)


@dataclasses.dataclass(frozen=True)
class ClipSet:
    """One split: B clips (or images) with their streams and captions.

    ``streams``: M tensors (B, Dm) float32, zero where the stream is missing; ``present``: (B, M)
    bool; ``text``: (B, V) float32 word counts of ``captions``; ``mentions``: (B, 3) bool, which of
    :data:`GROUPS` each caption mentions; ``attributes``: (B, 5) int64, the index of each of
    :data:`ATTRIBUTES` (-1 where an image has no motion or sound); ``image_ids``: (B,) int64, the
    row of the digit in ``sklearn.datasets.load_digits``.
    """

    streams: tuple[torch.Tensor, ...]
    present: torch.Tensor
    text: torch.Tensor
    captions: tuple[str, ...]
    mentions: torch.Tensor
    attributes: torch.Tensor
    image_ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)

    def __repr__(self) -> str:
        if not len(self):
            return "ClipSet(0 items)"
        missing = ", ".join(f"{name} missing {100 * (1 - p):.0f}%" for name, p in
                            zip(STREAMS, self.present.float().mean(0).tolist(), strict=True))
        return f"ClipSet({len(self)} items; {missing})"


@dataclasses.dataclass(frozen=True)
class ClipTask:
    """Training clips, held-out clips and extra captioned images (see the module docstring)."""

    train: ClipSet
    test: ClipSet
    extra: ClipSet

    def __repr__(self) -> str:
        widths = ", ".join(f"{n} {d}" for n, d in zip(STREAMS, stream_widths(), strict=True))
        return (f"ClipTask({len(self.train)} training clips of "
                f"{len(self.train.image_ids.unique())} digit images, {len(self.test)} held-out "
                f"clips, {len(self.extra)} extra images; streams: {widths}; "
                f"{len(VOCABULARY)} words)")


def stream_widths() -> tuple[int, ...]:
    """Dm of each stream: appearance, motion, audio."""
    return (WINDOW * WINDOW, 3 * (FRAMES - 1) + 25, 16 + 8)


def encode_captions(captions: Sequence[str]) -> torch.Tensor:
    """Word counts (B, V) float32 over :data:`VOCABULARY`; words outside it are ignored."""
    if isinstance(captions, str):
        raise TypeError("captions: expected a sequence of strings, got one string")
    index = {w: i for i, w in enumerate(VOCABULARY)}
    rows, columns = [], []
    for row, caption in enumerate(captions):
        known = [index[w] for w in caption.lower().split() if w in index]
        rows += [row] * len(known)
        columns += known
    counts = torch.zeros(len(captions), len(VOCABULARY))
    return counts.index_put_((torch.tensor(rows, dtype=torch.long),
                              torch.tensor(columns, dtype=torch.long)),
                             torch.ones(len(rows)), accumulate=True)


def join(*sets: ClipSet) -> ClipSet:
    """The items of ``sets``, one after the other (for example training clips and extra images)."""
    if not sets or not all(isinstance(c, ClipSet) for c in sets):
        raise TypeError(f"sets: expected one or more ClipSets, got "
                        f"{[type(c).__name__ for c in sets]}")
    return ClipSet(
        streams=tuple(torch.cat(s) for s in zip(*(c.streams for c in sets), strict=True)),
        present=torch.cat([c.present for c in sets]),
        text=torch.cat([c.text for c in sets]),
        captions=tuple(itertools.chain.from_iterable(c.captions for c in sets)),
        mentions=torch.cat([c.mentions for c in sets]),
        attributes=torch.cat([c.attributes for c in sets]),
        image_ids=torch.cat([c.image_ids for c in sets]),
    )


def _render(digits: torch.Tensor, attributes: torch.Tensor, contrast: torch.Tensor,
            pixel_noise: float, g: torch.Generator) -> torch.Tensor:
    """Frames (B, F, I, I): each digit (B, 8, 8) moving in its direction at its speed, from a
    random start that keeps it on the canvas."""
    B = len(digits)
    room = CANVAS - DIGIT  # the top-left corner stays in [0, room]
    step = torch.tensor(SPEED_PIXELS)[attributes[:, 2]]  # (B,) pixels a frame
    travel = step * (FRAMES - 1)
    start = (torch.rand(B, generator=g) * (room - travel + 1)).long()  # along the motion
    across = torch.randint(room + 1, (B,), generator=g)
    along = start[:, None] + step[:, None] * torch.arange(FRAMES)  # (B, F)
    backwards = (attributes[:, 1] == 1) | (attributes[:, 1] == 2)  # left and up run towards 0
    along = torch.where(backwards[:, None], room - along, along)
    horizontal = (attributes[:, 1] < 2)[:, None]
    top = torch.where(horizontal, across[:, None], along)  # (B, F) first row of the digit
    left = torch.where(horizontal, along, across[:, None])  # (B, F) first column
    rows = (top[..., None] + torch.arange(DIGIT))[..., :, None]  # (B, F, 8, 1)
    cols = (left[..., None] + torch.arange(DIGIT))[..., None, :]  # (B, F, 1, 8)
    frames = torch.zeros(B, FRAMES, CANVAS, CANVAS)
    frames[torch.arange(B)[:, None, None, None], torch.arange(FRAMES)[None, :, None, None],
           rows, cols] = (digits * contrast[:, None, None])[:, None]  # (B, 1, 8, 8) to each frame
    return frames + pixel_noise * torch.randn(frames.shape, generator=g)


def _track(frames: torch.Tensor) -> torch.Tensor:
    """The centre of the digit in each of the T frames, (B, T, 2) (row, column): the centroid of
    the pixels of the smoothed (3×3) frame that stand out of its noise (more than 3 robust
    standard deviations above its median)."""
    B, T = frames.shape[:2]
    smooth = F.avg_pool2d(frames.reshape(B * T, 1, CANVAS, CANVAS), 3, stride=1,
                          padding=1).reshape(B, T, CANVAS * CANVAS)
    median = smooth.median(dim=-1, keepdim=True).values  # (B, T, 1): the background
    spread = 1.4826 * (smooth - median).abs().median(dim=-1, keepdim=True).values
    weight = (smooth - median - 3 * spread).clamp(min=0).reshape(B, T, CANVAS, CANVAS) + 1e-6
    grid = torch.arange(CANVAS, dtype=frames.dtype)
    total = weight.sum((-2, -1))  # (B, T)
    rows = (weight.sum(-1) * grid).sum(-1) / total
    cols = (weight.sum(-2) * grid).sum(-1) / total
    return torch.stack([rows, cols], dim=-1)


def _appearance(frames: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(B, WINDOW²): the window around the tracked centre, averaged over the T frames."""
    B, T = frames.shape[:2]
    padded = F.pad(frames, (WINDOW // 2,) * 4)  # (B, T, I + W, I + W)
    # the window's first row and column in the padded frame: centre + W/2 - W/2
    corner = centres.round().long().clamp(0, CANVAS - 1)  # (B, T, 2)
    offsets = torch.arange(WINDOW)
    rows = (corner[..., 0, None] + offsets)[..., :, None]  # (B, T, W, 1)
    cols = (corner[..., 1, None] + offsets)[..., None, :]  # (B, T, 1, W)
    windows = padded[torch.arange(B)[:, None, None, None], torch.arange(T)[None, :, None, None],
                     rows, cols]  # (B, T, W, W)
    return windows.mean(1).reshape(B, WINDOW * WINDOW)


def _motion(frames: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(B, 37): the tracked centre's displacement between frames (B, (F-1)·2) and its length
    (B, F-1), in units of the fast speed, and the mean absolute frame difference pooled to
    5×5 (B, 25)."""
    B = frames.shape[0]
    steps = (centres[:, 1:] - centres[:, :-1]) / SPEED_PIXELS[1]  # (B, F-1, 2)
    change = (frames[:, 1:] - frames[:, :-1]).abs().mean(1, keepdim=True)  # (B, 1, I, I)
    pooled = F.avg_pool2d(change, CANVAS // 5).reshape(B, 25)
    return torch.cat([steps.reshape(B, -1), steps.norm(dim=-1), pooled], dim=1)


def _audio(attributes: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(B, 24): the log band energies (16) of a tone (its pitch, steady or beeping) over a hum and
    white noise, and the magnitude spectrum of its loudness over time (8)."""
    B = len(attributes)
    t = torch.arange(SAMPLES) / RATE
    pitch = torch.tensor(PITCH_HZ)[attributes[:, 3]] * (1 + 0.2 * (torch.rand(B, generator=g)
                                                                    - 0.5))
    phase = 2 * torch.pi * torch.rand(B, 1, generator=g)
    tone = torch.sin(2 * torch.pi * pitch[:, None] * t + phase)  # (B, SAMPLES)
    period = torch.randint(160, 320, (B, 1), generator=g)
    start = torch.randint(0, 320, (B, 1), generator=g)
    on = ((torch.arange(SAMPLES) + start) % period) < period // 2  # (B, SAMPLES)
    beeping = (attributes[:, 4] == 1)[:, None]
    envelope = torch.where(beeping, on.float(), 1.0) * (0.5 + 0.5 * torch.rand(B, 1, generator=g))
    hum_hz = 100 + 1900 * torch.rand(B, 1, generator=g)
    hum = 0.5 * torch.rand(B, 1, generator=g) * torch.sin(2 * torch.pi * hum_hz * t)
    noise = (0.3 + 0.5 * torch.rand(B, 1, generator=g)) * torch.randn(B, SAMPLES, generator=g)
    wave = envelope * tone + hum + noise
    windows = wave.reshape(B, AUDIO_WINDOWS, SAMPLES // AUDIO_WINDOWS)
    spectrum = torch.fft.rfft(windows * torch.hann_window(windows.shape[-1]), dim=-1).abs() ** 2
    bands = spectrum[..., :64].reshape(B, AUDIO_WINDOWS, 16, 4).sum(-1)  # 16 bands of 250 Hz
    # the beeping: the spectrum of the loudness over 16 windows of 8 ms (modulations to 62 Hz)
    loudness = wave.reshape(B, 16, SAMPLES // 16).pow(2).mean(-1).log()  # (B, 16)
    modulation = torch.fft.rfft(loudness - loudness.mean(1, keepdim=True), dim=-1).abs()
    return torch.cat([bands.mean(1).log1p(), modulation[:, 1:]], dim=1)  # (B, 16 + 8)


def _caption(values: list[int], mentions: list[bool], opening: str, rng: random.Random) -> str:
    """A caption saying the ``values`` of :data:`ATTRIBUTES` of the groups it ``mentions``."""
    digit, direction, speed, pitch, pattern = values
    words = [opening] if opening else []
    words.append(rng.choice(SUBJECTS).format(digit=rng.choice(WORDS["digit"][digit]))
                 if mentions[0] else rng.choice(NO_SUBJECT))
    if mentions[1]:
        words.append(rng.choice(MOTION_TEMPLATES).format(
            move=rng.choice(MOVES), direction=rng.choice(WORDS["direction"][direction]),
            speed=rng.choice(WORDS["speed"][speed])))
    if mentions[2]:
        words.append(rng.choice(SOUND_TEMPLATES).format(
            pitch=rng.choice(WORDS["pitch"][pitch]), sound=rng.choice(SOUNDS),
            pattern=rng.choice(WORDS["pattern"][pattern]),
            pattern_verb=rng.choice(PATTERN_VERBS[pattern])))
    return " ".join(words)


def _clip_set(images: torch.Tensor, labels: torch.Tensor, image_ids: torch.Tensor, *,
              still: bool, motion_missing: float, audio_missing: float, pixel_noise: float,
              g: torch.Generator, rng: random.Random) -> ClipSet:
    """Clips of the digit ``images`` (B, 8, 8), or still images with ``still``."""
    B = len(images)
    attributes = torch.stack([
        labels,
        torch.randint(len(DIRECTIONS), (B,), generator=g),
        torch.randint(len(SPEEDS), (B,), generator=g),
        torch.randint(len(PITCHES), (B,), generator=g),
        torch.randint(len(PATTERNS), (B,), generator=g)], dim=1)  # (B, 5)
    contrast = 0.6 + 0.4 * torch.rand(B, generator=g)
    # a photo is one frame, with no motion or sound, as clean as the mean of a clip's frames
    frames = _render(images, attributes, contrast,
                     pixel_noise / FRAMES ** 0.5 if still else pixel_noise, g)
    if still:
        frames = frames[:, :1]  # (B, 1, I, I)
    centres = _track(frames)
    appearance = _appearance(frames, centres)
    if still:
        attributes[:, 1:] = -1
        present = torch.tensor([True, False, False]).repeat(B, 1)
        motion, audio = torch.zeros(B, stream_widths()[1]), torch.zeros(B, stream_widths()[2])
        mentions = [[True, False, False]] * B
    else:
        present = torch.stack([torch.ones(B, dtype=torch.bool),
                               torch.rand(B, generator=g) >= motion_missing,
                               torch.rand(B, generator=g) >= audio_missing], dim=1)
        motion, audio = _motion(frames, centres), _audio(attributes, g)
        subsets = [list(s) for s in itertools.product((False, True), repeat=3) if any(s)]
        mentions = [rng.choice(subsets) for _ in range(B)]
    openings = IMAGE_OPENINGS if still else CLIP_OPENINGS
    captions = tuple(_caption(values, said, rng.choice(openings), rng)
                     for values, said in zip(attributes.tolist(), mentions, strict=True))
    return ClipSet(
        streams=tuple(torch.where(present[:, m, None], x, 0.0)
                      for m, x in enumerate((appearance, motion, audio))),
        present=present, text=encode_captions(captions), captions=captions,
        mentions=torch.tensor(mentions, dtype=torch.bool).reshape(B, 3), attributes=attributes,
        image_ids=image_ids)


def clip_task(
    *, train_clips: int = 2000, train_images: int = 300, test_clips: int = 1000,
    extra_images: int = 1000,
    motion_missing: float = 0.2, audio_missing: float = 0.4, pixel_noise: float = 0.3,
    test_fraction: float = 0.25, seed: int = 0,
) -> ClipTask:
    """The retrieval task, a deterministic function of its arguments (see the module docstring).

    ``test_fraction`` of each digit class is held out for the ``test_clips``, which take the
    held-out images in turn (each clip its own image while there are enough). From the other
    images, ``train_images`` make the ``train_clips`` (each image in turn) and the next
    ``extra_images`` the extra images. ``motion_missing`` and ``audio_missing`` are the shares of
    clips without that stream; ``pixel_noise`` is the standard deviation of the noise added to
    every pixel of a frame (the digits are in [0, 1]).
    """
    from sklearn.datasets import load_digits  # imported here: only this task and vision need it

    _validate.integer(train_clips, "train_clips", 1)
    _validate.integer(train_images, "train_images", 1)
    _validate.integer(test_clips, "test_clips", 1)
    _validate.integer(extra_images, "extra_images", 0)
    _validate.integer(seed, "seed")
    for name, value in (("motion_missing", motion_missing), ("audio_missing", audio_missing)):
        if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
            raise ValueError(f"{name}: expected a share in [0, 1), got {value!r}")
    if not (isinstance(pixel_noise, int | float) and pixel_noise >= 0.0):
        raise ValueError(f"pixel_noise: expected a number >= 0, got {pixel_noise!r}")
    if not (isinstance(test_fraction, float) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    labels = torch.tensor(digits.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    held_out = torch.zeros(len(labels), dtype=torch.bool)
    for digit in range(10):  # stratified: the same share of every class
        rows = (labels == digit).nonzero().squeeze(1)
        rows = rows[torch.randperm(len(rows), generator=g)]
        held_out[rows[: round(test_fraction * len(rows))]] = True
    test_pool = held_out.nonzero().squeeze(1)
    train_pool = (~held_out).nonzero().squeeze(1)
    if len(test_pool) == 0:
        raise ValueError(f"test_fraction: {test_fraction} of each class holds out no image")
    test_pool = test_pool[torch.randperm(len(test_pool), generator=g)]
    train_pool = train_pool[torch.randperm(len(train_pool), generator=g)]
    if train_images + extra_images > len(train_pool):
        raise ValueError(f"train_images, extra_images: expected at most {len(train_pool)} "
                         f"together (the images not held out), got {train_images} + "
                         f"{extra_images}")
    if train_images > train_clips:
        raise ValueError(f"train_images: expected at most train_clips={train_clips} (each image "
                         f"is in at least one clip), got {train_images}")
    ids = {"train": train_pool[torch.arange(train_clips) % train_images],  # each image in turn
           "test": test_pool[torch.arange(test_clips) % len(test_pool)],
           "extra": train_pool[train_images:train_images + extra_images]}
    return ClipTask(**{
        split: _clip_set(images[rows], labels[rows], rows, still=split == "extra",
                         motion_missing=motion_missing, audio_missing=audio_missing,
                         pixel_noise=pixel_noise, g=g, rng=rng)
        for split, rows in ids.items()})
