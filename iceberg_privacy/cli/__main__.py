import sys

from iceberg_privacy.cli.main import main

sys.exit(main())
