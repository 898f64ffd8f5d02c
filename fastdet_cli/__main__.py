import sys

from fastdet_cli.cli import main

sys.exit(main())
