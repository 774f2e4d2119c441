import sys

from vaetrain.cli import main

sys.exit(main())
