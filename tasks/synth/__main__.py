"""`python -m tasks.synth OUT --persons N --seed S --size WxH`."""
import sys

from tasks.synth.write import main

sys.exit(main())
