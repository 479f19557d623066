"""`python -m zoocodec.cli`, the same as the console script."""
import sys

from zoocodec.cli.commands import main

sys.exit(main())
