import math

import pytest

from conftest import tiny_run
from meap_scale.evals.heldout import heldout_loss
from meap_scale.models import build_model


@pytest.fixture(scope="module")
def small():
    from meap_scale.data import prepare_data

    return prepare_data(tiny_run().data)


def test_an_untrained_model_scores_about_the_log_of_the_vocabulary(small):
    model = build_model(tiny_run().model.shape, small.model_vocab_size, 64, seed=0).eval()
    result = heldout_loss(model, small, blocks=16, buckets=4)
    assert result.loss == pytest.approx(math.log(small.model_vocab_size), abs=0.3)
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    assert result.bucket_edges == (0, 16, 32, 48, 64) and len(result.bucket_loss) == 4
    assert result.tokens == 16 * 64


def test_heldout_loss_matches_the_training_loops_validation(small):
    from meap_scale.train.loop import TrainingRun
    from meap_scale.train.session import local_session

    spec = tiny_run(eval_blocks=16)
    run = TrainingRun(spec, small, local_session({}))
    model = run.placed.net.lm.eval()
    assert heldout_loss(model, small, blocks=16).loss == pytest.approx(run.evaluate(), rel=1e-5)
