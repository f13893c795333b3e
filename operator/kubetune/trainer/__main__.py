import sys

from kubetune.trainer.cli import main

sys.exit(main())
