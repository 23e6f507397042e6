"""--group_by_length (trainer/distributed.py): samples of similar length batched together, as Hugging Face's
Trainer does, without losing or repeating a sample, with the loader's batches kept whole, seeded per epoch."""
import random

from trainer.distributed import group_by_length


def padded(order, lengths, batch):
    return sum(max(lengths[j] for j in order[i:i + batch]) * len(order[i:i + batch]) for i in range(0, len(order), batch))


def test_grouping_cuts_padding_and_keeps_every_sample():
    rng = random.Random(0)
    lengths = [rng.choice([30, 40, 300, 350]) + rng.randrange(10) for _ in range(203)]
    order = list(range(203))
    rng.shuffle(order)
    grouped = group_by_length(order, lengths, 16, random.Random(1))
    assert sorted(grouped) == sorted(order)                                 # each sample once
    assert padded(grouped, lengths, 16) < 0.7 * padded(order, lengths, 16)
    batches = [grouped[i:i + 16] for i in range(0, len(grouped), 16)]
    assert all(len(b) == 16 for b in batches[:-1]) and len(batches[-1]) == 203 % 16   # short batch last
    assert max(lengths[j] for j in batches[0]) == max(lengths)             # the longest batch first
    assert group_by_length(order, lengths, 16, random.Random(1)) == grouped            # seeded
    assert group_by_length(order, lengths, 16, random.Random(2)) != grouped


def test_mega_batches_bound_the_sort():
    lengths = list(range(100))
    grouped = group_by_length(list(range(100)), lengths, 4, random.Random(0), mega=5)
    batches = [grouped[i:i + 4] for i in range(0, 100, 4)]
    assert all(max(b) // 20 == min(b) // 20 for b in batches)              # a batch never spans two mega-batches
