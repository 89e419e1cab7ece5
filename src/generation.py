"""Greedy decoding: a plain loop outside the model, batched over prompts of equal length."""

import torch


@torch.no_grad()
def greedy_generate(model, prompt_ids, max_new_tokens, end_id):
    """prompt_ids: [batch, length], all prompts the same length. Returns one list of new token ids per prompt,
    without the end token; decoding stops once every sequence has produced `end_id` or the budget is spent."""
    sequences = prompt_ids
    finished = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
    for _ in range(max_new_tokens):
        logits, _ = model(sequences)
        next_ids = logits[:, -1].argmax(dim=-1)
        next_ids = torch.where(finished, end_id, next_ids)
        sequences = torch.cat([sequences, next_ids[:, None]], dim=1)
        finished |= next_ids == end_id
        if finished.all():
            break
    generated = []
    for row in sequences[:, prompt_ids.shape[1]:].tolist():
        generated.append(row[: row.index(end_id)] if end_id in row else row)
    return generated


def complete(model, tokenizer, prompt, device):
    """The model's greedy continuation of one prompt string, e.g. '12+34=' -> '46'."""
    ids = torch.tensor([tokenizer.encode(prompt)], device=device)
    budget = model.config.max_length - ids.shape[1]
    if budget <= 0:
        raise ValueError(f"prompt {prompt!r} already fills the model's max_length {model.config.max_length}")
    return tokenizer.decode(greedy_generate(model, ids, budget, tokenizer.end_id)[0])
