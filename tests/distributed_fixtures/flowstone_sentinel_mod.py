"""Must never be imported by a worker: a job naming this module as its asset proves it is not.

Importing it writes the file named by ``$FLOWSTONE_TEST_SENTINEL``.
"""

import os

_path = os.environ.get("FLOWSTONE_TEST_SENTINEL")
if _path:
    with open(_path, "w", encoding="utf-8") as fh:
        fh.write("imported\n")
