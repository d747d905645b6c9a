"""Simulated studies with known truth and a real study's dependence, as ``runs`` rows of the results store.

A study's verdicts and intervals are only as honest as their calibration on data like the study's own, and a
real study's runs are not independent: every run of one seed shares its initial weights and data order (both
objectives), whatever luck that seed gives one objective it gives in every cell, a decay branch is its
parent's trajectory up to its cooldown, and each run then scatters on its own. ``simulate_rows`` writes the
runs of a real ``Design`` (every ``RunSpec`` a StudySpec trains: sizes, budgets, seeds, learning rates, decay
branches, as ``meap_scale.study.spec.study_runs`` lists them) with a validation loss drawn from

    L = L_true(N, D; objective) + lr_penalty + u[seed] + v[seed, objective] + w[family] + e[run]

where L_true is a known law for NTP (Chinchilla's form, or ``CurvedLaw``, one that form cannot describe) and the
same law with a true compute multiplier for MEAP (``PriorLaw.treated_loss``; 1.0 is the null), ``lr_penalty`` = ``lr_sensitivity`` x log(lr / optimum)^2, and
u, v, w, e are independent normal draws with the ``Noise`` standard deviations (nats; u, v and w can instead
scale the loss, ``Noise.multiplicative_at``). u cancels in a paired
difference, v does not: it is the seed-level MEAP-NTP component that makes pairs of one seed dependent. The
train loss is the same clean loss with its own run-level draw. Rows are built by the store's own ``run_row``
(real identities, law keys and config JSON) over a stand-in for the prepared corpus, so the real pipeline (law
groups, learning-rate choice, fits, paired verdicts) reads them as it reads a study's. ``simulate_evals`` adds
whole-task retrieval ``evals`` rows: binomial item counts from a known sigmoid (``Retrieval``) of each run's
observed loss.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from meap_scale.config import RunSpec
from meap_scale.data import PreparedData
from meap_scale.models import padded_vocab_size, param_counts
from meap_scale.scaling.power import PriorLaw
from meap_scale.spec_base import ConfigError
from meap_scale.store import ResultsStore
from meap_scale.store.rows import run_row

SIMULATED_LAW = PriorLaw(1.5, 40.0, 120.0, 0.3, 0.3,
                         "a law put at the laptop presets' scale (losses of 4-5 nats at 0.6-2M parameters and "
                         "0.25-1M tokens), chosen, not fitted")
SIMULATED_ENV = {"versions_json": '{"simulated": true}', "git_commit": None}
STARTED = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class CurvedLaw(PriorLaw):
    """A law the Chinchilla form cannot describe: the loss falls below E + A/N^alpha + B/D^beta by a factor
    exp(-interaction x log(N / n0) x log(D / d0)), an interaction of size and data the form lacks, largest where
    both are largest: where a study's extrapolation goes. What an extrapolation check must notice from the
    fitted runs alone, without knowing the form is wrong."""

    interaction: float = 0.0
    n0: float = 1.0
    d0: float = 1.0

    def loss(self, n, d) -> np.ndarray:
        n, d = np.asarray(n, float), np.asarray(d, float)
        return super().loss(n, d) * np.exp(-self.interaction * np.log(n / self.n0) * np.log(d / self.d0))


def bent(law: PriorLaw, interaction: float, n0: float = 1e8, d0: float = 2e9) -> CurvedLaw:
    """``law`` bent by an N x D ``interaction`` about (``n0``, ``d0``): by default the paper grid's smallest size
    and budget, so the paper grid's fitted runs show little of it and its largest cell most."""
    source = f"{law.source}, x exp(-{interaction:g} log(N/{n0:g}) log(D/{d0:g}))"
    return CurvedLaw(law.E, law.A, law.B, law.alpha, law.beta, source, interaction, n0, d0)


@dataclass(frozen=True)
class Noise:
    """Standard deviations (nats of validation loss) of each level of a study's dependence, and its lr response."""

    seed: float = 0.02
    """Shared by every run of a seed, both objectives: cancels in a paired difference."""
    seed_objective: float = 0.01
    """Shared by every run of one seed and one objective (and mask ratio): the seed-level MEAP-NTP component."""
    family: float = 0.0
    """Shared by a run and its decay branches."""
    run: float = 0.003
    """Each run alone."""
    lr_sensitivity: float = 0.05
    """Loss added per squared natural-log distance of the learning rate from the optimum."""
    multiplicative_at: float = 0.0
    """0: the seed, seed x objective and family draws add their nats to every run's loss; > 0: they scale it by
    exp(draw / multiplicative_at), the draw's nats at that loss and proportionally more above it. Which one real
    seed luck is has not been measured; the intervals are calibrated under both."""

    def __post_init__(self) -> None:
        for name in ("seed", "seed_objective", "family", "run", "lr_sensitivity", "multiplicative_at"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"Noise.{name} must be a finite number >= 0, got {value}")


@dataclass(frozen=True)
class Truth:
    """The law every simulated run follows, and what MEAP is worth."""

    law: PriorLaw = SIMULATED_LAW
    """NTP's law L(N, D)."""
    multiplier: float = 1.0
    """MEAP's true compute multiplier over NTP at every compute (1.0: the null, both follow one law)."""
    lr_optimum: float | None = None
    """The learning rate with no penalty; None: the geometric mean of the design's learning rates."""
    multipliers: dict = field(default_factory=dict)
    """Mask ratio -> multiplier, for designs whose ratios differ in truth; others take ``multiplier``."""

    def __post_init__(self) -> None:
        for value in (self.multiplier, *self.multipliers.values()):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"a true multiplier must be a positive number, got {value}")

    def multiplier_of(self, spec: RunSpec) -> float:
        if spec.objective.name == "ntp" or spec.objective.mask_ratio == 0:
            return 1.0
        return self.multipliers.get(spec.objective.mask_ratio, self.multiplier)

    def clean_loss(self, spec: RunSpec, n: float) -> float:
        """The law's loss of ``spec`` with ``n`` parameters, before learning-rate penalty and noise."""
        return float(self.law.treated_loss(n, spec.tokens_trained, self.multiplier_of(spec)))


def simulated_data(spec: RunSpec) -> PreparedData:
    """A stand-in for the prepared corpus of ``spec``: what rows record of it (a fingerprint, the padded
    vocabulary, a unigram entropy above every simulated loss, so no run reads as diverged)."""
    fingerprint = "simulated-" + hashlib.sha256(spec.data.to_json().encode()).hexdigest()[:12]
    vocab = spec.data.vocab_size
    return PreparedData(directory="simulated", tokenizer_path="simulated", fingerprint=fingerprint,
                        block_len=spec.data.seq_len + 1, vocab_size=vocab, model_vocab_size=padded_vocab_size(vocab),
                        mask_id=0, bos_id=1, eos_id=2, pad_id=3, train_documents=1, val_documents=1,
                        train_tokens=10**15, val_tokens=10**6, train_blocks=1, val_blocks=1, unigram_entropy=50.0)


def _objective_key(spec: RunSpec) -> tuple:
    return ("ntp", 0.0) if spec.objective.name == "ntp" else (spec.objective.name, spec.objective.mask_ratio)


class _Draws:
    """One normal draw per level and key, made the first time a key is asked for, from one generator."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.values = rng, {}

    def __call__(self, level: str, key, sd: float) -> float:
        if (level, key) not in self.values:
            self.values[(level, key)] = float(self.rng.normal(0.0, sd)) if sd else 0.0
        return self.values[(level, key)]


@dataclass(frozen=True)
class Design:
    """The runs of a simulated study, unique by run id, with what every simulation of them shares: each run's
    parameter count, decay-branch family and ``runs`` row (built once by the store's ``run_row``; a
    simulation fills in its losses)."""

    study: str
    specs: tuple[RunSpec, ...]
    params: tuple[int, ...]
    families: tuple[str, ...]
    rows: tuple[dict, ...]

    @classmethod
    def of(cls, runs: list[RunSpec], study: str) -> "Design":
        if not runs:
            raise ConfigError("a simulated study needs at least one run in its design")
        specs = tuple({spec.run_id: spec for spec in runs}.values())
        data = [simulated_data(spec) for spec in specs]
        params = tuple(param_counts(s.model.shape, d.model_vocab_size, s.model.tie_embeddings).total
                       for s, d in zip(specs, data))
        final = {"epoch": 0.0, "tokens_per_s": 1.0, "hardware": "simulated"}
        rows = tuple(run_row(spec, prepared, final={"tokens": spec.tokens_trained, **final},
                             status="finished", started_at=STARTED, wall_seconds=1.0, study=study, env=SIMULATED_ENV)
                     for spec, prepared in zip(specs, data))
        return cls(study, specs, params, tuple(row["parent_run_id"] or row["run_id"] for row in rows), rows)

    def mean_compute(self) -> float:
        """The geometric mean of the runs' compute (C = 6ND): where the multiplier is reported in the middle."""
        return float(np.exp(np.mean([math.log(6.0 * n * spec.tokens_trained)
                                     for spec, n in zip(self.specs, self.params)])))

    def lr_optimum(self, truth: Truth) -> float:
        if truth.lr_optimum is not None:
            return truth.lr_optimum
        return float(np.exp(np.mean(np.log([spec.optim.lr for spec in self.specs]))))

    def clean_losses(self, truth: Truth) -> list[float]:
        """Each run's loss under ``truth``, its learning-rate penalty not included."""
        return [truth.clean_loss(spec, n) for spec, n in zip(self.specs, self.params)]


def seed_sd(design: Design, noise: Noise, treatment: tuple, baseline: tuple = ("ntp", 0.0)) -> float:
    """The standard deviation of one seed's mean treatment - baseline difference under ``noise``, from the design's
    structure: the seed x objective draws of both objectives, each run's own draw, and each decay-branch family's
    draw weighted by the share of the seed's cells it spans (the seed draw cancels). Assumes every seed holds the
    same cells, as a grid study's do."""
    cells: dict[tuple, dict[tuple, str]] = {}
    for spec, n, family in zip(design.specs, design.params, design.families):
        cells.setdefault((n, spec.tokens_trained, spec.seed), {})[_objective_key(spec)] = family
    paired = [(key, objectives) for key, objectives in cells.items() if treatment in objectives and baseline in objectives]
    if not paired:
        raise ConfigError(f"the design has no cell with both {treatment} and {baseline}")
    seed = paired[0][0][2]
    mine = [objectives for key, objectives in paired if key[2] == seed]
    count = len(mine)
    spans = Counter((side, objectives[side]) for objectives in mine for side in (treatment, baseline))
    variance = (2 * noise.seed_objective ** 2 + 2 * noise.run ** 2 / count
                + sum((span / count) ** 2 for span in spans.values()) * noise.family ** 2)
    return math.sqrt(variance)


def simulate_rows(design: Design, truth: Truth, noise: Noise, seed: int) -> list[dict]:
    """One finished ``runs`` row per run of ``design``, its losses drawn as the module docstring says from
    stream ``seed``; the same design, truth, noise and seed give the same rows."""
    rng = np.random.default_rng(seed)
    draw = _Draws(rng)
    optimum = design.lr_optimum(truth)
    rows = []
    for spec, family, clean, template in zip(design.specs, design.families, design.clean_losses(truth), design.rows):
        clean += noise.lr_sensitivity * math.log(spec.optim.lr / optimum) ** 2
        shared = (draw("seed", spec.seed, noise.seed)
                  + draw("seed_objective", (spec.seed, _objective_key(spec)), noise.seed_objective)
                  + draw("family", family, noise.family))
        lucky = clean * math.exp(shared / noise.multiplicative_at) if noise.multiplicative_at else clean + shared
        rows.append({**template, "val_loss": lucky + float(rng.normal(0.0, noise.run)),
                     "train_loss": lucky + float(rng.normal(0.0, noise.run))})
    return rows


@dataclass(frozen=True)
class Retrieval:
    """How simulated runs retrieve, on one task: accuracy = chance + (1 - chance) / (1 + exp(k (L - L0))) of each
    run's *observed* validation loss (a seed whose model is lucky retrieves as well as its loss says, as the
    two-step law assumes), scored as ``items`` binomial questions. The defaults put L0 inside the paper grid's
    losses under Epoch AI's law (2.5 to 3.3 nats), so its runs rise from near chance to near perfect."""

    task: str = "needle"
    l0: float = 2.9
    k: float = 8.0
    chance: float = 0.1
    items: int = 200

    def __post_init__(self) -> None:
        if not (math.isfinite(self.l0) and math.isfinite(self.k) and self.k > 0):
            raise ConfigError(f"Retrieval needs a finite L0 and a positive k, got L0 {self.l0}, k {self.k}")
        if not 0 <= self.chance < 1 or self.items < 1:
            raise ConfigError(f"Retrieval needs 0 <= chance < 1 and items >= 1, got {self.chance}, {self.items}")

    def accuracy(self, loss) -> np.ndarray:
        return self.chance + (1 - self.chance) / (1 + np.exp(self.k * (np.asarray(loss, float) - self.l0)))


def simulate_evals(rows: list[dict], retrieval: Retrieval, seed: int) -> list[dict]:
    """Whole-task ``evals`` rows (accuracy with its item count and Wald error, and the chance level) for every
    simulated run in ``rows``, drawn from stream ``seed``; one eval spec for all."""
    rng = np.random.default_rng(seed)
    spec = json.dumps({"task": retrieval.task, "items": retrieval.items, "simulated": True}, sort_keys=True)
    out = []
    for row in rows:
        value = rng.binomial(retrieval.items, float(retrieval.accuracy(row["val_loss"]))) / retrieval.items
        common = {"run_id": row["run_id"], "task": retrieval.task, "condition": "all", "n": retrieval.items,
                  "eval_spec_json": spec}
        out += [{**common, "metric": "accuracy", "value": value,
                 "stderr": math.sqrt(value * (1 - value) / retrieval.items)},
                {**common, "metric": "chance", "value": retrieval.chance}]
    return out


def true_difference(design: Design, truth: Truth, treatment: tuple, baseline: tuple = ("ntp", 0.0)) -> float:
    """The expected mean treatment - baseline loss over the (N, D, seed) cells both objectives hold in
    ``design``: what a paired comparison estimates (lr penalties cancel where both pick the same rate)."""
    clean = {(_objective_key(spec), n, spec.tokens_trained, spec.seed): loss
             for spec, n, loss in zip(design.specs, design.params, design.clean_losses(truth))}
    pairs = [clean[key] - clean[(baseline, *key[1:])] for key in clean
             if key[0] == treatment and (baseline, *key[1:]) in clean]
    if not pairs:
        raise ConfigError(f"the design has no cell with both {treatment} and {baseline}")
    return float(np.mean(pairs))


def write_simulated_store(root: str, rows: list[dict], study: str) -> ResultsStore:
    """The rows as a real results store at ``root``, every run a member of ``study``."""
    store = ResultsStore(root)
    store.append("runs", rows)
    store.add_members(study, [row["run_id"] for row in rows])
    return store
