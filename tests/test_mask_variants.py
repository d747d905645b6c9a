"""Masking variants MEAP is compared against: random-token replacement, a zero [MASK] embedding, and a mask
ratio decaying linearly over the run. Exact counts, clean labels, stream-keyed draws, run identity."""

import math

import pytest
import torch

from conftest import tiny_run
from meap_scale.checkpoints import load_model
from meap_scale.config import ObjectiveSpec, RunSpec
from meap_scale.models import LADDER, ZERO_EMBEDDING_KEY, build_model
from meap_scale.objectives import StreamPlace, apply_objective, mask_count
from meap_scale.scaling.groups import law_key
from meap_scale.spec_base import ConfigError
from meap_scale.train.loop import train_loop_per_worker

MASK, PAD, BOS, EOS, VOCAB = 3, 0, 1, 2, 500
SPECIALS = (BOS, EOS, PAD, MASK)


def block(batch=8, length=65, seed=0):
    return torch.randint(10, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def batch_of(tokens, *, step=0, start=0, steps=None, **spec):
    place = StreamPlace(0, step, tuple(range(start, start + len(tokens))), steps)
    return apply_objective(tokens, ObjectiveSpec(name="meap", **spec), mask_token_id=MASK, place=place,
                           special_token_ids=SPECIALS, vocab_size=VOCAB)


def test_random_tokens_replace_exactly_the_masked_positions_with_ordinary_tokens_and_labels_stay_clean():
    tokens = block()
    masked = batch_of(tokens, mask_ratio=0.3).input_ids == MASK
    replaced = batch_of(tokens, mask_ratio=0.3, mask_with="random_token")
    assert (masked.sum(dim=1) == mask_count(64, 0.3)).all()
    changed = replaced.input_ids != tokens[:, :-1]
    assert not (changed & ~masked).any()  # only masked positions change (a draw may equal the original)
    assert changed.sum() > 0.9 * masked.sum()
    fills = replaced.input_ids[masked]
    assert ((fills >= 0) & (fills < VOCAB)).all() and not torch.isin(fills, torch.tensor(SPECIALS)).any()
    assert torch.equal(replaced.labels, tokens[:, 1:])


def test_random_replacements_are_keyed_by_stream_position_not_by_batch_row():
    tokens = block(batch=4)
    whole = batch_of(tokens, start=10, mask_ratio=0.3, mask_with="random_token").input_ids
    last_alone = batch_of(tokens[3:], start=13, mask_ratio=0.3, mask_with="random_token").input_ids
    assert torch.equal(whole[3:], last_alone)
    assert not torch.equal(batch_of(tokens, start=11, mask_ratio=0.3, mask_with="random_token").input_ids, whole)


def test_random_tokens_need_the_vocabulary_size():
    place = StreamPlace(0, 0, tuple(range(8)))
    with pytest.raises(ValueError, match="vocab_size"):
        apply_objective(block(), ObjectiveSpec(name="meap", mask_with="random_token"), mask_token_id=MASK, place=place)


def test_linear_decay_masks_the_full_ratio_first_and_the_reference_minimum_last():
    tokens, steps = block(), 11
    counts = [int((batch_of(tokens, step=s, steps=steps, mask_ratio=0.4, mask_schedule="linear_decay").input_ids
                   == MASK).sum(dim=1).unique()) for s in range(steps)]
    assert counts == [mask_count(64, 0.4 * (1 - s / 10)) for s in range(steps)]
    assert counts[0] == 25 and counts[5] == 12 and counts[-1] == 1
    with pytest.raises(ValueError, match="steps"):
        batch_of(tokens, mask_schedule="linear_decay")


def test_zero_embedding_inputs_embed_to_zero_and_their_row_gets_no_input_gradient():
    model = build_model(LADDER["debug"], 512, 64, seed=0, zero_embedding_token_id=MASK)
    tokens = block(batch=2)
    batch = batch_of(tokens, mask_ratio=0.3, mask_with="zero_embedding")
    assert torch.equal(batch.input_ids, batch_of(tokens, mask_ratio=0.3).input_ids)  # the same [MASK] inputs
    embedded = model.get_input_embeddings()(batch.input_ids)
    assert (embedded[batch.input_ids == MASK] == 0).all() and (embedded[batch.input_ids != MASK] != 0).any()
    model(input_ids=batch.input_ids, labels=batch.labels).loss.backward()
    grad = model.get_input_embeddings().weight.grad
    assert (grad[MASK] == 0).all() and grad[tokens[0, 0]].abs().sum() > 0
    assert model.config.to_dict()[ZERO_EMBEDDING_KEY] == MASK


def test_a_zero_embedding_checkpoint_loads_with_its_mask_embedding_zeroed(tmp_path):
    from meap_scale.data import prepare_data

    spec = tiny_run(tokens=1024, checkpoint_every=2,
                    objective=ObjectiveSpec(name="meap", mask_with="zero_embedding"))
    data = prepare_data(spec.data)
    out = train_loop_per_worker({"run": spec.to_dict(), "data": data.to_dict(), "checkpoint_root": str(tmp_path)})
    assert math.isfinite(out["final"]["train_loss"])
    model = load_model(str(tmp_path / "step-00000002"))
    ids = torch.tensor([[data.bos_id, data.mask_id, 100]])
    assert (model.get_input_embeddings()(ids)[0, 1] == 0).all()


def test_variants_are_part_of_the_identity_and_the_law_key_but_defaults_leave_old_identities_alone():
    plain = RunSpec()
    assert "mask_with" not in plain.identity()["objective"] and "mask_schedule" not in plain.identity()["objective"]
    variants = [RunSpec(objective=ObjectiveSpec(name="meap", mask_with=w)) for w in ("random_token", "zero_embedding")]
    decaying = RunSpec(objective=ObjectiveSpec(name="meap", mask_schedule="linear_decay"))
    ids = {spec.run_id for spec in [plain, *variants, decaying]}
    assert len(ids) == 4
    keys = [law_key({"config_json": spec.to_json(), "data_fingerprint": "f"}) for spec in [plain, *variants, decaying]]
    assert len({tuple(sorted(k.items())) for k in keys}) == 4  # never fitted as one law
    ntp = RunSpec(objective=ObjectiveSpec(name="ntp", mask_with="random_token"))
    assert ntp.run_id == RunSpec(objective=ObjectiveSpec(name="ntp")).run_id  # NTP masks nothing


def test_meap_sft_refuses_pretraining_variants():
    with pytest.raises(ConfigError, match="meap_sft"):
        ObjectiveSpec(name="meap_sft", mask_with="random_token")
    with pytest.raises(ConfigError, match="mask_with"):
        ObjectiveSpec(name="meap", mask_with="blank")


def test_studies_take_the_variant_for_every_meap_run():
    from meap_scale.study.presets import build_study

    study = build_study("mask_ratio_sweep", "smoke", mask_with="random_token", mask_schedule="linear_decay")
    assert (study.base.objective.mask_with, study.base.objective.mask_schedule) == ("random_token", "linear_decay")
