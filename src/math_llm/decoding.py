"""Greedy decoding: a plain loop outside the model, batched over prompts of equal length, with a KV cache; the
answers of a whole dataset decoded that way, and the naive one-problem-at-a-time decoder they are tested against."""

import os
from collections import defaultdict

import torch
from tqdm import tqdm

from math_llm.distributed import is_main_process
from math_llm.model import KVCache, batch_rows
from math_llm.runtime import autocast


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


def answer_budgets(model, dataset):
    """The most tokens each problem's answer may take: as many as the expected one with its end token (a longer one
    is wrong whatever follows). Not so a scratchpad, whose steps may differ in length before a right final answer:
    it may run to the model's max_length (or, without a limit, to twice the expected answer)."""
    answer_tokens = (dataset.lengths - dataset.prompt_lengths).tolist()  # with the end token
    if not dataset.format.scratchpad:
        return answer_tokens
    prompt_lengths = dataset.prompt_lengths.tolist()
    return [model.max_tokens - prompt if model.max_tokens else 2 * answer
            for prompt, answer in zip(prompt_lengths, answer_tokens)]


@torch.no_grad()
def dataset_answers(model, dataset, tokenizer, batch_size, device, precision):
    """Greedy answers for every problem of `dataset`; prompts are grouped by length so a batch needs no padding,
    each batch stops at its longest budget (answer_budgets), and long problems come in smaller batches (batch_rows
    caps the attention scores one batch holds). A large test set takes a while, so a progress bar counts the
    problems: on rank 0 only, and only when stderr is a terminal (disable=None), as training's does."""
    answers = [None] * len(dataset)
    by_prompt_length = defaultdict(list)
    for index, length in enumerate(dataset.prompt_lengths.tolist()):
        by_prompt_length[length].append(index)
    budgets = answer_budgets(model, dataset)
    with tqdm(total=len(dataset), desc=f"evaluating {os.path.basename(dataset.source)}", unit="problem",
              dynamic_ncols=True, leave=False, disable=None if is_main_process() else True) as progress:
        for prompt_length, indices in by_prompt_length.items():
            rows = batch_rows(model.config, batch_size, prompt_length + max(budgets[i] for i in indices))
            for start in range(0, len(indices), rows):
                chunk = indices[start:start + rows]
                prompts = dataset.tokens[chunk, :prompt_length].to(device)
                with autocast(device, precision):
                    generated = greedy_generate(model, prompts, max(budgets[i] for i in chunk), tokenizer.end_id)
                for index, ids in zip(chunk, generated):
                    answers[index] = tokenizer.decode(ids[:budgets[index]])
                progress.update(len(chunk))
    return answers


def naive_answers(model, dataset, tokenizer, device):
    """The reference decoder: one problem at a time, the whole sequence recomputed for every new token, with the
    same budgets."""
    answers = []
    for index, budget in enumerate(answer_budgets(model, dataset)):
        prompt = dataset.tokens[index:index + 1, :int(dataset.prompt_lengths[index])].to(device)
        generated = greedy_generate(model, prompt, budget, tokenizer.end_id, use_cache=False)
        answers.append(tokenizer.decode(generated[0]))
    return answers


def complete(trained, prompt, device):
    """The model's greedy continuation of one prompt and whether it ended with the end token: '12+34=' ->
    ('46', True); False where the budget ran out first, so the text is cut off (ValueError for a prompt the model
    cannot read). A model without a length limit (rope, abacus) may write up to seven times the prompt's length, or
    up to its training max_length if longer."""
    model = trained.model
    ids = torch.tensor([trained.encode_prompt(prompt)], device=device)
    budget = (model.max_tokens or max(model.config.max_length, 8 * ids.shape[1])) - ids.shape[1]
    if budget <= 0:
        raise ValueError(f"prompt {prompt!r} already fills the model's max_length {model.config.max_length}")
    generated = greedy_generate(model, ids, budget, trained.tokenizer.end_id)[0]
    return trained.tokenizer.decode(generated), len(generated) < budget  # shorter: it stopped at the end token
