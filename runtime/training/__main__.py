"""``python -m flowdsl.runtime.training train|sample ...`` (also ``torchrun ... -m flowdsl.runtime.training``)."""

from flowdsl.runtime.training.cli import main

raise SystemExit(main())
