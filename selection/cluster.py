"""Cherry's "pre-experienced" data: embed each sample's instruction with the scorer (its last hidden states,
after the final norm, averaged over the instruction's tokens, as Cherry's data_analysis.py --mod pre does;
with --prompt alpaca its very tokens: the Alpaca prompt tokenized whole, cut to max_length from the right),
cluster the embeddings with KMeans (scikit-learn) into k clusters, and take n samples per cluster (those
nearest its centre), a small set that covers the data's kinds of instruction for the brief first SFT.

    from selection.cluster import embed, pick_per_cluster
    vectors = embed(loaded, samples, "chatml", 512)
    lines, labels = pick_per_cluster(vectors, [s.line for s in samples], k=10, per_cluster=5, seed=42)
"""
import numpy as np
import torch

from selection.ifd import Pair


@torch.inference_mode()
def embed(loaded, samples, prompt, max_length, batch_tokens=1024):
    """(n, hidden) float32 array: the mean final hidden state over each sample's question tokens."""
    model, tok = loaded.model, loaded.tokenizer
    device = next(model.parameters()).device
    questions = [Pair(s, tok, prompt, max_length).instruction for s in samples]
    captured = {}
    hook = model.model.norm.register_forward_hook(lambda m, i, o: captured.update(h=o))
    out, order = np.zeros((len(samples), model.config.hidden_size), dtype=np.float32), \
        sorted(range(len(samples)), key=lambda i: -len(questions[i]))
    try:
        start = 0
        while start < len(order):
            width = len(questions[order[start]])
            idx = order[start:start + max(1, batch_tokens // width)]
            start += len(idx)
            ids = torch.full((len(idx), width), tok.pad_id, dtype=torch.long)
            real = torch.zeros((len(idx), width), dtype=torch.bool)
            for j, i in enumerate(idx):
                ids[j, :len(questions[i])] = torch.tensor(questions[i])
                real[j, :len(questions[i])] = True
            labels = torch.full_like(ids, -100)              # no logits wanted: only the hidden states
            model(ids.to(device), labels=labels.to(device), targets_only=True)
            h = captured["h"].float() * real.to(device).unsqueeze(-1)
            out[idx] = (h.sum(1) / real.sum(1, keepdim=True).to(device)).cpu().numpy()
    finally:
        hook.remove()
    return out


def pick_per_cluster(vectors, lines, k, per_cluster, seed=42):
    """KMeans into k clusters -> (the chosen lines: per_cluster nearest each centre, sorted; each
    sample's cluster label)."""
    from sklearn.cluster import KMeans
    if k > len(lines):
        raise ValueError(f"k={k} clusters for {len(lines)} samples")
    km = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(vectors)
    dist = np.linalg.norm(vectors - km.cluster_centers_[km.labels_], axis=1)
    chosen = []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        chosen += [lines[i] for i in members[np.argsort(dist[members], kind="stable")][:per_cluster]]
    return sorted(chosen), km.labels_.tolist()
