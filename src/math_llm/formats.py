"""The data formats: how a problem's numbers are written. Each is a small frozen description, looked up once by
name; code elsewhere asks its fields (padding, reversal, scratchpad), never its name.
"""

from dataclasses import dataclass

PADDINGS = ("none", "width", "longest")  # not padded; to the dataset's --max-digits; to the problem's longest operand
SCRATCHPADS = (None, "columns", "pairwise")  # no steps; a step per column; each column a chain of two-term sums


@dataclass(frozen=True)
class DataFormat:
    name: str
    example: str  # what 12 + 7 looks like, for --help (58 + 67 or 58 + 7 where a carry shows more)
    padding: str = "none"  # one of PADDINGS
    reverse_answer: bool = False  # answer digits least significant first, the order in which carries are computed
    reverse_operands: bool = False  # operand digits too, so that digit i of every number is at the same offset
    scratchpad: str | None = None  # one of SCRATCHPADS: steps between <think> and </think> before the answer

    def __post_init__(self):
        if self.padding not in PADDINGS or self.scratchpad not in SCRATCHPADS:
            raise ValueError(f"format {self.name!r}: padding must be one of {PADDINGS} and scratchpad one of "
                             f"{SCRATCHPADS}")

    @property
    def fixed_width(self):
        """Operands padded to one width for the whole dataset: the model learns that width."""
        return self.padding == "width"

    @property
    def padded(self):
        """Operands padded at all (to the dataset's width or to the problem's longest)."""
        return self.padding != "none"

    def written_places(self, num_digits):
        """The place (0: units) of each of an answer's `num_digits` digits, in the order this format writes them."""
        return range(num_digits) if self.reverse_answer else range(num_digits - 1, -1, -1)


FORMATS = {data_format.name: data_format for data_format in [
    DataFormat("plain", "12+7=19 (the seed's format)"),
    DataFormat("reversed", "12+7=91 (answer digits least significant first, the order in which carries are "
                           "computed)", reverse_answer=True),
    DataFormat("padded", "12+07=019 (operands zero-padded to --max-digits, the answer to its largest possible width)",
               padding="width"),
    DataFormat("padded-reversed", "12+07=910 (padded, answer reversed, as minGPT's adder)", padding="width",
               reverse_answer=True),
    DataFormat("reversed-all", "21+7=91 (operands and answer least significant digit first)", reverse_answer=True,
               reverse_operands=True),
    DataFormat("padded-reversed-all", "21+70=910 (padded, operands and answer reversed)", padding="width",
               reverse_answer=True, reverse_operands=True),
    DataFormat("aligned-reversed-all", "21+70=910 (operands and answer reversed, each problem's operands zero-padded "
                                       "to its longest, the answer to the width its result can reach: complete "
                                       "columns at any length)", padding="longest", reverse_answer=True,
               reverse_operands=True),
    DataFormat("scratchpad", "12+7=<think>2+7=9 1=1</think>19 (digit-by-digit steps, then the plain answer)",
               scratchpad="columns"),
    DataFormat("scratchpad-pairwise", "58+67=<think>8+7=15 5+6=11+1=12</think>125 (the same, each column a chain of "
                                      "two-term sums, the carry added last: the steps need 119 facts where whole "
                                      "columns need 210)", scratchpad="pairwise"),
    DataFormat("padded-scratchpad", "12+07=<think>2+7+0=09 1+0+0=01</think>019 (operands and answer padded to "
                                    "--max-digits, a step for every column, the carry always written, numbers at "
                                    "fixed widths: the steps have the same shape in every problem)", padding="width",
               scratchpad="columns"),
    DataFormat("padded-scratchpad-pairwise", "58+07=<think>8+7=15+0=15 5+0=05+1=06</think>065 (both)",
               padding="width", scratchpad="pairwise"),
]}
PLAIN = FORMATS["plain"]


def data_format(name):
    """The format called `name`; a ValueError naming the known ones for anything else."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown data format {name!r} (known: {', '.join(FORMATS)})") from None
