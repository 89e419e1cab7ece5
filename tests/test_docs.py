"""The project's documents point only inside the repository, at files that exist."""

import os
import re

import pytest

from tests.helpers import REPO_ROOT

DOCUMENTS = ["README.md", "DESIGN.md"] + [os.path.join("docs", name) for name in
                                          sorted(os.listdir(os.path.join(REPO_ROOT, "docs"))) if name.endswith(".md")]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)
RELATIVE_PATH = re.compile(r"`(\.\./[^`\s]*)`")  # `../somewhere` written as code


@pytest.mark.parametrize("document", DOCUMENTS)
def test_links_and_paths_stay_inside_the_repository_and_exist(document):
    directory = os.path.dirname(os.path.join(REPO_ROOT, document))
    with open(os.path.join(REPO_ROOT, document), encoding="utf-8") as f:
        text = f.read()
    targets = [link.split("#")[0] for link in LINK.findall(text) if not re.match(r"[a-z]+:", link)]
    for target in [t for t in targets if t] + RELATIVE_PATH.findall(text):
        path = os.path.normpath(os.path.join(directory, target))
        assert os.path.commonpath([path, REPO_ROOT]) == REPO_ROOT, f"{document}: {target} is outside the repository"
        assert os.path.exists(path), f"{document}: {target} does not exist"
