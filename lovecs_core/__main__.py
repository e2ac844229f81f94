"""``python -m lovecs_core`` runs the ``lovecs`` command line; under torchrun (``torchrun
--nproc_per_node N -m lovecs_core adapt ...``: ``RANK`` set, ``WORLD_SIZE`` > 1), the
distributed adaptation (:mod:`lovecs_core.cli.torchrun`)."""

import os
import sys

if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
    from .cli.torchrun import main as torchrun_main

    sys.exit(torchrun_main(sys.argv[1:]))

from .cli.main import main  # noqa: E402

sys.exit(main())
