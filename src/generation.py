"""Greedy decoding: a plain loop outside the model, batched over prompts of equal length, with a KV cache."""

import torch

from src.model import KVCache


@torch.no_grad()
def greedy_generate(model, prompt_ids, max_new_tokens, end_id, use_cache=True):
    """prompt_ids: [batch, length], all prompts the same length. Returns one list of new token ids per prompt,
    without the end token; decoding stops once every sequence has produced `end_id` or the budget is spent.

    With the cache, each step feeds only the newest token; without it (the reference the cache is tested against),
    each step recomputes the whole sequence."""
    cache = KVCache(model.config, prompt_ids.shape[0], prompt_ids.device, prompt_ids.shape[1] + max_new_tokens) \
        if use_cache else None
    sequences = prompt_ids
    new_input = prompt_ids
    finished = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
    for _ in range(max_new_tokens):
        logits, _ = model(new_input if use_cache else sequences, cache=cache)
        next_ids = torch.where(finished, end_id, logits[:, -1].argmax(dim=-1))
        sequences = torch.cat([sequences, next_ids[:, None]], dim=1)
        new_input = next_ids[:, None]
        finished |= next_ids == end_id
        if finished.all():
            break
    generated = []
    for row in sequences[:, prompt_ids.shape[1]:].tolist():
        generated.append(row[: row.index(end_id)] if end_id in row else row)
    return generated


def complete(model, tokenizer, prompt, device):
    """The model's greedy continuation of one prompt string, e.g. '12+34=' -> '46'. A model without a length limit
    (rope, abacus) may write up to seven times the prompt's length, or up to its training max_length if longer."""
    ids = torch.tensor([tokenizer.encode(prompt)], device=device)
    budget = (model.max_tokens or max(model.config.max_length, 8 * ids.shape[1])) - ids.shape[1]
    if budget <= 0:
        raise ValueError(f"prompt {prompt!r} already fills the model's max_length {model.config.max_length}")
    return tokenizer.decode(greedy_generate(model, ids, budget, tokenizer.end_id)[0])
