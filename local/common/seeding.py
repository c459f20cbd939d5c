"""Independent random streams: every stream of the project is named by a domain tag and its keys.

NumPy's `SeedSequence` pads a short entropy list with zeros before hashing, so two unrelated streams whose
seed lists differ only by trailing zeros or by the order of their keys can coincide: `default_rng([seed,
split_index, n_src])` for the test views and `default_rng([seed, n_src, epoch, index])` for dynamic mixing
expanded to the same stream for n_src = 2, epoch 2, index 0. Here the entropy of every stream is
`[PROJECT, domain tag, number of keys, *keys]`: two streams of different domains differ in the tag, two of
one domain with key lists of different lengths differ in the count, so no two (domain, keys) share an
entropy list, and SeedSequence's hash keeps distinct lists independent.
"""
import numpy as np

PROJECT = 0x6C697374  # "list": keeps these streams apart from any plain default_rng(seed) elsewhere

# One tag per domain; never renumber one (that would change every figure that draws from it).
DOMAINS = {
    "views": 1,            # stage-1 views: keys (view_seed, split index, n_src)
    "dynamic_mixing": 2,   # dynamic mixing: keys (view_seed, n_src, epoch, item)
    "synth_sounds": 3,     # embedded synthetic categories: keys (seed, category, clip)
    "synth_speaker": 4,    # a synthetic speaker's voice: keys (seed, speaker)
    "synth_utterance": 5,  # one synthetic utterance: keys (seed, speaker, utterance)
    "class_pool": 6,       # the order of the category pool: keys (view_seed,)
    "scp_windows": 7,      # training windows of wsj0-2mix / LibriMix lists: keys (view_seed, split index)
    "kmeans": 8,           # k-means restarts of deep clustering: keys (seed,)
    "examples": 9,         # which test mixtures are saved as wav: keys (example_seed,)
    "bootstrap": 10,       # bootstrap resamples: keys (bootstrap_seed,)
    "batch_order": 11,     # the shuffled item order of a training epoch: keys (training seed, epoch)
    "augmentation": 12,    # perturbation of dynamically mixed sources: keys (view_seed, n_src, epoch, item)
    # benchmark protocols built from a listing (local/benchmarks/small_data.py): keys (seed, protocol)
    "protocol": 13,
    "queries": 14,         # query items of a mixture (local/data/queries.py): keys (seed, epoch, mixture)
    "query_examples": 15,  # the example clip of a query item: keys (seed, epoch, mixture, slot)
}


def entropy(domain, *keys):
    """The SeedSequence entropy of stream (domain, keys): non-negative integer keys only."""
    if domain not in DOMAINS:
        raise KeyError(f"unknown random-stream domain {domain!r}; add it to local/common/seeding.py DOMAINS")
    keys = [int(k) for k in keys]
    if any(k < 0 for k in keys):
        raise ValueError(f"stream {domain}: keys must be non-negative integers, got {keys}")
    return [PROJECT, DOMAINS[domain], len(keys), *keys]


def stream(domain, *keys):
    """A NumPy Generator for (domain, keys), independent of every other (domain, keys)."""
    return np.random.default_rng(np.random.SeedSequence(entropy(domain, *keys)))


def torch_seed(domain, *keys):
    """A 63-bit seed for a torch.Generator, drawn from stream (domain, keys)."""
    return int(np.random.SeedSequence(entropy(domain, *keys)).generate_state(2, np.uint32).astype(np.uint64)
               .dot(np.array([1 << 32, 1], dtype=np.uint64)) >> np.uint64(1))
