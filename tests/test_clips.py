"""tfcourse.data.clips: the captioned clips with incomplete streams of chapter 10."""

import itertools

import pytest
import torch
from sklearn.datasets import load_digits

from tfcourse.data.clips import (
    ATTRIBUTES,
    DIRECTIONS,
    GROUPS,
    PATTERN_VERBS,
    PITCHES,
    STREAMS,
    VOCABULARY,
    WORDS,
    ClipSet,
    clip_task,
    encode_captions,
    join,
    stream_widths,
)

SMALL = dict(train_clips=300, train_images=100, test_clips=200, extra_images=150)


@pytest.fixture(scope="module")
def task():
    return clip_task(**SMALL, seed=5)


def splits(task) -> dict[str, ClipSet]:
    return {"train": task.train, "test": task.test, "extra": task.extra}


def test_the_task_is_a_function_of_its_seed(task) -> None:
    again, other = clip_task(**SMALL, seed=5), clip_task(**SMALL, seed=6)
    for name, clips in splits(task).items():
        twin = splits(again)[name]
        assert clips.captions == twin.captions
        for field in ("present", "text", "mentions", "attributes", "image_ids"):
            assert torch.equal(getattr(clips, field), getattr(twin, field)), (name, field)
        assert all(torch.equal(a, b) for a, b in zip(clips.streams, twin.streams, strict=True))
    assert task.test.captions != other.test.captions
    assert not torch.equal(task.train.streams[0], other.train.streams[0])


def test_shapes_and_sizes(task) -> None:
    sizes = {"train": 300, "test": 200, "extra": 150}
    for name, clips in splits(task).items():
        B = sizes[name]
        assert len(clips) == B and len(clips.captions) == B
        assert [tuple(x.shape) for x in clips.streams] == [(B, d) for d in stream_widths()]
        assert all(x.dtype == torch.float32 and x.isfinite().all() for x in clips.streams)
        assert clips.present.shape == (B, len(STREAMS)) and clips.present.dtype == torch.bool
        assert clips.text.shape == (B, len(VOCABULARY))
        assert clips.mentions.shape == (B, len(GROUPS)) and clips.mentions.dtype == torch.bool
        assert clips.attributes.shape == (B, len(ATTRIBUTES))
        assert clips.image_ids.shape == (B,)
    assert "300 training clips of 100 digit images" in repr(task)


def test_missing_streams_are_marked_and_zero_filled(task) -> None:
    big = clip_task(train_clips=1000, train_images=100, test_clips=10, extra_images=0,
                    motion_missing=0.3, audio_missing=0.6, seed=1).train
    share_missing = 1 - big.present.float().mean(0)
    torch.testing.assert_close(share_missing, torch.tensor([0.0, 0.3, 0.6]), atol=0.05, rtol=0)
    for clips in (big, task.train, task.test, task.extra):
        for m, x in enumerate(clips.streams):
            assert (x[~clips.present[:, m]] == 0).all()  # zero-filled where missing
            assert (x[clips.present[:, m]].abs().sum(1) > 0).all()  # real descriptors elsewhere
    # the extra images have the appearance only, and no motion or sound to speak of
    assert (task.extra.present == torch.tensor([True, False, False])).all()
    assert (task.extra.attributes[:, 1:] == -1).all()
    assert (task.extra.mentions == torch.tensor([True, False, False])).all()
    assert all(c.split()[0] in ("a", "an") for c in task.extra.captions)
    none = clip_task(**SMALL, motion_missing=0.0, audio_missing=0.0).train
    assert none.present.all()


def test_held_out_clips_use_images_that_no_training_item_uses(task) -> None:
    train, test, extra = (set(s.image_ids.tolist()) for s in (task.train, task.test, task.extra))
    assert not test & (train | extra)
    assert not train & extra
    assert len(train) == 100 and len(extra) == 150  # each training image in several clips
    assert len(test) == 200  # one image each while the held-out images last
    targets = torch.tensor(load_digits().target)
    for clips in splits(task).values():  # the digit recorded is the image's label
        assert torch.equal(clips.attributes[:, 0], targets[clips.image_ids])


def test_descriptors_are_computed_from_the_rendering(task) -> None:
    clips = join(task.train, task.test)
    moving = clips.present[:, 1]
    motion, direction = clips.streams[1][moving], clips.attributes[moving, 1]
    steps = motion[:, :8].reshape(-1, 4, 2).mean(1)  # mean (row, column) step of the centre
    want = {"right": (1, 1.0), "left": (1, -1.0), "up": (0, -1.0), "down": (0, 1.0)}
    for d, name in enumerate(DIRECTIONS):
        axis, sign = want[name]
        assert sign * steps[direction == d, axis].mean() > 0.2, name
    fast = clips.attributes[moving, 2] == 1
    assert motion[fast, 8:12].mean() > 2 * motion[~fast, 8:12].mean()  # step lengths
    heard = clips.present[:, 2]
    loudest = clips.streams[2][heard, :16].argmax(1)  # the band of 250 Hz holding the tone
    pitch = clips.attributes[heard, 3]
    for p, hz in enumerate((250, 600, 1400)):
        assert (loudest[pitch == p] == hz // 250).float().mean() > 0.6, PITCHES[p]


def _has(tokens: list[str], phrase: str) -> bool:
    words = phrase.split()
    return any(tokens[i:i + len(words)] == words for i in range(len(tokens)))


def test_captions_mention_exactly_the_attributes_recorded(task) -> None:
    phrases = {"digit": WORDS["digit"], "direction": WORDS["direction"],
               "speed": WORDS["speed"], "pitch": WORDS["pitch"],
               "pattern": tuple(a + v for a, v in zip(WORDS["pattern"], PATTERN_VERBS,
                                                      strict=True))}
    every = [p for values in phrases.values() for synonyms in values for p in synonyms]
    assert len(every) == len(set(every))  # no phrase says two things
    group = {"digit": 0, "direction": 1, "speed": 1, "pitch": 2, "pattern": 2}
    for clips in splits(task).values():
        for caption, said, values in zip(clips.captions, clips.mentions.tolist(),
                                         clips.attributes.tolist(), strict=True):
            tokens = caption.split()
            for a, attribute in enumerate(ATTRIBUTES):
                heard = [v for v, synonyms in enumerate(phrases[attribute])
                         if any(_has(tokens, p) for p in synonyms)]
                assert heard == ([values[a]] if said[group[attribute]] else []), (caption,
                                                                                   attribute)
    subsets = {tuple(m) for m in task.train.mentions.tolist()}
    assert subsets == {s for s in itertools.product((False, True), repeat=3) if any(s)}


def test_text_features_count_the_words_of_the_captions(task) -> None:
    for clips in splits(task).values():
        assert torch.equal(clips.text, encode_captions(clips.captions))
        assert torch.equal(clips.text.sum(1), torch.tensor(
            [float(len(c.split())) for c in clips.captions]))  # every word is in the vocabulary
    counts = encode_captions(["a three and a 3", "Something unknown"])
    assert counts[0, VOCABULARY.index("a")] == 2 and counts[0, VOCABULARY.index("3")] == 1
    assert counts[1].sum() == 1  # "unknown" is not in the vocabulary; case is ignored


def test_join_puts_sets_one_after_the_other(task) -> None:
    both = join(task.train, task.extra)
    assert len(both) == 450 and both.captions == task.train.captions + task.extra.captions
    assert torch.equal(both.streams[1][300:], task.extra.streams[1])
    assert torch.equal(both.present[:300], task.train.present)
    with pytest.raises(TypeError, match="sets: expected one or more ClipSets"):
        join()
    with pytest.raises(TypeError, match="sets: expected one or more ClipSets"):
        join(task.train, "clips")


@pytest.mark.parametrize("options, message", [
    (dict(train_clips=0), "train_clips: expected an int >= 1"),
    (dict(train_images=0), "train_images: expected an int >= 1"),
    (dict(train_clips=50, train_images=60), "train_images: expected at most train_clips=50"),
    (dict(train_images=1000, extra_images=1000), "train_images, extra_images: expected at most"),
    (dict(test_clips=0), "test_clips: expected an int >= 1"),
    (dict(extra_images=-1), "extra_images: expected an int >= 0"),
    (dict(audio_missing=1.0), r"audio_missing: expected a share in \[0, 1\)"),
    (dict(motion_missing=-0.1), r"motion_missing: expected a share in \[0, 1\)"),
    (dict(pixel_noise=-1.0), "pixel_noise: expected a number >= 0"),
    (dict(test_fraction=1.5), r"test_fraction: expected a number in \(0, 1\)"),
    (dict(test_fraction=0.001), "test_fraction: 0.001 of each class holds out no image"),
    (dict(seed=-1), "seed: expected an int >= 0"),
])
def test_arguments_are_checked_by_name(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        clip_task(**options)


def test_encode_captions_wants_a_list_of_captions() -> None:
    with pytest.raises(TypeError, match="captions: expected a sequence of strings"):
        encode_captions("a three")
