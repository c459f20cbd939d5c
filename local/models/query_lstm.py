"""Label-queried extraction (issue 23): the one sound of a mixture that a category label names.

Ochiai et al., "Listen to What You Want: Neural Network-based Universal Sound Selector" (Interspeech 2020),
condition a mask network on a class vector and train it on (mixture, query, target) triples, with silence as
the target of a query for an absent class. Here the triples come from the views (local/data/queries.py) and the
network is the project's LSTM masker (local/models/lstm.py) with one output, conditioned by FiLM (Perez et al.,
"FiLM: Visual Reasoning with a General Conditioning Layer", AAAI 2018): a learned embedding per category gives,
for every BLSTM layer, a per-channel scale and shift of that layer's normalised input,
x -> (1 + gamma(q)) * LayerNorm(x) + beta(q).

Where and why: at the input of every layer rather than once, so that the query can steer what each layer keeps;
Ochiai et al. multiply one hidden layer's output by a class-dependent vector, which is FiLM at one layer without
the shift. gamma and beta start at zero, so the untrained extractor is the unconditioned masker. `film_layers: k`
conditions only the last k layers, Ochiai's single point for k = 1: the layers before it are then the same for every
query of a mixture and run once per distinct mixture of a batch. At 10 minutes on synth the extra steps of k = 1
and the deeper conditioning of k = 3 came out even (docs/extraction.md, "Conditioning depth"). `film_layers: 0`
conditions no BLSTM layer: the whole stack is shared by the queries of a mixture, and the query acts in a small
mask head, FiLM on the stack's normalised output, a hidden linear layer with ReLU, then the mask. Why: a query then
costs a head, not a stack, so a batch can hold every query of as many mixtures as the n-source separator's batch
for about the separator's step, and the shared stack is trained by all of them at once (docs/extraction.md,
"Conditioning at the head"). Departures from
Ochiai et al.: the conditioning above (theirs: one multiplicative point); the masker (theirs: a BLSTM on
log-mel features; here the residual BLSTM stack on the log-magnitude STFT that every category model here shares);
the loss (theirs: a spectral loss; here local/training/losses.py QueryExtractionLoss: SI-SDR on positive queries
and the output's energy relative to the mixture on negative ones, floored at -30 dB as MixIT's loss for silent
references).

Presence gate (`presence_gate: true`, the default; our addition, not Ochiai et al.'s): the output is the masked
sound times a gate g = sigmoid(w . pool(features)), one number per query saying
whether the queried sound is in the mixture; `presence_pool` max (default) pools by the maximum over frames, so a
drum hit of a few frames is not averaged away (PANNs' clip pooling, Kong et al. 2020). Why a gate: a negative
query must return silence, and when the mask alone has to produce it, the model takes the cheap way that SI-SDR,
blind to scale, cannot see: it returns every sound quiet. Without the gate the positive queries' outputs sat a
median 31 dB below their sources on synth (33 on debian_sounds), so the negatives' -48 dB meant little, and the
silence objective also cost the positive queries 2.5 dB of SI-SDR at 2 sources (docs/extraction.md, "The cost of
negative queries", "Where the gate sits"). With the gate the negatives' objective reaches the mask through the gate
only (local/training/losses.py QueryExtractionLoss): the mask learns the sound, the gate whether it is there. The
gate is only as good as its presence classifier: on synth its AUC is 0.999, on debian_sounds' drum kit 0.75, where
it answers half of the positive queries with silence (`missed_share`, `presence_auc` in stage 3).

What the gate reads (`presence_head`): `conditioned`, the features the mask is read from, conditioned on the query,
one logit (trained on the queried label only: 3 answers per 2-source mixture with one negative query); or `tagger`,
an audio tagger on the shared stack, one logit per category from the stack's features pooled the same way, the
queried category's logit being the gate (trained by a cross-entropy over every category of the dataset for every
mixture, present or absent: PANNs' clip-level tagging, Kong et al. 2020, as the universal separation systems built
on weak labels use a tagger to choose what to extract). Why: the gate's classifier is what fails on real sounds (AUC
0.75 on debian_sounds' drum hits), and a tagger trains it on all the categories of each mixture: it halved the
negatives above -20 dB on synth at 5 sources (9.0 -> 4.0 %) and on debian_sounds (12.5 -> 7.0 %, AUC 0.77 -> 0.84;
docs/extraction.md, "A tagger for the gate"). It needs label queries (an example clip names no category), so null,
the config's default, means the tagger for label queries and the conditioned gate for example queries; the class
default stays `conditioned`, that of packages saved before the tagger.

The category names are part of the model (`labels`), so a package answers `--query dog` on its own.

Query by example (`query_type: example`, issue 23 item 3): the condition comes from a short clip of the wanted
category instead of its label, encoded by a small network trained jointly (`ExampleEncoder`: the clip's normalised
log-magnitude STFT, a linear layer, one BLSTM, the mean over frames, a linear layer to the condition size), so a
user can ask for a category by giving one example, also one the model never extracted in training.
"""
import torch
from asteroid.masknn.recurrent import SingleRNN
from torch import nn

from local.models.stft_masker import STFTMasker, edge_padding, log_magnitude_features

PRESENCE_POOLS = ("mean", "max", "mean+max")  # how the presence gate pools the conditioned features over frames
PRESENCE_HEADS = ("conditioned", "tagger")  # what the presence gate reads (module docstring)


def presence_head_of(presence_head, query_type="label", presence_gate=True):
    """The gate's head of a model config: `presence_head` as given, or for null the measured default, a tagger for
    label queries and the conditioned gate for example queries (an example clip names no category)."""
    if presence_head is None:
        return "tagger" if query_type == "label" and presence_gate else "conditioned"
    return presence_head


class ExampleEncoder(nn.Module):
    """An example clip's STFT [B, 2F, frames] -> a condition vector [B, label_dim] (module docstring)."""

    def __init__(self, n_freq, hidden_size, label_dim):
        super().__init__()
        self.input_proj = nn.Linear(n_freq, hidden_size)
        self.rnn = SingleRNN("lstm", hidden_size, hidden_size, n_layers=1, bidirectional=True)
        self.output = nn.Linear(2 * hidden_size, label_dim)

    def forward(self, tf_rep):
        x = self.rnn(self.input_proj(log_magnitude_features(tf_rep).transpose(1, 2)))  # [B, frames, 2H]
        return self.output(x.mean(dim=1))


class FiLMBLSTMMasker(nn.Module):
    """([B, 2F, frames] complex STFT, [B, label_dim] condition) -> [B, 1, F, frames] magnitude mask in [0, 1].

    The first `n_layers - film_layers` layers are unconditioned (the trunk: `features`), the last `film_layers`
    FiLM-conditioned (`conditioned`), or, with `film_layers` 0, the mask head; `forward` is the two in a row."""

    def __init__(self, n_freq, hidden_size, n_layers, dropout, label_dim, film_layers=None, presence_gate=False,
                 presence_pool="mean", n_tags=None):
        super().__init__()
        if presence_pool not in PRESENCE_POOLS:
            raise ValueError(f"model.presence_pool must be one of {', '.join(PRESENCE_POOLS)}, got {presence_pool!r}")
        self.presence_pool = presence_pool
        film_layers = n_layers if film_layers is None else film_layers
        if isinstance(film_layers, bool) or not isinstance(film_layers, int) or not 0 <= film_layers <= n_layers:
            raise ValueError(f"model.film_layers must be an integer between 0 and model.n_layers ({n_layers}), "
                             f"got {film_layers!r}")
        self.n_freq, self.n_shared = n_freq, n_layers - film_layers
        self.input_proj = nn.Linear(n_freq, hidden_size)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(n_layers))
        # film_layers 0: one FiLM, in the mask head (module docstring); otherwise one per conditioned layer
        self.films = nn.ModuleList(nn.Linear(label_dim, 2 * hidden_size) for _ in range(max(film_layers, 1)))
        self.head = None
        if film_layers == 0:
            self.head = nn.ModuleDict({"norm": nn.LayerNorm(hidden_size),
                                       "hidden": nn.Linear(hidden_size, hidden_size)})
        # the gate reads the conditioned features (one logit), or with `n_tags` the trunk's, one logit per category
        self.gate = nn.Linear(hidden_size, n_tags or 1) if presence_gate else None
        self.tagger = bool(n_tags)
        for film in self.films:  # start as the unconditioned masker
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.rnns = nn.ModuleList(
            SingleRNN("lstm", hidden_size, hidden_size, n_layers=1, bidirectional=True) for _ in range(n_layers)
        )
        self.projs = nn.ModuleList(nn.Linear(2 * hidden_size, hidden_size) for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, n_freq)

    def features(self, tf_rep):
        """The unconditioned trunk: [B, 2F, frames] -> [B, frames, H]; the same for every query of a mixture."""
        x = self.input_proj(log_magnitude_features(tf_rep).transpose(1, 2))
        for norm, rnn, proj in zip(self.norms[: self.n_shared], self.rnns, self.projs):
            x = x + self.dropout(proj(rnn(norm(x))))
        return x

    def conditioned(self, x, condition):
        """The FiLM-conditioned layers (or head) and the mask: ([B, frames, H], [B, label_dim]) -> [B, 1, F, frames]."""
        return self.conditioned_with_presence(x, condition)[0]

    def conditioned_with_presence(self, x, condition):
        """(mask [B, 1, F, frames], presence logit [B] or None without the gate)."""
        if self.head is not None:
            gamma, beta = self.films[0](condition).unsqueeze(1).chunk(2, dim=-1)
            x = torch.relu(self.head["hidden"]((1 + gamma) * self.head["norm"](x) + beta))
        else:
            layers = zip(self.norms[self.n_shared :], self.films, self.rnns[self.n_shared :],
                         self.projs[self.n_shared :])
            for norm, film, rnn, proj in layers:
                gamma, beta = film(condition).unsqueeze(1).chunk(2, dim=-1)
                x = x + self.dropout(proj(rnn((1 + gamma) * norm(x) + beta)))
        logit = self.gate(self.pooled(x))[:, 0] if self.gate is not None and not self.tagger else None
        return torch.sigmoid(self.output(x)).transpose(1, 2).unsqueeze(1), logit

    def tags(self, features):
        """The tagger's logits [B, n_tags] from the trunk's features [B, frames, H] (`presence_head: tagger`)."""
        return self.gate(self.pooled(features))

    def pooled(self, x):
        """[B, frames, H] -> [B, H], what the presence gate reads: the mean over frames, the maximum, or their sum
        (the clip-level pooling of PANNs, Kong et al. 2020, CNN14), so that a sound of a few frames is not averaged
        away."""
        if self.presence_pool == "mean":
            return x.mean(dim=1)
        if self.presence_pool == "max":
            return x.amax(dim=1)
        return x.mean(dim=1) + x.amax(dim=1)

    def forward(self, tf_rep, condition):
        return self.conditioned(self.features(tf_rep), condition)


class QueryLSTMExtractor(STFTMasker):
    """Mixture [B, T] and query [B] (label indices or names) -> the queried sound [B, 1, T] (module docstring).

    `n_src` is the number of sources in the training mixtures (recorded; the output is one sound)."""

    queried = True  # trained and evaluated on query items (local/data/queries.py), not on all sources at once

    def __init__(self, n_src, labels, query_type="label", hidden_size=256, n_layers=3, dropout=0.0, label_dim=32,
                 film_layers=None, presence_gate=False, presence_pool="mean", presence_head="conditioned",
                 n_filters=256, kernel_size=256, stride=64, sample_rate=8000):
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"model.labels must be distinct category names, got {labels!r}")
        if not isinstance(presence_gate, bool):
            raise ValueError(f"model.presence_gate must be true or false, got {presence_gate!r}")
        if query_type not in ("label", "example"):
            raise ValueError(f"model.query_type must be label or example, got {query_type!r}")
        presence_head = presence_head_of(presence_head, query_type, presence_gate)
        if presence_head not in PRESENCE_HEADS:
            raise ValueError(f"model.presence_head must be one of {', '.join(PRESENCE_HEADS)}, got {presence_head!r}")
        if presence_head == "tagger" and (query_type != "label" or not presence_gate):
            raise ValueError("model.presence_head tagger needs model.presence_gate true and model.query_type label "
                             "(it has one logit per category; an example clip names none): set presence_head "
                             "conditioned")
        n_freq = n_filters // 2 + 1
        masker = FiLMBLSTMMasker(n_freq, hidden_size, n_layers, dropout, label_dim, film_layers, presence_gate,
                                 presence_pool, len(labels) if presence_head == "tagger" else None)
        super().__init__(masker, n_src, n_filters, kernel_size, stride, sample_rate)
        self.labels, self.query_type = [str(label) for label in labels], query_type
        if query_type == "label":
            self.embedding = nn.Embedding(len(labels), label_dim)
        else:
            self.example_encoder = ExampleEncoder(n_freq, hidden_size // 2, label_dim)
        self._masker_args = dict(labels=self.labels, query_type=query_type, hidden_size=hidden_size,
                                 n_layers=n_layers, dropout=dropout, label_dim=label_dim,
                                 film_layers=n_layers - masker.n_shared,
                                 presence_gate=presence_gate, presence_pool=presence_pool,
                                 presence_head=presence_head, mask_act="sigmoid")

    def query_indices(self, query, batch):
        """A label name, a list of names, or label indices -> a LongTensor [batch]."""
        if isinstance(query, str):
            query = [query] * batch
        if isinstance(query, (list, tuple)) and query and isinstance(query[0], str):
            unknown = sorted({q for q in query if q not in self.labels})
            if unknown:
                raise ValueError(f"unknown query {', '.join(unknown)}; this model knows {', '.join(self.labels)}")
            query = [self.labels.index(q) for q in query]
        return torch.as_tensor(query, dtype=torch.long, device=next(self.parameters()).device)

    def condition(self, query, batch):
        """The FiLM condition [batch, label_dim]: the embedding of a label (names or indices), or the encoding of
        example clips ([batch, L], or one clip [L] for the whole batch) for `query_type: example`."""
        if self.query_type == "label":
            return self.embedding(self.query_indices(query, batch))
        clip = torch.as_tensor(query, dtype=torch.float32, device=next(self.parameters()).device)
        clip = clip.expand(batch, -1) if clip.dim() == 1 else clip
        left, right = edge_padding(clip.shape[-1], self.stft_args["kernel_size"], self.stft_args["stride"])
        return self.example_encoder(self.encoder(nn.functional.pad(clip, (left, right)).unsqueeze(1)))

    @property
    def presence_gate(self):
        return self.masker.gate is not None

    def forward(self, wav, query):
        """[B, T] (or [T]) and a query -> [B, 1, T], with the edge padding of every STFT model here: the masked
        sound, times the presence gate where the model has one.

        With an unconditioned trunk (`film_layers` < `n_layers`), the trunk runs once per distinct mixture of the
        batch and its features go to every query of that mixture: the same output as one pass per item, for the
        cost of one, where a batch holds several queries of a mixture (training batches group them)."""
        return self.gated(*self.masked_and_presence(wav, query))

    @staticmethod
    def gated(estimate, logit):
        """The masked sound times the presence gate, sigmoid(logit); unchanged without a gate (logit None)."""
        return estimate if logit is None else estimate * torch.sigmoid(logit)[..., None, None]

    def masked_and_presence(self, wav, query, return_tags=False):
        """(the masked sound [B, 1, T] or [1, T], the presence logit [B] or [] or None without the gate); with
        `return_tags`, also the tagger's logits [B, n_labels] (None without a tagger)."""
        was_1d = wav.dim() == 1
        wav = wav.unsqueeze(0) if was_1d else wav
        length, batch = wav.shape[-1], wav.shape[0]
        left, right = edge_padding(length, self.stft_args["kernel_size"], self.stft_args["stride"])
        mixtures, which = wav, None
        if self.masker.n_shared and batch > 1:
            mixtures, which = torch.unique(wav, dim=0, return_inverse=True)
        tf_rep = self.encoder(nn.functional.pad(mixtures, (left, right)).unsqueeze(1))
        features = self.masker.features(tf_rep)
        tags = self.masker.tags(features) if self.masker.tagger else None
        if which is not None:
            tf_rep, features = tf_rep[which], features[which]
            tags = None if tags is None else tags[which]
        masks, logit = self.masker.conditioned_with_presence(features, self.condition(query, batch))
        if tags is not None:  # the queried category's logit
            logit = tags.gather(1, self.query_indices(query, batch).reshape(-1, 1).expand(batch, 1))[:, 0]
        estimate = self.decoder(self.apply_masks(tf_rep, masks))[..., left : left + length]
        if was_1d:
            estimate, logit, tags = estimate[0], None if logit is None else logit[0], None if tags is None else tags[0]
        return (estimate, logit, tags) if return_tags else (estimate, logit)

    def masker_args(self):
        return {k: v for k, v in self._masker_args.items() if k != "mask_act"}

    @property
    def oracle_bound(self):
        return "psm"
