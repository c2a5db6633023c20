"""Batched speculative decoding over HF causal LMs: the core of the reference engine.

Batching scheme (see docs/reference-engine.md): continuous batching over one KV cache per model
held as plain tensors (batch, kv_heads, slots, head_dim) per layer.  A request joins by a
prefill of its own, and its cache is left-padded into the batch; rows leave by index select.
Every verification step appends k+1 slots to every row; slots holding rejected drafts (or
padding) are switched off in a per-row slot mask, so each row attends only to its own valid
tokens, and RoPE positions are tracked per row.  When holes make up most of the cache it is
compacted (valid slots gathered to the right; keys are stored after RoPE so moving them is safe).

Acceptance (per row, every step):
- greedy (temperature 0): accept the longest prefix of the draft where the target's argmax
  equals the draft token, then emit the target's argmax as the bonus/correction token;
- sampling: accept draft x with probability min(1, p(x)/q(x)), on rejection sample from
  norm(max(0, p - q)); if all drafts pass, sample the bonus token from p.  For n-gram proposals
  q is a point mass on x.  The output follows the target's distribution exactly.

Statistics are exact per request: steps (target verification passes after prefill), undrafted
steps (those that verified no draft: no n-gram match, no budget left, or method "none"), drafted,
accepted, per-position accepts and the histogram of accepted drafts per step.

A sequence whose ``cancelled`` flag is set (its consumer went away) leaves the batch at the start of
the next step, before any proposal or forward pass: at most the step already running when the flag
was set still includes it.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import Cache, DynamicLayer

from speedbench.records import SDStats

KV = list[tuple[torch.Tensor, torch.Tensor]]


# ---- KV cache: preallocated buffers behind transformers' Cache API ---------------------------


def _cache_kw(model: Any) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class BufferLayer(DynamicLayer):
    """A cache layer writing new keys/values into a preallocated buffer (grown geometrically)
    instead of concatenating the whole cache every step, which dominated the step time."""

    def __init__(self) -> None:
        super().__init__()
        self.buf_k: torch.Tensor | None = None
        self.buf_v: torch.Tensor | None = None
        self.used = 0

    def set(self, k: torch.Tensor, v: torch.Tensor, spare: int = 64) -> None:
        b, h, n, d = k.shape
        cap = n + max(spare, n // 2)
        self.buf_k = k.new_empty(b, h, cap, d)
        self.buf_v = v.new_empty(b, h, cap, d)
        self.buf_k[:, :, :n] = k
        self.buf_v[:, :, :n] = v
        self.used = n
        self._views()
        self.device = k.device
        self.is_initialized = True

    def adopt(self, buf_k: torch.Tensor, buf_v: torch.Tensor, used: int) -> None:
        """Take ready-made buffers (already holding ``used`` slots) without copying."""
        self.buf_k, self.buf_v, self.used = buf_k, buf_v, used
        self._views()
        self.device = buf_k.device
        self.is_initialized = True

    def _views(self) -> None:
        assert self.buf_k is not None and self.buf_v is not None
        self.keys = self.buf_k[:, :, : self.used]
        self.values = self.buf_v[:, :, : self.used]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = key_states.shape[2]
        if self.buf_k is None or self.buf_v is None:
            self.set(key_states, value_states)
        else:
            if self.used + q > self.buf_k.shape[2]:
                assert self.keys is not None and self.values is not None
                self.set(self.keys, self.values, spare=max(64, q))
                assert self.buf_k is not None and self.buf_v is not None
            self.buf_k[:, :, self.used : self.used + q] = key_states
            self.buf_v[:, :, self.used : self.used + q] = value_states
            self.used += q
            self._views()
        assert self.keys is not None and self.values is not None
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.used


def _new_cache(n_layers: int, kv: KV | None = None) -> Cache:
    layers = [BufferLayer() for _ in range(n_layers)]
    if kv:
        for layer, (k, v) in zip(layers, kv, strict=True):
            layer.set(k, v)
    return Cache(layers=layers)  # type: ignore[arg-type]


def _kv(cache: Cache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[misc,union-attr]


class ModelRunner:
    """One model's forward over a cache, per-row slot masks and RoPE positions."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.kw = _cache_kw(model)
        self.n_layers = int(model.config.num_hidden_layers)

    @torch.inference_mode()
    def forward(
        self, ids: torch.Tensor, cache: Cache, slot_mask: torch.Tensor, positions: torch.Tensor, last_only: bool = False
    ) -> torch.Tensor:
        """ids (B, q); slot_mask (B, slots + q) bool; positions (B, q).  Appends q slots to
        ``cache`` in place and returns logits (B, q, V) (only the last position's with
        ``last_only``, as prefill needs)."""
        extra = {"logits_to_keep": 1} if last_only else {}
        out = self.model(
            input_ids=ids,
            attention_mask=slot_mask.long(),
            position_ids=positions,
            use_cache=True,
            **{self.kw: cache},
            **extra,
        )
        return out.logits.float()


@dataclass
class CacheState:
    """One model's batched cache, with the per-row slot mask and next RoPE position."""

    n_layers: int
    cache: Cache | None = None
    mask: torch.Tensor | None = None  # (B, slots) bool
    pos: torch.Tensor | None = None  # (B,) long: next RoPE position per row

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    def _set(self, kv: KV) -> None:
        self.cache = _new_cache(self.n_layers, kv)

    def append_rows(self, cache: Cache, mask: torch.Tensor, pos: torch.Tensor) -> None:
        if self.cache is None or self.mask is None or self.pos is None or self.rows == 0:
            self.cache, self.mask, self.pos = cache, mask, pos
            return
        # one copy: both caches go straight into new buffers, each right-aligned at ``width``
        width = max(self.mask.shape[1], mask.shape[1])
        cap = width + max(64, width // 2)
        b1, b2 = self.rows, mask.shape[0]
        layers = []
        for (ak, av), (bk, bv) in zip(_kv(self.cache), _kv(cache), strict=True):
            _, h, _, d = ak.shape
            nk, nv = ak.new_zeros(b1 + b2, h, cap, d), av.new_zeros(b1 + b2, h, cap, d)
            nk[:b1, :, width - ak.shape[2] : width] = ak
            nv[:b1, :, width - av.shape[2] : width] = av
            nk[b1:, :, width - bk.shape[2] : width] = bk
            nv[b1:, :, width - bv.shape[2] : width] = bv
            layer = BufferLayer()
            layer.adopt(nk, nv, width)
            layers.append(layer)
        self.cache = Cache(layers=layers)  # type: ignore[arg-type]
        a_mask = torch.cat([self.mask.new_zeros(b1, width - self.mask.shape[1]), self.mask], dim=1)
        b_mask = torch.cat([mask.new_zeros(b2, width - mask.shape[1]), mask], dim=1)
        self.mask = torch.cat([a_mask, b_mask])
        self.pos = torch.cat([self.pos, pos])

    def keep_rows(self, idx: torch.Tensor) -> None:
        if self.cache is None or self.mask is None or self.pos is None:
            return
        if idx.numel() == 0:
            self.cache, self.mask, self.pos = None, None, None
            return
        for layer in self.cache.layers:  # one copy, keeping the spare capacity
            assert isinstance(layer, BufferLayer) and layer.buf_k is not None and layer.buf_v is not None
            layer.adopt(layer.buf_k.index_select(0, idx), layer.buf_v.index_select(0, idx), layer.used)
        self.mask = self.mask.index_select(0, idx)
        self.pos = self.pos.index_select(0, idx)
        self.compact()

    def compact(self, force: bool = False) -> None:
        """Gather each row's valid slots to the right when holes are most of the cache."""
        if self.cache is None or self.mask is None:
            return
        counts = self.mask.sum(dim=1)
        width = int(counts.max())
        if not force and self.mask.shape[1] <= 2 * width + 64:
            return
        b, slots = self.mask.shape
        # order slots so valid ones come last, keeping their order: sort by (valid, index)
        key = self.mask.long() * slots + torch.arange(slots).unsqueeze(0)
        order = key.argsort(dim=1)[:, slots - width :]  # (B, width)
        new_mask = torch.gather(self.mask, 1, order)
        new_kv = []
        for k, v in _kv(self.cache):
            gi = order[:, None, :, None].expand(b, k.shape[1], width, k.shape[3])
            new_kv.append((torch.gather(k, 2, gi), torch.gather(v, 2, gi)))
        self._set(new_kv)
        self.mask = new_mask

    def step_inputs(self, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slot mask for a forward that appends ``valid.shape[1]`` slots, and their positions.

        Valid new tokens take consecutive positions from each row's next position."""
        assert self.mask is not None and self.pos is not None
        offs = torch.cumsum(valid.long(), dim=1) - valid.long()  # 0,1,2.. over valid tokens
        positions = self.pos.unsqueeze(1) + offs
        return torch.cat([self.mask, valid], dim=1), positions

    def commit(self, new_valid: torch.Tensor) -> None:
        """After a forward appended slots: ``new_valid`` (B, q) says which of them to keep."""
        assert self.mask is not None and self.pos is not None
        self.mask = torch.cat([self.mask, new_valid], dim=1)
        self.pos = self.pos + new_valid.long().sum(dim=1)


# ---- proposals -------------------------------------------------------------------------------


def ngram_propose(tokens: Sequence[int] | np.ndarray, k: int, max_n: int = 3, min_n: int = 1) -> list[int]:
    """Prompt lookup: match the last n tokens (n = max_n..min_n) earlier in the context and
    propose up to k tokens that followed the most recent match."""
    arr = np.asarray(tokens, dtype=np.int64)
    L = arr.shape[0]
    for n in range(min(max_n, L - 1), min_n - 1, -1):
        tail = arr[L - n :]
        windows = np.lib.stride_tricks.sliding_window_view(arr[: L - 1], n)  # starts 0..L-1-n
        hits = np.nonzero((windows == tail).all(axis=1))[0]
        hits = hits[hits + n < L]  # a continuation must exist
        if hits.size:
            start = int(hits[-1]) + n  # most recent match
            return arr[start : start + k].tolist()
    return []


# ---- the decoder ---------------------------------------------------------------------------


@dataclass
class Seq:
    """One request inside the batch."""

    rid: Any
    tokens: list[int]  # prompt + generated
    n_prompt: int
    max_new: int
    temperature: float
    eos: frozenset[int]
    ignore_eos: bool
    generator: torch.Generator
    emit: Callable[[list[int], bool, str | None], None]  # (tokens, final, finish_reason)
    last: int = -1  # newest token, not yet in the target cache
    draft_pending: list[int] = field(default_factory=list)  # tokens not yet in the draft cache
    steps: int = 0
    undrafted: int = 0  # steps that verified no draft at all (no n-gram match, no budget left, or k = 0)
    drafted: int = 0
    accepted: int = 0
    per_pos: list[int] = field(default_factory=list)
    hist: list[int] = field(default_factory=list)
    done: bool = False
    cancelled: bool = False

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.n_prompt

    def stats(self, k: int) -> SDStats:
        hist = (self.hist + [0] * (k + 1))[: k + 1]
        per_pos = (self.per_pos + [0] * k)[:k]
        return SDStats(
            drafted=self.drafted,
            accepted=self.accepted,
            steps=self.steps,
            per_position=per_pos,
            histogram=hist,
            source="per_request",
            undrafted_steps=self.undrafted,
        )


def _sample(probs: torch.Tensor, gen: torch.Generator) -> int:
    return int(torch.multinomial(probs, 1, generator=gen))


class BatchDecoder:
    """Continuous-batching speculative decoder.

    method: "none" (plain decoding), "ngram" (prompt lookup) or "draft" (draft model, same tokenizer).
    """

    def __init__(
        self, target: Any, method: str = "ngram", k: int = 3, draft: Any = None, ngram_max: int = 3, ngram_min: int = 1
    ) -> None:
        if method not in ("none", "ngram", "draft"):
            raise ValueError(f"unknown SD method {method!r} (none, ngram, draft)")
        if method == "draft" and draft is None:
            raise ValueError("method 'draft' needs a draft model")
        self.method = method
        self.k = 0 if method == "none" else k
        self.target = ModelRunner(target)
        self.draft = ModelRunner(draft) if method == "draft" else None
        self.ngram_max, self.ngram_min = ngram_max, ngram_min
        # let SDPA handle grouped-query attention itself instead of transformers copying every
        # KV head n_rep times per layer and step (halved the CPU step time at batch 32)
        os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")
        self.seqs: list[Seq] = []
        self._draft_fed = 0  # draft-cache slots appended for d1..d_{K-1} by the last proposal
        self.tc = CacheState(self.target.n_layers)
        self.dc = CacheState(self.draft.n_layers if self.draft is not None else 0)

    # -- membership ------------------------------------------------------------------------
    def add(self, seq: Seq) -> None:
        self.add_many([seq])

    def add_many(self, seqs: Sequence[Seq]) -> None:
        """Prefill requests and append them to the batch; each emits its first (prefill) token.

        Prompts of similar length are prefilled together (left-padded, padding masked out);
        a group closes when padding would exceed a quarter of its tokens, since on a CPU the
        padded tokens cost as much as real ones."""
        group: list[Seq] = []
        for s in sorted(seqs, key=lambda x: len(x.tokens)):
            if group and len(s.tokens) * 0.75 > len(group[0].tokens):
                self._prefill(group)
                group = []
            group.append(s)
        if group:
            self._prefill(group)

    def _prefill(self, seqs: Sequence[Seq]) -> None:
        n = max(len(s.tokens) for s in seqs)
        ids = torch.zeros(len(seqs), n, dtype=torch.long)
        mask = torch.zeros(len(seqs), n, dtype=torch.bool)
        for r, s in enumerate(seqs):
            ids[r, n - len(s.tokens) :] = torch.tensor(s.tokens)
            mask[r, n - len(s.tokens) :] = True
        pos = (torch.cumsum(mask.long(), dim=1) - 1).clamp(min=0)
        lengths = mask.long().sum(dim=1)
        cache = _new_cache(self.target.n_layers)
        logits = self.target.forward(ids, cache, mask, pos, last_only=True)
        self.tc.append_rows(cache, mask, lengths)
        if self.draft is not None:
            dcache = _new_cache(self.draft.n_layers)
            self.draft.forward(ids, dcache, mask, pos, last_only=True)
            self.dc.append_rows(dcache, mask, lengths)
        firsts = [self._pick(logits[r, -1], s) for r, s in enumerate(seqs)]
        for s, first in zip(seqs, firsts, strict=True):
            s.per_pos = [0] * self.k
            s.hist = [0] * (self.k + 1)
            s.draft_pending = [first]  # the draft has seen the prompt, not the first token
            self.seqs.append(s)
        for s, first in zip(seqs, firsts, strict=True):
            self._emit(s, [first])

    def _pick(self, logits: torch.Tensor, seq: Seq) -> int:
        if seq.temperature <= 0:
            return int(torch.argmax(logits))
        return _sample(torch.softmax(logits / seq.temperature, dim=-1), seq.generator)

    def _emit(self, seq: Seq, toks: list[int]) -> None:
        """Append tokens (stopping at EOS / the length limit) and hand them to the consumer."""
        out: list[int] = []
        finish = None
        for t in toks:
            out.append(t)
            seq.tokens.append(t)
            if t in seq.eos and not seq.ignore_eos:
                finish = "stop"
                break
            if seq.generated >= seq.max_new:
                finish = "length"
                break
        seq.last = seq.tokens[-1]
        seq.done = finish is not None
        seq.emit(out, seq.done, finish)

    def _drop_finished(self) -> None:
        keep = [i for i, s in enumerate(self.seqs) if not (s.done or s.cancelled)]
        if len(keep) == len(self.seqs):
            return
        idx = torch.tensor(keep, dtype=torch.long)
        self.seqs = [self.seqs[i] for i in keep]
        self.tc.keep_rows(idx)
        if self.draft is not None:
            self.dc.keep_rows(idx)

    @property
    def active(self) -> int:
        return len(self.seqs)

    # -- one verification step for the whole batch ---------------------------------------------
    def step(self) -> None:
        self._drop_finished()
        if not self.seqs:
            return
        B = len(self.seqs)
        budget = [min(self.k, s.max_new - s.generated - 1) for s in self.seqs]  # leave room for the bonus
        q_probs: torch.Tensor | None = None
        if self.method == "ngram":
            props = [
                ngram_propose(s.tokens, b, self.ngram_max, self.ngram_min) if b > 0 else []
                for s, b in zip(self.seqs, budget, strict=True)
            ]
        elif self.method == "draft":
            props, q_probs = self._draft_propose(budget)
        else:
            props = [[] for _ in self.seqs]
        K = max((len(p) for p in props), default=0)

        ids = torch.zeros(B, 1 + K, dtype=torch.long)
        valid = torch.zeros(B, 1 + K, dtype=torch.bool)
        for r, (s, p) in enumerate(zip(self.seqs, props, strict=True)):
            ids[r, 0] = s.last
            valid[r, 0] = True
            if p:
                ids[r, 1 : 1 + len(p)] = torch.tensor(p)
                valid[r, 1 : 1 + len(p)] = True
        mask, positions = self.tc.step_inputs(valid)
        assert self.tc.cache is not None
        logits = self.target.forward(ids, self.tc.cache, mask, positions)

        keep = torch.zeros(B, 1 + K, dtype=torch.bool)
        results: list[tuple[int, list[int]]] = []
        for r, (s, p) in enumerate(zip(self.seqs, props, strict=True)):
            n_acc, out = self._accept(s, p, logits[r], None if q_probs is None else q_probs[r])
            if not s.ignore_eos:
                # an accepted draft that is EOS ends the reply there: nothing after it counts
                for j, t in enumerate(out[:n_acc]):
                    if t in s.eos:
                        n_acc, out = j + 1, out[: j + 1]
                        break
            keep[r, : 1 + n_acc] = True
            results.append((n_acc, out))
            s.steps += 1
            if not p:
                s.undrafted += 1
            s.drafted += len(p)
            s.accepted += n_acc
            s.hist[n_acc] += 1
            for i in range(n_acc):
                s.per_pos[i] += 1
        self.tc.commit(keep)
        self.tc.compact()
        if self.draft is not None:
            self._draft_commit(props, results)
        for (_, out), s in zip(results, self.seqs, strict=True):
            self._emit(s, out)

    def _accept(self, s: Seq, prop: list[int], logits: torch.Tensor, q: torch.Tensor | None) -> tuple[int, list[int]]:
        """Returns (accepted drafts, tokens to emit = accepted drafts + bonus)."""
        if s.temperature <= 0:
            target_ids = torch.argmax(logits[: len(prop) + 1], dim=-1).tolist()
            n = 0
            while n < len(prop) and target_ids[n] == prop[n]:
                n += 1
            return n, prop[:n] + [target_ids[n]]
        p_all = torch.softmax(logits[: len(prop) + 1] / s.temperature, dim=-1)
        for i, x in enumerate(prop):
            p = p_all[i]
            qx = 1.0 if q is None else float(q[i, x])
            u = float(torch.rand((), generator=s.generator))
            if qx > 0 and u < min(1.0, float(p[x]) / qx):
                continue
            # rejected: sample from the residual norm(max(0, p - q))
            if q is None:
                resid = p.clone()
                resid[x] = 0.0
            else:
                resid = torch.clamp(p - q[i], min=0.0)
            total = float(resid.sum())
            tok = _sample(resid / total, s.generator) if total > 0 else _sample(p, s.generator)
            return i, prop[:i] + [tok]
        return len(prop), prop + [_sample(p_all[len(prop)], s.generator)]

    # -- draft model -----------------------------------------------------------------------
    def _draft_propose(self, budget: list[int]) -> tuple[list[list[int]], torch.Tensor | None]:
        assert self.draft is not None
        B = len(self.seqs)
        K = max(budget, default=0)
        if K <= 0:
            return [[] for _ in self.seqs], None
        # feed each row's pending tokens (1 or 2), left-padded with invalid slots
        width = max(len(s.draft_pending) for s in self.seqs)
        ids = torch.zeros(B, width, dtype=torch.long)
        valid = torch.zeros(B, width, dtype=torch.bool)
        for r, s in enumerate(self.seqs):
            pend = s.draft_pending
            ids[r, width - len(pend) :] = torch.tensor(pend)
            valid[r, width - len(pend) :] = True
        drafts = torch.zeros(B, K, dtype=torch.long)
        qs: list[torch.Tensor] = []
        sampling = any(s.temperature > 0 for s in self.seqs)
        for j in range(K):
            mask, positions = self.dc.step_inputs(valid)
            assert self.dc.cache is not None
            logits = self.draft.forward(ids, self.dc.cache, mask, positions)
            self.dc.commit(valid)
            last = logits[:, -1]
            probs_j = torch.zeros_like(last) if sampling else None
            nxt = torch.zeros(B, dtype=torch.long)
            for r, s in enumerate(self.seqs):
                if s.temperature <= 0:
                    nxt[r] = torch.argmax(last[r])
                    if probs_j is not None:
                        probs_j[r, nxt[r]] = 1.0  # greedy draft: a point mass
                else:
                    pr = torch.softmax(last[r] / s.temperature, dim=-1)
                    assert probs_j is not None
                    probs_j[r] = pr
                    nxt[r] = _sample(pr, s.generator)
            if probs_j is not None:
                qs.append(probs_j)
            drafts[:, j] = nxt
            if j < K - 1:
                ids = nxt.unsqueeze(1)
                valid = torch.tensor([[j + 1 < b] for b in budget], dtype=torch.bool)
        for s in self.seqs:
            s.draft_pending = []
        props = [drafts[r, : budget[r]].tolist() if budget[r] > 0 else [] for r in range(B)]
        self._draft_fed = K - 1  # draft slots appended after the pending ones (d1..d_{K-1})
        q = torch.stack(qs, dim=1) if qs else None  # (B, K, V)
        return props, q

    def _draft_commit(self, props: list[list[int]], results: list[tuple[int, list[int]]]) -> None:
        """Switch off draft-cache slots of rejected drafts; queue what the draft has not seen."""
        assert self.dc.mask is not None and self.dc.pos is not None
        fed = self._draft_fed
        if fed > 0:
            # the last ``fed`` slots hold d1..d_fed; keep d_i only if it was accepted
            tail = self.dc.mask[:, -fed:].clone()
            for r, (n_acc, _) in enumerate(results):
                for i in range(fed):
                    if tail[r, i] and i + 1 > n_acc:
                        tail[r, i] = False
            dropped = (self.dc.mask[:, -fed:] & ~tail).long().sum(dim=1)
            self.dc.mask[:, -fed:] = tail
            self.dc.pos = self.dc.pos - dropped
        self._draft_fed = 0
        for (n_acc, out), s, p in zip(results, self.seqs, props, strict=True):
            # tokens the draft cache lacks: an accepted last draft it never processed, then the bonus
            # (the last draft of a row is never fed to the draft model)
            pending = [p[-1]] if (p and n_acc == len(p)) else []
            s.draft_pending = s.draft_pending + pending + [out[-1]]
        self.dc.compact()
