"""THE packed rows: many (context, continuation) requests computed with less work, each group's shared prefix
once, every continuation after it seeing the prefix and itself only (a block mask), units packed end to end
into rows, the output layer only where a scored token is predicted. evaluation/loglik.py scores benchmark
answers with it, trainer/rollout.py a GRPO group's completions (one prompt, G completions).

    from inference.packing import make_rows, make_units, pack
    rows = make_rows(make_units(requests, window, groups))
    ids, pos, mask, select, where, request, token = pack(rows, pad_id, device)
    logits = model(ids, packed=(pos, mask, select)).logits        # (n_selected, vocab); token k at where[k]
"""
import torch

from core.errors import UserError

ROW_TOKENS = 256                     # a packed row's length (longer when one question needs more)


def shared_prefix(seqs, cap):
    """The length of the longest common prefix of seqs, at most cap."""
    n = 0
    while n < cap and all(len(s) > n and s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


def make_units(requests, window, groups=None):
    """Requests -> units (prefix ids, [(request index, fed ids, the position in prefix + fed predicting its first
    scored token, continuation ids)]): the requests of a group (default: those with the same context) share the
    longest common prefix of their fed tokens (context + continuation but its last token), which may reach into
    the answers (PIQA's two solutions often start alike); each then feeds its own tokens after it.
    A request longer than the window is its own unit, its context cut from the left as lm-eval cuts it."""
    if groups is None:
        by_context = {}
        for i, (ctx, _) in enumerate(requests):
            by_context.setdefault(tuple(ctx), []).append(i)
        groups = list(by_context.values())
    units = []
    for group in groups:
        fits = []
        for i in group:
            ctx, cont = requests[i]
            if not cont:
                raise ValueError(f"request {i}: an empty continuation has no likelihood to score")
            if len(cont) > window:
                raise UserError(f"an answer of {len(cont)} tokens does not fit the model's {window}-token window")
            if len(ctx) + len(cont) - 1 > window:          # lm-eval: (context + continuation)[-(window + 1):]
                ctx = ctx[len(ctx) + len(cont) - 1 - window:]
                units.append((list(ctx), [(i, list(cont[:-1]), len(ctx) - 1, list(cont))]))
            else:
                fits.append(i)
        if not fits:
            continue
        seqs = [list(requests[i][0]) + list(requests[i][1][:-1]) for i in fits]
        n = shared_prefix(seqs, min(len(seq) for seq in seqs))
        branches = [(i, seq[n:], len(requests[i][0]) - 1, list(requests[i][1])) for i, seq in zip(fits, seqs)]
        current, used = [], n
        for br in sorted(branches, key=lambda b: -len(b[1])):
            if current and used + len(br[1]) > window:
                units.append((seqs[0][:n], current))
                current, used = [], n
            current.append(br)
            used += len(br[1])
        units.append((seqs[0][:n], current))
    return units


def unit_length(unit):
    prefix, branches = unit
    return len(prefix) + sum(len(br[1]) for br in branches)


def make_rows(units, row_tokens=ROW_TOKENS):
    """Units packed end to end into rows of at most row_tokens tokens (or the longest unit's length): the
    longest unit left goes first, then the shortest ones while they fit, so rows come out nearly full."""
    units = sorted(units, key=unit_length)
    cap = max(row_tokens, unit_length(units[-1])) if units else row_tokens
    rows, lo, hi = [], 0, len(units) - 1
    while lo <= hi:
        row, used = [units[hi]], unit_length(units[hi])
        hi -= 1
        while lo <= hi and used + unit_length(units[lo]) <= cap:
            row.append(units[lo])
            used += unit_length(units[lo])
            lo += 1
        rows.append(row)
    return rows


def row_length(row):
    return sum(unit_length(u) for u in row)


def pack(rows, pad_id, device):
    """rows -> (input_ids, position_ids, mask, select, where, request, token): select marks the positions
    whose next token is scored; the k-th scored token is (request[k], token[k]), predicted at the where[k]-th
    selected position (row-major, as x[select] orders them). Positions restart at each unit; a token sees
    earlier tokens of its unit's prefix and of its own branch only."""
    B, T = len(rows), max(row_length(r) for r in rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    unit_of = torch.full((B, T), -1, dtype=torch.long)      # -1 padding
    seg = torch.zeros((B, T), dtype=torch.long)             # 0 a unit's prefix, k its k-th branch
    select = torch.zeros((B, T), dtype=torch.bool)
    scored = []                                             # (row, position, request index, token)
    for b, row in enumerate(rows):
        at = 0
        for u, (prefix, branches) in enumerate(row):
            n = len(prefix)
            ids[b, at:at + n] = torch.tensor(prefix, dtype=torch.long)
            pos[b, at:at + n] = torch.arange(n)
            unit_of[b, at:at + n] = u
            start = at + n
            for k, (i, fed, first, cont) in enumerate(branches, 1):
                m = len(fed)
                ids[b, start:start + m] = torch.tensor(fed, dtype=torch.long)
                pos[b, start:start + m] = torch.arange(n, n + m)
                unit_of[b, start:start + m] = u
                seg[b, start:start + m] = k
                # the request's j-th continuation token is predicted at position first + j of prefix + fed
                for j, t in enumerate(cont):
                    q = first + j
                    p = at + q if q < n else start + (q - n)
                    scored.append((b, p, i, t))
                    select[b, p] = True
                start += m
            at = start
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    same_unit = (unit_of[:, :, None] == unit_of[:, None, :]) & (unit_of[:, None, :] >= 0)
    visible = (seg[:, None, :] == 0) | (seg[:, :, None] == seg[:, None, :])
    mask = (causal[None] & same_unit & visible) | torch.eye(T, dtype=torch.bool)[None]   # padding sees itself
    order = torch.full((B, T), -1, dtype=torch.long)
    order[select] = torch.arange(int(select.sum()))
    rows_idx, place, request, token = (torch.tensor(col, dtype=torch.long) for col in zip(*scored))
    to = dict(device=device)
    return (ids.to(**to), pos.to(**to), mask[:, None].to(**to), select.to(**to),
            order[rows_idx, place].to(**to), request, token.to(**to))


def batches(rows, batch_tokens):
    """Rows sorted longest first, cut into batches of at most batch_tokens (rows x longest row) tokens."""
    order = sorted(range(len(rows)), key=lambda r: -row_length(rows[r]))
    batch, longest = [], 0
    for r in order:
        n = row_length(rows[r])
        if batch and max(longest, n) * (len(batch) + 1) > batch_tokens:
            yield batch
            batch, longest = [], 0
        batch.append(r)
        longest = max(longest, n)
    if batch:
        yield batch
