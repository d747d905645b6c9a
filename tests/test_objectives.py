import pytest
import torch

from meap_scale.config import ObjectiveSpec
from meap_scale.objectives import IGNORE_INDEX, StreamPlace, apply_objective, mask_count, mask_scores, meap_mask

MASK, PAD, BOS, EOS = 3, 0, 1, 2


def block(batch=8, length=65, seed=0):
    """(B, L+1) random tokens above the special ids."""
    return torch.randint(10, 500, (batch, length), generator=torch.Generator().manual_seed(seed))


def masked_positions(tokens, batch):
    return batch.input_ids == MASK


def place(rows, start=0, step=0, seed=0):
    return StreamPlace(seed, step, tuple(range(start, start + rows)))


def meap_batch(tokens, step=0, start=0, seed=0, **spec):
    return apply_objective(tokens, ObjectiveSpec(name="meap", **spec), mask_token_id=MASK,
                           place=place(len(tokens), start, step, seed))


@pytest.mark.parametrize("ratio, length, expected", [(0.15, 64, 9), (0.0, 64, 1), (0.05, 10, 1), (0.5, 256, 128)])
def test_mask_count_follows_the_reference_formula(ratio, length, expected):
    assert mask_count(length, ratio) == expected


@pytest.mark.parametrize("sampling", ["per_row", "shared_columns"])
@pytest.mark.parametrize("ratio", [0.05, 0.15, 0.4])
def test_meap_masks_exactly_k_positions_per_row(ratio, sampling):
    tokens = block()
    batch = meap_batch(tokens, mask_ratio=ratio, mask_sampling=sampling)
    assert (masked_positions(tokens, batch).sum(dim=1) == mask_count(64, ratio)).all()


def test_last_input_position_is_never_masked():
    tokens = block(batch=64, length=9)
    for step in range(50):
        batch = meap_batch(tokens, step=step, mask_ratio=0.8)
        assert not masked_positions(tokens, batch)[:, -1].any()


def test_labels_are_the_clean_next_tokens_and_unmasked_inputs_unchanged():
    tokens = block()
    batch = meap_batch(tokens, mask_ratio=0.3)
    assert torch.equal(batch.labels, tokens[:, 1:])
    kept = batch.input_ids != MASK
    assert torch.equal(batch.input_ids[kept], tokens[:, :-1][kept])
    assert (batch.labels != IGNORE_INDEX).all()


def test_masks_are_keyed_by_seed_and_stream_position_alone():
    tokens = block()
    same = [meap_batch(tokens, step=5, start=40).input_ids for _ in range(2)]
    assert torch.equal(*same)
    for variant in (dict(step=5, start=48), dict(step=5, start=40, seed=9)):
        assert not torch.equal(meap_batch(tokens, **variant).input_ids, same[0]), variant
    # per row the step does not matter: a sequence is masked alike in any step, micro-batch or rank
    assert torch.equal(meap_batch(tokens, step=6, start=40).input_ids, same[0])
    halves = [meap_batch(tokens[:4], step=5, start=40).input_ids, meap_batch(tokens[4:], step=5, start=44).input_ids]
    assert torch.equal(torch.cat(halves), same[0])


def test_shared_columns_are_keyed_by_the_optimiser_step():
    tokens = block()
    shared = dict(mask_sampling="shared_columns")
    first = meap_batch(tokens[:4], step=3, start=0, **shared).input_ids == MASK
    assert torch.equal(first[0], (meap_batch(tokens[4:], step=3, start=4, **shared).input_ids == MASK)[0])
    assert not torch.equal(first[0], (meap_batch(tokens[:4], step=4, start=0, **shared).input_ids == MASK)[0])


def test_per_row_sampling_draws_different_positions_for_each_row():
    tokens = block(batch=16)
    mask = masked_positions(tokens, meap_batch(tokens, mask_ratio=0.15))
    assert len({tuple(row.nonzero().flatten().tolist()) for row in mask}) == 16


def test_shared_columns_sampling_masks_the_same_positions_in_every_row():
    tokens = block(batch=16)
    mask = masked_positions(tokens, meap_batch(tokens, mask_ratio=0.15, mask_sampling="shared_columns"))
    assert (mask == mask[:1]).all()


def test_excluded_special_tokens_are_never_masked_and_the_count_is_kept():
    tokens = block(batch=32)
    tokens[:, ::4] = EOS
    spec = ObjectiveSpec(name="meap", mask_ratio=0.5, exclude_special_tokens=True)
    batch = apply_objective(tokens, spec, mask_token_id=MASK, place=place(32),
                            special_token_ids=(BOS, EOS, PAD, MASK))
    mask = batch.input_ids == MASK
    assert not mask[tokens[:, :-1] == EOS].any()
    assert (mask.sum(dim=1) == 32).all()


def test_reference_behaviour_may_mask_special_tokens():
    tokens = torch.full((4, 65), EOS)
    batch = meap_batch(tokens, mask_ratio=0.5)
    assert ((batch.input_ids == MASK).sum(dim=1) == 32).all()


def test_ntp_shifts_without_masking_and_ignores_padding_labels():
    tokens = block()
    tokens[-1, -5:] = PAD
    batch = apply_objective(tokens, ObjectiveSpec(name="ntp"), mask_token_id=MASK, place=place(8),
                            pad_token_id=PAD)
    assert torch.equal(batch.input_ids, tokens[:, :-1])
    assert (batch.labels[-1, -5:] == IGNORE_INDEX).all()
    assert torch.equal(batch.labels[:-1], tokens[:-1, 1:])


def test_meap_mask_returns_bool_and_refuses_scores_of_another_shape():
    mask = meap_mask(block(), 0.15, scores=mask_scores(0, range(8), 64))
    assert mask.dtype == torch.bool and mask.shape == (8, 65)
    with pytest.raises(ValueError, match="do not fit"):
        meap_mask(block(), 0.15, scores=mask_scores(0, range(8), 65))


def sft_rows():
    """Two rows: prompt of 5 tokens, answers of 60 and 20 tokens, right-padded to 70."""
    tokens = torch.full((2, 70), PAD)
    answer = torch.zeros((2, 70), dtype=torch.bool)
    tokens[0, :65] = torch.arange(100, 165)
    answer[0, 5:65] = True
    tokens[1, :25] = torch.arange(200, 225)
    answer[1, 5:25] = True
    return tokens, answer


def sft(variant):
    tokens, answer = sft_rows()
    spec = ObjectiveSpec(name="meap_sft", sft_variant=variant, mask_ratio=0.1)
    return tokens, answer, apply_objective(tokens, spec, mask_token_id=MASK, place=place(2),
                                           pad_token_id=PAD, answer_mask=answer)


def test_paper_sft_concatenates_a_masked_copy_and_learns_answers_plus_masked_tokens():
    tokens, answer, batch = sft("paper")
    assert batch.input_ids.shape == (2, 129)  # 2 x 65 tokens of the longest row, minus the shift
    row, labels = batch.input_ids[0], batch.labels[0]
    assert torch.equal(row[:65], tokens[0, :65])  # the original, unmasked
    copy = row[65:129]
    masked = (copy == MASK).nonzero().flatten() + 65
    assert len(masked) == 6  # max(1, int(60 * 0.1)) answer tokens of the copy
    assert ((masked - 65 >= 5) & (masked - 65 < 64)).all()  # only answer positions, never the last
    # labels: the original's answer tokens, then the copy's masked tokens, with their clean values
    targets = (labels != IGNORE_INDEX).nonzero().flatten() + 1
    assert targets.tolist() == list(range(5, 65)) + masked.tolist()
    assert torch.equal(labels[masked - 1], tokens[0, masked - 65])


def test_paper_sft_trains_short_answers_with_plain_ntp():
    tokens, _, batch = sft("paper")
    assert not (batch.input_ids[1] == MASK).any()
    targets = (batch.labels[1] != IGNORE_INDEX).nonzero().flatten() + 1
    assert targets.tolist() == list(range(5, 25))


def test_code_sft_adds_a_separate_masked_row_with_labels_only_at_masked_positions():
    tokens, answer, batch = sft("code")
    assert batch.input_ids.shape == (4, 64)
    for original, copy, length in ((0, 2, 65), (1, 3, 25)):
        assert torch.equal(batch.input_ids[original, :length - 1], tokens[original, :length - 1])
        assert (batch.input_ids[original, length - 1:] == PAD).all()
        targets = (batch.labels[original] != IGNORE_INDEX).nonzero().flatten() + 1
        assert torch.equal(targets, answer[original].nonzero().flatten())
        masked = (batch.input_ids[copy] == MASK).nonzero().flatten()
        copy_targets = (batch.labels[copy] != IGNORE_INDEX).nonzero().flatten() + 1
        assert torch.equal(copy_targets, masked)
        assert answer[original][masked].all()
        assert torch.equal(batch.labels[copy][masked - 1], tokens[original, masked])
    assert (batch.input_ids[3] == MASK).sum() == 2  # max(1, int(20 * 0.1))


def test_sft_needs_an_answer_mask():
    with pytest.raises(ValueError, match="needs answer_mask"):
        apply_objective(block(), ObjectiveSpec(name="meap_sft"), mask_token_id=MASK, place=place(8))
