"""What every script does around its main(): user errors become one clear line and exit code 1."""

import logging
import sys

from src.errors import UserError


def run_main(main):
    try:
        main()
    except UserError as error:
        logging.getLogger("math_llm").error(str(error))
        sys.exit(1)
