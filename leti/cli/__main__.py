import sys

from leti.cli.main import main

sys.exit(main())
