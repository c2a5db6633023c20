"""``--engine reference``: real speculative decoding in-process (PyTorch + transformers).

The batched decoder (reference_batch.py) runs in one worker thread; requests join the batch as
others finish (continuous batching, up to the run's concurrency).  Each verification step is
streamed as one Event carrying its 1..k+1 tokens, and each request ends with exact per-request
SD stats (source ``per_request``).  Engine totals are exposed as counters in vLLM's shape
(steps = target verification passes) so the usual cross-check runs too; a request is counted when its
final event reaches the consumer, so one abandoned on the way (timeout, Ctrl-C) is never counted.
Chunk texts come from an incremental detokenizer (detokenize.py): they add up to the one-shot decode of
the reply's ids exactly, even where a token ends inside a multi-byte character.

Options (``-E key=value``, typed in ``ReferenceOptions``): model, draft_model, sd (none|ngram|draft), dtype
(float32), device (cpu|cuda), threads (torch threads, default: all cores), ngram_max (3), ngram_min (1),
max_batch (default: the spec's max_concurrency, the run's --concurrency).  ``--model``, ``--sd`` and
``--draft-model`` set the same things from the command line.  Sampling is seeded per request with the
request's seed (load/seeds.py), so a sampled run is reproducible.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import Field

from speedbench.config import EngineSpec
from speedbench.engines import registry
from speedbench.engines.base import EngineBase, Request, check_sd
from speedbench.engines.options import EngineOptions, parse_options
from speedbench.errors import InvalidInput
from speedbench.prompts import render_completion_prompt
from speedbench.records import Event, RequestError, SDCounterTotals


class ReferenceOptions(EngineOptions):
    model: str | None = None  # the same as --model (which wins when both are given)
    draft_model: str | None = None  # the same as --draft-model
    sd: str | None = None  # the same as --sd
    dtype: str = "float32"
    device: str = "cpu"
    threads: int = Field(0, ge=0)  # 0: all cores
    ngram_max: int = Field(3, ge=1)
    ngram_min: int = Field(1, ge=1)
    max_batch: int | None = Field(None, ge=1)  # None: the spec's max_concurrency


class _Job:
    __slots__ = ("seq", "events", "loop")

    def __init__(self, seq: Any, events: asyncio.Queue[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.seq, self.events, self.loop = seq, events, loop


def _post(job: _Job, item: Any) -> None:
    try:
        job.loop.call_soon_threadsafe(job.events.put_nowait, item)
    except RuntimeError:  # its event loop is closed: nobody is waiting
        pass


class ReferenceEngine(EngineBase):
    name = "reference"
    capabilities = registry.declared("reference")  # default_output_len 32 keeps the CPU default run short

    def __init__(self, spec: EngineSpec) -> None:
        opts = parse_options(ReferenceOptions, self.name, spec.options)
        self.model_spec = spec.model or opts.model
        self.draft_spec = spec.draft_model or opts.draft_model
        method = check_sd(self.name, self.capabilities, spec.sd or opts.sd)
        assert method is not None  # the reference engine declares a default
        self.method = method
        if self.method == "draft" and not self.draft_spec:
            raise InvalidInput("--sd draft needs --draft-model (a same-tokenizer HF folder or .gguf)")
        self.k = 3 if spec.draft_length is None else spec.draft_length
        self.dtype = opts.dtype
        self.device = opts.device
        self.threads = opts.threads or (os.cpu_count() or 1)
        self.ngram_max = opts.ngram_max
        self.ngram_min = opts.ngram_min
        self.max_batch = opts.max_batch or spec.max_concurrency or 32
        self.counter_error: str | None = None
        self._inbox: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._lock = threading.Lock()
        self._totals = SDCounterTotals(self.k if self.method != "none" else 0)
        self.tokenizer: Any = None
        self.folders: dict[str, str] = {}

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._thread = threading.Thread(target=self._worker, name="speedbench-reference", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        import torch

        from speedbench.engines import hf_models
        from speedbench.engines.reference_batch import BatchDecoder

        torch.set_num_threads(self.threads)
        target, tok, folder = hf_models.load(self.model_spec, self.dtype, self.device)
        self.folders["target"] = folder
        draft = None
        if self.method == "draft":
            draft, dtok, dfolder = hf_models.load(self.draft_spec, self.dtype, self.device)
            self.folders["draft"] = dfolder
            if dtok.get_vocab() != tok.get_vocab():
                raise hf_models.ModelLoadError(f"draft {dfolder} and target {folder} do not share a tokenizer")
        self.tokenizer = tok
        eos = set()
        for src in (tok.eos_token_id, getattr(target.generation_config, "eos_token_id", None)):
            if isinstance(src, int):
                eos.add(src)
            elif isinstance(src, (list, tuple)):
                eos.update(int(x) for x in src)
        self.eos = frozenset(eos)
        self.decoder = BatchDecoder(
            target, self.method, self.k, draft=draft, ngram_max=self.ngram_max, ngram_min=self.ngram_min
        )

    async def close(self) -> None:
        if self._thread is not None:
            self._inbox.put(None)
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None

    def describe(self) -> dict[str, Any]:
        import torch
        import transformers

        k = self.k if self.method != "none" else 0
        return {
            "engine": self.name,
            "sd": self.method,
            "k": k,
            "model": self.model_spec or "smollm2",
            "draft_model": self.draft_spec,
            "folders": self.folders,
            "dtype": self.dtype,
            "device": self.device,
            "threads": self.threads,
            "max_batch": self.max_batch,
            "ngram": {"max": self.ngram_max, "min": self.ngram_min} if self.method == "ngram" else None,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "batching": "continuous (per-row slot masks over one KV cache)",
        }

    async def counters(self) -> dict[str, Any] | None:
        with self._lock:
            return self._totals.snapshot()

    # ---- the worker thread -----------------------------------------------------------------
    def _worker(self) -> None:
        dec = self.decoder
        jobs: dict[int, _Job] = {}
        try:
            while True:
                joining: list[Any] = []
                while dec.active + len(joining) < self.max_batch:
                    try:
                        job = self._inbox.get(block=dec.active == 0 and not joining)
                    except queue.Empty:
                        break
                    if job is None:
                        return
                    if job.seq.cancelled:
                        continue
                    jobs[id(job.seq)] = job
                    joining.append(job.seq)
                    if dec.active == 0 and len(joining) == 1:
                        time.sleep(0.02)  # idle start: let a burst of arrivals prefill together
                # one batched prefill for everything that arrived (and is still wanted)
                dec.add_many([s for s in joining if not s.cancelled])
                if dec.active:
                    dec.step()
                for key in [k for k, j in jobs.items() if j.seq.done or j.seq.cancelled]:
                    jobs.pop(key)
        except BaseException as e:  # noqa: BLE001 - every waiting request must learn the cause
            self._failure = e
            for job in list(jobs.values()):
                _post(job, e)
            while True:
                try:
                    job = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    _post(job, e)

    def _account(self, stats: Any) -> None:
        with self._lock:
            self._totals.add(stats)

    # ---- requests ----------------------------------------------------------------------------
    def _prompt_ids(self, request: Request) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return [int(x) for x in ids]
        return [int(x) for x in tok(render_completion_prompt(request.messages))["input_ids"]]

    async def stream(self, request: Request) -> AsyncIterator[Event]:
        import torch

        from speedbench.engines.detokenize import IncrementalDetokenizer
        from speedbench.engines.reference_batch import Seq

        if self._failure is not None or self._thread is None:
            raise RequestError("engine_error", f"reference engine is not running ({self._failure!r})")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        prompt = self._prompt_ids(request)
        k = self.k if self.method != "none" else 0

        def emit(tokens: list[int], final: bool, finish: str | None) -> None:  # worker thread
            if seq.cancelled:  # nobody reads this request's events any more
                return
            stats = seq.stats(k) if final else None  # a snapshot, taken where the counts change
            try:
                loop.call_soon_threadsafe(events.put_nowait, (tokens, final, finish, stats))
            except RuntimeError:  # the consumer's event loop is closed: it went away too
                seq.cancelled = True

        seq = Seq(
            rid=(request.question_id, request.turn),
            tokens=list(prompt),
            n_prompt=len(prompt),
            max_new=request.max_tokens,
            temperature=request.temperature,
            eos=self.eos,
            ignore_eos=request.ignore_eos,
            generator=torch.Generator().manual_seed(request.seed),
            emit=emit,
        )
        detok = IncrementalDetokenizer(self.tokenizer, skip_special_tokens=True)
        self._inbox.put(_Job(seq, events, loop))
        n_generated = 0
        try:
            while True:
                item = await events.get()
                if isinstance(item, BaseException):
                    raise RequestError("engine_error", f"{type(item).__name__}: {item}")
                tokens, final, finish, stats = item
                # the text of incomplete characters waits for the next chunk; the final chunk carries
                # whatever is still held back, so the chunks' texts add up to the one-shot decode
                text = detok.push(tokens) if tokens else ""
                if final:
                    text += detok.flush()
                if tokens or text:  # a final with no tokens (not produced today) hands on held text alone
                    n_generated += len(tokens)
                    yield Event("chunk", n_tokens=len(tokens), text=text, token_ids=list(tokens))
                if final:
                    # counted here, as the consumer receives the final (no await in between): a request whose
                    # consumer left (timeout, Ctrl-C) before its final never reaches the engine's counters
                    self._account(stats)
                    yield Event(
                        "final",
                        finish_reason=finish,
                        sd=stats,
                        usage={"prompt_tokens": len(prompt), "completion_tokens": n_generated},
                    )
                    return
        finally:
            # a consumer that stops early (timeout, Ctrl-C, aclose) frees its batch slot: the worker drops the
            # request before its next step (a step already running finishes; its events are discarded), and a
            # request still in the inbox never joins
            seq.cancelled = not seq.done
