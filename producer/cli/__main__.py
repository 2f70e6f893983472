"""``python -m producer.cli``: the same command as ``kafka-completions``."""

import sys

from producer.cli import main

sys.exit(main())
