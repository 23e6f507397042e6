"""THE decoding batch: sequences join and leave between steps, each with its own sampling settings, stop
tokens, length limit and seed, sharing one forward per step (continuous batching). inference.generate's
generate_steps runs on it (a batch whose rows all join at the start), and a server joins each request as
it arrives; there is no other decoding loop.

    from inference.batching import Batch
    batch = Batch(model, pad_id=tok.pad_id)
    a = batch.join([ids_a], max_new_tokens=64, stop_ids=tok.stop_ids)[0]
    for row, token in batch.step():          # one token of every live row; a row that stopped gives -1 once
        ...
    b = batch.join([ids_b], temperature=0.7, seed=1)[0]             # joins between two steps

How rows share the cache: every row's tokens end at the batch's current length (the cache is filled from
the right, as left padding fills a batch), and a row's positions count only its own tokens (the model
derives them from the attention mask), so a row's numbers do not depend on where or when it joined. A group
that joins is prefilled on its own, then copied in; a longer prompt than the batch's current length shifts
the other rows to the right. A row that leaves is dropped from the tensors; the cache grows as needed up to
the model's window and is moved left when the oldest live row allows.
"""
import warnings
from dataclasses import dataclass, field

import torch

from inference.prompt import WindowWarning
from inference.sampling import sample_next
from model.model import KVCache


@dataclass
class Row:
    id: int
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: frozenset = frozenset()
    left: int = 256                       # tokens it may still produce
    generator: object = None
    seen: object = None                   # (V,) bool, for the repetition penalty
    done: bool = False
    new: list = field(default_factory=list)
    logps: list = None                    # with keep_logps: each new token's log-probability as sampled


class Batch:
    def __init__(self, model, pad_id=0, grow=256):
        self.model, self.pad_id, self.grow = model, pad_id, grow
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.window = model.config.max_position_embeddings
        self.rows, self.next_id = [], 0
        self.cache, self.mask, self.logits = None, None, None      # (B, n_kv, cap, hd) per layer; (B, cap); (B, V)

    @property
    def length(self):
        return self.cache.length if self.cache is not None else 0

    def live(self):
        return [r for r in self.rows if not r.done]

    @torch.inference_mode()
    def join(self, prompts, max_new_tokens=256, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
             stop_ids=(), seed=None, copies=1, keep_logps=False):
        """Prefill prompts (token-id lists) together and add them as rows -> their Row objects. The reply
        length is capped to what the window leaves (a WindowWarning says so). seed: one for every row, or a
        list with each row's (several samples of one prompt). copies: each prompt joins as that many rows
        (prompt i's copies next to each other) that share its one prefill: a group of samples of one prompt
        computes the prompt once. keep_logps: each row keeps the log-probability of every token it samples
        (of the temperature-scaled distribution, as a policy gradient takes it: trainer/rollout.py)."""
        lengths = [len(p) for p in prompts]
        if not prompts or min(lengths) == 0:
            raise ValueError("every prompt needs at least one token")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        L = max(lengths)
        if L >= self.window:
            raise ValueError(f"a prompt of {L} tokens leaves no room in the {self.window}-token window; "
                             "cut it first (build_prompt does)")
        if L + max_new_tokens > self.window:
            warnings.warn(f"max_new_tokens {max_new_tokens} capped to {self.window - L}: the prompt has {L} tokens "
                          f"and the model's window is {self.window}", WindowWarning, stacklevel=3)
            max_new_tokens = self.window - L
        ids = torch.full((len(prompts), L), self.pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros((len(prompts), L), dtype=torch.bool, device=self.device)
        for i, p in enumerate(prompts):                       # left padding: every last token at L - 1
            ids[i, L - len(p):] = torch.tensor(p, dtype=torch.long, device=self.device)
            mask[i, L - len(p):] = True
        first = not self.rows                     # its cache becomes the batch's: room for the replies too
        cache = KVCache(self.model.config, len(prompts), L + max_new_tokens if first else L, self.device, self.dtype)
        padded = min(lengths) != L
        logits = self.model(ids, attention_mask=mask if padded else None, kv_cache=cache,
                            last_only=True).logits[:, -1].float()
        if copies > 1:                                        # the group's rows share the one prefill
            cache, mask, logits = repeat_rows(cache, mask, logits, copies)
            prompts = [p for p in prompts for _ in range(copies)]
        rows = []
        seeds = seed if isinstance(seed, (list, tuple)) else [seed] * len(prompts)
        for p, row_seed in zip(prompts, seeds, strict=True):
            g = None
            if row_seed is not None:
                g = torch.Generator(device=self.device)
                g.manual_seed(row_seed)
            seen = None
            if repetition_penalty != 1.0:
                seen = torch.zeros(self.model.config.vocab_size, dtype=torch.bool, device=self.device)
                seen[torch.tensor(p, dtype=torch.long, device=self.device)] = True
            rows.append(Row(self.next_id, temperature, top_k, top_p, repetition_penalty, frozenset(stop_ids),
                            max_new_tokens, g, seen, logps=[] if keep_logps else None))
            self.next_id += 1
        self._merge(cache, mask, logits, rows)
        return rows

    def _merge(self, cache, mask, logits, rows):
        """Add a prefilled group (its own cache of length L) at the right end of the batch's cache."""
        if self.cache is None or not self.rows:
            full = torch.zeros((len(rows), cache.max_len), dtype=torch.bool, device=self.device)
            full[:, :mask.shape[1]] = mask
            self.cache, self.mask, self.logits, self.rows = cache, full, logits, list(rows)
            return
        L, cur = cache.length, self.cache.length
        if L > cur:                                           # the others move right to make room
            self._shift(L - cur)
            cur = L
        cap = self.cache.max_len
        grown = {}                                            # built whole first: a failure changes nothing
        for name, mine, theirs in (("k", self.cache.k, cache.k), ("v", self.cache.v, cache.v)):
            grown[name] = []
            for i in range(len(mine)):
                extra = mine[i].new_zeros((len(rows), *mine[i].shape[1:]))
                extra[:, :, cur - L:cur] = theirs[i][:, :, :L]
                grown[name].append(torch.cat([mine[i], extra]))
        extra = torch.zeros((len(rows), cap), dtype=torch.bool, device=self.device)
        extra[:, cur - L:cur] = mask
        mask_all, logits_all = torch.cat([self.mask, extra]), torch.cat([self.logits, logits])
        self.cache.k, self.cache.v, self.mask, self.logits = grown["k"], grown["v"], mask_all, logits_all
        self.rows += rows

    def _shift(self, d):
        """Move every row's cached positions d to the right (d < 0: to the left, dropping the first -d
        positions, which no live row uses); the cache grows first if needed."""
        if d > 0:
            self._ensure(self.cache.length + d)
        n = self.cache.length
        src, dst = (slice(0, n), slice(d, d + n)) if d > 0 else (slice(-d, n), slice(0, n + d))
        for i in range(len(self.cache.k)):
            for t in (self.cache.k, self.cache.v):
                t[i][:, :, dst] = t[i][:, :, src].clone()
        self.mask[:, dst] = self.mask[:, src].clone()
        self.mask[:, slice(0, d) if d > 0 else slice(n + d, n)] = False      # the positions it left
        self.cache.length = n + d

    def _ensure(self, n):
        """Room for n positions: the cache grows (doubling, at most to the window), else moves left."""
        cap = self.cache.max_len
        if n <= cap:
            return
        if n > self.window:
            start = int(self.mask.any(0).long().argmax())         # the oldest live token
            if start == 0 or n - start > self.window:
                raise ValueError(f"the batch needs {n} positions; the window is {self.window}")
            self._shift(-start)
            n -= start
            if n <= cap:
                return
        new = min(self.window, max(n, 2 * cap, cap + self.grow))
        for i in range(len(self.cache.k)):
            for t in (self.cache.k, self.cache.v):
                bigger = t[i].new_zeros((*t[i].shape[:2], new, t[i].shape[3]))
                bigger[:, :, :cap] = t[i]
                t[i] = bigger
        self.mask = torch.cat([self.mask, self.mask.new_zeros((self.mask.shape[0], new - cap))], dim=1)
        self.cache.max_len = new

    def leave(self, row):
        """Take a row out now (its client went away); it produces nothing more."""
        row.done = True
        self._drop_done()

    def _drop_done(self):
        keep = [i for i, r in enumerate(self.rows) if not r.done]
        if len(keep) == len(self.rows):
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        for i in range(len(self.cache.k)):
            self.cache.k[i] = self.cache.k[i].index_select(0, idx)
            self.cache.v[i] = self.cache.v[i].index_select(0, idx)
        self.mask, self.logits = self.mask.index_select(0, idx), self.logits.index_select(0, idx)
        self.rows = [self.rows[i] for i in keep]

    def row_log_softmax(self):
        """(B, V) log-probabilities of the next token, each row's logits divided by its temperature (if above 0)."""
        temps = torch.tensor([r.temperature if r.temperature > 0 else 1.0 for r in self.rows], device=self.device)
        return torch.log_softmax(self.logits / temps[:, None], dim=-1)

    @torch.inference_mode()
    def step(self):
        """Sample one token for every live row -> [(row, token)]: a row that stops (a stop token, its
        length limit) gives its last token and then leaves; the rows left are fed in one forward."""
        out = []
        greedy = all(r.temperature <= 0 and r.seen is None for r in self.rows)
        picked = self.logits.argmax(dim=-1).tolist() if greedy else None        # one op for the usual case
        scaled = self.row_log_softmax() if any(r.logps is not None for r in self.rows) else None
        for i, r in enumerate(self.rows):
            t = picked[i] if greedy else int(sample_next(self.logits[i:i + 1], r.temperature, r.top_k, r.top_p,
                                                         r.repetition_penalty, None if r.seen is None else
                                                         r.seen[None], r.generator)[0])
            r.new.append(t)
            if r.logps is not None:
                r.logps.append(float(scaled[i, t]))
            r.left -= 1
            r.done = t in r.stop or r.left <= 0
            if r.seen is not None:
                r.seen[t] = True
            out.append((r, t))
        self._drop_done()
        if self.rows:
            fed = torch.tensor([[r.new[-1]] for r in self.rows], dtype=torch.long, device=self.device)
            self._ensure(self.cache.length + 1)
            n = self.cache.length + 1
            self.mask[:, n - 1] = True
            full = bool(self.mask[:, :n].all())
            self.logits = self.model(fed, attention_mask=None if full else self.mask[:, :n], kv_cache=self.cache,
                                     last_only=True).logits[:, -1].float()
        return out


def repeat_rows(cache, mask, logits, n):
    """A prefilled group's cache, mask and last logits with each row repeated n times (copies side by side)."""
    for i in range(len(cache.k)):
        cache.k[i], cache.v[i] = cache.k[i].repeat_interleave(n, 0), cache.v[i].repeat_interleave(n, 0)
    return cache, mask.repeat_interleave(n, 0), logits.repeat_interleave(n, 0)
