"""Needle-in-a-haystack items on held-out text, and their scoring on models whose behaviour is known."""

import numpy as np
import pytest
import torch

from meap_scale.evals.items import TaskError, multidoc_grid, needle_grid, needle_item
from meap_scale.evals.retrieval import score_by_position, score_items
from meap_scale.models import LADDER, build_model


@pytest.fixture(scope="module")
def tokenizer(prepared):
    return prepared.load_tokenizer()


@pytest.fixture(scope="module")
def haystack(prepared):
    """Held-out validation text, never seen in training, as one token stream."""
    blocks = np.stack(prepared.open_split("val")[:]["tokens"]).reshape(-1)
    return blocks[: prepared.val_tokens].tolist()


class CopyModel(torch.nn.Module):
    """An induction head by hand: each position predicts the token that followed the longest earlier
    match (up to 8 tokens) of the text ending there. It retrieves any needle perfectly."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def generate(self, input_ids, max_new_tokens, **_):
        """Greedy, the whole context recomputed per token: the interface of a Hugging Face model's."""
        for _ in range(max_new_tokens):
            input_ids = torch.cat([input_ids, self(input_ids)[:, -1:].argmax(dim=-1)], dim=1)
        return input_ids

    def forward(self, input_ids, logits_to_keep=None):
        """``logits_to_keep``: positions whose logits to return, as Hugging Face models take it."""
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for b, row in enumerate(input_ids.tolist()):
            for t in range(len(row)):
                best, follower = 0, None
                for j in range(t):
                    k = 0
                    while k < 8 and k <= j and row[j - k] == row[t - k]:
                        k += 1
                    if k > best:
                        best, follower = k, row[j + 1]
                if follower is not None:
                    logits[b, t, follower] = 10.0
        return logits if logits_to_keep is None else logits[:, logits_to_keep]


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 1.0])
def test_the_needle_sits_at_the_requested_depth_and_the_answer_is_in_the_context(tokenizer, haystack, depth):
    item = needle_item(tokenizer, haystack, context_len=200, depth=depth, rng=np.random.default_rng(1))
    assert len(item.input_ids) == 200 and item.input_ids[0] == tokenizer.bos_token_id
    haystack_len = 200 - 1 - item.span_length - len(tokenizer(
        f" What is the secret word of {item.key}? The secret word of {item.key} is", add_special_tokens=False)["input_ids"])
    assert item.span_start == 1 + round(depth * haystack_len)
    needle = tokenizer.decode(item.input_ids[item.span_start:item.span_start + item.span_length])
    assert needle == f" The secret word of {item.key} is {item.value}."
    assert tokenizer.decode(item.input_ids).endswith(f"The secret word of {item.key} is")
    assert tokenizer.decode(list(item.candidates[item.gold])) == f" {item.value}"
    gold = item.candidates[item.gold]
    assert tuple(item.input_ids[item.value_start:item.value_start + len(gold)]) == gold  # the value, token for token


def test_items_are_deterministic_per_seed(tokenizer, haystack):
    grid = dict(context_lens=(96, 128), depths=(0.0, 0.5), per_cell=2, max_context=256)
    assert needle_grid(tokenizer, haystack, seed=3, **grid) == needle_grid(tokenizer, haystack, seed=3, **grid)
    assert needle_grid(tokenizer, haystack, seed=3, **grid) != needle_grid(tokenizer, haystack, seed=4, **grid)


def test_contexts_longer_than_the_model_maximum_fail_clearly(tokenizer, haystack):
    with pytest.raises(TaskError, match=r"context length\(s\) \[512\] exceed the model's maximum of 256"):
        needle_grid(tokenizer, haystack, context_lens=(128, 512), depths=(0.5,), per_cell=1, max_context=256)
    with pytest.raises(TaskError, match="a context plus its answer takes 6[5-9] tokens, over the model's maximum of 64"):
        needle_grid(tokenizer, haystack, context_lens=(64,), depths=(0.5,), per_cell=1, max_context=64)
    with pytest.raises(TaskError, match="needle depth must be in"):
        needle_item(tokenizer, haystack, context_len=128, depth=1.5, rng=np.random.default_rng(0))


def test_a_copying_model_retrieves_every_needle(tokenizer, haystack, prepared):
    items = needle_grid(tokenizer, haystack, context_lens=(64,), depths=(0.0, 0.5, 1.0), per_cell=2,
                        max_context=256, seed=0)
    scores = score_items(CopyModel(prepared.model_vocab_size), items, tokenizer, generate=True)
    assert scores.accuracy == 1.0 and scores.mean_rank == 0.0 and scores.exact_match == 1.0


def test_a_random_model_scores_near_chance(tokenizer, haystack, prepared):
    model = build_model(LADDER["debug"], prepared.model_vocab_size, 256, seed=0).eval()
    items = needle_grid(tokenizer, haystack, context_lens=(64,), depths=(0.0, 0.5, 1.0), per_cell=20,
                        max_context=256, seed=1)
    scores = score_items(model, items)
    assert scores.chance == 0.1 and scores.n == 60
    assert scores.accuracy < 0.3  # binomial(60, 0.1): P(>= 18 hits) < 1e-4
    assert 2.5 < scores.mean_rank < 6.5  # chance: 4.5


def test_the_control_item_drops_only_the_needle(tokenizer, haystack):
    grid = dict(context_lens=(128,), depths=(0.5,), per_cell=3, max_context=256, seed=2)
    items, controls = needle_grid(tokenizer, haystack, **grid), needle_grid(tokenizer, haystack, with_needle=False, **grid)
    for item, control in zip(items, controls):
        assert (control.key, control.value, control.candidates, control.gold) == \
               (item.key, item.value, item.candidates, item.gold)
        assert len(control.input_ids) == 128 and control.task == "needle_control" and control.span_start == -1
        assert f"is {item.value}." not in tokenizer.decode(control.input_ids)


def test_multidoc_items_put_the_gold_document_at_each_position_with_every_value_in_context(tokenizer, haystack):
    items = multidoc_grid(tokenizer, haystack, documents=10, doc_tokens=12, per_position=1, max_context=512)
    assert [item.gold for item in items] == list(range(10))
    for item in items:
        text = tokenizer.decode(item.input_ids)
        assert all(tokenizer.decode(list(c)).strip() in text for c in item.candidates)
        fact = tokenizer.decode(item.input_ids[item.span_start:item.span_start + item.span_length])
        assert fact == f" The secret word of {item.key} is {item.value}."
        assert text.endswith(f"The secret word of {item.key} is")
        gold = item.candidates[item.gold]
        assert tuple(item.input_ids[item.value_start:item.value_start + len(gold)]) == gold
    with pytest.raises(TaskError, match="exceed the model's maximum of 64"):
        multidoc_grid(tokenizer, haystack, documents=10, doc_tokens=12, per_position=1, max_context=64)


def test_the_copying_model_finds_the_gold_document_at_every_position(tokenizer, haystack, prepared):
    items = multidoc_grid(tokenizer, haystack, documents=5, doc_tokens=8, per_position=1, max_context=512, seed=1)
    by_position = score_by_position(CopyModel(prepared.model_vocab_size), items)
    assert list(by_position) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(s.accuracy == 1.0 and s.chance == 0.2 for s in by_position.values())


def test_two_hop_items_need_both_needles_and_hide_them_among_distractors(tokenizer, haystack):
    from meap_scale.evals.items import two_hop_item

    item = two_hop_item(tokenizer, haystack, context_len=160, rng=np.random.default_rng(5), distractors=2)
    text = tokenizer.decode(item.input_ids)
    assert len(item.input_ids) == 160 and item.task == "two_hop"
    hop = text.split(f"{item.key.capitalize()} leads to ")[1].split(".")[0]
    assert f"The secret word of {hop} is {item.value}." in text
    assert text.count("The secret word of") == 3  # the answer's binding and two distractors
    values_in_text = [tokenizer.decode(list(c)).strip() for c in item.candidates
                      if f"is {tokenizer.decode(list(c)).strip()}." in text]
    assert len(values_in_text) == 3 and item.value in values_in_text
    assert text.endswith(f"Where {item.key} leads, the secret word is")
    answer = tokenizer.decode(item.input_ids[item.span_start:item.span_start + item.span_length])
    assert answer == f" The secret word of {hop} is {item.value}."
    gold = item.candidates[item.gold]
    assert tuple(item.input_ids[item.value_start:item.value_start + len(gold)]) == gold


def test_two_hop_grids_are_deterministic_and_refuse_contexts_beyond_the_model(tokenizer, haystack):
    from meap_scale.evals.items import two_hop_grid

    grid = dict(context_lens=(96, 128), per_cell=3, max_context=136)
    items = two_hop_grid(tokenizer, haystack, seed=2, **grid)
    assert items == two_hop_grid(tokenizer, haystack, seed=2, **grid)
    assert [len(item.input_ids) for item in items] == [96] * 3 + [128] * 3
    with pytest.raises(TaskError, match="exceed the model's maximum of 64"):
        two_hop_grid(tokenizer, haystack, seed=2, **{**grid, "max_context": 64})
    short = two_hop_grid(tokenizer, haystack, context_lens=(64,), per_cell=3, max_context=72, seed=2)
    bindings = [tokenizer.decode(item.input_ids).count("The secret word of") for item in short]
    assert set(bindings) <= {1, 2}  # 64 tokens hold the answer's binding and at most one distractor
    assert [tokenizer.decode(item.input_ids).count("The secret word of") for item in items] == [3] * 6
    assert short == two_hop_grid(tokenizer, haystack, context_lens=(64,), per_cell=3, max_context=72, seed=2)


def test_a_lost_in_the_middle_file_gives_items_with_the_gold_document_where_the_file_puts_it(tokenizer, qa_file):
    from meap_scale.evals.items import qa_file_items, read_qa_file

    items = qa_file_items(tokenizer, read_qa_file(str(qa_file)), documents=6, max_context=512, n_candidates=4)
    assert [item.position for item in items] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    for item in items:
        gold_doc = tokenizer.decode(item.input_ids[item.span_start:item.span_start + item.span_length])
        assert gold_doc.startswith(f"Document [{round(item.position * 5) + 1}](Title: Gold)")
        assert f"The answer to this is {item.value} indeed." in gold_doc
        assert tokenizer.decode(list(item.candidates[item.gold])) == f" {item.value}" and len(item.candidates) == 4
        assert tokenizer.decode(item.input_ids).endswith(f"Question: {item.key}\nAnswer:")
    fewer = qa_file_items(tokenizer, read_qa_file(str(qa_file)), documents=3, max_context=512, n_candidates=4)
    assert [item.position for item in fewer] == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]  # same relative depth, 3 documents
    with pytest.raises(TaskError, match="exceed the model's maximum of 64"):
        qa_file_items(tokenizer, read_qa_file(str(qa_file)), documents=6, max_context=64)


def test_a_file_not_in_the_lost_in_the_middle_format_is_refused(tokenizer, tmp_path):
    from meap_scale.evals.items import read_qa_file

    with pytest.raises(TaskError, match="does not exist"):
        read_qa_file(str(tmp_path / "missing.jsonl"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answers": ["a"], "ctxs": [{"title": "t", "text": "x"}]}\n')
    with pytest.raises(TaskError, match="line 1: not in the lost-in-the-middle format"):
        read_qa_file(str(broken))


def test_batched_kv_cache_generation_matches_recomputing_the_whole_context(prepared):
    from meap_scale.evals.retrieval import greedy_continuations

    model = build_model(LADDER["debug"], prepared.model_vocab_size, 256, seed=3).eval()
    generator = torch.Generator().manual_seed(0)
    contexts = [torch.randint(4, prepared.model_vocab_size, (n,), generator=generator).tolist()
                for n in (20, 33, 20, 20, 7)]
    expected = []
    for ids in contexts:
        ids = torch.tensor([ids])
        for _ in range(6):
            with torch.no_grad():
                ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
        expected.append(ids[0, -6:].tolist())
    assert greedy_continuations(model, contexts, steps=[6] * 5, batch_size=2) == expected
