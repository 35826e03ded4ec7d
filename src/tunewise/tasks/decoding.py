"""Greedy decoding for evaluation: `model.generate`'s greedy search, token for token, without its wasted work.

`generate` keeps every row of a batch until the last one ends, and grows each layer's KV cache by `torch.cat` at
every step. Here a finished row leaves the batch at once (its KV rows are dropped; the padding of the rows that stay
is unchanged), and the cache is one buffer per layer with room for every token still to come, written in place.

Outputs are identical to `generate` with the same batch: the prefill is the same call (same padding, mask, positions
and `logits_to_keep=1`), a linear's row results do not depend on how many rows share the matmul, and attention and
the elementwise work are per row. tests/test_causal.py holds the two equal on SmolLM2; bench/generation.py measures
the speed. Only plain greedy search runs here (`plain_greedy`); sampling and any logits processor in the model's
generation config go through `generate`.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# generation-config fields that add a logits processor or a stopping rule to greedy search: any of them set
# sends the batch through `generate` instead
_PROCESSOR_FIELDS = ("repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens",
                     "forced_bos_token_id", "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens",
                     "sequence_bias", "encoder_repetition_penalty", "exponential_decay_length_penalty",
                     "renormalize_logits", "stop_strings", "max_time", "num_beams", "penalty_alpha",
                     "guidance_scale", "watermarking_config", "epsilon_cutoff", "eta_cutoff", "typical_p", "min_p",
                     "num_return_sequences")


def plain_greedy(model) -> bool:
    """True when the model's generation config adds nothing to greedy search (no penalty, no forced or suppressed
    tokens, one beam), so `greedy_batch` gives what `generate(do_sample=False)` gives."""
    if getattr(model.config, "is_encoder_decoder", False):
        return False
    from transformers import GenerationConfig

    cfg = getattr(model, "generation_config", None)
    if cfg is None:
        return True
    neutral = GenerationConfig()
    return all(getattr(cfg, name, None) == getattr(neutral, name, None) for name in _PROCESSOR_FIELDS)


class _InPlaceLayer(DynamicLayer):
    """A KV-cache layer whose keys/values are views of buffers with room for the tokens still to come."""

    @classmethod
    def from_prefill(cls, layer: DynamicLayer, room: int) -> "_InPlaceLayer":
        self = cls()
        self.is_initialized, self.device = True, layer.keys.device
        rows, heads, length, dim = layer.keys.shape
        self.key_buffer = layer.keys.new_empty((rows, heads, length + room, dim))
        self.value_buffer = layer.values.new_empty((rows, heads, length + room, dim))
        self.key_buffer[:, :, :length] = layer.keys
        self.value_buffer[:, :, :length] = layer.values
        self.length = length
        self._expose()
        return self

    def _expose(self) -> None:
        self.keys = self.key_buffer[:, :, :self.length]
        self.values = self.value_buffer[:, :, :self.length]

    def update(self, key_states, value_states, *args, **kwargs):
        new = key_states.shape[-2]
        if self.length + new > self.key_buffer.shape[-2]:
            raise RuntimeError("decoding ran past the KV buffer it sized for itself")
        self.key_buffer[:, :, self.length:self.length + new] = key_states
        self.value_buffer[:, :, self.length:self.length + new] = value_states
        self.length += new
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.key_buffer = self.key_buffer[indices]
        self.value_buffer = self.value_buffer[indices]
        self._expose()


@torch.inference_mode()
def greedy_batch(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                 eos_token_id: int) -> list[list[int]]:
    """Each row's generated ids (EOS excluded) for a left-padded batch, as `generate(do_sample=False)` makes them."""
    device = input_ids.device
    rows = input_ids.shape[0]
    # generate drops an all-ones mask before the first forward, which changes the attention kernel's path
    keep_mask = not bool(attention_mask.all())
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=input_ids, attention_mask=attention_mask if keep_mask else None, position_ids=positions,
                cache=cache, use_cache=True, logits_to_keep=1)
    cache.layers = [_InPlaceLayer.from_prefill(layer, max_new_tokens) for layer in cache.layers]
    generated: list[list[int]] = [[] for _ in range(rows)]
    alive = list(range(rows))       # batch row -> input row
    mask, last = attention_mask, positions[:, -1:]
    for _ in range(max_new_tokens):
        tokens = out.logits[:, -1, :].to(dtype=torch.float32).argmax(-1)
        stay = []
        for j, row in enumerate(alive):
            token = int(tokens[j])
            if token == eos_token_id:
                continue
            generated[row].append(token)
            if len(generated[row]) < max_new_tokens:
                stay.append(j)
        if not stay:
            break
        if len(stay) < len(alive):
            index = torch.tensor(stay, device=device)
            for layer in cache.layers:
                layer.batch_select_indices(index)
            mask, last, tokens = mask[index], last[index], tokens[index]
            alive = [alive[j] for j in stay]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], 1)
        last = last + 1
        out = model(input_ids=tokens.view(-1, 1), attention_mask=mask if keep_mask else None, position_ids=last,
                    cache=cache, use_cache=True, logits_to_keep=1)
    return generated
