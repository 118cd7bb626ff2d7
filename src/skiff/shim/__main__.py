import sys

from skiff.shim.main import main

sys.exit(main())
