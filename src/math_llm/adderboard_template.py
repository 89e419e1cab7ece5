import sys
import types

import torch

# The code of every AdderBoard submission that scripts/export_adderboard.py writes (adderboard.write_submission):
# the export puts the model's constants where the marker below is. Nothing here knows addition: the model is built
# from Math LLM's own model code, decoding is plain greedy decoding, and the only task-specific code writes a and b
# in the model's data format and reads its answer back.

# SUBMISSION CONSTANTS
PACKAGE = "math_llm_adderboard_submission"  # the model code's own package name: never an installed Math LLM's


def load_model_code():
    """Math LLM's model.py (and the modules it imports) from MODEL_SOURCES, as a package of its own."""
    if PACKAGE + ".model" not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = []
        sys.modules[PACKAGE] = package
        for name, source in MODEL_SOURCES.items():
            module = types.ModuleType(f"{PACKAGE}.{name}")
            sys.modules[module.__name__] = module  # before it runs: dataclasses look their module up
            exec(compile(source.replace("from math_llm.", f"from {PACKAGE}."), f"<math_llm/{name}.py>", "exec"),
                 module.__dict__)
    return sys.modules[PACKAGE + ".model"]


def build_model():
    model_code = load_model_code()
    model = model_code.Transformer(model_code.ModelConfig(**MODEL_CONFIG))
    weights = {name: torch.tensor(values, dtype=torch.float32).reshape(shape)
               for name, (shape, values) in WEIGHTS.items()}
    model.load_state_dict(weights)  # strict: every weight and buffer, and nothing else
    return model.eval(), METADATA


@torch.no_grad()
def greedy_decode(model, prompt, max_new_tokens):
    """Generic autoregressive decoding: the whole sequence through the model for each new token, the most likely
    token appended, until the end token or the budget."""
    ids = [VOCAB.index(character) for character in prompt]
    end_id, generated = VOCAB.index("<end>"), []
    for _ in range(max_new_tokens):
        logits, _ = model(torch.tensor([ids + generated]))
        next_id = int(logits[0, -1].argmax())
        if next_id == end_id:
            break
        generated.append(next_id)
    return "".join(VOCAB[i] for i in generated)


def prompt(a, b):
    """a + b as the model's training data wrote it: zero-padded (to the data's width, or to the longer operand) and
    digits reversed where its format says so."""
    width = OPERAND_WIDTH if PADDING == "width" else max(len(str(a)), len(str(b))) if PADDING == "longest" else 0
    operands = [str(x).zfill(width) for x in (a, b)]
    if REVERSE_OPERANDS:
        operands = [text[::-1] for text in operands]
    return "+".join(operands) + "="


def answer_text(model, a, b):
    """The model's greedy answer to a + b, as it writes it (a scratchpad's steps included), up to the longest
    sequence it was trained on."""
    text = prompt(a, b)
    return greedy_decode(model, text, MODEL_CONFIG["max_length"] - len(text))


def add(model, a, b):
    """The number the model writes: the text after its scratchpad, if any, read in the order its format writes."""
    answer = answer_text(model, a, b).split("</think>")[-1]
    return int(answer[::-1] if REVERSE_ANSWER else answer)
