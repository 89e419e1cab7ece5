"""What every script does around its main(): user errors become one clear line (exit 1), Ctrl-C a quiet exit."""

import logging
import sys

from math_llm.errors import UserError


def run_main(main):
    try:
        main()
    except UserError as error:
        logging.getLogger("math_llm").error(str(error))
        sys.exit(1)
    except KeyboardInterrupt:
        logging.getLogger("math_llm").warning("interrupted")
        sys.exit(130)
