"""The preflight of a run or a study: every check that can pass or fail before anything expensive starts (a real
corpus takes hours to prepare; Ray takes seconds to start and a cluster's GPUs cost money), each with its result.

``meap-scale train`` and every study run it first and refuse on its first failed check, with the option that
fixes it; ``--dry-run`` prints it (the runs with their memory, FLOPs and GPU-hours, then each check) and exits 0
only if the study would start. It prepares nothing: the corpus is read in a bounded sample
(``meap_scale.data.sample``), on which a BPE of the run's vocabulary is trained in seconds where the run would
train one, so the eval items are built by the real item builders and the corpus's tokens estimated from its
bytes. Where the corpus is already prepared its exact token count is used. What cannot be known here is
said, never passed: a hub corpus is not read (network), a remote location is not written to, and a cluster
the study joins (``RAY_ADDRESS``) is checked once it is joined (``meap_scale.train.preflight``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from meap_scale.config import RunSpec
from meap_scale.data import DataError
from meap_scale.data.prepare import prepared_meta
from meap_scale.data.sample import CorpusSample, sample_corpus
from meap_scale.models import padded_vocab_size
from meap_scale.branch_plan import with_branches
from meap_scale.plan import model_vocab
from meap_scale.spec_base import ConfigError
from meap_scale.store import StoreError
from meap_scale.train.cluster import starts_local_instance, storage_uri
from meap_scale.urls import is_url

OK, REFUSED, NOT_CHECKED = "ok", "REFUSED", "not checked"
EXACT_COUNT_BYTES = 256 << 20
"""Corpora up to this size are hashed to find an existing preparation (its exact token count); larger ones are
estimated from the sample, as hashing them would take the minutes the preflight is there to save."""
ENCODED_BYTES = 1 << 20
"""Text of the sample that is tokenised: for the tokens per byte and the eval items' haystack."""


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    """``OK``, ``REFUSED`` or ``NOT_CHECKED``."""
    detail: str


@dataclass(frozen=True)
class Preflight:
    runs: tuple[tuple[dict, RunSpec], ...]
    checks: tuple[Check, ...]
    vocab: int | None = None
    """The model's embedding rows (the tokenizer's size, padded); None where the tokenizer could not be read."""

    @property
    def ok(self) -> bool:
        return all(check.status != REFUSED for check in self.checks)

    def refusal(self) -> str:
        """Every refused check, one per line (the message of the ConfigError a start is refused with)."""
        return "\n".join(f"{check.name}: {check.detail}" for check in self.checks if check.status == REFUSED)

    def require(self) -> None:
        if not self.ok:
            raise ConfigError(f"preflight refused:\n{self.refusal()}")

    def lines(self) -> list[str]:
        width = max((len(check.name) for check in self.checks), default=0)
        return [f"  {check.status:<11} {check.name:<{width}}  {check.detail}" for check in self.checks]


def _check(name: str, action) -> Check:
    """``action()`` returns (status, detail) or raises a refusal (ConfigError, DataError, StoreError)."""
    try:
        status, detail = action()
    except (ConfigError, DataError, StoreError) as error:
        return Check(name, REFUSED, str(error))
    return Check(name, status, detail)


def folder_check(option: str, location: str, holds: str) -> tuple[str, str]:
    """A folder that will be written: refused where a file stands in its place or it cannot be written."""
    if is_url(location):
        return NOT_CHECKED, f"{location}: a remote location is not written to before the run"
    path = os.path.abspath(os.path.expanduser(location))
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{option} {location}: {existing} is a file; {holds} go in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {location}: {existing} is not writable by this user; choose a folder that is")
    return OK, f"{path}{'' if existing == path else ' (to be created)'}"


@dataclass(frozen=True)
class _Read:
    """What the checks know of the corpus: its sample, its preparation where one exists, a tokenizer and the
    sample's first ``ENCODED_BYTES`` as token ids (each document ended by EOS)."""

    sample: CorpusSample | None
    prepared: dict | None
    tokenizer: object | None
    ids: tuple[int, ...]
    text_bytes: int


def _read(run: RunSpec, sample: CorpusSample | None) -> tuple[_Read, str]:
    """The corpus as the checks read it, and the tokenizer check's line: a named tokenizer loaded as the run
    would load it; a prepared corpus's own BPE; else a BPE of the run's vocabulary trained on the sample."""
    from meap_scale.data import tokenizer as tokenizers
    from meap_scale.data.prepare import PreparedData

    data = run.data
    prepared = prepared_meta(data) if sample and sample.total_text_bytes <= EXACT_COUNT_BYTES else None
    if data.tokenizer != "bpe":
        tokenizer = tokenizers.load_pretrained(data.tokenizer)
        line = f"{data.tokenizer}: {len(tokenizer):,} tokens, [MASK] = {tokenizer.mask_token_id}"
    elif prepared:
        tokenizer = PreparedData.from_dict(prepared).load_tokenizer()
        line = f"the prepared corpus's byte-level BPE of {len(tokenizer):,} tokens"
    elif sample:
        tokenizer = tokenizers.train_bpe(sample.texts, data.vocab_size)
        line = (f"a byte-level BPE of {data.vocab_size:,} tokens, trained when the corpus is prepared (here on a "
                f"{sample.text_bytes / 2 ** 20:.1f} MiB sample, for the checks below)")
    else:
        return _Read(sample, None, None, (), 0), f"a byte-level BPE of {data.vocab_size:,} tokens, trained when " \
                                                  f"the corpus is prepared"
    texts, used = [], 0
    for text in sample.texts if sample else ():
        texts.append(text)
        used += len(text.encode())
        if used >= ENCODED_BYTES:
            break
    ids: list[int] = []
    for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else ():
        ids += [*encoded, tokenizer.eos_token_id]
    return _Read(sample, prepared, tokenizer, tuple(ids), used), line


def _corpus_size(runs: list[RunSpec], read: _Read, repeat_data: bool) -> tuple[str, str]:
    largest = max(runs, key=lambda run: run.tokens_trained)
    sample = read.sample
    if sample is None:
        return NOT_CHECKED, (f"{largest.data.source} is a hub dataset: its size is known once it is downloaded "
                             f"(the longest run trains {largest.tokens_trained:,} tokens)")
    if read.prepared:
        tokens, how = read.prepared["train_tokens"], "as prepared"
    else:  # one BOS per document beside the EOS counted in ids; the validation share left out
        documents = read.ids.count(read.tokenizer.eos_token_id)
        per_byte = (len(read.ids) + documents) / max(read.text_bytes, 1)
        tokens = sample.total_text_bytes * per_byte * (1 - largest.data.val_fraction)
        how = (f"estimated from {sample.total_text_bytes / 2 ** 20:,.1f} MiB of text"
               f"{' (itself estimated from the files’ sizes)' if sample.estimated else ''} and the tokenizer")
    epochs = largest.tokens_trained / max(tokens, 1)
    where = f"the longest run trains {largest.tokens_trained:,} tokens; the training split holds {tokens:,.0f} ({how})"
    if epochs <= 1:
        return OK, f"{where}: {epochs:.2f} epoch"
    if repeat_data:
        return OK, f"{where}: {epochs:.2f} epochs, as --repeat-data allows"
    raise ConfigError(f"{where}: {epochs:.2f} epochs. Use a larger corpus (--data), smaller budgets (--tokens), or "
                      f"--repeat-data to train over it more than once")


def _eval_items(run: RunSpec, read: _Read) -> tuple[str, str]:
    from meap_scale.evals.suite import build_items

    evals = run.evals
    if not [task for task in evals.tasks if task != "heldout"]:
        return OK, "no retrieval tasks"
    if not read.ids:
        return NOT_CHECKED, "no corpus sample to build them from (a hub dataset): built once the corpus is prepared"
    items = build_items(read.tokenizer, list(read.ids), evals, run.data.seq_len)
    built = ", ".join(f"{task} {len(found)}" for task, found in items.items())
    return OK, f"{built} item(s) at seq_len {run.data.seq_len} (context lengths {evals.context_lens or 'default'})"


def _resources(run: RunSpec, extra_cpu: float, new_cluster: bool) -> tuple[str, str]:
    from meap_scale.train.preflight import check_before_ray

    if not starts_local_instance(new_cluster):
        return NOT_CHECKED, ("joins a running Ray cluster (RAY_ADDRESS or `ray start` here): its CPUs, GPUs and GPU "
                             "memory are checked once joined, before any trial starts")
    check_before_ray(run, extra_cpu, new_cluster)
    unit = "GPU" if run.use_gpu else "CPU"
    need = run.workers if run.use_gpu else run.workers * run.cpus_per_worker + extra_cpu
    return OK, f"a run needs {need:g} {unit}(s); a new local Ray instance gets this machine's"


def _memory(runs: list[RunSpec], vocab: int, new_cluster: bool) -> tuple[str, str]:
    from meap_scale.train.memory import estimate_memory, gib
    from meap_scale.train.preflight import check_memory, local_capacity

    largest = max(runs, key=lambda run: estimate_memory(run, vocab).total)
    estimate = gib(estimate_memory(largest, vocab).total)
    unit = "GPU" if largest.use_gpu else "worker"
    if not starts_local_instance(new_cluster):
        return NOT_CHECKED, f"at most {estimate} per {unit}: checked against the cluster's GPU type once joined"
    if local_capacity(largest) is None:
        return NOT_CHECKED, f"at most {estimate} per {unit}: this machine's {unit} memory is unknown here"
    check_memory(runs, vocab, new_cluster)
    return OK, f"at most {estimate} per {unit} fits this machine"


def preflight_runs(runs: list[tuple[dict, RunSpec]], *, locations: list[tuple[str, str, str]],
                   named=None, extra_cpu: float = 0.0, new_cluster: bool = False,
                   repeat_data: bool = False) -> Preflight:
    """Every check of ``runs`` (one data spec between them, as a study's and a train command's have) and of
    the folders they will write (option, location, what it holds); ``named``: the study's name check."""
    specs = [spec for _, spec in runs]
    first = specs[0]
    checks = [_check(option, lambda o=option, l=location, h=holds: folder_check(o, l, h))
              for option, location, holds in locations]
    if named is not None:
        checks.append(_check("study name", named))
    sample, corpus_read = None, False  # sample: None for a hub dataset, which is not read here
    try:
        sample, corpus_read = sample_corpus(first.data), True
        checks.append(Check("corpus", OK, _corpus_line(first, sample)))
    except DataError as error:
        checks.append(Check("corpus", REFUSED, str(error)))
    read = None
    try:
        read, line = _read(first, sample)
        checks.append(Check("tokenizer", OK, line))
    except DataError as error:
        checks.append(Check("tokenizer", REFUSED, str(error)))
    if corpus_read and read is not None:
        checks.append(_check("corpus size", lambda: _corpus_size(specs, read, repeat_data)))
        checks.append(_check("eval items", lambda: _eval_items(first, read)))
    checks.append(_check("resources", lambda: _resources(first, extra_cpu, new_cluster)))
    vocab = None
    if read is not None:  # the model's vocabulary is the tokenizer's
        named = read.tokenizer is not None and first.data.tokenizer != "bpe"
        vocab = padded_vocab_size(len(read.tokenizer)) if named else model_vocab(first)
        checks.append(_check("memory", lambda: _memory(specs, vocab, new_cluster)))
    return Preflight(tuple(runs), tuple(checks), vocab)


def _corpus_line(run: RunSpec, sample: CorpusSample | None) -> str:
    if sample is None:
        return f"{run.data.source}: a hub dataset, read when it is prepared"
    size = f"{sample.total_text_bytes / 2 ** 20:,.1f} MiB of text"
    return f"{run.data.source}: {'about ' if sample.estimated else ''}{size}"


def preflight_train(spec: RunSpec, store: str | None, *, new_cluster: bool = False,
                    repeat_data: bool = False) -> Preflight:
    """The preflight of ``meap-scale train``: the run (with its decay branches), its checkpoint folder, its
    store where one is given, and its cache."""
    label = {"model": spec.model.size, "tokens": spec.tokens_trained, "objective": spec.objective.name}
    locations = [("--storage-path", storage_uri(spec.storage_path), "Ray Train's checkpoints"),
                 ("--cache-dir", spec.data.resolved_cache_dir, "prepared corpora")]
    if store:
        locations.insert(1, ("--store", store, "results stores"))
    return preflight_runs(with_branches(label, spec), locations=locations, new_cluster=new_cluster,
                          repeat_data=repeat_data)


def _cpu_runs(runs: list[tuple[dict, RunSpec]], vocab: int) -> list[str]:
    from meap_scale.models import flops_per_token

    lines = []
    for label, spec in runs:
        flops = flops_per_token(spec.model.shape, vocab, spec.data.seq_len, spec.model.tie_embeddings).palm
        shown = ", ".join(f"{key}={value}" for key, value in label.items())
        lines.append(f"  {shown}: {flops * spec.tokens_trained:.3g} FLOPs, {spec.workers} CPU worker(s)")
    return lines


def render(preflight: Preflight, title: str) -> str:
    """The runs (GPU runs as ``meap-scale plan`` plans them for an H100: memory, FLOPs, GPU-hours; CPU runs with
    their FLOPs) and every check."""
    from meap_scale.plan import ASSUMED_MFU, MFU_BASIS, plan_run, render_plan
    from meap_scale.train.devices import accelerator_named

    runs = list(preflight.runs)
    lines = [f"{title}: {len(runs)} run(s)"]
    if preflight.vocab is None:
        lines.append("  (not costed: the tokenizer that sizes the model could not be read)")
    elif all(spec.use_gpu for _, spec in runs):
        gpu = accelerator_named("h100-sxm")
        plans = [plan_run(spec, gpu, ASSUMED_MFU, label, preflight.vocab) for label, spec in runs]
        lines += [render_plan(plans, gpu, ASSUMED_MFU, MFU_BASIS), "(`meap-scale plan` plans for other GPU types)"]
    else:
        lines += _cpu_runs(runs, preflight.vocab)
    lines += ["", "checks:", *preflight.lines(), ""]
    counts = {status: sum(c.status == status for c in preflight.checks) for status in (OK, REFUSED, NOT_CHECKED)}
    lines.append(f"{title} {'would start' if preflight.ok else 'would be refused'}: {counts[OK]} check(s) passed, "
                 f"{counts[REFUSED]} refused, {counts[NOT_CHECKED]} not checked here")
    return "\n".join(lines)
